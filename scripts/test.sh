#!/usr/bin/env bash
# The whole test suite: unit, integration, property, transcript and browser tests, the
# examples checked and replayed by the CLI exactly as an author would, and the crash
# test (real processes, kill -9 while timers fire; VOLLEY_CRASH_TIMERS sets its size), and
# the API fuzz run (schemathesis; VOLLEY_FUZZ_TESTS=0 lets it be skipped when missing).
# Browser tests need `chromium` and `chromedriver` (Debian: chromium chromium-driver);
# VOLLEY_BROWSER_TESTS=1 makes their absence a failure instead of a skip; likewise
# VOLLEY_SMTP_TESTS (python3 with aiosmtpd) and VOLLEY_WEBHOOK_TESTS (python3 with
# standardwebhooks, the reference signature check).
set -euo pipefail
cd "$(dirname "$0")/.."
export VOLLEY_BROWSER_TESTS="${VOLLEY_BROWSER_TESTS:-1}"
export VOLLEY_SMTP_TESTS="${VOLLEY_SMTP_TESTS:-1}"
export VOLLEY_WEBHOOK_TESTS="${VOLLEY_WEBHOOK_TESTS:-1}"
export VOLLEY_FUZZ_TESTS="${VOLLEY_FUZZ_TESTS:-1}"
cargo test --workspace --all-targets --locked
cargo run --quiet --locked -p volley -- check examples/
cargo run --quiet --locked -p volley -- test examples/
# The crash test runs the release build: 100,000 timers in debug builds would take minutes.
cargo build --quiet --release --locked -p volley -p volley-load
target/release/volley-load crash --timers "${VOLLEY_CRASH_TIMERS:-100000}"
# The API fuzz run (schemathesis from PyPI): no request may get a server error.
scripts/fuzz-api.sh target/release/volley

#!/usr/bin/env bash
# The whole test suite: unit, integration, property, transcript and browser tests, plus
# the examples checked and replayed by the CLI exactly as an author would.
# Browser tests need `chromium` and `chromedriver` (Debian: chromium chromium-driver);
# VOLLEY_BROWSER_TESTS=1 makes their absence a failure instead of a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export VOLLEY_BROWSER_TESTS="${VOLLEY_BROWSER_TESTS:-1}"
export VOLLEY_SMTP_TESTS="${VOLLEY_SMTP_TESTS:-1}"
cargo test --workspace --all-targets --locked
cargo run --quiet --locked -p volley -- check examples/
cargo run --quiet --locked -p volley -- test examples/

#!/usr/bin/env bash
# The whole test suite: unit, integration, property and transcript tests, plus the
# examples checked and replayed by the CLI exactly as an author would.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets --locked
cargo run --quiet --locked -p volley -- check examples/
cargo run --quiet --locked -p volley -- test examples/

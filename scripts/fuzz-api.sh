#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with schemathesis (PyPI): every
# operation, generated and stateful requests, as the admin key. Any server error (5xx)
# fails the run. Usage: scripts/fuzz-api.sh [BINARY] (default target/release/volley).
# FUZZ_EXAMPLES sets the examples per operation (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release/volley}"
if ! command -v schemathesis >/dev/null; then
  if [ "${VOLLEY_FUZZ_TESTS:-0}" = 1 ]; then
    echo "schemathesis is missing (pip install schemathesis)" >&2
    exit 1
  fi
  echo "skipping the API fuzz run: schemathesis is not installed (pip install schemathesis)"
  exit 0
fi
dir="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
key="fuzz-$(date +%s)-$RANDOM"
"$bin" serve --listen "127.0.0.1:$port" --database "sqlite://$dir/volley.db" \
  --admin-key "$key" >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.1
done
(cd "$dir" && schemathesis run "http://127.0.0.1:$port/api/openapi.json" \
  --checks not_a_server_error --header "Authorization: Bearer $key" \
  --max-examples "${FUZZ_EXAMPLES:-30}" --request-timeout 10 --no-color) | tail -25
status=${PIPESTATUS[0]}
if grep -q "panicked" "$dir/server.log"; then
  echo "the server panicked during the fuzz run:" >&2
  grep -A5 "panicked" "$dir/server.log" >&2
  exit 1
fi
exit "$status"

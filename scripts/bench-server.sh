#!/usr/bin/env bash
# Server benchmarks for docs/BENCHMARKS.md: start-up with 50 flows, idle RSS,
# answer throughput and latency, idle WebSocket connections, timers, hand-off, premiere
# chat against socket.io and premiere clock sync. Loopback only.
#
#   scripts/bench-server.sh [startup|throughput|idle|timers|handoff|premiere|premiere-sync|analytics|all]
#
# Needs: curl; node and npm for premiere (socket.io is installed into
# bench/socketio/node_modules). Uses ports 18300-18302, free ports and a temporary
# directory.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p volley -p volley-load
export RUST_BACKTRACE=0
VOLLEY=${CARGO_TARGET_DIR:-target}/release/volley
LOAD=${CARGO_TARGET_DIR:-target}/release/volley-load
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

wait_ready() { # port -> elapsed ms since $START_NS; gives up after 30 s
  local tries=0
  until curl -sf "http://127.0.0.1:$1/healthz" >/dev/null; do
    tries=$((tries + 1))
    if [ $tries -gt 15000 ]; then echo "server on port $1 did not start" >&2; exit 1; fi
    sleep 0.002
  done
  echo $(( ($(date +%s%N) - START_NS) / 1000000 ))
}

startup() {
  # 50 flows: the seven examples, each published under seven ids (49) plus one more.
  mkdir -p "$WORK/flows"
  n=0
  for i in 1 2 3 4 5 6 7 8; do
    for f in examples/*.yaml; do
      [ $n -ge 50 ] && break
      id=$(sed -n 's/^id: //p' "$f")
      sed "s/^id: .*/id: $id-$i/" "$f" > "$WORK/flows/$id-$i.yaml"
      n=$((n + 1))
    done
  done
  for run in first restart; do
    START_NS=$(date +%s%N)
    $VOLLEY serve --database "$WORK/startup.db" --listen 127.0.0.1:18300 --flows "$WORK/flows" --no-demo >"$WORK/startup.log" 2>&1 &
    pid=$!
    ms=$(wait_ready 18300)
    sleep 2
    echo "{\"benchmark\": \"startup\", \"run\": \"$run\", \"flows\": $n, \"ms_to_serving\": $ms, \"idle_rss_mib\": $(rss_mib $pid)}"
    kill $pid; wait $pid 2>/dev/null || true
  done
}

throughput() {
  for fsync in on off; do
    flag=""; [ $fsync = off ] && flag="--no-fsync"
    rm -f "$WORK"/load.db*
    $VOLLEY serve --database "$WORK/load.db" --listen 127.0.0.1:18301 --flows crates/volley-load/flows --no-demo --pacing off $flag >"$WORK/load.log" 2>&1 &
    pid=$!
    START_NS=$(date +%s%N); wait_ready 18301 >/dev/null
    echo "# fsync $fsync"
    if [ $fsync = on ]; then
      # Closed loop: 2,000 participants answer the instant each question opens (capacity).
      $LOAD complete --url ws://127.0.0.1:18301/ws --flow load-ten --participants 2000 --metrics http://127.0.0.1:18301/metrics
    fi
    # Open loop: the same 2,000 participants offer a constant 5,000 answers per second.
    $LOAD complete --url ws://127.0.0.1:18301/ws --flow load-ten --participants 2000 --rate 5000 --metrics http://127.0.0.1:18301/metrics
    kill $pid; wait $pid 2>/dev/null || true
  done
}

idle() {
  $VOLLEY serve --database "$WORK/idle.db" --listen 127.0.0.1:18302 >"$WORK/idle.log" 2>&1 &
  pid=$!
  START_NS=$(date +%s%N); wait_ready 18302 >/dev/null
  # 19,900 widgets: the per-process limit is 20,000 descriptors (see docs/BENCHMARKS.md).
  $LOAD idle --url ws://127.0.0.1:18302/ws --flow lead-qualification --connections 19900 --hold 3 --server-pid $pid
  kill $pid; wait $pid 2>/dev/null || true
}

timers() {
  # 1,000,000 contacts × 5 campaigns = 5,000,000 pending timers (see docs/BENCHMARKS.md).
  $LOAD timers --volley "$VOLLEY" --backlog "${VOLLEY_BACKLOG:-200000}"
  # The storage floor of the same backlog: only the rows its firings commit, no server.
  python3 bench/timers_floor.py --backlog "${VOLLEY_BACKLOG:-200000}" --pending 5000000
}

handoff() {
  # 200 agents, 5,000 participants handed off, 100,000 conversations in the store.
  $LOAD handoff --volley "$VOLLEY"
}

premiere() {
  # 9,000 viewers in one event chat, Volley against a socket.io 4 room (docs/BENCHMARKS.md):
  # 20 messages at 5/s, then 50/s sustained for 60 s.
  [ -d bench/socketio/node_modules ] || npm ci --prefix bench/socketio --no-audit --no-fund
  $LOAD premiere --volley "$VOLLEY" --viewers 9000 --messages 20 --rate 5
  $LOAD premiere --volley "$VOLLEY" --viewers 9000 --rate 50 --duration 60
}

premiere_sync() {
  # 1,000 viewers with clocks off by up to ±5 s run the clock-offset protocol.
  $LOAD premiere-sync --volley "$VOLLEY" --viewers 1000
}

analytics() {
  # 1,000,000 generated conversations aggregated; the flow dashboard against a log rescan.
  $LOAD analytics --volley "$VOLLEY"
}

case "${1:-all}" in
  startup) startup ;;
  throughput) throughput ;;
  idle) idle ;;
  timers) timers ;;
  handoff) handoff ;;
  premiere) premiere ;;
  premiere-sync) premiere_sync ;;
  analytics) analytics ;;
  all) startup; throughput; idle; timers; handoff; premiere; premiere_sync; analytics ;;
  *) echo "usage: $0 [startup|throughput|idle|timers|handoff|premiere|premiere-sync|analytics|all]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Soak test: 10,000 workflows submitted over the API to `gleitzeit serve` on
# the Redis backend with 2 worker nodes, one SIGKILLed and replaced every second.
# Prints throughput, p99 latency, peak memory and lost tasks (the run fails
# unless that is 0) and records them in bench/results/latest.json.
# Loopback only; bounded at 15 minutes. `--quick` runs 300 workflows.
# Redis: GLEITZEIT_BENCH_REDIS_URL, default redis://127.0.0.1:6379 (started
# here if nothing answers).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gleitzeit/target}"
export GLEITZEIT_BENCH_REDIS_URL="${GLEITZEIT_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
if ! redis-cli -u "$GLEITZEIT_BENCH_REDIS_URL" ping 2>/dev/null | grep -q PONG; then
  REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  REDIS_DIR="$HOME/.cache/gleitzeit/redis-soak"
  mkdir -p "$REDIS_DIR"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$REDIS_DIR" --daemonize yes --pidfile "$REDIS_DIR/redis.pid" >/dev/null
  export GLEITZEIT_BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  trap 'redis-cli -u "$GLEITZEIT_BENCH_REDIS_URL" shutdown nosave >/dev/null 2>&1 || true' EXIT
  for _ in $(seq 50); do
    redis-cli -u "$GLEITZEIT_BENCH_REDIS_URL" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
fi
cargo build --release --locked -p gleitzeit-cli -p gleitzeit-bench
GLEITZEIT_BIN="$CARGO_TARGET_DIR/release/gleitzeit" \
  "$CARGO_TARGET_DIR/release/gleitzeit-bench" --only soak "$@"

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
REDIS_LINE=$(scripts/redis-for-tests.sh "${GLEITZEIT_BENCH_REDIS_URL:-redis://127.0.0.1:6379}")
REDIS_URL="${REDIS_LINE#REDIS_URL=}"
export GLEITZEIT_BENCH_REDIS_URL="${REDIS_URL%% *}"
if [ "${REDIS_LINE##*STARTED=}" = 1 ]; then
  trap 'redis-cli -u "$GLEITZEIT_BENCH_REDIS_URL" shutdown nosave >/dev/null 2>&1 || true' EXIT
fi
cargo build --release --locked -p gleitzeit-cli -p gleitzeit-bench
GLEITZEIT_BIN="$CARGO_TARGET_DIR/release/gleitzeit" \
  "$CARGO_TARGET_DIR/release/gleitzeit-bench" --only soak "$@"

#!/usr/bin/env bash
# Gleitzeit side by side with Prefect 3 and Celery 5 on the same workloads, in
# one run on this machine (bench/compare.py says how it measures). Builds the
# release binary; installs the peers into virtualenvs under
# ~/.cache/gleitzeit/bench-peers once; writes bench/results/compare.{json,md,png}.
#
#   scripts/bench-compare.sh           full comparison (about 10 minutes on 2 cores)
#   scripts/bench-compare.sh --quick   Gleitzeit only, a few seconds, writes nothing
#
# Needs python3 (with venv) and a Redis on GLEITZEIT_BENCH_REDIS_URL
# (default redis://127.0.0.1:6379); Celery empties database 13 of it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gleitzeit/target}"
# The same packages as scripts/bench.sh and test.sh build: with fewer, Cargo
# unifies features differently and rebuilds the binary.
# GLEITZEIT_BENCH_PROFILE=debug (the test script's smoke run) uses the binary
# the tests built instead of compiling a release one.
PROFILE="${GLEITZEIT_BENCH_PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -p gleitzeit-cli -p gleitzeit-bench
fi
# The driver's own budget stops new runs at 17 minutes; this is the backstop
# should something hang past it.
exec timeout --kill-after=30s 20m \
  python3 bench/compare.py --bin "$CARGO_TARGET_DIR/$PROFILE/gleitzeit" "$@"

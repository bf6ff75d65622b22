#!/usr/bin/env bash
# Full benchmark: builds the release binary and runs every scenario; the figures
# go to bench/results/latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gleitzeit/target}"
cargo build --release --locked -p gleitzeit-cli -p gleitzeit-bench
# The LLM scenario runs against a real llama.cpp server (built and cached on first use).
if [ "${1:-}" != "--quick" ]; then
  LLAMA_LINE=$(scripts/llm-test-server.sh start --embeddings)
  export GLEITZEIT_BENCH_LLAMA_URL="${LLAMA_LINE#LLAMA_URL=}"
fi
GLEITZEIT_BIN="$CARGO_TARGET_DIR/release/gleitzeit" "$CARGO_TARGET_DIR/release/gleitzeit-bench" "$@"

#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and end-to-end
# tests against the real binary, and a quick benchmark smoke run.
# Builds are cached under ~/.cache/gleitzeit so later runs start warm.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gleitzeit/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
if ! command -v python3 >/dev/null; then
  echo "python3 not found: install Python 3 (the python provider and its tests need it)" >&2
  exit 1
fi

# The terminal-view test drives the real binary inside tmux.
if ! command -v tmux >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq tmux >/dev/null
  else
    echo "tmux not found: install it (the terminal-view test needs it)" >&2
    exit 1
  fi
fi

# The dashboard's browser test drives Debian's chromium through the npm
# package playwright-core (installed into ~/.cache/gleitzeit/playwright).
echo "== Chromium + playwright-core (the web dashboard's browser test)"
PLAYWRIGHT_LINE=$(scripts/browser-test-deps.sh)
export GLEITZEIT_TEST_PLAYWRIGHT_DIR="${PLAYWRIGHT_LINE#PLAYWRIGHT_DIR=}"

echo "== Redis (the scale-out tests use it; started here if nothing answers)"
REDIS_LINE=$(scripts/redis-for-tests.sh "${GLEITZEIT_TEST_REDIS_URL:-redis://127.0.0.1:6379}")
export GLEITZEIT_TEST_REDIS_URL="${REDIS_LINE#REDIS_URL=}"
GLEITZEIT_TEST_REDIS_URL="${GLEITZEIT_TEST_REDIS_URL%% *}"
if [ "${REDIS_LINE##*STARTED=}" = 1 ]; then STARTED_REDIS=1; fi
echo "Redis at $GLEITZEIT_TEST_REDIS_URL"
export GLEITZEIT_BENCH_REDIS_URL="$GLEITZEIT_TEST_REDIS_URL"

echo "== real LLM server (llama.cpp + Gemma 3 270M; built and cached on first use)"
scripts/llm-test-server.sh setup
LLAMA_LINE=$(scripts/llm-test-server.sh start --embeddings)
export GLEITZEIT_TEST_LLAMA_URL="${LLAMA_LINE#LLAMA_URL=}"
cleanup() {
  scripts/llm-test-server.sh stop >/dev/null 2>&1 || true
  if [ -n "${STARTED_REDIS:-}" ]; then
    redis-cli -u "$GLEITZEIT_TEST_REDIS_URL" shutdown nosave >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
echo "llama-server at $GLEITZEIT_TEST_LLAMA_URL"

echo "== MCP reference servers (npm; cached)"
MCP_LINE=$(scripts/mcp-test-servers.sh)
export GLEITZEIT_TEST_MCP_DIR="${MCP_LINE#MCP_DIR=}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
# One build serves every step: lints, tests, the crash sweep, the Python
# client's server and the benchmark smoke run all use the dev profile with the
# crash points compiled in (inert unless a test arms them), so nothing is
# compiled twice with other features or another profile.
FEATURES=(--features "gleitzeit-runtime/failpoints gleitzeit-store/failpoints")
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked "${FEATURES[@]}" -- -D warnings
echo "== cargo test (with the crash sweep: a crash at every durable step, then resume)"
cargo test --workspace --locked "${FEATURES[@]}"
echo "dashboard screenshots: $CARGO_TARGET_DIR/web-screenshots"
echo "== Python client tests (pytest, against the real server)"
PY_VENV="$HOME/.cache/gleitzeit/pyclient-venv"
if [ ! -x "$PY_VENV/bin/pytest" ]; then
  python3 -m venv "$PY_VENV"
  "$PY_VENV/bin/pip" install --quiet pytest
fi
cargo build --locked -p gleitzeit-cli -p gleitzeit-bench "${FEATURES[@]}"
GLEITZEIT_BIN="$CARGO_TARGET_DIR/debug/gleitzeit" PYTHONPATH=clients/python \
  "$PY_VENV/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests
echo "== fuzzing (${GLEITZEIT_FUZZ_SECONDS:-30} s per target with nightly; the stable replay ran in cargo test)"
scripts/fuzz.sh "${GLEITZEIT_FUZZ_SECONDS:-30}"
echo "== benchmark smoke run (--quick, dev build: a check that every scenario runs, not figures)"
GLEITZEIT_BIN="$CARGO_TARGET_DIR/debug/gleitzeit" "$CARGO_TARGET_DIR/debug/gleitzeit-bench" --quick
echo "== comparison smoke run (--quick, Gleitzeit only)"
GLEITZEIT_BENCH_PROFILE=debug scripts/bench-compare.sh --quick
# The container image takes the binary built above (stripped) rather than
# compiling it again inside a container; a user's `docker build .` compiles
# the release binary itself.
echo "== container deployment (image, docker compose, a killed worker; SKIP without a Docker engine)"
scripts/docker-test.sh "$CARGO_TARGET_DIR/debug/gleitzeit"

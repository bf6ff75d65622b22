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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== benchmark smoke run (--quick)"
cargo build --release --locked -p gleitzeit-cli -p gleitzeit-bench
GLEITZEIT_BIN="$CARGO_TARGET_DIR/release/gleitzeit" "$CARGO_TARGET_DIR/release/gleitzeit-bench" --quick

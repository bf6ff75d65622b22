#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 60) with libFuzzer.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs a nightly toolchain (`cargo +nightly`); builds the targets with the
# sanitizer-coverage flags cargo-fuzz uses. Without nightly it prints a notice and exits 0: the same fuzz
# bodies still run on stable in `cargo test -p gleitzeit-core --test fuzz_replay`.
# Seeds are fuzz/corpus/<target> (scripts/fuzz-seed.py refreshes them) plus
# fuzz/corpus/regressions; new inputs go to a scratch corpus under the target
# directory; crashes land in fuzz/artifacts/<target>/ and fail the script.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(workflow references when_expr api_body auth_body yaml_nesting)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: NOTICE: no nightly toolchain (cargo +nightly), skipping libFuzzer runs;"
  echo "fuzz: the fuzz bodies ran on stable in the fuzz_replay test instead."
  exit 0
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gleitzeit/target}/fuzz"
SCRATCH="$CARGO_TARGET_DIR/corpus"
TRIPLE=$(rustc +nightly -vV | sed -n 's/^host: //p')

# The same flags `cargo fuzz build -O` uses, so cargo-fuzz itself is not needed
# (`cargo +nightly fuzz run <target>` in fuzz/ works too where it is installed).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
BUILD=(cargo +nightly build --manifest-path fuzz/Cargo.toml --release --target "$TRIPLE")
BIN_DIR="$CARGO_TARGET_DIR/$TRIPLE/release"

echo "== fuzz: building ${TARGETS[*]}"
"${BUILD[@]}" --bins

status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$SCRATCH/$t" "fuzz/artifacts/$t"
  echo "== fuzz: $t for ${SECONDS_PER_TARGET}s"
  if ! "$BIN_DIR/$t" "$SCRATCH/$t" "fuzz/corpus/$t" fuzz/corpus/regressions \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
      -max_len=16384 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" 2>"$SCRATCH/$t.log"; then
    tail -n 40 "$SCRATCH/$t.log"
    echo "fuzz: $t FOUND A CRASH: see fuzz/artifacts/$t/ (add it to fuzz/corpus/regressions with a fix)"
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$SCRATCH/$t.log" | sed "s/^/fuzz: $t /" || true
  fi
done
exit $status

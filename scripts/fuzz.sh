#!/usr/bin/env bash
# Runs every cargo-fuzz target (or those named) for SECONDS each, on stable with
# `-s none` (no sanitizer; coverage-guided libFuzzer still). Usage:
#   scripts/fuzz.sh SECONDS [TARGET...]
# Working corpora go to fuzz/corpus/<target> (ignored by git), seeded from the committed
# fuzz/seeds/<target>. A crash stops the run and leaves its input in fuzz/artifacts/<target>:
# minimise it, fix the bug, and commit the input to fuzz/regressions/<target>/, named for
# what it broke, so `cargo test --test fuzz_corpus` replays it forever.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -s none
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz: $t for ${seconds}s"
  rc=0
  cargo fuzz run -s none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $t FAILED (exit $rc); the input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"

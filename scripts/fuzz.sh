#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang, ASan+UBSan) into
# ./build-fuzz and runs each for a bounded time: first every committed
# crash input of tests/fuzz/regressions/<target> once, then fuzzing from
# the seed corpus tests/fuzz/corpus/<target>. Any crash, sanitizer report,
# leak or broken check fails the run, and the input is left in
# build-fuzz/artifacts/ (add it to tests/fuzz/regressions/<target>/).
#
#   scripts/fuzz.sh                      every target, 60 s each
#   HARDNEG_FUZZ_SECONDS=600 scripts/fuzz.sh publish_fuzzer
#
# New inputs found go to build-fuzz/corpus/<target> (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
./scripts/install-deps.sh  # clang-14 and the sanitizer runtimes
seconds=${HARDNEG_FUZZ_SECONDS:-60}
build="$repo/build-fuzz"
all=(npy_fuzzer manifest_fuzzer mine_request_fuzzer options_fuzzer publish_fuzzer)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

start=$(date +%s)
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHARDNEG_SANITIZE=address \
  -DHARDNEG_FUZZ=ON >/dev/null
ninja -C "$build" "${targets[@]}"
echo "fuzz.sh: build took $(($(date +%s) - start)) s" >&2

export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:detect_stack_use_after_return=1"
export LSAN_OPTIONS="suppressions=$repo/tests/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TMPDIR="$build/tmp"  # the targets' scratch files
mkdir -p "$TMPDIR" "$build/artifacts"

failed=()
for target in "${targets[@]}"; do
  t0=$(date +%s)
  bin="$build/tests/fuzz/$target"
  log="$build/$target.log"
  regressions=("$repo/tests/fuzz/regressions/$target"/*)
  if [[ -e "${regressions[0]}" ]] &&
     ! "$bin" "${regressions[@]}" >"$log" 2>&1; then
    echo "fuzz.sh: $target crashes on a committed regression input:" >&2
    tail -n 40 "$log" >&2
    failed+=("$target")
    continue
  fi
  mkdir -p "$build/corpus/$target"
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$build/artifacts/$target-" \
       "$build/corpus/$target" "$repo/tests/fuzz/corpus/$target" \
       >"$log" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    echo "fuzz.sh: $target: ${runs:-?} runs, no crash, took $(($(date +%s) - t0)) s" >&2
  else
    echo "fuzz.sh: $target FAILED after $(($(date +%s) - t0)) s:" >&2
    grep -v -E '^(#[0-9]+|\s+NEW_FUNC)' "$log" | tail -n 60 >&2
    failed+=("$target")
  fi
done

echo "fuzz.sh: took $(($(date +%s) - start)) s" >&2
if ((${#failed[@]})); then
  echo "fuzz.sh: failed: ${failed[*]} (inputs in $build/artifacts/)" >&2
  exit 1
fi

#!/usr/bin/env bash
# Builds the tests with sanitizers (clang 14) and runs them; any sanitizer
# report fails the run. Prints how long each step took.
#
#   address: ./build-asan, ASan + UBSan, every CTest test (unit,
#            integration, the Python e2e and monitoring tests).
#   thread:  ./build-tsan, TSan, the concurrency tests (the router and its
#            shards among them): version swaps under
#            load (swap_test), batching, streams and cancellation
#            (server_test), Publish (publish_service_test), the watcher and
#            background builds (index_manager_test), shutdown and restart
#            of the real binary (restart_test), and client_test and
#            metrics_test, which drive the server from several threads.
#
#   scripts/sanitize.sh              both
#   scripts/sanitize.sh thread       one of them
#
# Reports go to build-*/sanitizer-logs/ as well as failing the test, so
# that those of a hardneg-server started by a test are not lost.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
./scripts/install-deps.sh  # clang-14 and the sanitizer runtimes
kinds=("$@")
((${#kinds[@]})) || kinds=(address thread)
tsan_tests=(swap_test server_test publish_service_test index_manager_test
            restart_test client_test metrics_test router_test sharding_test)

export OMP_WAIT_POLICY=PASSIVE
if command -v llvm-symbolizer-14 >/dev/null; then
  export ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer-14)
  export TSAN_SYMBOLIZER_PATH=$ASAN_SYMBOLIZER_PATH
fi

elapsed() { echo "sanitize.sh: $1 took $(($(date +%s) - $2)) s" >&2; }

# Fails, printing them, when the sanitizers left reports in $1.
check_logs() {
  local logs=("$1"/*)
  [[ -e "${logs[0]}" ]] || return 0
  echo "sanitize.sh: sanitizer reports in $1:" >&2
  head -n 80 "${logs[@]}" >&2
  return 1
}

# configure <dir> <HARDNEG_SANITIZE> and build <targets...>
build() {
  local dir=$1 kind=$2
  shift 2
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$dir" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHARDNEG_SANITIZE="$kind" >/dev/null
  ninja -C "$dir" "$@"
}

# The fault and load harness (label hostile) is left out under ASan: it
# measures RSS and times, which ASan's shadow memory and quarantine change;
# it runs in the plain build.
run_address() {
  local dir="$repo/build-asan" t0
  t0=$(date +%s)
  build "$dir" address hardneg-tests
  elapsed "ASan+UBSan build" "$t0"
  rm -rf "$dir/sanitizer-logs" && mkdir -p "$dir/sanitizer-logs"
  t0=$(date +%s)
  ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:log_path=$dir/sanitizer-logs/asan" \
  LSAN_OPTIONS="suppressions=$repo/tests/sanitizers/lsan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$dir/sanitizer-logs/ubsan" \
    ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" --timeout 600 \
      -LE hostile \
    || { check_logs "$dir/sanitizer-logs" || true; return 1; }
  check_logs "$dir/sanitizer-logs"
  elapsed "ASan+UBSan tests" "$t0"
}

run_thread() {
  local dir="$repo/build-tsan" t0 labels
  t0=$(date +%s)
  build "$dir" thread "${tsan_tests[@]}" hardneg-server
  elapsed "TSan build" "$t0"
  rm -rf "$dir/sanitizer-logs" && mkdir -p "$dir/sanitizer-logs"
  t0=$(date +%s)
  labels=$(IFS='|'; echo "^(${tsan_tests[*]})\$")
  # tests/sanitizers/tsan_*_sync.cc show TSan the synchronisation inside
  # abseil and gRPC. ignore_noninstrumented_modules=1 stops it checking the
  # memcpy/memset/new/delete that uninstrumented libraries (gRPC, OpenBLAS
  # and libgomp, ...) call, whose synchronisation it cannot see: every such
  # report was a false positive. Our code's accesses are all checked.
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:log_path=$dir/sanitizer-logs/tsan" \
    ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" --timeout 600 \
      -L "$labels" \
    || { check_logs "$dir/sanitizer-logs" || true; return 1; }
  check_logs "$dir/sanitizer-logs"
  elapsed "TSan tests" "$t0"
}

for kind in "${kinds[@]}"; do
  case "$kind" in
    address) run_address ;;
    thread) run_thread ;;
    *) echo "sanitize.sh: unknown '$kind': expected address or thread" >&2
       exit 2 ;;
  esac
done

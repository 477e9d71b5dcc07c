#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite: the
# CTest tests, then the README's Quick start demo (scripts/demo.sh, which
# must end with its picture of the negatives), then the static checks (scripts/static-checks.sh: clang's
# -Wthread-safety, clang-tidy, the Debug and Release builds), then the tests
# under ASan+UBSan and the concurrency tests under TSan
# (scripts/sanitize.sh), then each fuzz target for a bounded time
# (scripts/fuzz.sh), then the Kubernetes manifests (scripts/k8s-test.sh) and
# the container image, built and run with podman (scripts/image-test.sh).
# For local iteration only, HARDNEG_SKIP_STATIC_CHECKS=1,
# HARDNEG_SKIP_SANITIZERS=1, HARDNEG_SKIP_FUZZ=1 and HARDNEG_SKIP_IMAGE=1
# skip those; CI (CI set) never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
./scripts/build.sh
built=$(date +%s)
echo "test.sh: build took $((built - start)) s" >&2
export OMP_WAIT_POLICY=PASSIVE
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
echo "test.sh: tests took $(( $(date +%s) - built )) s" >&2

# The Quick start's other command, as a newcomer runs it.
t0=$(date +%s)
rm -f build/demo/negatives.png
./scripts/demo.sh > build/demo.log 2>&1 || { cat build/demo.log >&2; exit 1; }
grep -q '^== picture: ' build/demo.log && [[ -s build/demo/negatives.png ]] || {
  echo "test.sh: demo.sh did not write its picture" >&2; cat build/demo.log >&2
  exit 1
}
echo "test.sh: demo took $(($(date +%s) - t0)) s" >&2

# skip <what> <variable>: true when the variable asks to skip, outside CI.
skip() {
  [[ "${!2:-}" == 1 ]] || return 1
  if [[ -n "${CI:-}" ]]; then
    echo "test.sh: CI ignores $2=1: running $1" >&2
    return 1
  fi
  echo "test.sh: $1 SKIPPED ($2=1)" >&2
}

if ! skip "static checks" HARDNEG_SKIP_STATIC_CHECKS; then
  t0=$(date +%s)
  ./scripts/static-checks.sh
  echo "test.sh: static checks took $(($(date +%s) - t0)) s" >&2
fi
if ! skip sanitizers HARDNEG_SKIP_SANITIZERS; then
  t0=$(date +%s)
  ./scripts/sanitize.sh
  echo "test.sh: sanitizers took $(($(date +%s) - t0)) s" >&2
fi
if ! skip fuzzing HARDNEG_SKIP_FUZZ; then
  t0=$(date +%s)
  ./scripts/fuzz.sh
  echo "test.sh: fuzzing took $(($(date +%s) - t0)) s" >&2
fi
t0=$(date +%s)
./scripts/k8s-test.sh
echo "test.sh: k8s manifests took $(($(date +%s) - t0)) s" >&2
if ! skip "container image" HARDNEG_SKIP_IMAGE; then
  t0=$(date +%s)
  ./scripts/image-test.sh
  echo "test.sh: container image took $(($(date +%s) - t0)) s" >&2
fi
echo "test.sh: everything took $(($(date +%s) - start)) s" >&2

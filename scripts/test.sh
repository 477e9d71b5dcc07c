#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
./scripts/build.sh
built=$(date +%s)
echo "test.sh: build took $((built - start)) s" >&2
export OMP_WAIT_POLICY=PASSIVE
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
echo "test.sh: tests took $(( $(date +%s) - built )) s" >&2

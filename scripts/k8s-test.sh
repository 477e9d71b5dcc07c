#!/usr/bin/env bash
# Checks deploy/k8s (tests/k8s/check.py): every overlay renders with
# Debian 12's kubectl 1.20 and the kubectl on PATH, validates offline
# against the Kubernetes and Prometheus Operator schemas (npm packages in
# tests/k8s/package-lock.json, installed into build/k8s-validate), passes
# yamllint and promtool, names only flags hardneg-server accepts, and its
# container arguments serve when run on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/server/hardneg-server ]] || ./scripts/build.sh hardneg-server
exec /usr/bin/python3 tests/k8s/check.py --server build/server/hardneg-server \
  --work_dir build/k8s-test "$@"

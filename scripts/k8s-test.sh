#!/usr/bin/env bash
# Checks deploy/k8s (tests/k8s/check.py): every overlay renders with
# Debian 12's kubectl 1.20 and the kubectl on PATH, validates offline
# against the Kubernetes and Prometheus Operator schemas (npm packages in
# tests/k8s/package-lock.json, installed into build/k8s-validate), passes
# yamllint and promtool, names only flags hardneg-server and hardneg-router
# accept, and its containers serve when run on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
# Always through build.sh: it installs what is missing (kubectl, npm,
# yamllint, promtool, the Python packages) and rebuilds stale binaries,
# whose flags the manifests are checked against (a no-op when current).
./scripts/build.sh hardneg-server hardneg-router >/dev/null
exec /usr/bin/python3 tests/k8s/check.py --server build/server/hardneg-server \
  --router build/router/hardneg-router --work_dir build/k8s-test "$@"

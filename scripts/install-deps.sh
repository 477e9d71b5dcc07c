#!/usr/bin/env bash
# Installs what hardneg needs from Debian 12's packages, only what is
# missing, and selects the OpenMP build of OpenBLAS (3-4x faster than the
# pthread build for batched search called from worker threads).
#
#   scripts/install-deps.sh            build + test + demo dependencies
#   scripts/install-deps.sh --build    only what compiling hardneg needs
#                                      (the image's build stage)
#   scripts/install-deps.sh --runtime  only what hardneg-server needs to run
#                                      (the image's runtime stage)
#
# Used by scripts/test.sh, scripts/demo.sh and the Dockerfile alike.
set -euo pipefail

runtime=(libgrpc++1.51 libprotobuf32 libabsl20220623 libprometheus-cpp-core1.0
         libopenblas0-openmp libgomp1 zlib1g)
compile=(build-essential cmake ninja-build pkg-config
         libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
         libabsl-dev libfaiss-dev prometheus-cpp-dev libopenblas-dev
         libopenblas0-openmp libgtest-dev libgmock-dev
         nlohmann-json3-dev zlib1g-dev)
build=("${compile[@]}" git libbenchmark-dev dataset-fashion-mnist
       python3-grpcio python3-numpy python3-protobuf python3-yaml binutils
       python3-venv python3-setuptools python3-pip  # pip install ./python
       # python/tests, examples/ (the torchrun and Fashion-MNIST examples,
       # their progress bars and plots), demo.sh's picture
       # (scripts/demo_picture.py) and the Python type check:
       python3-torch python3-tqdm python3-matplotlib mypy
       prometheus yamllint  # promtool, and the server the Prometheus test scrapes with
       # The sanitizer and libFuzzer builds (scripts/sanitize.sh, fuzz.sh):
       # clang's omp.h (libomp-14-dev; the runtime stays libgomp) and
       # llvm-symbolizer, which reports and suppressions need.
       clang-14 libclang-rt-14-dev libomp-14-dev llvm-14
       clang-tidy-14)  # scripts/static-checks.sh

# The image and Kubernetes tests (scripts/image-test.sh, k8s-test.sh): a
# container engine that runs as root without a daemon, the base image
# maker, kubectl (its kustomize) and npm (the offline schema validator).
# kubectl and npm only when no such command exists: other packages (e.g.
# google-cloud-sdk's kubectl, nodesource's nodejs) may own those paths.
build+=(podman runc mmdebstrap uidmap)
command -v kubectl >/dev/null 2>&1 || build+=(kubernetes-client)
command -v npm >/dev/null 2>&1 || build+=(npm)

case "${1:-}" in
  --runtime) wanted=("${runtime[@]}") ;;
  --build) wanted=("${compile[@]}") ;;
  "") wanted=("${build[@]}") ;;
  *) echo "usage: $0 [--build|--runtime]" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$pkg")
  fi
done

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

# The BLAS that FAISS and our kernel load at run time.
for dir in /usr/lib/*/openblas-openmp; do
  [[ -d "$dir" ]] || continue
  arch=$(basename "$(dirname "$dir")")
  for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
    target="$dir/$lib"
    [[ -e "$target" ]] || continue
    if [[ "$(readlink -f "/usr/lib/$arch/$lib")" != "$(readlink -f "$target")" ]]; then
      $sudo update-alternatives --quiet --set "$lib-$arch" "$target"
    fi
  done
done

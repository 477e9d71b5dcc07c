#!/usr/bin/env bash
# Builds the hardneg-server image with podman and runs it the way
# Kubernetes would: the container arguments and environment of the
# rendered deploy/k8s/base manifest (tests/k8s/hardneg_k8s.py reads them),
# a read-only root filesystem with /tmp on tmpfs, the image's non-root
# user, and a small checkpoint mounted read-only at /checkpoints. Then it
# checks over gRPC: health SERVING, GetIndexInfo, one MineOnce, and
# GET /metrics; and the same through the image's hardneg-router over that
# server. Prints the image's size and build time.
#
#   scripts/image-test.sh            (as root; installs podman, runc,
#                                     mmdebstrap if missing)
#   HARDNEG_IMAGE_JOBS=N             compile jobs in the build (default 2)
#
# No registry is needed: the base image debian:12 is made once with
# mmdebstrap and `podman import`ed (skipped when it exists). Podman runs
# without a daemon: --isolation=chroot to build, runc and host networking
# to run, ulimits within this host's.
#
# The only argument changed from the manifest's: the gRPC and metrics
# ports, appended (the last occurrence of a flag wins) with free ones,
# because the container shares the host's network with other tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=/usr/bin/python3
image=${HARDNEG_IMAGE:-hardneg:dev}
base=docker.io/library/debian:12
work="$root/build/image-test"
mkdir -p "$work"

# Everything the checks below use (Python's yaml, numpy and gRPC, protoc,
# kubectl, readelf), as on a fresh Debian 12 machine.
./scripts/install-deps.sh

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
need=()
for tool in podman:podman runc:runc mmdebstrap:mmdebstrap kubectl:kubernetes-client; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if ((${#need[@]})); then
  echo "image-test: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${need[@]}" uidmap >/dev/null
fi
podman=($sudo podman)

# --- base image ----------------------------------------------------------
if ! "${podman[@]}" image exists "$base"; then
  t0=$(date +%s)
  rm -f "$work/base.tar"
  $sudo mmdebstrap --quiet --variant=minbase bookworm "$work/base.tar"
  "${podman[@]}" import "$work/base.tar" "$base" >/dev/null
  rm -f "$work/base.tar"
  echo "image-test: made $base with mmdebstrap in $(($(date +%s) - t0)) s" >&2
fi

# --- build ---------------------------------------------------------------
t0=$(date +%s)
"${podman[@]}" build --isolation=chroot --network=host --pull=never \
  --build-arg REVISION="$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)" \
  --build-arg JOBS="${HARDNEG_IMAGE_JOBS:-2}" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$image" . >"$work/build.log" 2>&1 || {
  tail -40 "$work/build.log" >&2; echo "image-test: build FAILED (log: $work/build.log)" >&2; exit 1; }
build_s=$(($(date +%s) - t0))
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
# Disk: drop the images earlier runs left (the untagged previous runtime
# image, build stages but the newest, whose layers are the next cache).
"${podman[@]}" image prune -f --filter label=org.opencontainers.image.title=hardneg-server >/dev/null 2>&1 || true
mapfile -t stages < <("${podman[@]}" images -q --filter label=io.hardneg.stage=build \
  --sort created --format '{{.ID}}' | tail -n +2)
((${#stages[@]} == 0)) || "${podman[@]}" rmi "${stages[@]}" >/dev/null 2>&1 || true
echo "image-test: image $image: $((size / 1000000)) MB, built in ${build_s} s" >&2

# --- what the image holds --------------------------------------------------
fail() { echo "image-test: FAILED: $*" >&2; exit 1; }
inspect() { "${podman[@]}" image inspect --format "$1" "$image"; }
user=$(inspect '{{.Config.User}}')
[[ -n "$user" && "${user%%:*}" != 0 && "${user%%:*}" != root ]] || fail "image user is '$user'"
[[ "$(inspect '{{index .Config.Labels "org.opencontainers.image.title"}}')" == hardneg-server ]] \
  || fail "no org.opencontainers.image.title label"
inspect '{{json .Config.Env}}' | grep -q 'OMP_WAIT_POLICY=PASSIVE' || fail "no ENV OMP_WAIT_POLICY=PASSIVE"
for port in 50051/tcp 9464/tcp; do
  inspect '{{json .Config.ExposedPorts}}' | grep -q "\"$port\"" || fail "port $port not exposed"
done
inspect '{{json .Config.Volumes}}' | grep -q '"/data"' || fail "no /data volume"
# Stripped binaries, runtime libraries only, /data owned by the user.
"${podman[@]}" run --rm --runtime runc --network=host --ulimit nofile=4096:4096 \
  --ulimit nproc=4096:4096 --entrypoint /bin/sh "$image" -c '
    set -e
    test "$(stat -c %u /data)" = "$(id -u)" || { echo "/data is not owned by $(id -u)"; exit 1; }
    for tool in gcc g++ cc cmake ninja protoc; do
      if command -v $tool >/dev/null; then echo "build tool $tool in the runtime image"; exit 1; fi
    done
    dev=$(dpkg-query -W -f "\${Package}\n" | grep -E -- "-dev$" || true)
    test -z "$dev" || { echo "-dev packages in the runtime image: $dev"; exit 1; }
    missing=$(ldd /usr/local/bin/hardneg-server /usr/local/bin/hardneg-router /usr/local/bin/hardneg | grep "not found" || true)
    test -z "$missing" || { echo "libraries missing: $missing"; exit 1; }
  ' || fail "runtime image contents"
cid=$("${podman[@]}" create "$image")
for bin in hardneg-server hardneg-router; do
  "${podman[@]}" cp "$cid:/usr/local/bin/$bin" "$work/$bin.image"
done
"${podman[@]}" rm -f "$cid" >/dev/null
for bin in hardneg-server hardneg-router; do
  # Through a file: under pipefail, a failing readelf (or grep -q closing
  # the pipe early) must not pass for "stripped".
  readelf -S "$work/$bin.image" >"$work/sections.txt" ||
    fail "readelf cannot read $bin from the image"
  if grep -q '\.debug_info' "$work/sections.txt"; then
    fail "$bin in the image is not stripped"
  fi
done
echo "image-test: image ok: user $user, OCI labels, OMP_WAIT_POLICY, ports, /data, stripped, no build tools" >&2

# --- run it as the manifest does ---------------------------------------------
mapfile -t args < <("$py" tests/k8s/hardneg_k8s.py args)
mapfile -t env < <("$py" tests/k8s/hardneg_k8s.py env)
((${#args[@]})) || fail "no container args in the rendered base manifest"
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port)
metrics_port=$(free_port)
while [[ "$metrics_port" == "$grpc_port" ]]; do metrics_port=$(free_port); done
rm -rf "$work/checkpoints" "$work/py"
"$py" tests/k8s/hardneg_k8s.py make-checkpoint "$work/checkpoints"
envflags=()
for e in "${env[@]}"; do envflags+=(-e "$e"); done
name="hardneg-image-test-$$"
run=("${podman[@]}" run -d --name "$name" --runtime runc --network=host
     --ulimit nofile=4096:4096 --ulimit nproc=4096:4096
     --read-only --tmpfs /tmp -v "$work/checkpoints:/checkpoints:ro"
     "${envflags[@]}" "$image" "${args[@]}"
     "--grpc_port=$grpc_port" "--metrics_port=$metrics_port")
echo "image-test: ${run[*]}" >&2
cleanup() { "${podman[@]}" rm -f -v "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"${run[@]}" >/dev/null
if ! "$py" tests/k8s/hardneg_k8s.py check --grpc "127.0.0.1:$grpc_port" \
    --metrics "127.0.0.1:$metrics_port" --work_dir "$work/py" --timeout 90; then
  "${podman[@]}" logs "$name" 2>&1 | tail -30 >&2
  fail "the container does not serve"
fi
"${podman[@]}" logs "$name" 2>&1 | grep -q 'event=version_swap' || echo "image-test: (no version_swap log line seen)" >&2
# The image's hardneg-router, over that server as its one shard, as the
# sharded overlay runs it (command hardneg-router).
router_port=$(free_port)
router_metrics=$(free_port)
router_name="hardneg-image-test-router-$$"
cleanup() {
  "${podman[@]}" rm -f -v "$name" "$router_name" >/dev/null 2>&1 || true
}
"${podman[@]}" run -d --name "$router_name" --runtime runc --network=host \
  --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --read-only \
  --entrypoint /usr/local/bin/hardneg-router "$image" \
  "--shards=127.0.0.1:$grpc_port" "--host=127.0.0.1" \
  "--grpc_port=$router_port" "--metrics_port=$router_metrics" \
  "--poll_interval=200ms" >/dev/null
if ! "$py" tests/k8s/hardneg_k8s.py check --router \
    --grpc "127.0.0.1:$router_port" --metrics "127.0.0.1:$router_metrics" \
    --work_dir "$work/py" --timeout 60; then
  "${podman[@]}" logs "$router_name" 2>&1 | tail -30 >&2
  fail "the image's hardneg-router does not serve"
fi
"${podman[@]}" stop -t 30 "$router_name" >/dev/null
rc=$("${podman[@]}" inspect --format '{{.State.ExitCode}}' "$router_name")
[[ "$rc" == 0 ]] || fail "the router container exited $rc on SIGTERM"
# SIGTERM: drains and exits 0 within --shutdown_grace.
"${podman[@]}" stop -t 30 "$name" >/dev/null
rc=$("${podman[@]}" inspect --format '{{.State.ExitCode}}' "$name")
[[ "$rc" == 0 ]] || fail "the container exited $rc on SIGTERM"
echo "image-test: ok: image $image $((size / 1000000)) MB, build ${build_s} s" >&2

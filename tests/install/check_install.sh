#!/usr/bin/env bash
# install_prefix (CTest): `cmake --install BUILD_DIR --prefix WORK_DIR/prefix`
# into a fresh prefix, then checks, from the installed files only:
#   - the prefix holds exactly the expected files (nothing else leaks in);
#   - the three binaries run by bare name with the prefix's bin/ on PATH;
#   - tests/install/consumer, a separate CMake project, finds the package
#     (find_package(hardneg), CMAKE_PREFIX_PATH=prefix), links
#     hardneg::client, includes "hardneg/client.h", and publishes to, reads
#     from and mines the installed hardneg-server; `hardneg info` then sees
#     what it published.
#
#   tests/install/check_install.sh BUILD_DIR WORK_DIR
#
# WORK_DIR is emptied first; it is removed when every check passes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
work=$2
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)
prefix="$work/prefix"
server_pid=
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
fail() {
  echo "check_install.sh: $*" >&2
  exit 1
}
export OMP_WAIT_POLICY=PASSIVE
unset HARDNEG_TOKEN

echo "== cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log" >&2; fail "cmake --install failed"; }

# The expected tree. The library directory is GNUInstallDirs' (lib, or
# lib/<multiarch> for a /usr prefix); the targets file of the build type is
# hardnegTargets-<config>.cmake.
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$build/CMakeCache.txt")
libdir=${libdir:-lib}
expected=$(sort <<EOF
bin/hardneg
bin/hardneg-router
bin/hardneg-server
include/hardneg/client.h
include/hardneg/mining/options.h
$libdir/cmake/hardneg/hardnegConfig.cmake
$libdir/cmake/hardneg/hardnegConfigVersion.cmake
$libdir/cmake/hardneg/hardnegTargets-CONFIG.cmake
$libdir/cmake/hardneg/hardnegTargets.cmake
$libdir/libhardneg_client.a
EOF
)
actual=$(cd "$prefix" && find . -type f -o -type l | sed 's|^\./||' |
         sed -E 's|hardnegTargets-[a-z]+\.cmake$|hardnegTargets-CONFIG.cmake|' |
         sort)
if [[ "$actual" != "$expected" ]]; then
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  fail "the installed files differ from the expected ones (- expected, + installed)"
fi
for bin in hardneg hardneg-server hardneg-router; do
  [[ -x "$prefix/bin/$bin" ]] || fail "$prefix/bin/$bin is not executable"
done

echo "== the binaries, by bare name from $prefix/bin"
export PATH="$prefix/bin:$PATH"
[[ "$(command -v hardneg)" == "$prefix/bin/hardneg" ]] ||
  fail "hardneg is not found in $prefix/bin"
hardneg --help >"$work/hardneg-help.txt" ||
  fail "hardneg --help exited $?"
grep -q '^usage: hardneg <command>' "$work/hardneg-help.txt" ||
  fail "hardneg --help: no usage line"
hardneg-router --help >"$work/router-help.txt" 2>&1 ||
  fail "hardneg-router --help exited $?"
grep -q -- '--shards' "$work/router-help.txt" ||
  { cat "$work/router-help.txt" >&2; fail "hardneg-router --help: no --shards"; }

# A server on an empty checkpoint directory: the consumer publishes to it.
mkdir -p "$work/checkpoints"
hardneg-server --checkpoints "$work/checkpoints" --grpc_port 0 \
  --metrics_port -1 --host 127.0.0.1 --threads 1 \
  >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 300); do
  grep -q '^listening on' "$work/server.out" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null ||
    { cat "$work/server.log" >&2; fail "hardneg-server exited"; }
  sleep 0.1
done
port=$(awk '/^listening on/ {print $3}' "$work/server.out")
[[ -n "$port" ]] || { cat "$work/server.log" >&2; fail "hardneg-server did not start"; }
echo "hardneg-server listening on $port"

echo "== tests/install/consumer: find_package(hardneg), hardneg::client"
# Only the prefix: no package registry, so nothing but the install is found.
# The build's own compiler.
cxx=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
cmake -S "$here/consumer" -B "$work/consumer" -G Ninja \
  ${cxx:+-DCMAKE_CXX_COMPILER="$cxx"} \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$work/consumer-configure.log" ||
  { cat "$work/consumer-configure.log" >&2; fail "the consumer's configure failed"; }
found=$(sed -n 's/^hardneg_DIR:PATH=//p' "$work/consumer/CMakeCache.txt")
[[ "$found" == "$prefix/$libdir/cmake/hardneg" ]] ||
  fail "find_package(hardneg) found '$found', not the prefix's"
ninja -C "$work/consumer" -j1 >"$work/consumer-build.log" ||
  { cat "$work/consumer-build.log" >&2; fail "the consumer's build failed"; }
"$work/consumer/consumer" "127.0.0.1:$port" ||
  { cat "$work/server.log" >&2; fail "the consumer failed against hardneg-server"; }

hardneg info --server "127.0.0.1:$port" --format json >"$work/info.json" ||
  fail "hardneg info exited $?"
grep -q '"name": "consumer-v1".*"size": 8,' "$work/info.json" ||
  { cat "$work/info.json" >&2; fail "hardneg info does not show consumer-v1"; }

cleanup
server_pid=
rm -rf "$work"
echo "check_install.sh: OK"

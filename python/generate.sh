#!/bin/sh
# Generates the Python gRPC stubs of proto/hardneg/v1/miner.proto into
# python/hardneg/v1/ (miner_pb2.py, miner_pb2_grpc.py). They are not
# committed (.gitignore); run this after every change to the proto.
#
# Needs the system protoc and grpc_python_plugin (Debian:
# protobuf-compiler protobuf-compiler-grpc). grpc_tools' bundled protoc is
# too old for proto3 `optional`, so it is not used.
#
#   python/generate.sh [OUT_DIR]    # OUT_DIR defaults to python/
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$here}
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-/usr/bin/grpc_python_plugin}
if [ ! -x "$plugin" ]; then
  plugin=$(command -v grpc_python_plugin || true)
fi
if [ -z "$plugin" ] || [ ! -x "$plugin" ]; then
  echo "generate.sh: grpc_python_plugin not found (apt-get install protobuf-compiler-grpc)" >&2
  exit 1
fi
mkdir -p "$out"
"$protoc" -I "$root/proto" --python_out="$out" --pyi_out="$out" --grpc_out="$out" \
  --plugin=protoc-gen-grpc="$plugin" "$root/proto/hardneg/v1/miner.proto"
if [ ! -f "$out/hardneg/v1/__init__.py" ]; then
  mkdir -p "$out/hardneg/v1"
  : > "$out/hardneg/v1/__init__.py"
fi
echo "generated $out/hardneg/v1/miner_pb2.py and miner_pb2_grpc.py"

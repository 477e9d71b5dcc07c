"""Builds the hardneg package with its gRPC stubs generated at build time.

The stubs (hardneg/v1/miner_pb2.py, miner_pb2_grpc.py) are made from
../proto/hardneg/v1/miner.proto into the build directory, never into the
source tree, with the system protoc and grpc_python_plugin
(python3-grpc-tools' protoc is too old for proto3 `optional`). PROTOC and
GRPC_PYTHON_PLUGIN override where they are found. Metadata is in
pyproject.toml.
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "proto")
PROTO = os.path.join("hardneg", "v1", "miner.proto")


def find_tool(env, default, package):
    path = os.environ.get(env) or shutil.which(default) or default
    if not os.path.exists(path):
        raise SystemExit(f"hardneg: {default} not found; install {package} "
                         f"(Debian) or set {env}")
    return path


class BuildWithStubs(build_py):
    """build_py, then the stubs generated into the build directory."""

    def run(self):
        super().run()
        if not os.path.exists(os.path.join(PROTO_ROOT, PROTO)):
            raise SystemExit(
                f"hardneg: {os.path.join(PROTO_ROOT, PROTO)} not found: build "
                "from a checkout of the repository (python/ beside proto/)")
        protoc = find_tool("PROTOC", "/usr/bin/protoc", "protobuf-compiler")
        plugin = find_tool("GRPC_PYTHON_PLUGIN", "/usr/bin/grpc_python_plugin",
                           "protobuf-compiler-grpc")
        subprocess.run(
            [protoc, f"-I{PROTO_ROOT}", f"--python_out={self.build_lib}",
             f"--pyi_out={self.build_lib}", f"--grpc_out={self.build_lib}",
             f"--plugin=protoc-gen-grpc={plugin}",
             os.path.join(PROTO_ROOT, PROTO)],
            check=True)


setup(cmdclass={"build_py": BuildWithStubs})

#!/usr/bin/python3
"""`pip install ./python` from a clean venv, then the installed package
against a real hardneg-server.

Creates a venv with --system-site-packages (Debian's grpcio, protobuf and
numpy), installs the package with the documented command (pip, Debian's
setuptools, no registry), and checks from outside the source tree that:
the stubs were generated at build time (and not written into the source
tree), `hardneg.Client` mines and reports the index, the package imports
from the venv, not from the checkout, a misspelt option raises TypeError
naming it, and info() on a dead server raises hardneg.MineError with the
gRPC code.

  /usr/bin/python3 python/tests/test_install.py \\
      --server build/server/hardneg-server --work_dir /tmp/hardneg_install

Prints `N passed, M failed`; exits 1 on any failure.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(PYTHON_DIR)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import loopback_server  # noqa: E402  (write_checkpoint, start)

# Run by the venv's interpreter, from the work dir: the installed package
# against the server on the given port.
SMOKE = r"""
import sys
import numpy as np
import hardneg
import os
print("imported", hardneg.__file__)
assert "site-packages" in hardneg.__file__, hardneg.__file__
package = os.path.dirname(hardneg.__file__)
for typed in ("py.typed", "v1/miner_pb2.pyi"):  # type hints ship
    assert os.path.exists(os.path.join(package, typed)), typed
from hardneg.v1 import miner_pb2
assert "allow_partial" in miner_pb2.MiningOptions.DESCRIPTOR.fields_by_name
client = hardneg.Client(f"127.0.0.1:{sys.argv[1]}")
info = client.info()
assert info.size == 200 and info.dim == 8, info
queries = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
res = client.mine(queries, num_negatives=4)
assert res.ids.shape == (3, 4), res.ids.shape
assert (res.ids >= 0).all() and (res.ids < 200).all(), res.ids
assert res.missing_shards == [], res.missing_shards
print("mined", res.ids.tolist())
try:  # a misspelt option is named, not reported as a missing one
    client.mine(queries, num_negative=3)
    raise AssertionError("num_negative was accepted")
except TypeError as e:
    assert "num_negative'" in str(e) or "'num_negative'" in str(e), e
dead = hardneg.Client("127.0.0.1:1", timeout=2)
try:  # a dead server is a hardneg error carrying the gRPC code
    dead.info()
    raise AssertionError("info() on a dead server returned")
except hardneg.MineError as e:
    assert e.code == 14, (e.code, str(e))
print("errors ok")
v = client.publish(queries, [10**6, 10**6 + 1, 10**6 + 2], name="py-v2",
                   step=2, base_version=info.version.name, progress=False)
assert v.name == "py-v2" and client.info().size == 203, client.info()
print("published", v)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--work_dir")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="hardneg_install_")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    failed = []
    passed = 0

    def check(name, ok, detail=""):
        nonlocal passed
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        if ok:
            passed += 1
        else:
            failed.append(name)
        return ok

    t0 = time.time()
    venv = os.path.join(work, "venv")
    subprocess.run(["/usr/bin/python3", "-m", "venv",
                    "--system-site-packages", venv], check=True)
    # A copy of python/ beside proto/, as in a checkout: pip builds in
    # place, and the checkout itself stays untouched.
    src = os.path.join(work, "src")
    shutil.copytree(PYTHON_DIR, os.path.join(src, "python"),
                    ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                  "__pycache__", "*_pb2*"))
    shutil.copytree(os.path.join(ROOT, "proto"), os.path.join(src, "proto"))
    pip = subprocess.run(
        [os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation",
         "--no-index", os.path.join(src, "python")],
        capture_output=True, text=True)
    check("pip install --no-build-isolation --no-index ./python",
          pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
          if pip.returncode else f"{time.time() - t0:.1f} s")
    copy = os.path.join(src, "python", "hardneg", "v1")
    stubs = [f for f in os.listdir(copy) if "_pb2" in f]
    check("the stubs are built, not written into hardneg/v1", not stubs,
          str(stubs))
    proc, port = loopback_server.start(
        args.server, loopback_server.write_checkpoint(work, 200, 8), work)
    try:
        smoke = subprocess.run(
            [os.path.join(venv, "bin", "python"), "-c", SMOKE, str(port)],
            cwd=work, capture_output=True, text=True, timeout=60)
        check("the installed package mines against hardneg-server",
              smoke.returncode == 0, (smoke.stdout + smoke.stderr)[-2000:])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"{passed} passed, {len(failed)} failed ({time.time() - t0:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

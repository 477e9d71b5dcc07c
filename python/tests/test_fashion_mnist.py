#!/usr/bin/env python3
"""CTest example_fashion_mnist: runs examples/train_fashion_mnist.py --quick
against a real hardneg-server and checks that its results are well formed.

The example imports `hardneg` like any trainer. So that the test never
writes into the source tree, the client package (python/hardneg, without
any stubs) is copied into --work_dir/py and python/generate.sh generates the
gRPC stubs into that copy; the example then runs with PYTHONPATH set to it:

    /usr/bin/python3 examples/train_fashion_mnist.py --quick \\
        --server SERVER --out WORK_DIR/out

Checked: it exits 0; results.json holds every strategy of the quick run
(one of them a stale index), every seed and every epoch, recall@1 values in
[0, 1], and a verdict; recall_at_1.png exists and starts with the PNG
signature. No quality threshold: a 2-epoch run's recalls are noise.

    python/tests/test_fashion_mnist.py --server build/server/hardneg-server \\
        [--python_dir python] [--work_dir /tmp/example_fashion_mnist]
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def stubbed_package(python_dir: str, work_dir: str) -> str:
    """A copy of the client package with generated stubs; its parent dir."""
    py = os.path.join(work_dir, "py")
    shutil.rmtree(py, ignore_errors=True)
    shutil.copytree(os.path.join(python_dir, "hardneg"), os.path.join(py, "hardneg"),
                    ignore=shutil.ignore_patterns("*_pb2*.py", "__pycache__"))
    subprocess.run(["sh", os.path.join(python_dir, "generate.sh"), py], check=True)
    return py


def check_results(out: str) -> list:
    """What is wrong with the example's outputs (empty: nothing)."""
    errors = []
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    cfg = res["config"]
    strategies = res["strategies"]
    if len(strategies) < 2:
        errors.append(f"only {len(strategies)} strategies")
    if "random" not in strategies:
        errors.append("no random baseline")
    if not any(not s["refresh"] for s in strategies.values()):
        errors.append("no stale-index strategy")
    for name, s in strategies.items():
        seeds = s["seeds"]
        if sorted(seeds) != [str(i) for i in range(cfg["seeds"])]:
            errors.append(f"{name}: seeds {sorted(seeds)}, expected {cfg['seeds']}")
        for seed, r in seeds.items():
            rec = r["recall_at_1"]
            if len(rec) != cfg["epochs"]:
                errors.append(f"{name} seed {seed}: {len(rec)} epochs, expected "
                              f"{cfg['epochs']}")
            bad = [v for v in rec if not (isinstance(v, float) and 0.0 <= v <= 1.0)]
            if bad:
                errors.append(f"{name} seed {seed}: recall@1 out of [0, 1]: {bad}")
        for key in ("final_mean", "final_sd"):
            if not math.isfinite(s[key]):
                errors.append(f"{name}: {key} {s[key]}")
    if not res.get("verdict"):
        errors.append("no verdict")
    png = os.path.join(out, "recall_at_1.png")
    if not os.path.exists(png):
        errors.append("no recall_at_1.png")
    else:
        with open(png, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                errors.append("recall_at_1.png is not a PNG")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="hardneg-server binary")
    ap.add_argument("--python_dir", default=os.path.join(ROOT, "python"))
    ap.add_argument("--work_dir", default="/tmp/example_fashion_mnist")
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    py = stubbed_package(args.python_dir, args.work_dir)
    out = os.path.join(args.work_dir, "out")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=py, OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "train_fashion_mnist.py"),
           "--quick", "--server", args.server, "--out", out]
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        print(f"FAIL the example exited {rc}")
        return 1
    errors = check_results(out)
    for e in errors:
        print(f"FAIL {e}")
    print("ok: results.json and recall_at_1.png are well formed" if not errors
          else f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

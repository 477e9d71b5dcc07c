#!/usr/bin/env python3
"""CTest demo_picture: scripts/demo_picture.py, the PNG scripts/demo.sh
writes, on a small real case without the whole demo.

A checkpoint of the first 10,000 Fashion-MNIST training images (ids =
indexes, as `--fashion_mnist --split train` writes them), a real
hardneg-server on it, the first 40 test images mined with the `hardneg` CLI
to JSON (own class excluded), then the script, twice: with the demo's
defaults (6 rows of 5 negatives) and with 3 rows of 4. Each PNG must exist,
start with the PNG signature, have intact chunks (CRCs) whose IDAT inflates
to exactly height x (1 + width x channels) bytes, decode with matplotlib,
not be blank, and be the size the script promises (literal pixel counts,
so a layout change has to be made here too). Then the failures: a missing
JSON, a missing dataset directory and a negative that is not the training
image its id names must each exit non-zero, say why, and write no PNG.

    tests/demo/check_picture.py --server build/server/hardneg-server \\
        --cli build/client/hardneg [--work_dir /tmp/demo_picture]
"""

import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from typing import List, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "demo_picture.py")
DATASET = "/usr/share/datasets/fashion-mnist"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CANDIDATES = 10_000


def run(cmd: List[str]) -> "subprocess.CompletedProcess[str]":
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, text=True, capture_output=True)


def write_candidates(work: str) -> Tuple[str, str, str]:
    """The first CANDIDATES training images, L2-normalised, ids = indexes."""
    with gzip.open(os.path.join(DATASET, "train-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(DATASET, "train-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = images[:CANDIDATES].astype(np.float32) / 255.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    paths = tuple(os.path.join(work, n) for n in ("emb.npy", "ids.npy", "labels.npy"))
    np.save(paths[0], x)
    np.save(paths[1], np.arange(CANDIDATES, dtype=np.int64))
    np.save(paths[2], labels[:CANDIDATES].astype(np.int64))
    return paths[0], paths[1], paths[2]


def png_errors(path: str, width: int, height: int) -> List[str]:
    """What is wrong with the PNG at path, expected width x height."""
    if not os.path.exists(path):
        return [f"{path}: not written"]
    data = open(path, "rb").read()
    if data[:8] != PNG_SIGNATURE:
        return [f"{path}: no PNG signature"]
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        if pos + 12 > len(data):
            return [f"{path}: truncated at byte {pos}"]
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if pos + 12 + n > len(data):
            return [f"{path}: chunk {kind!r} truncated"]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) != crc:
            return [f"{path}: bad CRC in chunk {kind!r}"]
        chunks.append(kind)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + n
    if not chunks or chunks[0] != b"IHDR" or chunks[-1] != b"IEND":
        return [f"{path}: chunks {chunks}"]
    w, h, depth, color = struct.unpack(">IIBB", data[16:26])
    errors = []
    if (w, h) != (width, height):
        errors.append(f"{path}: {w} x {h} pixels, expected {width} x {height}")
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if depth != 8 or channels is None:
        return errors + [f"{path}: bit depth {depth}, colour type {color}"]
    raw = zlib.decompress(idat)
    if len(raw) != h * (1 + w * channels):
        errors.append(f"{path}: IDAT inflates to {len(raw)} bytes, not "
                      f"{h} x (1 + {w} x {channels})")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image
    pixels = matplotlib.image.imread(path)
    if pixels.shape[:2] != (height, width):
        errors.append(f"{path}: matplotlib decodes {pixels.shape}")
    if float(pixels[..., :3].std()) < 0.05:
        errors.append(f"{path}: blank (pixel std {pixels[..., :3].std():.3f})")
    return errors


def expect_failure(name: str, cmd: List[str], out: str, says: str) -> List[str]:
    r = run(cmd)
    print(r.stderr, end="")
    errors = []
    if r.returncode == 0:
        errors.append(f"{name}: exit 0")
    if says not in r.stderr:
        errors.append(f"{name}: stderr does not say {says!r}: {r.stderr!r}")
    if os.path.exists(out):
        errors.append(f"{name}: wrote {out}")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="hardneg-server binary")
    ap.add_argument("--cli", required=True, help="hardneg binary")
    ap.add_argument("--work_dir", default="/tmp/demo_picture")
    args = ap.parse_args()
    work = args.work_dir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t0 = time.monotonic()
    emb, ids, labels = write_candidates(work)
    r = run([args.cli, "make-checkpoint", "--out", f"{work}/ck", "--name", "fm",
             "--step", "1", "--embeddings", emb, "--ids", ids, "--labels", labels])
    r.check_returncode()
    for path in (emb, ids, labels):  # the checkpoint has its own copy
        os.remove(path)
    q, ql, neg = f"{work}/q.npy", f"{work}/ql.npy", f"{work}/negatives.json"
    run([args.cli, "make-checkpoint", "--fashion_mnist", "--export_queries", q,
         "--export_labels", ql, "--limit", "40"]).check_returncode()

    out = open(f"{work}/server.out", "w")
    log = open(f"{work}/server.log", "w")
    server = subprocess.Popen([args.server, "--checkpoints", f"{work}/ck",
                               "--grpc_port", "0", "--metrics_port", "0"],
                              stdout=out, stderr=log)
    errors: List[str] = []
    try:
        port = ""
        for _ in range(300):
            lines = open(f"{work}/server.out").read().split("\n")
            port = next((ln.split()[2] for ln in lines
                         if ln.startswith("listening on")), "")
            if port or server.poll() is not None:
                break
            time.sleep(0.1)
        if not port:
            print(open(f"{work}/server.log").read())
            print("FAIL hardneg-server did not start")
            return 1
        r = run([args.cli, "mine", "--server", f"127.0.0.1:{port}", "--queries", q,
                 "--labels", ql, "--num_negatives", "5", "--output", neg])
        print(r.stderr, end="")
        r.check_returncode()
    finally:
        server.terminate()
        server.wait(30)

    py = "/usr/bin/python3"
    cases: List[Tuple[List[str], int, int]] = [
        ([], 784, 964),  # the demo's: 6 rows of 1 + 5 tiles
        (["--rows", "3", "--per_row", "4"], 656, 496)]
    for extra, width, height in cases:
        png = f"{work}/negatives{len(extra)}.png"
        r = run([py, SCRIPT, "--negatives", neg, "--out", png] + extra)
        print(r.stdout + r.stderr, end="")
        if r.returncode != 0:
            errors.append(f"demo_picture.py {extra} exited {r.returncode}")
        errors += png_errors(png, width, height)

    missing = f"{work}/none.png"
    errors += expect_failure("missing JSON", [py, SCRIPT, "--negatives",
                             f"{work}/absent.json", "--out", missing],
                             missing, "absent.json")
    errors += expect_failure("missing dataset", [py, SCRIPT, "--negatives", neg,
                             "--out", missing, "--dataset_dir", f"{work}/nodata"],
                             missing, "nodata")
    res = json.load(open(neg))
    res["results"][0]["negatives"][0]["label"] = (
        res["results"][0]["negatives"][0]["label"] + 1) % 10
    json.dump(res, open(f"{work}/wrong.json", "w"))
    errors += expect_failure("wrong label", [py, SCRIPT, "--negatives",
                             f"{work}/wrong.json", "--out", missing],
                             missing, "not a Fashion-MNIST training image")
    for e in errors:
        print(f"FAIL {e}")
    print(f"ok: the pictures are well formed ({time.monotonic() - t0:.1f} s)"
          if not errors else f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

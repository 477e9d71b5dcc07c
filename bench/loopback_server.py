"""What the Python benchmarks share: a random checkpoint, a hardneg-server
started on 127.0.0.1 over it, and the server's RSS."""
import json
import os
import subprocess
import sys
import time

import numpy as np


def write_checkpoint(root, rows, dim, seed=0):
    """A random float32 checkpoint `v1` under root/ck; returns root/ck."""
    d = os.path.join(root, "ck", "v1")
    os.makedirs(d)
    rng = np.random.default_rng(seed)
    np.save(f"{d}/embeddings-00000.npy",
            rng.standard_normal((rows, dim)).astype(np.float32))
    np.save(f"{d}/ids-00000.npy", np.arange(rows, dtype=np.int64))
    with open(f"{d}/manifest.json", "w") as f:
        json.dump({"name": "v1", "step": 1, "dim": dim, "shards": [
            {"embeddings": "embeddings-00000.npy", "ids": "ids-00000.npy"}]},
                  f)
    return os.path.join(root, "ck")


def start(binary, checkpoints, work, name="server", extra=()):
    """Starts hardneg-server on 127.0.0.1 (logs in work/name.log) and
    waits for its port; returns (process, port)."""
    out = open(os.path.join(work, name + ".out"), "w+")
    proc = subprocess.Popen(
        [binary, "--checkpoints", checkpoints, "--grpc_port=0",
         "--metrics_port=-1", "--host=127.0.0.1"] + list(extra),
        stdout=out, stderr=open(os.path.join(work, name + ".log"), "w"))
    deadline = time.time() + 30
    while time.time() < deadline:
        out.seek(0)
        line = out.readline()
        if line.startswith("listening on "):
            return proc, int(line.split()[2])
        time.sleep(0.05)
    proc.kill()
    sys.exit(f"{name} did not start; see {work}/{name}.log")


def rss_mb(pid):
    """The resident set of process `pid`, in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

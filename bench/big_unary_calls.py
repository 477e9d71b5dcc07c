#!/usr/bin/python3
"""400 concurrent 8 MB MineOnce calls: what the server's memory does.

Starts hardneg-server on 127.0.0.1 over a random 20k x 64 checkpoint, sends
400 MineOnce calls of 8.4 MB each (32,000 queries) at once, and prints how
they ended and the server's RSS (peak, sampled every 20 ms, and at the
end). The issue's probe of this grew the server past 2.9 GB. It asserts
nothing.

  /usr/bin/python3 bench/big_unary_calls.py --server build/server/hardneg-server
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "monitoring"))
import monitoring_common as mc  # noqa: E402  (load_stubs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hardneg_big_calls_")
    _, pb, _ = mc.load_stubs(os.path.join(ROOT, "proto"), work)
    ck = os.path.join(work, "ck", "v1")
    os.makedirs(ck)
    rng = np.random.default_rng(0)
    np.save(f"{ck}/embeddings-00000.npy",
            rng.standard_normal((20000, 64)).astype(np.float32))
    np.save(f"{ck}/ids-00000.npy", np.arange(20000, dtype=np.int64))
    with open(f"{ck}/manifest.json", "w") as f:
        json.dump({"name": "v1", "step": 1, "dim": 64, "shards": [
            {"embeddings": "embeddings-00000.npy", "ids": "ids-00000.npy"}]}, f)
    out = open(os.path.join(work, "out"), "w+")
    server = subprocess.Popen(
        [args.server, "--checkpoints", os.path.dirname(ck), "--grpc_port=0",
         "--metrics_port=-1", "--host=127.0.0.1"],
        stdout=out, stderr=open(os.path.join(work, "log"), "w"))
    try:
        port = None
        for _ in range(600):
            out.seek(0)
            line = out.readline()
            if line.startswith("listening on "):
                port = int(line.split()[2])
                break
            time.sleep(0.05)
        if port is None:
            sys.exit(f"the server did not start; see {work}/log")

        def rss():
            with open(f"/proc/{server.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
            return 0.0

        request = pb.MineRequest()
        embedding = rng.standard_normal(64).astype("<f4").tobytes()
        for _ in range(32000):
            request.queries.add().embedding_bytes = embedding
        request.options.num_negatives = 1
        raw = request.SerializeToString()
        channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_send_message_length", 64 << 20),
                     ("grpc.max_receive_message_length", 64 << 20)])
        call = channel.unary_unary("/hardneg.v1.Miner/MineOnce")
        before = rss()
        peak = [before]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.02)
        threading.Thread(target=sample, daemon=True).start()
        start = time.monotonic()
        futures = [call.future(raw, timeout=300) for _ in range(args.calls)]
        codes = {}
        for future in futures:
            try:
                future.result()
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            codes[code] = codes.get(code, 0) + 1
        done.set()
        print(f"{args.calls} concurrent MineOnce calls of {len(raw) / 1e6:.1f} "
              f"MB: {codes} in {time.monotonic() - start:.1f} s; server RSS "
              f"{before:.0f} MB before, peak {peak[0]:.0f} MB, "
              f"{rss():.0f} MB at the end; alive: {server.poll() is None}")
        channel.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

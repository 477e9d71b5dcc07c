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
import os
import sys
import tempfile
import threading
import time

import grpc
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "monitoring"))
import monitoring_common as mc  # noqa: E402  (load_stubs)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback_server  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hardneg_big_calls_")
    _, pb, _ = mc.load_stubs(os.path.join(ROOT, "proto"), work)
    server, port = loopback_server.start(
        args.server, loopback_server.write_checkpoint(work, 20000, 64), work)
    rng = np.random.default_rng(1)
    try:
        def rss():
            return loopback_server.rss_mb(server.pid)

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

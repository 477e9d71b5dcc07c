#!/usr/bin/python3
"""Does a client that never reads slow the others down?

Starts hardneg-server on 127.0.0.1 over a random 20k x 64 checkpoint and
measures one well-behaved Mine stream (4 queries a request, one request in
flight) for --seconds: first alone, then while 10 other streams, from
another process, send requests with large answers (20 queries x 2,000
negatives with embeddings) and never read them. Prints p50 and p99 of both phases, their ratio, and
the server's RSS, for --rounds alternated pairs and their median; it asserts
nothing (the machine is shared and noisy).

  /usr/bin/python3 bench/slow_client_p99.py --server build/server/hardneg-server
"""
import argparse
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import time

import grpc
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "monitoring"))
import monitoring_common as mc  # noqa: E402  (load_stubs)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback_server  # noqa: E402


def hold_slow_streams(port, big_request, work):
    """Opens 10 Mine streams that send requests with large answers and
    never read them; holds them until terminated."""
    _, pb, pbg = mc.load_stubs(os.path.join(ROOT, "proto"), work)
    big = pb.MineRequest.FromString(big_request)
    calls = []
    for _ in range(10):
        ch = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_send_message_length", 1 << 28)])
        calls.append((ch, pbg.MinerStub(ch).Mine(iter([big] * 200))))
    time.sleep(3600)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alone / with slow streams pairs, alternated")
    parser.add_argument("--server_flag", action="append", default=[],
                        help="passed on to hardneg-server (repeatable)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hardneg_slow_client_")
    grpc_mod, pb, pbg = mc.load_stubs(os.path.join(ROOT, "proto"), work)
    server, port = loopback_server.start(
        args.server, loopback_server.write_checkpoint(work, 20000, 64), work,
        extra=args.server_flag)
    rng = np.random.default_rng(1)
    try:
        def request(nq, nneg, embeddings=False):
            r = pb.MineRequest()
            for _ in range(nq):
                r.queries.add().embedding.extend(
                    rng.standard_normal(64).astype(np.float32).tolist())
            r.options.num_negatives = nneg
            r.options.return_embeddings = embeddings
            return r

        def measure():
            ch = grpc.insecure_channel(f"127.0.0.1:{port}")
            requests = queue.Queue()
            answers = pbg.MinerStub(ch).Mine(iter(requests.get, None))
            r = request(4, 10)
            latencies = []
            end = time.time() + args.seconds
            while time.time() < end:
                r.request_id += 1
                t0 = time.perf_counter()
                requests.put(r)
                next(answers)
                latencies.append(time.perf_counter() - t0)
            requests.put(None)
            ch.close()
            latencies.sort()
            return (len(latencies), statistics.median(latencies) * 1e3,
                    latencies[int(len(latencies) * 0.99)] * 1e3)

        def rss():
            return loopback_server.rss_mb(server.pid)

        big = request(20, 2000, embeddings=True)
        p50_ratios, p99_ratios = [], []
        for r in range(args.rounds):
            alone = measure()
            # The non-reading streams live in another process, so that
            # their request threads do not take the measuring thread's GIL:
            # what is measured is the server, not this client.
            slow = multiprocessing.get_context("spawn").Process(
                target=hold_slow_streams,
                args=(port, big.SerializeToString(), work))
            slow.start()
            time.sleep(3)
            with_slow = measure()
            peak = rss()
            slow.terminate()
            slow.join()
            time.sleep(1)  # the server drops the cancelled streams
            p50_ratios.append(with_slow[1] / alone[1])
            p99_ratios.append(with_slow[2] / alone[2])
            print(f"round {r}: alone {alone[0]} requests, p50 "
                  f"{alone[1]:.2f} ms, p99 {alone[2]:.2f} ms; with 10 "
                  f"non-reading streams {with_slow[0]} requests, p50 "
                  f"{with_slow[1]:.2f} ms, p99 {with_slow[2]:.2f} ms "
                  f"(p50 {p50_ratios[-1]:.2f}x, p99 {p99_ratios[-1]:.2f}x "
                  f"alone); server RSS {peak:.0f} MB")
        print(f"median over {args.rounds} rounds: p50 "
              f"{statistics.median(p50_ratios):.2f}x alone, p99 "
              f"{statistics.median(p99_ratios):.2f}x alone")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""What TLS and tokens cost: connect+handshake time and MineOnce p50.

Starts three hardneg-servers on 127.0.0.1 over one small checkpoint
(plaintext; TLS with tokens; mutual TLS with tokens), using the test-only
certificates in tests/testdata/tls, and measures each alternately, in
rounds, so that the machine's noise hits all three alike. Prints, per mode
and round, the median connect+handshake time of a fresh channel and the
median latency of a one-query MineOnce, and each against plaintext.

  /usr/bin/python3 bench/tls_cost.py --server build/server/hardneg-server
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback_server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TLS = os.path.join(ROOT, "tests", "testdata", "tls")
TOKEN = "bench-token-0123456789"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hardneg_tls_cost_")
    ckpts = loopback_server.write_checkpoint(work, 1000, 16)
    with open(os.path.join(work, "tokens"), "w") as f:
        f.write(f"{TOKEN} mine\n")
    tls = ["--tls_cert", f"{TLS}/server.pem", "--tls_key", f"{TLS}/server.key",
           "--auth_tokens", os.path.join(work, "tokens")]
    modes = {"plain": [], "tls": tls, "mtls": tls + ["--tls_client_ca",
                                                     f"{TLS}/ca.pem"]}
    procs, ports = [], {}
    try:
        for mode, extra in modes.items():
            proc, ports[mode] = loopback_server.start(
                args.server, ckpts, work, mode, ["--threads=1"] + extra)
            procs.append(proc)
        read = lambda name: open(os.path.join(TLS, name), "rb").read()

        def channel(mode):
            target = f"localhost:{ports[mode]}"
            if mode == "plain":
                return grpc.insecure_channel(target)
            if mode == "tls":
                return grpc.secure_channel(
                    target, grpc.ssl_channel_credentials(read("ca.pem")))
            return grpc.secure_channel(target, grpc.ssl_channel_credentials(
                read("ca.pem"), read("client.key"), read("client.pem")))

        # MineRequest{queries: [{embedding: 16 x 0.5}], options:
        # {num_negatives: 5}}, serialised by hand: no generated stubs needed.
        emb = np.full(16, 0.5, dtype="<f4").tobytes()
        query = b"\x0a" + bytes([len(emb)]) + emb
        request = b"\x12" + bytes([len(query)]) + query + b"\x1a\x02\x08\x05"
        results = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode in modes:
                handshakes = []
                for _ in range(30):
                    t0 = time.perf_counter()
                    ch = channel(mode)
                    grpc.channel_ready_future(ch).result(timeout=10)
                    handshakes.append(time.perf_counter() - t0)
                    ch.close()
                ch = channel(mode)
                call = ch.unary_unary("/hardneg.v1.Miner/MineOnce")
                meta = None if mode == "plain" else [
                    ("authorization", f"Bearer {TOKEN}")]
                for _ in range(50):
                    call(request, metadata=meta)
                latencies = []
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    call(request, metadata=meta)
                    latencies.append(time.perf_counter() - t0)
                ch.close()
                results[mode].append((statistics.median(handshakes) * 1e3,
                                      statistics.median(latencies) * 1e6))
        plain_hs = statistics.median(h for h, _ in results["plain"])
        plain_lat = statistics.median(l for _, l in results["plain"])
        for mode, rounds in results.items():
            hs = statistics.median(h for h, _ in rounds)
            lat = statistics.median(l for _, l in rounds)
            print(f"{mode:5s} connect+handshake p50 {hs:6.2f} ms "
                  f"({hs / plain_hs:.2f}x plain); MineOnce p50 {lat:6.0f} us "
                  f"({lat / plain_lat:.2f}x plain); rounds: "
                  + ", ".join(f"{h:.2f} ms/{l:.0f} us" for h, l in rounds))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()

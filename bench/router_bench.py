#!/usr/bin/python3
"""hardneg-router against one hardneg-server on the same data.

Writes W1 (100,000 x 128 random unit vectors, hardneg-bench's first
workload) as a checkpoint, and starts on 127.0.0.1: one hardneg-server over
it, a router over one shard (an unsharded server: the router's own cost),
and a router over three shard servers (--num_shards 3). Each round drives
every configuration in turn with 8 concurrent `hardneg mine` processes,
each one Mine stream of 16-query requests with one request in flight
(W1, 8 streams x 16), and prints the queries/s and the median of the
streams' p50 latencies, with each router's ratio to the single server of
the same round. Everything shares this machine's cores: the three shards,
the router and the clients compete for them, so this measures the router's
overhead, not the scaling of shards on separate machines.

  /usr/bin/python3 bench/router_bench.py --build build [--rounds 3]

Asserts nothing; the machine is shared and noisy.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np

STREAMS = 8
BATCH = 16


def write_checkpoint(root, n, dim, seed):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = rng.choice(1 << 40, n, replace=False).astype(np.int64)
    d = os.path.join(root, "w1")
    os.makedirs(d)
    np.save(os.path.join(d, "embeddings-00000.npy"), vectors)
    np.save(os.path.join(d, "ids-00000.npy"), ids)
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump({"name": "w1", "step": 1, "dim": dim,
                   "metric": "inner_product",
                   "shards": [{"embeddings": "embeddings-00000.npy",
                               "ids": "ids-00000.npy"}]}, f)


def start(cmd, log):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=open(log, "w"), text=True)
    line = proc.stdout.readline()
    match = re.match(r"listening on (\d+)", line)
    if not match:
        raise RuntimeError(f"{cmd[0]} did not start: {line!r}; see {log}")
    return proc, int(match.group(1))


def wait_serving(cli, port, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run([cli, "info", "--server", f"127.0.0.1:{port}"],
                             capture_output=True, text=True)
        if out.returncode == 0 and "build_state:  serving" in out.stdout:
            return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} not serving")


def drive(cli, port, queries, work):
    """8 streams at once; returns (queries/s, median p50 ms)."""
    procs = []
    start_time = time.time()
    for s in range(STREAMS):
        procs.append(subprocess.Popen(
            [cli, "mine", "--server", f"127.0.0.1:{port}", "--queries",
             queries[s], "--batch_size", str(BATCH), "--max_in_flight", "1",
             "--num_negatives", "10", "--output",
             os.path.join(work, f"out{s}.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    p50s, total = [], 0
    for p in procs:
        err = p.communicate()[1]
        if p.returncode != 0:
            raise RuntimeError(err)
        match = re.search(r"(\d+) queries in .* p50 ([\d.]+) ms", err)
        total += int(match.group(1))
        p50s.append(float(match.group(2)))
    elapsed = time.time() - start_time
    return total / elapsed, statistics.median(p50s)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries_per_stream", type=int, default=2048)
    parser.add_argument("--n", type=int, default=100000)
    args = parser.parse_args()
    server = os.path.join(args.build, "server", "hardneg-server")
    router = os.path.join(args.build, "router", "hardneg-router")
    cli = os.path.join(args.build, "client", "hardneg")
    work = tempfile.mkdtemp(prefix="hardneg_router_bench_")
    procs = []
    try:
        t0 = time.time()
        ckpts = os.path.join(work, "ckpts")
        write_checkpoint(ckpts, args.n, 128, 42)
        rng = np.random.default_rng(7)
        queries = []
        for s in range(STREAMS):
            q = rng.standard_normal((args.queries_per_stream, 128))
            q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(
                np.float32)
            path = os.path.join(work, f"q{s}.npy")
            np.save(path, q)
            queries.append(path)
        common = ["--checkpoints", ckpts, "--host", "127.0.0.1",
                  "--grpc_port", "0", "--metrics_port", "-1"]
        single, single_port = start([server] + common,
                                    os.path.join(work, "single.log"))
        procs.append(single)
        shard_ports = []
        for i in range(3):
            p, port = start([server] + common +
                            ["--num_shards", "3", "--shard_index", str(i)],
                            os.path.join(work, f"shard{i}.log"))
            procs.append(p)
            shard_ports.append(port)
        router_common = ["--host", "127.0.0.1", "--grpc_port", "0",
                         "--metrics_port", "-1", "--poll_interval", "500ms"]
        r1, r1_port = start([router, "--shards", f"127.0.0.1:{single_port}"]
                            + router_common, os.path.join(work, "r1.log"))
        r3, r3_port = start(
            [router, "--shards",
             ",".join(f"127.0.0.1:{p}" for p in shard_ports)]
            + router_common, os.path.join(work, "r3.log"))
        procs += [r1, r3]
        for port in [single_port] + shard_ports + [r1_port, r3_port]:
            wait_serving(cli, port)
        print(f"setup: {time.time() - t0:.1f} s (W1 {args.n} x 128, "
              f"{STREAMS} streams x {BATCH} queries, one request in flight "
              f"each, {args.queries_per_stream} queries a stream)")
        print(f"{'round':>5} {'config':<22} {'q/s':>8} {'p50 ms':>7} "
              f"{'q/s vs single':>14} {'p50 vs single':>14}")
        ratios = {"router, 1 shard": [], "router, 3 shards": []}
        for r in range(args.rounds):
            base_qps, base_p50 = drive(cli, single_port, queries, work)
            print(f"{r:>5} {'single server':<22} {base_qps:>8.0f} "
                  f"{base_p50:>7.2f} {'1.00':>14} {'1.00':>14}")
            for name, port in (("router, 1 shard", r1_port),
                               ("router, 3 shards", r3_port)):
                qps, p50 = drive(cli, port, queries, work)
                ratios[name].append((qps / base_qps, p50 / base_p50))
                print(f"{r:>5} {name:<22} {qps:>8.0f} {p50:>7.2f} "
                      f"{qps / base_qps:>14.2f} {p50 / base_p50:>14.2f}")
        for name, rs in ratios.items():
            print(f"median over {args.rounds} rounds, {name}: q/s "
                  f"{statistics.median(x for x, _ in rs):.2f}x single, p50 "
                  f"{statistics.median(y for _, y in rs):.2f}x single")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

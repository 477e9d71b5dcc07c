#!/usr/bin/env python3
"""End-to-end check of a sharded deployment: hardneg-router over three
hardneg-server shards, against one unsharded hardneg-server on the same data.

Everything runs on 127.0.0.1 as separate processes. The checks, in order
(each part prints how long it took):

  1. start: a random labelled checkpoint (ids anywhere in int64, exact
     duplicate vectors for ties) in a checkpoints dir; three shard servers
     (--num_shards 3 --shard_index i), a router over them and one unsharded
     server on that dir. GetIndexInfo of each: the shards hold their
     ShardOf share (src/corpus/shard.h), the router the sum.
  2. random: hundreds of randomized requests over every mining option
     (deep windows, bounds, margins with positives on several shards,
     positive_scores, labels, query_id, TOP/UNIFORM/SOFTMAX with seeds,
     multi-query requests, return_embeddings, shortfalls) on Mine streams
     and MineOnce, plus invalid ones. The router's answer must equal the
     unsharded server's: ids, ranks, labels, shortfall, samples,
     positive_score and embeddings exactly, scores within float32 rounding;
     both succeed or both fail with the same code.
  3. swap: while 4 threads stream a fixed set of requests through the
     router, a second checkpoint (higher step, re-encoded vectors) is
     written. No request fails; every answer equals the unsharded server's
     answer on the version the router reports (asked before and after the
     swap).
  4. kill, stop: one shard gets SIGKILL (another, later, SIGSTOP: a hung
     shard). Without allow_partial a request fails UNAVAILABLE naming that
     shard's target (in-band on a Mine stream opened before, which stays
     usable) within its deadline; with allow_partial it is answered exactly
     over the live shards' candidates and missing_shards names the missing
     one; router health turns NOT_SERVING. Restarted (or resumed), the
     shard serves again and so does the router.
  5. publish: a full publish (in chunks, wait=true), then an incremental
     one (base_version, upserts, delete_ids), through the router and to the
     unsharded server: every shard reports the version with its share, the
     router the total with a per-shard breakdown, and mining answers agree.
  6. shutdown: SIGTERM to every process; each exits 0.

Usage:
  /usr/bin/python3 tests/e2e/check_sharded.py \
      --server build/server/hardneg-server --router build/router/hardneg-router \
      [--proto_dir proto] [--work_dir /tmp/e2e-sharded] [--seed N]

Needs /usr/bin/python3 with Debian's python3-grpcio, python3-numpy,
python3-protobuf, and /usr/bin/protoc + /usr/bin/grpc_python_plugin (or
$PROTOC, $GRPC_PYTHON_PLUGIN; stubs are generated into the work dir, see
e2e_common.py). Prints `N passed, M failed`; exits 1 on any failure.
"""

import argparse
import concurrent.futures
import contextlib
import functools
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_common import (INVALID_ARGUMENT, RARE_LABELS, ROOT, SAMPLING_NAMES,  # noqa: E402
                        SOFTMAX, TOP, UNIFORM, Checks, Corpus, LiveStream, Proc, Run,
                        add_duplicates, checked_stubs, describe, find_duplicate,
                        health_status, kill_leftovers, mc, opts_spec, query_spec,
                        random_labels, random_margins, raw_request, to_proto)

NUM_SHARDS = 3
OK, UNAVAILABLE = 0, 14
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
ODD_LABELS = RARE_LABELS + (INT64_MIN,)  # the smallest int64 is a label too
MASK64 = (1 << 64) - 1
# Scores are float32 values computed the same way on a shard and on one
# server; allow float32 rounding only.
SCORE_RTOL = 1e-6
RPC_TIMEOUT = 60


# ------------------------------------------------------------------ results


@contextlib.contextmanager
def part(name, checks):
    start = time.time()
    before = (checks.passed, checks.failed)
    print(f"== {name}")
    sys.stdout.flush()
    try:
        yield
    except Exception:  # noqa: BLE001
        checks.check(f"{name}: no exception in the checker", [traceback.format_exc()])
    print(f"   {name} took {time.time() - start:.1f}s "
          f"({checks.passed - before[0]} passed, {checks.failed - before[1]} failed)")
    sys.stdout.flush()


COVERAGE = {}


def bump(key, cond=True):
    if cond:
        COVERAGE[key] = COVERAGE.get(key, 0) + 1


# ------------------------------------------------------------------ sharding


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def shard_of(id_, n=NUM_SHARDS):
    """src/corpus/shard.h: SplitMix64Hash(uint64(id)) % n."""
    return splitmix64(int(id_) & MASK64) % n


# ------------------------------------------------------------------ data


class ShardedCorpus(Corpus):
    """One version's candidates (inner products, labels) and their shards."""

    def __init__(self, name, step, emb, ids, labels):
        super().__init__(name, step, "inner_product", emb, ids, labels)
        self.shard = np.array([shard_of(i) for i in self.ids.tolist()], dtype=np.int64)

    def share(self, s):
        return int(np.count_nonzero(self.shard == s))

    def order(self, q):
        """Rows best first (ties by id)."""
        s = self.scores64(q).astype(np.float32)
        return np.lexsort((self.ids, -s))


def unique_ids(rng, n, taken=()):
    """n distinct int64 ids over the whole range (negative and large ones,
    and the extremes), none in `taken`, never -1 (the clients' padding)."""
    special = [0, 1, -2, INT64_MAX, INT64_MIN, INT64_MIN + 1, 1 << 62, -(1 << 40)]
    pool = np.concatenate([
        np.array(special, dtype=np.int64),
        rng.integers(INT64_MIN, INT64_MAX, size=n, dtype=np.int64, endpoint=True),
        rng.integers(-1000, 1000000, size=n // 4, dtype=np.int64)])
    taken = set(int(t) for t in taken)
    out, seen = [], set()
    for x in pool.tolist():
        if x != -1 and x not in seen and x not in taken:
            seen.add(x)
            out.append(x)
    ids = np.array(out[:n], dtype=np.int64)
    assert len(ids) == n
    rng.shuffle(ids)
    return ids


def make_corpus(rng, name, step, n, dim):
    emb = (rng.standard_normal((n, dim)) / math.sqrt(dim)).astype(np.float32)
    add_duplicates(rng, emb)
    return ShardedCorpus(name, step, emb, unique_ids(rng, n),
                         random_labels(rng, n, ODD_LABELS))


def reencode(rng, old, name, step):
    """The next version: most ids kept with re-encoded vectors, a few dropped,
    a few new."""
    n, dim = old.n, old.dim
    keep = np.sort(rng.choice(n, size=n - n // 20, replace=False))
    new_n = n // 25
    emb = old.emb[keep] + 0.3 * rng.standard_normal((len(keep), dim)) / math.sqrt(dim)
    emb = np.concatenate([emb, rng.standard_normal((new_n, dim)) / math.sqrt(dim)])
    emb = emb.astype(np.float32)
    add_duplicates(rng, emb)
    ids = np.concatenate([old.ids[keep], unique_ids(rng, new_n, taken=old.ids)])
    labels = np.concatenate([old.labels[keep], random_labels(rng, new_n, ODD_LABELS)])
    return ShardedCorpus(name, step, emb, ids, labels)


# ------------------------------------------------------------------ requests


class RequestGen:
    """Randomized requests over every option, for one corpus."""

    def __init__(self, rng, corpus):
        self.rng, self.c = rng, corpus
        s0 = corpus.scores64(corpus.emb[0]).astype(np.float32)
        self.scale = float(np.std(s0)) or 1.0

    def positives_on_several_shards(self, order, spread):
        """1 to 3 ids among the best `spread`, each on a different shard."""
        rng, c = self.rng, self.c
        picks = {}
        for r in rng.permutation(order[:spread]).tolist():
            picks.setdefault(int(c.shard[r]), r)
        rows = list(picks.values())[:int(rng.integers(1, 4))]
        return c.ids[rows].tolist()

    def query(self):
        rng, c = self.rng, self.c
        kind = rng.choice(["near", "near", "exact", "random"])
        j = int(rng.integers(c.n))
        if kind == "random":
            vec = rng.standard_normal(c.dim) / math.sqrt(c.dim)
        elif kind == "exact":
            vec = c.emb[j].copy()
        else:
            noise = rng.uniform(0.02, 0.4) / math.sqrt(c.dim)
            vec = c.emb[j] + noise * rng.standard_normal(c.dim)
        vec = np.asarray(vec, dtype=np.float32)
        order = c.order(vec)
        s = c.scores64(vec).astype(np.float32)
        pos = []
        if kind != "random" and rng.random() < 0.6:
            pos.append(int(c.ids[j]))
        r = rng.random()
        if r < 0.08:
            pos += c.ids[order[:int(rng.integers(50, 300))]].tolist()  # deep
        elif r < 0.7:
            pos += self.positives_on_several_shards(order, int(rng.choice([10, 80, 600])))
        if rng.random() < 0.25:
            pos += c.ids[rng.integers(0, c.n, size=2)].tolist()
        if rng.random() < 0.2:  # not in the index: count for nothing
            pos += [x for x in rng.integers(-(1 << 62), 1 << 62, size=2).tolist()
                    if x not in c.row and x != -1]
        if rng.random() < 0.2:
            rng.shuffle(pos)
        pscores = []
        if rng.random() < 0.3:
            for _ in range(int(rng.integers(1, 3))):
                u = rng.random()
                if u < 0.2:
                    pscores.append(0.0)
                elif u < 0.4:
                    pscores.append(-abs(float(rng.normal(0, self.scale))) - 0.05)
                else:
                    pscores.append(float(s[order[int(rng.integers(0, 300))]]))
        label = None
        if rng.random() < 0.4:
            label = (int(c.labels[j]) if rng.random() < 0.6
                     else int(rng.choice(c.label_values + [0])))
        qid = None
        r = rng.random()
        if r < 0.15:
            qid = int(c.ids[j])
        elif r < 0.25:
            qid = int(c.ids[order[int(rng.integers(0, 5))]])
        elif r < 0.3:
            qid = 1 << 55
        return query_spec(vec, pos, pscores, label, qid, use_bytes=bool(rng.random() < 0.5))

    def options(self, first_vec, deep=True):
        rng, c = self.rng, self.c
        s = np.sort(c.scores64(first_vec).astype(np.float32))[::-1]  # best first
        k = int(rng.choice([1, 1, 2, 3, 5, 8, 10, 16, 32, 64]))
        r = rng.random()
        if r < 0.4:
            rmin = 0
        elif r < 0.6:
            rmin = int(rng.integers(1, 20))
        elif r < 0.75:
            rmin = int(rng.integers(20, 400))
        elif r < 0.9:
            # Deep into the ranking.
            rmin = int(rng.integers(500, 2001)) if deep else int(rng.integers(0, 100))
        elif r < 0.95:
            rmin = max(0, c.n - int(rng.integers(0, 3 * k + 40)))  # shortfall
        else:
            rmin = 0
        rmax = 0
        if rng.random() < 0.45:
            rmax = rmin + k + int(rng.choice([0, 1, 5, 30, 200]))

        def at(lo, hi):  # a score at a quantile of the best-first order
            return float(s[min(len(s) - 1, int(rng.uniform(lo, hi) * len(s)))])

        def bound(lo, hi):
            u = rng.random()
            if u < 0.5:
                return None
            if u < 0.58:
                return 0.0
            if u < 0.75:
                return at(lo, hi)  # exactly a candidate's score
            return at(lo, hi) + float(rng.normal(0, 0.01 * self.scale))

        max_score = bound(0.0, 0.05)  # drop the hardest
        min_score = bound(0.05, 0.6)  # drop the easy ones
        if rng.random() < 0.06:
            # Too few survive: a shortfall the shards must not fill.
            min_score = float(s[int(rng.integers(0, max(1, k)))])
            max_score = None
        abs_m, rel_r = random_margins(rng, self.scale, absolute_odds=(0.15, 0.4, 0.5))
        sampling = int(rng.choice([TOP, TOP, UNIFORM, SOFTMAX]))
        temperature = float(rng.uniform(0.02, 2.0) * self.scale) if rng.random() < 0.6 else 0.0
        seed = int(rng.integers(0, MASK64, dtype=np.uint64, endpoint=True))
        return opts_spec(k, rmin, rmax, max_score, min_score, abs_m, rel_r, sampling,
                         temperature, seed, ret_emb=bool(rng.random() < 0.2))

    def request(self, deep=True):
        nq = int(self.rng.choice([1, 1, 2, 3, 4, 8, 16]))
        queries = [self.query() for _ in range(nq)]
        o = self.options(queries[0]["vec"], deep)
        if o["rmin"] >= 500 or o["rmax"] >= 500:
            queries = queries[:3]  # deep windows: a few queries
        return queries, o


def count_coverage(c, queries, o, answer):
    """What a verified request exercised (printed, and checked at the end)."""
    bump("requests")
    bump(f"sampling {SAMPLING_NAMES[o['sampling']]}")
    bump("multi-query request", len(queries) > 1)
    bump("range_min >= 500", o["rmin"] >= 500)
    bump("range_max set", o["rmax"] > 0)
    bump("bound set", o["max_score"] is not None or o["min_score"] is not None)
    bump("return_embeddings", o["ret_emb"])
    margin = o["abs_m"] is not None or o["rel_r"] is not None
    for q, res in zip(queries, answer.results):
        bump("queries")
        bump("shortfall > 0", res.shortfall > 0)
        bump("positive_score set", res.HasField("positive_score"))
        bump("label", q["label"] is not None)
        bump("query_id", q["qid"] is not None)
        bump("positive_scores", bool(q["pos_scores"]))
        bump("embedding_bytes", q["use_bytes"])
        scores = [n.score for n in res.negatives]
        bump("tie in an answer", len(set(scores)) < len(scores))
        stored = [c.row[i] for i in q["pos_ids"] if i in c.row]
        if not (margin and stored):
            continue
        shards = set(int(c.shard[r]) for r in stored)
        bump("margin, stored positives on >= 2 shards", len(shards) >= 2)
        # Would a shard's own p differ from the global one? (Then only the
        # global weakest positive gives the right survivors.)
        s = c.scores64(q["vec"]).astype(np.float32)
        p_all = min([float(s[r]) for r in stored] + q["pos_scores"])
        for sh in range(NUM_SHARDS):
            local = [float(s[r]) for r in stored if c.shard[r] == sh] + q["pos_scores"]
            if not local or min(local) != p_all:
                bump("margin, a shard's own p differs from the global p")
                break


# ------------------------------------------------------------------ answers


def error_response(pb, request_id, err):
    """A failed MineOnce as a MineResponse with `error` set, so that unary and
    streamed answers compare alike."""
    r = pb.MineResponse(request_id=request_id)
    r.error.code = err.code().value[0]
    r.error.message = err.details() or ""
    return r


def scores_close(a, b):
    return abs(a - b) <= SCORE_RTOL * max(abs(a), abs(b), 1e-6)


def compare(got, want, missing=()):
    """Errors where `got` (the router's answer) differs from `want` (the
    unsharded server's, or an expectation built from it)."""
    errs = []
    if got.error.code != want.error.code:
        return [f"error code {got.error.code} ({got.error.message!r}), expected "
                f"{want.error.code} ({want.error.message!r})"]
    if got.error.code:
        return []
    if got.index.name != want.index.name:
        errs.append(f"index.name {got.index.name!r}, expected {want.index.name!r}")
    if list(got.missing_shards) != list(missing):
        errs.append(f"missing_shards {list(got.missing_shards)}, expected {list(missing)}")
    if len(got.results) != len(want.results):
        return errs + [f"{len(got.results)} results, expected {len(want.results)}"]
    for i, (a, b) in enumerate(zip(got.results, want.results)):
        where = f"queries[{i}]"
        if a.shortfall != b.shortfall:
            errs.append(f"{where}: shortfall {a.shortfall}, expected {b.shortfall}")
        pa = a.positive_score if a.HasField("positive_score") else None
        pb_ = b.positive_score if b.HasField("positive_score") else None
        if pa != pb_:
            errs.append(f"{where}: positive_score {pa!r}, expected {pb_!r}")
        ga = [(n.id, n.rank, n.label) for n in a.negatives]
        gb = [(n.id, n.rank, n.label) for n in b.negatives]
        if ga != gb:
            errs.append(f"{where}: (id, rank, label) {ga[:6]}{'...' if len(ga) > 6 else ''} "
                        f"({len(ga)}), expected {gb[:6]}{'...' if len(gb) > 6 else ''} "
                        f"({len(gb)})")
            continue
        for j, (x, y) in enumerate(zip(a.negatives, b.negatives)):
            if not scores_close(x.score, y.score):
                errs.append(f"{where}: negative {j} (id {x.id}) score {x.score!r}, "
                            f"expected {y.score!r}")
            if list(x.embedding) != list(y.embedding):
                errs.append(f"{where}: negative {j} (id {x.id}) embedding differs")
    return errs


# ------------------------------------------------------------------ the run


class ShardedRun(Run):
    def __init__(self, args, checks, *stubs):
        super().__init__(args, checks, *stubs)
        self.next_id = 0
        self.id_lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        self.ckpt = os.path.join(args.work_dir, "checkpoints")
        self.logs = os.path.join(args.work_dir, "logs")
        self.shards, self.targets, self.shard_stubs = [], [], []
        self.router = self.single = None
        self.channels = []  # closed before the processes are stopped

    def request_id(self):
        # Large ones too: request_id is a uint64.
        with self.id_lock:
            self.next_id += 1
            if self.next_id % 7 == 0:
                return (1 << 64) - self.next_id
            return self.next_id

    def channel(self, port):
        ch = self.grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_receive_message_length", 256 << 20),
                     ("grpc.max_send_message_length", 256 << 20)])
        self.channels.append(ch)
        return ch

    # -------------------------------------------------- rpc helpers

    def once(self, stub, req, timeout=RPC_TIMEOUT):
        try:
            return stub.MineOnce(req, timeout=timeout)
        except self.grpc.RpcError as e:
            return error_response(self.pb, req.request_id, e)

    def stream(self, stub, reqs, timeout=RPC_TIMEOUT):
        """The answers of one Mine stream, or the RpcError that ended it."""
        try:
            return list(stub.Mine(iter(reqs), timeout=timeout))
        except self.grpc.RpcError as e:
            return e

    def first_answer(self, res, req):
        """The answer to a one-request stream, as a MineResponse."""
        if isinstance(res, Exception):
            return error_response(self.pb, req.request_id, res)
        if len(res) != 1:
            r = self.pb.MineResponse(request_id=req.request_id)
            r.error.code = 2
            r.error.message = f"the stream gave {len(res)} answers to 1 request"
            return r
        return res[0]

    def both(self, fn_router, fn_single):
        """Runs the two calls at once; (router result, single result)."""
        a = self.pool.submit(fn_router)
        b = self.pool.submit(fn_single)
        return a.result(), b.result()

    def info(self, stub):
        return stub.GetIndexInfo(self.pb.GetIndexInfoRequest(), timeout=10)

    def serves(self, stub, name, size):
        """[] if GetIndexInfo reports version `name` of `size` candidates,
        else what it reports."""
        info = self.info(stub)
        return ([] if (info.version.name, info.size) == (name, size)
                else [f"{info.version.name} size {info.size}"])

    def health(self, port, service=""):
        """SERVING / NOT_SERVING / ..., or the RPC's error, on a channel of its own."""
        with self.grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            return health_status(self.grpc, self.health_pb2, ch, service, timeout=5)

    def wait_health(self, port, want, timeout):
        """Seconds until health of '' and hardneg.v1.Miner is `want`, or None."""
        start = time.time()
        while time.time() - start < timeout:
            if all(self.health(port, s) == want for s in ("", "hardneg.v1.Miner")):
                return time.time() - start
            time.sleep(0.1)
        return None

    def wait_version(self, stub, name, timeout):
        """Polls GetIndexInfo until it reports `name`; the info, or None."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                info = self.info(stub)
                if info.version.name == name:
                    return info
            except self.grpc.RpcError:
                pass
            time.sleep(0.1)
        return None

    def verify(self, name, corpus, queries, o, req, got, want, missing=()):
        """The router's answer `got` to `req` against the single server's."""
        errs = []
        if got.request_id != req.request_id:
            errs.append(f"router request_id {got.request_id}, expected {req.request_id}")
        if want.request_id != req.request_id:
            errs.append(f"single request_id {want.request_id}, expected {req.request_id}")
        if queries is not None and want.error.code:
            errs.append(f"the single server failed a valid request: {want.error.code} "
                        f"{want.error.message}")
        errs += compare(got, want, missing)
        if queries is not None:
            if not errs:
                count_coverage(corpus, queries, o, want)
            elif len(errs) < 20:
                errs.append("request: " + describe(queries, o))
        return self.checks.check(name, errs)

    # -------------------------------------------------- 1. start

    def start_shard(self, i, port):
        data = os.path.join(self.args.work_dir, f"data-shard{i}")
        os.makedirs(data, exist_ok=True)
        return Proc(f"shard{i}", [
            self.args.server, f"--checkpoints={self.ckpt}", f"--num_shards={NUM_SHARDS}",
            f"--shard_index={i}", f"--grpc_port={port}", "--host=127.0.0.1",
            "--metrics_port=0", "--poll_interval=200ms", f"--data_dir={data}",
            "--threads=1"], self.logs)

    def part_start(self):
        checks, args = self.checks, self.args
        self.v1 = make_corpus(self.rng, "ckpt-v1", 1000, 6000, 32)
        self.v1.write(self.ckpt, files=2)
        ports = [mc.free_port() for _ in range(NUM_SHARDS)]
        self.targets = [f"127.0.0.1:{p}" for p in ports]
        self.shard_ports = ports
        for i, port in enumerate(ports):
            self.shards.append(self.start_shard(i, port))
        single_data = os.path.join(args.work_dir, "data-single")
        os.makedirs(single_data)
        self.single = Proc("single", [
            args.server, f"--checkpoints={self.ckpt}", "--grpc_port=0",
            "--host=127.0.0.1", "--poll_interval=200ms", f"--data_dir={single_data}",
            "--threads=1"], self.logs)
        for i, s in enumerate(self.shards):
            got = s.wait_listening()
            checks.check(f"shard {i} listens on its --grpc_port",
                         got == ports[i] or [f"listening on {got}, expected {ports[i]}"])
        self.single_port = self.single.wait_listening()
        self.router_port, self.metrics_port = mc.free_port(), mc.free_port()
        self.router = Proc("router", [
            args.router, f"--shards={','.join(self.targets)}",
            f"--grpc_port={self.router_port}", "--host=127.0.0.1",
            f"--metrics_port={self.metrics_port}", "--shard_timeout=5s",
            "--poll_interval=200ms"], self.logs)
        took = self.wait_health(self.router_port, "SERVING", 60)
        checks.check("router health SERVING after start",
                     took is not None or [f"router stderr: {self.router.stderr_tail()}"])
        if took is None:
            raise RuntimeError("the router never served")
        print(f"   router SERVING {took:.2f}s after its start")
        self.router_stub = self.pb_grpc.MinerStub(self.channel(self.router_port))
        self.single_stub = self.pb_grpc.MinerStub(self.channel(self.single_port))
        self.shard_stubs = [self.pb_grpc.MinerStub(self.channel(p)) for p in ports]
        self.check_infos(self.v1, "after start")

    def check_infos(self, c, when):
        """GetIndexInfo of every shard, the router and the single server."""
        checks = self.checks
        for i, stub in enumerate(self.shard_stubs):
            info = self.info(stub)
            errs = [f"{f} {got!r}, expected {want!r}" for f, got, want in (
                ("version.name", info.version.name, c.name), ("size", info.size, c.share(i)),
                ("dim", info.dim, c.dim), ("shard_index", info.shard_index, i),
                ("num_shards", info.num_shards, NUM_SHARDS),
                ("has_labels", info.has_labels, True)) if got != want]
            checks.check(f"{when}: shard {i} GetIndexInfo: {c.name}, its share "
                         f"{c.share(i)} of {c.n}", errs)
        info = self.info(self.router_stub)
        errs = [f"{f} {got!r}, expected {want!r}" for f, got, want in (
            ("version.name", info.version.name, c.name), ("size", info.size, c.n),
            ("dim", info.dim, c.dim), ("metric", info.metric, "inner_product"),
            ("step", info.step, c.step), ("has_labels", info.has_labels, True),
            ("len(shards)", len(info.shards), NUM_SHARDS)) if got != want]
        for i, sh in enumerate(info.shards):
            if sh.target != self.targets[i]:
                errs.append(f"shards[{i}].target {sh.target!r}, expected {self.targets[i]!r}")
            if sh.error or sh.info.size != c.share(i) or sh.info.shard_index != i:
                errs.append(f"shards[{i}]: size {sh.info.size} shard_index "
                            f"{sh.info.shard_index} error {sh.error!r}, expected "
                            f"{c.share(i)}, {i} and no error")
        checks.check(f"{when}: router GetIndexInfo: {c.name}, size {c.n}, 3 shards", errs)
        info = self.info(self.single_stub)
        checks.check(f"{when}: single server GetIndexInfo: {c.name}, size {c.n}, unsharded",
                     [] if (info.version.name, info.size, info.num_shards) == (c.name, c.n, 0)
                     else [f"{info.version.name} size {info.size} num_shards {info.num_shards}"])

    # -------------------------------------------------- 2. random requests

    def bad_requests(self, c):
        """(name, request): invalid requests both must refuse alike."""
        pb, dim = self.pb, c.dim

        req = functools.partial(raw_request, pb)
        good = [0.1] * dim
        nan = list(good)
        nan[3] = float("nan")
        bad_score = req([good])
        bad_score.queries[0].positive_scores.append(float("inf"))
        return [
            ("wrong dim", req([good, [0.1] * (dim - 1)])),
            ("NaN in embedding", req([good, nan])),
            ("num_negatives 0", req([good], k=0)),
            ("range_max < range_min + num_negatives", req([good], k=10, range_min=5,
                                                          range_max=14)),
            ("negative temperature", req([good], sampling=SOFTMAX, temperature=-0.5)),
            ("no queries", req([])),
            ("Inf positive score", bad_score),
        ]

    def part_random(self, streams=30, per_stream=12, once=200):
        pb, c = self.pb, self.v1
        gen = RequestGen(self.rng, c)
        bad = self.bad_requests(c)
        for sn in range(streams):
            items = []
            for _ in range(per_stream):
                rid = self.request_id()
                if self.rng.random() < 0.08:
                    name, r = bad[int(self.rng.integers(len(bad)))]
                    r = type(r).FromString(r.SerializeToString())
                    r.request_id = rid
                    items.append((f"bad: {name}", None, None, r))
                else:
                    queries, o = gen.request()
                    items.append(("", queries, o, to_proto(pb, rid, queries, o)))
            reqs = [it[3] for it in items]
            got, want = self.both(lambda: self.stream(self.router_stub, reqs),
                                  lambda: self.stream(self.single_stub, reqs))
            name = f"random: Mine stream {sn}"
            errs = []
            for who, res in (("router", got), ("single", want)):
                if isinstance(res, Exception):
                    errs.append(f"{who} stream failed: {res.code()} {res.details()}")
                elif len(res) != len(reqs):
                    errs.append(f"{who}: {len(res)} answers to {len(reqs)} requests")
            if not self.checks.check(f"{name}: one answer per request", errs):
                continue
            for i, ((what, queries, o, req), a, b) in enumerate(zip(items, got, want)):
                self.verify(f"{name} request {i}{' (' + what + ')' if what else ''}",
                            c, queries, o, req, a, b)
                if what:
                    self.checks.check(f"{name} request {i} ({what}) is refused",
                                      b.error.code != OK or ["the single server accepted it"])
        for i in range(once):
            queries, o = gen.request()
            req = to_proto(pb, self.request_id(), queries, o)
            got, want = self.both(lambda: self.once(self.router_stub, req),
                                  lambda: self.once(self.single_stub, req))
            self.verify(f"random: MineOnce {i}", c, queries, o, req, got, want)
        # The invalid ones as MineOnce: the same status code.
        for name, r in bad:
            r.request_id = self.request_id()
            got, want = self.both(lambda: self.once(self.router_stub, r),
                                  lambda: self.once(self.single_stub, r))
            self.verify(f"random: MineOnce bad input ({name})", c, None, None, r, got, want)
            self.checks.check(f"random: MineOnce bad input ({name}) is INVALID_ARGUMENT",
                              want.error.code == INVALID_ARGUMENT
                              or [f"single server: {want.error.code} {want.error.message}"])
        # Pinned to the version all shards serve: the same answer.
        queries, o = gen.request(deep=False)
        o["index_version"] = c.name
        req = to_proto(pb, self.request_id(), queries, o)
        got, want = self.both(lambda: self.once(self.router_stub, req),
                              lambda: self.once(self.single_stub, req))
        self.verify("random: index_version set to the served version", c, queries, o,
                    req, got, want)
        o["index_version"] = "no-such-version"
        req = to_proto(pb, self.request_id(), queries, o)
        got, want = self.both(lambda: self.once(self.router_stub, req),
                              lambda: self.once(self.single_stub, req))
        self.verify("random: index_version naming no version: the same error", c, None,
                    None, req, got, want)
        self.checks.check("random: index_version naming no version is FAILED_PRECONDITION",
                          want.error.code == 9
                          or [f"single server: {want.error.code} {want.error.message}"])
        self.check_targeted(c, gen)
        self.check_metrics()

    def check_targeted(self, c, gen):
        """Margins whose global weakest positive lives on another shard than
        the query's other positives, and ties, by construction."""
        pb = self.pb
        cases = []
        for t in range(12):
            j = int(self.rng.integers(c.n))
            vec = c.emb[j] + np.float32(0.1 / math.sqrt(c.dim)) * \
                self.rng.standard_normal(c.dim).astype(np.float32)
            order = c.order(vec)
            # A strong positive on one shard, a weak one (rank 40..400) on another.
            strong = int(order[int(self.rng.integers(0, 5))])
            weak = next(int(r) for r in order[int(self.rng.integers(40, 400)):]
                        if c.shard[r] != c.shard[strong])
            q = query_spec(vec, pos_ids=[c.ids[strong], c.ids[weak]],
                           label=int(c.labels[j]) if t % 3 == 0 else None)
            o = opts_spec(int(self.rng.choice([5, 20, 64])),
                          rmin=int(self.rng.choice([0, 3, 700])),
                          abs_m=0.0 if t % 2 == 0 else None,
                          rel_r=float(self.rng.uniform(0, 0.2)) if t % 2 else None,
                          sampling=[TOP, UNIFORM, SOFTMAX][t % 3],
                          rmax=0 if t % 3 == 0 else 1000,
                          seed=int(self.rng.integers(0, 1 << 62)))
            cases.append((f"weakest positive on another shard {t}", [q], o))
        a, b = find_duplicate(c)
        cases.append(("exact duplicates tie, by id", [query_spec(c.emb[a])], opts_spec(8)))
        cases.append(("everything filtered: shortfall k",
                      [query_spec(c.emb[a])], opts_spec(7, max_score=-1e30)))
        cases.append(("window past the index", [query_spec(c.emb[a])],
                      opts_spec(5, rmin=c.n + 100)))
        cases.append(("k > n", [query_spec(c.emb[b])], opts_spec(c.n + 3)))
        qs = [query_spec(c.emb[int(r)], pos_ids=[int(c.ids[int(r)])], use_bytes=bool(i % 2))
              for i, r in enumerate(self.rng.choice(c.n, size=16, replace=False))]
        cases.append(("16 queries, SOFTMAX: per-query seeds", qs,
                      opts_spec(12, rmax=300, sampling=SOFTMAX, seed=77, temperature=0.05)))
        # Windows wider than the index ("sample among all survivors"): a
        # shard need not return more than it holds.
        cases.append(("UNIFORM over every survivor (range_max 1,000,000), 2 queries",
                      qs[:2], opts_spec(5, rmax=1000000, sampling=UNIFORM, seed=21)))
        cases.append(("return_embeddings, range_max 500,000", qs[:1],
                      opts_spec(3, rmin=100, rmax=500000, sampling=UNIFORM, seed=22,
                                ret_emb=True)))
        many = [query_spec(c.emb[int(r)]) for r in self.rng.choice(c.n, size=100)]
        cases.append(("SOFTMAX over range_max 200,000 for 100 queries", many,
                      opts_spec(3, rmax=200000, sampling=SOFTMAX, seed=23)))
        cases.append(("16 queries, UNIFORM deep window", qs,
                      opts_spec(10, rmin=800, rmax=1500, sampling=UNIFORM, seed=(1 << 64) - 3,
                                ret_emb=True)))
        for name, queries, o in cases:
            req = to_proto(pb, self.request_id(), queries, o)
            got, want = self.both(lambda: self.once(self.router_stub, req),
                                  lambda: self.once(self.single_stub, req))
            self.verify(f"targeted: {name}", c, queries, o, req, got, want)

    def check_metrics(self):
        errs = []
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
                body = r.read().decode("utf-8", "replace")
                if r.status != 200 or "# TYPE" not in body:
                    errs.append(f"status {r.status}, {len(body)} bytes without '# TYPE'")
        except Exception as e:  # noqa: BLE001
            errs.append(f"{type(e).__name__}: {e}")
        self.checks.check("router /metrics answers in the Prometheus text format", errs)

    # -------------------------------------------------- 3. swap under load

    def part_swap(self, threads=4, nreq=24):
        pb, checks, grpc = self.pb, self.checks, self.grpc
        v1 = self.v1
        gen = RequestGen(self.rng, v1)
        fixed = [gen.request(deep=False) for _ in range(nreq)]
        protos = [to_proto(pb, 0, q, o) for q, o in fixed]

        def answers(expect_name):
            out, errs = [], []
            for i, r in enumerate(protos):
                req = pb.MineRequest.FromString(r.SerializeToString())
                req.request_id = self.request_id()
                a = self.once(self.single_stub, req)
                if a.error.code or a.index.name != expect_name:
                    errs.append(f"request {i}: single server answered {a.error.code} "
                                f"{a.error.message!r} on {a.index.name!r}, expected "
                                f"{expect_name!r}")
                out.append(a)
            return out, errs

        before, errs = answers(v1.name)
        checks.check(f"swap: the single server's answers on {v1.name}", errs)
        records, failures, stop = [], [], threading.Event()
        lock = threading.Lock()

        def worker(t):
            wrng = np.random.default_rng(1000 + t)
            batch = 0
            while not stop.is_set() and batch < 400:
                batch += 1
                idx = wrng.choice(nreq, size=6, replace=False).tolist()
                reqs = []
                for i in idx:
                    req = pb.MineRequest.FromString(protos[i].SerializeToString())
                    req.request_id = self.request_id()
                    reqs.append(req)
                try:
                    resps = list(self.router_stub.Mine(iter(reqs), timeout=30))
                except grpc.RpcError as e:
                    with lock:
                        failures.append(f"thread {t}: stream failed {e.code()} {e.details()}")
                    continue
                with lock:
                    if len(resps) != len(reqs):
                        failures.append(f"thread {t}: {len(resps)} answers to {len(reqs)}")
                    for i, req, resp in zip(idx, reqs, resps):
                        records.append((t, batch, i, req, resp))

        def count():
            with lock:
                return len(records)

        ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in ths:
            th.start()
        # At least 1.5 s and 40 answers of load before the swap, and as much
        # after the router moved.
        start = time.time()
        while (count() < 40 or time.time() < start + 1.5) and time.time() < start + 30:
            time.sleep(0.05)
        self.v2 = reencode(self.rng, v1, "ckpt-v2", v1.step + 500)
        t_write = time.time()
        self.v2.write(self.ckpt, files=2)
        single_info = self.wait_version(self.single_stub, self.v2.name, 60)
        router_info = self.wait_version(self.router_stub, self.v2.name, 60)
        t_router = time.time() - t_write
        n_at_switch, start = count(), time.time()
        while (count() < n_at_switch + 40 or time.time() < start + 1.5) and \
                time.time() < start + 30:
            time.sleep(0.05)
        stop.set()
        for th in ths:
            th.join()
        print(f"   {len(records)} answers under load; the router served {self.v2.name} "
              f"{t_router:.2f}s after it was written")
        checks.check("swap: the single server and the router serve the new version",
                     [] if single_info and router_info else
                     [f"single: {single_info and single_info.version.name}, router: "
                      f"{router_info and router_info.version.name} after 60 s"])
        checks.check("swap: no request failed under load", failures)
        after, errs = answers(self.v2.name)
        checks.check(f"swap: the single server's answers on {self.v2.name}", errs)
        by_version = {v1.name: before, self.v2.name: after}
        first_new = {}
        for t, batch, _, _, resp in records:
            if resp.index.name == self.v2.name:
                first_new[t] = min(first_new.get(t, batch), batch)
        errs, seen = [], {}
        for t, batch, i, req, resp in records:
            name = resp.index.name
            seen[name] = seen.get(name, 0) + 1
            if resp.request_id != req.request_id:
                errs.append(f"thread {t}: request_id {resp.request_id}, expected "
                            f"{req.request_id}")
            if resp.error.code:
                errs.append(f"thread {t} request {i}: error {resp.error.code} "
                            f"{resp.error.message}")
                continue
            if name not in by_version:
                errs.append(f"thread {t} request {i}: answered on {name!r}")
                continue
            want = pb.MineResponse.FromString(by_version[name][i].SerializeToString())
            want.request_id = resp.request_id
            sub = compare(resp, want)
            errs += [f"thread {t} request {i} on {name}: {e}" for e in sub]
            # Once a thread has an answer on the new version, its later
            # streams must not go back to the old one.
            if name == v1.name and batch > first_new.get(t, batch):
                errs.append(f"thread {t}: {v1.name} again in batch {batch} after "
                            f"{self.v2.name} in batch {first_new[t]}")
        checks.check(f"swap: each of {len(records)} router answers equals the single "
                     f"server's on the version it reports", errs)
        checks.check("swap: answers on both versions under load",
                     (seen.get(v1.name, 0) > 0 and seen.get(self.v2.name, 0) > 0)
                     or [f"answers by version: {seen}"])
        print(f"   answers by version: {seen}")
        # The shards keep the replaced version servable for a while.
        errs = []
        for i, stub in enumerate(self.shard_stubs):
            info = self.info(stub)
            if (info.version.name, info.size) != (self.v2.name, self.v2.share(i)):
                errs.append(f"shard {i}: {info.version.name} size {info.size}, expected "
                            f"{self.v2.name} {self.v2.share(i)}")
            if info.previous_version.name != v1.name:
                errs.append(f"shard {i}: previous_version {info.previous_version.name!r}, "
                            f"expected {v1.name!r}")
        checks.check("swap: every shard serves its share of the new version and keeps "
                     "the old one as previous_version", errs)
        self.check_infos(self.v2, "after the swap")

    # -------------------------------------------------- 4. kill a shard

    def partial_expectation(self, c, queries, o, dead):
        """What a router answers a TOP request with allow_partial when shard
        `dead` is gone: the single server's answer over the whole corpus to
        the same request with the dead shard's positives left out (they are
        not stored on the live shards, so they count neither for p nor for
        exclusion there), deep enough, restricted to the live shards'
        candidates and cut to the window again."""
        pb = self.pb
        assert o["sampling"] == TOP
        need = o["rmin"] + o["k"]
        live_q = [dict(q, pos_ids=[i for i in q["pos_ids"]
                                   if i not in c.row or c.shard[c.row[i]] != dead])
                  for q in queries]
        deep = 3 * need + 60
        while True:
            wide = opts_spec(deep, max_score=o["max_score"], min_score=o["min_score"],
                             abs_m=o["abs_m"], rel_r=o["rel_r"], ret_emb=o["ret_emb"])
            req = to_proto(pb, self.request_id(), live_q, wide)
            resp = self.single_stub.MineOnce(req, timeout=RPC_TIMEOUT)
            lives = [[n for n in r.negatives if shard_of(n.id) != dead]
                     for r in resp.results]
            if all(len(lv) >= need or r.shortfall > 0
                   for lv, r in zip(lives, resp.results)):
                break
            deep *= 2
        want = pb.MineResponse(index=resp.index)
        for r, lv in zip(resp.results, lives):
            out = want.results.add()
            if r.HasField("positive_score"):
                out.positive_score = r.positive_score
            window = lv[o["rmin"]:need]
            for rank, n in enumerate(window, start=o["rmin"]):
                m = out.negatives.add()
                m.CopyFrom(n)
                m.rank = rank
            out.shortfall = o["k"] - len(window)
        return want

    def partial_cases(self, c, dead):
        """TOP requests whose positives, labels and bounds involve the dead
        shard and the live ones."""
        rng = self.rng
        cases = []
        for t in range(8):
            queries = []
            for _ in range(int(rng.choice([1, 2, 4]))):
                j = int(rng.integers(c.n))
                vec = c.emb[j] + np.float32(0.1 / math.sqrt(c.dim)) * \
                    rng.standard_normal(c.dim).astype(np.float32)
                order = c.order(vec)
                live = [int(r) for r in order[:30] if c.shard[r] != dead]
                on_dead = [int(r) for r in order[30:400] if c.shard[r] == dead]
                # A weak positive on the dead shard, strong ones on the live.
                pos = c.ids[live[:2] + on_dead[-1:]].tolist()
                queries.append(query_spec(vec, pos_ids=pos, use_bytes=bool(t % 2),
                                          label=int(c.labels[j]) if t % 4 == 1 else None,
                                          qid=int(c.ids[order[0]]) if t % 4 == 2 else None))
            o = opts_spec(int(rng.choice([5, 10, 30])), rmin=int(rng.choice([0, 0, 4, 50])),
                          abs_m=0.0 if t % 2 == 0 else None,
                          rel_r=0.05 if t % 3 == 0 else None,
                          ret_emb=t == 3, allow_partial=True)
            if t == 5:
                o["min_score"] = 0.0
            cases.append((queries, o))
        return cases

    def part_shard_down(self, victim, how):
        """Shard `victim` killed (SIGKILL, then restarted on its port and data
        dir) or hung (SIGSTOP, then SIGCONT): requests fail UNAVAILABLE naming
        it, or with allow_partial are answered exactly from the live shards;
        health follows; afterwards everything serves again. A Mine stream
        opened before stays usable throughout."""
        pb, checks, c = self.pb, self.checks, self.v2
        target = self.targets[victim]
        gen = RequestGen(self.rng, c)
        stream = LiveStream(self.router_stub, timeout=120)
        try:
            self.check_live_stream(stream, gen, c, f"{how}: before, the open stream")
            t_down = time.time()
            if how == "kill":
                self.shards[victim].kill()
            else:
                self.shards[victim].proc.send_signal(signal.SIGSTOP)
            print(f"   {'SIGKILL' if how == 'kill' else 'SIGSTOP'} to shard {victim} "
                  f"({target})")
            self.check_down(how, c, gen, victim, target, stream)
            took = self.wait_health(self.router_port, "NOT_SERVING", 15)
            checks.check(f"{how}: router health NOT_SERVING",
                         took is not None or [f"health {self.health(self.router_port)!r} "
                                              f"15 s after the {how}"])
            print(f"   router NOT_SERVING {time.time() - t_down:.2f}s after the {how}")
            try:
                info = self.info(self.router_stub)
                errs = [] if len(info.shards) == NUM_SHARDS and info.shards[victim].error \
                    else [f"shards: {[(s.target, s.error) for s in info.shards]}"]
            except self.grpc.RpcError as e:
                errs = [f"GetIndexInfo failed: {e.code()} {e.details()}"]
            checks.check(f"{how}: router GetIndexInfo reports an error for {target}", errs)
            t_back = time.time()
            if how == "kill":
                # Restarted on the same port and data dir: serves its snapshot.
                self.shards[victim].start()
                port = self.shards[victim].wait_listening()
                checks.check(f"{how}: the restarted shard listens on its port",
                             port == self.shard_ports[victim] or [f"listening on {port}"])
                checks.check(f"{how}: the restarted shard serves its share of {c.name} "
                             f"from its snapshot",
                             self.serves(self.shard_stubs[victim], c.name, c.share(victim)))
            else:
                self.shards[victim].proc.send_signal(signal.SIGCONT)
            took = self.wait_health(self.router_port, "SERVING", 60)
            checks.check(f"{how}: router health SERVING again",
                         took is not None or [f"health {self.health(self.router_port)!r}"])
            print(f"   router SERVING {time.time() - t_back:.2f}s after the "
                  f"{'restart' if how == 'kill' else 'SIGCONT'}")
            self.check_live_stream(stream, gen, c, f"{how}: after, the same stream")
        finally:
            stream.close()
        for n in range(6):
            queries, o = gen.request(deep=False)
            req = to_proto(pb, self.request_id(), queries, o)
            if n % 2:
                res, want = self.both(lambda: self.stream(self.router_stub, [req]),
                                      lambda: self.once(self.single_stub, req))
                got = self.first_answer(res, req)
            else:
                got, want = self.both(lambda: self.once(self.router_stub, req),
                                      lambda: self.once(self.single_stub, req))
            self.verify(f"{how}: afterwards, request {n}", c, queries, o, req, got, want)

    def check_live_stream(self, stream, gen, c, name):
        """One request on the long-lived stream, against the single server."""
        queries, o = gen.request(deep=False)
        req = to_proto(self.pb, self.request_id(), queries, o)
        try:
            got = stream.ask(req)
        except self.grpc.RpcError as e:
            got = error_response(self.pb, req.request_id, e)
        self.verify(name, c, queries, o, req, got, self.once(self.single_stub, req))

    def check_down(self, how, c, gen, victim, target, stream):
        """While shard `victim` is down, all at once (a hung shard costs each
        request --shard_timeout): requests without allow_partial fail
        UNAVAILABLE naming it within their 10 s deadline; with allow_partial
        they are answered exactly from the live shards."""
        pb = self.pb
        tasks = []  # (name, fn returning errors)

        def unavailable(status_code, message, took):
            errs = []
            if status_code != UNAVAILABLE:
                errs.append(f"code {status_code} ({message!r}), expected 14 (UNAVAILABLE)")
            if target not in message:
                errs.append(f"message {message!r} does not name {target}")
            if took >= 10:
                errs.append(f"took {took:.1f}s, at the deadline")
            return errs

        def unary():
            queries, o = gen.request(deep=False)
            req = to_proto(pb, self.request_id(), queries, o)
            start = time.time()
            got = self.once(self.router_stub, req, timeout=10)
            return unavailable(got.error.code, got.error.message, time.time() - start)

        def on_stream():
            queries, o = gen.request(deep=False)
            req = to_proto(pb, self.request_id(), queries, o)
            start = time.time()
            try:
                got = stream.ask(req)
            except self.grpc.RpcError as e:
                return [f"the open stream failed: {e.code()} {e.details()}"]
            errs = unavailable(got.error.code, got.error.message, time.time() - start)
            if got.request_id != req.request_id or len(got.results):
                errs.append(f"request_id {got.request_id} (sent {req.request_id}), "
                            f"{len(got.results)} results")
            return errs

        tasks.append(("MineOnce without allow_partial fails UNAVAILABLE naming it", unary))
        tasks.append(("the open Mine stream answers in-band UNAVAILABLE naming it",
                      on_stream))
        cases = self.partial_cases(c, victim)
        if how != "kill":
            cases = cases[:3]
        for n, (queries, o) in enumerate(cases):
            req = to_proto(pb, self.request_id(), queries, o)
            want = self.partial_expectation(c, queries, o, victim)
            want.request_id = req.request_id

            def partial(req=req, want=want, n=n):
                start = time.time()
                if n % 2:
                    got = self.first_answer(
                        self.stream(self.router_stub, [req], timeout=10), req)
                else:
                    got = self.once(self.router_stub, req, timeout=10)
                took = time.time() - start
                errs = [] if took < 10 else [f"took {took:.1f}s, at the deadline"]
                return errs + compare(got, want, missing=[target])

            tasks.append((f"{'Mine' if n % 2 else 'MineOnce'} with allow_partial {n} is "
                          f"exact over the live shards, missing_shards [{target}]", partial))

        def sampled():
            queries, o = gen.request(deep=False)
            o["allow_partial"], o["sampling"] = True, UNIFORM
            req = to_proto(pb, self.request_id(), queries, o)
            got = self.once(self.router_stub, req, timeout=10)
            errs = [] if got.error.code == OK else [
                f"error {got.error.code} {got.error.message}"]
            if list(got.missing_shards) != [target]:
                errs.append(f"missing_shards {list(got.missing_shards)}")
            for r in got.results:
                errs += [f"id {n.id} is on the missing shard" for n in r.negatives
                         if shard_of(n.id) == victim]
            return errs

        tasks.append(("UNIFORM with allow_partial samples the live shards only", sampled))
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(tasks)) as pool:
            futures = [(name, pool.submit(fn)) for name, fn in tasks]
            for name, fut in futures:
                try:
                    errs = fut.result()
                except Exception:  # noqa: BLE001
                    errs = [traceback.format_exc()]
                self.checks.check(f"{how}: {name}", errs)

    # -------------------------------------------------- 5. publish

    def publish_messages(self, header, chunks):
        pb = self.pb
        msgs = [pb.PublishRequest(header=header)]
        for ch in chunks:
            msgs.append(pb.PublishRequest(chunk=ch))
        return msgs

    def make_chunks(self, ids, labels, emb, nchunks, deletes=()):
        pb = self.pb
        chunks = []
        bounds = np.linspace(0, len(ids), nchunks + 1).astype(int)
        dbounds = np.linspace(0, len(deletes), nchunks + 1).astype(int)
        for k in range(nchunks):
            a, b = bounds[k], bounds[k + 1]
            ch = pb.PublishChunk(ids=ids[a:b].tolist(), labels=labels[a:b].tolist(),
                                 delete_ids=list(deletes[dbounds[k]:dbounds[k + 1]]))
            if k % 2:
                ch.embeddings_bytes = emb[a:b].astype("<f4").tobytes()
            else:
                ch.embeddings.extend(emb[a:b].reshape(-1).tolist())
            chunks.append(ch)
        return chunks

    def publish_both(self, what, msgs, name):
        """The same Publish to the router and to the single server."""
        errs = []

        def call(stub):
            try:
                return stub.Publish(iter(msgs), timeout=RPC_TIMEOUT)
            except self.grpc.RpcError as e:
                return e

        start = time.time()
        got, want = self.both(lambda: call(self.router_stub), lambda: call(self.single_stub))
        took = time.time() - start
        for who, r in (("router", got), ("single", want)):
            if isinstance(r, Exception):
                errs.append(f"{who}: {r.code()} {r.details()}")
            elif r.version.name != name:
                errs.append(f"{who}: answered version {r.version.name!r}, expected {name!r}")
        return self.checks.check(f"publish: {what} through the router and to the single "
                                 f"server ({took:.2f}s)", errs)

    def check_published(self, c, what):
        """Right after a wait=true publish returned: every shard serves its
        share, the router the total."""
        checks = self.checks
        errs = []
        for i, stub in enumerate(self.shard_stubs):
            errs += [f"shard {i}: {e}, expected {c.name} {c.share(i)}"
                     for e in self.serves(stub, c.name, c.share(i))]
        checks.check(f"publish: {what}: every shard serves {c.name} with its share "
                     f"({[c.share(i) for i in range(NUM_SHARDS)]})", errs)
        checks.check(f"publish: {what}: router GetIndexInfo reports {c.name}, size {c.n}",
                     self.serves(self.router_stub, c.name, c.n))
        info = (self.wait_version(self.router_stub, c.name, 10)
                or self.info(self.router_stub))
        errs = [] if len(info.shards) == NUM_SHARDS else [f"{len(info.shards)} shards"]
        for i, sh in enumerate(info.shards):
            if (sh.target, sh.info.version.name, sh.info.size) != \
                    (self.targets[i], c.name, c.share(i)):
                errs.append(f"shards[{i}]: {sh.target} {sh.info.version.name} size "
                            f"{sh.info.size} error {sh.error!r}")
        checks.check(f"publish: {what}: router's per-shard breakdown lists the 3 shards "
                     f"with their shares", errs)
        checks.check(f"publish: {what}: the single server serves {c.name}, size {c.n}",
                     self.serves(self.single_stub, c.name, c.n))

    def mine_published(self, c, what, count=24):
        gen = RequestGen(self.rng, c)
        for n in range(count):
            queries, o = gen.request(deep=False)
            o["rmin"] = min(o["rmin"], c.n + 5)
            o["rmax"] = o["rmax"] and max(o["rmax"], o["rmin"] + o["k"])
            req = to_proto(self.pb, self.request_id(), queries, o)
            got, want = self.both(lambda: self.once(self.router_stub, req),
                                  lambda: self.once(self.single_stub, req))
            if want.index.name != c.name:
                self.checks.check(f"publish: {what}: mine {n}",
                                  [f"the single server answered on {want.index.name!r}"])
                continue
            self.verify(f"publish: {what}: mine {n}", c, queries, o, req, got, want)

    def part_publish(self):
        pb, rng = self.pb, self.rng
        dim, n = self.v2.dim, 600
        # Some ids of the served version, some new ones.
        old = rng.choice(self.v2.ids, size=n // 3, replace=False)
        ids = np.concatenate([old, unique_ids(rng, n - len(old), taken=self.v2.ids)])
        rng.shuffle(ids)
        emb = (rng.standard_normal((n, dim)) / math.sqrt(dim)).astype(np.float32)
        add_duplicates(rng, emb)
        full = ShardedCorpus("pub-full", self.v2.step + 1000, emb, ids,
                             random_labels(rng, n, ODD_LABELS))
        header = pb.PublishHeader(name=full.name, step=full.step, dim=dim,
                                  metric="inner_product", wait=True, total_ids=n)
        msgs = self.publish_messages(header, self.make_chunks(full.ids, full.labels,
                                                              full.emb, 5))
        if self.publish_both(f"full publish of {n} rows in 5 chunks", msgs, full.name):
            self.check_published(full, "full")
            self.mine_published(full, "full")
        # Incremental: upserts of existing ids (changed), new ids, deletes
        # (and two ids that do not exist).
        changed = rng.choice(full.n, size=60, replace=False)
        deleted = np.setdiff1d(rng.choice(full.n, size=90, replace=False), changed)
        new_ids = unique_ids(rng, 45, taken=full.ids)
        up_ids = np.concatenate([full.ids[changed], new_ids])
        up_emb = (rng.standard_normal((len(up_ids), dim)) / math.sqrt(dim)).astype(np.float32)
        up_labels = random_labels(rng, len(up_ids), ODD_LABELS)
        del_ids = full.ids[deleted].tolist() + unique_ids(
            rng, 2, taken=np.concatenate([full.ids, new_ids])).tolist()
        # The expected corpus: base rows in order (minus deletes, upserts in
        # place), new ids appended.
        rows = {int(i): (full.emb[r], int(full.labels[r])) for r, i in enumerate(full.ids)}
        for i, e, lab in zip(up_ids.tolist(), up_emb, up_labels.tolist()):
            rows[i] = (e, lab)
        for i in del_ids:
            rows.pop(i, None)
        order = [i for i in full.ids.tolist() if i in rows] + \
            [i for i in new_ids.tolist() if i in rows]
        inc = ShardedCorpus("pub-inc", full.step + 1, np.stack([rows[i][0] for i in order]),
                            order, [rows[i][1] for i in order])
        header = pb.PublishHeader(name=inc.name, step=inc.step, dim=dim,
                                  metric="inner_product", base_version=full.name, wait=True,
                                  total_ids=len(up_ids), total_delete_ids=len(del_ids))
        perm = rng.permutation(len(up_ids))
        msgs = self.publish_messages(header, self.make_chunks(
            up_ids[perm], up_labels[perm], up_emb[perm], 3, deletes=del_ids))
        if self.publish_both(f"incremental publish ({len(up_ids)} upserts, "
                             f"{len(del_ids)} deletes)", msgs, inc.name):
            self.check_published(inc, "incremental")
            self.mine_published(inc, "incremental")

    # -------------------------------------------------- 6. shutdown

    def part_shutdown(self):
        # Idle client connections would hold a server's exit back by seconds.
        for ch in self.channels:
            ch.close()
        for p in [self.router] + self.shards + [self.single]:
            if p is None:
                continue
            start = time.time()
            rc = p.stop()
            self.checks.check(f"shutdown: {p.tag} exits 0 on SIGTERM "
                              f"({time.time() - start:.2f}s)",
                              rc == 0 or [f"exit {rc}: {p.stderr_tail()}"])


# Each must have been exercised by at least this many verified answers.
COVERAGE_MINIMUM = {
    "requests": 300, "sampling TOP": 20, "sampling UNIFORM": 20, "sampling SOFTMAX": 20,
    "multi-query request": 20, "range_min >= 500": 10, "shortfall > 0": 5,
    "positive_score set": 20, "label": 20, "query_id": 10, "positive_scores": 10,
    "return_embeddings": 10, "tie in an answer": 3, "bound set": 20,
    "margin, stored positives on >= 2 shards": 20,
    "margin, a shard's own p differs from the global p": 20,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=os.environ.get("HARDNEG_SERVER"),
                    help="path of hardneg-server (or $HARDNEG_SERVER)")
    ap.add_argument("--router", default=os.environ.get("HARDNEG_ROUTER"),
                    help="path of hardneg-router (or $HARDNEG_ROUTER)")
    ap.add_argument("--proto_dir", default=os.path.join(ROOT, "proto"))
    ap.add_argument("--work_dir", default=None,
                    help="checkpoints, data dirs, stubs and logs; emptied first "
                         "(default: a temp dir)")
    ap.add_argument("--seed", type=int, default=20261205)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    for flag in ("server", "router"):
        path = getattr(args, flag)
        if not path or not os.access(path, os.X_OK):
            print(f"--{flag} must name the hardneg-{flag} binary; got {path!r}")
            print("0 passed, 1 failed")
            return 1
    tmp = None
    if args.work_dir is None:
        tmp = args.work_dir = tempfile.mkdtemp(prefix="hardneg-e2e-sharded-")
    else:
        # Never reuse a previous run's checkpoints or snapshots.
        shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(os.path.join(args.work_dir, "checkpoints"))
    os.makedirs(os.path.join(args.work_dir, "logs"))
    checks = Checks(args.verbose)
    start = time.time()
    assert splitmix64(0) == 0xE220A8397B1DCDAF and splitmix64(1234567) == 6457827717110365317
    stubs = checked_stubs(checks, args.proto_dir, args.work_dir)
    if stubs is None:
        return 1
    run = ShardedRun(args, checks, *stubs)
    try:
        started = False
        with part("start: 3 shards, a router, one unsharded server", checks):
            run.part_start()
            started = True
        if started:
            with part("random: router vs unsharded server", checks):
                run.part_random()
            with part("swap under load", checks):
                run.part_swap()
            if hasattr(run, "v2"):
                with part("kill a shard (SIGKILL), restart it", checks):
                    run.part_shard_down(1, "kill")
                with part("hang a shard (SIGSTOP), resume it", checks):
                    run.part_shard_down(2, "stop")
            with part("publish through the router", checks):
                run.part_publish()
        with part("shutdown", checks):
            run.part_shutdown()
        missing = [f"{k}: {COVERAGE.get(k, 0)} < {v}" for k, v in COVERAGE_MINIMUM.items()
                   if COVERAGE.get(k, 0) < v]
        checks.check("coverage of the verified answers", missing)
    finally:
        kill_leftovers()
        run.pool.shutdown(wait=False)
    print("coverage: " + ", ".join(f"{k}: {v}" for k, v in sorted(COVERAGE.items())))
    if tmp is not None and checks.failed == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    elif checks.failed:
        print(f"logs, checkpoints and data dirs: {args.work_dir}")
    print(f"elapsed {time.time() - start:.1f}s")
    print(checks.summary())
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

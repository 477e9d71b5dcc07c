#!/usr/bin/env python3
"""End-to-end check of hardneg-server against README.md's mining semantics.

An outside check, independent of the server's code: it writes random
checkpoints with numpy, starts `hardneg-server` on each (port 0), sends
hundreds of randomized requests through `Mine` (several per stream) and
`MineOnce`, and compares every answer with its own numpy reference of the
contract (scores in float64, rounded to float32 like the service reports
them; bounds and margins compared in double on those float32 values):

  1. score: inner product, or squared L2 distance;
  2. exclude positive_ids, query_id, and the query's label (only when the
     checkpoint has labels; label 0 is a label);
  3. p = the weakest positive (stored positives scored against the query,
     plus positive_scores; ids not in the index count for nothing); margins
     against p (only when there is a p) and max/min_score bounds (0 is a
     bound);
  4. survivors best first (ties by id ascending), ranks [range_min, range_max);
  5. TOP / UNIFORM / SOFTMAX sampling of num_negatives, returned best first;
  6. shortfall = what is missing; never filled with anything else.

Plus: bad inputs (INVALID_ARGUMENT naming the field and query index, in-band
on streams with the stream still usable), determinism (same request and seed,
same answer, whichever RPC and embedding encoding), the sampling
distributions, index version / GetIndexInfo, a checkpoint swap, health, the
Python client package (python/hardneg), and a clean SIGTERM exit.

Usage:
  /usr/bin/python3 tests/e2e/check_semantics.py --server build/server/hardneg-server \
      [--proto_dir proto] [--python_dir python] [--work_dir /tmp/e2e] [--seed N]

Needs /usr/bin/python3 with Debian's python3-grpcio, python3-numpy,
python3-protobuf, and /usr/bin/protoc + /usr/bin/grpc_python_plugin (or
$PROTOC, $GRPC_PYTHON_PLUGIN; stubs are generated into the work dir, see
e2e_common.py). Prints `N passed, M failed`; exits 1 on any failure.
"""

import argparse
import functools
import math
import os
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_common import (INVALID_ARGUMENT, ROOT, SAMPLING_NAMES, SOFTMAX, TOP,  # noqa: E402
                        UNIFORM, Checks, Corpus, LiveStream, Proc, Run, add_duplicates,
                        checked_stubs, describe, find_duplicate, health_status,
                        kill_leftovers, opts_spec, query_spec, random_labels,
                        random_margins, raw_request, to_proto)

RTOL = 1e-4


# ------------------------------------------------------------------ results


def close(a, b, rtol=RTOL):
    return abs(float(a) - float(b)) <= rtol * max(1.0, abs(float(b)))


# ------------------------------------------------------------------ data


class Store(Corpus):
    """A checkpoint's content with the numpy reference of the semantics."""

    # The contract, per query. q: a query spec; o: an options spec.
    def reference(self, q, o):
        s64 = self.scores64(q["vec"])
        s32 = s64.astype(np.float32)
        sd = s32.astype(np.float64)
        excluded = np.zeros(self.n, dtype=bool)
        pos_rows = [self.row[i] for i in q["pos_ids"] if i in self.row]
        excluded[pos_rows] = True
        if q["qid"] is not None and q["qid"] in self.row:
            excluded[self.row[q["qid"]]] = True
        if q["label"] is not None and self.labels is not None:
            excluded |= self.labels == q["label"]
        pvals = [float(sd[r]) for r in pos_rows]
        pvals += [float(np.float32(x)) for x in q["pos_scores"]]
        p = None
        if pvals:
            p = min(pvals) if self.ip else max(pvals)
        keep = ~excluded
        why = {}
        if p is not None and o["abs_m"] is not None:
            m = float(np.float32(o["abs_m"]))
            drop = (sd + m > p) if self.ip else (sd < p + m)
            keep &= ~drop
            why["absolute_margin"] = drop
        if p is not None and o["rel_r"] is not None:
            r = float(np.float32(o["rel_r"]))
            drop = (sd > p - abs(p) * r) if self.ip else (sd < p + abs(p) * r)
            keep &= ~drop
            why["relative_margin"] = drop
        if o["max_score"] is not None:
            drop = sd > float(np.float32(o["max_score"]))
            keep &= ~drop
            why["max_score"] = drop
        if o["min_score"] is not None:
            drop = sd < float(np.float32(o["min_score"]))
            keep &= ~drop
            why["min_score"] = drop
        surv = np.nonzero(keep)[0]
        key = -sd[surv] if self.ip else sd[surv]
        surv = surv[np.lexsort((self.ids[surv], key))]
        pos = np.full(self.n, -1, dtype=np.int64)
        pos[surv] = np.arange(len(surv))
        k, rmin = o["k"], o["rmin"]
        rmax = o["rmax"] or rmin + k
        window = surv[rmin:rmax]
        nret = min(k, len(window))
        return dict(s64=s64, s32=s32, sd=sd, surv=surv, pos=pos, window=window,
                    top=window[:k], p=p, shortfall=k - nret, rmax=rmax,
                    excluded=excluded, why=why)


def make_store(rng, name, step, metric, n, dim, with_labels, normalize,
               negative_ids=False):
    emb = rng.standard_normal((n, dim)) / math.sqrt(dim)
    if normalize:
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb.astype(np.float32)
    add_duplicates(rng, emb)
    if negative_ids:
        pool = rng.integers(-(1 << 62), 1 << 62, size=2 * n, dtype=np.int64)
    else:
        pool = rng.integers(0, 1 << 40, size=2 * n, dtype=np.int64)
    pool = pool[pool != -1]
    _, first = np.unique(pool, return_index=True)
    ids = pool[np.sort(first)][:n]
    rng.shuffle(ids)
    labels = random_labels(rng, n) if with_labels else None
    return Store(name, step, metric, emb, ids, labels)


# ------------------------------------------------------------------ requests


def got_from_pb(result):
    negs = result.negatives
    return dict(ids=[n.id for n in negs], scores=[n.score for n in negs],
                labels=[n.label for n in negs], ranks=[n.rank for n in negs],
                embs=[np.asarray(n.embedding, dtype=np.float32) for n in negs],
                shortfall=result.shortfall,
                p=result.positive_score if result.HasField("positive_score") else None)


def got_from_client(res, i):
    mask = res.ranks[i] >= 0
    embs = ([res.embeddings[i, j] for j in np.nonzero(mask)[0]]
            if res.embeddings is not None else [np.zeros(0, np.float32)] * int(mask.sum()))
    p = float(res.positive_score[i])
    return dict(ids=res.ids[i][mask].tolist(), scores=res.scores[i][mask].tolist(),
                labels=res.labels[i][mask].tolist(), ranks=res.ranks[i][mask].tolist(),
                embs=embs, shortfall=int(res.shortfall[i]),
                p=None if math.isnan(p) else p)


COVERAGE = {}


def count_coverage(store, q, o, ref):
    """What the verified queries exercised (printed at the end)."""
    def bump(key, cond=True):
        if cond:
            COVERAGE[key] = COVERAGE.get(key, 0) + 1
    bump("queries")
    bump(f"sampling {SAMPLING_NAMES[o['sampling']]}")
    bump("shortfall > 0", ref["shortfall"] > 0)
    bump("p set", ref["p"] is not None)
    bump("p < 0", ref["p"] is not None and ref["p"] < 0)
    for key in ("abs_m", "rel_r", "max_score", "min_score"):
        bump(f"{key} set (p set)" if key in ("abs_m", "rel_r") else f"{key} set",
             o[key] is not None and (ref["p"] is not None or key not in ("abs_m", "rel_r")))
        bump(f"{key} == 0", o[key] == 0.0)
    for name, drop in ref["why"].items():
        bump(f"{name} dropped a candidate", bool(np.any(drop & ~ref["excluded"])))
    bump("label excluded some", q["label"] is not None and store.labels is not None
         and bool(np.any(store.labels == q["label"])))
    bump("label 0 sent", q["label"] == 0)
    bump("range_min > 0", o["rmin"] > 0)
    bump("range_max set", o["rmax"] > 0)
    top = ref["window"]
    s64 = ref["s64"][top]
    bump("exact tie inside the window", len(np.unique(s64)) < len(s64))
    bump("return_embeddings", o["ret_emb"])
    bump("embedding_bytes", q["use_bytes"])


def verify(store, q, o, got):
    """Compares one query's answer with the reference; returns errors."""
    ref = store.reference(q, o)
    errs = []
    count_coverage(store, q, o, ref)
    k, rmin, rmax = o["k"], o["rmin"], ref["rmax"]
    sd, s64, surv, pos = ref["sd"], ref["s64"], ref["surv"], ref["pos"]
    ctx = (f"[{SAMPLING_NAMES[o['sampling']]} k={k} window=[{rmin},{rmax}) "
           f"survivors={len(surv)} p={ref['p']}]")
    # p
    if ref["p"] is None:
        if got["p"] is not None:
            errs.append(f"positive_score {got['p']} set, but there is no positive {ctx}")
    elif got["p"] is None:
        errs.append(f"positive_score absent, expected {ref['p']:.7g} {ctx}")
    elif not close(got["p"], ref["p"]):
        errs.append(f"positive_score {got['p']:.7g}, expected {ref['p']:.7g} {ctx}")
    # count
    if got["shortfall"] != ref["shortfall"]:
        errs.append(f"shortfall {got['shortfall']}, expected {ref['shortfall']} {ctx}")
    if len(got["ids"]) != k - ref["shortfall"]:
        errs.append(f"{len(got['ids'])} negatives, expected {k - ref['shortfall']} {ctx}")
    if len(set(got["ids"])) != len(got["ids"]):
        errs.append(f"duplicate ids in {got['ids']}")
    rows = []
    for j, gid in enumerate(got["ids"]):
        row = store.row.get(gid)
        if row is None:
            errs.append(f"negative {j}: id {gid} is not in the index {ctx}")
            rows.append(None)
            continue
        rows.append(row)
        if pos[row] < 0:
            reasons = [name for name, drop in ref["why"].items() if drop[row]]
            if ref["excluded"][row]:
                reasons.insert(0, "a match (positive/query_id/label)")
            errs.append(f"negative {j}: id {gid} (score {sd[row]:.9g}) should be "
                        f"dropped: {', '.join(reasons)} {ctx}")
            continue
        if not close(got["scores"][j], s64[row]):
            errs.append(f"negative {j}: id {gid} score {got['scores'][j]:.9g}, "
                        f"expected {s64[row]:.9g}")
        want_label = int(store.labels[row]) if store.labels is not None else 0
        if got["labels"][j] != want_label:
            errs.append(f"negative {j}: id {gid} label {got['labels'][j]}, "
                        f"expected {want_label}")
        if o["ret_emb"]:
            if not np.array_equal(got["embs"][j], store.emb[row]):
                errs.append(f"negative {j}: id {gid} embedding differs from the stored one")
        elif len(got["embs"][j]):
            errs.append(f"negative {j}: embedding returned without return_embeddings")
        rank = got["ranks"][j]
        if not (rmin <= rank < rmax):
            errs.append(f"negative {j}: rank {rank} outside [{rmin},{rmax}) {ctx}")
        if rank != pos[row]:
            other = surv[rank] if rank < len(surv) else None
            if (other is None or not close(sd[other], sd[row])
                    or s64[other] == s64[row]):
                errs.append(f"negative {j}: id {gid} rank {rank}, expected "
                            f"{pos[row]} (score {sd[row]:.9g}) {ctx}")
    ranks = got["ranks"]
    if any(b <= a for a, b in zip(ranks, ranks[1:])):
        errs.append(f"ranks not strictly increasing (best first): {ranks}")
    sc = got["scores"]
    for j in range(1, len(sc)):
        worse = sc[j] > sc[j - 1] if store.ip else sc[j] < sc[j - 1]
        if worse:
            errs.append(f"not best first at {j}: scores {sc[j-1]:.9g}, {sc[j]:.9g}")
        elif sc[j] == sc[j - 1] and got["ids"][j] < got["ids"][j - 1]:
            errs.append(f"tie at {j} (score {sc[j]:.9g}) not by id ascending: "
                        f"{got['ids'][j-1]}, {got['ids'][j]}")
    if o["sampling"] == TOP:
        for j, gid in enumerate(got["ids"]):
            if got["ranks"][j] != rmin + j:
                errs.append(f"TOP negative {j}: rank {got['ranks'][j]}, expected {rmin + j}")
            if j >= len(ref["top"]):
                continue
            want = ref["top"][j]
            if gid == store.ids[want]:
                continue
            row = rows[j]
            if row is None or not close(sd[row], sd[want]) or s64[row] == s64[want]:
                errs.append(f"TOP negative {j}: id {gid}"
                            f"{'' if row is None else f' (score {sd[row]:.9g})'}, "
                            f"expected id {store.ids[want]} (score {sd[want]:.9g}) {ctx}")
    return errs


# ------------------------------------------------------------------ the run


class SemanticsRun(Run):
    def __init__(self, args, checks, *stubs):
        super().__init__(args, checks, *stubs)
        self.next_id = 1

    def request_id(self):
        # Large ones too: request_id is a uint64.
        self.next_id += 1
        if self.next_id % 7 == 0:
            return int(self.rng.integers(1 << 63, (1 << 64) - 1, dtype=np.uint64))
        return self.next_id

    # -------------------------------------------------- random requests

    def random_query(self, store, scale):
        rng = self.rng
        kind = rng.choice(["near", "near", "exact", "random"])
        j = int(rng.integers(store.n))
        if kind == "random":
            vec = (rng.standard_normal(store.dim) / math.sqrt(store.dim)).astype(np.float32)
        elif kind == "exact":
            vec = store.emb[j].copy()
        else:
            noise = rng.uniform(0.02, 0.4) / math.sqrt(store.dim)
            vec = (store.emb[j] + noise * rng.standard_normal(store.dim)).astype(np.float32)
        s = store.scores64(vec)
        order = np.argsort(-s if store.ip else s, kind="stable")
        pos = []
        if kind != "random" and rng.random() < 0.7:
            pos.append(int(store.ids[j]))
        r = rng.random()
        if r < 0.1:
            pos += store.ids[order[:int(rng.integers(50, 300))]].tolist()  # deep
        elif r < 0.6:
            pos += store.ids[order[rng.integers(0, 60, size=int(rng.integers(1, 4)))]].tolist()
        if rng.random() < 0.3:
            pos += store.ids[rng.integers(0, store.n, size=2)].tolist()
        if rng.random() < 0.3:  # not in the index: count for nothing
            pos += [int(x) for x in rng.integers(1 << 41, 1 << 50, size=2) if int(x) not in store.row]
        if rng.random() < 0.2:
            rng.shuffle(pos)
        pscores = []
        if rng.random() < 0.35:
            for _ in range(int(rng.integers(1, 3))):
                c = rng.random()
                if c < 0.2:
                    pscores.append(0.0)
                elif c < 0.45:
                    pscores.append(-abs(float(rng.normal(0, scale))) - 0.05)  # negative p
                else:
                    pscores.append(float(s[order[int(rng.integers(0, 200))]]))
        label = None
        if rng.random() < 0.4:
            if store.labels is not None and rng.random() < 0.6:
                label = int(store.labels[j])
            else:
                label = int(rng.choice(store.label_values + [0]))
        qid = None
        r = rng.random()
        if r < 0.15:
            qid = int(store.ids[j])
        elif r < 0.25:
            qid = int(store.ids[order[int(rng.integers(0, 5))]])
        elif r < 0.3:
            qid = 1 << 55  # not in the index
        return query_spec(vec, pos, pscores, label, qid, use_bytes=bool(rng.random() < 0.5))

    def random_options(self, store, first_scores, scale):
        rng = self.rng
        s = np.sort(first_scores.astype(np.float32))  # ascending
        if store.ip:
            s = s[::-1]  # best first
        k = int(rng.choice([1, 1, 2, 3, 5, 8, 10, 16, 32, 64]))
        r = rng.random()
        if r < 0.5:
            rmin = 0
        elif r < 0.75:
            rmin = int(rng.integers(1, 20))
        elif r < 0.92:
            rmin = int(rng.integers(20, 400))
        else:
            rmin = max(0, store.n - int(rng.integers(0, 3 * k + 40)))  # shortfall
        rmax = 0
        if rng.random() < 0.45:
            rmax = rmin + k + int(rng.choice([0, 1, 5, 30, 200]))

        def at(qlo, qhi):  # a score at a quantile of the best-first order
            return float(s[min(len(s) - 1, int(rng.uniform(qlo, qhi) * len(s)))])

        def bound(best_side):
            c = rng.random()
            if c < 0.45:
                return None
            if c < 0.55:
                return 0.0
            if c < 0.7:
                return at(*best_side)  # exactly a candidate's score
            return at(*best_side) + float(rng.normal(0, 0.01 * scale))

        max_score = min_score = None
        if store.ip:
            max_score = bound((0.0, 0.05))   # drop the hardest (false negatives)
            min_score = bound((0.05, 0.6))   # drop the easy ones
        else:
            min_score = bound((0.0, 0.05))   # drop the suspiciously close
            max_score = bound((0.05, 0.6))
        abs_m, rel_r = random_margins(rng, scale)
        sampling = int(rng.choice([TOP, TOP, UNIFORM, SOFTMAX]))
        temperature = 0.0
        if rng.random() < 0.6:
            temperature = float(rng.uniform(0.02, 2.0) * scale)
        seed = int(rng.integers(0, (1 << 64) - 1, dtype=np.uint64))
        ret_emb = bool(rng.random() < 0.25)
        return opts_spec(k, rmin, rmax, max_score, min_score, abs_m, rel_r,
                         sampling, temperature, seed, ret_emb)

    def random_request(self, store, scale):
        nq = int(self.rng.choice([1, 1, 2, 3, 4, 8, 16]))
        queries = [self.random_query(store, scale) for _ in range(nq)]
        o = self.random_options(store, store.scores64(queries[0]["vec"]), scale)
        return queries, o

    # -------------------------------------------------- checking answers

    def check_response(self, name, store, queries, o, req, resp, version):
        return self.checks.check(
            name, self.check_response_errors(store, queries, o, req, resp, version))

    def check_response_errors(self, store, queries, o, req, resp, version):
        errs = []
        if resp.request_id != req.request_id:
            errs.append(f"request_id {resp.request_id}, expected {req.request_id}")
        if resp.HasField("error") and resp.error.code != 0:
            errs.append(f"unexpected error {resp.error.code}: {resp.error.message}")
        if (resp.index.name, resp.index.sequence) != version:
            errs.append(f"index version ({resp.index.name}, {resp.index.sequence}), "
                        f"expected {version}")
        if len(resp.results) != len(queries):
            errs.append(f"{len(resp.results)} results for {len(queries)} queries")
        else:
            bad = []
            for i, (q, r) in enumerate(zip(queries, resp.results)):
                sub = verify(store, q, o, got_from_pb(r))
                errs += [f"queries[{i}]: {e}" for e in sub]
                if sub:
                    bad.append(i)
        if errs:
            errs.append("request: " + describe(queries, o, bad))
        return errs

    # -------------------------------------------------- one configuration

    def run_config(self, cfg):
        args, checks, grpc = self.args, self.checks, self.grpc
        tag = cfg["name"]
        print(f"== {tag}: {cfg['metric']}, n={cfg['n']} dim={cfg['dim']} "
              f"labels={cfg['labels']} shards={cfg['shards']}")
        store = make_store(self.rng, tag, cfg["step"], cfg["metric"], cfg["n"],
                           cfg["dim"], cfg["labels"], cfg["normalize"],
                           cfg.get("negative_ids", False))
        ckpt = os.path.join(args.work_dir, f"checkpoints-{tag}")
        shutil.rmtree(ckpt, ignore_errors=True)
        os.makedirs(ckpt)
        # An older checkpoint that must not be served.
        old = make_store(np.random.default_rng(1), tag + "-old", cfg["step"] - 1,
                         cfg["metric"], 64, cfg["dim"], cfg["labels"], False)
        old.write(ckpt)
        store.write(ckpt, files=cfg["shards"])
        t0 = time.time()
        try:
            server = Proc(f"server-{tag}", [args.server, f"--checkpoints={ckpt}",
                                            "--grpc_port=0", "--poll_interval=200ms"],
                          args.work_dir)
            server.wait_listening()
        except Exception as e:  # noqa: BLE001
            checks.check(f"{tag}: server starts", [str(e)])
            return
        print(f"   server on port {server.port} (started in {time.time() - t0:.2f}s)")
        channel = grpc.insecure_channel(
            f"localhost:{server.port}",
            options=[("grpc.max_receive_message_length", 256 << 20)])
        stub = self.pb_grpc.MinerStub(channel)
        try:
            self.config_checks(cfg, store, server, channel, stub, ckpt)
        except Exception:  # noqa: BLE001
            checks.check(f"{tag}: no exception in the checker", [traceback.format_exc()])
        alive = server.proc.poll() is None
        checks.check(f"{tag}: server still alive", alive or
                     [f"exited {server.proc.returncode}: {server.stderr_tail()}"])
        channel.close()
        rc = server.stop(timeout=20)
        checks.check(f"{tag}: SIGTERM exits 0", rc == 0 or
                     [f"exit {rc}: {server.stderr_tail()}"])

    def config_checks(self, cfg, store, server, channel, stub, ckpt):
        checks, pb, grpc = self.checks, self.pb, self.grpc
        tag = cfg["name"]
        # ---- info and health
        info = stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10)
        version = (info.version.name, info.version.sequence)
        want_metric = "inner_product" if store.ip else "l2"
        errs = []
        for field, got, want in (("version.name", info.version.name, store.name),
                                 ("size", info.size, store.n), ("dim", info.dim, store.dim),
                                 ("metric", info.metric, want_metric),
                                 ("step", info.step, store.step),
                                 ("has_labels", info.has_labels, store.labels is not None)):
            if got != want:
                errs.append(f"{field} {got!r}, expected {want!r}")
        checks.check(f"{tag}: GetIndexInfo", errs)
        self.check_health(tag, channel)

        s0 = store.scores64(store.emb[0])
        scale = float(np.std(s0.astype(np.float32))) or 1.0

        # ---- randomized requests on streams, several per stream, with bad
        # requests in between: one response each, in order.
        repeat = []
        for stream_no in range(cfg["streams"]):
            items = []
            for _ in range(cfg["per_stream"]):
                if self.rng.random() < 0.12:
                    bad = self.bad_cases(store)[int(self.rng.integers(0, len(self.bad_cases(store))))]
                    items.append(("bad", bad, self.request_id()))
                else:
                    queries, o = self.random_request(store, scale)
                    items.append(("ok", (queries, o), self.request_id()))
            reqs = []
            for kind, payload, rid in items:
                if kind == "ok":
                    reqs.append(to_proto(pb, rid, payload[0], payload[1]))
                else:
                    r = payload[1]()
                    r.request_id = rid
                    reqs.append(r)
            try:
                resps = list(stub.Mine(iter(reqs), timeout=60))
            except grpc.RpcError as e:
                checks.check(f"{tag}: Mine stream {stream_no}",
                             [f"stream failed: {e.code()} {e.details()}"])
                continue
            checks.check(f"{tag}: Mine stream {stream_no}: one response per request, in order",
                         [f"{len(resps)} responses to {len(reqs)} requests"]
                         if len(resps) != len(reqs) else
                         [f"response {i} has request_id {a.request_id}, expected {b.request_id}"
                          for i, (a, b) in enumerate(zip(resps, reqs))
                          if a.request_id != b.request_id])
            for i, ((kind, payload, rid), req, resp) in enumerate(zip(items, reqs, resps)):
                name = f"{tag}: Mine stream {stream_no} request {i}"
                if kind == "ok":
                    queries, o = payload
                    if self.check_response(name, store, queries, o, req, resp, version):
                        if o["sampling"] != TOP or self.rng.random() < 0.3:
                            repeat.append((queries, o, resp))
                else:
                    self.check_inband_error(name + f" (bad: {payload[0]})", payload, req, resp)

        # ---- randomized MineOnce
        for i in range(cfg["once"]):
            queries, o = self.random_request(store, scale)
            req = to_proto(pb, self.request_id(), queries, o)
            name = f"{tag}: MineOnce {i}"
            try:
                resp = stub.MineOnce(req, timeout=30)
            except grpc.RpcError as e:
                checks.check(name, [f"RPC failed: {e.code()} {e.details()}",
                                    "request: " + describe(queries, o)])
                continue
            if self.check_response(name, store, queries, o, req, resp, version):
                if o["sampling"] != TOP or self.rng.random() < 0.3:
                    repeat.append((queries, o, resp))

        # ---- concurrent streams and unary calls, each still in order
        self.check_concurrent(tag, store, stub, version, scale)

        # ---- determinism: same request and seed -> same answer, whichever RPC
        # and embedding encoding.
        self.check_determinism(tag, stub, repeat)

        # ---- targeted cases
        self.check_targeted(tag, store, stub, version, scale)

        # ---- bad inputs
        self.check_bad_inputs(tag, store, stub)

        # ---- sampling distributions
        self.check_sampling_distribution(tag, store, stub, version)

        # ---- the Python client package
        if cfg.get("client"):
            self.check_client(tag, store, server, version, scale)

        # ---- a newer checkpoint is swapped in while a stream stays open
        if cfg.get("swap"):
            self.check_swap(tag, store, stub, ckpt, version, scale)
        self.check_health(tag + " (end)", channel)

    def check_concurrent(self, tag, store, stub, version, scale, threads=4, per=8):
        import threading
        pb, grpc = self.pb, self.grpc
        work = []
        for t in range(threads):
            items = []
            for _ in range(per):
                queries, o = self.random_request(store, scale)
                items.append((queries, o, to_proto(pb, self.request_id(), queries, o)))
            work.append(items)
        out = [None] * threads

        def run(t):
            try:
                if t % 2:
                    out[t] = list(stub.Mine(iter([r for _, _, r in work[t]]), timeout=60))
                else:
                    out[t] = [stub.MineOnce(r, timeout=60) for _, _, r in work[t]]
            except grpc.RpcError as e:
                out[t] = e

        ths = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        for t in range(threads):
            name = f"{tag}: concurrent {'stream' if t % 2 else 'MineOnce caller'} {t}"
            if isinstance(out[t], Exception):
                self.checks.check(name, [f"RPC failed: {out[t].code()} {out[t].details()}"])
                continue
            if len(out[t]) != per:
                self.checks.check(name, [f"{len(out[t])} responses to {per} requests"])
                continue
            errs = []
            for i, ((queries, o, req), resp) in enumerate(zip(work[t], out[t])):
                errs += [f"request {i}: {e}" for e in
                         self.check_response_errors(store, queries, o, req, resp, version)]
            self.checks.check(name, errs)

    def check_health(self, tag, channel):
        for service in ("", "hardneg.v1.Miner"):
            status = health_status(self.grpc, self.health_pb2, channel, service)
            self.checks.check(f"{tag}: health '{service}' SERVING",
                              status == "SERVING" or [f"status {status}"])

    # -------------------------------------------------- determinism

    def check_determinism(self, tag, stub, repeat):
        pb, grpc = self.pb, self.grpc
        if not repeat:
            return
        # Half via MineOnce, half via one stream; the embedding encoding flipped.
        once, streamed = repeat[0::2], repeat[1::2]
        errs = []
        for queries, o, first in once:
            req = to_proto(pb, self.request_id(), queries, o, flip_encoding=True)
            try:
                resp = stub.MineOnce(req, timeout=30)
            except grpc.RpcError as e:
                errs.append(f"RPC failed: {e.code()} {e.details()}")
                continue
            errs += same_results(first, resp, queries, o)
        reqs = [to_proto(pb, self.request_id(), q, o, flip_encoding=True)
                for q, o, _ in streamed]
        try:
            resps = list(stub.Mine(iter(reqs), timeout=60))
            for (queries, o, first), resp in zip(streamed, resps):
                errs += same_results(first, resp, queries, o)
        except grpc.RpcError as e:
            errs.append(f"stream failed: {e.code()} {e.details()}")
        self.checks.check(f"{tag}: determinism over {len(repeat)} repeated requests "
                          f"(other RPC, other embedding encoding)", errs)

    # -------------------------------------------------- targeted cases

    def mine_once(self, stub, queries, o):
        req = to_proto(self.pb, self.request_id(), queries, o)
        return req, stub.MineOnce(req, timeout=30)

    def check_targeted(self, tag, store, stub, version, scale):
        """Hand-made requests for the edges of the contract."""
        rng = self.rng
        cases = []
        dup = find_duplicate(store)
        a, b = dup  # rows with identical vectors, ids[a] < ids[b]
        va = store.emb[a].copy()
        ida, idb = int(store.ids[a]), int(store.ids[b])
        # The query is a stored vector: its duplicate ties with it exactly.
        cases.append(("exact duplicate tie, TOP k=5", [query_spec(va)], opts_spec(5)))
        cases.append(("duplicate of the positive survives at margin 0 (s == p)",
                      [query_spec(va, pos_ids=[ida])],
                      opts_spec(5, abs_m=0.0)))
        cases.append(("duplicate at relative margin 0 (s == p)",
                      [query_spec(va, pos_ids=[idb])], opts_spec(5, rel_r=0.0)))
        cases.append(("query_id excludes one of the tied pair",
                      [query_spec(va, qid=ida)], opts_spec(3)))
        s = store.scores64(va).astype(np.float32)
        best = np.argsort(-s if store.ip else s, kind="stable")
        third = float(s[best[7]])
        cases.append(("max_score exactly at a candidate's score",
                      [query_spec(va)], opts_spec(6, max_score=third)))
        cases.append(("min_score exactly at a candidate's score",
                      [query_spec(va)], opts_spec(6, min_score=third)))
        cases.append(("max_score 0 and min_score 0 are bounds",
                      [query_spec(va)], opts_spec(8, max_score=0.0)))
        cases.append(("min_score 0 is a bound", [query_spec(va)], opts_spec(8, min_score=0.0)))
        cases.append(("both bounds 0: only exact zeros survive",
                      [query_spec(va)], opts_spec(4, max_score=0.0, min_score=0.0)))
        cases.append(("absolute_margin 0 and relative_margin 0 without positives do nothing",
                      [query_spec(va)], opts_spec(5, abs_m=0.0, rel_r=0.0)))
        cases.append(("positive out of the index counts for nothing",
                      [query_spec(va, pos_ids=[1 << 60, 3], qid=1 << 59)],
                      opts_spec(5, abs_m=0.1, rel_r=0.1)))
        cases.append(("negative p from positive_scores, relative margin",
                      [query_spec(va, pos_scores=[-0.25])], opts_spec(5, rel_r=0.5)))
        cases.append(("negative p, negative relative margin",
                      [query_spec(va, pos_scores=[-0.25])], opts_spec(5, rel_r=-0.3)))
        cases.append(("negative p, relative margin > 1",
                      [query_spec(va, pos_scores=[-0.5])], opts_spec(5, rel_r=3.0)))
        cases.append(("negative p, absolute margin",
                      [query_spec(va, pos_scores=[-0.5])], opts_spec(5, abs_m=1.0)))
        cases.append(("positive_scores and stored positives together",
                      [query_spec(va, pos_ids=[int(store.ids[best[3]])],
                                  pos_scores=[float(s[best[20]]), float(s[best[1]])])],
                      opts_spec(5, abs_m=0.01)))
        cases.append(("positive_score 0", [query_spec(va, pos_scores=[0.0])],
                      opts_spec(5, abs_m=0.0)))
        lab = int(store.labels[a]) if store.labels is not None else 0
        cases.append(("label 0 is a label", [query_spec(va, label=0)], opts_spec(10)))
        cases.append(("the query's own label", [query_spec(va, label=lab)], opts_spec(10)))
        cases.append(("label not in the store", [query_spec(va, label=987654321)], opts_spec(10)))
        cases.append(("deep window: range_min 1000, TOP 20",
                      [query_spec(va)], opts_spec(20, rmin=1000)))
        cases.append(("window beyond the index: shortfall",
                      [query_spec(va)], opts_spec(30, rmin=store.n - 10)))
        cases.append(("window entirely past the index",
                      [query_spec(va)], opts_spec(5, rmin=store.n + 100)))
        cases.append(("everything filtered: shortfall k",
                      [query_spec(va)],
                      opts_spec(7, max_score=-1e30 if store.ip else -1.0)))
        cases.append(("k > n", [query_spec(va, pos_ids=[ida])], opts_spec(store.n + 3)))
        cases.append(("hardest 300 are positives: deeper search",
                      [query_spec(va, pos_ids=store.ids[best[:300]].tolist())], opts_spec(10)))
        cases.append(("strict max_score drops the best 1000: deeper search",
                      [query_spec(va)], opts_spec(10, max_score=float(s[best[1000]]))))
        cases.append(("UNIFORM over exactly the window (range_max 0) = TOP",
                      [query_spec(va)], opts_spec(10, rmin=5, sampling=UNIFORM, seed=3)))
        cases.append(("SOFTMAX with a window of k = TOP",
                      [query_spec(va)], opts_spec(10, rmin=5, rmax=15, sampling=SOFTMAX,
                                                  temperature=0.0, seed=3)))
        cases.append(("UNIFORM with a short window: shortfall",
                      [query_spec(va)], opts_spec(10, rmin=store.n - 4, rmax=store.n + 50,
                                                  sampling=UNIFORM, seed=9)))
        cases.append(("SOFTMAX with a tiny temperature",
                      [query_spec(va)], opts_spec(5, rmax=50, sampling=SOFTMAX,
                                                  temperature=1e-6, seed=11)))
        cases.append(("SOFTMAX with a huge temperature",
                      [query_spec(va)], opts_spec(5, rmax=50, sampling=SOFTMAX,
                                                  temperature=1e6, seed=11)))
        cases.append(("return_embeddings", [query_spec(va, use_bytes=True)],
                      opts_spec(4, ret_emb=True, sampling=UNIFORM, rmax=40, seed=5)))
        qs = [query_spec(store.emb[int(r)], pos_ids=[int(store.ids[int(r)])], use_bytes=bool(i % 2))
              for i, r in enumerate(rng.choice(store.n, size=32, replace=False))]
        cases.append(("a batch of 32", qs, opts_spec(16, rmax=40, sampling=SOFTMAX, seed=1)))
        for name, queries, o in cases:
            try:
                req, resp = self.mine_once(stub, queries, o)
            except self.grpc.RpcError as e:
                self.checks.check(f"{tag}: {name}", [f"RPC failed: {e.code()} {e.details()}"])
                continue
            self.check_response(f"{tag}: {name}", store, queries, o, req, resp, version)
        # The tie itself: the smaller id first, adjacent ranks.
        req, resp = self.mine_once(stub, [query_spec(va)], opts_spec(5))
        got = [n.id for n in resp.results[0].negatives]
        errs = []
        if ida not in got or idb not in got:
            errs.append(f"ids {ida} and {idb} (identical vectors) not both in {got}")
        elif got.index(ida) > got.index(idb):
            errs.append(f"tied ids {ida} < {idb} returned as {got}")
        self.checks.check(f"{tag}: identical vectors tie, id ascending", errs)
        # temperature 0 means 1.0: the same answer for the same seed.
        errs = []
        for seed in (1, 2, 3):
            o0 = opts_spec(5, rmax=60, sampling=SOFTMAX, temperature=0.0, seed=seed)
            o1 = dict(o0, temperature=1.0)
            _, r0 = self.mine_once(stub, [query_spec(va)], o0)
            _, r1 = self.mine_once(stub, [query_spec(va)], o1)
            if [n.id for n in r0.results[0].negatives] != [n.id for n in r1.results[0].negatives]:
                errs.append(f"seed {seed}: temperature 0 gave "
                            f"{[n.id for n in r0.results[0].negatives]}, 1.0 gave "
                            f"{[n.id for n in r1.results[0].negatives]}")
        self.checks.check(f"{tag}: SOFTMAX temperature 0 means 1.0", errs)

    # -------------------------------------------------- bad inputs

    def bad_cases(self, store):
        """(name, make request, fields the message must name)."""
        pb, dim = self.pb, store.dim

        req = functools.partial(raw_request, pb)
        good = [0.1] * dim
        nan = list(good)
        nan[dim // 2] = float("nan")
        inf = np.array(good, dtype="<f4")
        inf[1] = np.inf
        ninf = list(good)
        ninf[0] = float("-inf")
        return [
            ("wrong dim (embedding)", lambda: req([good, good, [0.1] * (dim - 1)]),
             ["queries[2]", "embedding"]),
            ("wrong dim (embedding_bytes)",
             lambda: req([good, np.ones(dim + 1, "<f4").tobytes()]),
             ["queries[1]", "embedding"]),
            ("embedding_bytes not a multiple of 4",
             lambda: req([np.ones(dim, "<f4").tobytes() + b"\0"]), ["queries[0]", "embedding"]),
            ("empty embedding", lambda: req([good, []]), ["queries[1]", "embedding"]),
            ("NaN in embedding", lambda: req([good, nan]), ["queries[1]", "embedding"]),
            ("+Inf in embedding_bytes", lambda: req([inf.tobytes()]), ["queries[0]", "embedding"]),
            ("-Inf in embedding", lambda: req([good, good, good, ninf]),
             ["queries[3]", "embedding"]),
            ("num_negatives 0", lambda: req([good], k=0), ["num_negatives"]),
            ("range_max < range_min + num_negatives",
             lambda: req([good], k=10, range_min=5, range_max=14), ["range_max"]),
            ("range_max 1 < num_negatives 2", lambda: req([good], k=2, range_max=1),
             ["range_max"]),
            ("negative temperature (SOFTMAX)",
             lambda: req([good], sampling=SOFTMAX, temperature=-0.5), ["temperature"]),
            ("negative temperature (TOP)", lambda: req([good], temperature=-1.0),
             ["temperature"]),
            ("no queries", lambda: req([]), ["queries"]),
        ]

    def check_inband_error(self, name, case, req, resp):
        _, _, fields = case
        errs = []
        if resp.request_id != req.request_id:
            errs.append(f"request_id {resp.request_id}, expected {req.request_id}")
        if resp.error.code != INVALID_ARGUMENT:
            errs.append(f"error.code {resp.error.code}, expected 3 (INVALID_ARGUMENT); "
                        f"message {resp.error.message!r}")
        missing = [f for f in fields if f not in resp.error.message]
        if missing:
            errs.append(f"message {resp.error.message!r} does not name {missing}")
        if len(resp.results):
            errs.append(f"{len(resp.results)} results in a failed response")
        self.checks.check(name, errs)

    def check_bad_inputs(self, tag, store, stub):
        pb, grpc = self.pb, self.grpc
        cases = self.bad_cases(store)
        good = query_spec(store.emb[5] + 0.01, use_bytes=True)
        # MineOnce: the RPC status.
        for name, make, fields in cases:
            r = make()
            r.request_id = self.request_id()
            try:
                stub.MineOnce(r, timeout=10)
                errs = ["succeeded, expected INVALID_ARGUMENT"]
            except grpc.RpcError as e:
                errs = []
                if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    errs.append(f"status {e.code()}, expected INVALID_ARGUMENT ({e.details()})")
                missing = [f for f in fields if f not in (e.details() or "")]
                if missing:
                    errs.append(f"message {e.details()!r} does not name {missing}")
            self.checks.check(f"{tag}: MineOnce bad input: {name}", errs)
        # Mine: in-band answers, interleaved with good requests on one stream,
        # sent and received one at a time (the stream must stay usable).
        stream = LiveStream(stub, timeout=60)
        try:
            for name, make, fields in cases:
                r = make()
                r.request_id = self.request_id()
                resp = stream.ask(r)
                sub = []
                if resp.request_id != r.request_id:
                    sub.append(f"request_id {resp.request_id}, expected {r.request_id}")
                if resp.error.code != INVALID_ARGUMENT:
                    sub.append(f"error.code {resp.error.code}, expected 3")
                missing = [f for f in fields if f not in resp.error.message]
                if missing:
                    sub.append(f"message {resp.error.message!r} does not name {missing}")
                o = opts_spec(3)
                g = to_proto(pb, self.request_id(), [good], o)
                resp2 = stream.ask(g)
                if resp2.request_id != g.request_id or resp2.error.code != 0 or \
                        len(resp2.results) != 1:
                    sub.append(f"the next good request failed: {resp2.error}")
                else:
                    sub += verify(store, good, o, got_from_pb(resp2.results[0]))
                self.checks.check(f"{tag}: Mine in-band bad input: {name}, stream still works",
                                  sub)
        except grpc.RpcError as e:
            self.checks.check(f"{tag}: Mine stream with bad inputs",
                              [f"stream died: {e.code()} {e.details()}"])
        finally:
            stream.close()

    # -------------------------------------------------- sampling distributions

    def check_sampling_distribution(self, tag, store, stub, version):
        """Mean rank of UNIFORM and SOFTMAX samples over many seeds, against the
        exact (UNIFORM) or simulated (SOFTMAX, weights exp(s/T) or exp(-s/T))
        expectation."""
        pb, grpc = self.pb, self.grpc
        W, k, reps = 60, 6, 60
        row = int(self.rng.integers(store.n))
        q = query_spec(store.emb[row] + np.float32(0.05 / math.sqrt(store.dim)),
                       pos_ids=[int(store.ids[row])])
        base = opts_spec(k, rmax=W)
        ref = store.reference(q, base)
        window = ref["window"]
        ws = ref["sd"][window]
        spread = float(abs(ws[-1] - ws[0])) or 1.0
        T = spread / 6.0
        for sampling in (UNIFORM, SOFTMAX):
            reqs, specs = [], []
            for seed in range(1, reps + 1):
                o = opts_spec(k, rmax=W, sampling=sampling, temperature=T, seed=seed * 7919)
                specs.append(o)
                reqs.append(to_proto(pb, self.request_id(), [q], o))
            try:
                resps = list(stub.Mine(iter(reqs), timeout=60))
            except grpc.RpcError as e:
                self.checks.check(f"{tag}: {SAMPLING_NAMES[sampling]} distribution",
                                  [f"stream failed: {e.code()} {e.details()}"])
                continue
            errs = []
            ranks, samples = [], set()
            for o, req, resp in zip(specs, reqs, resps):
                if resp.error.code or len(resp.results) != 1:
                    errs.append(f"request failed: {resp.error}")
                    continue
                got = got_from_pb(resp.results[0])
                errs += verify(store, q, o, got)
                ranks.append(np.mean(got["ranks"]))
                samples.add(tuple(got["ids"]))
            if len(ranks) == reps:
                observed = float(np.mean(ranks))
                if sampling == UNIFORM:
                    mean = (W - 1) / 2
                    var_one = (W * W - 1) / 12 / k * (W - k) / (W - 1)
                else:
                    logw = (ws if store.ip else -ws) / T
                    sim = np.random.default_rng(5)
                    g = logw[None, :] + sim.gumbel(size=(20000, len(ws)))
                    picks = np.argsort(-g, axis=1)[:, :k]  # successive sampling
                    per = picks.mean(axis=1)
                    mean, var_one = float(per.mean()), float(per.var())
                tol = 5 * math.sqrt(var_one / reps) + 0.3
                if abs(observed - mean) > tol:
                    errs.append(f"mean rank {observed:.2f} over {reps} seeds, expected "
                                f"{mean:.2f} +- {tol:.2f} (window {W}, k {k}, T {T:.4g})")
                if len(samples) < reps * 0.8:
                    errs.append(f"only {len(samples)} distinct samples for {reps} seeds")
            self.checks.check(f"{tag}: {SAMPLING_NAMES[sampling]} distribution over seeds",
                              errs)

    # -------------------------------------------------- the Python client

    def check_client(self, tag, store, server, version, scale):
        import hardneg
        rng = self.rng
        client = hardneg.Client(f"localhost:{server.port}")
        info = client.info()
        self.checks.check(f"{tag}: client info()", [] if (
            info.version == hardneg.IndexVersion(*version) and info.size == store.n
            and info.dim == store.dim) else [f"got {info}"])
        n = 6
        rows = rng.choice(store.n, size=n, replace=False)
        qs = (store.emb[rows] + 0.05 / math.sqrt(store.dim) *
              rng.standard_normal((n, store.dim))).astype(np.float32)
        pos_lists = [[int(store.ids[r])] + ([int(store.ids[(r + 1) % store.n])] if i % 2 else [])
                     for i, r in enumerate(rows)]
        pos_pad = np.full((n, 2), -1, dtype=np.int64)
        for i, p in enumerate(pos_lists):
            pos_pad[i, :len(p)] = p
        labels = [None if i % 3 == 0 else (0 if i % 3 == 1 else
                                           int(store.labels[rows[i]]) if store.labels is not None else 5)
                  for i in range(n)]
        qids = [None, int(store.ids[rows[1]]), None, 1 << 50, None, None]
        pscores = np.array([np.nan, 0.0, np.nan, -0.5, np.nan, np.nan], dtype=np.float32)
        specs = [query_spec(qs[i], pos_lists[i],
                            [] if np.isnan(pscores[i]) else [pscores[i]],
                            labels[i], qids[i]) for i in range(n)]
        variants = [
            ("TOP, padded positive_ids", pos_pad, dict(num_negatives=7, absolute_margin=0.0),
             opts_spec(7, abs_m=0.0)),
            ("UNIFORM, list positive_ids, embeddings", pos_lists,
             dict(num_negatives=5, range_max=40, sampling="uniform", seed=4,
                  return_embeddings=True),
             opts_spec(5, rmax=40, sampling=UNIFORM, seed=4, ret_emb=True)),
            ("SOFTMAX, bounds", pos_lists,
             dict(num_negatives=4, range_min=2, range_max=30, sampling="softmax",
                  temperature=0.5 * scale, seed=8, max_score=0.0, min_score=None),
             opts_spec(4, rmin=2, rmax=30, sampling=SOFTMAX, temperature=0.5 * scale,
                       seed=8, max_score=0.0)),
        ]
        for name, pos_arg, kwargs, o in variants:
            errs = []
            try:
                res = client.mine(qs, positive_ids=pos_arg, labels=labels, query_ids=qids,
                                  positive_scores=pscores, **kwargs)
                k = o["k"]
                for arr, dt in ((res.ids, np.int64), (res.scores, np.float32),
                                (res.ranks, np.int64), (res.labels, np.int64)):
                    if arr.shape != (n, k) or arr.dtype != dt:
                        errs.append(f"array {arr.dtype}{arr.shape}, expected {np.dtype(dt)}{(n, k)}")
                if res.shortfall.shape != (n,) or res.positive_score.shape != (n,):
                    errs.append("shortfall/positive_score shape")
                if res.index != hardneg.IndexVersion(*version):
                    errs.append(f"index {res.index}")
                if o["ret_emb"] and (res.embeddings is None or
                                     res.embeddings.shape != (n, k, store.dim)):
                    errs.append("embeddings missing or misshapen")
                if not errs:
                    for i in range(n):
                        errs += [f"query {i}: {e}" for e in
                                 verify(store, specs[i], o, got_from_client(res, i))]
            except Exception as e:  # noqa: BLE001
                errs.append(f"{type(e).__name__}: {e}")
            self.checks.check(f"{tag}: client mine(): {name}", errs)
        # Errors: MineError with the code and the field.
        errs = []
        try:
            client.mine(qs[:, :-1], num_negatives=3)
            errs.append("wrong dim accepted")
        except hardneg.MineError as e:
            if e.code != INVALID_ARGUMENT or "embedding" not in e.message:
                errs.append(f"MineError {e.code} {e.message!r}")
        self.checks.check(f"{tag}: client mine() wrong dim raises MineError(3)", errs)
        # A stream: send/recv, an in-band error in the middle, then more.
        errs = []
        try:
            with client.stream(num_negatives=5) as s:
                r1 = s.send(qs[:2], positive_ids=pos_lists[:2])
                r2 = s.send(qs[:2], num_negatives=0)
                r3 = s.send(qs[2:4], positive_ids=pos_lists[2:4], sampling="uniform",
                            range_max=50, seed=1)
                a = s.recv()
                try:
                    s.recv()
                    errs.append("num_negatives 0 accepted on the stream")
                except hardneg.MineError as e:
                    if e.code != INVALID_ARGUMENT or e.request_id != r2 or \
                            "num_negatives" not in e.message:
                        errs.append(f"in-band MineError {e.code} {e.request_id} {e.message!r}")
                c = s.recv()
                if (a.request_id, c.request_id) != (r1, r3):
                    errs.append(f"request ids {(a.request_id, c.request_id)}, expected {(r1, r3)}")
                for i in range(2):
                    errs += verify(store, query_spec(qs[i], pos_lists[i]), opts_spec(5),
                                   got_from_client(a, i))
                    errs += verify(store, query_spec(qs[2 + i], pos_lists[2 + i]),
                                   opts_spec(5, rmax=50, sampling=UNIFORM, seed=1),
                                   got_from_client(c, i))
            batches = [dict(queries=qs[i:i + 2], positive_ids=pos_lists[i:i + 2])
                       for i in range(0, n, 2)]
            streamed = list(client.mine_iter(batches, max_in_flight=2, num_negatives=6,
                                             sampling="softmax", seed=3, range_max=25))
            if len(streamed) != len(batches):
                errs.append(f"mine_iter gave {len(streamed)} results for {len(batches)}")
            for b, r in zip(batches, streamed):
                once = client.mine(b["queries"], b["positive_ids"], num_negatives=6,
                                   sampling="softmax", seed=3, range_max=25)
                if not (np.array_equal(once.ids, r.ids) and np.array_equal(once.ranks, r.ranks)):
                    errs.append(f"mine_iter {r.ids.tolist()} != mine {once.ids.tolist()}")
        except Exception as e:  # noqa: BLE001
            errs.append(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        self.checks.check(f"{tag}: client stream() and mine_iter()", errs)
        client.close()

    # -------------------------------------------------- checkpoint swap

    def check_swap(self, tag, store, stub, ckpt, version, scale):
        pb, grpc = self.pb, self.grpc
        new = make_store(self.rng, tag + "-next", store.step + 1000, store.metric,
                         store.n // 2 + 17, store.dim, store.labels is not None, False)
        stream = LiveStream(stub, timeout=60)
        errs = []
        try:
            queries, o = self.random_request(store, scale)
            r = to_proto(pb, self.request_id(), queries, o)
            self.check_response(f"{tag}: stream before the swap", store, queries, o, r,
                                stream.ask(r), version)
            new.write(ckpt)
            deadline = time.time() + 30
            info = None
            while time.time() < deadline:
                info = stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10)
                if info.version.name == new.name:
                    break
                time.sleep(0.1)
            if info is None or info.version.name != new.name:
                errs.append(f"the newer checkpoint {new.name} is not served after 30 s "
                            f"(still {info.version.name if info else None})")
            else:
                if info.version.sequence <= version[1]:
                    errs.append(f"sequence {info.version.sequence} did not rise from {version[1]}")
                if info.size != new.n or info.step != new.step:
                    errs.append(f"info size {info.size} step {info.step}, expected "
                                f"{new.n} {new.step}")
            self.checks.check(f"{tag}: a newer checkpoint is swapped in", errs)
            if errs:
                return
            new_version = (info.version.name, info.version.sequence)
            scale2 = scale
            for i in range(12):
                queries, o = self.random_request(new, scale2)
                r = to_proto(pb, self.request_id(), queries, o)
                if i % 2:
                    resp = stream.ask(r)
                    name = f"{tag}: after the swap, old stream request {i}"
                else:
                    resp = stub.MineOnce(r, timeout=30)
                    name = f"{tag}: after the swap, MineOnce {i}"
                self.check_response(name, new, queries, o, r, resp, new_version)
        except grpc.RpcError as e:
            self.checks.check(f"{tag}: swap", [f"RPC failed: {e.code()} {e.details()}"])
        finally:
            stream.close()


def same_results(first, again, queries, o):
    errs = []
    if again.error.code:
        return [f"repeat failed: {again.error}"]
    a = [r.SerializeToString(deterministic=True) for r in first.results]
    b = [r.SerializeToString(deterministic=True) for r in again.results]
    if a != b:
        for i, (x, y) in enumerate(zip(first.results, again.results)):
            if x != y:
                errs.append(f"queries[{i}]: first {[n.id for n in x.negatives]}, "
                            f"again {[n.id for n in y.negatives]} "
                            f"({SAMPLING_NAMES[o['sampling']]}, seed {o['seed']})")
                break
        errs.append("request: " + describe(queries, o))
    return errs


CONFIGS = [
    dict(name="ip-labels", metric="inner_product", n=4000, dim=32, labels=True,
         normalize=False, shards=2, step=100, streams=6, per_stream=16, once=60,
         client=True),
    dict(name="l2-labels", metric="l2", n=3000, dim=16, labels=True, normalize=False,
         shards=1, step=7, streams=5, per_stream=16, once=50, negative_ids=True,
         client=True),
    dict(name="ip-nolabels", metric="inner_product", n=2500, dim=64, labels=False,
         normalize=True, shards=3, step=12000, streams=5, per_stream=16, once=50,
         swap=True),
    dict(name="l2-nolabels", metric="l2", n=5000, dim=24, labels=False, normalize=True,
         shards=2, step=1, streams=5, per_stream=16, once=50),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=os.environ.get("HARDNEG_SERVER"),
                    help="path of hardneg-server (or $HARDNEG_SERVER)")
    ap.add_argument("--proto_dir", default=os.path.join(ROOT, "proto"))
    ap.add_argument("--python_dir", default=os.path.join(ROOT, "python"),
                    help="the client package (python/hardneg) to test")
    ap.add_argument("--work_dir", default=None,
                    help="checkpoints, stubs and server logs (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--only", default=None, help="run only the configs whose name contains this")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if not args.server or not os.access(args.server, os.X_OK):
        print(f"--server (or $HARDNEG_SERVER) must name the hardneg-server binary; "
              f"got {args.server!r}")
        print("0 passed, 1 failed")
        return 1
    tmp = None
    if args.work_dir is None:
        tmp = tempfile.mkdtemp(prefix="hardneg-e2e-")
        args.work_dir = tmp
    os.makedirs(args.work_dir, exist_ok=True)
    checks = Checks(args.verbose)
    start = time.time()
    stubs = checked_stubs(checks, args.proto_dir, args.work_dir, args.python_dir)
    if stubs is None:
        return 1
    run = SemanticsRun(args, checks, *stubs)
    try:
        for cfg in CONFIGS:
            if args.only and args.only not in cfg["name"]:
                continue
            t = time.time()
            run.run_config(cfg)
            print(f"   {cfg['name']} done in {time.time() - t:.1f}s "
                  f"({checks.summary()} so far)")
    finally:
        kill_leftovers()
    if tmp is not None and checks.failed == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    elif checks.failed:
        print(f"server logs and checkpoints: {args.work_dir}")
    if args.verbose or checks.failed:
        print("coverage: " + ", ".join(f"{k}: {v}" for k, v in sorted(COVERAGE.items())))
    print(f"elapsed {time.time() - start:.1f}s")
    print(checks.summary())
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the end-to-end checks (check_semantics.py, check_sharded.py) share.

The check counts, the stubs and what a run starts from, checkpoints written
with numpy (their content, and scores in float64), request specs (random
margins among them) and their MineRequests, a Mine stream kept open,
hardneg-server / hardneg-router processes, and health. The miner stubs,
free ports and log tails come from tests/monitoring/monitoring_common.py
(imported as `mc`), as the hostile harness takes them. Standard library,
numpy and grpcio only.
"""

import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "monitoring"))
import monitoring_common as mc  # noqa: E402

TOP, UNIFORM, SOFTMAX = 0, 1, 2
SAMPLING_NAMES = {TOP: "TOP", UNIFORM: "UNIFORM", SOFTMAX: "SOFTMAX"}
INVALID_ARGUMENT = 3
# Labels rarely given, besides 0..39: a negative one and large ones.
RARE_LABELS = (-5, 1 << 40, 123456789)


# ------------------------------------------------------------------ results


class Checks:
    """Counts named checks; prints every failure (and, verbose, every pass)."""

    def __init__(self, verbose=False):
        self.passed = 0
        self.failed = 0
        self.verbose = verbose

    def check(self, name, errors):
        """errors: a list of strings (empty means pass) or a bool."""
        if errors is True or errors == []:
            self.passed += 1
            if self.verbose:
                print(f"  ok   {name}")
            return True
        if errors is False:
            errors = ["failed"]
        self.failed += 1
        print(f"FAIL {name}")
        for e in errors[:8]:
            print(f"       {e}")
        if len(errors) > 8:
            print(f"       ... {len(errors) - 8} more")
        sys.stdout.flush()
        return False

    def summary(self):
        return f"{self.passed} passed, {self.failed} failed"


# ------------------------------------------------------------------ stubs


def load_stubs(proto_dir, work_dir, python_dir=None):
    """(grpc, miner_pb2, miner_pb2_grpc, health_pb2), generated into work_dir.

    The miner stubs are monitoring_common's, under work_dir/py; with
    python_dir, in a copy of its client package (python/hardneg), so that
    `import hardneg` gives both the client and the stubs. The health stubs
    go under work_dir/health and are loaded by path: a `grpc` directory on
    sys.path would clash with grpcio."""
    py = os.path.join(work_dir, "py")
    shutil.rmtree(py, ignore_errors=True)
    if python_dir is not None:
        shutil.copytree(os.path.join(python_dir, "hardneg"), os.path.join(py, "hardneg"),
                        ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    grpc, miner_pb2, miner_pb2_grpc = mc.load_stubs(proto_dir, work_dir)
    health = os.path.join(work_dir, "health")
    shutil.rmtree(health, ignore_errors=True)
    os.makedirs(health)
    mc.protoc_python(proto_dir, health, os.path.join("grpc", "health", "v1", "health.proto"))
    spec = importlib.util.spec_from_file_location(
        "e2e_health_pb2", os.path.join(health, "grpc", "health", "v1", "health_pb2.py"))
    health_pb2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(health_pb2)
    return grpc, miner_pb2, miner_pb2_grpc, health_pb2


def checked_stubs(checks, proto_dir, work_dir, python_dir=None):
    """load_stubs, or None once its failure is counted and the counts are
    printed: without stubs nothing else can run."""
    try:
        return load_stubs(proto_dir, work_dir, python_dir)
    except Exception:  # noqa: BLE001
        checks.check("generate and import the stubs", [traceback.format_exc()])
        print(checks.summary())
        return None


class Run:
    """What a script's run starts from: its command line, its checks, the
    stubs, and its random source (seeded by --seed)."""

    def __init__(self, args, checks, grpc, pb, pb_grpc, health_pb2):
        self.args, self.checks = args, checks
        self.grpc, self.pb, self.pb_grpc, self.health_pb2 = grpc, pb, pb_grpc, health_pb2
        self.rng = np.random.default_rng(args.seed)


# ------------------------------------------------------------------ data


class Corpus:
    """A checkpoint's content: embeddings, ids and labels (or None) under a
    metric; their scores against a query, and the checkpoint's files."""

    def __init__(self, name, step, metric, emb, ids, labels):
        self.name, self.step, self.metric = name, step, metric
        self.emb = np.ascontiguousarray(emb, dtype=np.float32)
        self.e64 = self.emb.astype(np.float64)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.n, self.dim = self.emb.shape
        self.ip = metric == "inner_product"
        self.row = {int(i): r for r, i in enumerate(self.ids)}
        assert len(self.row) == self.n, "ids must be unique"
        # The labels a query may name (some, where the candidates have none).
        self.label_values = (sorted(set(self.labels.tolist()))
                             if self.labels is not None else [0, 1, 2, 7])

    def scores64(self, q32):
        """The scores of a float32 query in float64: inner products, or
        squared L2 distances."""
        q = np.asarray(q32, dtype=np.float32).astype(np.float64)
        if self.ip:
            # einsum, not BLAS: steady under load (no thread pool).
            return np.einsum("ij,j->i", self.e64, q)
        d = self.e64 - q
        return np.einsum("ij,ij->i", d, d)

    def write(self, root, files=1):
        """A checkpoint directory <root>/<name> in `files` .npy pairs (triples
        with labels); the manifest is renamed in last."""
        d = os.path.join(root, self.name)
        os.makedirs(d)
        bounds = np.linspace(0, self.n, files + 1).astype(int)
        entries = []
        for f in range(files):
            a, b = bounds[f], bounds[f + 1]
            e = {"embeddings": f"embeddings-{f:05d}.npy", "ids": f"ids-{f:05d}.npy"}
            np.save(os.path.join(d, e["embeddings"]), self.emb[a:b])
            np.save(os.path.join(d, e["ids"]), self.ids[a:b])
            if self.labels is not None:
                e["labels"] = f"labels-{f:05d}.npy"
                np.save(os.path.join(d, e["labels"]), self.labels[a:b])
            entries.append(e)
        manifest = {"name": self.name, "step": self.step, "dim": self.dim,
                    "metric": self.metric, "shards": entries}
        tmp = os.path.join(d, "manifest.json.tmp")
        with open(tmp, "w") as f:
            json.dump(manifest, f)
        os.rename(tmp, os.path.join(d, "manifest.json"))


def add_duplicates(rng, emb):
    """Exact duplicate vectors under different ids (ties only the id breaks),
    and a few triples."""
    n = len(emb)
    ndup = n // 16
    targets = rng.choice(n, size=ndup, replace=False)
    sources = rng.choice(np.setdiff1d(np.arange(n), targets), size=ndup)
    emb[targets] = emb[sources]
    for t in range(ndup // 4):
        emb[targets[t]] = emb[sources[0]]


def random_labels(rng, n, rare=RARE_LABELS):
    """n labels in 0..39, one in 50 of them (at least one) among `rare`."""
    labels = rng.integers(0, 40, size=n).astype(np.int64)
    odd = rng.choice(n, size=max(1, n // 50), replace=False)
    labels[odd] = rng.choice(rare, size=len(odd))
    return labels


def find_duplicate(c):
    """Two rows with identical vectors, the smaller id first."""
    _, inverse, counts = np.unique(c.emb, axis=0, return_inverse=True, return_counts=True)
    group = int(np.argmax(counts == 2)) if np.any(counts == 2) else int(np.argmax(counts))
    rows = np.nonzero(inverse.reshape(-1) == group)[0][:2]
    a, b = sorted(rows.tolist(), key=lambda r: c.ids[r])
    return a, b


# ------------------------------------------------------------------ requests


def opts_spec(k, rmin=0, rmax=0, max_score=None, min_score=None, abs_m=None,
              rel_r=None, sampling=TOP, temperature=0.0, seed=0, ret_emb=False,
              allow_partial=False, index_version=""):
    return dict(k=k, rmin=rmin, rmax=rmax, max_score=max_score, min_score=min_score,
                abs_m=abs_m, rel_r=rel_r, sampling=sampling, temperature=temperature,
                seed=seed, ret_emb=ret_emb, allow_partial=allow_partial,
                index_version=index_version)


def query_spec(vec, pos_ids=(), pos_scores=(), label=None, qid=None, use_bytes=False):
    return dict(vec=np.asarray(vec, dtype=np.float32), pos_ids=[int(i) for i in pos_ids],
                pos_scores=[float(np.float32(x)) for x in pos_scores],
                label=label, qid=qid, use_bytes=use_bytes)


def random_margins(rng, scale, absolute_odds=(0.15, 0.35, 0.45)):
    """(absolute_margin, relative_margin) of a random request, each None
    (unset), 0, positive or negative. absolute_odds: where the absolute
    margin's draw stops being 0, positive and negative (the relative one's
    are 0.1, 0.3 and 0.4); scale: the spread of the scores."""
    abs_m = rel_r = None
    u = rng.random()
    if u < absolute_odds[0]:
        abs_m = 0.0
    elif u < absolute_odds[1]:
        abs_m = float(rng.uniform(0, 0.5) * scale)
    elif u < absolute_odds[2]:
        abs_m = -float(rng.uniform(0, 0.3) * scale)
    u = rng.random()
    if u < 0.1:
        rel_r = 0.0
    elif u < 0.3:
        rel_r = float(rng.uniform(0, 0.5))
    elif u < 0.4:
        rel_r = -float(rng.uniform(0, 0.2))
    return abs_m, rel_r


def to_proto(pb, request_id, queries, o, flip_encoding=False):
    """The MineRequest of query specs and an options spec; flip_encoding
    sends each embedding in the other encoding than its spec says."""
    req = pb.MineRequest(request_id=request_id)
    opt = req.options
    opt.num_negatives = o["k"]
    opt.range_min = o["rmin"]
    opt.range_max = o["rmax"]
    for field, key in (("max_score", "max_score"), ("min_score", "min_score"),
                       ("absolute_margin", "abs_m"), ("relative_margin", "rel_r")):
        if o[key] is not None:
            setattr(opt, field, o[key])
    opt.sampling = o["sampling"]
    opt.temperature = o["temperature"]
    opt.seed = o["seed"]
    opt.return_embeddings = o["ret_emb"]
    opt.allow_partial = o["allow_partial"]
    opt.index_version = o["index_version"]
    for q in queries:
        m = req.queries.add()
        if q["use_bytes"] != flip_encoding:
            m.embedding_bytes = q["vec"].astype("<f4").tobytes()
        else:
            m.embedding.extend(q["vec"].tolist())
        m.positive_ids.extend(q["pos_ids"])
        m.positive_scores.extend(q["pos_scores"])
        if q["label"] is not None:
            m.label = q["label"]
        if q["qid"] is not None:
            m.query_id = q["qid"]
    return req


def raw_request(pb, embeddings, k=5, **options):
    """A MineRequest (request_id 0) for the invalid inputs no spec can say:
    `embeddings` are lists of floats (sent as embedding) or bytes (sent as
    embedding_bytes), `options` MiningOptions fields."""
    r = pb.MineRequest(request_id=0)
    r.options.num_negatives = k
    for key, v in options.items():
        setattr(r.options, key, v)
    for e in embeddings:
        m = r.queries.add()
        if isinstance(e, bytes):
            m.embedding_bytes = e
        else:
            m.embedding.extend(e)
    return r


def describe(queries, o, which=None):
    """The request, for a failure report: options, and the queries `which`
    (default: the first three)."""
    which = list(which or range(min(3, len(queries))))[:3]
    qs = []
    for i in which:
        q = queries[i]
        qs.append(f"queries[{i}]={{pos_ids={q['pos_ids'][:6]}{'...' if len(q['pos_ids']) > 6 else ''} "
                  f"({len(q['pos_ids'])}), pos_scores={q['pos_scores']}, label={q['label']}, "
                  f"query_id={q['qid']}, bytes={q['use_bytes']}, "
                  f"vec[:3]={q['vec'][:3].tolist()}}}")
    return f"options={o} ({len(queries)} queries) {' '.join(qs)}"


class LiveStream:
    """A Mine stream kept open: one request sent, its answer read, at a time."""

    def __init__(self, stub, timeout):
        self.requests = queue.Queue()
        self.call = stub.Mine(iter(self.requests.get, None), timeout=timeout)

    def ask(self, req):
        self.requests.put(req)
        return next(self.call)

    def close(self):
        self.requests.put(None)
        try:
            for _ in self.call:
                pass
        except Exception:  # noqa: BLE001
            pass


def health_status(grpc, health_pb2, channel, service="", timeout=10):
    """grpc.health.v1.Health/Check of `service`: SERVING, NOT_SERVING, ...,
    or the RPC's error (its code name and details)."""
    h = health_pb2
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=h.HealthCheckRequest.SerializeToString,
        response_deserializer=h.HealthCheckResponse.FromString)
    try:
        r = check(h.HealthCheckRequest(service=service), timeout=timeout)
        return h.HealthCheckResponse.ServingStatus.Name(r.status)
    except grpc.RpcError as e:
        return f"{e.code().name} {e.details()}"


# ------------------------------------------------------------------ processes


STARTED = []  # every process started, killed at exit if still running


def kill_leftovers():
    for p in STARTED:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


class Proc:
    """A server or router process, its output in <log_dir>/<tag>.std{out,err}
    (emptied first, appended to across restarts)."""

    def __init__(self, tag, argv, log_dir):
        self.tag, self.argv = tag, argv
        self.out_path = os.path.join(log_dir, f"{tag}.stdout")
        self.err_path = os.path.join(log_dir, f"{tag}.stderr")
        for path in (self.out_path, self.err_path):
            open(path, "w").close()
        self.port = None
        self.start()

    def start(self):
        self.out = open(self.out_path, "a")
        self.err = open(self.err_path, "a")
        self.out_offset = self.out.tell()
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen(self.argv, stdout=self.out, stderr=self.err, env=env)
        STARTED.append(self)

    def wait_listening(self, timeout=60):
        """The port of the server's `listening on <port>` line (also kept as
        self.port)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.out_path) as f:
                f.seek(self.out_offset)
                for line in f:
                    if line.startswith("listening on "):
                        self.port = int(line.split()[2])
                        return self.port
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.tag} did not print 'listening on' (exit "
                           f"{self.proc.poll()}); stderr: {self.stderr_tail()}")

    def stderr_tail(self, n=15):
        return mc.tail(self.err_path, n)

    def close_logs(self):
        self.out.close()
        self.err.close()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.close_logs()

    def stop(self, timeout=30):
        """SIGTERM; the exit code, or a description of what went wrong."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGCONT)  # in case it was stopped
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = f"no exit {timeout}s after SIGTERM (killed: {self.proc.wait()})"
        self.close_logs()
        return rc

"""Shared helpers of the monitoring tests (check_static.py, prometheus_e2e.py).

Checkpoints written with numpy, a real hardneg-server started on port 0s,
its /metrics parsed, gRPC stubs generated with protoc, and the metric names
a PromQL expression refers to. Standard library + numpy + grpcio only
(Debian's python3-numpy, python3-grpcio, python3-protobuf).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MONITORING = os.path.join(ROOT, "deploy", "monitoring")


class Failure(Exception):
    """A check failed; the message says what and why."""


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------ processes

STARTED = []  # every process started here; stop_all() ends those still running


def stop_all():
    for proc in STARTED:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                proc.kill()
                proc.wait()


def install_signal_cleanup(deadline_seconds):
    """SIGTERM/SIGINT (^C) stop our children, then exit; so does running
    past deadline_seconds (SIGALRM), which fails the test. Children also get
    SIGTERM if this process dies (die_with_parent)."""
    def handler(signum, _frame):
        if signum == signal.SIGALRM:
            log(f"FAIL: the test ran past its {deadline_seconds} s deadline")
        stop_all()
        sys.exit(1 if signum == signal.SIGALRM else 128 + signum)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGALRM, handler)
    signal.alarm(deadline_seconds)


try:  # loaded here, not in the forked child
    import ctypes
    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """Popen preexec_fn: the child gets SIGTERM when this process dies, even
    by SIGKILL (ctest's timeout); PR_SET_PDEATHSIG is kept across exec."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode("utf-8", errors="replace")


# ------------------------------------------------------------------ checkpoints


def write_checkpoint(root, name, step, n, dim, seed, broken=False):
    """DIR/<name>/ with one shard; manifest.json written last (renamed in).
    broken=True writes duplicate ids, which the server must reject."""
    import numpy as np
    rng = np.random.default_rng(seed)
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    if broken:
        ids[1] = ids[0]
    np.save(os.path.join(d, "embeddings-00000.npy"), emb)
    np.save(os.path.join(d, "ids-00000.npy"), ids)
    manifest = {"name": name, "step": step, "dim": dim, "metric": "inner_product",
                "shards": [{"embeddings": "embeddings-00000.npy",
                            "ids": "ids-00000.npy"}]}
    tmp = os.path.join(d, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f)
    os.rename(tmp, os.path.join(d, "manifest.json"))
    return emb


class Server:
    """hardneg-server --grpc_port 0 --metrics_port 0; waits for both port
    lines (`listening on <port>`, `metrics on <port>`) on its stdout."""

    def __init__(self, binary, ckpt_dir, log_dir, extra=(), timeout=60):
        if not os.access(binary, os.X_OK):
            raise Failure(f"hardneg-server binary not found: {binary}")
        self.out_path = os.path.join(log_dir, "server.stdout")
        self.err_path = os.path.join(log_dir, "server.stderr")
        self.out = open(self.out_path, "w")
        self.err = open(self.err_path, "w")
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        cmd = [binary, f"--checkpoints={ckpt_dir}", "--grpc_port=0",
               "--metrics_port=0", "--host=127.0.0.1", *extra]
        log("starting: " + " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, env=env,
                                     preexec_fn=die_with_parent)
        STARTED.append(self.proc)
        self.grpc_port = None
        self.metrics_port = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.out_path) as f:
                for line in f:
                    words = line.split()
                    if line.startswith("listening on ") and len(words) == 3:
                        self.grpc_port = int(words[2])
                    elif line.startswith("metrics on ") and len(words) == 3:
                        self.metrics_port = int(words[2])
            if self.grpc_port and self.metrics_port:
                log(f"hardneg-server: gRPC on {self.grpc_port}, metrics on "
                    f"{self.metrics_port}")
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        rc = self.proc.poll()
        self.stop()
        raise Failure(
            "hardneg-server did not print both `listening on <port>` and "
            f"`metrics on <port>` (exit code {rc}; is --metrics_port "
            f"implemented?)\nstdout:\n{tail(self.out_path)}\nstderr:\n"
            f"{tail(self.err_path)}")

    @property
    def metrics_url(self):
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape(self):
        return http_get(self.metrics_url)

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.out.close()
        self.err.close()
        return rc


# ------------------------------------------------------------------ gRPC stubs


def protoc_python(proto_dir, out, proto):
    """Generates the Python messages and gRPC stubs of `proto` (a path under
    proto_dir) under `out` with the system protoc and grpc_python_plugin."""
    plugin = os.environ.get("GRPC_PYTHON_PLUGIN", "/usr/bin/grpc_python_plugin")
    protoc = os.environ.get("PROTOC", "/usr/bin/protoc")
    for tool in (plugin, protoc):
        if not os.access(tool, os.X_OK):
            raise Failure(f"{tool} is missing (protobuf-compiler, "
                          "protobuf-compiler-grpc)")
    subprocess.run([protoc, "-I", proto_dir, f"--python_out={out}",
                    f"--grpc_out={out}", f"--plugin=protoc-gen-grpc={plugin}",
                    os.path.join(proto_dir, proto)],
                   check=True, timeout=60)


def load_stubs(proto_dir, work_dir):
    """Generates hardneg/v1/miner_pb2{,_grpc}.py under work_dir/py with the
    system protoc and grpc_python_plugin; returns (grpc, pb2, pb2_grpc)."""
    try:
        import grpc  # noqa: F401
    except ImportError as e:
        raise Failure(f"python3-grpcio is not installed ({e})")
    out = os.path.join(work_dir, "py")
    os.makedirs(os.path.join(out, "hardneg", "v1"), exist_ok=True)
    for init in ("hardneg/__init__.py", "hardneg/v1/__init__.py"):
        open(os.path.join(out, init), "a").close()
    protoc_python(proto_dir, out, os.path.join("hardneg", "v1", "miner.proto"))
    sys.path.insert(0, out)
    import grpc
    from hardneg.v1 import miner_pb2, miner_pb2_grpc
    return grpc, miner_pb2, miner_pb2_grpc


def mine_request(pb, request_id, queries, num_negatives=5):
    """queries: float32 array [b, dim] (sent as embedding_bytes)."""
    req = pb.MineRequest(request_id=request_id)
    req.options.num_negatives = num_negatives
    for q in queries:
        req.queries.add(embedding_bytes=q.astype("<f4").tobytes())
    return req


# ------------------------------------------------------------------ exposition

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text):
    """Prometheus text format -> (types, samples): types maps family name to
    its # TYPE; samples is a list of (name, {label: value}, float)."""
    types = {}
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            raise Failure(f"unparsable exposition line: {line!r}")
        labels = dict(LABEL_RE.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def exported_names(text):
    """Every name a PromQL query can select from this exposition: sample
    names (x_bucket, x_sum, x_count included), plus family names, plus the
    suffixed series of histogram/summary families (they exist in Prometheus
    once the family has a child, even if none was exposed at this scrape)."""
    types, samples = parse_exposition(text)
    names = {s[0] for s in samples} | set(types)
    for family, kind in types.items():
        if kind == "histogram":
            names |= {family + "_bucket", family + "_sum", family + "_count"}
        elif kind == "summary":
            names |= {family + "_sum", family + "_count"}
    return names, types, samples


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in types:
            return name[: -len(suffix)]
    return name


def value(samples, name, **labels):
    """Sum of the samples called name whose labels include `labels`."""
    total = 0.0
    found = False
    for n, ls, v in samples:
        if n == name and all(ls.get(k) == w for k, w in labels.items()):
            total += v
            found = True
    return total if found else None


# ------------------------------------------------------------------ PromQL

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on",
            "ignoring", "group_left", "group_right", "inf", "nan",
            "atan2"}
GRAFANA_VARS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h",
                "__range_s": "3600", "__interval_ms": "60000", "job": ".+",
                "instance": ".+"}


def substitute_grafana(expr):
    """Grafana's $var / ${var} / [[var]] -> something PromQL parses."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return GRAFANA_VARS.get(name, ".+")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", repl, expr)


def promql_metric_names(expr):
    """The metric names an expression selects (functions, keywords, labels,
    strings, durations and Grafana variables left out)."""
    names = set(re.findall(r'__name__\s*=\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"', expr))
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)          # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)         # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
               " ", s)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)  # Grafana variables
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard_queries(dashboard):
    """(where, expr, is_template) for every PromQL query in a Grafana
    dashboard: panel targets (rows' nested panels too), annotations, and
    template variables (label_values(metric, label) -> metric)."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []) or []:
                if t.get("expr"):
                    out.append((f"panel {p.get('id')} {p.get('title')!r} "
                                f"target {t.get('refId')}", t["expr"], False))
            walk(p.get("panels", []) or [])

    walk(dashboard.get("panels", []))
    for a in dashboard.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"annotation {a.get('name')!r}", a["expr"], False))
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        q = (q or "").strip()
        m = re.match(r"^label_values\((.*),\s*[a-zA-Z_]\w*\s*\)$", q)
        if m:
            out.append((f"variable ${v.get('name')}", m.group(1), True))
        elif re.match(r"^label_values\(\s*[a-zA-Z_]\w*\s*\)$", q):
            continue
        else:
            m = re.match(r"^query_result\((.*)\)$", q)
            out.append((f"variable ${v.get('name')}", m.group(1) if m else q, True))
    return out


def rule_queries(rules_doc):
    """(where, expr) for every rule of a Prometheus rules file (parsed YAML)."""
    out = []
    for group in rules_doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            out.append((f"rule {group.get('name')}/{name}", rule["expr"]))
    return out


def load_dashboard():
    with open(os.path.join(MONITORING, "grafana-dashboard.json")) as f:
        return json.load(f)


def load_rules():
    import yaml
    with open(os.path.join(MONITORING, "alert-rules.yaml")) as f:
        return yaml.safe_load(f)


def parse_args_and_work_dir(doc, prefix, add_arguments=None,
                            deadline_seconds=100):
    """The command line the Python tests share, with a fresh work dir.

    add_arguments(parser) adds a test's own flags; deadline_seconds (an int,
    or a function of the parsed args) arms the self-timeout cleanup.
    Returns (args, work_dir).
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--server", required=True, help="hardneg-server binary")
    parser.add_argument("--proto_dir", default=os.path.join(ROOT, "proto"))
    parser.add_argument("--work_dir", default="")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    install_signal_cleanup(deadline_seconds(args) if callable(deadline_seconds)
                           else deadline_seconds)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix=prefix)
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)
    return args, work_dir

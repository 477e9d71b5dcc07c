"""What the hostile harness's checks share: the check runner, servers (their
memory, SIGKILL, timed SIGTERM), channels, status codes, checkpoints placed
by hard links, sparse .npy files, and polling with a deadline.

Processes, ports, stubs and well-formed checkpoints come from
tests/monitoring/monitoring_common.py (imported as `mc`); this module adds
only what the fault and load checks need on top. Standard library, numpy and
grpcio only.
"""

import json
import os
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "monitoring"))
import monitoring_common as mc  # noqa: E402

Failure = mc.Failure
log = mc.log

MAX_MESSAGE = 64 << 20
DIM = 64


# ------------------------------------------------------------------ checks


class Checks:
    """Runs named checks. A check is a function returning what it measured
    (a string) or raising Failure; each prints one PASS or FAIL line."""

    def __init__(self, only=()):
        self.passed = []
        self.failed = []
        self.current = None
        self.only = only  # names to run (substrings); empty: all

    def run(self, name, fn, *args):
        if self.only and not any(o in name for o in self.only):
            return
        self.current = name
        start = time.monotonic()
        try:
            measured = fn(*args)
        except Failure as e:
            self.fail(name, str(e), start)
        except Exception as e:  # a harness or client error is a failure too
            self.fail(name, f"{type(e).__name__}: {e}\n"
                      f"{traceback.format_exc(limit=6)}", start)
        else:
            self.passed.append(name)
            log(f"PASS {name} ({time.monotonic() - start:.1f} s): {measured}")
        self.current = None

    def fail(self, name, why, start=None):
        self.failed.append(name)
        took = f" ({time.monotonic() - start:.1f} s)" if start else ""
        log(f"FAIL {name}{took}: {why}")

    def summary(self):
        if self.failed:
            log("failed: " + ", ".join(self.failed))
        return f"{len(self.passed)} passed, {len(self.failed)} failed"


def expect(condition, message):
    if not condition:
        raise Failure(message)


# ------------------------------------------------------------------ servers


class Server(mc.Server):
    """monitoring_common's Server with its logs in their own directory, its
    memory, a SIGKILL, and a timed SIGTERM."""

    def __init__(self, binary, ckpt_dir, log_dir, extra=(), timeout=60):
        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        super().__init__(binary, ckpt_dir, log_dir, extra, timeout)
        self.target = f"127.0.0.1:{self.grpc_port}"

    def rss(self):
        """Resident memory in bytes (VmRSS of /proc/<pid>/status)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise Failure("no VmRSS in /proc/<pid>/status")

    def alive(self):
        return self.proc.poll() is None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        rc = self.proc.wait(timeout=30)
        self.out.close()
        self.err.close()
        return rc

    def terminate(self, timeout=60):
        """SIGTERM; returns (exit code, seconds to exit). Past `timeout` the
        process is killed and the exit code is None."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        seconds = time.monotonic() - start
        self.out.close()
        self.err.close()
        return rc, seconds

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read()

    def log_tail(self, n=15):
        return mc.tail(self.err_path, n)


def channel(grpc, server):
    return grpc.insecure_channel(server.target, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE)])


def code_name(code):
    """A grpc.StatusCode, or a number (MineResponse.error.code) -> its name."""
    if not isinstance(code, int):
        return code.name
    import grpc  # importable once the stubs are loaded
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)


def rpc_error(e):
    """(code name, details) of a grpc.RpcError."""
    return code_name(e.code()), e.details() or ""


# ------------------------------------------------------------------ checkpoints


def link_checkpoint(staged, root):
    """Places the staged checkpoint directory under root by hard links, the
    data files first and manifest.json last (an encoder's order)."""
    d = os.path.join(root, os.path.basename(staged))
    os.makedirs(d)
    names = sorted(os.listdir(staged))
    for name in names:
        if name != "manifest.json":
            os.link(os.path.join(staged, name), os.path.join(d, name))
    os.link(os.path.join(staged, "manifest.json"), os.path.join(d, "manifest.json"))
    return d


def write_manifest(d, manifest, raw=None):
    """manifest.json (a dict, or raw text), renamed in last."""
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, ".manifest.json.tmp")
    with open(tmp, "w") as f:
        f.write(raw if raw is not None else json.dumps(manifest))
    os.rename(tmp, os.path.join(d, "manifest.json"))


def shard_manifest(name, step, dim=DIM, embeddings="embeddings-00000.npy",
                   ids="ids-00000.npy"):
    return {"name": name, "step": step, "dim": dim, "metric": "inner_product",
            "shards": [{"embeddings": embeddings, "ids": ids}]}


def npy_header(dtype_descr, shape):
    """A .npy version 1.0 header, padded to a multiple of 64 bytes."""
    text = ("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }"
            % (dtype_descr, ", ".join(str(s) for s in shape)
               + ("," if len(shape) == 1 else "")))
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def write_sparse_npy(path, dtype_descr, shape, itemsize):
    """A .npy whose header claims `shape` and whose size matches it, but
    whose data is a hole: nothing is written, nothing is on disk."""
    header = npy_header(dtype_descr, shape)
    data = itemsize
    for s in shape:
        data *= s
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data)
    return len(header) + data


# ------------------------------------------------------------------ index info


def index_info(stub, pb, timeout=10):
    return stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=timeout)


def wait_for(what, predicate, timeout, interval=0.05):
    """Polls predicate() (which returns a value, falsy meaning not yet) until
    it holds or `timeout` seconds pass; returns its value or raises."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise Failure(f"timed out after {timeout} s waiting for {what}")


def wait_for_rejection(stub, pb, before_total, needle, timeout=15):
    """Waits until rejected_total passes before_total and last_rejected
    mentions `needle`; returns the IndexInfo."""
    def seen():
        info = index_info(stub, pb)
        if info.rejected_total > before_total and needle in info.last_rejected:
            return info
        return None
    return wait_for(f"a rejection mentioning {needle!r}", seen, timeout)

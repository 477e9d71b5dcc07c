#!/usr/bin/env python3
"""What the image test and the k8s test share: the server's arguments as
the manifests give them, a small checkpoint, and a check that a running
server (or router) serves.

One source for the server's arguments: the container spec of a rendered
kustomization (deploy/k8s/base by default). The image test runs the image
with them and tests/k8s/check.py runs the binaries with them, so neither
can drift from what Kubernetes runs.

  hardneg_k8s.py args [--overlay DIR] [--kubectl K]   one argument a line,
      $(VAR) references expanded as the kubelet would
  hardneg_k8s.py env [--overlay DIR] [--kubectl K]    NAME=VALUE a line
  hardneg_k8s.py make-checkpoint DIR [--n N --dim D]  a numpy checkpoint
  hardneg_k8s.py check --grpc ADDR --metrics ADDR --work_dir W [--n N --dim D]
      health SERVING (waits --timeout), GetIndexInfo, one MineOnce, /metrics

Needs /usr/bin/python3 with Debian's python3-yaml, python3-numpy,
python3-grpcio, python3-protobuf, and protoc + grpc_python_plugin.
"""
import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
K8S = os.path.join(ROOT, "deploy", "k8s")
CONTAINER = "hardneg-server"
# The image's ENTRYPOINT (Dockerfile), run when a container sets no
# command; the image's binaries are in /usr/local/bin, on its PATH.
ENTRYPOINT = ["/usr/local/bin/hardneg-server"]
IMAGE_BIN = "/usr/local/bin/"


# ------------------------------------------------------------- manifests


def render(overlay, kubectl="kubectl"):
    """The objects `kubectl kustomize overlay` renders."""
    import yaml
    out = subprocess.run([kubectl, "kustomize", overlay], check=True,
                         capture_output=True, text=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def workloads(objects):
    """(object, container, pod spec) for every container of every rendered
    Deployment and StatefulSet."""
    found = []
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            spec = o["spec"]["template"]["spec"]
            found += [(o, c, spec) for c in spec["containers"]]
    return found


def server_container(objects):
    """The first hardneg-server container of the rendered Deployments and
    StatefulSets, and its pod spec."""
    for _, c, spec in workloads(objects):
        if c["name"] == CONTAINER:
            return c, spec
    raise LookupError(f"no {CONTAINER} container in the rendered objects")


def cpu_cores(quantity):
    """A CPU quantity ("2", "500m") in whole cores, rounded up, as a
    resourceFieldRef with divisor 1 gives it."""
    q = str(quantity)
    cores = int(q[:-1]) / 1000 if q.endswith("m") else float(q)
    return max(1, math.ceil(cores))


def resolved_env(container, pod_name=None):
    """The container's environment as the kubelet sets it (value,
    resourceFieldRef limits.cpu, and fieldRef metadata.name given the pod's
    name; anything else is refused)."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        ref = e.get("valueFrom", {}).get("resourceFieldRef")
        if ref and ref["resource"] == "limits.cpu" and str(ref.get("divisor", "1")) == "1":
            env[e["name"]] = str(cpu_cores(container["resources"]["limits"]["cpu"]))
            continue
        field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field == "metadata.name" and pod_name:
            env[e["name"]] = pod_name
            continue
        raise ValueError(f"env {e['name']}: only value, limits.cpu and metadata.name "
                         "(given a pod name) are resolved here")
    return env


def expand(strings, env):
    """$(VAR) expanded from env, $$ to $, as the kubelet does in command
    and args."""
    def one(s):
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                      lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)
    return [one(s) for s in strings]


def resolved_args(container, pod_name=None):
    """The container's args with $(VAR) expanded from its env, as the
    kubelet does."""
    return expand(container.get("args", []), resolved_env(container, pod_name))


def resolved_command(container, pod_name=None):
    """The container's command as the kubelet runs it: $(VAR) expanded, the
    image's ENTRYPOINT when it sets none."""
    return expand(container.get("command", ENTRYPOINT), resolved_env(container, pod_name))


def program_args(container, pod_name=None):
    """(program, arguments): which of the image's binaries the container
    ends up running, and with what, after its command (a /bin/sh wrapper
    too) has run. Found by running the command and args with stand-ins
    for the binaries on PATH that print their argv."""
    stubs = tempfile.mkdtemp(prefix="hardneg-k8s-argv-")
    try:
        for name in ("hardneg-server", "hardneg-router", "hardneg"):
            path = os.path.join(stubs, name)
            with open(path, "w") as f:
                f.write('#!/bin/sh\nprintf \'%s\\0\' "${0##*/}" "$@"\n')
            os.chmod(path, 0o755)
        command = [os.path.join(stubs, c[len(IMAGE_BIN):]) if c.startswith(IMAGE_BIN) else c
                   for c in resolved_command(container, pod_name)]
        env = dict(resolved_env(container, pod_name), PATH=f"{stubs}:/usr/bin:/bin")
        out = subprocess.run([*command, *resolved_args(container, pod_name)], env=env,
                             check=True, capture_output=True, timeout=30).stdout
    finally:
        shutil.rmtree(stubs, ignore_errors=True)
    argv = out.decode().split("\0")[:-1]
    return argv[0], argv[1:]


def manifest_args(overlay=None, kubectl="kubectl"):
    container, _ = server_container(render(overlay or os.path.join(K8S, "base"), kubectl))
    return resolved_args(container), resolved_env(container)


# ------------------------------------------------------------ checkpoint


def make_checkpoint(path, n=500, dim=16, seed=7, step=100):
    """A checkpoint of n random unit vectors with labels 0..9 (README,
    "Checkpoint layout")."""
    import numpy as np
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    name = f"ckpt-{step}"
    d = os.path.join(path, name)
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "embeddings-00000.npy"), emb)
    np.save(os.path.join(d, "ids-00000.npy"), np.arange(1000, 1000 + n, dtype=np.int64))
    np.save(os.path.join(d, "labels-00000.npy"), (np.arange(n) % 10).astype(np.int64))
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump({"name": name, "step": step, "dim": dim, "metric": "inner_product",
                   "shards": [{"embeddings": "embeddings-00000.npy",
                               "ids": "ids-00000.npy", "labels": "labels-00000.npy"}]}, f)
    # Readable by the image's non-root user.
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return name


# ----------------------------------------------------------------- check


def load_stubs(work_dir):
    """miner_pb2 and miner_pb2_grpc, generated into work_dir the way the
    end-to-end checks generate theirs (tests/e2e/e2e_common.py)."""
    spec = importlib.util.spec_from_file_location(
        "e2e_common", os.path.join(ROOT, "tests", "e2e", "e2e_common.py"))
    ec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ec)
    os.makedirs(work_dir, exist_ok=True)
    _, miner_pb2, miner_pb2_grpc, _ = ec.load_stubs(
        os.path.join(ROOT, "proto"), work_dir, os.path.join(ROOT, "python"))
    return miner_pb2, miner_pb2_grpc


def health_status(channel, timeout=5):
    """grpc.health.v1.Health/Check for the whole server: 1 is SERVING."""
    call = channel.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
    raw = call(b"", timeout=timeout)  # HealthCheckRequest{service: ""}
    # HealthCheckResponse{status = 1}: field 1, varint.
    return raw[1] if len(raw) == 2 and raw[0] == 0x08 else 0


SERVER_METRICS = ("hardneg_index_sequence", "hardneg_mine_latency_seconds")
ROUTER_METRICS = ("hardneg_router_requests_total", "hardneg_router_shard_seconds")


def check_serving(grpc_addr, metrics_addr, work_dir, n=500, dim=16, timeout=120,
                  alive=lambda: True, log=print, metrics=SERVER_METRICS):
    """Raises AssertionError (or a gRPC error) unless the server (or router)
    at grpc_addr serves the make_checkpoint() data and /metrics names
    `metrics`. Returns its GetIndexInfo answer."""
    import grpc
    import numpy as np
    pb, pb_grpc = load_stubs(work_dir)
    channel = grpc.insecure_channel(grpc_addr)
    deadline = time.monotonic() + timeout
    status, last = 0, None
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError("the server exited before serving")
        try:
            status = health_status(channel)
            if status == 1:
                break
        except grpc.RpcError as e:
            last = e.code()
        time.sleep(0.5)
    assert status == 1, f"health not SERVING within {timeout}s (status {status}, last error {last})"
    log("  health: SERVING")
    stub = pb_grpc.MinerStub(channel)
    info = stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10)
    assert (info.size, info.dim, info.metric, info.has_labels) == (n, dim, "inner_product", True), \
        f"GetIndexInfo: {info}"
    log(f"  GetIndexInfo: {info.version.name} seq {info.version.sequence}, "
        f"{info.size} x {info.dim} {info.metric}, {info.index_type}")
    q = np.random.default_rng(1).standard_normal(dim).astype(np.float32)
    req = pb.MineRequest(request_id=7, queries=[pb.Query(embedding=q.tolist(), label=3)],
                         options=pb.MiningOptions(num_negatives=5))
    resp = stub.MineOnce(req, timeout=30)
    negs = resp.results[0].negatives
    assert resp.request_id == 7 and len(negs) == 5, f"MineOnce: {resp}"
    assert all(x.label != 3 for x in negs), "MineOnce returned the excluded label"
    assert [x.rank for x in negs] == list(range(5)), f"MineOnce ranks {[x.rank for x in negs]}"
    log(f"  MineOnce: 5 negatives, ids {[x.id for x in negs]}, from {resp.index.name}")
    with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10) as r:
        body = r.read().decode()
        assert r.status == 200, f"/metrics: HTTP {r.status}"
    lacking = [m for m in metrics if m not in body]
    assert not lacking, f"/metrics lacks {', '.join(lacking)}"
    log(f"  /metrics: HTTP 200, {len(body)} bytes")
    channel.close()
    return info


# ------------------------------------------------------------------ main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("args", "env"):
        p = sub.add_parser(name)
        p.add_argument("--overlay", default=os.path.join(K8S, "base"))
        p.add_argument("--kubectl", default="kubectl")
    p = sub.add_parser("make-checkpoint")
    p.add_argument("dir")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--dim", type=int, default=16)
    p = sub.add_parser("check")
    p.add_argument("--grpc", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--work_dir", required=True)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--router", action="store_true",
                   help="the address is a hardneg-router: look for its metrics")
    args = parser.parse_args()
    if args.cmd in ("args", "env"):
        margs, env = manifest_args(args.overlay, args.kubectl)
        lines = margs if args.cmd == "args" else [f"{k}={v}" for k, v in env.items()]
        for line in lines:
            assert "\n" not in line
            print(line)
    elif args.cmd == "make-checkpoint":
        make_checkpoint(args.dir, args.n, args.dim)
    else:
        try:
            check_serving(args.grpc, args.metrics, args.work_dir, args.n, args.dim, args.timeout,
                          metrics=ROUTER_METRICS if args.router else SERVER_METRICS)
        except Exception as e:  # noqa: BLE001 - reported, exit 1
            print(f"FAILED: {e}", file=sys.stderr)
            return 1
        print("serving: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

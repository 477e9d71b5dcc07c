#!/usr/bin/env python3
"""Checks deploy/k8s: every overlay renders with Debian 12's kubectl 1.20
(its kustomize v2) and with the kubectl on PATH, validates offline against
the Kubernetes and Prometheus Operator schemas, is consistent (selectors,
named ports, probes, volumes), its containers name only flags their
program (hardneg-server, hardneg-router) accepts, and its containers, run
as processes on 127.0.0.1, serve.

  /usr/bin/python3 tests/k8s/check.py [--server build/server/hardneg-server]
      [--router build/router/hardneg-router] [--work_dir build/k8s-test]

Run by scripts/k8s-test.sh (which ./scripts/test.sh calls). Needs yamllint,
promtool (prometheus), node + npm, kubectl, and apt-get (to fetch Debian's
kubectl 1.20 when the one on PATH is another) -- scripts/install-deps.sh
installs them. Prints one line per check; exits 1 on any failure.
"""
import argparse
import glob
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

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hardneg_k8s as hk  # noqa: E402

ROOT = hk.ROOT
K8S = hk.K8S
FAILED = []


def check(name, errors):
    """errors: a list of strings, empty when the check passes."""
    if errors:
        FAILED.append(name)
        print(f"FAIL {name}")
        for e in errors:
            print(f"     {e}")
    else:
        print(f"ok   {name}")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ------------------------------------------------------------- tools


def kubectl_version(kubectl):
    out = run([kubectl, "version", "--client"]).stdout
    m = re.search(r'GitVersion:"v(\d+\.\d+)|Client Version: v(\d+\.\d+)', out)
    return (m.group(1) or m.group(2)) if m else "?"


def kubectls(work_dir):
    """Debian 12's kubectl 1.20 first (the oldest kustomize to support),
    then the one on PATH if it is another."""
    found = []
    path = shutil.which("kubectl")
    if path and kubectl_version(path) == "1.20":
        return [path]
    tools = os.path.join(work_dir, "kubectl-1.20")
    debian = os.path.join(tools, "usr", "bin", "kubectl")
    if not os.path.exists(debian):
        # Debian's own package, unpacked: installing it would clash with
        # the kubectl already installed.
        os.makedirs(tools, exist_ok=True)
        for deb in glob.glob(os.path.join(tools, "*.deb")):
            os.remove(deb)
        r = run(["apt-get", "download", "kubernetes-client"], cwd=tools)
        debs = glob.glob(os.path.join(tools, "kubernetes-client_*.deb"))
        if r.returncode != 0 or not debs:
            raise SystemExit(f"cannot fetch Debian's kubernetes-client: {r.stderr[-500:]}")
        subprocess.run(["dpkg-deb", "-x", debs[0], tools], check=True)
    found.append(debian)
    if path:
        found.append(path)
    return found


def npm_validator(work_dir):
    """build/.../k8s-validate/node_modules from tests/k8s/package*.json."""
    dest = os.path.join(work_dir, "k8s-validate")
    os.makedirs(dest, exist_ok=True)
    stamp = os.path.join(dest, ".installed")
    lock = os.path.join(HERE, "package-lock.json")
    with open(lock, "rb") as f:
        want = f.read()
    if os.path.exists(stamp) and open(stamp, "rb").read() == want:
        return os.path.join(dest, "node_modules")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(HERE, name), dest)
    r = run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=dest)
    if r.returncode != 0:
        raise SystemExit(f"npm ci failed in {dest}: {r.stderr[-1000:]}")
    with open(stamp, "wb") as f:
        f.write(want)
    return os.path.join(dest, "node_modules")


def program_flags(binary):
    """The flags a hardneg binary (hardneg-server, hardneg-router) accepts,
    from --helpfull."""
    r = run([binary, "--helpfull"])
    names = set(re.findall(r"^\s+--([A-Za-z0-9_]+) \(", r.stdout + r.stderr, re.M))
    if not names:
        raise SystemExit(f"{binary} --helpfull listed no flags")
    return names


# ----------------------------------------------------- static checks


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def pod_name(workload, ordinal=0):
    """The name of one of the workload's pods: <name>-<ordinal> in a
    StatefulSet (a Deployment's pods get a random suffix instead)."""
    return f"{workload['metadata']['name']}-{ordinal}"


def flag_map(args, errs):
    """{flag: value} of --flag=value arguments (the last one wins); any
    other argument is an error."""
    argmap = {}
    for a in args:
        m = re.fullmatch(r"--([A-Za-z0-9_]+)(?:=(.*))?", a)
        if not m:
            errs.append(f"argument {a!r} is not --flag=value")
            continue
        argmap[m.group(1)] = m.group(2)
    return argmap


def pods_service(objects, pod_labels):
    """The Services whose selector matches pods labelled pod_labels."""
    return [s for s in by_kind(objects, "Service")
            if s["spec"].get("selector") and matches(s["spec"]["selector"], pod_labels)]


def workload_checks(name, workload, container, pod, objects, flags):
    """One Deployment's or StatefulSet's container: its ports, flags,
    probes, resources, security and volumes, its Service, ServiceMonitor and
    PodDisruptionBudget, and the flags its program accepts (flags: program
    name -> flag names). Returns (program, {flag: value})."""
    label = f"{name}: {workload['kind']} {workload['metadata']['name']}"
    errs = []
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    if not matches(workload["spec"]["selector"]["matchLabels"], pod_labels):
        errs.append(f"the {workload['kind']}'s selector does not match its pods")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if set(ports) != {"grpc", "metrics"}:
        errs.append(f"container ports {sorted(ports)}, expected grpc and metrics")
    # What the binary gets once the command (a shell wrapper too) has run.
    program, args = hk.program_args(container, pod_name(workload))
    argmap = flag_map(args, errs)
    if str(ports.get("grpc")) != argmap.get("grpc_port"):
        errs.append(f"--grpc_port={argmap.get('grpc_port')} but port grpc is {ports.get('grpc')}")
    if str(ports.get("metrics")) != argmap.get("metrics_port"):
        errs.append(f"--metrics_port={argmap.get('metrics_port')} but port metrics is {ports.get('metrics')}")
    # A server needs a startup window to load its index; a router waits for
    # its shards, which no restart helps: readiness only.
    required = ("startupProbe", "readinessProbe") if program == "hardneg-server" else ("readinessProbe",)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = container.get(probe)
        if (p or probe in required) and (p or {}).get("grpc", {}).get("port") != ports.get("grpc"):
            errs.append(f"{probe} is not a grpc probe on the grpc port")
    if program == "hardneg-server":
        window = container.get("startupProbe", {}).get("periodSeconds", 10) * \
            container.get("startupProbe", {}).get("failureThreshold", 3)
        if window < 600:
            errs.append(f"startup window {window}s, under 10 minutes")
    res = container.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(part, {}):
                errs.append(f"no resources.{part}.{r}")
    sc, psc = container.get("securityContext", {}), pod.get("securityContext", {})
    if not sc.get("readOnlyRootFilesystem"):
        errs.append("readOnlyRootFilesystem is not true")
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) or \
            (sc.get("runAsUser", psc.get("runAsUser", 0)) == 0):
        errs.append("not runAsNonRoot with a non-zero runAsUser")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"] for v in pod.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    for m in mounts.values():
        if m["name"] not in volumes | claims:
            errs.append(f"volumeMount {m['name']} has no volume")
    if program == "hardneg-server":
        for path in (argmap.get("data_dir"), "/tmp"):
            if path not in mounts or mounts[path].get("readOnly"):
                errs.append(f"{path} is not a writable volume")
    services = pods_service(objects, pod_labels)
    if len(services) != 1:
        errs.append(f"{len(services)} Services select the pods")
    else:
        svc = services[0]
        if {p["name"] for p in svc["spec"]["ports"]} != {"grpc", "metrics"}:
            errs.append("the Service's ports are not grpc and metrics")
        monitors = [sm for sm in by_kind(objects, "ServiceMonitor")
                    if matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"].get("labels", {}))]
        if len(monitors) != 1:
            errs.append(f"{len(monitors)} ServiceMonitors select the Service {svc['metadata']['name']}")
        for sm in monitors:
            for ep in sm["spec"]["endpoints"]:
                if ep.get("port") != "metrics":
                    errs.append(f"ServiceMonitor endpoint port {ep.get('port')}")
    if workload["spec"].get("replicas", 1) > 1:
        pdbs = [b for b in by_kind(objects, "PodDisruptionBudget")
                if matches(b["spec"]["selector"]["matchLabels"], pod_labels)]
        if len(pdbs) != 1:
            errs.append(f"{workload['spec']['replicas']} replicas and {len(pdbs)} "
                        "PodDisruptionBudgets selecting them")
    check(f"{label}: consistent (selectors, named ports, grpc probes, security, volumes, "
          "Service, ServiceMonitor)", errs)
    known = flags.get(program, set())
    unknown = [a for a in argmap if a not in known and not
               (a.startswith("no") and a[2:] in known)]
    check(f"{label}: container args name only flags {program} accepts ({len(argmap)} flags)",
          [f"unknown flag --{a}" for a in unknown] if known else [f"no flags known for {program}"])
    return program, argmap


def static_checks(name, objects, flags, base):
    """workload_checks for every container, then the shape the overlay
    promises (deploy/README.md); base: the base's hardneg-server container
    and pod spec. Returns [(workload, container, pod spec, program,
    {flag: value})]."""
    found = [(w, c, p, *workload_checks(name, w, c, p, objects, flags))
             for w, c, p in hk.workloads(objects)]
    errs = []
    for sm in by_kind(objects, "ServiceMonitor"):
        if not any(matches(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
                   for s in by_kind(objects, "Service")):
            errs.append(f"the ServiceMonitor {sm['metadata']['name']} selects no Service")
    if not by_kind(objects, "ServiceMonitor"):
        errs.append("no ServiceMonitor")
    servers = [f for f in found if f[3] == "hardneg-server"]
    if name in ("single", "replicas"):
        if len(servers) != 1 or servers[0][0]["kind"] != "Deployment":
            errs.append(f"{len(servers)} hardneg-server containers, expected one Deployment's")
            servers = []
        shape = single_shape if name == "single" else replicas_shape
        for deploy, container, pod, _, argmap in servers:
            errs += shape(objects, deploy, container, pod, argmap)
    if name == "sharded":
        errs += sharded_shape(objects, found, base)
    if name in SHAPES:
        check(f"{name}: {SHAPES[name]}", errs)
    elif errs:
        check(f"{name}: ServiceMonitors", errs)
    return found


SHAPES = {
    "single": "one pod, --data_dir on the overlay's PersistentVolumeClaim",
    "replicas": "several pods, a headless Service, a PodDisruptionBudget, --max_connection_age",
    "sharded": "a StatefulSet of shards (--shard_index = ordinal, --num_shards = replicas, "
               "a volume each, a headless Service), the base's server container, a router "
               "Deployment whose --shards names the shards in order, a headless Service",
}


def single_shape(objects, deploy, container, pod, argmap):
    errs = []
    if deploy["spec"].get("replicas") != 1:
        errs.append("single: replicas is not 1")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    data_volume = volumes.get(mounts.get(argmap.get("data_dir"), {}).get("name"), {})
    claim = data_volume.get("persistentVolumeClaim", {}).get("claimName")
    if not claim or claim not in {o["metadata"]["name"] for o in by_kind(objects, "PersistentVolumeClaim")}:
        errs.append("single: --data_dir is not on a PersistentVolumeClaim of the overlay")
    if "emptyDir" in data_volume:
        errs.append("single: the data volume is both a PVC and an emptyDir")
    return errs


def sharded_shape(objects, found, base):
    errs = []
    shards = [f for f in found if f[3] == "hardneg-server"]
    routers = [f for f in found if f[3] == "hardneg-router"]
    if len(shards) != 1 or shards[0][0]["kind"] != "StatefulSet" or len(routers) != 1:
        return [f"{len(shards)} hardneg-server and {len(routers)} hardneg-router containers, "
                "expected one StatefulSet's and one Deployment's"]
    sts, container, pod, _, _ = shards[0]
    n = sts["spec"].get("replicas", 1)
    if n < 2:
        errs.append(f"sharded: {n} shard")
    if sts["spec"].get("podManagementPolicy") != "Parallel":
        errs.append("sharded: podManagementPolicy is not Parallel")
    svc = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == sts["spec"].get("serviceName")]
    if len(svc) != 1 or svc[0]["spec"].get("clusterIP") != "None" or not \
            matches(svc[0]["spec"].get("selector", {}), sts["spec"]["template"]["metadata"]["labels"]):
        errs.append("sharded: the StatefulSet's serviceName is not a headless Service of its pods")
    elif not svc[0]["spec"].get("publishNotReadyAddresses"):
        errs.append("sharded: the shards' Service does not publish loading shards' addresses")
    # Every ordinal's arguments, as its pod's name gives them.
    for i in range(n):
        program, args = hk.program_args(container, pod_name(sts, i))
        argmap = flag_map(args, errs)
        if (argmap.get("shard_index"), argmap.get("num_shards")) != (str(i), str(n)):
            errs.append(f"sharded: pod {pod_name(sts, i)} runs --shard_index={argmap.get('shard_index')} "
                        f"--num_shards={argmap.get('num_shards')}, expected {i} and {n}")
    data = [m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == argmap.get("data_dir")]
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    if not data or data[0] not in claims or data[0] in {v["name"] for v in pod.get("volumes", [])}:
        errs.append("sharded: --data_dir is not on a volumeClaimTemplate (a volume per shard)")
    # The shard server is the base's, but for what sharding adds.
    base_container, base_pod = base
    for key in sorted(set(container) | set(base_container)):
        if key not in ("command", "args", "env") and container.get(key) != base_container.get(key):
            errs.append(f"sharded: the shard container's {key} is not the base's")
    if container.get("args", [])[:len(base_container["args"])] != base_container["args"]:
        errs.append("sharded: the shard container's args do not start with the base's")
    lacking = [e["name"] for e in base_container.get("env", []) if e not in container.get("env", [])]
    if lacking:
        errs.append(f"sharded: the shard container lacks the base's env {', '.join(lacking)}")
    for key in sorted(set(pod) | set(base_pod)):
        if key not in ("containers", "volumes") and pod.get(key) != base_pod.get(key):
            errs.append(f"sharded: the shard pod's {key} is not the base's")
    if pod.get("volumes") != [v for v in base_pod.get("volumes", []) if v["name"] not in claims]:
        errs.append("sharded: the shard pod's volumes are not the base's but its claims")
    # The router: every shard by its stable name, in ordinal order.
    router, _, _, _, argmap = routers[0]
    grpc = {p["name"]: p["containerPort"] for p in container.get("ports", [])}.get("grpc")
    want = [f"{pod_name(sts, i)}.{sts['spec'].get('serviceName')}:{grpc}" for i in range(n)]
    if (argmap.get("shards") or "").split(",") != want:
        errs.append(f"sharded: the router's --shards={argmap.get('shards')}, expected {','.join(want)}")
    if router["spec"].get("replicas", 1) < 2:
        errs.append("sharded: fewer than 2 routers")
    services = pods_service(objects, router["spec"]["template"]["metadata"]["labels"])
    if services and services[0]["spec"].get("clusterIP") != "None":
        errs.append("sharded: the router's Service is not headless")
    return errs


def replicas_shape(objects, deploy, container, pod, argmap):
    errs = []
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    if deploy["spec"].get("replicas", 1) < 2:
        errs.append("replicas: fewer than 2 replicas")
    services = pods_service(objects, pod_labels)
    if services and services[0]["spec"].get("clusterIP") != "None":
        errs.append("replicas: the Service is not headless")
    pdbs = by_kind(objects, "PodDisruptionBudget")
    if len(pdbs) != 1 or not matches(pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels):
        errs.append("replicas: no PodDisruptionBudget selecting the pods")
    if "max_connection_age" not in argmap:
        errs.append("replicas: no --max_connection_age")
    return errs


def prometheus_rule_checks(name, objects, work_dir):
    """The PrometheusRule carries alert-rules.yaml unchanged, and its spec
    is a valid Prometheus rule file (promtool)."""
    errs = []
    with open(os.path.join(ROOT, "deploy", "monitoring", "alert-rules.yaml")) as f:
        source = yaml.safe_load(f)
    rules = by_kind(objects, "PrometheusRule")
    if len(rules) != 1:
        errs.append(f"{len(rules)} PrometheusRules")
    elif rules[0]["spec"] != source:
        errs.append("its spec differs from deploy/monitoring/alert-rules.yaml")
    else:
        path = os.path.join(work_dir, f"{name}-rules.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(rules[0]["spec"], f)
        promtool = shutil.which("promtool")
        if not promtool:
            errs.append("promtool not found (apt-get install prometheus)")
        else:
            r = run([promtool, "check", "rules", path])
            if r.returncode != 0:
                errs.append(f"promtool check rules: {r.stdout}{r.stderr}")
    dash = [o for o in by_kind(objects, "ConfigMap") if "grafana-dashboard.json" in o.get("data", {})]
    with open(os.path.join(ROOT, "deploy", "monitoring", "grafana-dashboard.json")) as f:
        want = json.load(f)
    if len(dash) != 1 or json.loads(dash[0]["data"]["grafana-dashboard.json"]) != want:
        errs.append("no ConfigMap with deploy/monitoring/grafana-dashboard.json")
    check(f"{name}: PrometheusRule = alert-rules.yaml (promtool check rules), dashboard ConfigMap", errs)


# ------------------------------------------------------------ running


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LocalContainer:
    """A rendered container run as a process on 127.0.0.1: its command (the
    image's ENTRYPOINT, hardneg-server, when it sets none) and args with
    the environment the kubelet gives it, the image's binaries found on
    PATH in bin_dir, its volumes' mount paths mapped to directories under
    work_dir, each arg passed through `rewrite`, and free ports appended
    (the last --flag wins)."""

    def __init__(self, bin_dir, container, work_dir, checkpoints, pod_name=None, extra=(),
                 rewrite=lambda arg: arg):
        self.grpc_port, self.metrics_port = free_port(), free_port()
        while self.metrics_port == self.grpc_port:
            self.metrics_port = free_port()
        os.makedirs(work_dir, exist_ok=True)
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        dirs = {}
        for path, vol in mounts.items():
            dirs[path] = checkpoints if vol == "checkpoints" else os.path.join(work_dir, vol)
            os.makedirs(dirs[path], exist_ok=True)

        def remap(arg):
            m = re.fullmatch(r"(--[A-Za-z0-9_]+=)(/.*)", arg)
            if m:
                for path, local in dirs.items():
                    if m.group(2) == path or m.group(2).startswith(path + "/"):
                        return m.group(1) + local + m.group(2)[len(path):]
            return arg
        self.command = [os.path.join(bin_dir, c[len(hk.IMAGE_BIN):]) if c.startswith(hk.IMAGE_BIN)
                        else c for c in hk.resolved_command(container, pod_name)]
        self.args = [rewrite(remap(a)) for a in hk.resolved_args(container, pod_name)]
        self.args += [f"--grpc_port={self.grpc_port}", f"--metrics_port={self.metrics_port}",
                      *extra]
        env = dict(os.environ)
        env.update(hk.resolved_env(container, pod_name))
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env["TMPDIR"] = dirs.get("/tmp", tempfile.gettempdir())
        self.log = open(os.path.join(work_dir, f"{container['name']}.log"), "w")
        self.proc = subprocess.Popen([*self.command, *self.args], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "killed after 60 s"
        return self.proc.returncode

    def tail(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f"{self.log.name}:\n" + f.read()[-2000:]


def local_bin(work_dir, bins):
    """A directory holding the image's binaries by name (links to the
    build's), for PATH."""
    d = os.path.join(work_dir, "bin")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, path in bins.items():
        os.symlink(os.path.abspath(path), os.path.join(d, name))
    return d


def serve_check(name, bin_dir, container, work_dir, checkpoints):
    t0 = time.monotonic()
    d = os.path.join(work_dir, f"run-{name}")
    shutil.rmtree(d, ignore_errors=True)
    srv = LocalContainer(bin_dir, container, d, checkpoints)
    errs = []
    try:
        hk.check_serving(f"127.0.0.1:{srv.grpc_port}", f"127.0.0.1:{srv.metrics_port}",
                         os.path.join(work_dir, "py"), timeout=60, alive=srv.alive,
                         log=lambda s: None)
    except Exception as e:  # noqa: BLE001
        errs += [f"{type(e).__name__}: {e}", srv.tail()]
    rc = srv.stop()
    if rc != 0 and not errs:
        errs.append(f"exit {rc} on SIGTERM: {srv.tail()}")
    snapshots = os.listdir(os.path.join(d, "data")) if os.path.isdir(os.path.join(d, "data")) else []
    if not errs and not snapshots:
        errs.append("no snapshot written under --data_dir")
    check(f"{name}: its args run on 127.0.0.1 and serve (health SERVING, GetIndexInfo, "
          f"MineOnce, /metrics, snapshot, SIGTERM exit 0) in {time.monotonic() - t0:.1f} s: "
          f"{' '.join(srv.args)}", errs)


def sharded_serve_check(bin_dir, objects, work_dir, checkpoints, n=500):
    """The sharded overlay on 127.0.0.1: a process per shard pod, with the
    StatefulSet's command and args as its pod's name makes them (the
    ordinal) and a data directory of its own, and the router with its
    args, the shards' stable names in --shards rewritten to those
    processes. The router serves the whole checkpoint exactly (health
    SERVING, GetIndexInfo, MineOnce, /metrics), each shard holds a part,
    and every process exits 0 on SIGTERM."""
    t0 = time.monotonic()
    d = os.path.join(work_dir, "run-sharded")
    shutil.rmtree(d, ignore_errors=True)
    sts, shard_c, _ = [(w, c, p) for w, c, p in hk.workloads(objects) if w["kind"] == "StatefulSet"][0]
    router_w, router_c, _ = [(w, c, p) for w, c, p in hk.workloads(objects)
                             if c["name"] == "hardneg-router"][0]
    count = sts["spec"]["replicas"]
    grpc = {p["name"]: p["containerPort"] for p in shard_c["ports"]}["grpc"]
    procs, local, errs = [], {}, []
    try:
        for i in range(count):
            pod = pod_name(sts, i)
            procs.append(LocalContainer(bin_dir, shard_c, os.path.join(d, pod), checkpoints,
                                        pod_name=pod))
            local[f"{pod}.{sts['spec']['serviceName']}:{grpc}"] = f"127.0.0.1:{procs[-1].grpc_port}"

        def rewrite(arg):
            if not arg.startswith("--shards="):
                return arg
            return "--shards=" + ",".join(local.get(t, t) for t in arg[len("--shards="):].split(","))
        router = LocalContainer(bin_dir, router_c, os.path.join(d, "router"), checkpoints,
                                pod_name=pod_name(router_w), rewrite=rewrite)
        procs.append(router)
        info = hk.check_serving(f"127.0.0.1:{router.grpc_port}", f"127.0.0.1:{router.metrics_port}",
                                os.path.join(work_dir, "py"), n=n, timeout=90,
                                alive=lambda: all(p.alive() for p in procs), log=lambda s: None,
                                metrics=("hardneg_router_requests_total",))
        got = [(s.target, s.info.shard_index, s.info.num_shards) for s in info.shards]
        want = [(f"127.0.0.1:{p.grpc_port}", i, count) for i, p in enumerate(procs[:count])]
        if got != want:
            errs.append(f"the router's shards {got}, expected {want}")
        sizes = [s.info.size for s in info.shards]
        if sum(sizes) != n or min(sizes, default=0) == 0:
            errs.append(f"shard sizes {sizes}: not a split of the {n} candidates")
    except Exception as e:  # noqa: BLE001
        errs += [f"{type(e).__name__}: {e}"] + [p.tail() for p in procs]
    # The router first, as a rollout would drain it before the shards.
    for p in reversed(procs):
        rc = p.stop()
        if rc != 0 and not errs:
            errs.append(f"exit {rc} on SIGTERM: {p.tail()}")
    for i in range(count):
        data = os.path.join(d, pod_name(sts, i), "data")
        if not errs and not (os.path.isdir(data) and os.listdir(data)):
            errs.append(f"no snapshot written under {data}")
    check(f"sharded: {count} shards and the router run their args on 127.0.0.1 and serve "
          "(router health SERVING, GetIndexInfo over every shard, MineOnce, "
          f"hardneg_router_requests_total, a snapshot per shard, SIGTERM exit 0) in "
          f"{time.monotonic() - t0:.1f} s: router {' '.join(procs[-1].args) if procs else ''}", errs)


def connection_age_check(bin_dir, container, work_dir, checkpoints):
    """--max_connection_age cuts a long Mine stream after the age + grace
    (UNAVAILABLE), and the same channel carries new calls afterwards."""
    import grpc
    import numpy as np
    d = os.path.join(work_dir, "run-connection-age")
    shutil.rmtree(d, ignore_errors=True)
    srv = LocalContainer(bin_dir, container, d, checkpoints,
                         extra=["--max_connection_age=2s", "--max_connection_age_grace=1s"])
    errs = []
    try:
        pb, pb_grpc = hk.load_stubs(os.path.join(work_dir, "py"))
        hk.check_serving(f"127.0.0.1:{srv.grpc_port}", f"127.0.0.1:{srv.metrics_port}",
                         os.path.join(work_dir, "py"), timeout=60, alive=srv.alive,
                         log=lambda s: None)
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}",
                                        options=[("grpc.lb_policy_name", "round_robin")])
        stub = pb_grpc.MinerStub(channel)
        q = np.ones(16, dtype=np.float32).tolist()

        def requests():
            for i in range(200):  # 20 s at most
                yield pb.MineRequest(request_id=i, queries=[pb.Query(embedding=q)],
                                     options=pb.MiningOptions(num_negatives=2))
                time.sleep(0.1)
        t0 = time.monotonic()
        answered, code = 0, None
        try:
            for _ in stub.Mine(requests(), timeout=30):
                answered += 1
        except grpc.RpcError as e:
            code = e.code()
        took = time.monotonic() - t0
        if code != grpc.StatusCode.UNAVAILABLE or not 1.5 <= took <= 10:
            errs.append(f"the stream ended {code} after {took:.1f}s and {answered} answers; "
                        "expected UNAVAILABLE after about 2-3.5 s")
        after = stub.MineOnce(pb.MineRequest(request_id=1, queries=[pb.Query(embedding=q)],
                                             options=pb.MiningOptions(num_negatives=2)), timeout=10)
        if len(after.results) != 1:
            errs.append("no answer on the channel after the stream was cut")
        channel.close()
    except Exception as e:  # noqa: BLE001
        errs += [f"{type(e).__name__}: {e}", srv.tail()]
    srv.stop()
    check("--max_connection_age=2s --max_connection_age_grace=1s ends a Mine stream "
          "UNAVAILABLE within 2-3.5 s; the channel reconnects", errs)


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.path.join(ROOT, "build", "server", "hardneg-server"))
    parser.add_argument("--router", default=os.path.join(ROOT, "build", "router", "hardneg-router"))
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "build", "k8s-test"))
    args = parser.parse_args()
    t0 = time.monotonic()
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)

    r = run([sys.executable, os.path.join(HERE, "sync_monitoring.py"), "--check"])
    check("deploy/k8s/base/monitoring copies match deploy/monitoring/ (sync_monitoring.py)",
          [r.stderr.strip()] if r.returncode else [])
    r = run(["yamllint", "-c", os.path.join(K8S, ".yamllint"), "-f", "parsable", K8S, HERE])
    check("yamllint deploy/k8s tests/k8s",
          [r.stdout + r.stderr] if r.returncode or "[error]" in r.stdout else [])

    tools = kubectls(os.path.join(ROOT, "build"))
    node_modules = npm_validator(os.path.join(ROOT, "build"))
    bins = {"hardneg-server": args.server, "hardneg-router": args.router}
    flags = {name: program_flags(path) for name, path in bins.items()}
    bin_dir = local_bin(work, bins)
    checkpoints = os.path.join(work, "checkpoints")
    shutil.rmtree(checkpoints, ignore_errors=True)
    hk.make_checkpoint(checkpoints)
    # What the sharded overlay's shards must equal.
    base = hk.server_container(hk.render(os.path.join(K8S, "base"), tools[0]))

    overlays = sorted(os.path.dirname(p) for p in
                      glob.glob(os.path.join(K8S, "overlays", "*", "kustomization.yaml")))
    for overlay in overlays:
        name = os.path.basename(overlay)
        rendered = {}
        for kubectl in tools:
            version = kubectl_version(kubectl)
            try:
                rendered[version] = hk.render(overlay, kubectl)
                check(f"{name}: renders with kubectl {version} kustomize "
                      f"({len(rendered[version])} objects)", [])
            except subprocess.CalledProcessError as e:
                check(f"{name}: renders with kubectl {version} kustomize", [e.stderr])
        if not rendered:
            continue
        versions = list(rendered)
        first = rendered[versions[0]]
        for v in versions[1:]:
            key = lambda objs: sorted((o["kind"], o["metadata"]["name"]) for o in objs)  # noqa: E731
            containers = lambda objs: {(w["kind"], w["metadata"]["name"], c["name"]): c  # noqa: E731
                                       for w, c, _ in hk.workloads(objs)}
            errs = []
            if key(rendered[v]) != key(first):
                errs.append(f"objects differ: {key(rendered[v])} vs {key(first)}")
            elif containers(rendered[v]) != containers(first):
                errs.append("the containers differ")
            check(f"{name}: kubectl {versions[0]} and {v} render the same objects and containers",
                  errs)
        for v, objects in rendered.items():
            path = os.path.join(work, f"{name}-{v}.json")
            with open(path, "w") as f:
                json.dump(objects, f)
            r = run(["node", os.path.join(HERE, "validate.js"), path],
                    env=dict(os.environ, NODE_PATH=node_modules))
            check(f"{name} (kubectl {v}): validates against the Kubernetes and Prometheus "
                  f"Operator schemas: {', '.join(o['kind'] for o in objects)}",
                  [] if r.returncode == 0 else [r.stdout + r.stderr])
        static_checks(name, first, flags, base)
        prometheus_rule_checks(name, first, work)
        if name == "sharded":
            sharded_serve_check(bin_dir, first, work, checkpoints)
            continue
        container, _ = hk.server_container(first)
        serve_check(name, bin_dir, container, work, checkpoints)
        if name == "replicas":
            connection_age_check(bin_dir, container, work, checkpoints)

    print(f"k8s check: {len(FAILED)} failed" + (f": {', '.join(FAILED)}" if FAILED else "")
          + f" ({time.monotonic() - t0:.0f} s)")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

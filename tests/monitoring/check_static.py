#!/usr/bin/python3
"""Static checks of deploy/monitoring/ against a real hardneg-server.

  1. yamllint on every YAML file (deploy/monitoring/.yamllint);
  2. promtool check rules, and promtool test rules on
     tests/monitoring/alert-rules.test.yaml (each alert fires when it should
     and not otherwise);
  3. promtool check config on prometheus-scrape.yaml with its rule file
     (Debian's Prometheus is built without Kubernetes service discovery:
     then the kubernetes_sd job is checked with a static target in its place,
     relabel rules and all);
  4. the Grafana dashboard: JSON, its ${datasource}/$job/$instance
     variables, every panel on the ${datasource}, and every PromQL query
     parses (promtool check rules on a generated file of them);
  5. a real hardneg-server (--grpc_port 0 --metrics_port 0) on a tiny
     generated checkpoint, exercised (MineOnce, a Mine stream, bad requests,
     a version swap, a rejected checkpoint), then its /metrics:
     `promtool check metrics` passes, and every metric name the dashboard
     and the rules query is exported (`up` aside), with the labels they
     group by.

Usage:
  /usr/bin/python3 tests/monitoring/check_static.py \
      --server build/server/hardneg-server [--proto_dir proto] [--work_dir DIR]

Exits 1 and says what failed, including a missing promtool or yamllint
(Debian packages prometheus and yamllint).
"""

import copy
import os
import shutil
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import monitoring_common as mc  # noqa: E402
from monitoring_common import Failure, log  # noqa: E402

PROMTOOL = os.environ.get("PROMTOOL", "/usr/bin/promtool")
YAMLLINT = os.environ.get("YAMLLINT", "/usr/bin/yamllint")
YAML_FILES = [
    os.path.join(mc.MONITORING, "alert-rules.yaml"),
    os.path.join(mc.MONITORING, "prometheus-scrape.yaml"),
    os.path.join(mc.MONITORING, ".yamllint"),
    os.path.join(mc.HERE, "alert-rules.test.yaml"),
]
# The labels the dashboard and the rules group or filter by, per family.
LABELS_USED = {
    "hardneg_mine_latency_seconds": {"rpc", "le"},
    "hardneg_requests_failed_total": {"code"},
    "grpc_server_started_total": {"grpc_service", "grpc_method", "grpc_type"},
    "grpc_server_handled_total": {"grpc_service", "grpc_method", "grpc_type",
                                  "grpc_code"},
}
# Metric names of the contract (README.md "Metrics" and issue 5).
CONTRACT = {
    "hardneg_mine_latency_seconds": "histogram",
    "hardneg_query_latency_seconds": "histogram",
    "hardneg_queries_total": "counter",
    "hardneg_negatives_returned_total": "counter",
    "hardneg_shortfall_total": "counter",
    "hardneg_requests_failed_total": "counter",
    "hardneg_index_candidates": "gauge",
    "hardneg_index_sequence": "gauge",
    "hardneg_index_age_seconds": "gauge",
    "hardneg_refresh_duration_seconds": "histogram",
    "hardneg_refresh_failures_total": "counter",
    "hardneg_batch_size": "histogram",
    "grpc_server_started_total": "counter",
    "grpc_server_handled_total": "counter",
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
}


def need_tool(path, package):
    if not os.access(path, os.X_OK):
        raise Failure(f"{path} is not installed: install Debian's `{package}` "
                      "package (scripts/install-deps.sh does)")


def run(cmd, timeout=60, input_text=None):
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          input=input_text)
    output = (proc.stdout + proc.stderr).strip()
    if output:
        log("  " + output.replace("\n", "\n  "))
    return proc.returncode, output


# ------------------------------------------------------------------ checks


def check_yamllint(work_dir):
    need_tool(YAMLLINT, "yamllint")
    rc, out = run([YAMLLINT, "-f", "parsable", "-c",
                   os.path.join(mc.MONITORING, ".yamllint"), *YAML_FILES])
    if rc != 0:
        raise Failure(f"yamllint failed:\n{out}")


def check_rules(work_dir):
    need_tool(PROMTOOL, "prometheus")
    rc, out = run([PROMTOOL, "check", "rules",
                   os.path.join(mc.MONITORING, "alert-rules.yaml")])
    if rc != 0:
        raise Failure(f"promtool check rules failed:\n{out}")
    rc, out = run([PROMTOOL, "test", "rules",
                   os.path.join(mc.HERE, "alert-rules.test.yaml")])
    if rc != 0:
        raise Failure(f"promtool test rules failed:\n{out}")
    for group in mc.load_rules().get("groups", []):
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue
            missing = [k for k in ("severity",) if k not in rule.get("labels", {})]
            missing += [k for k in ("summary", "description")
                        if k not in rule.get("annotations", {})]
            if missing:
                raise Failure(f"alert {rule['alert']} lacks {', '.join(missing)}")


def check_scrape_config(work_dir):
    import yaml
    need_tool(PROMTOOL, "prometheus")
    src = os.path.join(mc.MONITORING, "prometheus-scrape.yaml")
    with open(src) as f:
        doc = yaml.safe_load(f)
    jobs = doc.get("scrape_configs", [])
    if not any(j.get("static_configs") for j in jobs):
        raise Failure("prometheus-scrape.yaml has no static_configs job")
    if not any(j.get("kubernetes_sd_configs") for j in jobs):
        raise Failure("prometheus-scrape.yaml has no kubernetes_sd_configs job")
    if "alert-rules.yaml" not in doc.get("rule_files", []):
        raise Failure("prometheus-scrape.yaml does not load alert-rules.yaml")
    rc, out = run([PROMTOOL, "check", "config", src])
    if rc == 0:
        return
    if "kubernetes_sd_configs not found" not in out:
        raise Failure(f"promtool check config failed:\n{out}")
    # This promtool (Debian's) has no Kubernetes discovery: check the same
    # jobs, relabelling included, with a static target standing in.
    log("  (this Prometheus is built without Kubernetes service discovery; "
        "checking the kubernetes job with a static target in its place)")
    stand_in = copy.deepcopy(doc)
    for job in stand_in["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["10.0.0.1:9464"]}]
    d = os.path.join(work_dir, "scrape-check")
    os.makedirs(d, exist_ok=True)
    shutil.copy(os.path.join(mc.MONITORING, "alert-rules.yaml"), d)
    path = os.path.join(d, "prometheus-scrape.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(stand_in, f, sort_keys=False)
    rc, out = run([PROMTOOL, "check", "config", path])
    if rc != 0:
        raise Failure(f"promtool check config failed:\n{out}")


def check_dashboard(work_dir):
    import yaml
    d = mc.load_dashboard()  # raises on bad JSON
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        raise Failure(f"schemaVersion {d.get('schemaVersion')!r}: want >= 36")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        raise Failure("no `datasource` variable of type datasource/prometheus")
    for name in ("job", "instance"):
        v = variables.get(name)
        if not v or v.get("type") != "query":
            raise Failure(f"no `{name}` query variable")
        if v.get("datasource", {}).get("uid") != "${datasource}":
            raise Failure(f"variable {name} is not on ${{datasource}}")
    ids = []
    problems = []

    def walk(panels):
        for p in panels:
            ids.append(p.get("id"))
            if p.get("type") != "row":
                if p.get("datasource", {}).get("uid") != "${datasource}":
                    problems.append(f"panel {p.get('title')!r} not on ${{datasource}}")
                for t in p.get("targets", []):
                    if not t.get("expr"):
                        problems.append(f"panel {p.get('title')!r} has an empty query")
                    elif "$job" not in t["expr"] or "$instance" not in t["expr"]:
                        problems.append(f"panel {p.get('title')!r} query ignores "
                                        f"$job/$instance: {t['expr']}")
                g = p.get("gridPos", {})
                if g.get("x", 0) + g.get("w", 0) > 24:
                    problems.append(f"panel {p.get('title')!r} wider than the grid")
            walk(p.get("panels", []) or [])

    walk(d.get("panels", []))
    if len(ids) != len(set(ids)):
        problems.append(f"panel ids repeat: {ids}")
    if problems:
        raise Failure("\n".join(problems))
    # Every query parses: as recording rules, through promtool.
    queries = mc.dashboard_queries(d)
    rules = [{"record": f"dashboard:query_{i}",
              "expr": mc.substitute_grafana(expr)}
             for i, (_, expr, _) in enumerate(queries)]
    path = os.path.join(work_dir, "dashboard-queries.rules.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    rc, out = run([PROMTOOL, "check", "rules", path])
    if rc != 0:
        raise Failure(f"a dashboard query does not parse:\n{out}")
    log(f"  {len(queries)} dashboard queries parse")


def exercise(server, args, work_dir, ckpt_dir, dim):
    """Requests that give every labelled series a child: MineOnce and Mine
    (good and bad), a version swap, a rejected checkpoint."""
    import numpy as np
    grpc, pb, pb_grpc = mc.load_stubs(args.proto_dir, work_dir)
    rng = np.random.default_rng(7)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        stub = pb_grpc.MinerStub(channel)
        q = rng.standard_normal((4, dim)).astype(np.float32)
        stub.MineOnce(mc.mine_request(pb, 1, q), timeout=20)
        bad = mc.mine_request(pb, 2, rng.standard_normal((1, dim + 1)))
        try:
            stub.MineOnce(bad, timeout=20)
            raise Failure("a query of the wrong dimension was accepted")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise Failure(f"wrong dimension: {e.code()}, want INVALID_ARGUMENT")
        responses = list(stub.Mine(iter([mc.mine_request(pb, 3, q),
                                         mc.mine_request(pb, 4, q[:1]),
                                         bad]), timeout=20))
        if len(responses) != 3 or not responses[2].error.code:
            raise Failure(f"Mine stream: {len(responses)} responses, want 3 "
                          "with the last an in-band error")
    # A newer checkpoint (swap, refresh duration), then a broken one.
    seq_before = mc.value(mc.parse_exposition(server.scrape())[1],
                          "hardneg_index_sequence")
    mc.write_checkpoint(ckpt_dir, "ckpt-2", 2, 300, dim, seed=2)
    deadline = time.time() + 30
    while time.time() < deadline:
        seq = mc.value(mc.parse_exposition(server.scrape())[1],
                       "hardneg_index_sequence")
        if seq is not None and seq_before is not None and seq > seq_before:
            break
        time.sleep(0.2)
    else:
        log(f"  note: hardneg_index_sequence did not move after a new "
            f"checkpoint ({seq_before} -> {seq})")
    mc.write_checkpoint(ckpt_dir, "ckpt-3", 3, 300, dim, seed=3, broken=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        failures = mc.value(mc.parse_exposition(server.scrape())[1],
                            "hardneg_refresh_failures_total")
        if failures:
            break
        time.sleep(0.2)
    else:
        log("  note: hardneg_refresh_failures_total did not move after a "
            "broken checkpoint")


def check_against_server(args, work_dir):
    need_tool(PROMTOOL, "prometheus")
    ckpt_dir = os.path.join(work_dir, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)
    dim = 16
    mc.write_checkpoint(ckpt_dir, "ckpt-1", 1, 200, dim, seed=1)
    server = mc.Server(args.server, ckpt_dir, work_dir,
                       extra=["--poll_interval=200ms", "--threads=2"])
    try:
        exercise(server, args, work_dir, ckpt_dir, dim)
        text = server.scrape()
    finally:
        rc = server.stop()
        log(f"hardneg-server exited with {rc}")
    with open(os.path.join(work_dir, "metrics.txt"), "w") as f:
        f.write(text)
    problems = []
    rc, out = run([PROMTOOL, "check", "metrics"], input_text=text)
    if rc != 0:
        problems.append(f"promtool check metrics failed:\n{out}")
    names, types, samples = mc.exported_names(text)
    log(f"  /metrics exports {len(types)} families")
    for family, kind in CONTRACT.items():
        if family not in types:
            problems.append(f"contract metric {family} ({kind}) is not exported")
        elif types[family] != kind:
            problems.append(f"{family} is a {types[family]}, want {kind}")
    # Every name the dashboard and the rules select.
    d = mc.load_dashboard()
    used = {}
    for where, expr, _ in mc.dashboard_queries(d):
        for name in mc.promql_metric_names(expr):
            used.setdefault(name, []).append("dashboard " + where)
    for where, expr in mc.rule_queries(mc.load_rules()):
        for name in mc.promql_metric_names(expr):
            used.setdefault(name, []).append(where)
    for name, wheres in sorted(used.items()):
        if name == "up":
            continue
        if name not in names:
            problems.append(f"{name} is not exported by hardneg-server; used by "
                            + "; ".join(sorted(set(wheres))[:4]))
    log(f"  {len(used)} metric names used by the dashboard and rules: "
        + ", ".join(sorted(used)))
    # The labels they group and filter by.
    for family, labels in LABELS_USED.items():
        have = set()
        for n, ls, _ in samples:
            if mc.family_of(n, types) == family:
                have |= set(ls)
        if have and not labels <= have:
            problems.append(f"{family} lacks labels {sorted(labels - have)} "
                            f"(has {sorted(have)})")
    rpcs = {ls.get("rpc") for n, ls, _ in samples
            if n == "hardneg_mine_latency_seconds_count"}
    if not {"Mine", "MineOnce"} <= rpcs:
        problems.append(f"hardneg_mine_latency_seconds rpc values {sorted(rpcs)}, "
                        "want Mine and MineOnce")
    codes = {ls.get("code") for n, ls, _ in samples
             if n == "hardneg_requests_failed_total"}
    if "INVALID_ARGUMENT" not in codes:
        problems.append(f"hardneg_requests_failed_total codes {sorted(codes)}: "
                        "no INVALID_ARGUMENT after bad requests (want gRPC code "
                        "names)")
    methods = {ls.get("grpc_method") for n, ls, _ in samples
               if n == "grpc_server_handled_total"}
    if not {"Mine", "MineOnce"} <= methods:
        problems.append(f"grpc_server_handled_total grpc_method values "
                        f"{sorted(methods)}, want Mine and MineOnce")
    buckets = sorted(float(ls["le"]) for n, ls, _ in samples
                     if n == "hardneg_mine_latency_seconds_bucket"
                     and ls.get("rpc") == "MineOnce" and ls.get("le") != "+Inf")
    if buckets and (buckets[0] > 0.0001 * 1.001 or buckets[-1] < 10 * 0.999):
        problems.append(f"hardneg_mine_latency_seconds buckets run {buckets[0]}"
                        f"..{buckets[-1]}, want 100us..10s")
    if problems:
        raise Failure("\n".join(problems))


def main():
    args, work_dir = mc.parse_args_and_work_dir(__doc__, "hardneg-monitoring-")
    checks = [
        ("yamllint", check_yamllint),
        ("alert rules: promtool check rules + test rules", check_rules),
        ("scrape config: promtool check config", check_scrape_config),
        ("grafana dashboard: structure and PromQL", check_dashboard),
        ("dashboard and rules use only exported metrics", lambda w: check_against_server(args, w)),
    ]
    failed = []
    try:
        for name, fn in checks:
            log(f"=== {name}")
            try:
                fn(work_dir)
                log(f"ok   {name}")
            except Failure as e:
                log(f"FAIL {name}:\n  " + str(e).replace("\n", "\n  "))
                failed.append(name)
            except Exception:  # noqa: BLE001 - report and go on
                log(f"FAIL {name}:\n{traceback.format_exc()}")
                failed.append(name)
    finally:
        mc.stop_all()
    log(f"{len(checks) - len(failed)} passed, {len(failed)} failed"
        + (": " + "; ".join(failed) if failed else ""))
    log(f"(work dir: {work_dir})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

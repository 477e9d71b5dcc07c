#!/usr/bin/python3
"""A real Prometheus scrapes a real hardneg-server while requests run.

  1. writes a checkpoint with numpy and starts hardneg-server on it
     (--grpc_port 0 --metrics_port 0, 127.0.0.1);
  2. starts Debian's /usr/bin/prometheus on 127.0.0.1 (a free port, a
     temporary TSDB) scraping the server every second under job="hardneg",
     with deploy/monitoring/alert-rules.yaml loaded;
  3. swaps in a second checkpoint, sends a few requests on a Mine stream and
     a few bad MineOnce calls, then a known number of MineOnce calls at a
     steady pace, timing each one;
  4. once Prometheus has scraped after the last request, queries its HTTP
     API and checks:
       - hardneg_queries_total equals the queries sent, exactly, and the
         negatives / shortfall / failure / gRPC counters what was sent;
       - histogram_quantile(0.5, sum by (le) (rate(
         hardneg_mine_latency_seconds_bucket[1m]))) is finite, positive and
         within a generous factor of the median latency the client measured;
       - rate(hardneg_queries_total) over the steady part of the run is within
         a generous factor of sent queries / duration;
       - every metric the dashboard uses has series, every dashboard query
         evaluates, and every alert rule evaluates without error.

If /usr/bin/prometheus is missing the test FAILS and says so. Every wait is
bounded; the server and Prometheus are stopped on exit, however it ends.

Usage:
  /usr/bin/python3 tests/monitoring/prometheus_e2e.py \
      --server build/server/hardneg-server [--proto_dir proto] [--work_dir DIR]
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import monitoring_common as mc  # noqa: E402
from monitoring_common import Failure, log  # noqa: E402

PROMETHEUS = os.environ.get("PROMETHEUS", "/usr/bin/prometheus")
DIM = 32
CANDIDATES = 20000
NUM_NEGATIVES = 5
BATCH = 8             # queries per MineOnce call
CALLS = 240           # MineOnce calls in the paced phase
PACE = 40.0           # calls per second in the paced phase (~6 s)
STREAM_REQUESTS = 12  # requests on one Mine stream, before the paced phase
BAD_CALLS = 3         # MineOnce calls with a wrong-dimension query
# Generous bounds: the server measures less than the client (no network,
# no Python), and histogram_quantile interpolates inside a bucket.
LATENCY_LOW, LATENCY_HIGH = 1 / 20, 3.0
RATE_LOW, RATE_HIGH = 0.5, 2.0


class Prometheus:
    def __init__(self, work_dir, metrics_port):
        if not os.access(PROMETHEUS, os.X_OK):
            raise Failure(f"{PROMETHEUS} is not installed: this test needs a "
                          "real Prometheus, from Debian's `prometheus` package "
                          "(scripts/install-deps.sh installs it)")
        d = os.path.join(work_dir, "prometheus")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        shutil.copy(os.path.join(mc.MONITORING, "alert-rules.yaml"), d)
        config = os.path.join(d, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global:\n"
                "  scrape_interval: 1s\n"
                "  evaluation_interval: 1s\n"
                "rule_files:\n"
                "  - alert-rules.yaml\n"
                "scrape_configs:\n"
                "  - job_name: hardneg\n"
                "    scrape_interval: 1s\n"
                "    scrape_timeout: 900ms\n"
                "    static_configs:\n"
                f"      - targets: ['127.0.0.1:{metrics_port}']\n")
        self.log_path = os.path.join(d, "prometheus.log")
        for attempt in range(3):
            self.port = mc.free_port()
            self.log_file = open(self.log_path, "w")
            cmd = [PROMETHEUS, f"--config.file={config}",
                   f"--storage.tsdb.path={os.path.join(d, 'tsdb')}",
                   f"--web.listen-address=127.0.0.1:{self.port}",
                   "--storage.tsdb.retention.time=1h"]
            log("starting: " + " ".join(cmd))
            self.proc = subprocess.Popen(cmd, stdout=self.log_file,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=mc.die_with_parent)
            mc.STARTED.append(self.proc)
            deadline = time.time() + 30
            while time.time() < deadline and self.proc.poll() is None:
                try:
                    mc.http_get(f"{self.url}/-/ready", timeout=1)
                    log(f"prometheus ready on 127.0.0.1:{self.port}")
                    return
                except OSError:
                    time.sleep(0.1)
            self.stop()
            if "address already in use" not in mc.tail(self.log_path, 50):
                break
        raise Failure(f"prometheus did not become ready:\n{mc.tail(self.log_path)}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def api(self, path, **params):
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            body = json.loads(mc.http_get(url, timeout=10))
        except urllib.error.HTTPError as e:
            body = json.loads(e.read().decode())
        if body.get("status") != "success":
            raise Failure(f"prometheus {path} {params}: {body.get('errorType')}: "
                          f"{body.get('error')}")
        return body["data"]

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def scalar(self, expr, at=None):
        result = self.query(expr, at)
        if len(result) != 1:
            raise Failure(f"{expr}: {len(result)} series, want 1: {result}")
        return result[0][1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def wait_for(what, fn, timeout):
    """Polls fn() (truthy = done) every 0.2 s for at most timeout seconds."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Failure as e:
            last = e
        time.sleep(0.2)
    raise Failure(f"timed out after {timeout:.0f}s waiting for {what} "
                  f"(last: {last})")


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class Checks:
    def __init__(self):
        self.failed = []
        self.passed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            log(f"ok   {name}" + (f": {detail}" if detail else ""))
        else:
            self.failed.append(name)
            log(f"FAIL {name}" + (f": {detail}" if detail else ""))
        return ok


def run(args, work_dir, checks):
    import numpy as np
    grpc, pb, pb_grpc = mc.load_stubs(args.proto_dir, work_dir)
    if not os.access(PROMETHEUS, os.X_OK):  # before anything slow
        raise Failure(f"{PROMETHEUS} is not installed: this test needs a real "
                      "Prometheus, from Debian's `prometheus` package "
                      "(scripts/install-deps.sh installs it)")
    ckpt_dir = os.path.join(work_dir, "checkpoints")
    os.makedirs(ckpt_dir)
    mc.write_checkpoint(ckpt_dir, "ckpt-1", 1, CANDIDATES, DIM, seed=1)
    server = mc.Server(args.server, ckpt_dir, work_dir,
                       extra=["--poll_interval=500ms", "--threads=2"])
    prom = Prometheus(work_dir, server.metrics_port)
    wait_for("Prometheus to scrape hardneg-server (up == 1)",
             lambda: prom.query('up{job="hardneg"} == 1'), 20)

    # A version swap, seen by the server and by Prometheus.
    seq0 = prom.scalar('hardneg_index_sequence{job="hardneg"}')
    mc.write_checkpoint(ckpt_dir, "ckpt-2", 2, CANDIDATES, DIM, seed=2)
    wait_for("hardneg_index_sequence to move after a new checkpoint",
             lambda: prom.query(f'hardneg_index_sequence{{job="hardneg"}} > {seq0}'), 30)

    rng = np.random.default_rng(5)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    grpc.channel_ready_future(channel).result(timeout=20)
    stub = pb_grpc.MinerStub(channel)
    sent_queries = 0
    sent_negatives = 0

    # Requests on one Mine stream (each one is a latency observation).
    stream_reqs = [mc.mine_request(pb, 100 + i, rng.standard_normal((BATCH, DIM)),
                                   NUM_NEGATIVES) for i in range(STREAM_REQUESTS)]
    responses = list(stub.Mine(iter(stream_reqs), timeout=30))
    if len(responses) != STREAM_REQUESTS or any(r.error.code for r in responses):
        raise Failure(f"Mine stream: {len(responses)} responses, errors "
                      f"{[r.error.message for r in responses if r.error.code]}")
    for r in responses:
        sent_queries += len(r.results)
        sent_negatives += sum(len(q.negatives) for q in r.results)

    # Bad MineOnce calls: INVALID_ARGUMENT.
    for i in range(BAD_CALLS):
        try:
            stub.MineOnce(mc.mine_request(pb, 200 + i, rng.standard_normal((1, DIM + 3))),
                          timeout=20)
            raise Failure("a wrong-dimension query was accepted")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise Failure(f"wrong dimension gave {e.code()}, want INVALID_ARGUMENT")

    # The paced phase: CALLS MineOnce calls at PACE per second, each timed.
    requests = [mc.mine_request(pb, 1000 + i, rng.standard_normal((BATCH, DIM)),
                                NUM_NEGATIVES) for i in range(CALLS)]
    latencies = []
    paced_queries = 0
    t_start = time.time()
    for i, req in enumerate(requests):
        delay = t_start + i / PACE - time.time()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        resp = stub.MineOnce(req, timeout=20)
        latencies.append(time.perf_counter() - t0)
        paced_queries += len(resp.results)
        sent_negatives += sum(len(q.negatives) for q in resp.results)
        if time.time() - t_start > 40:
            raise Failure(f"the paced phase is too slow: {i + 1} calls in 40 s")
    t_end = time.time()
    channel.close()
    sent_queries += paced_queries
    duration = t_end - t_start
    client_p50 = percentile(latencies, 0.5)
    log(f"sent: {STREAM_REQUESTS} Mine requests + {CALLS} MineOnce calls of "
        f"{BATCH} queries ({sent_queries} queries, {sent_negatives} negatives "
        f"returned), {BAD_CALLS} bad MineOnce calls; paced phase "
        f"{duration:.2f} s, {paced_queries / duration:.1f} q/s; client p50 "
        f"{client_p50 * 1e3:.2f} ms, p99 {percentile(latencies, 0.99) * 1e3:.2f} ms")

    # Prometheus must have scraped after the last request was answered.
    settle = t_end + 0.5
    wait_for("a scrape after the last request",
             lambda: prom.scalar('timestamp(hardneg_queries_total{job="hardneg"})') > settle,
             15)
    at = time.time()

    def total(expr):
        return prom.scalar(f"sum({expr}) or vector(0)", at)

    got = total('hardneg_queries_total{job="hardneg"}')
    checks.check("hardneg_queries_total == queries sent", got == sent_queries,
                 f"{got:g} vs {sent_queries}")
    got = total('hardneg_negatives_returned_total{job="hardneg"}')
    checks.check("hardneg_negatives_returned_total == negatives returned",
                  got == sent_negatives, f"{got:g} vs {sent_negatives}")
    got = total('hardneg_shortfall_total{job="hardneg"}')
    want = sent_queries * NUM_NEGATIVES - sent_negatives
    checks.check("hardneg_shortfall_total == negatives missing", got == want,
                 f"{got:g} vs {want}")
    got = total('hardneg_requests_failed_total{job="hardneg", code="INVALID_ARGUMENT"}')
    checks.check("hardneg_requests_failed_total{code=INVALID_ARGUMENT} == bad calls",
                 got == BAD_CALLS, f"{got:g} vs {BAD_CALLS}")
    got = total('hardneg_mine_latency_seconds_count{job="hardneg", rpc="Mine"}')
    checks.check("hardneg_mine_latency_seconds_count{rpc=Mine} == stream requests",
                 got == STREAM_REQUESTS, f"{got:g} vs {STREAM_REQUESTS}")
    got = total('hardneg_mine_latency_seconds_count{job="hardneg", rpc="MineOnce"}')
    checks.check("hardneg_mine_latency_seconds_count{rpc=MineOnce} == MineOnce calls",
                 got == CALLS + BAD_CALLS,
                 f"{got:g} vs {CALLS} good + {BAD_CALLS} bad (failures are timed too)")
    got = total('hardneg_batch_size_sum{job="hardneg"}')
    checks.check("hardneg_batch_size_sum == queries sent", got == sent_queries,
                 f"{got:g} vs {sent_queries}")
    # One observation (latency / queries) per answered request.
    got = total('hardneg_query_latency_seconds_count{job="hardneg"}')
    want = STREAM_REQUESTS + CALLS
    checks.check("hardneg_query_latency_seconds_count == answered requests",
                 got == want, f"{got:g} vs {want}")
    got = total('grpc_server_started_total{job="hardneg", grpc_method="MineOnce"}')
    checks.check("grpc_server_started_total{MineOnce} == calls",
                 got == CALLS + BAD_CALLS, f"{got:g} vs {CALLS + BAD_CALLS}")
    got = total('grpc_server_handled_total{job="hardneg", grpc_method="MineOnce", grpc_code="OK"}')
    checks.check("grpc_server_handled_total{MineOnce, OK} == good calls",
                 got == CALLS, f"{got:g} vs {CALLS}")
    got = total('grpc_server_handled_total{job="hardneg", grpc_method="MineOnce", '
                'grpc_code="INVALID_ARGUMENT"}')
    checks.check("grpc_server_handled_total{MineOnce, INVALID_ARGUMENT} == bad calls",
                 got == BAD_CALLS, f"{got:g} vs {BAD_CALLS}")
    got = total('grpc_server_handled_total{job="hardneg", grpc_method="Mine", grpc_code="OK"}')
    checks.check("grpc_server_handled_total{Mine, OK} == 1 stream", got == 1, f"{got:g}")

    # The latency quantile, as the dashboard computes it.
    expr = ('histogram_quantile(0.5, sum by (le) '
            '(rate(hardneg_mine_latency_seconds_bucket{job="hardneg"}[1m])))')
    q50 = prom.scalar(expr, at)
    ok = math.isfinite(q50) and q50 > 0 and \
        client_p50 * LATENCY_LOW <= q50 <= client_p50 * LATENCY_HIGH
    checks.check("p50 mining latency from Prometheus ~ client's", ok,
                 f"{q50 * 1e3:.3f} ms vs client {client_p50 * 1e3:.3f} ms "
                 f"(allowed x{LATENCY_LOW:g}..x{LATENCY_HIGH:g})")
    for rpc in ("Mine", "MineOnce"):
        v = prom.scalar(expr.replace('job="hardneg"', f'job="hardneg", rpc="{rpc}"'), at)
        log(f"     p50 {rpc}: {v * 1e3:.3f} ms")

    # The query rate over the steady middle half of the paced phase.
    window = max(2, round(duration / 2))
    mid = t_start + duration * 0.75
    rate = prom.scalar(f'sum(rate(hardneg_queries_total{{job="hardneg"}}[{window}s]))', mid)
    want = paced_queries / duration
    checks.check("query rate from Prometheus ~ sent / duration",
                 RATE_LOW * want <= rate <= RATE_HIGH * want,
                 f"{rate:.1f} q/s vs {want:.1f} q/s ([{window}s] window ending "
                 f"{mid - t_start:.1f} s into the run)")

    check_dashboard_live(prom, at, checks)
    check_rules_live(prom, checks)
    rc = server.stop()
    checks.check("hardneg-server exits 0 on SIGTERM", rc == 0, f"exit {rc}")
    prom.stop()


def check_dashboard_live(prom, at, checks):
    """Every dashboard metric has series in Prometheus; every query runs."""
    dashboard = mc.load_dashboard()
    queries = mc.dashboard_queries(dashboard)
    names = set()
    for _, expr, _ in queries:
        names |= mc.promql_metric_names(expr)
    have = {m["__name__"] for m, _ in prom.query(
        'count by (__name__) ({job="hardneg"})', at)}
    missing = sorted(names - have)
    checks.check("every metric the dashboard uses has series in Prometheus",
                 not missing, f"missing: {missing}" if missing else f"{len(names)} metrics")
    errors = []
    empty = []
    for where, expr, _ in queries:
        e = expr.replace("$__rate_interval", "1m").replace('"$job"', '"hardneg"') \
                .replace('"$instance"', '".+"')
        e = mc.substitute_grafana(e)
        try:
            if not prom.query(e, at):
                empty.append(where)
        except Failure as err:
            errors.append(f"{where}: {err}")
    checks.check("every dashboard query evaluates", not errors, "; ".join(errors))
    checks.check("every dashboard query has data after the run", not empty,
                 ("empty: " + "; ".join(empty)) if empty else f"{len(queries)} queries")


def check_rules_live(prom, checks):
    """The alert rules, loaded into the real Prometheus, evaluate cleanly;
    none of them fires on a healthy run."""
    def evaluated():
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("health") == "ok" for r in rules) \
            else None
    try:
        rules = wait_for("every alert rule to evaluate with health ok", evaluated, 10)
        checks.check("alert rules evaluate in Prometheus", True, f"{len(rules)} rules")
    except Failure as e:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        bad = [f"{r['name']}: {r.get('health')} {r.get('lastError', '')}" for r in rules
               if r.get("health") != "ok"]
        checks.check("alert rules evaluate in Prometheus", False, f"{e}; {bad}")
    firing = [f"{r['name']} ({r.get('state')})" for r in rules if r.get("state") != "inactive"]
    checks.check("no alert pending or firing on a healthy server", not firing,
                 ", ".join(firing))


def main():
    args, work_dir = mc.parse_args_and_work_dir(__doc__, "hardneg-prometheus-")
    checks = Checks()
    started = time.time()
    try:
        run(args, work_dir, checks)
    except Failure as e:
        checks.check("prometheus e2e run", False, str(e))
    except Exception:  # noqa: BLE001 - report it as a failure
        checks.check("prometheus e2e run", False, traceback.format_exc())
    finally:
        mc.stop_all()
    log(f"{checks.passed} passed, {len(checks.failed)} failed in "
        f"{time.time() - started:.1f} s (work dir: {work_dir})")
    if checks.failed:
        for name, path in (("server stderr", "server.stderr"),
                           ("prometheus log", "prometheus/prometheus.log")):
            text = mc.tail(os.path.join(work_dir, path))
            if text:
                log(f"{name} (tail):\n{text}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())

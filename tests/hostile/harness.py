#!/usr/bin/env python3
"""Fault and load harness: hardneg-server against hostile and careless
clients, on 127.0.0.1 only, every loop bounded in count and time.

Each probe is a named check printing PASS or FAIL with what it measured:

  wire (probes_wire.py): HTTP on the metrics port other than GET /metrics;
    an answer over the 64 MiB message limit; a fetch over
    --max_request_fetch; corrupt messages inside Publish and Mine and as
    unary requests; hostile version names (and base_version); seeded random
    and mutated bytes on every method.
  load (probes_load.py): heavy calls cancelled by their deadline, then a
    small one; Mine streams that never read their answers (RSS < 1 GiB);
    --max_streams and --max_queued_queries; a soak of 32 streams (no error,
    RSS within 5% of its post-warm-up value); SIGTERM under load.
  refresh (probes_refresh.py): a checkpoint over --max_index_bytes (sparse
    files), a manifest of 100,000 nested arrays, malformed manifests and
    symlinks while serving, PROMOTE over a step-2^64-1 publish, kill -9 in
    the middle of a build and of a snapshot, SIGTERM on an idle server 20
    times.

Usage:
  /usr/bin/python3 tests/hostile/harness.py --server build/server/hardneg-server \\
      [--proto_dir proto] [--work_dir DIR] [--short | --soak_seconds 600]

--short (the default, run by ctest) soaks for 40 s and takes about 1.5
minutes on 2 cores; --soak_seconds N soaks for N seconds instead (600 took
10.5 minutes); --only NAME,... runs the checks whose names contain one of
them. Needs
Debian's /usr/bin/python3 with python3-grpcio, python3-numpy and
python3-protobuf, plus protoc and grpc_python_plugin. Prints
`N passed, M failed` last; exits 1 on any failure.
"""

import os
import shutil
import signal
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hostile_common as hc  # noqa: E402
import probes_load  # noqa: E402
import probes_refresh  # noqa: E402
import probes_wire  # noqa: E402
from hostile_common import expect, mc  # noqa: E402

SHORT_SOAK_SECONDS = 40
BASE_ROWS = 100_000  # the index most checks mine: 100k x 64


class Context:
    """What every check uses: the stubs, the staged checkpoints, the main
    server (for the wire checks) and an exact reference of its answers."""

    def __init__(self, args, work_dir, grpc, pb, pbg):
        self.args = args
        self.binary = os.path.abspath(args.server)
        self.work_dir = work_dir
        self.soak_seconds = float(args.soak_seconds)
        self.grpc, self.pb, self.pbg = grpc, pb, pbg
        self.staging = os.path.join(work_dir, "staging")
        os.makedirs(self.staging)
        # Checkpoints written once and hard-linked into each server's root.
        self.base_emb = mc.write_checkpoint(self.staging, "base", 1, BASE_ROWS,
                                            hc.DIM, seed=1)
        mc.write_checkpoint(self.staging, "good", 1, 2000, hc.DIM, seed=2)
        mc.write_checkpoint(self.staging, "v1", 1, 20_000, hc.DIM, seed=3)
        mc.write_checkpoint(self.staging, "v2", 2, 200_000, hc.DIM, seed=4)
        rng = np.random.default_rng(11)
        self.pool = rng.standard_normal((2000, hc.DIM)).astype(np.float32)
        self.main = None
        self.channel = None
        self.stub = None

    def staged(self, name):
        return os.path.join(self.staging, name)

    def queries(self, n):
        return self.pool[:n]

    def query_pool(self, seed, n):
        start = seed % (len(self.pool) - n)
        return self.pool[start:start + n]

    def start_main(self):
        root = os.path.join(self.work_dir, "main")
        os.makedirs(os.path.join(root, "checkpoints"))
        hc.link_checkpoint(self.staged("base"), os.path.join(root, "checkpoints"))
        self.main = hc.Server(self.binary, os.path.join(root, "checkpoints"),
                              os.path.join(root, "log"), extra=["--threads=2"])
        self.channel = hc.channel(self.grpc, self.main)
        self.stub = self.pbg.MinerStub(self.channel)

    def mine_and_verify(self, stub=None, timeout=30):
        """One query, 5 negatives, compared with numpy's exact top 5 over
        the base checkpoint."""
        q = self.pool[1999:2000]
        resp = (stub or self.stub).MineOnce(
            mc.mine_request(self.pb, 99, q, num_negatives=5), timeout=timeout)
        got = [n.id for n in resp.results[0].negatives]
        scores = self.base_emb.astype(np.float64) @ q[0].astype(np.float64)
        want = [1000 + int(i) for i in np.argsort(-scores, kind="stable")[:5]]
        expect(got == want, f"wrong answer: ids {got}, expected {want}")

    def expect_serving(self):
        expect(self.main.alive(), "the server died")
        info = hc.index_info(self.stub, self.pb)
        expect(info.version.name == "base", f"serves {info.version.name}")
        self.mine_and_verify()


def add_arguments(parser):
    parser.add_argument("--short", action="store_true", default=True,
                        help=f"the CI run (default): a {SHORT_SOAK_SECONDS} s soak")
    def soak_seconds(text):
        seconds = float(text)
        if seconds < 15:  # a 10 s warm-up, then something to compare
            raise ValueError("the soak needs at least 15 s")
        return seconds
    parser.add_argument("--soak_seconds", type=soak_seconds,
                        default=SHORT_SOAK_SECONDS,
                        help="how long the 32-stream soak runs, at least 15 "
                             "(the long soak: 600)")
    parser.add_argument("--random_messages", type=int, default=600,
                        help="random and mutated messages over all methods")
    parser.add_argument("--sigterm_repeats", type=int, default=20)
    parser.add_argument("--only", default="",
                        help="comma-separated parts of check names: run only "
                             "those (servers are still started)")


def run(ctx, checks):
    ctx.start_main()
    wire = [
        ("http_metrics_port_other_paths", probes_wire.check_http_other_paths),
        ("mine_once_answer_over_message_limit", probes_wire.check_reply_too_large),
        ("mine_once_fetch_over_max_request_fetch", probes_wire.check_fetch_budget),
        ("corrupt_message_inside_publish", probes_wire.check_corrupt_publish),
        ("corrupt_message_inside_mine", probes_wire.check_corrupt_mine),
        ("corrupt_unary_requests", probes_wire.check_corrupt_unary),
        ("hostile_version_names", probes_wire.check_hostile_names),
        ("hostile_base_version_names", probes_wire.check_hostile_base_version),
    ]
    for name, fn in wire:
        checks.run(name, fn, ctx)
    checks.run("random_bytes_every_method", probes_wire.check_random_bytes, ctx,
               ctx.args.random_messages)
    checks.run("cancelled_heavy_calls_then_tiny", probes_load.check_cancelled_heavy,
               ctx)

    def main_exits_cleanly():
        ctx.channel.close()
        rc, seconds = ctx.main.terminate()
        expect(rc == 0, f"exit code {rc}")
        return f"exit 0 in {seconds:.2f} s after all of the above"
    checks.run("main_server_sigterm_after_wire_probes", main_exits_cleanly)

    limits = probes_load.start_limits_server(ctx)
    checks.run("max_streams_refuses_with_resource_exhausted",
               probes_load.check_stream_limit, ctx, limits)
    checks.run("max_queued_queries_refuses_with_resource_exhausted",
               probes_load.check_queue_limit, ctx, limits)
    limits.terminate()

    checks.run("nonreading_streams", probes_load.check_nonreading_streams, ctx,
               "small", 32, 32)
    # Answers near the 64 MiB message limit: the in-flight limit of 16
    # requests a stream bounds the count, not the bytes. Two such streams
    # fit in 1 GiB only if the server bounds the bytes of unread answers.
    checks.run("nonreading_streams_large_answers",
               probes_load.check_nonreading_streams, ctx, "large", 20, 10_000, 2)
    checks.run("sigterm_idle_after_large_answer",
               probes_load.check_sigterm_after_large_answer, ctx)

    checks.run("checkpoint_over_max_index_bytes", probes_refresh.check_over_budget,
               ctx)
    checks.run("manifest_nested_100000_deep", probes_refresh.check_deep_manifest,
               ctx)
    checks.run("bad_manifests_while_serving", probes_refresh.check_bad_manifests,
               ctx)
    checks.run("promote_over_step_2_64_minus_1", probes_refresh.check_promote, ctx)
    kill = probes_refresh.KillScenario(ctx)
    try:
        checks.run("kill9_mid_build", kill.mid_build)
        checks.run("kill9_mid_snapshot_then_restart", kill.mid_snapshot)
    finally:
        kill.cleanup()
    checks.run("sigterm_idle_repeated", probes_refresh.check_sigterm_idle, ctx,
               ctx.args.sigterm_repeats)

    soak = probes_load.start_soak_server(ctx)
    checks.run("soak_32_streams", probes_load.check_soak, ctx, soak)
    checks.run("sigterm_under_load", probes_load.check_sigterm_under_load, ctx,
               soak)


def remove_data(work_dir):
    """After a clean run: the checkpoints, snapshots and sparse files go (a
    few hundred MB, and an 8 GiB apparent size), the servers' logs stay."""
    for top, dirs, _ in os.walk(work_dir):
        for d in list(dirs):
            if d in ("staging", "checkpoints", "data", "outside"):
                shutil.rmtree(os.path.join(top, d), ignore_errors=True)
                dirs.remove(d)


def main():
    args, work_dir = mc.parse_args_and_work_dir(
        __doc__, "hardneg-hostile-", add_arguments,
        deadline_seconds=lambda a: int(330 + a.soak_seconds))
    checks = hc.Checks([o for o in args.only.split(",") if o])
    # monitoring_common's handlers stop the servers and exit; the check
    # that was running fails first, and the closing line is printed.
    for signum in (signal.SIGALRM, signal.SIGINT, signal.SIGTERM):
        stop = signal.getsignal(signum)

        def interrupted(num, frame, stop=stop):
            why = ("ran past the deadline" if num == signal.SIGALRM
                   else f"interrupted by {signal.Signals(num).name}")
            checks.fail(checks.current or "harness", why)
            hc.log(checks.summary())
            stop(num, frame)
        signal.signal(signum, interrupted)
    try:
        grpc, pb, pbg = mc.load_stubs(args.proto_dir, work_dir)
        run(Context(args, work_dir, grpc, pb, pbg), checks)
    except Exception as e:  # setup failed: report it as a check
        checks.fail(checks.current or "harness setup", f"{type(e).__name__}: {e}")
    finally:
        mc.stop_all()
    if not checks.failed:
        remove_data(work_dir)
    hc.log(checks.summary())
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())

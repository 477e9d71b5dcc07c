"""Refresh faults: hostile checkpoints at start and while serving, PROMOTE,
kill -9 in the middle of a build and of a snapshot, SIGTERM when idle.

Each check starts its own servers on its own checkpoint root (under
ctx.work_dir) and stops them before it returns.
"""

import json
import os
import shutil
import statistics
import time

import hostile_common as hc
from hostile_common import expect
import probes_wire


def new_root(ctx, name):
    root = os.path.join(ctx.work_dir, name)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "checkpoints"))
    return root


def serving(ctx, server, name, timeout=30):
    """Waits until `server` serves a version called `name`; returns the
    IndexInfo."""
    ch = hc.channel(ctx.grpc, server)
    try:
        stub = ctx.pbg.MinerStub(ch)

        def served():
            info = hc.index_info(stub, ctx.pb)
            return info if info.version.name == name else None
        return hc.wait_for(f"{name} to serve", served, timeout)
    finally:
        ch.close()


def start_and_stop_twice(ctx, root, flags, bad_dir, needle):
    """Starts a server on root/checkpoints with a hostile checkpoint
    `bad_dir` beside `good`: it serves good, last_rejected names bad_dir
    and says `needle`, SIGTERM exits 0. Then once more: the rejection is
    remembered in --data_dir (rejected-checkpoints.tsv) and the second
    start neither crashes nor reads the checkpoint again."""
    seen = []
    reason = ""
    for attempt in (1, 2):
        start = time.monotonic()
        server = hc.Server(ctx.binary, os.path.join(root, "checkpoints"),
                           os.path.join(root, f"log{attempt}"), extra=flags)
        started = time.monotonic() - start
        try:
            info = serving(ctx, server, "good")
            if attempt == 1:
                reason = info.last_rejected
                expect(bad_dir in reason and needle in reason,
                       f"last_rejected does not name {bad_dir} and say "
                       f"{needle!r}: {reason!r}")
                # The operator's log says it too, in the flags' words.
                logged = [line for line in server.stderr().split(b"\n")
                          if b"event=version_rejected" in line
                          and bad_dir.encode() in line]
                expect(logged and needle.encode() in logged[0],
                       f"no event=version_rejected line naming {bad_dir} "
                       f"and saying {needle!r}: {logged[:1]!r}")
            else:
                with open(os.path.join(root, "data",
                                       "rejected-checkpoints.tsv")) as f:
                    remembered = f.read()
                expect(bad_dir in remembered,
                       f"{bad_dir} is not in rejected-checkpoints.tsv")
        finally:
            rc, seconds = server.terminate()
        expect(rc == 0, f"start {attempt}: SIGTERM exit code {rc}; log:\n"
               f"{server.log_tail()}")
        seen.append(f"start {attempt}: up in {started:.2f} s, serving good, "
                    f"exit 0 in {seconds:.2f} s")
    return "; ".join(seen) + f"; last_rejected: {reason[:200]}"


# ------------------------------------------------------------------ at start


def check_over_budget(ctx):
    """A checkpoint whose .npy headers claim 2^29 x 4 float32 rows (8 GiB,
    a sparse file) under --max_index_bytes 1 GiB: rejected from its
    headers, the good checkpoint serves, no crash at start or restart."""
    root = new_root(ctx, "over_budget")
    ckpts = os.path.join(root, "checkpoints")
    hc.link_checkpoint(ctx.staged("good"), ckpts)
    huge = os.path.join(ckpts, "huge")
    os.makedirs(huge)
    rows = 1 << 29
    size = hc.write_sparse_npy(os.path.join(huge, "embeddings-00000.npy"),
                               "<f4", (rows, 4), 4)
    hc.write_sparse_npy(os.path.join(huge, "ids-00000.npy"), "<i8", (rows,), 8)
    hc.write_manifest(huge, hc.shard_manifest("huge", 2, dim=4))
    flags = [f"--max_index_bytes={1 << 30}", f"--data_dir={root}/data",
             "--threads=1"]
    return (f"{size / 2**30:.1f} GiB sparse embeddings; "
            + start_and_stop_twice(ctx, root, flags, "huge", "max_index_bytes"))


def check_deep_manifest(ctx):
    """manifest.json of 100,000 nested arrays: rejected, no crash at start
    or restart."""
    root = new_root(ctx, "deep_manifest")
    ckpts = os.path.join(root, "checkpoints")
    hc.link_checkpoint(ctx.staged("good"), ckpts)
    hc.write_manifest(os.path.join(ckpts, "deep"), None,
                      raw="[" * 100_000 + "]" * 100_000)
    flags = [f"--data_dir={root}/data", "--threads=1"]
    return start_and_stop_twice(ctx, root, flags, "deep", "nested deeper")


# ------------------------------------------------------------------ while serving


def bad_checkpoints(ctx, ckpts, outside):
    """(directory, how to write it, what last_rejected must say)."""
    good = ctx.staged("good")

    def files(d):
        os.makedirs(d)
        for name in ("embeddings-00000.npy", "ids-00000.npy"):
            os.link(os.path.join(good, name), os.path.join(d, name))

    def malformed(d):
        hc.write_manifest(d, None, raw='{"name": "bad-json", "step": 10, ')

    def dotdot(d):
        files(d)
        hc.write_manifest(d, hc.shard_manifest(
            "dotdot", 11, embeddings="../good/embeddings-00000.npy"))

    def absolute(d):
        files(d)
        hc.write_manifest(d, hc.shard_manifest(
            "absolute", 12, embeddings=os.path.join(good, "embeddings-00000.npy")))

    def negative_step(d):
        files(d)
        hc.write_manifest(d, hc.shard_manifest("negative-step", -5))

    def bad_name(d):
        files(d)
        hc.write_manifest(d, hc.shard_manifest("../../x", 13))

    def oversized(d):
        files(d)
        manifest = hc.shard_manifest("oversized", 14)
        manifest["padding"] = "x" * (5 << 20)
        hc.write_manifest(d, manifest)

    def symlinked_shard(d):
        os.makedirs(d)
        os.symlink(os.path.join(outside, "embeddings-00000.npy"),
                   os.path.join(d, "embeddings-00000.npy"))
        os.link(os.path.join(good, "ids-00000.npy"),
                os.path.join(d, "ids-00000.npy"))
        hc.write_manifest(d, hc.shard_manifest("symlinked-shard", 15))

    def symlinked_manifest(d):
        files(d)
        tmp = os.path.join(d, ".manifest.tmp")
        os.symlink(os.path.join(outside, "manifest.json"), tmp)
        os.rename(tmp, os.path.join(d, "manifest.json"))

    def symlinked_dir(d):
        os.symlink(outside, d)

    return [
        ("malformed-json", malformed, "not valid JSON"),
        ("dotdot-path", dotdot, '".."'),
        ("absolute-path", absolute, "absolute path"),
        ("negative-step", negative_step, "non-negative"),
        ("bad-name", bad_name, "version name"),
        ("manifest-over-4mib", oversized, "over the limit of 4194304"),
        ("symlinked-shard", symlinked_shard, "symbolic link"),
        ("symlinked-manifest", symlinked_manifest, "symbolic link"),
        ("symlinked-dir", symlinked_dir, "symbolic link"),
    ]


def check_bad_manifests(ctx):
    """While `good` serves: a malformed manifest, `..` and absolute shard
    paths, a negative step, a bad name, a manifest over 4 MiB, symlinks
    leading outside (shard, manifest, checkpoint directory). Each is logged
    (event=version_rejected naming it) and reported in last_rejected; the
    served version never changes."""
    root = new_root(ctx, "bad_manifests")
    ckpts = os.path.join(root, "checkpoints")
    hc.link_checkpoint(ctx.staged("good"), ckpts)
    # A valid checkpoint outside the root, with a higher step, which the
    # symlinks lead to.
    outside = os.path.join(root, "outside")
    hc.mc.write_checkpoint(root, "outside", 99, 100, hc.DIM, seed=5)
    server = hc.Server(ctx.binary, ckpts, os.path.join(root, "log"),
                       extra=["--poll_interval=200ms", "--threads=1"])
    ch = hc.channel(ctx.grpc, server)
    seen = []
    try:
        stub = ctx.pbg.MinerStub(ch)
        first = serving(ctx, server, "good")
        for dirname, write, needle in bad_checkpoints(ctx, ckpts, outside):
            before = hc.index_info(stub, ctx.pb).rejected_total
            write(os.path.join(ckpts, dirname))
            info = hc.wait_for_rejection(stub, ctx.pb, before, dirname)
            expect(needle in info.last_rejected,
                   f"{dirname}: last_rejected does not say {needle!r}: "
                   f"{info.last_rejected[:300]!r}")
            expect(info.version.name == "good"
                   and info.version.sequence == first.version.sequence,
                   f"{dirname}: the served version changed to "
                   f"{info.version.name}@{info.version.sequence}")
            logged = [line for line in server.stderr().split(b"\n")
                      if b"event=version_rejected" in line
                      and dirname.encode() in line]
            expect(logged, f"{dirname}: no event=version_rejected log line")
            seen.append(f"{dirname}: {info.last_rejected[len(dirname) + 2:][:70]}")
    finally:
        ch.close()
        rc, _ = server.terminate()
    expect(rc == 0, f"SIGTERM exit code {rc}")
    return f"{len(seen)} rejected, still serving good: " + " | ".join(seen)


def check_promote(ctx):
    """A publish with step 2^64-1 would serve for ever; a PROMOTE file
    naming a checkpoint serves it anyway, and newer steps follow."""
    root = new_root(ctx, "promote")
    ckpts = os.path.join(root, "checkpoints")
    hc.link_checkpoint(ctx.staged("good"), ckpts)
    server = hc.Server(ctx.binary, ckpts, os.path.join(root, "log"),
                       extra=["--poll_interval=200ms", "--threads=1"])
    ch = hc.channel(ctx.grpc, server)
    pb = ctx.pb
    try:
        stub = ctx.pbg.MinerStub(ch)
        serving(ctx, server, "good")
        top = (1 << 64) - 1
        published = stub.Publish(iter([
            probes_wire.publish_header(pb, "forever", step=top),
            probes_wire.publish_chunk(pb, 200)]), timeout=60)
        info = hc.index_info(stub, pb)
        expect(info.version.name == "forever" and info.step == top,
               f"the publish did not serve: {info.version.name} step {info.step}")
        hc.mc.write_checkpoint(ckpts, "late", 30, 300, hc.DIM, seed=6)
        # Not served: its step is lower (a scan is at most 200 ms away).
        time.sleep(1.0)
        info = hc.index_info(stub, pb)
        expect(info.version.name == "forever",
               f"a step-30 checkpoint replaced step 2^64-1: {info.version.name}")
        tmp = os.path.join(ckpts, ".PROMOTE.tmp")
        with open(tmp, "w") as f:
            f.write("late\n")
        os.rename(tmp, os.path.join(ckpts, "PROMOTE"))
        promoted = serving(ctx, server, "late")
        expect(b"event=version_promote" in server.stderr(),
               "no event=version_promote log line")
        hc.mc.write_checkpoint(ckpts, "after", 31, 300, hc.DIM, seed=7)
        after = serving(ctx, server, "after")
    finally:
        ch.close()
        rc, _ = server.terminate()
    expect(rc == 0, f"SIGTERM exit code {rc}")
    return (f"forever@{published.version.sequence} (step 2^64-1) served; "
            f"PROMOTE late -> late@{promoted.version.sequence} step "
            f"{promoted.step}; then after@{after.version.sequence} step "
            f"{after.step}")


# ------------------------------------------------------------------ kill -9


class KillScenario:
    """v1 serves with --data_dir and an IVF index (whose build takes a
    moment); v2 (200k rows) arrives. The first server is killed while v2
    builds, the second (which retries v2: a first interruption is forgiven)
    while v2's snapshot is written, the third must serve v1 and refuse v2
    (interrupted twice), until v2's manifest is rewritten."""

    FLAGS = ["--index=IVF64,Flat", "--poll_interval=100ms", "--threads=1"]

    def __init__(self, ctx):
        self.ctx = ctx
        self.root = new_root(ctx, "kill9")
        self.ckpts = os.path.join(self.root, "checkpoints")
        self.data = os.path.join(self.root, "data")
        self.flags = self.FLAGS + [f"--data_dir={self.data}"]
        self.second = None  # the server restarted after the first kill
        self.first_done = False

    def start(self, n):
        return hc.Server(self.ctx.binary, self.ckpts,
                         os.path.join(self.root, f"log{n}"), extra=self.flags)

    def info(self, server):
        ch = hc.channel(self.ctx.grpc, server)
        try:
            return hc.index_info(self.ctx.pbg.MinerStub(ch), self.ctx.pb)
        finally:
            ch.close()

    def mid_build(self):
        ctx = self.ctx
        hc.link_checkpoint(ctx.staged("v1"), self.ckpts)
        first = self.start(1)
        ch = hc.channel(ctx.grpc, first)
        try:
            stub = ctx.pbg.MinerStub(ch)
            serving(ctx, first, "v1")
            hc.link_checkpoint(ctx.staged("v2"), self.ckpts)
            building = hc.wait_for(
                "GetIndexInfo.building to name v2",
                lambda: (lambda i: i if i.building == "v2" else None)(
                    hc.index_info(stub, ctx.pb)), 60, interval=0.002)
        finally:
            ch.close()
        rc = first.kill9()
        expect(rc == -9, f"the killed server's exit code is {rc}")
        start = time.monotonic()
        self.second = self.start(2)
        info = self.info(self.second)
        up = time.monotonic() - start
        expect(info.version.name == "v1" and info.version.sequence == 1,
               f"after the kill the restarted server serves "
               f"{info.version.name}@{info.version.sequence}, not v1@1")
        self.first_done = True
        return (f"killed (exit {rc}) while building v2 (progress "
                f"{building.build_progress:.2f}); restarted in {up:.2f} s "
                f"serving v1@1 from its snapshot")

    def mid_snapshot(self):
        expect(self.first_done, "skipped: kill9_mid_build did not pass")
        ctx = self.ctx

        def snapshotting():
            return [n for n in os.listdir(self.data)
                    if n.startswith(".tmp-snapshot-")]
        tmp = hc.wait_for("the restarted server to snapshot v2 again",
                          snapshotting, 60, interval=0.002)
        rc = self.second.kill9()
        expect(rc == -9, f"the killed server's exit code is {rc}")
        third = self.start(3)
        try:
            info = self.info(third)
            expect(info.version.name == "v1" and info.version.sequence == 1,
                   f"after the kill mid-snapshot the server serves "
                   f"{info.version.name}@{info.version.sequence}, not v1@1")
            left = [n for n in os.listdir(self.data) if n.startswith(".tmp-")]
            expect(not left, f"half-written snapshots left: {left}")
            rejected = hc.wait_for(
                "v2 to be refused as interrupted twice",
                lambda: (lambda i: i if "interrupted" in i.last_rejected
                         else None)(self.info(third)), 20)
            # Rewriting the manifest is the documented way to try again.
            with open(os.path.join(self.ckpts, "v2", "manifest.json")) as f:
                manifest = json.load(f)
            hc.write_manifest(os.path.join(self.ckpts, "v2"), manifest)
            v2 = serving(ctx, third, "v2", timeout=90)
            expect(v2.version.sequence == 2,
                   f"v2 serves as sequence {v2.version.sequence}, not 2")
        finally:
            rc3, seconds = third.terminate()
        expect(rc3 == 0, f"SIGTERM exit code {rc3}")
        return (f"killed (exit {rc}) while {tmp[0]} was written; restart "
                f"serves v1@1, no .tmp- left, v2 refused: "
                f"{rejected.last_rejected[:110]!r}; manifest rewritten -> "
                f"v2@2; SIGTERM exit 0 in {seconds:.2f} s")

    def cleanup(self):
        if self.second is not None and self.second.alive():
            self.second.kill9()


# ------------------------------------------------------------------ SIGTERM


def check_sigterm_idle(ctx, repeats):
    """Start, one GetIndexInfo, SIGTERM: exit 0, `repeats` times."""
    root = new_root(ctx, "sigterm_idle")
    ckpts = os.path.join(root, "checkpoints")
    hc.link_checkpoint(ctx.staged("good"), ckpts)
    times = []
    for i in range(repeats):
        server = hc.Server(ctx.binary, ckpts, os.path.join(root, f"log{i % 2}"),
                           extra=["--threads=1"])
        try:
            # serving() closes its channel before the SIGTERM, as a finished
            # client does.
            serving(ctx, server, "good")
        finally:
            rc, seconds = server.terminate()
        expect(rc == 0, f"start {i + 1}: SIGTERM exit code {rc}; log:\n"
               f"{server.log_tail()}")
        times.append(seconds)
    return (f"{repeats} x exit 0; exit took median "
            f"{statistics.median(times):.3f} s, max {max(times):.3f} s")

"""Load faults: cancelled heavy calls, streams that never read, the stream
and queue limits, the soak, SIGTERM under load.

Every loop is bounded in count or time; every call has a deadline.
"""

import os
import queue
import threading
import time

import hostile_common as hc
from hostile_common import Failure, expect

GIB = 1 << 30


def metric(server, name, **labels):
    _, samples = hc.mc.parse_exposition(server.scrape())
    return hc.mc.value(samples, name, **labels) or 0.0


class StreamFeed:
    """A Mine stream fed from a queue: put() requests, close() half-closes."""

    def __init__(self, stub, timeout):
        self.requests = queue.Queue()
        self.sent = 0
        self.call = stub.Mine(self._iterate(), timeout=timeout)

    def _iterate(self):
        while True:
            req = self.requests.get()
            if req is None:
                return
            self.sent += 1
            yield req

    def put(self, req):
        self.requests.put(req)

    def close(self):
        self.requests.put(None)


# ------------------------------------------------------------------ cancelled


def check_cancelled_heavy(ctx, calls=40):
    """`calls` heavy MineOnce (2,000 queries over 100k rows) with a 100 ms
    deadline, then a one-query request: it must not wait behind the
    cancelled ones (they are not mined)."""
    pb, server = ctx.pb, ctx.main
    heavy = hc.mc.mine_request(pb, 1, ctx.queries(2000), num_negatives=10)
    heavy_bytes = heavy.SerializeToString()
    start = time.monotonic()
    ctx.stub.MineOnce(heavy, timeout=120)
    heavy_seconds = time.monotonic() - start
    batches = metric(server, "hardneg_batch_size_count")
    cancelled = metric(server, "hardneg_requests_failed_total", code="CANCELLED")
    once = ctx.channel.unary_unary("/hardneg.v1.Miner/MineOnce")
    futures = [once.future(heavy_bytes, timeout=0.1) for _ in range(calls)]
    codes = {}
    for f in futures:
        try:
            f.result(timeout=120)
            codes["OK"] = codes.get("OK", 0) + 1
        except ctx.grpc.RpcError as e:
            code = hc.code_name(e.code())
            codes[code] = codes.get(code, 0) + 1
        except ctx.grpc.FutureTimeoutError:
            raise Failure("a 100 ms-deadline call did not end within 120 s")
    start = time.monotonic()
    ctx.mine_and_verify(timeout=120)
    recovery = time.monotonic() - start
    mined = metric(server, "hardneg_batch_size_count") - batches - 1
    skipped = metric(server, "hardneg_requests_failed_total",
                     code="CANCELLED") - cancelled
    expect(recovery < 30, f"the tiny request took {recovery:.1f} s (> 30 s) "
           f"after {calls} cancelled heavy calls")
    # A call can only be mined if a worker takes it within its 100 ms.
    expect(mined <= 10, f"the server mined {mined:.0f} of {calls} calls whose "
           "deadline had passed")
    return (f"one heavy call takes {heavy_seconds:.2f} s; {calls} cancelled "
            f"calls ended {codes}; the server mined {mined:.0f} of them and "
            f"skipped {skipped:.0f} as cancelled; then a one-query request "
            f"answered (exactly) in {recovery:.2f} s")


# ------------------------------------------------------------------ non-reading


def check_nonreading_streams(ctx, label, queries, negatives, streams=10,
                             requests=200, limit=GIB, settle=2.0, bound=40.0):
    """`streams` Mine streams send up to `requests` requests each (every
    answer with embeddings, `queries` x `negatives`) and never read. The
    server mines what it reads, at least one a stream, up to its in-flight
    limits (16 requests, and --max_stream_reply_bytes of answers), then
    stops reading; its RSS once it has settled (at least one a stream mined,
    and no more for `settle` seconds) must be under `limit`. RSS is sampled every 20 ms;
    past the limit everything is cancelled at once (the machine is
    shared)."""
    pb = ctx.pb
    root = os.path.join(ctx.work_dir, f"nonreading_{label}")
    os.makedirs(os.path.join(root, "checkpoints"), exist_ok=True)
    hc.link_checkpoint(ctx.staged("base"), os.path.join(root, "checkpoints"))
    server = hc.Server(ctx.binary, os.path.join(root, "checkpoints"),
                       os.path.join(root, "log"), extra=["--threads=2"])
    ch = hc.channel(ctx.grpc, server)
    stub = ctx.pbg.MinerStub(ch)
    req = hc.mc.mine_request(pb, 0, ctx.queries(queries), negatives)
    req.options.return_embeddings = True
    answer_bytes = queries * negatives * (45 + 4 * hc.DIM)

    def mined():
        return metric(server, "hardneg_mine_latency_seconds_count", rpc="Mine")
    feeds = []
    base = server.rss()
    peak, over, end_rss, settled, count = base, None, base, None, 0.0
    try:
        try:
            for _ in range(streams):
                feed = StreamFeed(stub, timeout=120)
                for i in range(requests):
                    r = type(req)()
                    r.CopyFrom(req)
                    r.request_id = i
                    feed.put(r)
                feed.close()
                feeds.append(feed)
            start = time.monotonic()
            last_count, last_change = -1.0, start
            while time.monotonic() - start < bound:
                rss = server.rss()
                peak = max(peak, rss)
                end_rss = rss
                if rss > limit:
                    over = time.monotonic() - start
                    break
                count = mined()
                now = time.monotonic()
                if count != last_count:
                    last_count, last_change = count, now
                elif count >= streams and now - last_change >= settle:
                    settled = now - start
                    break
                time.sleep(0.02)
            count = mined()
        finally:
            for feed in feeds:
                feed.call.cancel()
        expect(server.alive(), "the server died")
        ctx.mine_and_verify(stub=stub, timeout=60)
    finally:
        ch.close()
        rc, exit_seconds = server.terminate()
    sent = sum(f.sent for f in feeds)
    state = (f"settled after {settled:.1f} s" if settled is not None
             else f"passed {limit / 2**30:.0f} GiB after {over:.2f} s, when "
             "everything was cancelled" if over is not None
             else f"still mining after {bound:.0f} s")
    measured = (f"{streams} streams, answers of ~{answer_bytes / 1e6:.1f} MB "
                f"({queries} queries x {negatives} negatives with embeddings): "
                f"{sent} requests handed to gRPC, {count:.0f} mined, {state}; "
                f"RSS {base / 1e6:.0f} MB at start, {end_rss / 1e6:.0f} MB at "
                f"the end, peak {peak / 1e6:.0f} MB; after cancelling: exact "
                f"answers, SIGTERM exit {rc} in {exit_seconds:.1f} s")
    expect(over is None, f"RSS over {limit / 2**30:.0f} GiB: {measured}")
    expect(settled is not None, f"the server never stopped reading: {measured}")
    expect(rc == 0, f"SIGTERM exit code {rc}")
    return measured


def check_sigterm_after_large_answer(ctx, attempts=5, grace=2.0, margin=5.0):
    """A server that sent one large answer (20 queries x 10,000 negatives
    with embeddings, ~60 MB, read in full) and is idle again: SIGTERM exits
    0 within --shutdown_grace + `margin`, each of `attempts` times."""
    pb = ctx.pb
    root = os.path.join(ctx.work_dir, "sigterm_large")
    os.makedirs(os.path.join(root, "checkpoints"), exist_ok=True)
    hc.link_checkpoint(ctx.staged("base"), os.path.join(root, "checkpoints"))
    req = hc.mc.mine_request(pb, 1, ctx.queries(20), 10_000)
    req.options.return_embeddings = True
    times = []
    for attempt in range(1, attempts + 1):
        server = hc.Server(ctx.binary, os.path.join(root, "checkpoints"),
                           os.path.join(root, f"log{attempt}"),
                           extra=["--threads=2", f"--shutdown_grace={grace:.0f}s"])
        ch = hc.channel(ctx.grpc, server)
        try:
            answers = list(ctx.pbg.MinerStub(ch).Mine(iter([req]), timeout=60))
            expect(len(answers) == 1 and not answers[0].HasField("error"),
                   "the large request was not answered")
        finally:
            ch.close()
        rc, seconds = server.terminate(timeout=grace + 60)
        times.append(seconds)
        expect(rc == 0, f"attempt {attempt}: exit code {rc}")
        expect(seconds <= grace + margin,
               f"attempt {attempt}: the idle server exited {seconds:.2f} s "
               f"after SIGTERM (--shutdown_grace {grace:.0f}s; earlier "
               f"attempts: {', '.join(f'{t:.2f} s' for t in times[:-1]) or 'none'})")
    return (f"{attempts} x exit 0 after one ~60 MB answer, in "
            + ", ".join(f"{t:.2f}" for t in times) + " s")


# ------------------------------------------------------------------ limits


def start_limits_server(ctx):
    root = os.path.join(ctx.work_dir, "limits")
    os.makedirs(os.path.join(root, "checkpoints"), exist_ok=True)
    hc.link_checkpoint(ctx.staged("base"), os.path.join(root, "checkpoints"))
    return hc.Server(ctx.binary, os.path.join(root, "checkpoints"),
                     os.path.join(root, "log"),
                     extra=["--threads=1", "--blas_threads=1",
                            "--max_streams=4", "--max_queued_queries=16"])


def check_stream_limit(ctx, server):
    """--max_streams 4: a fifth stream is refused with RESOURCE_EXHAUSTED;
    once one ends, a new one is taken."""
    pb = ctx.pb
    ch = hc.channel(ctx.grpc, server)
    stub = ctx.pbg.MinerStub(ch)
    feeds = []
    try:
        for i in range(4):
            feed = StreamFeed(stub, timeout=60)
            feeds.append(feed)
            feed.put(hc.mc.mine_request(pb, i, ctx.queries(1)))
            resp = next(feed.call)
            expect(not resp.HasField("error"), f"stream {i}: {resp.error}")
        fifth = StreamFeed(stub, timeout=60)
        feeds.append(fifth)
        fifth.put(hc.mc.mine_request(pb, 5, ctx.queries(1)))
        try:
            next(fifth.call)
            raise Failure("a fifth stream was answered")
        except ctx.grpc.RpcError as e:
            code, msg = hc.rpc_error(e)
        expect(code == "RESOURCE_EXHAUSTED" and "max_streams" in msg,
               f"the fifth stream: {code}: {msg}")
        feeds[0].close()
        expect(list(feeds[0].call) == [], "the closed stream had more answers")

        def taken():
            feed = StreamFeed(stub, timeout=60)
            feeds.append(feed)
            feed.put(hc.mc.mine_request(pb, 6, ctx.queries(1)))
            try:
                return next(feed.call)
            except ctx.grpc.RpcError:
                return None
        hc.wait_for("a stream to be taken once one ended", taken, 10, 0.1)
    finally:
        for feed in feeds:
            feed.close()
            feed.call.cancel()
        ch.close()
    return f"fifth stream: {code}: {msg}; a new stream taken after one ended"


def check_queue_limit(ctx, server):
    """--threads 1 --max_queued_queries 16: while the one worker mines a
    heavy request, two 10-query requests on a stream and two 10-query
    MineOnce calls arrive; at most one fits in the queue, the others are
    refused with RESOURCE_EXHAUSTED (in-band on the stream) naming the
    limit."""
    pb = ctx.pb
    ch = hc.channel(ctx.grpc, server)
    stub = ctx.pbg.MinerStub(ch)
    heavy = hc.mc.mine_request(pb, 0, ctx.queries(2000), num_negatives=10)
    small = [hc.mc.mine_request(pb, i, ctx.queries(10)) for i in range(1, 5)]
    try:
        # Bounded retries: the heavy request's 512 KB may arrive after the
        # small ones (then it is the one refused), or end before they arrive
        # on a fast machine; either way the attempt is repeated.
        for attempt in range(1, 6):
            busy = stub.MineOnce.future(heavy, timeout=120)
            time.sleep(0.1)  # makes the intended order likely, not certain
            feed = StreamFeed(stub, timeout=120)
            feed.put(small[0])
            feed.put(small[1])
            feed.close()
            calls = [stub.MineOnce.future(r, timeout=120) for r in small[2:]]
            unary = []
            for c in calls:
                try:
                    c.result()
                    unary.append(("OK", ""))
                except ctx.grpc.RpcError as e:
                    unary.append(hc.rpc_error(e))
            in_band = [(hc.code_name(r.error.code), r.error.message)
                       if r.HasField("error") else ("OK", "")
                       for r in feed.call]
            try:
                busy.result()
                heavy_status = "OK"
            except ctx.grpc.RpcError as e:
                heavy_status = hc.code_name(e.code())
            refused_unary = [m for c, m in unary if c == "RESOURCE_EXHAUSTED"]
            refused_band = [m for c, m in in_band if c == "RESOURCE_EXHAUSTED"]
            if heavy_status == "OK" and refused_unary and refused_band:
                break
    finally:
        ch.close()
    expect(heavy_status == "OK", f"the heavy request ended {heavy_status} "
           f"in all {attempt} attempts")
    expect(len(in_band) == 2, f"the stream answered {len(in_band)} of 2")
    expect(refused_unary and all("max_queued_queries" in m for m in refused_unary),
           f"no MineOnce refused with RESOURCE_EXHAUSTED naming the limit in "
           f"{attempt} attempts: {unary}")
    expect(refused_band and all("max_queued_queries" in m for m in refused_band),
           f"no in-band RESOURCE_EXHAUSTED naming the limit in {attempt} "
           f"attempts: {in_band}")
    return (f"attempt {attempt}: MineOnce {[c for c, _ in unary]}, stream "
            f"in-band {[c for c, _ in in_band]}: {refused_unary[0][:130]}")


# ------------------------------------------------------------------ soak


class SoakStream(threading.Thread):
    """One Mine stream: keeps `window` requests in flight until `stop`, then
    half-closes and reads the rest; counts answers and errors."""

    def __init__(self, ctx, stub, index, stop, window=4, queries=4):
        super().__init__(daemon=True)
        self.ctx, self.stub, self.index, self.stop = ctx, stub, index, stop
        self.window = threading.Semaphore(window)
        self.queries = queries
        self.answered = 0
        self.errors = []

    def requests(self):
        pb = self.ctx.pb
        i = 0
        while not self.stop.is_set():
            if not self.window.acquire(timeout=0.5):
                continue
            i += 1
            yield hc.mc.mine_request(
                pb, i, self.ctx.query_pool(self.index * 7919 + i, self.queries),
                num_negatives=10)

    def run(self):
        expected = 1
        try:
            for resp in self.stub.Mine(self.requests(),
                                       timeout=self.ctx.soak_seconds + 120):
                if resp.HasField("error"):
                    self.errors.append(f"request {resp.request_id}: "
                                       f"{resp.error.code} {resp.error.message}")
                elif resp.request_id != expected:
                    self.errors.append(f"request {resp.request_id} answered "
                                       f"when {expected} was due")
                elif (len(resp.results) != self.queries
                      or any(len(r.negatives) != 10 for r in resp.results)):
                    self.errors.append(f"request {resp.request_id}: short")
                else:
                    self.answered += 1
                expected = resp.request_id + 1
                self.window.release()
        except self.ctx.grpc.RpcError as e:
            self.errors.append("stream: %s: %s" % hc.rpc_error(e))


def start_soak_server(ctx):
    root = os.path.join(ctx.work_dir, "soak")
    os.makedirs(os.path.join(root, "checkpoints"), exist_ok=True)
    hc.link_checkpoint(ctx.staged("base"), os.path.join(root, "checkpoints"))
    return hc.Server(ctx.binary, os.path.join(root, "checkpoints"),
                     os.path.join(root, "log"), extra=["--shutdown_grace=2s"])


def check_soak(ctx, server, streams=32):
    """`streams` Mine streams for ctx.soak_seconds, each with 4 requests of 4
    queries in flight: no error, and the server's RSS at the end within 5%
    of its RSS after the warm-up."""
    seconds = ctx.soak_seconds
    warmup = min(60.0, max(10.0, seconds / 4))
    ch = hc.channel(ctx.grpc, server)
    stub = ctx.pbg.MinerStub(ch)
    stop = threading.Event()
    threads = [SoakStream(ctx, stub, i, stop) for i in range(streams)]
    rss = []
    try:
        start = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - start < seconds:
            time.sleep(1.0)
            rss.append((time.monotonic() - start, server.rss()))
            expect(server.alive(), "the server died during the soak")
        stop.set()
        elapsed = time.monotonic() - start
        for t in threads:
            t.join(timeout=60)
        hung = sum(t.is_alive() for t in threads)
        expect(hung == 0, f"{hung} soak streams did not end within 60 s")
    finally:
        stop.set()
        ch.close()
    errors = [e for t in threads for e in t.errors]
    answered = sum(t.answered for t in threads)
    after_warmup = next(r for s, r in rss if s >= warmup)
    at_end = rss[-1][1]
    drift = (at_end - after_warmup) / after_warmup
    measured = (f"{streams} streams x {seconds:.0f} s: {answered} requests "
                f"({answered * 4} queries) answered, {answered / elapsed:.0f} "
                f"requests/s, {len(errors)} errors; RSS {after_warmup / 1e6:.1f} "
                f"MB after the {warmup:.0f} s warm-up, {at_end / 1e6:.1f} MB at "
                f"the end ({drift:+.1%}), max {max(r for _, r in rss) / 1e6:.1f} MB")
    expect(not errors, f"errors: {errors[:5]}; {measured}")
    expect(answered > 0, "nothing was answered")
    step = max(1, len(rss) // 12)
    series = ", ".join(f"{s:.0f}s {r / 1e6:.1f}" for s, r in rss[::step])
    expect(abs(drift) <= 0.05,
           f"RSS moved more than 5%: {measured}; RSS (MB) over time: {series}")
    return measured


def check_sigterm_under_load(ctx, server, grace=2.0, margin=10.0):
    """16 streams and 2 heavy MineOnce loops running; SIGTERM: exit 0 within
    --shutdown_grace + a margin, and every client call ends."""
    pb = ctx.pb
    ch = hc.channel(ctx.grpc, server)
    stub = ctx.pbg.MinerStub(ch)
    stop = threading.Event()
    streams = [SoakStream(ctx, stub, i, stop) for i in range(16)]
    heavy = hc.mc.mine_request(pb, 0, ctx.queries(2000), num_negatives=10)
    outcomes = {}
    lock = threading.Lock()

    def heavy_loop():
        for _ in range(100):  # bounded; SIGTERM ends it far sooner
            try:
                stub.MineOnce(heavy, timeout=60)
                code = "OK"
            except ctx.grpc.RpcError as e:
                code = hc.code_name(e.code())
            with lock:
                outcomes[code] = outcomes.get(code, 0) + 1
            if code != "OK":
                return
    loops = [threading.Thread(target=heavy_loop, daemon=True) for _ in range(2)]
    try:
        for t in streams + loops:
            t.start()
        hc.wait_for("load to build up",
                    lambda: sum(s.answered for s in streams) >= 50, 30)
        answered_before = sum(s.answered for s in streams)
        rc, seconds = server.terminate(timeout=grace + 60)
        stop.set()
        for t in streams + loops:
            t.join(timeout=30)
        hung = sum(t.is_alive() for t in streams + loops)
    finally:
        stop.set()
        ch.close()
    stream_ends = {}
    for s in streams:
        for e in s.errors:
            key = e.split(":")[1].strip() if e.startswith("stream") else "in-band"
            stream_ends[key] = stream_ends.get(key, 0) + 1
    measured = (f"exit code {rc} {seconds:.2f} s after SIGTERM (grace "
                f"{grace:.0f} s); {answered_before} stream requests answered "
                f"before it, {sum(s.answered for s in streams)} in all; heavy "
                f"MineOnce outcomes {outcomes}; stream ends {stream_ends or 'OK'}")
    expect(rc == 0, f"exit code {rc}: {measured}")
    expect(seconds <= grace + margin, f"took over grace + {margin:.0f} s: "
           f"{measured}")
    expect(hung == 0, f"{hung} client calls never ended: {measured}")
    return measured

"""Hostile bytes on the wire: the metrics port's HTTP, oversized requests,
corrupt and random messages on every gRPC method, hostile version names.

Each check takes the harness context (`ctx`: stubs, the main server, its
data) and returns what it measured, or raises Failure.
"""

import random
import socket
import time

import numpy as np

import hostile_common as hc
from hostile_common import Failure, expect

METHODS = "/hardneg.v1.Miner/"

# Codes a hostile message may get: the request is refused or answered, and
# nothing else happens (no INTERNAL, UNKNOWN, UNAVAILABLE: the server broke;
# no DEADLINE_EXCEEDED: it hung).
CLEAN_CODES = {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED",
               "FAILED_PRECONDITION"}


# ------------------------------------------------------------------ helpers


def raw_unary(ctx, method):
    return ctx.channel.unary_unary(METHODS + method)


def raw_stream_stream(ctx, method):
    return ctx.channel.stream_stream(METHODS + method)


def raw_stream_unary(ctx, method):
    return ctx.channel.stream_unary(METHODS + method)


def publish_header(pb, name, step=10, dim=hc.DIM, base_version=None,
                   total_ids=None):
    req = pb.PublishRequest()
    req.header.name = name
    req.header.step = step
    req.header.dim = dim
    if base_version is not None:
        req.header.base_version = base_version
    if total_ids is not None:
        req.header.total_ids = total_ids
    return req


def publish_chunk(pb, rows, first_id=10_000_000, seed=0):
    rng = np.random.default_rng(seed)
    req = pb.PublishRequest()
    req.chunk.ids.extend(range(first_id, first_id + rows))
    req.chunk.embeddings_bytes = rng.standard_normal(
        (rows, hc.DIM)).astype("<f4").tobytes()
    return req


def expect_unchanged(ctx, before, what):
    """The served version is still `before` (an IndexInfo)."""
    info = hc.index_info(ctx.stub, ctx.pb)
    expect(info.version.name == before.version.name
           and info.version.sequence == before.version.sequence,
           f"{what}: the served version changed from {before.version.name}@"
           f"{before.version.sequence} to {info.version.name}@"
           f"{info.version.sequence}")


def http_exchange(port, data, timeout=15):
    """Sends raw bytes to the metrics port; returns (status line, note)."""
    note = ""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError as e:  # refused before all was sent
            note = f"send: {e.__class__.__name__}"
        reply = b""
        try:
            while len(reply) < 1 << 20:
                block = s.recv(65536)
                if not block:
                    break
                reply += block
        except OSError as e:
            note += f" recv: {e.__class__.__name__}"
    return reply.split(b"\r\n", 1)[0].decode("latin-1"), note.strip()


# ------------------------------------------------------------------ checks


def check_http_other_paths(ctx):
    """Anything but GET/HEAD /metrics gets a 4xx and the server stays up."""
    host = b"Host: 127.0.0.1\r\n"
    probes = [
        ("GET /", b"GET / HTTP/1.1\r\n" + host + b"\r\n", "404"),
        ("GET /healthz", b"GET /healthz HTTP/1.1\r\n" + host + b"\r\n", "404"),
        ("HEAD /nope", b"HEAD /nope HTTP/1.0\r\n\r\n", "404"),
        ("GET /metrics/../etc/passwd",
         b"GET /metrics/../etc/passwd HTTP/1.1\r\n" + host + b"\r\n", "404"),
        ("POST /metrics", b"POST /metrics HTTP/1.1\r\n" + host
         + b"Content-Length: 3\r\n\r\nabc", "405"),
        ("DELETE /metrics", b"DELETE /metrics HTTP/1.1\r\n" + host + b"\r\n",
         "405"),
        ("BREW /metrics", b"BREW /metrics HTTP/1.1\r\n" + host + b"\r\n", "405"),
        ("junk bytes", bytes(random.Random(7).randrange(256)
                             for _ in range(512)) + b"\r\n\r\n", "4"),
        ("NUL request line", b"\x00\x00\x00\r\n\r\n", "4"),
        ("HTTP/9.9", b"GET /metrics HTTP/9.9\r\n\r\n", "4"),
        ("100 KB header", b"GET /metrics HTTP/1.1\r\n" + host + b"X-Big: "
         + b"a" * 100_000 + b"\r\n\r\n", "431"),
        ("20 KB path", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", "4"),
    ]
    seen = []
    for what, data, want in probes:
        status, note = http_exchange(ctx.main.metrics_port, data)
        code = status.split(" ")[1] if status.startswith("HTTP/1.") else status
        seen.append(f"{what}: {code or note or 'closed'}")
        expect(code.startswith(want),
               f"{what}: expected {want}xx-ish, got {status!r} {note}")
        expect(ctx.main.alive(), f"the server died after {what}")
    scrape = ctx.main.scrape()
    expect("hardneg_index_candidates" in scrape,
           "GET /metrics no longer answers with the metrics")
    return "; ".join(seen) + "; /metrics still 200"


def check_reply_too_large(ctx):
    """2,000 queries x 10,000 negatives with embeddings: refused before any
    search, naming the message limit."""
    pb = ctx.pb
    req = hc.mc.mine_request(pb, 1, ctx.queries(2000), num_negatives=10_000)
    req.options.return_embeddings = True
    start = time.monotonic()
    try:
        ctx.stub.MineOnce(req, timeout=60)
        raise Failure("the MineOnce was answered OK")
    except ctx.grpc.RpcError as e:
        code, msg = hc.rpc_error(e)
    took = time.monotonic() - start
    expect(code == "RESOURCE_EXHAUSTED" and "message limit" in msg,
           f"expected RESOURCE_EXHAUSTED naming the message limit, got {code}: "
           f"{msg[:300]}")
    ctx.expect_serving()
    return f"{code} in {took:.2f} s: {msg[:160]}"


def check_fetch_budget(ctx):
    """1,500 queries x range_max 1e6 over the 100k-row index ranks 1.5e8
    candidates, past 2^24: INVALID_ARGUMENT naming max_request_fetch."""
    req = hc.mc.mine_request(ctx.pb, 2, ctx.queries(1500), num_negatives=10)
    req.options.range_max = 1_000_000
    try:
        ctx.stub.MineOnce(req, timeout=60)
        raise Failure("the MineOnce was answered OK")
    except ctx.grpc.RpcError as e:
        code, msg = hc.rpc_error(e)
    expect(code == "INVALID_ARGUMENT" and "max_request_fetch" in msg,
           f"expected INVALID_ARGUMENT naming max_request_fetch, got {code}: "
           f"{msg[:300]}")
    ctx.expect_serving()
    return f"{code}: {msg[:200]}"


def check_corrupt_publish(ctx):
    """A valid header and chunk, then garbage: INVALID_ARGUMENT, nothing
    installed."""
    pb = ctx.pb
    before = hc.index_info(ctx.stub, pb)
    msgs = [publish_header(pb, "corrupt-publish", step=1 << 40).SerializeToString(),
            publish_chunk(pb, 10).SerializeToString(),
            b"\x12\x10abc"]
    try:
        raw_stream_unary(ctx, "Publish")(iter(msgs), timeout=30)
        raise Failure("the corrupt Publish was answered OK")
    except ctx.grpc.RpcError as e:
        code, msg = hc.rpc_error(e)
    expect(code == "INVALID_ARGUMENT",
           f"expected INVALID_ARGUMENT, got {code}: {msg}")
    expect_unchanged(ctx, before, "after the corrupt Publish")
    return f"{code}: {msg}; still serving {before.version.name}"


def check_corrupt_mine(ctx):
    """Two valid requests, then garbage, on one Mine stream: both answered,
    then INVALID_ARGUMENT."""
    pb = ctx.pb
    msgs = [hc.mc.mine_request(pb, i, ctx.queries(2)).SerializeToString()
            for i in (1, 2)] + [b"\x12\x10abc"]
    answered = []
    try:
        for raw in raw_stream_stream(ctx, "Mine")(iter(msgs), timeout=30):
            resp = pb.MineResponse.FromString(raw)
            expect(not resp.HasField("error"),
                   f"request {resp.request_id} failed: {resp.error.message}")
            answered.append(resp.request_id)
        raise Failure(f"the stream ended OK after answering {answered}")
    except ctx.grpc.RpcError as e:
        code, msg = hc.rpc_error(e)
    expect(answered == [1, 2],
           f"expected requests 1 and 2 answered first, got {answered}")
    expect(code == "INVALID_ARGUMENT",
           f"expected INVALID_ARGUMENT, got {code}: {msg}")
    return f"answered {answered}, then {code}: {msg}"


def check_corrupt_unary(ctx):
    """Unparsable MineOnce and GetIndexInfo: INVALID_ARGUMENT with a message."""
    seen = []
    for method in ("MineOnce", "GetIndexInfo"):
        try:
            raw_unary(ctx, method)(b"\x12\x10abc", timeout=10)
            raise Failure(f"{method} answered OK")
        except ctx.grpc.RpcError as e:
            code, msg = hc.rpc_error(e)
        expect(code == "INVALID_ARGUMENT" and msg,
               f"{method}: expected INVALID_ARGUMENT with a message, got "
               f"{code}: {msg!r}")
        seen.append(f"{method}: {code}: {msg}")
    return "; ".join(seen)


HOSTILE_NAMES = [
    ("../../x", "../../x"),
    ("newline", "ok\nts=2000-01-01T00:00:00Z level=info event=version_swap "
                "name=forged"),
    ("ANSI escape", "\x1b[31mred\x1b[0m"),
    ("NUL", "a\x00b"),
    ("10 KB", "x" * 10_240),
    ("empty", ""),
]


def publish_status(ctx, msgs):
    try:
        raw_stream_unary(ctx, "Publish")(iter(msgs), timeout=30)
        return "OK", ""
    except ctx.grpc.RpcError as e:
        return hc.rpc_error(e)


def check_hostile_names(ctx):
    """Publishes named "../../x", with a newline, an ANSI escape, a NUL,
    10 KB, empty, or not UTF-8: INVALID_ARGUMENT, nothing installed, and the
    log carries no raw control character or forged line."""
    pb = ctx.pb
    before = hc.index_info(ctx.stub, pb)
    chunk = publish_chunk(pb, 10).SerializeToString()
    cases = [(what, publish_header(pb, name).SerializeToString())
             for what, name in HOSTILE_NAMES]
    # header {name: b"\xff\xfe", step: 1, dim: 64}: not UTF-8, which Python's
    # protobuf refuses to encode.
    inner = b"\x0a\x02\xff\xfe\x10\x01\x18\x40"
    cases.append(("not UTF-8", b"\x0a" + bytes([len(inner)]) + inner))
    seen = []
    for what, header in cases:
        code, msg = publish_status(ctx, [header, chunk])
        seen.append(f"{what}: {code}")
        expect(code == "INVALID_ARGUMENT",
               f"name {what}: expected INVALID_ARGUMENT, got {code}: {msg[:200]}")
        expect(len(msg) < 1024, f"name {what}: a {len(msg)}-byte message")
    expect_unchanged(ctx, before, "after the hostile names")
    expect_clean_log(ctx.main)
    return "; ".join(seen)


def check_hostile_base_version(ctx):
    """The same hostile names as header.base_version (the name of the version
    an incremental publish applies to): refused as INVALID_ARGUMENT, with a
    message the client receives (not echoed raw, not past gRPC's 8 KiB
    metadata limit)."""
    pb = ctx.pb
    before = hc.index_info(ctx.stub, pb)
    chunk = publish_chunk(pb, 10).SerializeToString()
    seen = []
    problems = []
    for what, name in HOSTILE_NAMES[:-1]:  # empty has its own message
        header = publish_header(pb, "hostile-base", base_version=name)
        code, msg = publish_status(ctx, [header.SerializeToString(), chunk])
        seen.append(f"{what}: {code}")
        if code != "INVALID_ARGUMENT":
            problems.append(f"base_version {what}: {code}: {msg[:120]!r}")
    expect_unchanged(ctx, before, "after the hostile base_version")
    expect_clean_log(ctx.main)
    expect(not problems, "; ".join(problems))
    return "; ".join(seen)


def expect_clean_log(server):
    err = server.stderr()
    expect(b"\x1b" not in err and b"\x00" not in err,
           "the server log holds a raw ESC or NUL byte")
    for line in err.split(b"\n"):
        expect(not line.startswith(b"ts=2000-01-01"),
               f"a forged log line: {line[:200]!r}")


def mutate(rng, data):
    """A few random byte flips, insertions or deletions."""
    data = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(3)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and pos < len(data):
            data[pos] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = bytes(rng.randrange(256)
                                  for _ in range(rng.randrange(1, 8)))
        elif data:
            del data[min(pos, len(data) - 1)]
    return bytes(data)


def check_random_bytes(ctx, count):
    """About `count` seeded random or mutated messages over MineOnce,
    GetIndexInfo, Mine and Publish (and some over health and reflection):
    every call ends with a clean code, and the server serves the same
    version, correctly, afterwards."""
    pb = ctx.pb
    rng = random.Random(20240601)
    before = hc.index_info(ctx.stub, pb)
    valid_mine = hc.mc.mine_request(pb, 7, ctx.queries(3)).SerializeToString()
    # Random chunks after a header that can never complete (total_ids), so
    # that no random publish installs a version.
    header = publish_header(pb, "random-bytes", total_ids=1 << 40)
    valid_chunk = publish_chunk(pb, 4).SerializeToString()

    made = [0]  # messages made (a stream that fails stops sending its rest)

    def noise():
        made[0] += 1
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))

    def mutated(data):
        made[0] += 1
        return mutate(rng, data)

    def mine_message():
        return noise() if rng.random() < 0.3 else mutated(valid_mine)

    tally = {}
    bad = []

    def record(method, code, msg="", clean=CLEAN_CODES):
        tally[(method, code)] = tally.get((method, code), 0) + 1
        if code not in clean:
            bad.append(f"{method}: {code}: {msg[:200]}")

    per_method = max(1, count // 4)
    for _ in range(per_method):
        try:
            raw = raw_unary(ctx, "MineOnce")(mine_message(), timeout=30)
            pb.MineResponse.FromString(raw)
            record("MineOnce", "OK")
        except ctx.grpc.RpcError as e:
            record("MineOnce", *hc.rpc_error(e))
    for _ in range(per_method):
        try:
            raw_unary(ctx, "GetIndexInfo")(
                noise() if rng.random() < 0.5 else mutated(b""), timeout=10)
            record("GetIndexInfo", "OK")
        except ctx.grpc.RpcError as e:
            record("GetIndexInfo", *hc.rpc_error(e))
    for _ in range(per_method // 4):
        msgs = [mine_message() for _ in range(4)]
        try:
            for raw in raw_stream_stream(ctx, "Mine")(iter(msgs), timeout=30):
                resp = pb.MineResponse.FromString(raw)
                if resp.HasField("error"):
                    record("Mine in-band", hc.code_name(resp.error.code),
                           resp.error.message)
            record("Mine", "OK")
        except ctx.grpc.RpcError as e:
            record("Mine", *hc.rpc_error(e))
    for _ in range(per_method // 4):
        msgs = [header.SerializeToString()] if rng.random() < 0.5 else []
        msgs += [noise() if rng.random() < 0.5 else mutated(valid_chunk)
                 for _ in range(4)]
        code, msg = publish_status(ctx, msgs)
        record("Publish", code, msg)
    # The standard services beside Miner: health and reflection.
    for _ in range(per_method // 4):
        try:
            ctx.channel.unary_unary("/grpc.health.v1.Health/Check")(
                noise()[:60], timeout=10)
            record("Health.Check", "OK")
        except ctx.grpc.RpcError as e:
            # An unknown service name is NOT_FOUND, as the protocol says.
            record("Health.Check", *hc.rpc_error(e),
                   clean=CLEAN_CODES | {"NOT_FOUND"})
    reflection = ("/grpc.reflection.v1alpha.ServerReflection/"
                  "ServerReflectionInfo")
    for _ in range(per_method // 16):
        try:
            list(ctx.channel.stream_stream(reflection)(
                iter([noise()[:60] for _ in range(3)]), timeout=10))
            record("Reflection", "OK")
        except ctx.grpc.RpcError as e:
            record("Reflection", *hc.rpc_error(e))
    expect(ctx.main.alive(), "the server died")
    expect_unchanged(ctx, before, "after the random bytes")
    ctx.expect_serving()
    summary = ", ".join(f"{m} {c} x{n}" for (m, c), n in sorted(tally.items()))
    expect(not bad, f"unclean outcomes: {bad[:5]} (all: {summary})")
    return (f"{made[0]} random or mutated messages (seeded): {summary}; "
            "server up, same version, answers exact")


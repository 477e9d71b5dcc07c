"""A numpy-first client of the hardneg Miner service.

    import numpy as np
    import hardneg

    with hardneg.Client("localhost:50051") as client:
        res = client.mine(queries, positive_ids=pos, num_negatives=8)
        res.ids       # [n, 8] int64, -1 where a query came up short
        res.scores    # [n, 8] float32, NaN where padded

Embeddings go over the wire as little-endian float32 bytes
(`Query.embedding_bytes`), which is much faster than repeated floats.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from typing import (Any, Dict, Iterable, Iterator, List, Optional, Sequence,
                    Tuple)

import grpc
import numpy as np

from hardneg import publish as _publish
from hardneg._arrays import as_int64, as_numpy, is_tensor
from hardneg.checkpoint import check_version_name
from hardneg.errors import HardnegError, MineError, PublishError, from_rpc

try:
    from hardneg.v1 import miner_pb2, miner_pb2_grpc
except ImportError as e:  # pragma: no cover - depends on the checkout
    raise ImportError(
        "hardneg.v1.miner_pb2 is missing: generate the stubs with "
        "python/generate.sh (needs protoc and grpc_python_plugin)") from e

__all__ = [
    "Client", "MineStream", "MineResult", "HardnegError", "MineError",
    "PublishError", "IndexInfo", "IndexVersion", "SAMPLING",
]

# The options and their types come from the proto (hardneg.v1.MiningOptions)
# by reflection, so an option added there needs no change here.
_OPTION_FIELDS = miner_pb2.MiningOptions.DESCRIPTOR.fields_by_name

# Accepted values of the `sampling` option: the proto's Sampling enum, named
# without its prefix and in lower case ("top", "uniform", "softmax").
def _enum_names(enum: Any) -> Dict[str, int]:
    """An enum's values by short name: SAMPLING_TOP is "top"."""
    prefix = len(enum.name) + 1  # Sampling -> "SAMPLING_"
    return {v.name[prefix:].lower(): v.number for v in enum.values}


SAMPLING = _enum_names(miner_pb2.Sampling.DESCRIPTOR)


@dataclasses.dataclass(frozen=True)
class IndexVersion:
    name: str
    sequence: int


@dataclasses.dataclass(frozen=True)
class IndexInfo:
    """GetIndexInfo: the served version and index (see the proto's
    IndexInfo for every field)."""

    version: IndexVersion
    size: int
    dim: int
    metric: str
    index_type: str
    build_state: str
    step: int
    has_labels: bool
    age_seconds: float = 0.0
    building: str = ""  # the version being built now, if any
    build_progress: float = 0.0  # of `building`, 0..1
    last_rejected: str = ""
    rejected_total: int = 0
    previous_version: Optional[IndexVersion] = None
    shard_index: int = 0
    num_shards: int = 0
    scan: str = ""  # the Flat first pass: "int8", "bf16" or "f32"


@dataclasses.dataclass
class MineResult:
    """The answer to one batch, as arrays of `num_negatives` columns.

    ids        [n, k] int64, -1 where padded (the query came up short)
    scores     [n, k] float32, NaN where padded (L2: squared distances)
    labels     [n, k] int64, the stored labels (0 where padded or unlabeled)
    ranks      [n, k] int64, 0-based rank among the survivors, -1 where padded
    shortfall  [n] int64, how many negatives are missing per query
    positive_score [n] float32, p (the weakest positive), NaN when absent
    embeddings [n, k, dim] float32 (NaN where padded), when return_embeddings
    index      the IndexVersion that answered
    missing_shards  through a router with allow_partial: the shards the
               answer lacks (empty: the whole corpus)
    """

    ids: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    ranks: np.ndarray
    shortfall: np.ndarray
    positive_score: np.ndarray
    index: IndexVersion
    request_id: int = 0
    embeddings: Optional[np.ndarray] = None
    missing_shards: List[str] = dataclasses.field(default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        """[n, k] bool, True where a negative was returned."""
        return self.ids != -1

    def __len__(self) -> int:
        return self.ids.shape[0]


# ---------------------------------------------------------------- requests


def _as_queries(queries: Any) -> np.ndarray:
    q = as_numpy(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise ValueError(f"queries must be [n, dim], got shape {q.shape}")
    return np.ascontiguousarray(q, dtype="<f4")


def _per_query(value: Any, n: int, name: str) -> List[Any]:
    """A per-query list of length n, from None / sequence / array."""
    if value is None:
        return [None] * n
    if is_tensor(value):
        value = as_numpy(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        raise ValueError(f"{name} must have one entry per query")
    seq = list(value)
    if len(seq) != n:
        raise ValueError(f"{name} has {len(seq)} entries for {n} queries")
    return seq


def _row_list(row: Any, pad: Optional[float], dtype: Any) -> List[Any]:
    """One query's list of positives; drops `pad` (-1 ids, NaN scores)."""
    if row is None:
        return []
    arr = as_numpy(row, dtype=dtype).reshape(-1)
    if pad is None:
        return arr.tolist()
    if isinstance(pad, float) and np.isnan(pad):
        return arr[~np.isnan(arr)].tolist()
    return arr[arr != pad].tolist()


def _id_list(row: Any) -> List[int]:
    """One query's positive ids (-1 entries are padding); TypeError for
    non-integers rather than a silent truncation."""
    if row is None:
        return []
    arr = as_int64(row if np.ndim(as_numpy(row)) else [row], "positive_ids")
    return arr[arr != -1].tolist()


def _optional_int(v: Any) -> Optional[int]:
    if v is None:
        return None
    if is_tensor(v):
        v = as_numpy(v)[()]
    if isinstance(v, (float, np.floating)) and np.isnan(v):
        return None
    return int(v)


def _check_known(options: Dict[str, Any]) -> None:
    """TypeError naming every option the proto's MiningOptions lacks."""
    unknown = set(options) - set(_OPTION_FIELDS)
    if unknown:
        raise TypeError(f"unknown mining option(s): {sorted(unknown)}; "
                        f"known: {sorted(_OPTION_FIELDS)}")


def _build_options(options: Dict[str, Any]) -> "miner_pb2.MiningOptions":
    _check_known(options)
    o = miner_pb2.MiningOptions()
    for name, value in options.items():
        field = _OPTION_FIELDS[name]
        if value is None:
            if field.has_presence:
                continue  # an optional left unset
            raise TypeError(f"option {name} cannot be None")
        setattr(o, name, _option_value(field, value))
    return o


def _option_value(field: Any, value: Any) -> Any:
    """`value` as the type of the MiningOptions field `field`."""
    fd = field.__class__
    if field.type == fd.TYPE_ENUM:
        if isinstance(value, str):
            names = _enum_names(field.enum_type)
            try:
                return names[value.lower()]
            except KeyError:
                raise ValueError(f"{field.name} must be one of "
                                 f"{sorted(names)}") from None
        return int(value)
    if field.type == fd.TYPE_BOOL:
        return bool(value)
    if field.type in (fd.TYPE_FLOAT, fd.TYPE_DOUBLE):
        return float(value)
    return int(value)


def build_request(queries: Any,
                  positive_ids: Any = None,
                  labels: Any = None,
                  query_ids: Any = None,
                  positive_scores: Any = None,
                  request_id: int = 0,
                  **options: Any) -> "miner_pb2.MineRequest":
    """The MineRequest for a batch (see Client.mine for the arguments)."""
    q = _as_queries(queries)
    n = q.shape[0]
    # A misspelt option is named as such, not reported as a missing one.
    _check_known(options)
    if "num_negatives" not in options:
        raise TypeError("num_negatives is required")
    pos = _per_query(positive_ids, n, "positive_ids")
    # A 1-D array holds one score per query (NaN: none); see below.
    pscores = _per_query(positive_scores, n, "positive_scores")
    labs = _per_query(labels, n, "labels")
    qids = _per_query(query_ids, n, "query_ids")
    req = miner_pb2.MineRequest(request_id=int(request_id))
    req.options.CopyFrom(_build_options(options))
    raw = q.tobytes()
    row_bytes = q.shape[1] * 4
    for i in range(n):
        query = req.queries.add()
        query.embedding_bytes = raw[i * row_bytes:(i + 1) * row_bytes]
        query.positive_ids.extend(_id_list(pos[i]))
        ps = pscores[i]
        if ps is not None and np.ndim(ps) == 0:
            ps = [ps]
        query.positive_scores.extend(_row_list(ps, float("nan"), np.float32))
        label = _optional_int(labs[i])
        if label is not None:
            query.label = label
        qid = _optional_int(qids[i])
        if qid is not None:
            query.query_id = qid
    return req


# ---------------------------------------------------------------- responses


def to_result(resp: "miner_pb2.MineResponse", k: int) -> MineResult:
    """Arrays of a MineResponse, padded to k columns; raises MineError."""
    if resp.HasField("error") and resp.error.code != 0:
        raise MineError(resp.error.code, resp.error.message, resp.request_id)
    n = len(resp.results)
    k = max(k, max((len(r.negatives) for r in resp.results), default=0))
    ids = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), np.nan, dtype=np.float32)
    labels = np.zeros((n, k), dtype=np.int64)
    ranks = np.full((n, k), -1, dtype=np.int64)
    shortfall = np.zeros(n, dtype=np.int64)
    pscore = np.full(n, np.nan, dtype=np.float32)
    embeddings = None
    for i, r in enumerate(resp.results):
        shortfall[i] = r.shortfall
        if r.HasField("positive_score"):
            pscore[i] = r.positive_score
        for j, neg in enumerate(r.negatives):
            ids[i, j] = neg.id
            scores[i, j] = neg.score
            labels[i, j] = neg.label
            ranks[i, j] = neg.rank
            if len(neg.embedding):
                if embeddings is None:
                    embeddings = np.full((n, k, len(neg.embedding)), np.nan,
                                         dtype=np.float32)
                embeddings[i, j] = neg.embedding
    return MineResult(ids=ids, scores=scores, labels=labels, ranks=ranks,
                      shortfall=shortfall, positive_score=pscore,
                      index=IndexVersion(resp.index.name, resp.index.sequence),
                      request_id=resp.request_id, embeddings=embeddings,
                      missing_shards=list(resp.missing_shards))


# ---------------------------------------------------------------- streams


_DONE = object()


class MineStream:
    """One bidi `Mine` stream: send() batches, recv() their results in order.

    A refused request raises MineError from the matching recv(); the stream
    stays open. Not thread-safe: use one stream per thread (or per worker).
    """

    def __init__(self, stub: Any, timeout: Optional[float] = None,
                 metadata: Optional[Sequence[Tuple[str, Any]]] = None,
                 **defaults: Any) -> None:
        self._requests: "queue.Queue" = queue.Queue()
        self._pending: List[tuple] = []  # (request_id, k) in send order
        self._next_id = 1
        self._defaults = defaults
        self._call = stub.Mine(iter(self._requests.get, _DONE),
                               timeout=timeout, metadata=metadata)
        self._closed = False

    def send(self, queries: Any, positive_ids: Any = None, labels: Any = None,
             query_ids: Any = None, positive_scores: Any = None,
             request_id: Optional[int] = None, **options: Any) -> int:
        """Queues one batch; returns its request_id (the next free one)."""
        if self._closed:
            raise MineError(grpc.StatusCode.CANCELLED.value[0],
                            "the stream is closed (closed, cancelled or "
                            "failed): open a new one with client.stream()")
        opts = dict(self._defaults)
        opts.update(options)
        if request_id is None:
            request_id = self._next_id
        self._next_id = max(self._next_id, int(request_id)) + 1
        req = build_request(queries, positive_ids, labels, query_ids,
                            positive_scores, request_id=request_id, **opts)
        self.send_request(req)
        return int(request_id)

    def send_request(self, req: "miner_pb2.MineRequest") -> None:
        """Queues a raw MineRequest."""
        self._pending.append((req.request_id, req.options.num_negatives))
        self._requests.put(req)

    def recv_response(self) -> "miner_pb2.MineResponse":
        """The next raw MineResponse (errors are left in resp.error)."""
        if not self._pending:
            raise RuntimeError("recv() without a pending send()")
        request_id = self._pending.pop(0)[0]
        try:
            return next(self._call)
        except grpc.RpcError as e:  # the stream itself failed
            self._closed = True
            raise from_rpc(e, MineError, request_id) from e
        except StopIteration:
            self._closed = True
            raise MineError(grpc.StatusCode.UNAVAILABLE.value[0],
                            "the server ended the stream with requests "
                            "unanswered", request_id) from None

    def recv(self) -> MineResult:
        """The result of the oldest pending batch."""
        k = self._pending[0][1] if self._pending else 0
        return to_result(self.recv_response(), k)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def closed(self) -> bool:
        """True once closed, cancelled, or failed as a whole (a transport
        error or the server ending it): open a new stream then."""
        return self._closed

    def results(self, batches: Iterable[Any], max_in_flight: int = 4
                ) -> Iterator[MineResult]:
        """Pipelines `batches` (arrays of queries, or dicts of send() kwargs)
        with up to max_in_flight requests outstanding; yields in order."""
        for batch in batches:
            if isinstance(batch, dict):
                self.send(**batch)
            else:
                self.send(batch)
            while self.pending >= max_in_flight:
                yield self.recv()
        while self.pending:
            yield self.recv()

    def close(self) -> None:
        """Half-closes the stream and waits for the server to finish it."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(_DONE)
        try:
            for _ in self._call:  # drain (answers nobody asked for)
                pass
        except grpc.RpcError:
            pass

    def cancel(self) -> None:
        self._closed = True
        self._requests.put(_DONE)
        self._call.cancel()

    def __enter__(self) -> "MineStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.cancel()


# ---------------------------------------------------------------- client


class Client:
    """A connection to a hardneg server (or router).

    Client("host:50051") opens an insecure channel, or TLS with tls_ca;
    "dns:///hardneg-server:50051" with replicas behind a headless Service
    spreads calls over them (round_robin is the default policy). Pass
    `channel=` for anything else.
    Default mining options (e.g. num_negatives=8) can be given here and are
    overridden per call.
    """

    def __init__(self, target: Optional[str] = None, *,
                 channel: Optional[grpc.Channel] = None,
                 timeout: Optional[float] = None,
                 metadata: Optional[Sequence[Tuple[str, Any]]] = None,
                 channel_options: Optional[Sequence[Tuple[str, Any]]] = None,
                 tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None,
                 token: Optional[str] = None,
                 **default_options: Any):
        # tls_ca (a PEM file) turns TLS on; tls_cert and tls_key add a
        # client certificate (mutual TLS). token (default: the HARDNEG_TOKEN
        # environment variable) is sent as "authorization: Bearer <token>".
        if channel is None:
            if target is None:
                raise TypeError("Client needs a target or a channel")
            opts: List[Tuple[str, Any]] = [
                    ("grpc.max_receive_message_length", 256 << 20),
                    ("grpc.max_send_message_length", 256 << 20)]
            opts.extend(channel_options or [])
            # round_robin over every address of the target, e.g.
            # "dns:///hardneg-server.ns.svc.cluster.local:50051" (a headless
            # Service of replicas); channel_options may choose another.
            if not any(k == "grpc.lb_policy_name" for k, _ in opts):
                opts.append(("grpc.lb_policy_name", "round_robin"))
            if tls_ca is not None or tls_cert is not None:
                if (tls_cert is None) != (tls_key is None):
                    raise TypeError("tls_cert and tls_key go together")

                def read(path: Optional[str]) -> Optional[bytes]:
                    if path is None:
                        return None
                    with open(path, "rb") as f:
                        return f.read()
                credentials = grpc.ssl_channel_credentials(
                    read(tls_ca), read(tls_key), read(tls_cert))
                channel = grpc.secure_channel(target, credentials,
                                              options=opts)
            else:
                channel = grpc.insecure_channel(target, options=opts)
            self._own_channel = True
        else:
            self._own_channel = False
        if token is None:
            token = os.environ.get("HARDNEG_TOKEN") or None
        if token is not None:
            metadata = list(metadata or []) + [
                ("authorization", f"Bearer {token.strip()}")]
        _build_options(default_options)  # fail early on typos
        self._channel = channel
        self._stub = miner_pb2_grpc.MinerStub(channel)
        self._timeout = timeout
        self._metadata = metadata
        self._defaults = default_options
        self._lock = threading.Lock()
        self._next_id = 1

    @property
    def stub(self) -> Any:
        """The raw generated MinerStub."""
        return self._stub

    def _request_id(self) -> int:
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            return rid

    def mine(self, queries: Any,
             positive_ids: Any = None,
             labels: Any = None,
             query_ids: Any = None,
             positive_scores: Any = None,
             *, timeout: Optional[float] = None,
             request_id: Optional[int] = None,
             **options: Any) -> MineResult:
        """Mines one batch with MineOnce.

        queries          [n, dim] float32 (a single [dim] vector is [1, dim])
        positive_ids     per query: a list of ids, or a 2-D int array padded with -1
        labels           per query: an int, or None for no label
        query_ids        per query: an int, or None
        positive_scores  per query: a list of floats, or a 2-D float array padded
                         with NaN, or a 1-D array of one score per query
        options          MiningOptions fields: num_negatives, range_min,
                         range_max, max_score, min_score, absolute_margin,
                         relative_margin, sampling ("top", "uniform",
                         "softmax"), temperature, seed, return_embeddings,
                         min_index_sequence, nprobe (IVF lists to probe; 0
                         keeps the server's --nprobe), ivf_min_candidates
                         (IVF-Flat: candidates without the query's label
                         scanned, in lists or cells nearest first, before
                         probing stops; 0 keeps the server's
                         --ivf_min_candidates)

        Raises MineError (e.g. code 3, INVALID_ARGUMENT) when refused.
        """
        opts = dict(self._defaults)
        opts.update(options)
        if request_id is None:
            request_id = self._request_id()
        req = build_request(queries, positive_ids, labels, query_ids,
                            positive_scores, request_id=request_id, **opts)
        try:
            resp = self._stub.MineOnce(
                req, timeout=timeout if timeout is not None else self._timeout,
                metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc(e, MineError, request_id) from e
        return to_result(resp, req.options.num_negatives)

    def stream(self, *, timeout: Optional[float] = None, **options: Any
               ) -> MineStream:
        """Opens a bidi Mine stream; `options` are defaults for its sends.

        `timeout` is a deadline for the whole stream (default: none; the
        client's `timeout` is per call, and a stream lives for a training
        run)."""
        opts = dict(self._defaults)
        opts.update(options)
        return MineStream(self._stub, timeout=timeout,
                          metadata=self._metadata, **opts)

    def mine_iter(self, batches: Iterable[Any], max_in_flight: int = 4,
                  **options: Any) -> Iterator[MineResult]:
        """Mines every batch over one stream, pipelined; yields in order.

        A batch is an array of queries or a dict of MineStream.send kwargs.
        """
        with self.stream(**options) as s:
            yield from s.results(batches, max_in_flight=max_in_flight)

    def info(self, *, timeout: Optional[float] = None) -> IndexInfo:
        """The served version and index; raises MineError (with the gRPC
        code and message) when the call fails, as mine() does."""
        try:
            r = self._stub.GetIndexInfo(
                miner_pb2.GetIndexInfoRequest(),
                timeout=timeout if timeout is not None else self._timeout,
                metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc(e, MineError) from e
        previous = None
        if r.HasField("previous_version") and r.previous_version.name:
            previous = IndexVersion(r.previous_version.name,
                                    r.previous_version.sequence)
        return IndexInfo(version=IndexVersion(r.version.name, r.version.sequence),
                         size=r.size, dim=r.dim, metric=r.metric,
                         index_type=r.index_type, scan=r.scan,
                         build_state=r.build_state,
                         step=r.step, has_labels=r.has_labels,
                         age_seconds=r.age_seconds, building=r.building,
                         build_progress=r.build_progress,
                         last_rejected=r.last_rejected,
                         rejected_total=r.rejected_total,
                         previous_version=previous,
                         shard_index=r.shard_index, num_shards=r.num_shards)

    def wait_for_version(self, sequence: int = 0, name: Optional[str] = None,
                         *, timeout: float = 300.0,
                         poll_interval: float = 0.2) -> IndexInfo:
        """Polls GetIndexInfo until the served version's sequence is at
        least `sequence` (and, with `name`, that version is `name`); returns
        its IndexInfo. Raises MineError DEADLINE_EXCEEDED after `timeout`
        seconds, naming what it last saw; a server that cannot be reached
        (UNAVAILABLE, e.g. restarting) is asked again until then. Behind a
        Service of replicas this sees one replica: mine with
        min_index_sequence=sequence, so that a replica that has not swapped
        yet refuses instead of answering from an older version."""
        deadline = time.monotonic() + timeout
        seen = "nothing (unreachable)"
        while True:
            try:
                info = self.info(timeout=max(0.1, min(10.0, timeout)))
            except MineError as e:  # a restarting server: ask again
                if e.code != grpc.StatusCode.UNAVAILABLE.value[0]:
                    raise
                seen = f"nothing ({e})"
            else:
                if (info.version.sequence >= sequence
                        and (name is None or info.version.name == name)):
                    return info
                seen = (f"{info.version.name!r} (sequence "
                        f"{info.version.sequence})")
            if time.monotonic() >= deadline:
                raise MineError(
                    grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
                    f"after {timeout:g} s the server serves {seen}, not "
                    f"sequence >= {sequence}"
                    + (f" named {name!r}" if name else ""))
            time.sleep(poll_interval)

    def publish(self, embeddings: Any, ids: Any, labels: Any = None, *,
                name: str, step: int, metric: Optional[str] = None,
                base_version: Optional[str] = None, delete_ids: Any = None,
                wait: bool = True, chunk_rows: Optional[int] = None,
                progress: _publish.ProgressArg = "auto",
                timeout: Optional[float] = None,
                poll_interval: float = 0.5) -> IndexVersion:
        """Streams a new index version to the server over Publish.

        embeddings    [n, dim] floats (numpy or torch, any device or grad);
                      None with delete_ids only
        ids           [n] int64, unique
        labels        [n] ints, or None (no labels)
        name, step    the version's name (A-Z a-z 0-9 . _ -) and step
        metric        "inner_product" or "l2"; None keeps the server's
        base_version  an incremental publish: the name of the served version
                      it applies to; `ids` then upsert and delete_ids remove
        wait          True: return once the version serves (IndexVersion
                      with its sequence); False: once the server has the
                      data (sequence 0; the build goes on in the
                      background, and a refusal found while building, e.g.
                      a stale base or the memory budget, is only in
                      info().last_rejected)
        chunk_rows    rows per message (default: about 2 MiB of embeddings)
        progress      a callable taking PublishProgress, True (a tqdm bar,
                      or lines on stderr), False/None, or "auto" (a bar
                      when tqdm is installed and stderr is a terminal).
                      Called on this thread; an exception it raises
                      cancels the publish and propagates.
        timeout       seconds for the whole publish, build included
                      (default: none; the client's timeout is for mining)

        Raises PublishError with the gRPC code and the server's message
        when refused; then nothing was installed. Ctrl-C, an exception
        from `progress` or `timeout` cancel the publish: with wait=True the
        server then installs nothing, even when the cancel comes during
        the build.
        """
        check_version_name(name)
        if base_version is not None:
            check_version_name(base_version, "base_version")
        if metric is not None and metric not in ("inner_product", "l2"):
            raise ValueError(
                f"metric must be inner_product, l2 or None, got {metric!r}")
        dim = None
        if embeddings is None:  # deletes only: the served version's dim
            try:
                dim = self.info().dim
            except MineError as e:
                raise PublishError(e.code, e.message) from e
        data = _publish.prepare(embeddings, ids, labels, delete_ids, dim)
        rows = (_publish.default_chunk_rows(data.dim) if chunk_rows is None
                else int(chunk_rows))
        if rows <= 0:
            raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
        header = miner_pb2.PublishHeader(
            name=name, step=int(step), dim=data.dim, wait=bool(wait),
            total_ids=data.ids.shape[0],
            total_delete_ids=data.delete_ids.shape[0])
        if metric is not None:
            header.metric = metric
        if base_version is not None:
            header.base_version = base_version
        report = _publish.progress_reporter(progress, name)
        # gRPC pulls the requests on its own thread, which only counts what
        # it sent; progress is reported from this thread.
        sent = _publish.SentCounter(data.ids.shape[0] +
                                    data.delete_ids.shape[0])
        call = self._stub.Publish.future(
            _publish.requests(miner_pb2, data, header, rows, sent),
            timeout=timeout, metadata=self._metadata)
        try:
            resp = self._await_publish(call, name, sent, report, wait,
                                       poll_interval)
        except grpc.RpcError as e:
            raise from_rpc(e, PublishError) from e
        except BaseException:  # Ctrl-C, a failing callback: cancel, and
            call.cancel()      # the server installs nothing
            raise
        return IndexVersion(resp.version.name, resp.version.sequence)

    def _await_publish(self, call: Any, name: str,
                       sent: "_publish.SentCounter", report: Any, wait: bool,
                       poll_interval: float) -> Any:
        """The PublishResponse. Meanwhile reports the rows sent, then,
        once the upload is done and wait is set, the server's
        build_progress of `name`."""
        total = sent.total
        reported = -1
        seen_building = False  # a served version of this name from before
        while True:                  # is not this build done
            count, uploaded = sent.read()
            if report is not None and count != reported:
                reported = count
                report(_publish.PublishProgress("upload", count, total))
            try:
                resp = call.result(
                    timeout=poll_interval if uploaded else 0.1)
                break
            except grpc.FutureTimeoutError:
                pass
            if report is None or not wait or not uploaded:
                continue
            try:
                info = self.info(timeout=max(1.0, poll_interval))
            except HardnegError:
                continue  # progress is best effort; the call decides
            seen_building |= info.building == name
            fraction = (info.build_progress if info.building == name else
                        1.0 if seen_building and info.version.name == name
                        else 0.0)
            report(_publish.PublishProgress("build", total, total, fraction))
        if report is not None:
            if reported != total:
                report(_publish.PublishProgress("upload", total, total))
            report(_publish.PublishProgress("done", total, total, 1.0))
        return resp

    def close(self) -> None:
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

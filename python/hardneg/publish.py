"""Publishing a new index version over the `Publish` RPC.

`Client.publish` is the entry point; this module builds the request stream
(a header, then chunks of ids, labels and float32 embeddings, then the
deleted ids) and reports progress: rows uploaded, then, with wait=True, the
server's build of the version until it serves.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import numpy as np

from hardneg._arrays import as_int64, as_numpy

__all__ = ["PublishProgress", "ProgressArg", "prepare", "requests",
           "progress_reporter", "SentCounter"]

# Bytes of embeddings in one chunk: far below gRPC's default 4 MiB message
# limit once ids and labels are added, and large enough that per-message
# costs vanish.
CHUNK_BYTES = 2 << 20


@dataclasses.dataclass(frozen=True)
class PublishProgress:
    """Where a publish is.

    stage           "upload" while rows are sent, "build" while the server
                    builds the version (wait=True only), "done" once the
                    server answered
    rows_sent       rows (and deleted ids) handed to gRPC so far
    total_rows      all rows plus deleted ids of the publish
    build_progress  the server's GetIndexInfo.build_progress (0..1) for this
                    version during "build"; 1.0 once done
    """

    stage: str
    rows_sent: int
    total_rows: int
    build_progress: float = 0.0


# What `publish(progress=...)` takes: a callable, True (a bar or lines on
# stderr), False/None (silent), or "auto" (a tqdm bar when tqdm is installed
# and stderr is a terminal, else silent).
ProgressArg = Union[None, bool, str, Callable[[PublishProgress], None]]


@dataclasses.dataclass
class Prepared:
    """A publish's arrays, checked and converted."""

    embeddings: np.ndarray  # [n, dim] little-endian float32
    ids: np.ndarray  # [n] int64
    labels: Optional[np.ndarray]  # [n] int64
    delete_ids: np.ndarray  # [m] int64
    dim: int


def prepare(embeddings: Any, ids: Any, labels: Any, delete_ids: Any,
            dim: Optional[int]) -> Prepared:
    """Checks shapes and converts (torch tensors are detached and copied).

    `dim` is needed only when there are no embeddings (a publish that only
    deletes); the caller then passes the served version's."""
    ids_a = as_int64(ids if ids is not None else [], "ids")
    if ids_a.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids_a.shape}")
    n = ids_a.shape[0]
    if embeddings is None:
        if n:
            raise ValueError(f"{n} ids but no embeddings")
        if dim is None:
            raise ValueError("no embeddings: give dim")
        emb = np.zeros((0, dim), dtype="<f4")
    else:
        emb = as_numpy(embeddings)
        if emb.ndim != 2:
            raise ValueError(
                f"embeddings must be [n, dim], got shape {emb.shape}")
        if emb.dtype.kind not in "fiu":
            raise TypeError(f"embeddings must be numbers, got {emb.dtype}")
        emb = np.ascontiguousarray(emb, dtype="<f4")
    if emb.shape[0] != n:
        raise ValueError(f"{emb.shape[0]} embeddings for {n} ids")
    if emb.shape[1] == 0:
        raise ValueError("embeddings have dimension 0")
    labels_a = None
    if labels is not None:
        labels_a = as_int64(labels, "labels")
        if labels_a.shape != (n,):
            raise ValueError(
                f"labels must have one entry per id ({n}), got shape "
                f"{labels_a.shape}")
    deletes = as_int64(delete_ids if delete_ids is not None else [],
                       "delete_ids").reshape(-1)
    return Prepared(emb, ids_a, labels_a, deletes, int(emb.shape[1]))


class SentCounter:
    """Rows (and deleted ids) handed to gRPC, counted on gRPC's thread and
    read on the caller's."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._lock = threading.Lock()
        self._count = 0
        self._done = False

    def add(self, count: int) -> None:
        with self._lock:
            self._count += count

    def finish(self) -> None:
        with self._lock:
            self._done = True

    def read(self) -> Tuple[int, bool]:
        """(rows sent, whether the whole stream was handed over)."""
        with self._lock:
            return self._count, self._done


def requests(pb2: Any, data: Prepared, header: Any, chunk_rows: int,
             sent: SentCounter) -> Iterator[Any]:
    """The PublishRequest stream: the header, the rows in chunks of
    chunk_rows, then the deleted ids; `sent` counts them."""
    yield pb2.PublishRequest(header=header)
    n = data.ids.shape[0]
    for start in range(0, n, chunk_rows):
        end = min(n, start + chunk_rows)
        chunk = pb2.PublishChunk(
            ids=data.ids[start:end].tolist(),
            embeddings_bytes=data.embeddings[start:end].tobytes())
        if data.labels is not None:
            chunk.labels.extend(data.labels[start:end].tolist())
        yield pb2.PublishRequest(chunk=chunk)
        sent.add(end - start)
    step = max(1, CHUNK_BYTES // 8)
    for start in range(0, data.delete_ids.shape[0], step):
        part = data.delete_ids[start:start + step]
        yield pb2.PublishRequest(
            chunk=pb2.PublishChunk(delete_ids=part.tolist()))
        sent.add(part.shape[0])
    sent.finish()


def default_chunk_rows(dim: int) -> int:
    return max(1, CHUNK_BYTES // (4 * dim))


class _Lines:
    """Progress as sparse lines on stderr (no tqdm, or not a terminal)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._last = ""

    def __call__(self, p: PublishProgress) -> None:
        if p.stage == "upload":
            pct = 100 * p.rows_sent // max(1, p.total_rows)
            line = f"upload {pct // 10 * 10}%"
        elif p.stage == "build":
            line = f"build {int(p.build_progress * 10) * 10}%"
        else:
            line = "serving"
        if line != self._last:  # at most one line per 10%
            self._last = line
            print(f"hardneg publish {self._name}: {line}", file=sys.stderr,
                  flush=True)


class _Bar:
    """Progress as a tqdm bar: rows uploaded, then the build in percent."""

    def __init__(self, tqdm: Any, name: str) -> None:
        self._tqdm = tqdm
        self._name = name
        self._bar: Any = None
        self._stage = ""

    def __call__(self, p: PublishProgress) -> None:
        if p.stage != self._stage:
            if self._bar is not None:
                self._bar.close()
            self._stage = p.stage
            if p.stage == "upload":
                self._bar = self._tqdm(total=p.total_rows, unit="rows",
                                       desc=f"publish {self._name}")
            elif p.stage == "build":
                self._bar = self._tqdm(total=100, unit="%",
                                       desc=f"build {self._name}")
            else:
                self._bar = None
                return
        if self._bar is None:
            return
        target = (p.rows_sent if p.stage == "upload"
                  else int(round(p.build_progress * 100)))
        if target > self._bar.n:
            self._bar.update(target - self._bar.n)


def progress_reporter(progress: ProgressArg, name: str
                      ) -> Optional[Callable[[PublishProgress], None]]:
    """The callable that `publish(progress=...)` means (see ProgressArg)."""
    if progress is None or progress is False:
        return None
    if callable(progress):
        return progress
    if progress not in (True, "auto"):
        raise ValueError(
            f"progress must be a callable, True, False, None or 'auto', "
            f"got {progress!r}")
    try:
        from tqdm import tqdm  # optional (python3-tqdm)
    except ImportError:
        tqdm = None
    tty = sys.stderr.isatty()
    if progress == "auto" and not (tty and tqdm is not None):
        return None
    if tqdm is not None and tty:
        return _Bar(tqdm, name)
    return _Lines(name)

"""A PyTorch helper for the training loop: anchors in, negatives out.

    miner = hardneg.NegativeMiner(client, num_negatives=8,
                                  range_max=100, sampling="softmax",
                                  temperature=0.05, return_embeddings=True)
    for step, (x, y, ids) in enumerate(loader):
        anchors = model(x)                       # [B, dim], on any device
        negs = miner(anchors, labels=y, query_ids=ids, seed=step)
        negs.ids          # [B, k] torch.int64 on the CPU, -1 where short
        negs.mask         # [B, k] bool, True where a negative was found
        negs.embeddings   # [B, k, dim] on anchors' device and dtype (the
                          # server's stored vectors, as constants)

The anchors are detached and copied by the client: mining never touches the
autograd graph. Positives can be given as stored ids (`positive_ids`), as
scores (`positive_scores`), or as embeddings (`positives`, [B, dim]: the
helper scores each anchor against its positive with the index's metric), so
that the positive-aware margins (absolute_margin, relative_margin) apply.

`send()`/`recv()` pipeline over one Mine stream (mine the next batch while
this one trains); `__call__` is send() then recv(). A request with
min_index_sequence is retried while the server still serves an older
version (FAILED_PRECONDITION), for up to `index_timeout` seconds: the way a
rank waits for the version another rank published. A stream that fails as a
whole (a dropped connection, a server's max_connection_age) is reopened
once and the unanswered requests are sent again.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional

import grpc
import numpy as np

from hardneg._arrays import as_numpy, is_tensor
from hardneg.errors import MineError

__all__ = ["NegativeMiner", "Negatives"]

_FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]


@dataclasses.dataclass
class Negatives:
    """The negatives of one batch of anchors.

    ids         [n, k] int64 (torch on the CPU when torch is installed, else
                numpy), -1 where a query came up short
    mask        [n, k] bool, True where a negative was returned
    scores      [n, k] float32 (NaN where short), the server's scores
    labels      [n, k] int64, the stored labels
    embeddings  [n, k, dim] on the anchors' device and dtype (zeros where
                short), with return_embeddings; else None
    result      the client's MineResult (numpy arrays, index version, ...)
    """

    ids: Any
    mask: Any
    scores: Any
    labels: Any
    embeddings: Any
    result: Any


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


class NegativeMiner:
    """Mines negatives for batches of anchors over one Mine stream.

    client     a hardneg.Client
    options    default MiningOptions (num_negatives, range_min, range_max,
               absolute_margin, relative_margin, sampling, temperature,
               return_embeddings, ...), overridable per call
    index_timeout  how long a call with min_index_sequence waits for the
               server to serve that version
    """

    def __init__(self, client: Any, *, index_timeout: float = 300.0,
                 **options: Any) -> None:
        self._client = client
        self._options = options
        self._index_timeout = index_timeout
        self._stream: Any = None
        self._metric: Optional[str] = None
        self.retries = 0  # requests asked again while a version was awaited
        self.reopened = 0  # streams reopened after failing as a whole
        # Per pending request: (send kwargs for a retry, anchors' device
        # and dtype).
        self._pending: List[Dict[str, Any]] = []

    @property
    def metric(self) -> str:
        """The index's metric (asked once)."""
        if self._metric is None:
            self._metric = self._client.info().metric or "inner_product"
        return self._metric

    def _positive_scores(self, anchors: np.ndarray, positives: Any) -> np.ndarray:
        p = as_numpy(positives, np.float32)
        if p.shape != anchors.shape:
            raise ValueError(f"positives must be shaped like the anchors "
                             f"{anchors.shape}, got {p.shape}")
        if self.metric == "l2":
            return ((anchors - p) ** 2).sum(axis=1)
        return (anchors * p).sum(axis=1)

    def send(self, anchors: Any, *, labels: Any = None,
             positive_ids: Any = None, positive_scores: Any = None,
             positives: Any = None, query_ids: Any = None,
             **options: Any) -> int:
        """Queues the mining of one batch; returns its request id."""
        if positives is not None and positive_scores is not None:
            raise TypeError("give positives or positive_scores, not both")
        q = as_numpy(anchors, np.float32)
        if q.ndim != 2:
            raise ValueError(f"anchors must be [n, dim], got {q.shape}")
        if positives is not None:
            positive_scores = self._positive_scores(q, positives)
        opts = dict(self._options)
        opts.update(options)
        kwargs = dict(queries=q, labels=labels, positive_ids=positive_ids,
                      positive_scores=positive_scores, query_ids=query_ids,
                      **opts)
        if self._stream is None or self._stream.closed:
            self._stream = self._client.stream()
        rid = self._stream.send(**kwargs)
        device = anchors.device if is_tensor(anchors) else None
        dtype = anchors.dtype if is_tensor(anchors) else None
        self._pending.append({"kwargs": kwargs, "device": device,
                              "dtype": dtype, "request_id": rid})
        return rid

    def recv(self) -> Negatives:
        """The negatives of the oldest pending send()."""
        if not self._pending:
            raise RuntimeError("recv() without a pending send()")
        sent = self._pending[0]
        try:
            result = self._stream.recv()
        except MineError as e:
            if self._stream.closed and not sent.get("resent"):
                result = self._reopen_and_recv()
            elif (e.code == _FAILED_PRECONDITION
                  and sent["kwargs"].get("min_index_sequence")):
                result = self._retry(sent["kwargs"], e)
            else:
                self._pending.pop(0)
                raise
        self._pending.pop(0)
        result.request_id = sent["request_id"]
        return self._negatives(result, sent["device"], sent["dtype"])

    def _reopen_and_recv(self) -> Any:
        """After the stream failed as a whole: a new stream, every
        unanswered request sent again (once), the oldest one's answer."""
        self.reopened += 1
        self._stream = self._client.stream()
        for sent in self._pending:
            sent["resent"] = True
            self._stream.send(**sent["kwargs"])
        try:
            return self._stream.recv()
        except MineError as e:
            if (e.code == _FAILED_PRECONDITION
                    and self._pending[0]["kwargs"].get("min_index_sequence")):
                return self._retry(self._pending[0]["kwargs"], e)
            self._pending.pop(0)
            raise

    def __call__(self, anchors: Any, **kwargs: Any) -> Negatives:
        """send() then recv(): the negatives of this batch."""
        if self._pending:
            raise RuntimeError("__call__ with sends pending: recv() them first")
        self.send(anchors, **kwargs)
        return self.recv()

    def _retry(self, kwargs: Dict[str, Any], error: MineError) -> Any:
        """Asks again (one MineOnce a time) until the server serves the
        version, or index_timeout passes."""
        deadline = time.monotonic() + self._index_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(1.0, delay * 2)
            self.retries += 1
            try:
                return self._client.mine(**kwargs)
            except MineError as e:
                if e.code != _FAILED_PRECONDITION:
                    raise
                error = e
        raise error

    def _negatives(self, result: Any, device: Any, dtype: Any) -> Negatives:
        torch = _torch()
        emb = result.embeddings
        if torch is None:
            return Negatives(result.ids, result.mask, result.scores,
                             result.labels, emb, result)
        embeddings = None
        if emb is not None:
            t = torch.from_numpy(np.nan_to_num(emb, nan=0.0))
            embeddings = t.to(device=device or "cpu",
                              dtype=dtype or torch.float32)
        return Negatives(ids=torch.from_numpy(result.ids),
                         mask=torch.from_numpy(result.mask),
                         scores=torch.from_numpy(result.scores),
                         labels=torch.from_numpy(result.labels),
                         embeddings=embeddings, result=result)

    def close(self) -> None:
        """Closes the stream (after any pending recv())."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._pending.clear()

    def __enter__(self) -> "NegativeMiner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""Writing a checkpoint directory, the way an encoder job hands a new
version to a server that watches `--checkpoints`, with numpy alone:

    <checkpoints>/<name>/
      embeddings-00000.npy   float32 (or float16) [n, dim]
      ids-00000.npy          int64 [n]
      labels-00000.npy       int64 [n], optional
      ...                    one such triple per part
      manifest.json          {"name", "step", "dim", "metric", "shards": [...]}

The files go into a hidden staging directory beside the target
(`.<name>.tmp-<pid>-<random>`, which the server ignores), the manifest is
written last, and the whole directory is renamed into place: the server
never sees a partial checkpoint, and a crash leaves only a hidden directory.

    hardneg.write_checkpoint("/ckpt", emb, ids, labels, name="epoch-3", step=3)

or, for a corpus encoded in parts (one part of the files per add()):

    with hardneg.CheckpointWriter("/ckpt", name="epoch-3", step=3) as w:
        for batch in loader:
            w.add(model.encode(batch.x), batch.ids, batch.labels)
    # committed on a clean exit; removed on an exception
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from typing import Any, Dict, List, Optional

import numpy as np

from hardneg._arrays import as_int64, as_numpy

__all__ = ["CheckpointWriter", "write_checkpoint", "check_version_name"]

_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
METRICS = ("inner_product", "l2")


def check_version_name(name: str, what: str = "name") -> None:
    """ValueError unless `name` is a valid version name: 1 to 128
    characters of A-Z a-z 0-9 . _ - (and not "." or ".."), as the server
    requires."""
    if (not isinstance(name, str) or not _NAME.fullmatch(name)
            or name in (".", "..")):
        raise ValueError(
            f"{what} {name!r} is not a version name: 1 to 128 characters of "
            "A-Z a-z 0-9 . _ - (not '.' or '..')")


def _save(path: str, array: np.ndarray) -> None:
    """np.save, flushed to disk before the manifest can name it."""
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    """Makes the entries of a directory (renames into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointWriter:
    """Writes one checkpoint in parts; see the module's docstring.

    checkpoints  the directory the server watches (created if missing)
    name, step   the version's name and training step (the server serves
                 the complete checkpoint with the highest step)
    metric       "inner_product", "l2", or None (the server's --metric)
    dtype        "float32" or "float16" (half the disk; the server reads
                 both)
    overwrite    replace an existing <checkpoints>/<name>; otherwise
                 FileExistsError
    """

    def __init__(self, checkpoints: str, *, name: str, step: int,
                 metric: Optional[str] = "inner_product",
                 dtype: str = "float32", overwrite: bool = False) -> None:
        check_version_name(name)
        if metric is not None and metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS} or None, "
                             f"got {metric!r}")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
        if int(step) < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.path = os.path.join(checkpoints, name)
        if os.path.lexists(self.path) and not overwrite:
            raise FileExistsError(
                f"{self.path} exists; pass overwrite=True to replace it")
        os.makedirs(checkpoints, exist_ok=True)
        self._root = checkpoints
        self._overwrite = overwrite
        self._name = name
        self._step = int(step)
        self._metric = metric
        self._dtype = np.dtype(dtype).newbyteorder("<")
        self._stage = os.path.join(
            checkpoints, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        os.mkdir(self._stage)
        self._shards: List[Dict[str, str]] = []
        self._dim: Optional[int] = None
        self._labels: Optional[bool] = None
        self._ids: List[np.ndarray] = []
        self.rows = 0
        self._done = False

    def add(self, embeddings: Any, ids: Any, labels: Any = None) -> None:
        """Writes one part: embeddings [n, dim] (numpy or torch), ids [n]
        and, in every part or in none, labels [n]."""
        if self._done:
            raise RuntimeError("the checkpoint is already committed")
        # Everything is checked before anything is written or recorded: a
        # refused part leaves the writer as it was.
        emb = as_numpy(embeddings)
        ids_a = as_int64(ids, "ids")
        if emb.ndim != 2 or emb.shape[1] == 0:
            raise ValueError(f"embeddings must be [n, dim], got {emb.shape}")
        if ids_a.shape != (emb.shape[0],):
            raise ValueError(f"ids must be [{emb.shape[0]}], got {ids_a.shape}")
        if self._dim is not None and emb.shape[1] != self._dim:
            raise ValueError(
                f"embeddings have dim {emb.shape[1]}; earlier parts {self._dim}")
        if self._labels is not None and self._labels != (labels is not None):
            raise ValueError("labels must be given for every part or for none")
        labels_a = None
        if labels is not None:
            labels_a = as_int64(labels, "labels")
            if labels_a.shape != ids_a.shape:
                raise ValueError(
                    f"labels must be [{ids_a.shape[0]}], got {labels_a.shape}")
        emb = emb.astype(self._dtype, copy=False)
        if not np.isfinite(emb).all():
            raise ValueError("embeddings hold NaN or infinity (after the cast "
                             f"to {self._dtype.name})")
        part = len(self._shards)
        shard = {"embeddings": f"embeddings-{part:05d}.npy",
                 "ids": f"ids-{part:05d}.npy"}
        _save(os.path.join(self._stage, shard["embeddings"]), emb)
        _save(os.path.join(self._stage, shard["ids"]), ids_a)
        if labels_a is not None:
            shard["labels"] = f"labels-{part:05d}.npy"
            _save(os.path.join(self._stage, shard["labels"]), labels_a)
        self._dim = int(emb.shape[1])
        self._labels = labels_a is not None
        self._ids.append(ids_a)
        self._shards.append(shard)
        self.rows += ids_a.shape[0]

    def commit(self) -> str:
        """Writes the manifest and renames the checkpoint into place;
        returns its path. On an error (duplicate ids, a full disk) the
        staged files are removed and the target is left as it was."""
        if self._done:
            return self.path
        try:
            return self._commit()
        except BaseException:
            self.abort()
            raise

    def _commit(self) -> str:
        if self._dim is None or self.rows == 0:
            raise ValueError("an empty checkpoint (no rows): the server "
                             "would reject it")
        ids = np.concatenate(self._ids)
        unique, counts = np.unique(ids, return_counts=True)
        if unique.shape[0] != ids.shape[0]:
            raise ValueError(
                f"ids must be unique across the checkpoint; "
                f"{int(unique[counts > 1][0])} appears {int(counts.max())} "
                "times")
        manifest: Dict[str, Any] = {"name": self._name, "step": self._step,
                                    "dim": self._dim, "shards": self._shards}
        if self._metric is not None:
            manifest["metric"] = self._metric
        tmp = os.path.join(self._stage, "manifest.json.tmp")
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self._stage, "manifest.json"))
        _fsync_dir(self._stage)
        old = None
        if os.path.lexists(self.path):
            if not self._overwrite:  # appeared since __init__
                raise FileExistsError(
                    f"{self.path} appeared while this checkpoint was written; "
                    "pass overwrite=True to replace it")
            old = f"{self._stage}.old"
            os.rename(self.path, old)
        try:
            # rename() would replace an empty directory: a target that
            # appeared since the check above, empty, is lost to this one.
            os.rename(self._stage, self.path)
        except BaseException:
            if old is not None:  # put the previous checkpoint back
                os.rename(old, self.path)
            raise
        _fsync_dir(self._root)
        self._done = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Removes what was written; the target is left as it was."""
        if not self._done:
            self._done = True
            shutil.rmtree(self._stage, ignore_errors=True)

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_checkpoint(checkpoints: str, embeddings: Any, ids: Any,
                     labels: Any = None, *, name: str, step: int,
                     metric: Optional[str] = "inner_product",
                     dtype: str = "float32", rows_per_file: int = 1 << 20,
                     overwrite: bool = False) -> str:
    """Writes <checkpoints>/<name> from whole arrays (numpy or torch), in
    files of at most rows_per_file rows; returns the checkpoint's path. See
    CheckpointWriter for the arguments."""
    if rows_per_file <= 0:
        raise ValueError(f"rows_per_file must be > 0, got {rows_per_file}")
    emb = as_numpy(embeddings)
    ids_a = as_int64(ids, "ids")
    labels_a = None if labels is None else as_int64(labels, "labels")
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be [n, dim], got {emb.shape}")
    if ids_a.shape != (emb.shape[0],):
        raise ValueError(f"ids must be [{emb.shape[0]}], got {ids_a.shape}")
    with CheckpointWriter(checkpoints, name=name, step=step, metric=metric,
                          dtype=dtype, overwrite=overwrite) as w:
        for start in range(0, max(1, emb.shape[0]), rows_per_file):
            end = start + rows_per_file
            w.add(emb[start:end], ids_a[start:end],
                  None if labels_a is None else labels_a[start:end])
    return w.path

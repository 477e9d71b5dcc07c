"""numpy arrays from whatever a trainer holds: numpy arrays, lists, or
torch tensors on any device, with or without grad (detached and copied to
the CPU here, so the caller never has to). torch is not imported: a tensor
is recognised by its methods."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def is_tensor(x: Any) -> bool:
    """Whether x is a torch.Tensor (without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def as_numpy(x: Any, dtype: Optional[Any] = None) -> np.ndarray:
    """x as a numpy array of `dtype` (None: x's own). A torch tensor is
    detached and copied to the CPU first; a reduced-precision one (float16,
    bfloat16, which numpy lacks) is widened to float32 on its device."""
    if is_tensor(x):
        t = x.detach()
        if hasattr(t, "resolve_neg"):  # lazy negation/conjugation views
            t = t.resolve_neg().resolve_conj()
        if t.is_floating_point() and t.element_size() < 4:
            t = t.float()
        x = t.cpu().numpy()
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def as_int64(x: Any, name: str) -> np.ndarray:
    """x as a 1-D int64 array; TypeError when it holds non-integers (a float
    id is a caller's bug, not something to truncate)."""
    a = as_numpy(x)
    if a.size and a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.size and a.dtype.kind == "u" and int(a.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds {int(a.max())}, past int64's range")
    return np.ascontiguousarray(a.reshape(-1) if a.ndim == 0 else a,
                                dtype=np.int64)

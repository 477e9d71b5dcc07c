#!/usr/bin/python3
"""Writes the small .npy inputs of tests/cli/golden.sh into the current
directory: 40 candidates of dim 8 with labels, 6 queries with positives,
labels and query ids, and files of the wrong shape or type."""
import numpy as np

rng = np.random.default_rng(14)
emb = rng.standard_normal((40, 8)).astype(np.float32)
np.save("emb.npy", emb)
np.save("ids.npy", np.arange(1000, 1040, dtype=np.int64))
np.save("labels.npy", (np.arange(40) % 4).astype(np.int64))
np.save("more.npy", rng.standard_normal((5, 8)).astype(np.float32))
np.save("more_ids.npy", np.array([1000, 1001, 2000, 2001, 2002], np.int64))
np.save("more_labels.npy", np.array([0, 1, 2, 3, 0], np.int64))
np.save("del_ids.npy", np.array([1005, 1006], np.int64))

q = rng.standard_normal((6, 8)).astype(np.float32)
np.save("q.npy", q)
np.save("q16.npy", q.astype(np.float16))
np.save("pos.npy", np.array([[1000, -1], [1001, 1002], [-1, -1], [1003, 1004],
                             [1039, -1], [1010, 1011]], np.int64))
np.save("pos1d.npy", np.array([1000, 1001, 1002, 1003, 1004, 1005], np.int64))
np.save("qlabels.npy", np.array([0, 1, 2, 3, 0, 1], np.int64))
np.save("qids.npy", np.array([1000, 1001, 1002, 1003, 1004, 1005], np.int64))

# Wrong inputs.
np.save("qlabels_short.npy", np.array([0, 1, 2], np.int64))
np.save("empty.npy", np.zeros((0, 8), np.float32))
np.save("f64.npy", np.zeros((3, 8), np.float64))
bad = emb[:4].copy()
bad[2, 3] = np.nan
np.save("emb_nan.npy", bad)
np.save("ids_dup.npy", np.array([1, 2, 1, 3], np.int64))
np.save("ids4.npy", np.array([1, 2, 3, 4], np.int64))
with open("not_npy.npy", "wb") as f:
    f.write(b"hello")
with open("names.txt", "w") as f:
    f.write("zero\none\ntwo\nthree\n")

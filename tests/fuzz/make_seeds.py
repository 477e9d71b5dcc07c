#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/.

A few valid and near-valid inputs per target, deterministic, a few KB in
all. The files are committed; rerun this after changing it:

    python3 tests/fuzz/make_seeds.py

Needs numpy (python3-numpy) for the .npy seeds. The protobuf seeds are
encoded by hand (wire format below), so no generated code is needed.
"""

import io
import json
import os
import random
import shutil
import struct

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# The tiny version every mining and publish target uses (fuzz_support.h).
TINY_IDS = [-300 + 7 * row for row in range(160)]


def write(target, name, data):
    path = os.path.join(ROOT, target, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as f:
        f.write(data)


# --- protobuf wire format ---------------------------------------------------


def varint(n):
    n &= (1 << 64) - 1  # negative int64 as two's complement
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field, wire_type):
    return varint(field << 3 | wire_type)


def f_varint(field, n):
    return key(field, 0) + varint(n)


def f_bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return key(field, 2) + varint(len(data)) + data


def f_float(field, x):
    return key(field, 5) + struct.pack("<f", x)


def packed_floats(field, xs):
    return f_bytes(field, b"".join(struct.pack("<f", x) for x in xs))


def packed_int64s(field, xs):
    return f_bytes(field, b"".join(varint(x) for x in xs))


def delimited(*messages):
    """A stream of length-delimited messages, as publish_fuzzer reads it."""
    return b"".join(varint(len(m)) + m for m in messages)


# --- .npy -------------------------------------------------------------------


def npy(array, version=None):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


def npy_seeds():
    rng = np.random.default_rng(1)
    f4 = rng.standard_normal((3, 4)).astype("<f4")
    write("npy_fuzzer", "f4_c", npy(f4))
    write("npy_fuzzer", "f4_fortran", npy(np.asfortranarray(f4)))
    write("npy_fuzzer", "f2", npy(f4.astype("<f2")))
    write("npy_fuzzer", "f4_v2", npy(f4, version=(2, 0)))
    write("npy_fuzzer", "f4_v3", npy(f4, version=(3, 0)))
    write("npy_fuzzer", "f4_empty", npy(np.zeros((0, 4), "<f4")))
    write("npy_fuzzer", "i8", npy(np.arange(5, dtype="<i8") - 2))
    write("npy_fuzzer", "i4", npy(np.arange(3, dtype="<i4")))
    write("npy_fuzzer", "big_endian", npy(f4.astype(">f4")))
    write("npy_fuzzer", "three_d", npy(np.zeros((2, 2, 2), "<f4")))
    write("npy_fuzzer", "structured",
          npy(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8")])))
    write("npy_fuzzer", "truncated", npy(f4)[:-5])
    write("npy_fuzzer", "trailing", npy(f4) + b"\0\0\0\0")
    write("npy_fuzzer", "bad_magic", b"\x93NUMPX" + npy(f4)[6:])


# --- manifest.json ----------------------------------------------------------


def manifest_seeds():
    shard = {"embeddings": "embeddings-00000.npy", "ids": "ids-00000.npy"}
    good = {"name": "m", "step": 12000, "dim": 768, "metric": "inner_product",
            "shards": [dict(shard, labels="labels-00000.npy")]}
    write("manifest_fuzzer", "good", json.dumps(good))
    write("manifest_fuzzer", "two_shards_l2", json.dumps(
        dict(good, metric="l2", shards=[shard, {"embeddings": "sub/e.npy",
                                                "ids": "sub/i.npy"}])))
    write("manifest_fuzzer", "no_metric", json.dumps(
        {k: v for k, v in good.items() if k != "metric"}))
    write("manifest_fuzzer", "dim_zero", json.dumps(dict(good, dim=0)))
    write("manifest_fuzzer", "no_shards", json.dumps(dict(good, shards=[])))
    write("manifest_fuzzer", "absolute", json.dumps(
        dict(good, shards=[{"embeddings": "/etc/e.npy", "ids": "i.npy"}])))
    write("manifest_fuzzer", "dotdot", json.dumps(
        dict(good, shards=[{"embeddings": "a/../../e.npy", "ids": "i.npy"}])))
    write("manifest_fuzzer", "wrong_types", json.dumps(
        dict(good, step="12000", dim=-3, shards={"embeddings": 1})))
    write("manifest_fuzzer", "unknown_metric", json.dumps(
        dict(good, metric="cosine")))
    write("manifest_fuzzer", "not_json", '{"name": "m", "step": 1,')
    write("manifest_fuzzer", "nested", "[" * 64 + "]" * 64)


# --- hardneg.v1.MineRequest -------------------------------------------------


def query(embedding=None, positive_ids=(), positive_scores=(), label=None,
          query_id=None, embedding_bytes=None):
    out = b""
    if embedding is not None:
        out += packed_floats(1, embedding)
    if positive_ids:
        out += packed_int64s(2, positive_ids)
    if positive_scores:
        out += packed_floats(3, positive_scores)
    if label is not None:
        out += f_varint(4, label)
    if query_id is not None:
        out += f_varint(5, query_id)
    if embedding_bytes is not None:
        out += f_bytes(6, embedding_bytes)
    return out


def options(num_negatives=5, range_min=0, range_max=0, max_score=None,
            min_score=None, absolute_margin=None, relative_margin=None,
            sampling=0, temperature=0.0, seed=0, return_embeddings=False,
            nprobe=0):
    out = f_varint(1, num_negatives)
    if range_min:
        out += f_varint(2, range_min)
    if range_max:
        out += f_varint(3, range_max)
    for field, value in ((4, max_score), (5, min_score),
                         (6, absolute_margin), (7, relative_margin)):
        if value is not None:
            out += f_float(field, value)
    if sampling:
        out += f_varint(8, sampling)
    if temperature:
        out += f_float(9, temperature)
    if seed:
        out += f_varint(10, seed)
    if return_embeddings:
        out += f_varint(11, 1)
    if nprobe:
        out += f_varint(13, nprobe)
    return out


def mine_request(request_id, queries, opts):
    return (f_varint(1, request_id) + b"".join(f_bytes(2, q) for q in queries)
            + f_bytes(3, opts))


def mine_request_seeds():
    q = [0.5, -1.0, 0.25, 2.0]
    write("mine_request_fuzzer", "top_ip_flat",
          mine_request(0, [query(q)], options()))
    write("mine_request_fuzzer", "l2_ivf_bytes",
          mine_request(3, [query(embedding_bytes=struct.pack("<4f", *q))],
                       options(num_negatives=8, nprobe=2)))
    write("mine_request_fuzzer", "positives_label_window",
          mine_request(1, [query(q, positive_ids=TINY_IDS[:3],
                                 positive_scores=[0.5], label=2,
                                 query_id=TINY_IDS[10])],
                       options(num_negatives=4, range_min=3, range_max=20,
                               absolute_margin=0.1, relative_margin=0.05)))
    write("mine_request_fuzzer", "softmax_two_queries",
          mine_request(2, [query(q), query([1.0, 1.0, -1.0, 0.0])],
                       options(num_negatives=6, sampling=2, temperature=0.5,
                               seed=42, return_embeddings=True,
                               max_score=3.0, min_score=-3.0)))
    write("mine_request_fuzzer", "uniform_whole_index",
          mine_request(0, [query(q)],
                       options(num_negatives=64, range_max=500, sampling=1,
                               seed=7)))
    write("mine_request_fuzzer", "wrong_dim",
          mine_request(0, [query([1.0, 2.0])], options()))
    write("mine_request_fuzzer", "both_embeddings",
          mine_request(0, [query(q, embedding_bytes=b"\0" * 16)], options()))
    write("mine_request_fuzzer", "odd_bytes",
          mine_request(0, [query(embedding_bytes=b"\0" * 7)], options()))
    write("mine_request_fuzzer", "nan_and_zero_negatives",
          mine_request(0, [query([float("nan"), 0.0, 0.0, 0.0])],
                       options(num_negatives=0)))
    write("mine_request_fuzzer", "unknown_sampling",
          mine_request(0, [query(q)], options(sampling=9)))


# --- options_fuzzer (FuzzedDataProvider bytes) ------------------------------


def options_seeds():
    rng = random.Random(3)
    for i, size in enumerate((16, 48, 96, 160, 256)):
        write("options_fuzzer", "random_%d" % i,
              bytes(rng.randrange(256) for _ in range(size)))
    write("options_fuzzer", "zeros", b"\0" * 64)
    write("options_fuzzer", "ones", b"\xff" * 64)


# --- Publish streams --------------------------------------------------------


def header(name="v2", step=2, dim=4, metric="", base_version=None):
    out = f_bytes(1, name) + f_varint(2, step) + f_varint(3, dim)
    if metric:
        out += f_bytes(4, metric)
    if base_version is not None:
        out += f_bytes(5, base_version)
    return f_bytes(1, out)  # PublishRequest.header


def chunk(ids=(), labels=(), embeddings=None, embeddings_bytes=None,
          delete_ids=()):
    out = b""
    if ids:
        out += packed_int64s(1, ids)
    if labels:
        out += packed_int64s(2, labels)
    if embeddings is not None:
        out += packed_floats(3, embeddings)
    if embeddings_bytes is not None:
        out += f_bytes(4, embeddings_bytes)
    if delete_ids:
        out += packed_int64s(5, delete_ids)
    return f_bytes(2, out)  # PublishRequest.chunk


def publish_seeds():
    rows = [[0.1 * (i + j) for j in range(4)] for i in range(6)]
    flat = [x for row in rows for x in row]
    write("publish_fuzzer", "full", delimited(
        header(metric="l2"), chunk(ids=[1, 2, 3], embeddings=flat[:12]),
        chunk(ids=[4, 5, 6], embeddings=flat[12:])))
    write("publish_fuzzer", "full_labels_bytes", delimited(
        header(), chunk(ids=[10, 11], labels=[0, 1],
                        embeddings_bytes=struct.pack("<8f", *flat[:8]))))
    write("publish_fuzzer", "incremental", delimited(
        header(base_version="tiny"),
        chunk(ids=[TINY_IDS[0], 9999], labels=[3, 4], embeddings=flat[:8]),
        chunk(delete_ids=[TINY_IDS[1], TINY_IDS[2], 123456])))
    write("publish_fuzzer", "incremental_l2_deletes_only", delimited(
        header(metric="l2", base_version="tiny"),
        chunk(delete_ids=TINY_IDS[5:20])))
    write("publish_fuzzer", "wrong_base", delimited(
        header(base_version="other"), chunk(ids=[1], labels=[0],
                                            embeddings=flat[:4])))
    write("publish_fuzzer", "duplicate_id", delimited(
        header(), chunk(ids=[1, 1], embeddings=flat[:8])))
    write("publish_fuzzer", "size_mismatch", delimited(
        header(), chunk(ids=[1, 2], embeddings=flat[:5])))
    write("publish_fuzzer", "labels_then_none", delimited(
        header(), chunk(ids=[1], labels=[0], embeddings=flat[:4]),
        chunk(ids=[2], embeddings=flat[4:8])))
    write("publish_fuzzer", "delete_in_full", delimited(
        header(), chunk(ids=[1], embeddings=flat[:4], delete_ids=[1])))
    write("publish_fuzzer", "upsert_and_delete", delimited(
        header(base_version="tiny"),
        chunk(ids=[TINY_IDS[4]], labels=[1], embeddings=flat[:4],
              delete_ids=[TINY_IDS[4]])))
    write("publish_fuzzer", "nan", delimited(
        header(), chunk(ids=[1], embeddings=[0.0, float("nan"), 0.0, 0.0])))
    write("publish_fuzzer", "dim_zero", delimited(header(dim=0)))


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    npy_seeds()
    manifest_seeds()
    mine_request_seeds()
    options_seeds()
    publish_seeds()


if __name__ == "__main__":
    main()

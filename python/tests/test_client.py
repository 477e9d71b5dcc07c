#!/usr/bin/python3
"""The hardneg Python package against a real hardneg-server.

Covers what a trainer does with it: write_checkpoint (the layout, atomic
and refusing to overwrite), mine (checked against a numpy brute force, with
class and self exclusion and positive-aware margins), streams (in order, an
in-band refusal, a dead stream), publish (full, incremental, refused,
progress), errors (unknown options, dead servers, stale versions), torch
input (tensors with grad, float16, int tensors) and NegativeMiner
(embeddings on the anchors' device and dtype, positives given as
embeddings, waiting for a version through min_index_sequence).

The package is copied into the work dir and its stubs are generated there
(python/generate.sh), so the source tree stays untouched:

  /usr/bin/python3 python/tests/test_client.py \\
      --server build/server/hardneg-server [--work_dir /tmp/hardneg_client]

Exits 1 on any failure (unittest's summary says which).
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(PYTHON_DIR)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import loopback_server  # noqa: E402  (start)

ARGS = argparse.Namespace()
DIM = 16
ROWS = 600
CLASSES = 6

hardneg = None  # imported by import_package() from the work dir's copy
torch = None


def import_package():
    global hardneg, torch
    py = os.path.join(ARGS.work_dir, "py")
    shutil.copytree(os.path.join(PYTHON_DIR, "hardneg"),
                    os.path.join(py, "hardneg"),
                    ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    subprocess.run([os.path.join(PYTHON_DIR, "generate.sh"), py], check=True,
                   stdout=subprocess.DEVNULL)
    sys.path.insert(0, py)
    import hardneg as h
    hardneg = h
    assert hardneg.__file__.startswith(py), hardneg.__file__
    import torch as t  # python3-torch: the torch tests need it
    torch = t


def corpus(seed=0, rows=ROWS):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((rows, DIM)).astype(np.float32)
    ids = np.arange(rows, dtype=np.int64) * 7 + 100  # not 0..n-1
    labels = np.arange(rows, dtype=np.int64) % CLASSES
    return emb, ids, labels


def brute_force(emb, ids, labels, query, k, label=None, query_id=None,
                below=None):
    """The k best inner products, excluding a label, an id and anything
    scoring >= below."""
    scores = emb @ query
    keep = np.ones(len(ids), dtype=bool)
    if label is not None:
        keep &= labels != label
    if query_id is not None:
        keep &= ids != query_id
    if below is not None:
        keep &= scores < below
    order = np.argsort(-scores[keep], kind="stable")[:k]
    return ids[keep][order], scores[keep][order]


class Server:
    """One hardneg-server over <work>/ck for the whole module."""

    proc = None
    port = 0
    ck = ""

    @classmethod
    def start(cls):
        cls.ck = os.path.join(ARGS.work_dir, "ck")
        emb, ids, labels = corpus()
        hardneg.write_checkpoint(cls.ck, emb, ids, labels, name="v1", step=1,
                                 rows_per_file=250)
        cls.proc, cls.port = loopback_server.start(
            ARGS.server, cls.ck, ARGS.work_dir,
            extra=["--data_dir", os.path.join(ARGS.work_dir, "data"),
                   "--poll_interval", "0.2s"])
        client = hardneg.Client(f"127.0.0.1:{cls.port}", timeout=30)
        client.wait_for_version(1, "v1", timeout=60)
        client.close()

    @classmethod
    def stop(cls):
        if cls.proc is not None:
            cls.proc.terminate()
            cls.proc.wait(timeout=30)


class Base(unittest.TestCase):

    def setUp(self):
        self.client = hardneg.Client(f"127.0.0.1:{Server.port}", timeout=30)
        self.addCleanup(self.client.close)

    # The served version is corpus(seed=version_seed): every test that
    # publishes records the seed of what it left serving.
    version_seed = 0

    def served(self):
        """(embeddings, ids, labels) of the version the server serves."""
        return corpus(seed=Base.version_seed)

    def publish_fresh(self, seed, name):
        """Publishes corpus(seed) as `name` and waits until it serves."""
        emb, ids, labels = corpus(seed=seed)
        v = self.client.publish(emb, ids, labels, name=name,
                                step=self.client.info().step + 1,
                                progress=False)
        Base.version_seed = seed
        return v


# ---------------------------------------------------------------- checkpoints


class CheckpointTest(Base):

    def test_layout_and_served(self):
        path = os.path.join(Server.ck, "v1")
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
        self.assertEqual(manifest["name"], "v1")
        self.assertEqual(manifest["dim"], DIM)
        self.assertEqual(manifest["metric"], "inner_product")
        self.assertEqual(len(manifest["shards"]), 3)  # 600 rows by 250
        for shard in manifest["shards"]:
            for key in ("embeddings", "ids", "labels"):
                self.assertTrue(os.path.exists(os.path.join(path, shard[key])))
        emb, ids, labels = corpus()
        read = np.concatenate([np.load(os.path.join(path, s["ids"]))
                               for s in manifest["shards"]])
        np.testing.assert_array_equal(read, ids)
        self.assertFalse([e for e in os.listdir(Server.ck)
                          if e.startswith(".")], "staging left behind")

    def test_refuses_to_overwrite_then_replaces_without_stale_files(self):
        root = tempfile.mkdtemp(dir=ARGS.work_dir)
        emb, ids, labels = corpus(rows=30)
        hardneg.write_checkpoint(root, emb, ids, labels, name="c", step=1,
                                 rows_per_file=10)
        with self.assertRaises(FileExistsError):
            hardneg.write_checkpoint(root, emb, ids, name="c", step=2)
        path = hardneg.write_checkpoint(root, emb * 2, ids, name="c", step=2,
                                        overwrite=True)
        self.assertEqual(sorted(os.listdir(path)),
                         ["embeddings-00000.npy", "ids-00000.npy",
                          "manifest.json"])
        np.testing.assert_array_equal(
            np.load(os.path.join(path, "embeddings-00000.npy")), emb * 2)
        self.assertEqual(os.listdir(root), ["c"])

    def test_refused_part_leaves_the_writer_usable(self):
        root = tempfile.mkdtemp(dir=ARGS.work_dir)
        emb, ids, labels = corpus(rows=6)
        with hardneg.CheckpointWriter(root, name="w", step=1) as w:
            with self.assertRaisesRegex(ValueError, "labels must be"):
                w.add(emb[:3], ids[:3], labels[:2])
            w.add(emb[:3], ids[:3], labels[:3])
            w.add(emb[3:], ids[3:], labels[3:])
        self.assertEqual(w.rows, 6)
        self.assertTrue(os.path.exists(os.path.join(w.path,
                                                    "labels-00001.npy")))

    def test_never_replaces_a_checkpoint_that_appeared_meanwhile(self):
        root = tempfile.mkdtemp(dir=ARGS.work_dir)
        emb, ids, _ = corpus(rows=4)
        w = hardneg.CheckpointWriter(root, name="x", step=1)
        w.add(emb, ids)
        other = hardneg.write_checkpoint(root, emb * 3, ids, name="x", step=9)
        with self.assertRaises(FileExistsError):
            w.commit()
        with open(os.path.join(other, "manifest.json")) as f:
            self.assertEqual(json.load(f)["step"], 9)
        self.assertEqual(os.listdir(root), ["x"])
        with self.assertRaisesRegex(ValueError, "empty"):
            hardneg.write_checkpoint(root, emb[:0], ids[:0], name="e", step=1)
        self.assertEqual(os.listdir(root), ["x"])

    def test_bad_input_leaves_nothing(self):
        root = tempfile.mkdtemp(dir=ARGS.work_dir)
        emb, ids, _ = corpus(rows=20)
        dup = ids.copy()
        dup[5] = dup[6]
        with self.assertRaisesRegex(ValueError, "unique"):
            hardneg.write_checkpoint(root, emb, dup, name="d", step=1,
                                     rows_per_file=10)
        bad = emb.copy()
        bad[3, 2] = np.nan
        with self.assertRaisesRegex(ValueError, "NaN"):
            hardneg.write_checkpoint(root, bad, ids, name="d", step=1)
        with self.assertRaisesRegex(ValueError, "version name"):
            hardneg.write_checkpoint(root, emb, ids, name="a/b", step=1)
        with self.assertRaisesRegex(TypeError, "integers"):
            hardneg.write_checkpoint(root, emb, ids.astype(float), name="d",
                                     step=1)
        with self.assertRaises(RuntimeError):
            with hardneg.CheckpointWriter(root, name="d", step=1) as w:
                w.add(emb, ids)
                raise RuntimeError("the encoder crashed")
        self.assertEqual(os.listdir(root), [])

    def test_float16_and_torch_parts(self):
        root = tempfile.mkdtemp(dir=ARGS.work_dir)
        emb, ids, labels = corpus(rows=20)
        with hardneg.CheckpointWriter(root, name="h", step=1,
                                      dtype="float16") as w:
            w.add(torch.from_numpy(emb[:10]).requires_grad_(),
                  torch.from_numpy(ids[:10]), torch.from_numpy(labels[:10]))
            w.add(emb[10:], ids[10:], labels[10:])
            with self.assertRaisesRegex(ValueError, "every part"):
                w.add(emb[:1], ids[:1] + 10**6)  # no labels this time
        e = np.load(os.path.join(w.path, "embeddings-00001.npy"))
        self.assertEqual(e.dtype, np.float16)
        np.testing.assert_allclose(e, emb[10:], rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- mining


class MineTest(Base):

    def test_matches_brute_force_with_exclusions(self):
        emb, ids, labels = self.served()
        rng = np.random.default_rng(1)
        rows = rng.choice(len(ids), 20, replace=False)
        queries = emb[rows] + 0.05 * rng.standard_normal((20, DIM))
        res = self.client.mine(queries.astype(np.float32), num_negatives=5,
                               labels=labels[rows], query_ids=ids[rows])
        self.assertEqual(res.ids.shape, (20, 5))
        for i, r in enumerate(rows):
            want, scores = brute_force(emb, ids, labels,
                                       queries[i].astype(np.float32), 5,
                                       labels[r], ids[r])
            self.assertTrue(res.mask[i].all())
            np.testing.assert_array_equal(res.ids[i], want)
            np.testing.assert_allclose(res.scores[i], scores, rtol=1e-4,
                                       atol=1e-4)
            self.assertTrue((res.labels[i] != labels[r]).all())

    def test_positive_aware_margin(self):
        emb, ids, labels = self.served()
        q = emb[:4]
        pos = ids[10:14]
        res = self.client.mine(q, positive_ids=pos.reshape(4, 1),
                               num_negatives=6, absolute_margin=0.5,
                               query_ids=ids[:4])
        for i in range(4):
            p = float(emb[10 + i] @ q[i])
            self.assertAlmostEqual(float(res.positive_score[i]), p, places=3)
            want, _ = brute_force(emb, ids, labels, q[i], 6,
                                  query_id=ids[i], below=p - 0.5)
            want = want[want != pos[i]]
            got = res.ids[i][res.mask[i]]
            self.assertEqual(len(got), min(6, len(want)))
            np.testing.assert_array_equal(got, want[:len(got)])
            self.assertTrue((res.scores[i][res.mask[i]] + 0.5 <= p + 1e-4).all())

    def test_stream_in_order_and_refusal_in_band(self):
        emb, _, _ = self.served()
        with self.client.stream(num_negatives=3) as s:
            a = s.send(emb[:2])
            b = s.send(np.zeros((1, DIM + 1), np.float32))  # refused: dim
            c = s.send(emb[2:5], num_negatives=4)
            self.assertEqual(s.pending, 3)
            ra = s.recv()
            with self.assertRaises(hardneg.MineError) as e:
                s.recv()
            self.assertEqual(e.exception.code, 3)  # INVALID_ARGUMENT
            self.assertEqual(e.exception.request_id, b)
            rc = s.recv()
        self.assertEqual((ra.request_id, rc.request_id), (a, c))
        self.assertEqual(rc.ids.shape, (3, 4))
        once = self.client.mine(emb[2:5], num_negatives=4)
        np.testing.assert_array_equal(rc.ids, once.ids)
        batches = [emb[i:i + 2] for i in range(0, 10, 2)]
        piped = list(self.client.mine_iter(batches, max_in_flight=2,
                                           num_negatives=3))
        for batch, res in zip(batches, piped):
            np.testing.assert_array_equal(
                res.ids, self.client.mine(batch, num_negatives=3).ids)


# ---------------------------------------------------------------- publish


class PublishTest(Base):

    def test_full_publish_serves_and_reports_progress(self):
        before = self.client.info().version.sequence
        seen = []
        emb, ids, labels = corpus(seed=5)
        v = self.client.publish(emb, ids, labels, name="full-5",
                                step=self.client.info().step + 1,
                                chunk_rows=100, progress=seen.append)
        Base.version_seed = 5
        self.assertEqual(v.name, "full-5")
        self.assertGreater(v.sequence, before)
        info = self.client.info()
        self.assertEqual((info.version, info.size, info.has_labels),
                         (v, ROWS, True))
        uploads = [p.rows_sent for p in seen if p.stage == "upload"]
        self.assertEqual(uploads, sorted(uploads))
        self.assertEqual(uploads[-1], ROWS)
        stages = [p.stage for p in seen]
        self.assertEqual(stages[-1], "done")
        self.assertEqual(stages, sorted(stages, key=["upload", "build",
                                                     "done"].index))
        res = self.client.mine(emb[:1], num_negatives=1)
        self.assertEqual(res.ids[0, 0], ids[0])  # the new vectors serve
        self.assertEqual(res.index, v)

    def test_incremental_publish_upserts_and_deletes(self):
        base = self.publish_fresh(6, "inc-base")
        emb, ids, labels = corpus(seed=6)
        rng = np.random.default_rng(2)
        moved = rng.standard_normal((3, DIM)).astype(np.float32) * 10
        new_ids = np.array([ids[0], ids[1], 10**9], dtype=np.int64)  # 2 upd
        deleted = ids[100:150]
        v = self.client.publish(moved, new_ids, labels[:3], name="inc-1",
                                step=self.client.info().step + 1,
                                base_version=base.name, delete_ids=deleted,
                                progress=False)
        info = self.client.info()
        self.assertEqual(info.version, v)
        self.assertEqual(info.size, ROWS - 50 + 1)
        for i in range(3):  # each moved vector is its own best match
            res = self.client.mine(moved[i], num_negatives=1)
            self.assertEqual(res.ids[0, 0], new_ids[i])
        res = self.client.mine(emb[100:150], num_negatives=20)
        self.assertFalse(np.isin(res.ids, deleted).any())
        # Deleting only: no embeddings at all.
        v2 = self.client.publish(None, None, name="inc-2",
                                 step=self.client.info().step + 1,
                                 base_version=v.name,
                                 delete_ids=torch.tensor([10**9]),
                                 progress=False)
        self.assertEqual(self.client.info().size, ROWS - 50)
        self.assertEqual(self.client.info().version, v2)
        self.publish_fresh(7, "after-inc")

    def test_refused_publish_installs_nothing(self):
        before = self.client.info().version
        emb, ids, labels = corpus(seed=8)
        dup = ids.copy()
        dup[7] = dup[8]
        with self.assertRaises(hardneg.PublishError) as e:
            self.client.publish(emb, dup, labels, name="dup", step=99,
                                progress=False)
        self.assertEqual(e.exception.code, 3)
        self.assertIn("duplicate", e.exception.message.lower())
        with self.assertRaises(hardneg.HardnegError) as e:
            self.client.publish(emb[:5], ids[:5], name="inc-x", step=99,
                                base_version="no-such-version",
                                progress=False)
        self.assertIn("no-such-version", e.exception.message)
        with self.assertRaises(hardneg.PublishError):
            self.client.publish(emb[:, :8], ids, name="narrow", step=99,
                                progress=False)  # another dim
        self.assertEqual(self.client.info().version, before)
        with self.assertRaisesRegex(ValueError, "version name"):
            self.client.publish(emb, ids, name="bad name", step=1)
        with self.assertRaisesRegex(ValueError, "embeddings for"):
            self.client.publish(emb[:3], ids[:4], name="x", step=1)

    def test_failing_progress_callback_cancels_and_propagates(self):
        before = self.client.info().version
        rng = np.random.default_rng(3)
        emb = rng.standard_normal((20000, DIM)).astype(np.float32)
        calls = []

        def stop(p):
            calls.append(p)
            raise KeyError("stop here")

        with self.assertRaisesRegex(KeyError, "stop here"):
            self.client.publish(emb, np.arange(20000), name="stopped",
                                step=99, chunk_rows=10, progress=stop)
        self.assertEqual(len(calls), 1)
        self.assertEqual(self.client.info().version, before)

    def test_client_timeout_is_per_call_not_per_publish_or_stream(self):
        client = hardneg.Client(f"127.0.0.1:{Server.port}", timeout=1.0)
        self.addCleanup(client.close)
        emb, _, _ = self.served()
        with client.stream(num_negatives=2) as s:
            time.sleep(1.5)
            s.send(emb[:1])
            self.assertEqual(s.recv().ids.shape, (1, 2))

    def test_progress_lines_without_a_terminal(self):
        emb, ids, labels = corpus(seed=9)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.client.publish(emb, ids, labels, name="lines", step=
                                self.client.info().step + 1, progress=True)
        Base.version_seed = 9
        lines = err.getvalue().splitlines()
        self.assertIn("hardneg publish lines: upload 100%", lines)
        self.assertEqual(lines[-1], "hardneg publish lines: serving")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):  # "auto": silent off a tty
            self.publish_fresh(10, "quiet")
        self.assertEqual(err.getvalue(), "")

    def test_wait_false_then_wait_for_version(self):
        seq = self.client.info().version.sequence
        emb, ids, labels = corpus(seed=11)
        self.client.publish(emb, ids, labels, name="nowait", wait=False,
                            step=self.client.info().step + 1, progress=False)
        Base.version_seed = 11
        info = self.client.wait_for_version(seq + 1, "nowait", timeout=60)
        self.assertEqual(info.version.name, "nowait")


# ---------------------------------------------------------------- errors


class ErrorTest(Base):

    def test_unknown_option_is_named(self):
        q = np.zeros((1, DIM), np.float32)
        with self.assertRaisesRegex(TypeError, "num_negative'"):
            self.client.mine(q, num_negative=3)
        with self.assertRaisesRegex(TypeError, "rang_max"):
            self.client.stream(num_negatives=3, rang_max=4).send(q)
        with self.assertRaisesRegex(TypeError, "temprature"):
            hardneg.Client("127.0.0.1:1", temprature=0.1)
        with self.assertRaisesRegex(TypeError, "num_negatives is required"):
            self.client.mine(q)

    def test_dead_server_is_a_hardneg_error(self):
        dead = hardneg.Client("127.0.0.1:1", timeout=3)
        q = np.zeros((1, DIM), np.float32)
        for call in (dead.info, lambda: dead.mine(q, num_negatives=1),
                     lambda: dead.publish(q, [1], name="x", step=1,
                                          progress=False)):
            with self.assertRaises(hardneg.HardnegError) as e:
                call()
            self.assertEqual(e.exception.code, 14, str(e.exception))
        s = dead.stream(num_negatives=1)
        s.send(q)
        with self.assertRaises(hardneg.MineError) as e:
            s.recv()
        self.assertEqual(e.exception.code, 14)

    def test_refusals_carry_code_and_message(self):
        q = np.zeros((1, DIM + 1), np.float32)
        with self.assertRaises(hardneg.MineError) as e:
            self.client.mine(q, num_negatives=1)
        self.assertEqual(e.exception.code, 3)
        self.assertIn("queries[0]", e.exception.message)
        self.assertIn("INVALID_ARGUMENT", str(e.exception))
        with self.assertRaises(hardneg.MineError) as e:
            self.client.mine(np.zeros((1, DIM), np.float32), num_negatives=1,
                             min_index_sequence=10**6)
        self.assertEqual(e.exception.code, 9)  # FAILED_PRECONDITION
        with self.assertRaises(hardneg.MineError) as e:
            self.client.wait_for_version(10**6, timeout=0.3)
        self.assertEqual(e.exception.code, 4)  # DEADLINE_EXCEEDED


# ---------------------------------------------------------------- torch


class TorchTest(Base):

    def test_tensors_with_grad_and_half(self):
        emb, ids, labels = self.served()
        q = torch.from_numpy(emb[:5].copy()).requires_grad_()
        ref = self.client.mine(emb[:5], num_negatives=4, labels=labels[:5])
        for queries in (q, q * 1.0, q.detach().half()):
            res = self.client.mine(queries, num_negatives=4,
                                   labels=torch.from_numpy(labels[:5]))
            if queries.dtype == torch.float16:  # rounded: nearly the same
                self.assertGreater((res.ids == ref.ids).mean(), 0.7)
            else:
                np.testing.assert_array_equal(res.ids, ref.ids)
        self.assertIsNone(q.grad)
        res = self.client.mine(q, num_negatives=2,
                               positive_ids=torch.tensor([[ids[1]]] * 5),
                               query_ids=torch.from_numpy(ids[:5]))
        self.assertFalse(np.isin(res.ids, [ids[1]]).any())

    def test_negative_miner(self):
        emb, ids, labels = self.served()
        anchors = torch.from_numpy(emb[:6].copy()).double().requires_grad_()
        positives = torch.from_numpy(emb[20:26].copy())
        with hardneg.NegativeMiner(self.client, num_negatives=5,
                                   return_embeddings=True) as miner:
            negs = miner(anchors, labels=labels[:6], positives=positives,
                         relative_margin=0.0, query_ids=ids[:6])
            self.assertEqual(negs.ids.dtype, torch.int64)
            self.assertEqual(tuple(negs.ids.shape), (6, 5))
            self.assertEqual(negs.embeddings.dtype, torch.float64)
            self.assertEqual(negs.embeddings.device, anchors.device)
            self.assertFalse(negs.embeddings.requires_grad)
            by_id = {int(i): r for i, r in enumerate(ids)}
            row_of = {int(v): k for k, v in by_id.items()}
            for i in range(6):
                p = float(emb[20 + i] @ emb[i])
                self.assertAlmostEqual(float(negs.result.positive_score[i]),
                                       p, places=3)
                for j in range(5):
                    if not negs.mask[i, j]:
                        continue
                    row = row_of[int(negs.ids[i, j])]
                    self.assertNotEqual(labels[row], labels[i])
                    self.assertLessEqual(float(negs.scores[i, j]), p + 1e-4)
                    np.testing.assert_allclose(
                        negs.embeddings[i, j].numpy(), emb[row], rtol=1e-6)
            # A stream that fails as a whole is reopened and the unanswered
            # requests sent again.
            rid = miner.send(anchors[:2], labels=labels[:2])
            miner._stream._call.cancel()
            again = miner.recv()
            self.assertEqual(miner.reopened, 1)
            self.assertEqual(again.result.request_id, rid)
            self.assertTrue(again.mask.all())
            # Pipelined: send two, then recv both in order.
            miner.send(anchors[:2], labels=labels[:2])
            miner.send(anchors[2:4], labels=labels[2:4])
            a, b = miner.recv(), miner.recv()
            self.assertEqual(tuple(a.ids.shape), (2, 5))
            ref = self.client.mine(emb[2:4], labels=labels[2:4],
                                   num_negatives=5)
            np.testing.assert_array_equal(b.ids.numpy(), ref.ids)

    def test_negative_miner_waits_for_the_published_version(self):
        emb, ids, labels = corpus(seed=12)
        seq = self.client.info().version.sequence
        miner = hardneg.NegativeMiner(self.client, num_negatives=2,
                                      index_timeout=60)
        got = []
        # The miner asks first, for a version nobody published yet: it is
        # refused (FAILED_PRECONDITION) and asks again until it serves.
        waiter = threading.Thread(target=lambda: got.append(miner(
            torch.from_numpy(emb[:3]), min_index_sequence=seq + 1)))
        waiter.start()
        deadline = time.time() + 30
        while miner.retries < 1 and time.time() < deadline:
            time.sleep(0.01)
        self.assertGreaterEqual(miner.retries, 1)
        self.client.publish(emb, ids, labels, name="awaited",
                            step=self.client.info().step + 1, progress=False)
        Base.version_seed = 12
        waiter.join(timeout=60)
        self.assertEqual(len(got), 1)
        negs = got[0]
        self.assertGreaterEqual(negs.result.index.sequence, seq + 1)
        self.assertEqual(negs.result.index.name, "awaited")
        self.assertTrue(negs.mask.all())
        miner.close()
        with self.assertRaises(hardneg.MineError) as e:
            hardneg.NegativeMiner(self.client, num_negatives=1,
                                  index_timeout=0.5)(
                emb[:1], min_index_sequence=10**6)
        self.assertEqual(e.exception.code, 9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--work_dir")
    args, rest = parser.parse_known_args()
    ARGS.server = os.path.abspath(args.server)
    ARGS.work_dir = args.work_dir or tempfile.mkdtemp(prefix="hardneg_client_")
    shutil.rmtree(ARGS.work_dir, ignore_errors=True)
    os.makedirs(ARGS.work_dir)
    import_package()
    Server.start()
    try:
        prog = unittest.main(argv=[sys.argv[0], "-v"] + rest, exit=False,
                             module=sys.modules[__name__])
    finally:
        Server.stop()
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())

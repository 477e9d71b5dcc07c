#!/usr/bin/python3
"""How a torch.distributed training job mines its negatives from hardneg.

    torchrun --standalone --nproc_per_node 2 --redirects 1 --tee 1 \\
        examples/distributed_mining.py --target 127.0.0.1:50051 \\
        [--epochs 3] [--out summary.json]

(`--redirects 1 --tee 1`: Debian 12's torchrun (torch 1.13 on Python 3.11)
fails at start with "'NoneType' object has no attribute 'get'" when they
are left at their default 0, because Python 3.11 no longer lists a zero
IntFlag member; any non-zero value works around it. With them, each rank's
stdout is shown prefixed by its rank, and also kept in a log file.)

Every rank trains a DistributedDataParallel model (gloo, CPU) on its part
of each epoch's batches, and:

- keeps its own Mine stream (a hardneg.NegativeMiner) for its part of the
  batch; the anchors' own class is excluded (labels=...);
- before each epoch, rank 0 re-encodes the whole corpus with the current
  model and publishes it as a new version (client.publish, which returns
  once the version serves), then broadcasts that version's sequence;
- every rank mines that epoch with min_index_sequence set to it, so no
  rank ever trains on negatives from an older version: a replica that has
  not swapped yet answers FAILED_PRECONDITION, and NegativeMiner asks
  again until it has.

The data is synthetic (classes as Gaussian clusters in 32 dimensions), so
the example needs no download. hardneg-server must already run; an empty
--checkpoints directory is enough, since the first publish creates the
first version. With --out, rank 0 writes what every rank saw (versions,
sequences, losses) as JSON; python/tests/test_torchrun.py runs this with 2
ranks and checks it.

Needs python3-torch and the hardneg package (pip install ./python, see
python/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import hardneg


def synthetic_corpus(n: int, classes: int, dim: int, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` inputs in `classes` overlapping Gaussian clusters; the same on
    every rank (same seed)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 0.6
    labels = torch.arange(n) % classes
    x = centers[labels] + torch.randn(n, dim, generator=g)
    return x, labels


class Encoder(torch.nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim_in, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


def publish_epoch(client: hardneg.Client, model: torch.nn.Module,
                  x: torch.Tensor, labels: torch.Tensor, epoch: int) -> int:
    """Rank 0: encodes the corpus and publishes it; returns the sequence
    of the version, which serves when this returns."""
    with torch.no_grad():
        emb = model(x)
    version = client.publish(emb, torch.arange(len(x)), labels,
                             name=f"epoch-{epoch}", step=epoch,
                             metric="inner_product", progress=False)
    return version.sequence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True,
                        help="hardneg-server (or router) host:port")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64,
                        help="per rank")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--num_negatives", type=int, default=4)
    parser.add_argument("--out", help="rank 0 writes a JSON summary here")
    args = parser.parse_args()

    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, ...
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial model on every rank
    torch.set_num_threads(1)
    x, labels = synthetic_corpus(args.rows, classes=10, dim=32, seed=0)
    by_class = [torch.nonzero(labels == c).flatten() for c in range(10)]
    model = DistributedDataParallel(Encoder(32, 16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    client = hardneg.Client(args.target, timeout=60)
    # One Mine stream per rank; negatives are ranked 2..50 among the
    # survivors and sampled (the very hardest are often noise).
    miner = hardneg.NegativeMiner(client, num_negatives=args.num_negatives,
                                  range_min=2, range_max=50,
                                  sampling="uniform", index_timeout=120)
    rng = np.random.default_rng(1000 + rank)
    log: List[Dict[str, Any]] = []
    for epoch in range(args.epochs):
        # Rank 0 publishes this epoch's corpus; every rank learns which
        # sequence to insist on.
        box = [publish_epoch(client, model.module, x, labels, epoch)
               if rank == 0 else 0]
        dist.broadcast_object_list(box, src=0)
        sequence = int(box[0])
        order = torch.from_numpy(rng.permutation(args.rows))
        mine = order[rank::world]  # this rank's part of the epoch
        seen, losses, t0 = set(), [], time.time()
        for start in range(0, len(mine), args.batch_size):
            idx = mine[start:start + args.batch_size]
            n = len(idx)
            # The anchors' current embeddings query the index (no grad
            # needed: the client detaches and copies them anyway).
            with torch.no_grad():
                queries = model.module(x[idx])
            negs = miner(queries, labels=labels[idx], query_ids=idx,
                         min_index_sequence=sequence,
                         seed=epoch * 100003 + start)
            seen.add((negs.result.index.name, negs.result.index.sequence))
            # A positive of the same class for each anchor, and the
            # negatives by id (here ids are rows): all encoded with grad, in
            # one forward pass (as DDP wants).
            pos_idx = torch.stack([by_class[int(c)][rng.integers(
                len(by_class[int(c)]))] for c in labels[idx]])
            neg_idx = negs.ids.clamp(min=0).flatten()
            out = model(torch.cat([x[idx], x[pos_idx], x[neg_idx]]))
            anchors, positives = out[:n], out[n:2 * n]
            negatives = out[2 * n:].view(n, args.num_negatives, -1)
            sp = (anchors * positives).sum(-1, keepdim=True)
            sn = torch.einsum("bd,bkd->bk", anchors, negatives)
            hinge = F.relu(sn - sp + 0.2) * negs.mask
            loss = hinge.sum() / negs.mask.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        log.append({"epoch": epoch, "rank": rank, "sequence": sequence,
                    "versions": sorted(seen), "batches": len(losses),
                    "loss": float(np.mean(losses)),
                    "seconds": time.time() - t0})
        print(f"rank {rank} epoch {epoch}: mined from {sorted(seen)}, "
              f"loss {np.mean(losses):.4f}", flush=True)
    miner.close()
    everyone: List[Any] = [None] * world
    dist.all_gather_object(everyone, log)
    if rank == 0 and args.out:
        with open(args.out, "w") as f:
            json.dump({"world_size": world, "epochs": args.epochs,
                       "log": [e for part in everyone for e in part]}, f,
                      indent=1)
    client.close()
    # Every rank reaches this point before any tears its gloo connections
    # down: a rank that closed them while its peer was still in a
    # collective aborted that peer.
    dist.barrier()
    dist.destroy_process_group()
    # Everything is written and closed. Leave before Python frees this
    # function's locals (the DDP model, the client) and finalizes: with
    # Debian's torch (gloo) and grpcio, those native destructors can hang
    # once the peer rank is gone (seen in CI: a rank stopped on main()'s
    # return line for minutes, torchrun waiting for it).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

#!/usr/bin/python3
"""How many entries a 4-bit first pass would send to float32 rescoring on W2.

IvfProbe's batches scan each cell's int8 copy and rescore in float32 every
entry whose key plus its proven error bound reaches the query's k-th best
score so far. On W2 with the own class excluded the tiles are held back by
memory (README, "IVF that survives exclusion"): rows of half the bytes
would help only if the wider bound of 4-bit values still rules out nearly
every entry. This script estimates that, on data of W2's law (drawn as
bench/ivf_cluster_floor.py draws it: numpy's generator, whole clusters as
cells). For each query it takes the clusters its 40,000 candidates would
cover (ranked by their means, its own excluded), rescores its best cluster
whole (the seed), then walks the rest in a random order (a batch walks the
cells in index order) and counts the entries whose key + slack reaches the
10th best rescored score. The slack is the bound's main terms, |q| |e| +
|f| |x'| (e: the row's rounding, x' the row as packed, f: the query's int8
rounding); the real bound adds the float arithmetic's few ulps, and the
real scan rescores offers eight at a time, so hardneg's own count is higher
(65 a query at int8 on the bench's W2, where this model gives about 36).

Precisions: int8 with a scale per row (as IvfProbe packs now, less the
store's mean, which is about 0 here); int4 (-7 .. 7, a scale per row) of
the row; int4 of the row less its cluster's mean (the key then adds q.c,
one float32 product per cell and query).

  /usr/bin/python3 bench/int4_screen_sim.py [--queries 100]

About 2 minutes and 3 GB. Needs python3-numpy.
"""
import numpy as np

from ivf_cluster_floor import CLUSTERS, K, PER_CLUSTER, query_args, w2_like

BUDGET = 40000


def packed(x, levels):
    """x rounded to `levels` steps of a scale per row (its largest
    magnitude / levels): the rounding's norm |e| and the packed norm."""
    scale = np.abs(x).max(axis=-1, keepdims=True) / levels
    xp = np.clip(np.round(x / scale), -levels, levels) * scale
    return (xp, np.linalg.norm(x - xp, axis=-1),
            np.linalg.norm(xp, axis=-1))


def main():
    args = query_args(__doc__, 100)
    rng = np.random.default_rng(args.seed)
    rows, queries, qlabel = w2_like(rng, args.queries)
    # cluster x row x dim (row r is in cluster r % CLUSTERS)
    rows = rows.reshape(PER_CLUSTER, CLUSTERS, -1).transpose(1, 0, 2).copy()
    means = rows.mean(axis=1)
    kinds = {
        "int8": (packed(rows, 127), False),
        "int4": (packed(rows, 7), False),
        "int4 less the cluster's mean": (packed(rows - means[:, None], 7),
                                         True),
    }
    offered = dict.fromkeys(kinds, 0)
    clusters = -(-BUDGET // PER_CLUSTER)
    for i, q in enumerate(queries):
        qp, _, _ = packed(q[None], 127)
        f = float(np.linalg.norm(q - qp[0]))
        by_mean = means @ q
        by_mean[qlabel[i]] = -np.inf
        order = np.argsort(-by_mean)[:clusters]
        exact = rows[order] @ q
        walk = rng.permutation(np.arange(1, clusters))
        for name, ((xp, e, norm), centred) in kinds.items():
            keys = xp[order] @ qp[0]
            if centred:
                keys += (means[order] @ q)[:, None]
            bound = keys + np.linalg.norm(q) * e[order] + f * norm[order]
            best = np.sort(exact[0])[-K:]
            for c in walk:
                passed = exact[c][bound[c] >= best[0]]
                offered[name] += len(passed)
                best = np.sort(np.concatenate([best, passed]))[-K:]
    print(f"{args.queries} queries, {clusters * PER_CLUSTER:,} candidates "
          f"each ({clusters} clusters of {PER_CLUSTER}), own cluster "
          f"excluded; entries offered for float32 rescoring a query:")
    for name, count in offered.items():
        print(f"  {name:<30} {count / args.queries:8.1f}")


if __name__ == "__main__":
    main()

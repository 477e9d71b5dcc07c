#!/usr/bin/python3
"""How many candidates IVF must scan on W2 when queries exclude their class.

W2 (hardneg-bench) is 1,000,000 x 128 unit vectors in 3,000 clusters: row
r is normalise(c + u), c its cluster's centre and u a random unit vector
(kClusterSpread 1). A query excluding its own cluster wants the 10 best
rows of the other clusters. This script draws data of the same law (with
numpy's generator, not the bench's, so the rows differ), ranks whole
clusters for each query by the mean of their rows (what a probe gets
that reads whole classes in the order of their centroids' scores), and
prints recall@10 against the exact answer at each candidate budget
(the clusters ranked first, until their rows reach the budget). It also
prints a stopping rule that adapts to the query: scan on past a floor
until the next cluster's mean score plus a margin falls below the
10th best score found.

hardneg's IvfProbe (index/ivf_probe.h) needs just over 36,000 candidates
for 0.95 on the bench's W2; this prints about 32,000 for whole clusters.

  /usr/bin/python3 bench/ivf_cluster_floor.py [--queries 400]

About 30 s and 2 GB. Needs python3-numpy.
"""
import argparse

import numpy as np

DIM = 128
CLUSTERS = 3000
PER_CLUSTER = 333  # 999,000 rows: whole clusters, as on W2 (1,000,000)
K = 10
# The adaptive rule scans at least this many candidates before it may stop.
ADAPTIVE_FLOOR = 3000


def unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def query_args(doc, queries):
    """The scripts' command line: --queries (default `queries`), --seed."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--queries", type=int, default=queries)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def w2_like(rng, nq):
    """Rows of W2's law (row r in cluster r % CLUSTERS), and nq queries
    with their clusters: (rows, queries, query clusters)."""
    n = CLUSTERS * PER_CLUSTER
    centres = unit(rng.uniform(-1, 1, (CLUSTERS, DIM)).astype(np.float32))
    label = np.arange(n) % CLUSTERS
    rows = unit(centres[label] +
                unit(rng.uniform(-1, 1, (n, DIM)).astype(np.float32)))
    qlabel = np.arange(nq) * 7 % CLUSTERS
    queries = unit(centres[qlabel] + unit(
        rng.uniform(-1, 1, (nq, DIM)).astype(np.float32)))
    return rows, queries, qlabel


def main():
    args = query_args(__doc__, 400)
    rng = np.random.default_rng(args.seed)
    n = CLUSTERS * PER_CLUSTER
    rows, queries, qlabel = w2_like(rng, args.queries)
    # Row r is in cluster r % CLUSTERS: reshaped, column c is cluster c.
    means = rows.reshape(PER_CLUSTER, CLUSTERS, DIM).mean(axis=0)

    ranked = []  # per query: clusters by mean score, their best K scores
    hits = []  # per query: the cluster of each exact negative
    for i in range(args.queries):
        scores = (rows @ queries[i]).reshape(PER_CLUSTER, CLUSTERS)
        scores[:, qlabel[i]] = -np.inf
        best = -np.partition(-scores, K, axis=0)[:K]  # K x CLUSTERS
        kth = np.sort(best.ravel())[-K]
        hits.append([c for c in range(CLUSTERS) for v in best[:, c]
                     if v >= kth][:K])  # (exact ties: any K of them)
        mean_scores = means @ queries[i]
        mean_scores[qlabel[i]] = -np.inf
        order = np.argsort(-mean_scores)
        ranked.append((order, mean_scores, np.sort(best, axis=0)[::-1].T))

    def recall(scanned):
        """Mean recall@K when query j scans the clusters in scanned[j]."""
        return float(np.mean([np.mean([c in s for c in h])
                              for s, h in zip(scanned, hits)]))

    print(f"{args.queries} queries, {n:,} rows in {CLUSTERS:,} clusters, "
          f"own cluster excluded, recall@{K}")
    print("fixed budget: whole clusters by their means")
    for budget in (16000, 24000, 28000, 32000, 36000, 40000, 48000):
        m = -(-budget // PER_CLUSTER)
        sets = [set(order[:m].tolist()) for order, _, _ in ranked]
        print(f"  {m * PER_CLUSTER:>7,} candidates  "
              f"recall {recall(sets):.4f}")

    print(f"adaptive: past {ADAPTIVE_FLOOR:,} candidates, stop when the next "
          f"mean + margin < the {K}th best so far")
    for margin in (0.240, 0.244, 0.247, 0.250, 0.253):
        sets, counts = [], []
        for order, mean_scores, best in ranked:
            top = np.full(K, -np.inf)
            m = 0
            for c in order:
                past_floor = m * PER_CLUSTER >= ADAPTIVE_FLOOR
                if past_floor and mean_scores[c] + margin < top[-1]:
                    break
                m += 1
                top = np.sort(np.concatenate([top, best[c]]))[::-1][:K]
            sets.append(set(order[:m].tolist()))
            counts.append(m * PER_CLUSTER)
        print(f"  margin {margin:.3f}: {np.mean(counts):>9,.0f} candidates "
              f"on average  recall {recall(sets):.4f}")


if __name__ == "__main__":
    main()

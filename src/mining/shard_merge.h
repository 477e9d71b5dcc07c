// The exact merge of a request mined over shards: a corpus split by
// ShardOf (corpus/shard.h) into N versions, each mined by its own Miner,
// and the shards' answers combined into exactly the answer one Miner gives
// over the whole corpus (same ids, ranks, labels, scores, shortfall,
// samples and positive_score). No transport here: a router calls these
// around its fan-out.
//
// Per request, a router:
//   1. when NeedsGlobalWeakestPositive(options, query), asks every shard
//      for WeakestStoredPositive (mining/miner.h) of the query, and takes
//      the weakest with WeakestScore: the global p of the stored positives;
//   2. sends each shard the query with WithGlobalPositive's positive_scores
//      (the global p added) and ShardOptions(options);
//   3. merges the shards' answers of each query with MergeShardResults.
//
// Why this is exact (for exact indexes; an approximate shard index is as
// approximate as it is on one server):
//   - Scores: every candidate is scored by ExactScore of the query against
//     its stored row (double accumulation, rounded to float), and a shard
//     holds the same row bytes the whole corpus does, so each candidate's
//     score is bit-identical on its shard and on one server.
//   - Survivors: the exclusions (positive_ids, query_id, label) and the
//     bounds (max_score, min_score) depend only on the candidate and the
//     request; the margins depend also on p. The whole corpus's p is the
//     weakest of all stored positives and the client's positive_scores.
//     Step 1 computes the weakest stored positive over all shards (with the
//     miner's own scoring, so the same float), and step 2 adds it to
//     positive_scores: every shard's p is then the weakest of its own
//     stored positives (no weaker than the global one), the client's
//     scores, and the global stored p, i.e. exactly the whole corpus's p.
//     (Without margins p filters nothing, so step 1 is skipped and only the
//     reported positive_score needs merging: the weakest of the shards'.)
//     So the whole corpus's survivors are the disjoint union of the
//     shards' survivors.
//   - Window: survivors are ordered by (score, then id ascending), a total
//     order since ids are unique. A survivor among the global first R =
//     RangeMax(options) has fewer than R survivors before it globally, so
//     fewer than R before it on its own shard: it is among that shard's
//     first R, which ShardOptions asks for (TOP, window [0, R), deepening
//     until R survive or the shard is exhausted). The union of the shards'
//     first R thus holds the global first R, in the same order.
//   - Sampling: the window [range_min, R) of that order and the request
//     seed give the same Sample as the miner (mining/sampling.h, one
//     implementation), seeded by QuerySeed(seed, index of the query in its
//     request).
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SRC_MINING_SHARD_MERGE_H_
#define HARDNEG_SRC_MINING_SHARD_MERGE_H_

#include <cstddef>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "corpus/metric.h"
#include "mining/miner.h"
#include "mining/options.h"

namespace hardneg {

// What each shard is asked for a request with `options`: SAMPLING_TOP of
// the window [0, R), R = RangeMax(options), num_negatives = R; every other
// option (bounds, margins, seed, nprobe, ...) as given. A shard's Miner
// must therefore allow num_negatives up to the router's max_range.
MiningOptions ShardOptions(const MiningOptions& options);

// True when p must be the weakest stored positive over all shards before
// any shard filters: a margin is set and the query names positive_ids.
bool NeedsGlobalWeakestPositive(const MiningOptions& options,
                                const MiningQuery& query);

// The weakest (Closer's last: the lowest inner product, the largest L2
// distance) of the present `scores`, or nullopt when none is: the global
// stored p from the shards' WeakestStoredPositive.
std::optional<float> WeakestScore(
    Metric metric, absl::Span<const std::optional<float>> scores);

// The positive_scores to send every shard: the query's own, plus
// `global_stored_p` when present.
std::vector<float> WithGlobalPositive(const MiningQuery& query,
                                      std::optional<float> global_stored_p);

// The answer to one query (the `index_in_request`-th of its request, which
// picks its sampling seed) from the shards' answers to it under
// ShardOptions(options), each from a disjoint shard: the union of their
// negatives ordered best first by (score, then id ascending), the first R
// kept, the window [range_min, R) cut, num_negatives sampled from it as the
// miner does; ranks are positions in that global order, shortfall is what
// the window lacks, positive_score the weakest of the shards'. A
// negative's `row` is its row in the store of the shard that returned it
// (meaningless without knowing which shard: look a candidate up by id).
MiningResult MergeShardResults(Metric metric, const MiningOptions& options,
                               size_t index_in_request,
                               absl::Span<const MiningResult> shard_results);

}  // namespace hardneg

#endif  // HARDNEG_SRC_MINING_SHARD_MERGE_H_

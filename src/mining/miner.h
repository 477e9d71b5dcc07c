// Miner: answers queries with their hard negatives over one IndexVersion,
// following the mining semantics (README, "Mining semantics"):
//
//   1. score every candidate (inner product, or squared L2);
//   2. exclude positive_ids, query_id, and the query's label;
//   3. positive-aware filters: p is the weakest positive (stored positives
//      scored against the query, plus positive_scores); margins against p,
//      and max_score/min_score bounds;
//   4. order survivors best first (ties: id ascending), keep ranks
//      [range_min, range_max);
//   5. sample num_negatives from that window: TOP, UNIFORM or SOFTMAX,
//      seeded; returned best first;
//   6. search deeper until enough survive or the index is exhausted, and
//      report what is still missing as shortfall.
//
// Scores are recomputed exactly (double accumulation, rounded to float) for
// every candidate the index returns, so identical vectors tie exactly and
// the window is exact for exact indexes.
//
// Stateless after construction: Mine may be called from any thread.
#ifndef HARDNEG_SRC_MINING_MINER_H_
#define HARDNEG_SRC_MINING_MINER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "mining/options.h"
#include "versions/index_version.h"

namespace hardneg {

// One query; the spans are views that must outlive the Mine call.
struct MiningQuery {
  absl::Span<const float> embedding;
  absl::Span<const int64_t> positive_ids;
  absl::Span<const float> positive_scores;
  std::optional<int64_t> label;
  std::optional<int64_t> query_id;
};

struct MinedNegative {
  int64_t id = 0;
  float score = 0;
  int64_t label = 0;
  uint32_t rank = 0;  // position among all survivors
  uint32_t row = 0;   // row in the version's CandidateStore
};

struct MiningResult {
  std::vector<MinedNegative> negatives;  // best first
  uint32_t shortfall = 0;
  std::optional<float> positive_score;  // p, when there is a positive
};

// One request of a batch: its queries and their options (views that must
// outlive the MineBatch call).
struct MiningBatchItem {
  absl::Span<const MiningQuery> queries;
  const MiningOptions* options = nullptr;
  // When set and true (the caller no longer waits for the answer: the call
  // was cancelled or timed out), the item's queries stop deepening at the
  // next round and the item is answered CANCELLED. Asked between rounds,
  // from the mining thread.
  const std::function<bool()>* cancelled = nullptr;
};

// One query of a batch, with what it shares with its request.
struct BatchQuery {
  const MiningQuery* query = nullptr;
  const MiningOptions* options = nullptr;
  size_t index_in_request = 0;  // picks the query's sampling seed
  const std::function<bool()>* cancelled = nullptr;  // as MiningBatchItem's
};

// The score of the weakest of `query`'s positive_ids stored in `version`
// (the lowest inner product, or the largest L2 distance), scored exactly as
// Mine scores them, or nullopt when none is stored; positive_scores are
// ignored. What one shard contributes to a sharded request's p
// (mining/shard_merge.h). `query.embedding` must have the version's
// dimension.
std::optional<float> WeakestStoredPositive(const IndexVersion& version,
                                           const MiningQuery& query);

class Miner {
 public:
  explicit Miner(MinerLimits limits = {}) : limits_(limits) {}

  // Mines every query against `version`. INVALID_ARGUMENT, naming the field
  // (and the query index, e.g. "queries[3].embedding"), for: no queries; an
  // embedding of the wrong dimension or with NaN/Inf; a non-finite
  // positive_score; num_negatives 0 or over the limit; range_max set and
  // smaller than range_min + num_negatives, or over the limit; a negative or
  // non-finite temperature; a non-finite bound or margin; nprobe over the
  // limit; more queries, negatives x queries, range_max x queries, or
  // positives of a query than MinerLimits allows (naming the limit).
  // INTERNAL if the index fails. Same queries, options, seed and version:
  // same results.
  absl::StatusOr<std::vector<MiningResult>> Mine(
      const IndexVersion& version, absl::Span<const MiningQuery> queries,
      const MiningOptions& options) const;

  // Mines several requests, each with its own options, as one batch: the
  // queries of every valid request share each search call. Returns one
  // outcome per item, in order: an invalid item gets its own
  // INVALID_ARGUMENT (as Mine would) without affecting the others. Each
  // item's answer equals what Mine gives for it alone.
  std::vector<absl::StatusOr<std::vector<MiningResult>>> MineBatch(
      const IndexVersion& version,
      absl::Span<const MiningBatchItem> items) const;

  // The option checks of Mine alone (no queries needed):
  // ValidateMiningOptions with this miner's limits.
  absl::Status ValidateOptions(const MiningOptions& options) const {
    return ValidateMiningOptions(options, limits_);
  }

  // The checks of a request's size against the limits: `queries` queries
  // with `options` (which ValidateOptions accepted), over `candidates`
  // candidates (no query ranks more than there are).
  absl::Status ValidateRequestSize(size_t queries, const MiningOptions& options,
                                   size_t candidates) const;

  // Every check of Mine, for an index of `dim` and `candidates` without
  // the index itself: what a router checks before it fans a request out.
  absl::Status ValidateRequest(absl::Span<const MiningQuery> queries,
                               const MiningOptions& options, size_t dim,
                               size_t candidates) const;

  // range_max after defaulting (0 means range_min + num_negatives).
  static uint64_t RangeMax(const MiningOptions& options) {
    return hardneg::RangeMax(options);
  }

  const MinerLimits& limits() const { return limits_; }

 private:
  // Mine's checks of one request.
  absl::Status Validate(const IndexVersion& version,
                        absl::Span<const MiningQuery> queries,
                        const MiningOptions& options) const;
  // Mines validated queries, each with its options. INTERNAL if the index
  // fails.
  absl::Status MineQueries(const IndexVersion& version,
                           absl::Span<const BatchQuery> queries,
                           std::vector<MiningResult>& results) const;

  MinerLimits limits_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_MINING_MINER_H_

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
#include "versions/index_version.h"

namespace hardneg {

enum class Sampling { kTop, kUniform, kSoftmax };

struct MiningOptions {
  uint32_t num_negatives = 0;
  uint32_t range_min = 0;
  uint32_t range_max = 0;  // 0 means range_min + num_negatives
  std::optional<float> max_score;
  std::optional<float> min_score;
  std::optional<float> absolute_margin;
  std::optional<float> relative_margin;
  Sampling sampling = Sampling::kTop;
  float temperature = 0;  // 0 means 1.0
  uint64_t seed = 0;
  // Inverted lists an IVF index probes for this request; 0 keeps the
  // index's own setting. Ignored by exact indexes.
  uint32_t nprobe = 0;
};

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

// Bounds on one request's work and memory, checked before any search.
// The defaults keep a request's own memory to a few hundred MB.
struct MinerLimits {
  uint32_t max_negatives = 10000;  // per query
  uint32_t max_range = 1000000;    // range_max after defaulting
  uint32_t max_nprobe = 4096;      // options.nprobe
  uint32_t max_queries = 16384;    // queries in one request
  // num_negatives x queries: the negatives one answer may hold.
  uint64_t max_request_negatives = uint64_t{1} << 20;
  // range_max x queries: the candidates one request may rank (about 8
  // bytes each, kept until the answer).
  uint64_t max_request_fetch = uint64_t{1} << 24;
  // positive_ids (and positive_scores) of one query.
  uint32_t max_positives = 65536;
};

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

  // The option checks of Mine alone (no queries needed).
  absl::Status ValidateOptions(const MiningOptions& options) const;

  // The checks of a request's size against the limits: `queries` queries
  // with `options` (which ValidateOptions accepted), over `candidates`
  // candidates (no query ranks more than there are).
  absl::Status ValidateRequestSize(size_t queries, const MiningOptions& options,
                                   size_t candidates) const;

  // range_max after defaulting (0 means range_min + num_negatives).
  static uint64_t RangeMax(const MiningOptions& options);

  const MinerLimits& limits() const { return limits_; }

 private:
  // Mine's checks of one request.
  absl::Status Validate(const IndexVersion& version,
                        absl::Span<const MiningQuery> queries,
                        const MiningOptions& options) const;
  // Mines validated queries; `query_index` is each query's index within its
  // request (it picks the sampling seed). INTERNAL if the index fails.
  absl::Status MineQueries(
      const IndexVersion& version, const std::vector<const MiningQuery*>& qs,
      const std::vector<const MiningOptions*>& options,
      const std::vector<size_t>& query_index,
      const std::vector<const std::function<bool()>*>& cancelled,
      std::vector<MiningResult>& results) const;

  MinerLimits limits_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_MINING_MINER_H_

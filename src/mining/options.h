// MiningOptions: what one mining request asks for (its window, filters,
// sampling), the limits a request is held to, and the checks of both. The
// domain's single owner of these rules: the miner, the server and the CLI
// call ValidateMiningOptions rather than checking options themselves.
//
// Plain values and stateless functions; safe to use from any thread.
#ifndef HARDNEG_SRC_MINING_OPTIONS_H_
#define HARDNEG_SRC_MINING_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace hardneg {

// How the negatives are drawn from the rank window.
enum class Sampling {
  kTop,      // the best ones in the window
  kUniform,  // uniform without replacement, seeded
  kSoftmax,  // without replacement, weight exp(s / T) (exp(-s / T) for L2)
};

// The names of the sampling modes, as the CLI and the docs spell them:
// "top", "uniform", "softmax".
absl::string_view SamplingName(Sampling sampling);
// The mode named `name` (one of SamplingName's), or nullopt.
std::optional<Sampling> ParseSampling(absl::string_view name);
// "top, uniform or softmax", for messages that list the choices.
inline constexpr absl::string_view kSamplingChoices = "top, uniform or softmax";

// One request's mining options: the fields of the proto's MiningOptions
// (hardneg/v1/miner.proto documents each), converted in one place
// (proto/mining_options_convert.h) and shared by the C++ client
// (client/client.h), as an aggregate whose field order is the client's
// (keep it: callers may brace-initialise it). A value of 0 is a real bound
// except where said.
struct MiningOptions {
  // Per query; 0 is refused. 10 is a caller's default (the C++ client's):
  // the wire has no default, and a request that leaves it at 0 is refused.
  uint32_t num_negatives = 10;
  uint32_t range_min = 0;  // rank window [range_min, range_max)
  uint32_t range_max = 0;  // 0 means range_min + num_negatives
  std::optional<float> max_score;
  std::optional<float> min_score;
  std::optional<float> absolute_margin;
  std::optional<float> relative_margin;
  Sampling sampling = Sampling::kTop;
  float temperature = 0;  // for kSoftmax; 0 means 1.0
  uint64_t seed = 0;
  // Send each negative's stored embedding with the answer (the server's
  // encoding; the miner itself ignores it).
  bool return_embeddings = false;
  // Refuse (FAILED_PRECONDITION) when the served version's sequence is
  // lower: a trainer's guard against mining an index older than its
  // last publish.
  uint64_t min_index_sequence = 0;
  // Inverted lists an IVF index probes for this request; 0 keeps the
  // index's own setting. Ignored by exact indexes.
  uint32_t nprobe = 0;
  // Through a router: answer from the live shards when some are slow or
  // gone, naming the missing ones, instead of failing. Ignored by a server.
  bool allow_partial = false;
  // Answer from the version of this name only (a router pins each request
  // to the one version all its shards serve); empty: the served version.
  // Also the server's to apply; the miner ignores it.
  std::string index_version;
  // IVF-Flat over a labelled store (index/ivf_probe.h): candidates that
  // survive the query's label a search scans before it stops probing
  // lists; 0 keeps the server's --ivf_min_candidates. Ignored by other
  // indexes.
  uint32_t ivf_min_candidates = 0;
};

// Bounds on one request's work and memory, checked before any search.
// The defaults keep a request's own memory to a few hundred MB.
struct MinerLimits {
  uint32_t max_negatives = 10000;  // per query
  uint32_t max_range = 1000000;    // range_max after defaulting
  uint32_t max_nprobe = 4096;      // options.nprobe
  // options.ivf_min_candidates: each is a candidate scanned per query.
  uint32_t max_ivf_min_candidates = 1u << 20;
  uint32_t max_queries = 16384;  // queries in one request
  // num_negatives x queries: the negatives one answer may hold.
  uint64_t max_request_negatives = uint64_t{1} << 20;
  // range_max x queries: the candidates one request may rank (about 8
  // bytes each, kept until the answer).
  uint64_t max_request_fetch = uint64_t{1} << 24;
  // positive_ids (and positive_scores) of one query.
  uint32_t max_positives = 65536;
  // Count a query's negatives as at most the index's candidates in the
  // checks of a request's size (its answer cannot hold more). Set on
  // shards (ForShard), which are asked for range_max negatives a query;
  // a server answering trainers refuses a request that asks for more than
  // the limits allow, however small its index.
  bool negatives_bounded_by_candidates = false;

  // No limit at all: for checking options where the server's limits are
  // not known (the CLI), leaving those to the server.
  static MinerLimits None();

  // These limits on a shard server: its router asks it for the first
  // range_max of a request's window as negatives (mining/shard_merge.h),
  // and adds one positive score (the global weakest positive), so the
  // negatives limits are raised to the range limits and max_positives by
  // one. The router holds requests to the limits themselves.
  MinerLimits ForShard() const;
};

// OK, or INVALID_ARGUMENT naming the field ("options.num_negatives") for:
// num_negatives 0 or over limits.max_negatives; range_max set and smaller
// than range_min + num_negatives, or (after defaulting) over
// limits.max_range; a negative or non-finite temperature; nprobe over
// limits.max_nprobe; ivf_min_candidates over limits.max_ivf_min_candidates;
// a non-finite bound or margin.
absl::Status ValidateMiningOptions(const MiningOptions& options,
                                   const MinerLimits& limits);

// range_max after defaulting (0 means range_min + num_negatives).
uint64_t RangeMax(const MiningOptions& options);

}  // namespace hardneg

#endif  // HARDNEG_SRC_MINING_OPTIONS_H_

#include "mining/shard_merge.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "mining/sampling.h"

namespace hardneg {

MiningOptions ShardOptions(const MiningOptions& options) {
  MiningOptions shard = options;
  const auto range_max = static_cast<uint32_t>(RangeMax(options));
  shard.range_min = 0;
  shard.range_max = range_max;
  shard.num_negatives = range_max;
  shard.sampling = Sampling::kTop;
  return shard;
}

bool NeedsGlobalWeakestPositive(const MiningOptions& options,
                                const MiningQuery& query) {
  return (options.absolute_margin.has_value() ||
          options.relative_margin.has_value()) &&
         !query.positive_ids.empty();
}

std::optional<float> WeakestScore(
    Metric metric, absl::Span<const std::optional<float>> scores) {
  std::optional<float> weakest;
  for (const std::optional<float>& s : scores) {
    if (!s.has_value()) continue;
    if (!weakest.has_value() || Closer(metric, *weakest, *s)) weakest = *s;
  }
  return weakest;
}

std::vector<float> WithGlobalPositive(const MiningQuery& query,
                                      std::optional<float> global_stored_p) {
  std::vector<float> scores(query.positive_scores.begin(),
                            query.positive_scores.end());
  if (global_stored_p.has_value()) scores.push_back(*global_stored_p);
  return scores;
}

MiningResult MergeShardResults(Metric metric, const MiningOptions& options,
                               size_t index_in_request,
                               absl::Span<const MiningResult> shard_results) {
  MiningResult result;
  std::vector<std::optional<float>> positive_scores;
  std::vector<MinedNegative> all;
  for (const MiningResult& shard : shard_results) {
    positive_scores.push_back(shard.positive_score);
    all.insert(all.end(), shard.negatives.begin(), shard.negatives.end());
  }
  result.positive_score = WeakestScore(metric, positive_scores);
  const size_t end = std::min<size_t>(RangeMax(options), all.size());
  std::partial_sort(all.begin(), all.begin() + end, all.end(),
                    [&](const MinedNegative& a, const MinedNegative& b) {
                      if (a.score != b.score) {
                        return Closer(metric, a.score, b.score);
                      }
                      return a.id < b.id;
                    });
  const size_t begin = std::min<size_t>(options.range_min, end);
  std::vector<float> window_scores;
  window_scores.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) window_scores.push_back(all[i].score);
  const size_t picks =
      std::min<size_t>(options.num_negatives, window_scores.size());
  result.shortfall = static_cast<uint32_t>(options.num_negatives - picks);
  for (size_t w : Sample(options, metric, window_scores, picks,
                         QuerySeed(options.seed, index_in_request))) {
    MinedNegative negative = all[begin + w];
    negative.rank = static_cast<uint32_t>(begin + w);
    result.negatives.push_back(negative);
  }
  return result;
}

}  // namespace hardneg

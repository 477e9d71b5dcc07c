#include "mining/sampling.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace hardneg {

uint64_t QuerySeed(uint64_t seed, size_t query_index) {
  Rng mix(seed ^ (0x632be59bd9b4e019ULL * (query_index + 1)));
  return mix.Next();
}

std::vector<size_t> Sample(const MiningOptions& options, Metric metric,
                           absl::Span<const float> window_scores, size_t picks,
                           uint64_t seed) {
  const size_t window = window_scores.size();
  std::vector<size_t> chosen;
  chosen.reserve(picks);
  if (picks >= window || options.sampling == Sampling::kTop) {
    for (size_t i = 0; i < picks; ++i) chosen.push_back(i);
    return chosen;
  }
  Rng rng(seed);
  if (options.sampling == Sampling::kUniform) {
    // Partial Fisher-Yates.
    std::vector<size_t> order(window);
    for (size_t i = 0; i < window; ++i) order[i] = i;
    for (size_t i = 0; i < picks; ++i) {
      std::swap(order[i], order[i + rng.Below(window - i)]);
    }
    chosen.assign(order.begin(), order.begin() + picks);
  } else {
    // Gumbel top-k: the top `picks` of log(w) + Gumbel noise are a sample
    // without replacement with probabilities proportional to w.
    const double t = options.temperature == 0 ? 1.0 : options.temperature;
    const double sign = metric == Metric::kInnerProduct ? 1.0 : -1.0;
    std::vector<std::pair<double, size_t>> keys(window);
    for (size_t i = 0; i < window; ++i) {
      const double gumbel = -std::log(-std::log(rng.Open01()));
      keys[i] = {sign * window_scores[i] / t + gumbel, i};
    }
    std::partial_sort(keys.begin(), keys.begin() + picks, keys.end(),
                      [](const auto& a, const auto& b) {
                        return a.first > b.first ||
                               (a.first == b.first && a.second < b.second);
                      });
    for (size_t i = 0; i < picks; ++i) chosen.push_back(keys[i].second);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace hardneg

// Step 5 of the mining semantics (README, "Mining semantics"), shared by
// the miner and by anything that must reproduce its samples exactly (the
// shard merge): the seeded generator, each query's seed, and the draw of
// num_negatives from a rank window.
//
// Rng is a plain value (one per thread); the functions are stateless and
// safe to call from any thread.
#ifndef HARDNEG_SRC_MINING_SAMPLING_H_
#define HARDNEG_SRC_MINING_SAMPLING_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/types/span.h"
#include "corpus/metric.h"
#include "mining/options.h"

namespace hardneg {

// SplitMix64: a small, fully specified generator, so answers are the same
// on every platform and standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1), never 0 or 1.
  double Open01() {
    return (static_cast<double>(Next() >> 11) + 0.5) *
           (1.0 / 9007199254740992.0);
  }
  // Uniform in [0, n).
  uint64_t Below(uint64_t n) {
    // Rejection sampling removes modulo bias.
    const uint64_t limit = std::numeric_limits<uint64_t>::max() -
                           std::numeric_limits<uint64_t>::max() % n;
    uint64_t x;
    do {
      x = Next();
    } while (x >= limit);
    return x % n;
  }

 private:
  uint64_t state_;
};

// The sampling seed of the query at `query_index` in its request, from the
// request's `seed`.
uint64_t QuerySeed(uint64_t seed, size_t query_index);

// Step 5: picks `picks` indexes into a window of window_scores.size()
// candidates ordered best first (window_scores[i] is the i-th one's score),
// returned ascending (best first): the first `picks` for SAMPLING_TOP or
// when picks covers the window; otherwise a sample without replacement,
// uniform or softmax (by options.temperature), drawn from `seed`.
std::vector<size_t> Sample(const MiningOptions& options, Metric metric,
                           absl::Span<const float> window_scores, size_t picks,
                           uint64_t seed);

}  // namespace hardneg

#endif  // HARDNEG_SRC_MINING_SAMPLING_H_

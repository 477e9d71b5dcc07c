// ReferenceMine: an independent, brute-force statement of the mining
// semantics in README.md ("Mining semantics", the contract), written from the
// spec and not from src/mining/miner.cc. Tests compare hardneg::Miner against
// it.
//
// It scores every candidate of the store exactly (accumulating in double and
// rounding to float, as the Miner reports scores), applies the exclusions,
// the positive-aware margins and the bounds (comparisons in double), orders
// the survivors best first with ties by id, and cuts the rank window. It does
// not sample: TOP is the window's prefix; UNIFORM and SOFTMAX are checked
// against the window by the tests.
//
// Pure functions of their arguments: safe to call from any thread.
#ifndef HARDNEG_TESTS_REFERENCE_MINER_H_
#define HARDNEG_TESTS_REFERENCE_MINER_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "mining/miner.h"

namespace hardneg {
namespace reference {

// The exact score in double: <q, x> for inner product, |q - x|^2 for L2.
inline double ExactScoreDouble(Metric metric, const float* q, const float* x,
                               size_t dim) {
  double sum = 0;
  if (metric == Metric::kInnerProduct) {
    for (size_t i = 0; i < dim; ++i) {
      sum += static_cast<double>(q[i]) * static_cast<double>(x[i]);
    }
  } else {
    for (size_t i = 0; i < dim; ++i) {
      const double d = static_cast<double>(q[i]) - static_cast<double>(x[i]);
      sum += d * d;
    }
  }
  return sum;
}

// The score the service reports: the exact score rounded to float.
inline float ExactScore(Metric metric, const float* q, const float* x,
                        size_t dim) {
  return static_cast<float>(ExactScoreDouble(metric, q, x, dim));
}

// True when `a` ranks strictly before `b` (best first, ties by id ascending).
inline bool RanksBefore(Metric metric, float score_a, int64_t id_a,
                        float score_b, int64_t id_b) {
  if (score_a != score_b) {
    return metric == Metric::kInnerProduct ? score_a > score_b
                                           : score_a < score_b;
  }
  return id_a < id_b;
}

struct ReferenceNegative {
  int64_t id = 0;
  float score = 0;
  int64_t label = 0;
  uint32_t rank = 0;
  uint32_t row = 0;
};

struct ReferenceResult {
  // How many candidates survive steps 2 and 3.
  size_t num_survivors = 0;
  // The survivors, best first (rank == index): all of them, or, when
  // ReferenceMine was asked for `ranked_only`, those up to the window's end.
  std::vector<ReferenceNegative> survivors;
  // survivors[range_min, min(range_max, survivors.size())).
  std::vector<ReferenceNegative> window;
  // The first min(num_negatives, window.size()) of the window: SAMPLING_TOP.
  std::vector<ReferenceNegative> top;
  uint32_t shortfall = 0;
  std::optional<float> positive_score;
};

// p: the weakest positive, or nullopt when there is none. Stored positives
// are scored like candidates; ids not in the store count for nothing.
inline std::optional<float> WeakestPositive(const CandidateStore& store,
                                            Metric metric,
                                            const MiningQuery& query) {
  std::optional<float> p;
  auto consider = [&](float s) {
    if (!p.has_value()) {
      p = s;
    } else if (metric == Metric::kInnerProduct) {
      p = std::min(*p, s);
    } else {
      p = std::max(*p, s);
    }
  };
  for (int64_t id : query.positive_ids) {
    // Brute force on purpose: the reference does not trust RowOf either.
    for (size_t row = 0; row < store.size(); ++row) {
      if (store.id(row) == id) {
        consider(reference::ExactScore(metric, query.embedding.data(),
                                       store.vector(row), store.dim()));
        break;
      }
    }
  }
  for (float s : query.positive_scores) consider(s);
  return p;
}

// True when a candidate scoring `s` survives the margins and the bounds.
inline bool PassesFilters(Metric metric, float s, std::optional<float> p,
                          const MiningOptions& options) {
  const double score = s;
  if (options.max_score.has_value() &&
      score > static_cast<double>(*options.max_score)) {
    return false;
  }
  if (options.min_score.has_value() &&
      score < static_cast<double>(*options.min_score)) {
    return false;
  }
  if (!p.has_value()) return true;
  const double pos = *p;
  if (metric == Metric::kInnerProduct) {
    if (options.absolute_margin.has_value() &&
        score + static_cast<double>(*options.absolute_margin) > pos) {
      return false;
    }
    if (options.relative_margin.has_value() &&
        score > pos - std::fabs(pos) *
                          static_cast<double>(*options.relative_margin)) {
      return false;
    }
  } else {
    if (options.absolute_margin.has_value() &&
        score < pos + static_cast<double>(*options.absolute_margin)) {
      return false;
    }
    if (options.relative_margin.has_value() &&
        score < pos + std::fabs(pos) *
                          static_cast<double>(*options.relative_margin)) {
      return false;
    }
  }
  return true;
}

// With `ranked_only`, only the survivors up to the window's end are ordered
// and kept (a partial sort, for speed); the window is the same.
inline ReferenceResult ReferenceMine(const CandidateStore& store, Metric metric,
                                     const MiningQuery& query,
                                     const MiningOptions& options,
                                     bool ranked_only = false) {
  ReferenceResult result;
  result.positive_score = WeakestPositive(store, metric, query);
  for (size_t row = 0; row < store.size(); ++row) {
    const int64_t id = store.id(row);
    bool excluded = false;
    for (int64_t pos_id : query.positive_ids) excluded |= (pos_id == id);
    if (query.query_id.has_value() && *query.query_id == id) excluded = true;
    // A store without labels has no label to match, not label 0.
    if (query.label.has_value() && store.has_labels() &&
        store.labels()[row] == *query.label) {
      excluded = true;
    }
    if (excluded) continue;
    const float s = reference::ExactScore(metric, query.embedding.data(),
                                          store.vector(row), store.dim());
    if (!PassesFilters(metric, s, result.positive_score, options)) continue;
    ReferenceNegative n;
    n.id = id;
    n.score = s;
    n.label = store.has_labels() ? store.labels()[row] : 0;
    n.row = static_cast<uint32_t>(row);
    result.survivors.push_back(n);
  }
  result.num_survivors = result.survivors.size();
  const size_t range_min = options.range_min;
  const size_t range_max =
      options.range_max == 0 ? size_t{options.range_min} + options.num_negatives
                             : size_t{options.range_max};
  auto ranks_before = [metric](const ReferenceNegative& a,
                               const ReferenceNegative& b) {
    return RanksBefore(metric, a.score, a.id, b.score, b.id);
  };
  if (ranked_only && range_max < result.survivors.size()) {
    std::partial_sort(result.survivors.begin(),
                      result.survivors.begin() + range_max,
                      result.survivors.end(), ranks_before);
    result.survivors.resize(range_max);
  } else {
    std::sort(result.survivors.begin(), result.survivors.end(), ranks_before);
  }
  for (size_t i = 0; i < result.survivors.size(); ++i) {
    result.survivors[i].rank = static_cast<uint32_t>(i);
  }
  const size_t end = std::min(range_max, result.survivors.size());
  for (size_t i = range_min; i < end; ++i) {
    result.window.push_back(result.survivors[i]);
  }
  const size_t take =
      std::min<size_t>(options.num_negatives, result.window.size());
  result.top.assign(result.window.begin(), result.window.begin() + take);
  result.shortfall = static_cast<uint32_t>(options.num_negatives - take);
  return result;
}

}  // namespace reference
}  // namespace hardneg

#endif  // HARDNEG_TESTS_REFERENCE_MINER_H_

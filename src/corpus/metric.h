// How candidates are scored against a query: the Metric, its names, and
// the exact score that every reported score is.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SRC_CORPUS_METRIC_H_
#define HARDNEG_SRC_CORPUS_METRIC_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace hardneg {

enum class Metric {
  kInnerProduct,  // score = <q, x>; higher is closer
  kL2,            // score = |q - x|^2 (squared); lower is closer
};

// "inner_product" (also "ip") or "l2"; INVALID_ARGUMENT otherwise.
absl::StatusOr<Metric> ParseMetric(std::string_view name);

// "inner_product" or "l2".
std::string MetricName(Metric metric);

// The exact score of `x` for query `q` (both `dim` floats), accumulated in
// double in a fixed order (so identical vectors score identically), then
// rounded to float.
float ExactScore(Metric metric, const float* q, const float* x, size_t dim);

// True when score `a` ranks strictly before score `b` under `metric`.
inline bool Closer(Metric metric, float a, float b) {
  return metric == Metric::kInnerProduct ? a > b : a < b;
}

}  // namespace hardneg

#endif  // HARDNEG_SRC_CORPUS_METRIC_H_

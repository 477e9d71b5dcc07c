#include "corpus/metric.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace hardneg {

absl::StatusOr<Metric> ParseMetric(std::string_view name) {
  if (name == "inner_product" || name == "ip") return Metric::kInnerProduct;
  if (name == "l2") return Metric::kL2;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown metric \"", std::string(name),
                   "\": expected \"inner_product\" or \"l2\""));
}

std::string MetricName(Metric metric) {
  return metric == Metric::kInnerProduct ? "inner_product" : "l2";
}

float ExactScore(Metric metric, const float* q, const float* x, size_t dim) {
  double acc[4] = {0, 0, 0, 0};
  size_t i = 0;
  if (metric == Metric::kInnerProduct) {
    for (; i + 4 <= dim; i += 4) {
      for (size_t j = 0; j < 4; ++j) {
        acc[j] += static_cast<double>(q[i + j]) * x[i + j];
      }
    }
    for (; i < dim; ++i) acc[0] += static_cast<double>(q[i]) * x[i];
  } else {
    for (; i + 4 <= dim; i += 4) {
      for (size_t j = 0; j < 4; ++j) {
        const double t = static_cast<double>(q[i + j]) - x[i + j];
        acc[j] += t * t;
      }
    }
    for (; i < dim; ++i) {
      const double t = static_cast<double>(q[i]) - x[i];
      acc[0] += t * t;
    }
  }
  return static_cast<float>((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

}  // namespace hardneg

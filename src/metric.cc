#include "metric.h"

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

}  // namespace hardneg

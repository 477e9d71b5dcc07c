#include "mining/options.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace hardneg {

MinerLimits MinerLimits::ForShard() const {
  MinerLimits shard = *this;
  shard.max_negatives = std::max(max_negatives, max_range);
  shard.max_request_negatives =
      std::max(max_request_negatives, max_request_fetch);
  shard.max_positives = max_positives + 1;
  shard.negatives_bounded_by_candidates = true;
  return shard;
}

MinerLimits MinerLimits::None() {
  MinerLimits none;
  none.max_negatives = std::numeric_limits<uint32_t>::max();
  none.max_range = std::numeric_limits<uint32_t>::max();
  none.max_nprobe = std::numeric_limits<uint32_t>::max();
  none.max_ivf_min_candidates = std::numeric_limits<uint32_t>::max();
  none.max_queries = std::numeric_limits<uint32_t>::max();
  none.max_request_negatives = std::numeric_limits<uint64_t>::max();
  none.max_request_fetch = std::numeric_limits<uint64_t>::max();
  none.max_positives = std::numeric_limits<uint32_t>::max();
  return none;
}

absl::string_view SamplingName(Sampling sampling) {
  switch (sampling) {
    case Sampling::kTop:
      return "top";
    case Sampling::kUniform:
      return "uniform";
    case Sampling::kSoftmax:
      return "softmax";
  }
  return "unknown";
}

std::optional<Sampling> ParseSampling(absl::string_view name) {
  for (Sampling s : {Sampling::kTop, Sampling::kUniform, Sampling::kSoftmax}) {
    if (name == SamplingName(s)) return s;
  }
  return std::nullopt;
}

absl::Status ValidateMiningOptions(const MiningOptions& options,
                                   const MinerLimits& limits) {
  if (options.num_negatives == 0) {
    return absl::InvalidArgumentError(
        "options.num_negatives must be at least 1");
  }
  if (options.num_negatives > limits.max_negatives) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.num_negatives is ", options.num_negatives,
                     "; the limit is ", limits.max_negatives));
  }
  const uint64_t needed =
      uint64_t{options.range_min} + uint64_t{options.num_negatives};
  if (options.range_max != 0 && options.range_max < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.range_max (", options.range_max,
                     ") must be at least options.range_min + "
                     "options.num_negatives (",
                     options.range_min, " + ", options.num_negatives, " = ",
                     needed, "), or 0 for exactly that"));
  }
  const uint64_t range_max =
      options.range_max != 0 ? options.range_max : needed;
  if (range_max > limits.max_range) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.range_max (", range_max,
        " after defaulting) is over the limit ", limits.max_range));
  }
  if (std::isnan(options.temperature) || options.temperature < 0 ||
      std::isinf(options.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.temperature is ", options.temperature,
                     "; it must be a finite value >= 0 (0 means 1.0)"));
  }
  if (options.nprobe > limits.max_nprobe) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.nprobe is ", options.nprobe, "; the limit is ",
                     limits.max_nprobe));
  }
  if (options.ivf_min_candidates > limits.max_ivf_min_candidates) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.ivf_min_candidates is ", options.ivf_min_candidates,
        "; the limit is ", limits.max_ivf_min_candidates,
        " (max_ivf_min_candidates)"));
  }
  const std::pair<const char*, const std::optional<float>*> bounds[] = {
      {"max_score", &options.max_score},
      {"min_score", &options.min_score},
      {"absolute_margin", &options.absolute_margin},
      {"relative_margin", &options.relative_margin}};
  for (const auto& [name, value] : bounds) {
    if (value->has_value() && !std::isfinite(**value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("options.", name, " is ", **value,
                       "; bounds and margins must be finite (leave the "
                       "option unset for no bound)"));
    }
  }
  return absl::OkStatus();
}

uint64_t RangeMax(const MiningOptions& options) {
  return options.range_max != 0
             ? uint64_t{options.range_max}
             : uint64_t{options.range_min} + uint64_t{options.num_negatives};
}

}  // namespace hardneg

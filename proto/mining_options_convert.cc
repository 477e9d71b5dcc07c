#include "proto/mining_options_convert.h"

#include "absl/strings/str_cat.h"

namespace hardneg {
namespace {

v1::Sampling SamplingToProto(Sampling sampling) {
  switch (sampling) {
    case Sampling::kTop:
      return v1::SAMPLING_TOP;
    case Sampling::kUniform:
      return v1::SAMPLING_UNIFORM;
    case Sampling::kSoftmax:
      return v1::SAMPLING_SOFTMAX;
  }
  return v1::SAMPLING_TOP;
}

absl::Status SamplingFromProto(int sampling, Sampling* out) {
  switch (sampling) {
    case v1::SAMPLING_TOP:
      *out = Sampling::kTop;
      return absl::OkStatus();
    case v1::SAMPLING_UNIFORM:
      *out = Sampling::kUniform;
      return absl::OkStatus();
    case v1::SAMPLING_SOFTMAX:
      *out = Sampling::kSoftmax;
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("options.sampling has unknown value ", sampling,
                       "; expected SAMPLING_TOP, SAMPLING_UNIFORM or "
                       "SAMPLING_SOFTMAX"));
  }
}

}  // namespace

void MiningOptionsToProto(const MiningOptions& options,
                          v1::MiningOptions* out) {
  out->set_num_negatives(options.num_negatives);
  out->set_range_min(options.range_min);
  out->set_range_max(options.range_max);
  if (options.max_score) out->set_max_score(*options.max_score);
  if (options.min_score) out->set_min_score(*options.min_score);
  if (options.absolute_margin) {
    out->set_absolute_margin(*options.absolute_margin);
  }
  if (options.relative_margin) {
    out->set_relative_margin(*options.relative_margin);
  }
  out->set_sampling(SamplingToProto(options.sampling));
  out->set_temperature(options.temperature);
  out->set_seed(options.seed);
  out->set_nprobe(options.nprobe);
  out->set_ivf_min_candidates(options.ivf_min_candidates);
  out->set_return_embeddings(options.return_embeddings);
  out->set_min_index_sequence(options.min_index_sequence);
  out->set_allow_partial(options.allow_partial);
  out->set_index_version(options.index_version);
}

absl::Status MiningOptionsFromProto(const v1::MiningOptions& in,
                                    MiningOptions* out) {
  out->num_negatives = in.num_negatives();
  out->range_min = in.range_min();
  out->range_max = in.range_max();
  if (in.has_max_score()) out->max_score = in.max_score();
  if (in.has_min_score()) out->min_score = in.min_score();
  if (in.has_absolute_margin()) out->absolute_margin = in.absolute_margin();
  if (in.has_relative_margin()) out->relative_margin = in.relative_margin();
  absl::Status sampling = SamplingFromProto(in.sampling(), &out->sampling);
  if (!sampling.ok()) return sampling;
  out->temperature = in.temperature();
  out->seed = in.seed();
  out->nprobe = in.nprobe();
  out->ivf_min_candidates = in.ivf_min_candidates();
  out->return_embeddings = in.return_embeddings();
  out->min_index_sequence = in.min_index_sequence();
  out->allow_partial = in.allow_partial();
  out->index_version = in.index_version();
  return absl::OkStatus();
}

}  // namespace hardneg

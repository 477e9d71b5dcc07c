#include "client/cli_mining_options.h"

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "mining/options.h"

namespace hardneg::client {

void AddMiningFlags(FlagSet& flags, MiningFlags* mining_flags) {
  MiningOptions& options = mining_flags->options;
  flags.Uint32("num_negatives", &options.num_negatives,
               "Negatives per query (> 0).");
  flags.Uint32("range_min", &options.range_min,
               "First rank of the window among the survivors.");
  flags.Uint32("range_max", &options.range_max,
               "End of the rank window (exclusive); 0 means range_min + "
               "num_negatives.");
  flags.OptionalFloat("max_score", &options.max_score,
                      "Drop candidates scoring above this.");
  flags.OptionalFloat("min_score", &options.min_score,
                      "Drop candidates scoring below this.");
  flags.OptionalFloat("absolute_margin", &options.absolute_margin,
                      "Keep this far (in score) from the weakest positive.");
  flags.OptionalFloat("relative_margin", &options.relative_margin,
                      "Keep this fraction of |p| away from the weakest "
                      "positive p.");
  flags.String("sampling", &mining_flags->sampling, "top|uniform|softmax",
               "How to pick num_negatives from the window.");
  flags.Float("temperature", &options.temperature,
              "Softmax temperature (>= 0); 0 means 1.0.");
  flags.Uint64("seed", &options.seed, "Seed for uniform and softmax sampling.");
  flags.Bool("return_embeddings", &options.return_embeddings,
             "Return each negative's stored embedding.");
  flags.Uint64("min_index_sequence", &options.min_index_sequence,
               "Refuse answers from an index older than this sequence.");
  flags.Uint32("nprobe", &options.nprobe,
               "IVF lists to probe (more: better recall, slower); 0 keeps "
               "the server's --nprobe.");
  flags.Uint32("ivf_min_candidates", &options.ivf_min_candidates,
               "IVF-Flat over labelled candidates: candidates without the "
               "query's label to scan before probing stops; 0 keeps the "
               "server's --ivf_min_candidates.");
  flags.Bool("allow_partial", &options.allow_partial,
             "Through a router: answer from the live shards when some are "
             "gone, listing the missing ones, instead of failing.");
  flags.String("index_version", &options.index_version, "NAME",
               "Answer only from the version of this name (the served one "
               "or the one kept before it).");
}

absl::StatusOr<MiningOptions> MiningOptionsFromFlags(
    const MiningFlags& mining_flags) {
  MiningOptions options = mining_flags.options;
  const std::optional<Sampling> sampling = ParseSampling(mining_flags.sampling);
  if (!sampling.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sampling=", mining_flags.sampling, ": expected ", kSamplingChoices));
  }
  options.sampling = *sampling;
  // The domain's checks, as the server runs them; its limits are the
  // server's to apply. The domain names fields "options.x": here they are
  // the flags --x.
  absl::Status valid = ValidateMiningOptions(options, MinerLimits::None());
  if (!valid.ok()) {
    std::string message(valid.message());
    absl::StrReplaceAll({{"options.", "--"}}, &message);
    return absl::InvalidArgumentError(message);
  }
  return options;
}

}  // namespace hardneg::client

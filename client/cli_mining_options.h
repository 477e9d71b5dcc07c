// The mining options of `hardneg mine` as flags: --num_negatives through
// --nprobe, turned into the client::MiningOptions of each request.
//
// Not thread-safe; MiningFlags live in one command's main function.
#ifndef HARDNEG_CLIENT_CLI_MINING_OPTIONS_H_
#define HARDNEG_CLIENT_CLI_MINING_OPTIONS_H_

#include <string>

#include "absl/status/statusor.h"
#include "client/cli_flags.h"
#include "client/client.h"

namespace hardneg::client {

// Where the flags are parsed to: `options` holds every flag but --sampling.
struct MiningFlags {
  MiningOptions options;
  std::string sampling = "top";
};

// Registers --num_negatives, --range_min, --range_max, --max_score,
// --min_score, --absolute_margin, --relative_margin, --sampling,
// --temperature, --seed, --return_embeddings, --min_index_sequence and
// --nprobe, writing into `*mining_flags`.
void AddMiningFlags(FlagSet& flags, MiningFlags* mining_flags);

// The options the flags ask for. INVALID_ARGUMENT, with the message for a
// usage error naming the flag, when --sampling is not top, uniform or
// softmax, or ValidateMiningOptions refuses the options (without the
// server's limits, which only the server knows).
absl::StatusOr<MiningOptions> MiningOptionsFromFlags(
    const MiningFlags& mining_flags);

}  // namespace hardneg::client

#endif  // HARDNEG_CLIENT_CLI_MINING_OPTIONS_H_

#include "server/limit_flags.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

ABSL_FLAG(uint32_t, max_negatives, 10000, "Largest num_negatives accepted.");
ABSL_FLAG(uint32_t, max_range, 1000000, "Largest range_max accepted.");
ABSL_FLAG(uint32_t, max_nprobe, 4096,
          "Largest per-request options.nprobe accepted (IVF indexes).");
ABSL_FLAG(uint32_t, max_queries, 16384,
          "Most queries in one request (INVALID_ARGUMENT past it).");
ABSL_FLAG(uint64_t, max_request_negatives, uint64_t{1} << 20,
          "Most negatives one request may ask for: num_negatives x queries "
          "(INVALID_ARGUMENT past it).");
ABSL_FLAG(uint64_t, max_request_fetch, uint64_t{1} << 24,
          "Most candidates one request may rank: range_max x queries, about "
          "8 bytes each while it is answered (INVALID_ARGUMENT past it). "
          "Also the most a batch of coalesced requests ranks.");
ABSL_FLAG(uint32_t, max_positives, 65536,
          "Most positive_ids (or positive_scores) of one query.");
namespace hardneg {

MinerLimits LimitsFromFlags() {
  MinerLimits limits;
  limits.max_negatives = absl::GetFlag(FLAGS_max_negatives);
  limits.max_range = absl::GetFlag(FLAGS_max_range);
  limits.max_nprobe = absl::GetFlag(FLAGS_max_nprobe);
  limits.max_queries = std::max<uint32_t>(1, absl::GetFlag(FLAGS_max_queries));
  limits.max_request_negatives = absl::GetFlag(FLAGS_max_request_negatives);
  limits.max_request_fetch = absl::GetFlag(FLAGS_max_request_fetch);
  limits.max_positives = absl::GetFlag(FLAGS_max_positives);
  return limits;
}

sigset_t StartBinary(int argc, char** argv, std::vector<std::string> flag_files,
                     const std::string& usage) {
  flag_files.push_back("server/limit_flags.cc");
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [files = std::move(flag_files)](
                                   absl::string_view file) {
    return std::any_of(files.begin(), files.end(), [&](const std::string& f) {
      return absl::EndsWith(file, f);
    });
  };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  absl::ParseCommandLine(argc, argv);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

}  // namespace hardneg

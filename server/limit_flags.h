// The per-request limit flags (--max_negatives, --max_range, --max_nprobe,
// --max_queries, --max_request_negatives, --max_request_fetch,
// --max_positives) and the process setup shared by hardneg-server and
// hardneg-router, which hold requests to the same limits under the same
// names.
//
// LimitsFromFlags only reads flags (absl::GetFlag is thread-safe); call it
// after absl::ParseCommandLine.
#ifndef HARDNEG_SERVER_LIMIT_FLAGS_H_
#define HARDNEG_SERVER_LIMIT_FLAGS_H_

#include <signal.h>

#include <string>
#include <vector>

#include "mining/options.h"

namespace hardneg {

// The limits the flags set.
MinerLimits LimitsFromFlags();

// A binary's start: --help lists the flags of the files whose paths end
// with one of `flag_files` (and the limit flags), `usage` heads it; the
// command line is parsed; SIGTERM and SIGINT are blocked before any
// thread starts, so that only the caller's sigwait receives them. Returns
// those signals.
sigset_t StartBinary(int argc, char** argv, std::vector<std::string> flag_files,
                     const std::string& usage);

}  // namespace hardneg

#endif  // HARDNEG_SERVER_LIMIT_FLAGS_H_

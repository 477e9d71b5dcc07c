// The flags hardneg-server and hardneg-router share, under the same names:
// the per-request limits (--max_negatives, --max_range, --max_nprobe,
// --max_ivf_min_candidates, --max_queries, --max_request_negatives,
// --max_request_fetch, --max_positives), and access (--tls_cert,
// --tls_key, --tls_client_ca, --auth_tokens); and the process start of both
// binaries.
//
// The *FromFlags functions only read flags (absl::GetFlag is thread-safe); call
// it after absl::ParseCommandLine.
#ifndef HARDNEG_SERVER_COMMON_FLAGS_H_
#define HARDNEG_SERVER_COMMON_FLAGS_H_

#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "mining/options.h"
#include "server/auth.h"

namespace hardneg {

// The limits the flags set.
MinerLimits LimitsFromFlags();

// Server credentials from --tls_cert, --tls_key and --tls_client_ca; null
// for plaintext. INVALID_ARGUMENT naming the flag for a missing pair or an
// unreadable file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsFromFlags();

// The tokens of --auth_tokens; null when it is empty (every call is let
// in). INVALID_ARGUMENT naming the flag for a bad file.
absl::StatusOr<std::shared_ptr<const TokenAuthorizer>> AuthFromFlags();

// A binary's start: --help lists the flags of the files whose paths end
// with one of `flag_files` (and the limit flags), `usage` heads it and
// names the program (its first word), and exits 0; --version prints the
// version line (base/build_info.h) and exits 0; the command line is parsed;
// SIGTERM and SIGINT are blocked before any thread starts, so that only the
// caller's sigwait receives them. Returns those signals.
sigset_t StartBinary(int argc, char** argv, std::vector<std::string> flag_files,
                     const std::string& usage);

}  // namespace hardneg

#endif  // HARDNEG_SERVER_COMMON_FLAGS_H_

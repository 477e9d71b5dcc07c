#include "server/common_flags.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/build_info.h"
#include "base/status_macros.h"
#include "format/file_util.h"
#include "server/flags_help.h"

ABSL_FLAG(uint32_t, max_negatives, 10000, "Largest num_negatives accepted.");
ABSL_FLAG(uint32_t, max_range, 1000000, "Largest range_max accepted.");
ABSL_FLAG(uint32_t, max_nprobe, 4096,
          "Largest per-request options.nprobe accepted (IVF indexes).");
ABSL_FLAG(uint32_t, max_ivf_min_candidates, 1u << 20,
          "Largest per-request options.ivf_min_candidates accepted (IVF-Flat "
          "indexes over labelled candidates).");
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
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain for TLS on the gRPC port (with --tls_key). "
          "Empty: plaintext.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: clients must present a certificate it signed "
          "(mutual TLS). Needs --tls_cert.");
ABSL_FLAG(std::string, auth_tokens, "",
          "File of bearer tokens, one \"TOKEN ROLE[,ROLE]\" a line (roles: "
          "mine, publish; # comments). Every Miner call must then carry "
          "\"authorization: Bearer TOKEN\" with the role it needs; health "
          "stays open. Empty: no tokens.");

namespace hardneg {
namespace {

absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path) {
  absl::StatusOr<std::string> pem = ReadSmallTextFile(path, size_t{1} << 20);
  if (!pem.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", pem.status().message()));
  }
  return pem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsFromFlags() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  const std::string client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() && key.empty() && client_ca.empty()) return nullptr;
  if (cert.empty() || key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together (and --tls_client_ca needs "
        "them)");
  }
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  HARDNEG_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("tls_cert", cert));
  HARDNEG_ASSIGN_OR_RETURN(pair.private_key, ReadPem("tls_key", key));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!client_ca.empty()) {
    HARDNEG_ASSIGN_OR_RETURN(options.pem_root_certs,
                             ReadPem("tls_client_ca", client_ca));
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

MinerLimits LimitsFromFlags() {
  MinerLimits limits;
  limits.max_negatives = absl::GetFlag(FLAGS_max_negatives);
  limits.max_range = absl::GetFlag(FLAGS_max_range);
  limits.max_nprobe = absl::GetFlag(FLAGS_max_nprobe);
  limits.max_ivf_min_candidates = absl::GetFlag(FLAGS_max_ivf_min_candidates);
  limits.max_queries = std::max<uint32_t>(1, absl::GetFlag(FLAGS_max_queries));
  limits.max_request_negatives = absl::GetFlag(FLAGS_max_request_negatives);
  limits.max_request_fetch = absl::GetFlag(FLAGS_max_request_fetch);
  limits.max_positives = absl::GetFlag(FLAGS_max_positives);
  return limits;
}

sigset_t StartBinary(int argc, char** argv, std::vector<std::string> flag_files,
                     const std::string& usage) {
  flag_files.push_back("server/common_flags.cc");
  const std::string program(usage.substr(0, usage.find(' ')));
  HandleHelpAndVersion(argc, argv, program, usage, flag_files);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [files = std::move(flag_files)](
                                   absl::string_view file) {
    return std::any_of(files.begin(), files.end(), [&](const std::string& f) {
      return absl::EndsWith(file, f);
    });
  };
  config.version_string = [program] {
    return absl::StrCat(VersionLine(program), "\n");
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

absl::StatusOr<std::shared_ptr<const TokenAuthorizer>> AuthFromFlags() {
  const std::string tokens = absl::GetFlag(FLAGS_auth_tokens);
  if (tokens.empty()) return nullptr;
  absl::StatusOr<TokenAuthorizer> auth = TokenAuthorizer::FromFile(tokens);
  if (!auth.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_tokens: ", auth.status().message()));
  }
  return std::make_shared<const TokenAuthorizer>(*std::move(auth));
}

}  // namespace hardneg

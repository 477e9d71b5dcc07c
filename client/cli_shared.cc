// What the subcommands share: server flags, connecting, error reporting.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/cli_commands.h"

namespace hardneg::client {

void AddConnectionFlags(FlagSet& flags, ConnectionFlags* connection_flags) {
  flags.String("server", &connection_flags->server, "HOST:PORT",
               "The hardneg server's gRPC address (required).");
  flags.Float("timeout", &connection_flags->timeout_seconds,
              "Seconds each unary call may take; 0 waits forever.");
  flags.Float("connect_timeout", &connection_flags->connect_timeout_seconds,
              "Seconds to wait for the connection before failing with the "
              "address; 0 waits forever.");
  flags.Bool("wait_for_ready", &connection_flags->wait_for_ready,
             "Queue calls while the server is unreachable instead of failing "
             "them.");
  flags.String("tls_ca", &connection_flags->tls_ca, "FILE",
               "Connect with TLS, trusting this PEM CA bundle (the one that "
               "signed the server's certificate).");
  flags.String("tls_cert", &connection_flags->tls_cert, "FILE",
               "PEM client certificate, for servers that require mutual TLS "
               "(with --tls_key).");
  flags.String("tls_key", &connection_flags->tls_key, "FILE",
               "PEM private key of --tls_cert.");
  flags.String("token_file", &connection_flags->token_file, "FILE",
               "File holding the bearer token for servers run with "
               "--auth_tokens.\nDefault: the HARDNEG_TOKEN environment "
               "variable, if set.");
}

std::optional<int> ParseServerCommand(FlagSet& flags,
                                      const std::vector<std::string>& args,
                                      const ConnectionFlags& connection_flags) {
  if (absl::Status status = flags.Parse(args); !status.ok()) {
    return flags.UsageError(status);
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return kExitOk;
  }
  if (connection_flags.server.empty()) {
    return flags.UsageError("--server is required");
  }
  if (connection_flags.timeout_seconds < 0) {
    return flags.UsageError("--timeout must not be negative");
  }
  if (connection_flags.connect_timeout_seconds < 0) {
    return flags.UsageError("--connect_timeout must not be negative");
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<Client>> ConnectToServer(
    const ConnectionFlags& connection_flags) {
  ClientOptions options;
  options.wait_for_ready = connection_flags.wait_for_ready;
  if (!connection_flags.tls_ca.empty() || !connection_flags.tls_cert.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        TlsCredentialsFromFiles(connection_flags.tls_ca,
                                connection_flags.tls_cert,
                                connection_flags.tls_key);
    if (!credentials.ok()) return credentials.status();
    options.credentials = *std::move(credentials);
  }
  if (!connection_flags.token_file.empty()) {
    std::ifstream in(connection_flags.token_file);
    if (!in) {
      return absl::NotFoundError(absl::StrCat(
          "--token_file ", connection_flags.token_file, ": cannot be read"));
    }
    std::getline(in, options.bearer_token);
  } else if (const char* token = std::getenv("HARDNEG_TOKEN")) {
    options.bearer_token = token;
  }
  options.bearer_token =
      std::string(absl::StripAsciiWhitespace(options.bearer_token));
  if (connection_flags.timeout_seconds > 0) {
    options.rpc_timeout = absl::Seconds(connection_flags.timeout_seconds);
  }
  // --wait_for_ready queues calls while the server is unreachable: no
  // deadline for the connection then either.
  if (connection_flags.connect_timeout_seconds > 0 &&
      !connection_flags.wait_for_ready) {
    options.connect_timeout =
        absl::Seconds(connection_flags.connect_timeout_seconds);
  }
  return Client::Connect(connection_flags.server, options);
}

int RunWithClient(const std::string& command,
                  const ConnectionFlags& connection_flags,
                  const std::function<int(Client&)>& run) {
  absl::StatusOr<std::unique_ptr<Client>> client =
      ConnectToServer(connection_flags);
  if (!client.ok()) {
    return RuntimeError(command, connection_flags.server, client.status());
  }
  return run(**client);
}

std::string StatusText(const absl::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                      status.message());
}

int RuntimeError(const std::string& command, const std::string& what,
                 const absl::Status& status) {
  std::cerr << "hardneg " << command << ": " << what << ": "
            << StatusText(status) << "\n";
  return kExitRuntimeError;
}

}  // namespace hardneg::client

// The subcommands of the `hardneg` CLI. Each takes the arguments after its
// name, parses its own flags, writes results to stdout (or the file named by
// a flag) and diagnostics to stderr, and returns the process exit code:
// kExitOk, kExitRuntimeError (1) or kExitUsageError (2) (cli_flags.h).
//
// Called from main's thread; each runs one command to completion.
#ifndef HARDNEG_CLIENT_CLI_COMMANDS_H_
#define HARDNEG_CLIENT_CLI_COMMANDS_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli_flags.h"
#include "client/client.h"

namespace hardneg::client {

// `hardneg info`: the served index's version and shape.
int RunInfoCommand(const std::vector<std::string>& args);

// `hardneg mine`: mines negatives for the queries of a .npy file.
int RunMineCommand(const std::vector<std::string>& args);

// `hardneg publish`: streams a checkpoint directory or .npy files to the
// server's Publish RPC (full, or incremental onto a served version).
int RunPublishCommand(const std::vector<std::string>& args);

// `hardneg make-checkpoint`: writes a checkpoint directory from .npy files
// or Fashion-MNIST, and exports Fashion-MNIST test queries.
int RunMakeCheckpointCommand(const std::vector<std::string>& args);

// The flags every command that talks to a server shares.
struct ConnectionFlags {
  std::string server;
  float timeout_seconds = 10;         // each unary call
  float connect_timeout_seconds = 2;  // the first connection
  bool wait_for_ready = false;
  std::string tls_ca;      // PEM CA of the server's certificate: TLS on
  std::string tls_cert;    // PEM client certificate, for mutual TLS
  std::string tls_key;     // its key
  std::string token_file;  // a file holding the bearer token
};

// Registers --server, --timeout, --connect_timeout, --wait_for_ready,
// --tls_ca, --tls_cert,
// --tls_key and --token_file. Without --token_file, the token comes from
// the environment variable HARDNEG_TOKEN when it is set.
void AddConnectionFlags(FlagSet& flags, ConnectionFlags* connection_flags);

// Parses `args` for a command that talks to a server and checks the server
// flags. Returns the exit code when the command is over already (usage
// error, or --help printed), nullopt when it should go on.
std::optional<int> ParseServerCommand(FlagSet& flags,
                                      const std::vector<std::string>& args,
                                      const ConnectionFlags& connection_flags);

// Connects as the flags say: waits up to --connect_timeout for the channel
// (UNAVAILABLE naming the address after it), and applies --timeout to each
// unary call (not to a Mine stream).
absl::StatusOr<std::unique_ptr<Client>> ConnectToServer(
    const ConnectionFlags& connection_flags);

// Connects as ConnectToServer does and returns `run`'s exit code; when the
// connection fails, reports it as RuntimeError(command, --server, ...).
int RunWithClient(const std::string& command,
                  const ConnectionFlags& connection_flags,
                  const std::function<int(Client&)>& run);

// "CODE: message", without the status payloads that ToString() adds.
std::string StatusText(const absl::Status& status);

// Writes "hardneg <command>: <what>: <status>" to stderr; returns
// kExitRuntimeError.
int RuntimeError(const std::string& command, const std::string& what,
                 const absl::Status& status);

}  // namespace hardneg::client

#endif  // HARDNEG_CLIENT_CLI_COMMANDS_H_

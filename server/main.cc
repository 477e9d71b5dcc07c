// hardneg-server: reads the flags and runs the server (server_flags.cc,
// run_server.cc).
#include <signal.h>

#include <cstdio>
#include <string>

#include "absl/status/statusor.h"
#include "server/common_flags.h"
#include "server/omp_policy.h"
#include "server/run_server.h"
#include "server/server_flags.h"

int main(int argc, char** argv) {
  hardneg::EnsurePassiveOpenMp(argv);
  // --help lists the server's flags, which live in server_flags.cc.
  const sigset_t signals = hardneg::StartBinary(
      argc, argv, {"server/server_flags.cc"},
      "hardneg-server --checkpoints DIR [--grpc_port N] [--index Flat] ...");
  absl::StatusOr<hardneg::ServerConfig> config =
      hardneg::ServerConfigFromFlags();
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
  return hardneg::RunServer(*config, signals);
}

// hardneg-server: reads the flags and runs the server (server_flags.cc,
// run_server.cc).
#include <signal.h>

#include <cstdio>
#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "server/omp_policy.h"
#include "server/run_server.h"
#include "server/server_flags.h"

int main(int argc, char** argv) {
  hardneg::EnsurePassiveOpenMp(argv);
  // --help lists the server's flags, which live in server_flags.cc.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server_flags.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "hardneg-server --checkpoints DIR [--grpc_port N] [--index Flat] ...");
  absl::ParseCommandLine(argc, argv);
  // Block termination signals before any thread starts, so that only the
  // server's sigwait receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  absl::StatusOr<hardneg::ServerConfig> config =
      hardneg::ServerConfigFromFlags();
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
  return hardneg::RunServer(*config, signals);
}

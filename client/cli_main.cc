// The `hardneg` command line: picks the subcommand and hands it the rest of
// the arguments (each subcommand parses its own flags).
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "base/build_info.h"
#include "client/cli_commands.h"
#include "client/cli_flags.h"

namespace {

constexpr char kUsage[] =
    "usage: hardneg <command> [flags]\n"
    "\n"
    "commands:\n"
    "  info             Print the served index's version, size, dim and "
    "metric.\n"
    "  mine             Mine hard negatives for the queries of a .npy file.\n"
    "  publish          Stream a new index version (a checkpoint directory or\n"
    "                   .npy files, full or incremental) to the server.\n"
    "  make-checkpoint  Write a checkpoint from .npy files or Fashion-MNIST,\n"
    "                   and export Fashion-MNIST test queries.\n"
    "  version          Print the version, git revision and build type\n"
    "                   (also --version).\n"
    "\n"
    "Run 'hardneg <command> --help' for a command's flags.\n"
    "Exit codes: 0 success, 1 runtime error, 2 usage error.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return hardneg::client::kExitUsageError;
  }
  const std::string_view command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "info") return hardneg::client::RunInfoCommand(args);
  if (command == "mine") return hardneg::client::RunMineCommand(args);
  if (command == "publish") return hardneg::client::RunPublishCommand(args);
  if (command == "make-checkpoint" || command == "make_checkpoint") {
    return hardneg::client::RunMakeCheckpointCommand(args);
  }
  if (command == "help" || command == "--help" || command == "-h") {
    std::cout << kUsage;
    return hardneg::client::kExitOk;
  }
  if (command == "version" || command == "--version") {
    std::cout << hardneg::VersionLine("hardneg") << "\n";
    return hardneg::client::kExitOk;
  }
  std::cerr << "hardneg: unknown command '" << command << "'\n\n" << kUsage;
  return hardneg::client::kExitUsageError;
}

// `--help` and `--version` of hardneg-server and hardneg-router, handled
// before Abseil parses the command line (whose --help exits 1 and lists
// flags by source file, and whose --version knows no version).
//
// Reads the registered flags only: usable from any thread once main runs.
#ifndef HARDNEG_SERVER_FLAGS_HELP_H_
#define HARDNEG_SERVER_FLAGS_HELP_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace hardneg {

// `usage`, then every flag defined in a file whose path ends with one of
// `flag_files`, sorted by name, each as
//   --name (default: VALUE)
//       Its help, wrapped.
// A string's default is quoted; an optional flag left unset by default
// shows "(default: unset)" and its help says what unset means.
std::string FlagsHelp(absl::string_view usage,
                      const std::vector<std::string>& flag_files);

// When argv holds --help (-help, -h, --helpfull) or --version (-version),
// prints FlagsHelp or VersionLine(program) to stdout and exits 0; else
// returns. `program` is the binary's name ("hardneg-server").
void HandleHelpAndVersion(int argc, char** argv, absl::string_view program,
                          absl::string_view usage,
                          const std::vector<std::string>& flag_files);

}  // namespace hardneg

#endif  // HARDNEG_SERVER_FLAGS_HELP_H_

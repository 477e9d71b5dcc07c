// `hardneg info`.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli_commands.h"
#include "client/cli_flags.h"
#include "client/client.h"
#include "client/info_output.h"

namespace hardneg::client {

int RunInfoCommand(const std::vector<std::string>& args) {
  ConnectionFlags connection_flags;
  std::string format = "text";
  FlagSet flags("info", "--server HOST:PORT [--format text|json]",
                "Prints the served index: version name and sequence, size, "
                "dim, metric, index type, build state and checkpoint step.");
  AddConnectionFlags(flags, &connection_flags);
  flags.String("format", &format, "text|json", "Output format.");
  if (std::optional<int> done =
          ParseServerCommand(flags, args, connection_flags)) {
    return *done;
  }
  if (format != "text" && format != "json") {
    return flags.UsageError(
        absl::StrCat("--format=", format, ": expected text or json"));
  }

  return RunWithClient("info", connection_flags, [&](Client& client) {
    absl::StatusOr<IndexInfo> info = client.GetIndexInfo();
    if (!info.ok()) {
      return RuntimeError(
          "info", absl::StrCat("GetIndexInfo on ", connection_flags.server),
          info.status());
    }
    std::cout << (format == "json" ? IndexInfoJsonLine(*info)
                                   : IndexInfoText(*info));
    return kExitOk;
  });
}

}  // namespace hardneg::client

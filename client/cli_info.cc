// `hardneg info`.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_commands.h"
#include "client/cli_flags.h"
#include "client/client.h"

namespace hardneg::client {

int RunInfoCommand(const std::vector<std::string>& args) {
  ServerFlags server_flags;
  std::string format = "text";
  FlagSet flags("info", "--server HOST:PORT [--format text|json]",
                "Prints the served index: version name and sequence, size, "
                "dim, metric, index type, build state and checkpoint step.");
  AddServerFlags(flags, &server_flags);
  flags.String("format", &format, "text|json", "Output format.");
  if (std::optional<int> done = ParseServerCommand(flags, args, server_flags)) {
    return *done;
  }
  if (format != "text" && format != "json") {
    return flags.UsageError(
        absl::StrCat("--format=", format, ": expected text or json"));
  }

  absl::StatusOr<std::unique_ptr<Client>> client =
      ConnectToServer(server_flags);
  if (!client.ok()) {
    return RuntimeError("info", server_flags.server, client.status());
  }
  absl::StatusOr<IndexInfo> info = (*client)->GetIndexInfo();
  if (!info.ok()) {
    return RuntimeError("info",
                        absl::StrCat("GetIndexInfo on ", server_flags.server),
                        info.status());
  }
  if (format == "json") {
    std::cout << "{\"version\": {\"name\": " << JsonString(info->version.name)
              << ", \"sequence\": " << info->version.sequence
              << "}, \"size\": " << info->size << ", \"dim\": " << info->dim
              << ", \"metric\": " << JsonString(info->metric)
              << ", \"index_type\": " << JsonString(info->index_type)
              << ", \"build_state\": " << JsonString(info->build_state)
              << ", \"step\": " << info->step
              << ", \"has_labels\": " << (info->has_labels ? "true" : "false")
              << ", \"age_seconds\": " << info->age_seconds
              << ", \"building\": " << JsonString(info->building)
              << ", \"build_progress\": " << info->build_progress
              << ", \"last_rejected\": " << JsonString(info->last_rejected)
              << ", \"rejected_total\": " << info->rejected_total << "}\n";
  } else {
    std::cout << "version:      " << info->version.name << "\n"
              << "sequence:     " << info->version.sequence << "\n"
              << "size:         " << info->size << "\n"
              << "dim:          " << info->dim << "\n"
              << "metric:       " << info->metric << "\n"
              << "index_type:   " << info->index_type << "\n"
              << "build_state:  " << info->build_state << "\n"
              << "step:         " << info->step << "\n"
              << "has_labels:   " << (info->has_labels ? "true" : "false")
              << "\n"
              << "age:          "
              << absl::StrFormat("%.1f s", info->age_seconds) << "\n";
    if (!info->building.empty()) {
      std::cout << "building:     " << info->building
                << absl::StrFormat(" (%.0f%%)", 100 * info->build_progress)
                << "\n";
    }
    if (info->rejected_total > 0) {
      std::cout << "rejected:     " << info->rejected_total
                << ", last: " << info->last_rejected << "\n";
    }
  }
  return kExitOk;
}

}  // namespace hardneg::client

#include "client/info_output.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_json.h"

namespace hardneg::client {

nlohmann::ordered_json IndexInfoJson(const IndexInfo& info) {
  return {{"version",
           {{"name", info.version.name}, {"sequence", info.version.sequence}}},
          {"size", info.size},
          {"dim", info.dim},
          {"metric", info.metric},
          {"index_type", info.index_type},
          {"scan", info.scan},
          {"build_state", info.build_state},
          {"step", info.step},
          {"has_labels", info.has_labels},
          {"age_seconds", info.age_seconds},
          {"building", info.building},
          {"build_progress", info.build_progress},
          {"last_rejected", info.last_rejected},
          {"rejected_total", info.rejected_total}};
}

std::string IndexInfoJsonLine(const IndexInfo& info) {
  return absl::StrCat(JsonText(IndexInfoJson(info), JsonFloats::kSixDigits),
                      "\n");
}

std::string IndexInfoText(const IndexInfo& info) {
  std::string text = absl::StrCat(
      "version:      ", info.version.name, "\n",             //
      "sequence:     ", info.version.sequence, "\n",         //
      "size:         ", info.size, "\n",                     //
      "dim:          ", info.dim, "\n",                      //
      "metric:       ", info.metric, "\n",                   //
      "index_type:   ", info.index_type, "\n",               //
      "scan:         ", info.scan, "\n",                     //
      "build_state:  ", info.build_state, "\n",              //
      "step:         ", info.step, "\n",                     //
      "has_labels:   ", info.has_labels ? "true" : "false",  //
      "\n", absl::StrFormat("age:          %.1f s\n", info.age_seconds));
  if (!info.building.empty()) {
    absl::StrAppend(&text, "building:     ", info.building,
                    absl::StrFormat(" (%.0f%%)\n", 100 * info.build_progress));
  }
  if (info.rejected_total > 0) {
    absl::StrAppend(&text, "rejected:     ", info.rejected_total,
                    ", last: ", info.last_rejected, "\n");
  }
  return text;
}

}  // namespace hardneg::client

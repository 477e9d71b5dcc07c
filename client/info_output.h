// What `hardneg info` prints about the served index: a JSON object or
// aligned "key: value" lines.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_CLIENT_INFO_OUTPUT_H_
#define HARDNEG_CLIENT_INFO_OUTPUT_H_

#include <string>

#include "client/client.h"
#include "nlohmann/json.hpp"

namespace hardneg::client {

// {"version": {"name", "sequence"}, "size", "dim", "metric", "index_type",
// "scan",
//  "build_state", "step", "has_labels", "age_seconds", "building",
//  "build_progress", "last_rejected", "rejected_total"}, in that order.
nlohmann::ordered_json IndexInfoJson(const IndexInfo& info);

// IndexInfoJson as one line of text, newline included.
std::string IndexInfoJsonLine(const IndexInfo& info);

// "version:      <name>\n" and so on, one line a field; "building:" only
// while a build runs, "rejected:" only after a rejection.
std::string IndexInfoText(const IndexInfo& info);

}  // namespace hardneg::client

#endif  // HARDNEG_CLIENT_INFO_OUTPUT_H_

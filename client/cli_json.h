// The JSON text the `hardneg` CLI prints: nlohmann::ordered_json values
// written the way the CLI has always written them, on one line with ", "
// and ": " between items, keys in insertion order, control characters
// escaped and other bytes kept as they are, and non-finite numbers as null.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_CLIENT_CLI_JSON_H_
#define HARDNEG_CLIENT_CLI_JSON_H_

#include <string>

#include "nlohmann/json.hpp"

namespace hardneg::client {

// How AppendJson writes floating-point numbers.
enum class JsonFloats {
  // The shortest text that reads back as the same float (the value is a
  // float widened to double): mined scores and embeddings.
  kShortestFloat,
  // Six significant digits, as std::ostream writes a double (`%g`).
  kSixDigits,
};

// Appends `value` as JSON text to `*out`.
void AppendJson(const nlohmann::ordered_json& value, JsonFloats floats,
                std::string* out);

// `value` as JSON text.
std::string JsonText(const nlohmann::ordered_json& value, JsonFloats floats);

// `text` as a JSON string literal, quotes included: '"', '\\' and '\n' as
// two-character escapes, other control characters as \u00xx.
std::string JsonString(const std::string& text);

}  // namespace hardneg::client

#endif  // HARDNEG_CLIENT_CLI_JSON_H_

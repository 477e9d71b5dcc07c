#include "client/cli_json.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hardneg::client {
namespace {

void AppendFloat(double value, JsonFloats floats, std::string* out) {
  if (!std::isfinite(value)) {
    out->append("null");
    return;
  }
  if (floats == JsonFloats::kSixDigits) {
    absl::StrAppendFormat(out, "%g", value);
    return;
  }
  char buffer[32];
  const std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), static_cast<float>(value));
  out->append(buffer, result.ptr);
}

}  // namespace

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppend(&out, "\\u00",
                          absl::Hex(static_cast<unsigned>(c), absl::kZeroPad2));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

void AppendJson(const nlohmann::ordered_json& value, JsonFloats floats,
                std::string* out) {
  using Type = nlohmann::ordered_json::value_t;
  switch (value.type()) {
    case Type::object: {
      out->append("{");
      const char* separator = "";
      for (const auto& [key, item] : value.items()) {
        absl::StrAppend(out, separator, JsonString(key), ": ");
        AppendJson(item, floats, out);
        separator = ", ";
      }
      out->append("}");
      return;
    }
    case Type::array: {
      out->append("[");
      const char* separator = "";
      for (const nlohmann::ordered_json& item : value) {
        out->append(separator);
        AppendJson(item, floats, out);
        separator = ", ";
      }
      out->append("]");
      return;
    }
    case Type::string:
      out->append(JsonString(value.get_ref<const std::string&>()));
      return;
    case Type::boolean:
      out->append(value.get<bool>() ? "true" : "false");
      return;
    case Type::number_integer:
      absl::StrAppend(out, value.get<int64_t>());
      return;
    case Type::number_unsigned:
      absl::StrAppend(out, value.get<uint64_t>());
      return;
    case Type::number_float:
      AppendFloat(value.get<double>(), floats, out);
      return;
    default:  // null, and the binary and discarded types never built here
      out->append("null");
      return;
  }
}

std::string JsonText(const nlohmann::ordered_json& value, JsonFloats floats) {
  std::string out;
  AppendJson(value, floats, &out);
  return out;
}

}  // namespace hardneg::client

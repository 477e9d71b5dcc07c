#include "format/version_name.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace hardneg {

absl::Status CheckVersionName(absl::string_view name, absl::string_view field) {
  constexpr size_t kMaxLength = 128;
  auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " ", why,
        "; a version name is 1 to 128 characters of A-Z a-z 0-9 . _ -"));
  };
  if (name.empty()) return refuse("is empty");
  if (name.size() > kMaxLength) {
    return refuse(absl::StrCat("has ", name.size(), " characters"));
  }
  if (name == "." || name == "..") return refuse("is \".\" or \"..\"");
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-') {
      continue;
    }
    // Printable characters are shown; others by code, since the name may
    // hold control characters meant for a terminal or a log.
    return refuse(
        absl::StrCat("has character ",
                     c >= 0x21 && c < 0x7f
                         ? absl::StrCat("'", std::string(1, c), "'")
                         : absl::StrCat("0x", absl::Hex(c, absl::kZeroPad2)),
                     " at position ", i));
  }
  return absl::OkStatus();
}

}  // namespace hardneg

#include "server/flags_help.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "base/build_info.h"

namespace hardneg {
namespace {

constexpr size_t kWidth = 79;
constexpr absl::string_view kIndent = "      ";

// `text` wrapped at kWidth, each line indented by kIndent.
std::string Wrap(absl::string_view text) {
  std::string out;
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() &&
        kIndent.size() + line.size() + 1 + word.size() > kWidth) {
      absl::StrAppend(&out, kIndent, line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(&out, kIndent, line, "\n");
  return out;
}

std::string ShownDefault(const absl::CommandLineFlag& flag) {
  std::string value = flag.DefaultValue();
  if (flag.IsOfType<std::string>()) return absl::StrCat("\"", value, "\"");
  if (value.empty() && (flag.IsOfType<std::optional<int>>() ||
                        flag.IsOfType<std::optional<int64_t>>() ||
                        flag.IsOfType<std::optional<std::string>>())) {
    return "unset";
  }
  return value;
}

bool IsHelp(absl::string_view arg) {
  return arg == "--help" || arg == "-help" || arg == "-h" ||
         arg == "--helpfull" || arg == "-helpfull";
}

bool IsVersion(absl::string_view arg) {
  return arg == "--version" || arg == "-version";
}

}  // namespace

std::string FlagsHelp(absl::string_view usage,
                      const std::vector<std::string>& flag_files) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    const std::string file = flag->Filename();
    if (std::any_of(
            flag_files.begin(), flag_files.end(),
            [&](const std::string& f) { return absl::EndsWith(file, f); })) {
      flags.push_back(flag);
    }
  }
  std::sort(flags.begin(), flags.end(),
            [](const absl::CommandLineFlag* a, const absl::CommandLineFlag* b) {
              return a->Name() < b->Name();
            });
  std::string out = absl::StrCat(
      usage,
      "\n\nFlags (--name=value, or --name value; --nobool for a false "
      "bool):\n");
  for (const absl::CommandLineFlag* flag : flags) {
    absl::StrAppend(&out, "  --", flag->Name(),
                    " (default: ", ShownDefault(*flag), ")\n",
                    Wrap(flag->Help()));
  }
  absl::StrAppend(&out, "  --help\n", Wrap("Print this help and exit."),
                  "  --version\n",
                  Wrap("Print the version, git revision and build type, "
                       "and exit."));
  return out;
}

void HandleHelpAndVersion(int argc, char** argv, absl::string_view program,
                          absl::string_view usage,
                          const std::vector<std::string>& flag_files) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (IsHelp(arg)) {
      std::fputs(FlagsHelp(usage, flag_files).c_str(), stdout);
      std::exit(0);
    }
    if (IsVersion(arg)) {
      std::printf("%s\n", VersionLine(program).c_str());
      std::exit(0);
    }
  }
}

}  // namespace hardneg

#include "client/cli_flags.h"

#include <cmath>
#include <iostream>
#include <type_traits>
#include <utility>

#include "absl/flags/marshalling.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace hardneg::client {
namespace {

absl::Status BadValue(const std::string& name, const std::string& value,
                      std::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat(
      "--", name, "=", value, ": expected ", std::string(expected)));
}

// Whether a value that absl::ParseFlag accepted is one the CLI takes.
template <typename T>
bool Acceptable(const T& /*value*/) {
  return true;
}
template <>
bool Acceptable(const float& value) {
  return std::isfinite(value);
}

// `text` filled to 80 columns, each line starting with `indent`; a '\n' in
// `text` is a hard line break. Ends with a newline.
std::string Wrap(const std::string& text, const std::string& indent) {
  constexpr size_t kWidth = 80;
  std::string out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::string current = indent;
    bool empty = true;
    for (absl::string_view word :
         absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      if (!empty && current.size() + 1 + word.size() > kWidth) {
        absl::StrAppend(&out, current, "\n");
        current = indent;
        empty = true;
      }
      if (!empty) current += ' ';
      current.append(word.data(), word.size());
      empty = false;
    }
    absl::StrAppend(&out, empty ? "" : current, "\n");
  }
  return out;
}

}  // namespace

FlagSet::FlagSet(std::string command, std::string synopsis,
                 std::string description)
    : command_(std::move(command)),
      synopsis_(std::move(synopsis)),
      description_(std::move(description)) {}

void FlagSet::Add(Flag flag) { flags_.push_back(std::move(flag)); }

FlagSet::Flag* FlagSet::Find(std::string_view name) {
  for (Flag& flag : flags_) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

bool FlagSet::IsSet(std::string_view name) const {
  for (const Flag& flag : flags_) {
    if (flag.name == name) return flag.set;
  }
  return false;
}

template <typename T>
void FlagSet::AddParsed(std::string name, std::string default_text,
                        std::string placeholder, std::string help,
                        std::string expected,
                        std::function<void(const T&)> store) {
  Flag flag;
  flag.default_text = std::move(default_text);
  flag.placeholder = std::move(placeholder);
  flag.help = std::move(help);
  flag.is_bool = std::is_same_v<T, bool>;
  flag.parse = [name, expected = std::move(expected),
                store = std::move(store)](const std::string& text) {
    T parsed{};
    std::string error;
    if (!absl::ParseFlag(text, &parsed, &error) || !Acceptable(parsed)) {
      return BadValue(name, text, expected);
    }
    store(parsed);
    return absl::OkStatus();
  };
  flag.name = std::move(name);
  Add(std::move(flag));
}

template <typename T>
void FlagSet::AddParsed(std::string name, T* value, std::string placeholder,
                        std::string help, std::string expected) {
  AddParsed<T>(std::move(name), absl::UnparseFlag(*value),
               std::move(placeholder), std::move(help), std::move(expected),
               [value](const T& parsed) { *value = parsed; });
}

void FlagSet::String(std::string name, std::string* value,
                     std::string placeholder, std::string help) {
  AddParsed(std::move(name), value, std::move(placeholder), std::move(help),
            "a string");
}

void FlagSet::Uint32(std::string name, uint32_t* value, std::string help) {
  AddParsed(std::move(name), value, "N", std::move(help),
            "an integer from 0 to 4294967295");
}

void FlagSet::Uint64(std::string name, uint64_t* value, std::string help) {
  AddParsed(std::move(name), value, "N", std::move(help),
            "a non-negative integer");
}

void FlagSet::Float(std::string name, float* value, std::string help) {
  AddParsed(std::move(name), value, "X", std::move(help), "a finite number");
}

void FlagSet::OptionalFloat(std::string name, std::optional<float>* value,
                            std::string help) {
  // Not absl's std::optional flag syntax, where an empty value means unset:
  // here every value must be a finite number.
  AddParsed<float>(std::move(name),
                   *value ? absl::UnparseFlag(**value) : "unset", "X",
                   std::move(help), "a finite number",
                   [value](const float& parsed) { *value = parsed; });
}

void FlagSet::Bool(std::string name, bool* value, std::string help) {
  AddParsed(std::move(name), value, "", std::move(help), "true or false");
}

void FlagSet::Positionals(std::vector<std::string>* values) {
  positionals_ = values;
}

absl::Status FlagSet::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h" || arg == "-help" || arg == "help") {
      help_requested_ = true;
      return absl::OkStatus();
    }
    if (positionals_ != nullptr && (arg.empty() || arg[0] != '-')) {
      positionals_->push_back(arg);
      continue;
    }
    if (arg.size() < 2 || arg[0] != '-' || arg == "--") {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected argument '", arg, "' (flags are --name=value)"));
    }
    std::string_view body(arg);
    body.remove_prefix(body.substr(0, 2) == "--" ? 2 : 1);
    const size_t equals = body.find('=');
    const std::string name(body.substr(0, equals));
    std::optional<std::string> value;
    if (equals != std::string_view::npos) {
      value = std::string(body.substr(equals + 1));
    }

    Flag* flag = Find(name);
    if (flag == nullptr && !value && name.size() > 2 &&
        name.compare(0, 2, "no") == 0) {
      Flag* negated = Find(name.substr(2));
      if (negated != nullptr && negated->is_bool) {
        negated->set = true;
        if (absl::Status status = negated->parse("false"); !status.ok()) {
          return status;
        }
        continue;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!value) {
      if (flag->is_bool) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value (--", name, "=",
                         flag->placeholder, ")"));
      }
    }
    flag->set = true;
    if (absl::Status status = flag->parse(*value); !status.ok()) return status;
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string usage =
      absl::StrCat("usage: hardneg ", command_, " ", synopsis_, "\n\n",
                   Wrap(description_, ""), "\nflags:\n");
  for (const Flag& flag : flags_) {
    absl::StrAppend(&usage, "  --", flag.name);
    if (!flag.placeholder.empty()) {
      absl::StrAppend(&usage, " ", flag.placeholder);
    }
    if (!flag.default_text.empty()) {
      absl::StrAppend(&usage, "  (default: ", flag.default_text, ")");
    }
    absl::StrAppend(&usage, "\n", Wrap(flag.help, "      "));
  }
  absl::StrAppend(&usage, "  --help\n      Print this text.\n");
  return usage;
}

int FlagSet::UsageError(const absl::Status& status) const {
  return UsageError(absl::StrCat(status.message()));
}

int FlagSet::UsageError(const std::string& message) const {
  std::cerr << "hardneg " << command_ << ": " << message << "\n"
            << "Run 'hardneg " << command_ << " --help' for usage.\n";
  return kExitUsageError;
}

}  // namespace hardneg::client

// FlagSet: the flags of one `hardneg` subcommand, parsed from the arguments
// after the subcommand's name. Accepted forms: `--name=value`,
// `--name value`, and for booleans `--name`, `--name=true|false` and
// `--noname` (a single leading '-' works too). `--help` / `-h` asks for the
// usage text. Positional arguments are an error unless Positionals() was
// called. Values are read with Abseil's flag syntax (absl::ParseFlag), so
// they read as they would for an ABSL_FLAG; floats must also be finite.
//
// Each subcommand has its own FlagSet rather than process-wide ABSL_FLAGs:
// the subcommands share flag names with other defaults and meanings
// (--format, --metric, --name), and a usage error must exit with
// kExitUsageError after this CLI's own message.
//
// Not thread-safe; a FlagSet lives in one subcommand's main function.
#ifndef HARDNEG_CLIENT_CLI_FLAGS_H_
#define HARDNEG_CLIENT_CLI_FLAGS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace hardneg::client {

// Process exit codes of the CLI.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRuntimeError = 1;
inline constexpr int kExitUsageError = 2;

class FlagSet {
 public:
  // `command` is e.g. "mine"; `synopsis` follows "usage: hardneg <command> ";
  // `description` is a paragraph under it.
  FlagSet(std::string command, std::string synopsis, std::string description);

  FlagSet(const FlagSet&) = delete;
  FlagSet& operator=(const FlagSet&) = delete;

  // Registers a flag writing into `*value`; its current value is the
  // default. `placeholder` names the value in the usage text (e.g. "N").
  void String(std::string name, std::string* value, std::string placeholder,
              std::string help);
  void Uint32(std::string name, uint32_t* value, std::string help);
  void Uint64(std::string name, uint64_t* value, std::string help);
  void Float(std::string name, float* value, std::string help);
  void OptionalFloat(std::string name, std::optional<float>* value,
                     std::string help);
  void Bool(std::string name, bool* value, std::string help);
  // Collects positional arguments (anything not a flag or a flag's value)
  // into `*values`, in order, instead of rejecting them.
  void Positionals(std::vector<std::string>* values);

  // Parses `args`, stopping early at --help. INVALID_ARGUMENT naming the
  // flag for an unknown flag, a missing value, or a value of the wrong type
  // (a float must be finite; an integer must fit). On an error, the flags
  // parsed before it keep their new values.
  absl::Status Parse(const std::vector<std::string>& args);

  // True once Parse has seen --help or -h.
  bool help_requested() const { return help_requested_; }
  // True when `name` was given on the command line.
  bool IsSet(std::string_view name) const;

  // The full usage text, ending with a newline.
  std::string Usage() const;

  // Writes "hardneg <command>: <message>" and a pointer to --help to stderr;
  // returns kExitUsageError.
  int UsageError(const std::string& message) const;
  // The same with the status's message (e.g. from Parse).
  int UsageError(const absl::Status& status) const;

 private:
  struct Flag {
    std::string name;
    std::string placeholder;  // empty for booleans
    std::string help;
    std::string default_text;
    bool is_bool = false;
    bool set = false;
    std::function<absl::Status(const std::string&)> parse;
  };

  // Registers a flag whose value is read with absl::ParseFlag<T> and handed
  // to `store`; `expected` says what a bad value should have been.
  template <typename T>
  void AddParsed(std::string name, std::string default_text,
                 std::string placeholder, std::string help,
                 std::string expected, std::function<void(const T&)> store);
  // The same writing into `*value`, whose absl::UnparseFlag text is the
  // default shown.
  template <typename T>
  void AddParsed(std::string name, T* value, std::string placeholder,
                 std::string help, std::string expected);
  void Add(Flag flag);
  Flag* Find(std::string_view name);

  std::string command_;
  std::string synopsis_;
  std::string description_;
  std::vector<Flag> flags_;
  std::vector<std::string>* positionals_ = nullptr;
  bool help_requested_ = false;
};

}  // namespace hardneg::client

#endif  // HARDNEG_CLIENT_CLI_FLAGS_H_

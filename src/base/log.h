// The project's one logging facility: one structured line per event on
// stderr, `ts=<RFC3339> level=<level> event=<event> key=value ...`.
//
// Thread-safe: lines from concurrent callers never interleave.
#ifndef HARDNEG_SRC_BASE_LOG_H_
#define HARDNEG_SRC_BASE_LOG_H_

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace hardneg {

enum class LogLevel { kInfo, kWarning, kError };

using LogField = std::pair<std::string_view, std::string>;

// Writes one line. Values containing spaces, quotes, '=', backslashes or
// control characters are quoted, with control characters escaped (\n, \t,
// \r, \xHH), so a value can never start a line of its own; values over
// 2 KiB are cut, saying how much was left out.
void Log(LogLevel level, std::string_view event,
         std::initializer_list<LogField> fields = {});

// The line Log writes, newline included (for tests).
std::string LogLine(LogLevel level, std::string_view event,
                    std::initializer_list<LogField> fields = {});

}  // namespace hardneg

#endif  // HARDNEG_SRC_BASE_LOG_H_

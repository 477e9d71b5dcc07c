#include "base/log.h"

#include <cstdio>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace hardneg {
namespace {

std::mutex& LogMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

// Values often come from outside (version names, paths, error messages
// that quote a request): control characters are escaped, so that no value
// can end the line, forge another, or move a terminal's cursor, and long
// values are cut.
constexpr size_t kMaxValueBytes = 2048;

bool IsControl(char c) {
  const unsigned char u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

void AppendValue(std::string& line, std::string_view value) {
  size_t cut = 0;
  if (value.size() > kMaxValueBytes) {
    cut = value.size() - kMaxValueBytes;
    value = value.substr(0, kMaxValueBytes);
  }
  bool quote = value.empty() || cut > 0;
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || IsControl(c)) {
      quote = true;
      break;
    }
  }
  if (!quote) {
    line.append(value);
    return;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  line.push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') {
      line.push_back('\\');
      line.push_back(c);
    } else if (c == '\n') {
      line.append("\\n");
    } else if (c == '\t') {
      line.append("\\t");
    } else if (c == '\r') {
      line.append("\\r");
    } else if (IsControl(c)) {
      const unsigned char u = static_cast<unsigned char>(c);
      line.append("\\x");
      line.push_back(kHex[u >> 4]);
      line.push_back(kHex[u & 0xf]);
    } else {
      line.push_back(c);
    }
  }
  if (cut > 0) {
    line.append("...(").append(std::to_string(cut)).append(" more bytes)");
  }
  line.push_back('"');
}

}  // namespace

std::string LogLine(LogLevel level, std::string_view event,
                    std::initializer_list<LogField> fields) {
  std::string line = "ts=";
  line.append(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                               absl::UTCTimeZone()));
  line.append(" level=").append(LevelName(level)).append(" event=");
  AppendValue(line, event);
  for (const auto& [key, value] : fields) {
    line.push_back(' ');
    line.append(key).push_back('=');
    AppendValue(line, value);
  }
  line.push_back('\n');
  return line;
}

void Log(LogLevel level, std::string_view event,
         std::initializer_list<LogField> fields) {
  const std::string line = LogLine(level, event, fields);
  std::lock_guard<std::mutex> lock(LogMutex());
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace hardneg

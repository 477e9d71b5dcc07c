#include "versions/checkpoint_rejections.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/log.h"
#include "format/file_util.h"

namespace hardneg {
namespace {

constexpr char kRejectedFile[] = "rejected-checkpoints.tsv";
constexpr char kLoadingFile[] = "loading-checkpoint.tsv";
constexpr size_t kMaxKept = 256;
constexpr size_t kMaxStateBytes = size_t{1} << 20;
// A load interrupted this many times is not tried again.
constexpr int kMaxInterruptedLoads = 2;

// Fields are tab-separated and records newline-separated: neither may
// appear inside a field.
std::string Field(const std::string& text) {
  std::string out = text.substr(0, 1024);
  std::replace_if(
      out.begin(), out.end(),
      [](char c) { return c == '\t' || c == '\n' || c == '\r'; }, ' ');
  return out;
}

}  // namespace

CheckpointRejections::CheckpointRejections(std::string state_dir)
    : state_dir_(std::move(state_dir)) {}

std::vector<CheckpointRejections::Rejection> CheckpointRejections::Restore() {
  std::vector<Rejection> added;
  if (state_dir_.empty()) return added;
  std::error_code ignored;  // a failed write says why later
  std::filesystem::create_directories(state_dir_, ignored);
  absl::StatusOr<std::string> rejected =
      ReadSmallTextFile(JoinPath(state_dir_, kRejectedFile), kMaxStateBytes);
  if (rejected.ok()) {
    for (absl::string_view line :
         absl::StrSplit(*rejected, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, '\t');
      if (f.size() != 3) continue;
      rejected_.push_back({f[0], f[1], f[2]});
    }
  }
  absl::StatusOr<std::string> loading =
      ReadSmallTextFile(JoinPath(state_dir_, kLoadingFile), kMaxStateBytes);
  if (!loading.ok()) return added;
  std::vector<std::string> f =
      absl::StrSplit(absl::StripSuffix(*loading, "\n"), '\t');
  int tries = 0;
  if (f.size() != 3 || !absl::SimpleAtoi(f[2], &tries)) return added;
  if (tries >= kMaxInterruptedLoads) {
    Rejection rejection{
        f[0], f[1],
        absl::StrCat("loading it was interrupted ", tries,
                     " times (the server was killed or ran out of memory "
                     "while reading or building it); rewrite its "
                     "manifest.json to try again")};
    Add(rejection.dir, rejection.stamp, rejection.reason);
    added.push_back(std::move(rejection));
    EndLoad();
  } else {
    interrupted_dir_ = f[0];
    interrupted_stamp_ = f[1];
    interrupted_tries_ = tries;
  }
  return added;
}

bool CheckpointRejections::IsRejected(const std::string& dir,
                                      const std::string& stamp) const {
  return std::any_of(rejected_.begin(), rejected_.end(),
                     [&](const Rejection& r) {
                       return r.dir == Field(dir) && r.stamp == stamp;
                     });
}

void CheckpointRejections::Add(const std::string& dir, const std::string& stamp,
                               const std::string& reason) {
  rejected_.push_back({Field(dir), Field(stamp), Field(reason)});
  if (rejected_.size() > kMaxKept) {
    rejected_.erase(rejected_.begin(),
                    rejected_.begin() + (rejected_.size() - kMaxKept));
  }
  Save();
}

void CheckpointRejections::BeginLoad(const std::string& dir,
                                     const std::string& stamp) {
  if (state_dir_.empty()) return;
  const int tries =
      (Field(dir) == interrupted_dir_ && stamp == interrupted_stamp_)
          ? interrupted_tries_ + 1
          : 1;
  const absl::Status written = WriteFileAtomically(
      JoinPath(state_dir_, kLoadingFile),
      absl::StrCat(Field(dir), "\t", Field(stamp), "\t", tries, "\n"));
  if (!written.ok()) {
    Log(LogLevel::kWarning, "state_write_failed",
        {{"reason", std::string(written.message())}});
  }
}

void CheckpointRejections::EndLoad() {
  interrupted_dir_.clear();
  interrupted_stamp_.clear();
  interrupted_tries_ = 0;
  if (state_dir_.empty()) return;
  unlink(JoinPath(state_dir_, kLoadingFile).c_str());
}

void CheckpointRejections::Save() const {
  if (state_dir_.empty()) return;
  std::string text;
  for (const Rejection& r : rejected_) {
    absl::StrAppend(&text, r.dir, "\t", r.stamp, "\t", r.reason, "\n");
  }
  const absl::Status written =
      WriteFileAtomically(JoinPath(state_dir_, kRejectedFile), text);
  if (!written.ok()) {
    Log(LogLevel::kWarning, "state_write_failed",
        {{"reason", std::string(written.message())}});
  }
}

}  // namespace hardneg

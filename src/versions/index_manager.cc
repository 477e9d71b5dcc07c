#include "versions/index_manager.h"

#include <omp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "format/checkpoint.h"
#include "format/file_util.h"
#include "index/vector_index.h"
#include "versions/snapshot.h"

namespace hardneg {
namespace {

// Written by an operator under the checkpoint root: the name of a
// checkpoint directory to serve whatever its step (README, "Forcing a
// version").
constexpr char kPromoteFile[] = "PROMOTE";

// Builds run at a lower CPU priority than serving: build_threads bounds
// their threads, this makes searches win when the cores are contended.
void LowerThreadPriority() {
  setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
}

std::string Seconds(absl::Duration d) {
  return absl::StrCat(absl::ToDoubleSeconds(d));
}

}  // namespace

IndexManager::IndexManager(IndexManagerOptions options)
    : options_(std::move(options)), rejections_(options_.data_dir) {
  status_.state = "empty";
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

IndexManager::~IndexManager() {
  StopWatching();
  // A build in progress (Install from another thread) finishes first.
  absl::MutexLock build_lock(&build_mu_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void IndexManager::StopWatching() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }
  if (watcher_.joinable()) watcher_.join();
}

std::shared_ptr<const IndexVersion> IndexManager::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

BuildStatus IndexManager::build_status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

void IndexManager::SetEvents(IndexEvents events) {
  absl::MutexLock lock(&mu_);
  events_ = std::move(events);
}

size_t IndexManager::RemainingBytes() const {
  if (options_.max_index_bytes == 0) return std::numeric_limits<size_t>::max();
  absl::MutexLock lock(&mu_);
  const size_t served = current_ ? current_->MemoryBytes() : 0;
  return options_.max_index_bytes > served ? options_.max_index_bytes - served
                                           : 0;
}

absl::Status IndexManager::CheckBudget(size_t rows, size_t dim,
                                       bool has_labels) const {
  return CheckBytes(CandidateStore::MemoryBytesFor(rows, dim, has_labels) +
                    IndexBytesBound(rows, dim, options_.build));
}

absl::Status IndexManager::CheckBytes(size_t needed) const {
  if (options_.max_index_bytes == 0) return absl::OkStatus();
  std::shared_ptr<const IndexVersion> served = Current();
  const size_t served_bytes = served ? served->MemoryBytes() : 0;
  if (served_bytes + needed <= options_.max_index_bytes) {
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "the new version needs about ", needed, " bytes and the served one ",
      "holds ", served_bytes, ": over the memory budget (max_index_bytes) of ",
      options_.max_index_bytes));
}

void IndexManager::Reject(const std::string& source,
                          const absl::Status& status) {
  Log(LogLevel::kError, "version_rejected",
      {{"source", source}, {"reason", std::string(status.message())}});
  std::function<void(const std::string&, const absl::Status&)> rejected;
  {
    absl::MutexLock lock(&mu_);
    // Any client may read last_rejected: paths are shown relative to the
    // checkpoint root and the data dir, not as this host's absolute paths.
    std::string text = absl::StrCat(source, ": ", status.message());
    for (const std::string& dir :
         {options_.checkpoints_dir, options_.data_dir}) {
      if (!dir.empty()) {
        text = absl::StrReplaceAll(
            text, {{dir.back() == '/' ? dir : absl::StrCat(dir, "/"), ""}});
      }
    }
    status_.last_rejected = std::move(text);
    ++status_.rejected_total;
    rejected = events_.rejected;
  }
  if (rejected) rejected(source, status);
}

absl::Status IndexManager::RestoreSnapshot() {
  if (options_.data_dir.empty()) {
    return absl::NotFoundError("no --data_dir: snapshots are off");
  }
  absl::MutexLock build_lock(&build_mu_);
  HARDNEG_ASSIGN_OR_RETURN(
      std::shared_ptr<const IndexVersion> version,
      ReadNewestSnapshot({options_.data_dir, options_.keep_snapshots,
                          options_.build.half_scan}));
  const VersionInfo& info = version->info();
  Log(LogLevel::kInfo, "snapshot_restored",
      {{"name", info.name},
       {"step", absl::StrCat(info.step)},
       {"sequence", absl::StrCat(info.sequence)},
       {"candidates", absl::StrCat(version->size())},
       {"data_dir", options_.data_dir}});
  std::function<void(const IndexVersion&, absl::Duration)> swapped;
  {
    absl::MutexLock lock(&mu_);
    current_ = version;
    last_sequence_ = std::max(last_sequence_, info.sequence);
    // A newer snapshot that failed to load still used its sequence.
    std::error_code ec;
    for (const auto& e :
         std::filesystem::directory_iterator(options_.data_dir, ec)) {
      const std::string dir_name = e.path().filename().string();
      uint64_t sequence = 0;
      if (dir_name.rfind("snapshot-", 0) == 0 &&
          absl::SimpleAtoi(dir_name.substr(9), &sequence)) {
        last_sequence_ = std::max(last_sequence_, sequence);
      }
    }
    status_.state = "serving";
    swapped = events_.swapped;
  }
  if (swapped) swapped(*version, absl::ZeroDuration());
  return absl::OkStatus();
}

absl::StatusOr<VersionInfo> IndexManager::BuildAndSwap(
    const std::string& source, VersionInfo info, CandidateStore store,
    absl::Time start) {
  std::shared_ptr<const IndexVersion> served = Current();
  if (served != nullptr && !options_.allow_schema_change &&
      (served->dim() != store.dim() || served->metric() != info.metric)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dim ", store.dim(), " and metric ", MetricName(info.metric),
        " differ from the served version's (dim ", served->dim(), ", ",
        MetricName(served->metric()),
        "); every trainer's queries would fail. Restart the server with "
        "--allow_schema_change to accept it"));
  }
  HARDNEG_RETURN_IF_ERROR(CheckBytes(
      store.MemoryBytes() + IndexBytesEstimate(store, options_.build)));
  {
    absl::MutexLock lock(&mu_);
    status_.state = current_ ? "serving" : "building";
    status_.building = info.name;
    status_.progress = 0;
    info.sequence = last_sequence_ + 1;
  }
  // Bounded build threads: OpenMP's count is per calling thread, which
  // gets its own count back afterwards.
  const int caller_threads = omp_get_max_threads();
  omp_set_num_threads(std::max(1, options_.build_threads));
  info.created = absl::Now();
  absl::StatusOr<std::shared_ptr<const IndexVersion>> built =
      IndexVersion::Build(info, std::move(store), options_.build);
  omp_set_num_threads(caller_threads);
  {
    absl::MutexLock lock(&mu_);
    status_.building.clear();
    status_.progress = built.ok() ? 1 : 0;
    if (!built.ok() && current_ == nullptr) status_.state = "empty";
  }
  if (!built.ok()) return built.status();
  const std::shared_ptr<const IndexVersion>& version = *built;
  const absl::Duration build_time = absl::Now() - start;
  // Snapshot before the swap: a version that served must survive a kill,
  // or a restart would serve an older sequence than clients have seen.
  if (!options_.data_dir.empty()) {
    const absl::Time snap_start = absl::Now();
    absl::Status written =
        WriteSnapshot({options_.data_dir, options_.keep_snapshots}, *version);
    if (written.ok()) {
      Log(LogLevel::kInfo, "snapshot_written",
          {{"sequence", absl::StrCat(info.sequence)},
           {"seconds", Seconds(absl::Now() - snap_start)}});
    } else {
      // Served anyway: only a restart would fall back to the previous
      // snapshot (and its sequence).
      Log(LogLevel::kError, "snapshot_failed",
          {{"sequence", absl::StrCat(info.sequence)},
           {"reason", std::string(written.message())}});
    }
  }
  std::function<void(const IndexVersion&, absl::Duration)> swapped;
  {
    absl::MutexLock lock(&mu_);
    current_ = version;
    last_sequence_ = info.sequence;
    status_.state = "serving";
    swapped = events_.swapped;
  }
  Log(LogLevel::kInfo, "version_swap",
      {{"source", source},
       {"name", info.name},
       {"step", absl::StrCat(info.step)},
       {"sequence", absl::StrCat(info.sequence)},
       {"candidates", absl::StrCat(version->size())},
       {"dim", absl::StrCat(version->dim())},
       {"metric", MetricName(info.metric)},
       {"index", version->index().type()},
       {"build_seconds", Seconds(build_time)}});
  if (swapped) swapped(*version, build_time);
  return info;
}

absl::Status IndexManager::LoadNewest() {
  if (options_.checkpoints_dir.empty()) return absl::OkStatus();
  absl::MutexLock build_lock(&build_mu_);
  if (!rejections_restored_) {
    rejections_restored_ = true;
    for (const CheckpointRejections::Rejection& r : rejections_.Restore()) {
      Reject(r.dir, absl::ResourceExhaustedError(r.reason));
    }
  }
  std::vector<RejectedManifest> unparsable;
  HARDNEG_ASSIGN_OR_RETURN(
      std::vector<CheckpointEntry> entries,
      ListCheckpoints(options_.checkpoints_dir, &unparsable));
  absl::Status last_error = absl::OkStatus();
  for (const RejectedManifest& bad : unparsable) {
    const std::string stamp = ManifestStamp(bad.dir);
    if (rejections_.IsRejected(bad.dir, stamp)) continue;
    Reject(bad.dir, bad.status);
    rejections_.Add(bad.dir, stamp, std::string(bad.status.message()));
    last_error = bad.status;
  }
  std::optional<absl::Status> promoted = Promote(entries);
  if (promoted.has_value()) return *promoted;
  std::shared_ptr<const IndexVersion> served = Current();
  for (const CheckpointEntry& entry : entries) {
    if (served != nullptr && entry.step <= served->info().step) break;
    const std::string stamp = ManifestStamp(entry.dir);
    if (rejections_.IsRejected(entry.dir, stamp)) continue;
    const absl::Status loaded = LoadCheckpoint(entry, stamp);
    if (loaded.ok()) return loaded;
    last_error = loaded;
  }
  return last_error;
}

std::optional<absl::Status> IndexManager::Promote(
    const std::vector<CheckpointEntry>& entries) {
  const std::string path = JoinPath(options_.checkpoints_dir, kPromoteFile);
  const std::string stamp = FileStamp(path);
  if (stamp.empty() || stamp == promote_stamp_) return std::nullopt;
  promote_stamp_ = stamp;
  absl::StatusOr<std::string> text = ReadSmallTextFile(path, 4096);
  if (!text.ok()) {
    Reject(kPromoteFile, text.status());
    return text.status();
  }
  const std::string wanted(absl::StripAsciiWhitespace(*text));
  for (const CheckpointEntry& entry : entries) {
    if (std::filesystem::path(entry.dir).filename() != wanted) continue;
    Log(LogLevel::kInfo, "version_promote",
        {{"checkpoint", entry.dir}, {"step", absl::StrCat(entry.step)}});
    // An operator's word: served whatever its step, and even if it was
    // rejected before.
    return LoadCheckpoint(entry, ManifestStamp(entry.dir));
  }
  const absl::Status missing = absl::NotFoundError(
      absl::StrCat("names \"", wanted,
                   "\", which is no complete checkpoint directory "
                   "under the checkpoint root"));
  Reject(kPromoteFile, missing);
  return missing;
}

absl::Status IndexManager::LoadCheckpoint(const CheckpointEntry& entry,
                                          const std::string& stamp) {
  const absl::Time start = absl::Now();
  rejections_.BeginLoad(entry.dir, stamp);
  absl::StatusOr<VersionInfo> swapped = [&]() -> absl::StatusOr<VersionInfo> {
    HARDNEG_ASSIGN_OR_RETURN(
        Checkpoint checkpoint,
        ReadCheckpoint(entry.dir, [&](const CheckpointShape& shape) {
          return CheckBudget(shape.rows, shape.dim, shape.has_labels);
        }));
    const CheckpointManifest& manifest = checkpoint.manifest;
    VersionInfo info;
    info.name = manifest.name;
    info.step = manifest.step;
    info.metric = manifest.metric.value_or(
        options_.metric.value_or(Metric::kInnerProduct));
    if (options_.metric.has_value() && info.metric != *options_.metric) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the manifest's metric is ", MetricName(info.metric),
          " but the server runs with --metric ", MetricName(*options_.metric)));
    }
    return BuildAndSwap(entry.dir, std::move(info), std::move(checkpoint.store),
                        start);
  }();
  rejections_.EndLoad();
  if (swapped.ok()) return absl::OkStatus();
  Reject(entry.dir, swapped.status());
  rejections_.Add(entry.dir, stamp, std::string(swapped.status().message()));
  return swapped.status();
}

absl::StatusOr<VersionInfo> IndexManager::Install(
    const std::string& name, uint64_t step, Metric metric, CandidateStore store,
    std::optional<uint64_t> expected_sequence) {
  absl::MutexLock build_lock(&build_mu_);
  if (expected_sequence.has_value()) {
    std::shared_ptr<const IndexVersion> served = Current();
    const uint64_t live = served ? served->info().sequence : 0;
    if (live != *expected_sequence) {
      absl::Status stale = absl::FailedPreconditionError(absl::StrCat(
          "the publish was built on sequence ", *expected_sequence,
          " but sequence ", live,
          " went live meanwhile; publish again against the new base"));
      Reject(absl::StrCat("publish ", name), stale);
      return stale;
    }
  }
  VersionInfo info;
  info.name = name;
  info.step = step;
  info.metric = metric;
  LowerThreadPriority();  // Install runs on the publisher's own thread
  absl::StatusOr<VersionInfo> swapped =
      BuildAndSwap(absl::StrCat("publish ", name), std::move(info),
                   std::move(store), absl::Now());
  if (!swapped.ok()) Reject(absl::StrCat("publish ", name), swapped.status());
  return swapped;
}

void IndexManager::StartWatching(absl::Duration poll_interval) {
  watcher_ = std::thread([this, poll_interval] { WatchLoop(poll_interval); });
}

void IndexManager::WatchLoop(absl::Duration poll_interval) {
  namespace fs = std::filesystem;
  const std::string& root = options_.checkpoints_dir;
  if (root.empty()) return;
  LowerThreadPriority();
  // inotify wakes the loop as soon as a manifest is written or a directory
  // is renamed in; the poll timeout is the fallback (and covers
  // filesystems without inotify, such as some network volumes).
  const int ifd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  int root_wd = -1;
  constexpr uint32_t kDirEvents =
      IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF;
  auto watch_subdirs = [&] {
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
      if (e.is_directory(ec)) {
        ::inotify_add_watch(ifd, e.path().c_str(), kDirEvents);
      }
    }
  };
  const int timeout_ms = static_cast<int>(
      std::max<int64_t>(1, absl::ToInt64Milliseconds(poll_interval)));
  std::vector<char> buffer(64 * 1024);
  while (true) {
    // Whatever changed before a watch was in place sent no event: scan
    // at once after (re)establishing the watches.
    bool scan_now = false;
    if (ifd >= 0 && root_wd < 0) {
      root_wd = ::inotify_add_watch(ifd, root.c_str(), kDirEvents);
      if (root_wd >= 0) {
        watch_subdirs();
        scan_now = true;
      }
    }
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {ifd, POLLIN, 0}};
    ::poll(fds, ifd >= 0 ? 2 : 1, scan_now ? 0 : timeout_ms);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    if (ifd >= 0) {
      bool new_dir = false;
      ssize_t n;
      while ((n = ::read(ifd, buffer.data(), buffer.size())) > 0) {
        for (ssize_t off = 0; off < n;) {
          const auto* event =
              reinterpret_cast<const inotify_event*>(buffer.data() + off);
          if (event->wd == root_wd && (event->mask & IN_ISDIR)) new_dir = true;
          if (event->mask & (IN_DELETE_SELF | IN_IGNORED)) {
            if (event->wd == root_wd) root_wd = -1;
          }
          off += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
        }
      }
      if (new_dir) watch_subdirs();
    }
    // Errors are logged and counted by LoadNewest; the served version keeps
    // serving.
    LoadNewest().IgnoreError();
  }
  if (ifd >= 0) ::close(ifd);
}

}  // namespace hardneg

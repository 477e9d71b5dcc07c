#include "versions/index_manager.h"

#include <omp.h>
#include <sys/resource.h>
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

// A checkpoint read logs a `loading` line at most this often (besides its
// first and last).
constexpr absl::Duration kLoadingLogInterval = absl::Milliseconds(250);

void LogLoading(const CheckpointEntry& entry,
                const CheckpointReadProgress& progress) {
  // Whole percents, so that 100 means every byte is read.
  const size_t percent =
      progress.total_bytes == 0
          ? 100
          : static_cast<size_t>(progress.bytes /
                                (progress.total_bytes / 100.0));
  Log(LogLevel::kInfo, "loading",
      {{"name", entry.name},
       {"source", entry.dir},
       {"rows", absl::StrCat(progress.rows)},
       {"total_rows", absl::StrCat(progress.total_rows)},
       {"bytes", absl::StrCat(progress.bytes)},
       {"total_bytes", absl::StrCat(progress.total_bytes)},
       {"percent", absl::StrCat(std::min<size_t>(percent, 100))}});
}

}  // namespace

absl::string_view BuildStateName(BuildState state) {
  switch (state) {
    case BuildState::kEmpty:
      return "empty";
    case BuildState::kBuilding:
      return "building";
    case BuildState::kServing:
      return "serving";
  }
  return "empty";
}

IndexManager::IndexManager(IndexManagerOptions options)
    : options_(std::move(options)),
      snapshots_{options_.data_dir, options_.keep_snapshots, options_.build,
                 options_.shard, options_.mmap_vectors},
      rejections_(options_.data_dir) {}

IndexManager::~IndexManager() {
  StopWatching();
  // A build in progress (Install from another thread) finishes first.
  absl::MutexLock build_lock(&build_mu_);
}

void IndexManager::StartWatching(absl::Duration poll_interval) {
  if (options_.checkpoints_dir.empty()) return;
  absl::MutexLock lock(&watch_mu_);
  watcher_ = std::make_unique<CheckpointWatcher>(options_.checkpoints_dir,
                                                 poll_interval, [this] {
                                                   LowerThreadPriority();
                                                   // Errors are logged and
                                                   // counted by LoadNewest; the
                                                   // served version keeps
                                                   // serving.
                                                   LoadNewest().IgnoreError();
                                                 });
}

void IndexManager::StopWatching() {
  absl::MutexLock lock(&watch_mu_);
  watcher_.reset();  // joins, after a build it is running
}

std::shared_ptr<const IndexVersion> IndexManager::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

std::shared_ptr<const IndexVersion> IndexManager::Previous() const {
  std::shared_ptr<const IndexVersion> expired;  // freed after the unlock
  absl::MutexLock lock(&mu_);
  if (previous_ != nullptr && absl::Now() >= previous_until_) {
    expired = std::move(previous_);
    previous_ = nullptr;
  }
  return previous_;
}

std::shared_ptr<const IndexVersion> IndexManager::Find(
    absl::string_view name) const {
  {
    absl::MutexLock lock(&mu_);
    if (current_ != nullptr && current_->info().name == name) return current_;
  }
  std::shared_ptr<const IndexVersion> previous = Previous();
  if (previous != nullptr && previous->info().name == name) return previous;
  return nullptr;
}

void IndexManager::DropPrevious() {
  std::shared_ptr<const IndexVersion> dropped;  // freed after the unlock
  absl::MutexLock lock(&mu_);
  dropped = std::move(previous_);
  previous_ = nullptr;
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
  const size_t served = (current_ ? current_->MemoryBytes() : 0) +
                        (previous_ ? previous_->MemoryBytes() : 0);
  return options_.max_index_bytes > served ? options_.max_index_bytes - served
                                           : 0;
}

absl::Status IndexManager::CheckBudget(size_t rows, size_t dim,
                                       bool has_labels) const {
  return CheckBytes(
      CandidateStore::MemoryBytesFor(rows, dim, has_labels, MapsVectors()) +
      IndexBytesBound(rows, dim, options_.build));
}

bool IndexManager::MapsVectors() const {
  return options_.mmap_vectors && !options_.data_dir.empty();
}

std::string IndexManager::StagingVectorsPath() const {
  // ".tmp-" like the snapshot's temporaries: what a crash leaves behind is
  // removed by the next snapshot write or restore.
  return JoinPath(options_.data_dir,
                  absl::StrCat(".tmp-vectors-", getpid(), ".npy"));
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
      "holds ", served_bytes, ": over ", kIndexByteBudgetTerm, " of ",
      options_.max_index_bytes));
}

absl::Status IndexManager::CheckSchema(size_t dim, Metric metric) const {
  std::shared_ptr<const IndexVersion> served = Current();
  if (served == nullptr || options_.allow_schema_change ||
      (served->dim() == dim && served->metric() == metric)) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("dim ", dim, " and metric ", MetricName(metric),
                   " differ from the served version's (dim ", served->dim(),
                   ", ", MetricName(served->metric()),
                   "); every trainer's queries would fail. Restart with ",
                   kSchemaChangesTerm, " to accept it"));
}

void IndexManager::Reject(const std::string& source,
                          const absl::Status& status) {
  Log(LogLevel::kError, "version_rejected",
      {{"source", source},
       {"reason", options_.describe_for_log
                      ? options_.describe_for_log(status.message())
                      : std::string(status.message())}});
  IndexEvents::Rejected rejected;
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
    return absl::NotFoundError(
        absl::StrCat(kSnapshotDirTerm, ": snapshots are off"));
  }
  absl::MutexLock build_lock(&build_mu_);
  HARDNEG_ASSIGN_OR_RETURN(std::shared_ptr<const IndexVersion> version,
                           ReadNewestSnapshot(snapshots_));
  const VersionInfo& info = version->info();
  Log(LogLevel::kInfo, "snapshot_restored",
      {{"name", info.name},
       {"step", absl::StrCat(info.step)},
       {"sequence", absl::StrCat(info.sequence)},
       {"candidates", absl::StrCat(version->size())},
       {"data_dir", options_.data_dir}});
  IndexEvents::Swapped swapped;
  {
    absl::MutexLock lock(&mu_);
    current_ = version;
    last_sequence_ = std::max(last_sequence_, info.sequence);
    SkipSnapshotSequences();
    status_.state = BuildState::kServing;
    swapped = events_.swapped;
  }
  if (swapped) swapped(*version, absl::ZeroDuration());
  return absl::OkStatus();
}

void IndexManager::SkipSnapshotSequences() {
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator(options_.data_dir, ec)) {
    if (std::optional<uint64_t> sequence =
            ParseSnapshotName(e.path().filename().string())) {
      last_sequence_ = std::max(last_sequence_, *sequence);
    }
  }
}

absl::StatusOr<VersionInfo> IndexManager::BuildAndSwap(
    const std::string& source, VersionInfo info, CandidateStore store,
    absl::Time start, double progress_from,
    const std::function<absl::Status()>& before_swap) {
  HARDNEG_RETURN_IF_ERROR(CheckSchema(store.dim(), info.metric));
  // At most two versions are held: the served one and the one being built
  // (a kept previous one is for a router's move to the served one, which a
  // newer version ends anyway).
  DropPrevious();
  HARDNEG_RETURN_IF_ERROR(CheckBytes(
      store.MemoryBytes() + IndexBytesEstimate(store, options_.build)));
  HARDNEG_ASSIGN_OR_RETURN(
      std::shared_ptr<const IndexVersion> version,
      Build(std::move(info), std::move(store), progress_from));
  const absl::Duration build_time = absl::Now() - start;
  if (before_swap) HARDNEG_RETURN_IF_ERROR(before_swap());
  // Snapshot before the swap: a version that served must survive a kill,
  // or a restart would serve an older sequence than clients have seen.
  Snapshot(*version);
  const VersionInfo built = version->info();
  const IndexEvents::Swapped swapped = Swap(version);
  EndBuild(/*built=*/true);
  Log(LogLevel::kInfo, "version_swap",
      {{"source", source},
       {"name", built.name},
       {"step", absl::StrCat(built.step)},
       {"sequence", absl::StrCat(built.sequence)},
       {"candidates", absl::StrCat(version->size())},
       {"dim", absl::StrCat(version->dim())},
       {"metric", MetricName(built.metric)},
       {"index", version->index().type()},
       {"scan", ScanPrecisionName(version->index().scan())},
       {"build_seconds", Seconds(build_time)}});
  if (swapped) swapped(*version, build_time);
  return built;
}

absl::StatusOr<std::shared_ptr<const IndexVersion>> IndexManager::Build(
    VersionInfo info, CandidateStore store, double progress_from) {
  {
    absl::MutexLock lock(&mu_);
    info.sequence = last_sequence_ + 1;
  }
  Log(LogLevel::kInfo, "index_build",
      {{"name", info.name},
       {"candidates", absl::StrCat(store.size())},
       {"index", options_.build.factory}});
  SetProgress(progress_from);
  // Bounded build threads: OpenMP's count is per calling thread, which
  // gets its own count back afterwards.
  const int caller_threads = omp_get_max_threads();
  omp_set_num_threads(std::max(1, options_.build_threads));
  info.created = absl::Now();
  absl::StatusOr<std::shared_ptr<const IndexVersion>> built =
      IndexVersion::Build(
          info, std::move(store), options_.build, [&](double fraction) {
            SetProgress(progress_from + (1 - progress_from) * fraction);
          });
  omp_set_num_threads(caller_threads);
  // Ended by the caller: after the swap (GetIndexInfo shows the build
  // until the version serves), or on a failure.
  return built;
}

void IndexManager::BeginBuild(const std::string& name) {
  absl::MutexLock lock(&mu_);
  status_.state = current_ ? BuildState::kServing : BuildState::kBuilding;
  status_.building = name;
  status_.progress = 0;
}

void IndexManager::SetProgress(double progress) {
  IndexEvents::Progress event;
  std::string name;
  {
    absl::MutexLock lock(&mu_);
    if (progress <= status_.progress) return;
    status_.progress = std::min(progress, 1.0);
    event = events_.progress;
    if (event) name = status_.building;
  }
  if (event) event(name, progress);
}

void IndexManager::EndBuild(bool built) {
  absl::MutexLock lock(&mu_);
  status_.building.clear();
  status_.progress = built ? 1 : 0;
  if (!built && current_ == nullptr) status_.state = BuildState::kEmpty;
}

double IndexManager::ReadShare() const {
  // A Flat build only rounds the vectors to binary16: the read is most of
  // the work. A FAISS build trains and adds: most of the time is its own.
  return IndexKindOf(options_.build.factory) == IndexKind::kFlat ? 0.9 : 0.3;
}

CheckpointReadObserver IndexManager::LoadingObserver(
    const CheckpointEntry& entry, ProgressThrottle* throttle) {
  const double share = ReadShare();
  return [this, &entry, throttle, share](const CheckpointReadProgress& read) {
    const double fraction = read.total_bytes == 0
                                ? 1
                                : static_cast<double>(read.bytes) /
                                      static_cast<double>(read.total_bytes);
    SetProgress(share * fraction);
    if (throttle->Due(absl::Now(), read.bytes >= read.total_bytes)) {
      LogLoading(entry, read);
    }
  };
}

void IndexManager::Snapshot(const IndexVersion& version) {
  if (options_.data_dir.empty()) return;
  const std::string sequence = absl::StrCat(version.info().sequence);
  const absl::Time start = absl::Now();
  const absl::Status written = WriteSnapshot(snapshots_, version);
  if (written.ok()) {
    Log(LogLevel::kInfo, "snapshot_written",
        {{"sequence", sequence}, {"seconds", Seconds(absl::Now() - start)}});
  } else {
    // Served anyway: only a restart would fall back to the previous
    // snapshot (and its sequence).
    Log(LogLevel::kError, "snapshot_failed",
        {{"sequence", sequence}, {"reason", std::string(written.message())}});
  }
}

IndexEvents::Swapped IndexManager::Swap(
    std::shared_ptr<const IndexVersion> version) {
  std::shared_ptr<const IndexVersion> replaced;  // freed after the unlock
  absl::MutexLock lock(&mu_);
  last_sequence_ = version->info().sequence;
  replaced = std::move(current_);
  if (replaced != nullptr && options_.keep_previous > absl::ZeroDuration()) {
    previous_ = std::move(replaced);
    previous_until_ = absl::Now() + options_.keep_previous;
  }
  current_ = std::move(version);
  status_.state = BuildState::kServing;
  return events_.swapped;
}

void IndexManager::RestoreRejections() {
  if (rejections_restored_) return;
  rejections_restored_ = true;
  for (const CheckpointRejections::Rejection& r : rejections_.Restore()) {
    Reject(r.dir, absl::ResourceExhaustedError(r.reason));
  }
}

absl::Status IndexManager::LoadNewest() {
  if (options_.checkpoints_dir.empty()) return absl::OkStatus();
  absl::MutexLock build_lock(&build_mu_);
  RestoreRejections();
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
    absl::Status loaded = LoadCheckpoint(entry, stamp);
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
  BeginBuild(entry.name);
  const absl::StatusOr<VersionInfo> swapped = ReadAndSwap(entry, start);
  // The snapshot links the staging file (or the load failed): the name is
  // no longer needed, and a store mapping it keeps its pages.
  if (MapsVectors()) unlink(StagingVectorsPath().c_str());
  rejections_.EndLoad();
  if (swapped.ok()) return absl::OkStatus();
  EndBuild(/*built=*/false);
  Reject(entry.dir, swapped.status());
  rejections_.Add(entry.dir, stamp, std::string(swapped.status().message()));
  return swapped.status();
}

absl::StatusOr<VersionInfo> IndexManager::ReadAndSwap(
    const CheckpointEntry& entry, absl::Time start) {
  DropPrevious();  // before the new version's rows take memory
  ProgressThrottle throttle(kLoadingLogInterval);
  std::string map_vectors_at;
  if (MapsVectors()) {
    std::error_code ec;
    std::filesystem::create_directories(options_.data_dir, ec);
    map_vectors_at = StagingVectorsPath();
  }
  HARDNEG_ASSIGN_OR_RETURN(
      Checkpoint checkpoint,
      ReadCheckpoint(
          entry.dir,
          [&](const CheckpointShape& shape) {
            return CheckBudget(shape.rows, shape.dim, shape.has_labels);
          },
          options_.shard, LoadingObserver(entry, &throttle), map_vectors_at));
  const CheckpointManifest& manifest = checkpoint.manifest;
  VersionInfo info;
  info.name = manifest.name;
  info.step = manifest.step;
  info.metric =
      manifest.metric.value_or(options_.metric.value_or(Metric::kInnerProduct));
  if (options_.metric.has_value() && info.metric != *options_.metric) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the manifest's metric is ", MetricName(info.metric), " but ",
        kServedMetricTerm, " is ", MetricName(*options_.metric)));
  }
  return BuildAndSwap(entry.dir, std::move(info), std::move(checkpoint.store),
                      start, ReadShare());
}

absl::StatusOr<VersionInfo> IndexManager::Install(
    const std::string& name, uint64_t step, std::optional<Metric> metric,
    CandidateStore store, std::optional<uint64_t> expected_sequence,
    const std::function<absl::Status()>& before_swap) {
  absl::MutexLock build_lock(&build_mu_);
  const std::string source = absl::StrCat("publish ", name);
  std::shared_ptr<const IndexVersion> served = Current();
  if (expected_sequence.has_value()) {
    const uint64_t live = served ? served->info().sequence : 0;
    if (live != *expected_sequence) {
      absl::Status stale = absl::FailedPreconditionError(absl::StrCat(
          "the publish was built on sequence ", *expected_sequence,
          " but sequence ", live,
          " went live meanwhile; publish again against the new base"));
      Reject(source, stale);
      return stale;
    }
  }
  VersionInfo info;
  info.name = name;
  info.step = step;
  info.metric = metric.value_or(served != nullptr ? served->metric()
                                                  : Metric::kInnerProduct);
  LowerThreadPriority();  // Install runs on the publisher's own thread
  BeginBuild(name);
  absl::StatusOr<VersionInfo> swapped =
      BuildAndSwap(source, std::move(info), std::move(store), absl::Now(),
                   /*progress_from=*/0, before_swap);
  if (!swapped.ok()) {
    EndBuild(/*built=*/false);
    Reject(source, swapped.status());
  }
  return swapped;
}

}  // namespace hardneg

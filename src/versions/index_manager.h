// IndexManager: owns the served IndexVersion and replaces it when a newer
// version arrives: a checkpoint under the checkpoint root (noticed by a
// CheckpointWatcher), or a Publish (Install). Every version that goes live
// is snapshotted under the snapshot directory, and the newest snapshot is
// served at start, before any checkpoint.
//
// Thread-safe. Current() is cheap (one locked shared_ptr copy) and never
// waits for a build: builds run outside mu_ and publish by swapping the
// pointer, so requests in flight finish on the version they started with.
// One build runs at a time, with at most `build_threads` OpenMP threads.
#ifndef HARDNEG_SRC_VERSIONS_INDEX_MANAGER_H_
#define HARDNEG_SRC_VERSIONS_INDEX_MANAGER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/progress_throttle.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "corpus/shard.h"
#include "format/checkpoint.h"
#include "versions/checkpoint_rejections.h"
#include "versions/checkpoint_watcher.h"
#include "versions/index_version.h"
#include "versions/snapshot.h"

namespace hardneg {

// How the manager's errors name its options, so that an edge that sets
// them (the server's flags) can say which of its own settings is meant.
inline constexpr char kIndexByteBudgetTerm[] = "the index byte budget";
inline constexpr char kServedMetricTerm[] = "the served metric";
inline constexpr char kSchemaChangesTerm[] = "schema changes allowed";
inline constexpr char kSnapshotDirTerm[] = "no snapshot directory";

struct IndexManagerOptions {
  std::string checkpoints_dir;  // empty: only Publish brings versions
  // Every version's index, built or restored from a snapshot.
  IndexBuildOptions build;
  // When set, checkpoints must use this metric; otherwise the manifest's
  // (inner_product when the manifest names none).
  std::optional<Metric> metric;
  // Accept a version whose dim or metric differs from the served one's.
  bool allow_schema_change = false;
  std::string data_dir;  // snapshots; empty: none
  // With a data_dir: versions keep their float32 rows in a file under it,
  // mapped read-only (CandidateStore::mapped), instead of on the heap, so
  // that they count for nothing in max_index_bytes and a refresh never
  // holds two versions' rows in memory. A checkpoint's rows are copied
  // into a staging file there (never mapped where the trainer may rewrite
  // them), which the snapshot links; a restored snapshot maps its own
  // vectors.npy. Without a data_dir, or for a publish (whose rows arrive
  // on the heap), the rows stay on the heap.
  bool mmap_vectors = false;
  size_t keep_snapshots = 3;
  int build_threads = 1;  // OpenMP threads for one build
  // Bound on the served version plus the one being built (0: none): the
  // index byte budget.
  size_t max_index_bytes = 0;
  // Words a rejection's reason for the operator's log (version_rejected):
  // the server adds the flags that set the domain's terms. Unset: the
  // reason as it is.
  std::function<std::string(absl::string_view)> describe_for_log;
  // The candidates this server holds: one shard of several keeps only the
  // ids that fall to it, from checkpoints, publishes and snapshots (see
  // ReadCheckpoint and PublishAssembler).
  ShardFilter shard;
  // How long the version a swap replaces stays servable (Previous, Find)
  // for requests pinned to it, so that a router can move all its shards to
  // the new version before it asks for it. Zero: freed at the swap. A new
  // build frees it at once: at most two versions are ever held.
  absl::Duration keep_previous = absl::ZeroDuration();
};

enum class BuildState {
  kEmpty,     // nothing served, nothing being built
  kBuilding,  // nothing served yet, the first version being built
  kServing,   // a version serves (another may be being built)
};

// "empty", "building", "serving": the name GetIndexInfo reports.
absl::string_view BuildStateName(BuildState state);

// What GetIndexInfo reports beyond the served version.
struct BuildStatus {
  BuildState state = BuildState::kEmpty;
  std::string building;  // name of the version being built, if any
  // Of the version in progress, 0..1, never going back while it lasts: a
  // checkpoint's read (by bytes) then its index build (by phase); a
  // publish's build alone. 1 once built; 0 after a failure.
  double progress = 0;
  std::string last_rejected;  // "<source>: <reason>", empty when none
  uint64_t rejected_total = 0;
};

// Counters the server exports; called on the thread that built.
struct IndexEvents {
  using Swapped =
      std::function<void(const IndexVersion&, absl::Duration build_time)>;
  using Rejected =
      std::function<void(const std::string& source, const absl::Status&)>;
  // BuildStatus::progress of the version `name`, each time it rises.
  using Progress = std::function<void(const std::string& name, double)>;
  Swapped swapped;
  Rejected rejected;
  Progress progress;
};

class IndexManager {
 public:
  explicit IndexManager(IndexManagerOptions options);
  ~IndexManager();  // stops watching and waits for a running build

  IndexManager(const IndexManager&) = delete;
  IndexManager& operator=(const IndexManager&) = delete;

  // The served version; null until one is loaded.
  std::shared_ptr<const IndexVersion> Current() const ABSL_LOCKS_EXCLUDED(mu_);
  // The version the last swap replaced, while keep_previous lasts (and no
  // build has started since); null otherwise. Frees it once expired.
  std::shared_ptr<const IndexVersion> Previous() const ABSL_LOCKS_EXCLUDED(mu_);
  // The served version when it is named `name`, else the previous one when
  // it is, else null.
  std::shared_ptr<const IndexVersion> Find(absl::string_view name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  const ShardFilter& shard() const { return options_.shard; }

  // Serves the newest snapshot under data_dir, if any (call before
  // serving). NOT_FOUND when there is none.
  absl::Status RestoreSnapshot() ABSL_LOCKS_EXCLUDED(mu_, build_mu_);

  // Serves the newest complete checkpoint with a higher step than the
  // served one, trying older ones when the newest is rejected. OK when
  // there is nothing new; the error of the last rejection when every new
  // checkpoint was rejected (the served version keeps serving). Each
  // rejection, including a manifest that does not parse, is logged with the
  // directory and the reason, and counted, once. A rejected checkpoint is
  // not retried until its manifest is rewritten, even after a restart when
  // data_dir is set; neither is one whose load was interrupted twice (see
  // CheckpointRejections). A checkpoint over max_index_bytes is rejected
  // from its headers, before its data is read.
  //
  // An operator may force a checkpoint whatever its step (say, after a
  // publish with a step no checkpoint can pass): a file PROMOTE under
  // checkpoints_dir holding the checkpoint directory's name. It is acted
  // on once each time it is written; the promoted version then serves,
  // and newer steps replace it as usual.
  absl::Status LoadNewest() ABSL_LOCKS_EXCLUDED(mu_, build_mu_);

  // Builds `store` into the next version and swaps it in, exactly as for a
  // checkpoint (schema check, snapshot). Blocks until it serves. Without a
  // `metric`, the served version's (inner_product when none serves).
  // FAILED_PRECONDITION for a schema change without allow_schema_change,
  // or when `expected_sequence` is set and another version went live since
  // (an incremental publish built on a base that is no longer served);
  // RESOURCE_EXHAUSTED over max_index_bytes. `before_swap`, when set, is
  // asked once the version is built, just before it is snapshotted and
  // swapped in: a non-OK status abandons the version (nothing is installed)
  // and is returned, e.g. CANCELLED when the publisher went away.
  absl::StatusOr<VersionInfo> Install(
      const std::string& name, uint64_t step, std::optional<Metric> metric,
      CandidateStore store,
      std::optional<uint64_t> expected_sequence = std::nullopt,
      const std::function<absl::Status()>& before_swap = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_, build_mu_);

  // Bytes a new version may still take under max_index_bytes, given the
  // served one (SIZE_MAX when unbounded).
  size_t RemainingBytes() const ABSL_LOCKS_EXCLUDED(mu_);

  // Calls LoadNewest whenever a CheckpointWatcher on checkpoints_dir sees
  // a change (and at least every `poll_interval`) until StopWatching or
  // destruction. Nothing when checkpoints_dir is empty.
  void StartWatching(absl::Duration poll_interval)
      ABSL_LOCKS_EXCLUDED(watch_mu_);

  // Stops the watcher, waiting for a build it is running. Idempotent.
  void StopWatching() ABSL_LOCKS_EXCLUDED(watch_mu_);

  BuildStatus build_status() const ABSL_LOCKS_EXCLUDED(mu_);

  // Set before StartWatching / serving; called on the building thread.
  void SetEvents(IndexEvents events) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // `start`: when reading the version began (for build_seconds).
  // `progress_from`: the progress the build starts at (what the read took).
  // `before_swap`: as Install's.
  absl::StatusOr<VersionInfo> BuildAndSwap(
      const std::string& source, VersionInfo info, CandidateStore store,
      absl::Time start, double progress_from,
      const std::function<absl::Status()>& before_swap = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(build_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // FAILED_PRECONDITION when a version of `dim` and `metric` would change
  // the served schema and that is not allowed.
  absl::Status CheckSchema(size_t dim, Metric metric) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Builds the version numbered after the last one, with build_threads
  // OpenMP threads, reporting progress in status_ from `progress_from`
  // to 1.
  absl::StatusOr<std::shared_ptr<const IndexVersion>> Build(
      VersionInfo info, CandidateStore store, double progress_from)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(build_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // status_ while a version named `name` is read and built: BeginBuild
  // starts it at 0, SetProgress raises it (never lowers it), EndBuild ends
  // it (`built`: progress 1, else 0 and, with nothing served, kEmpty).
  void BeginBuild(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  void SetProgress(double progress) ABSL_LOCKS_EXCLUDED(mu_);
  void EndBuild(bool built) ABSL_LOCKS_EXCLUDED(mu_);
  // The share of a checkpoint's progress its read takes, the rest being
  // the index build's.
  double ReadShare() const;
  // Turns the read of `entry` into progress and `loading` log lines,
  // `throttle` deciding which are logged.
  CheckpointReadObserver LoadingObserver(const CheckpointEntry& entry,
                                         ProgressThrottle* throttle)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Writes `version`'s snapshot when snapshots are on; a failure is logged.
  void Snapshot(const IndexVersion& version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(build_mu_);
  // Serves `version`; returns the swapped event, for the caller to call
  // once it has logged the swap.
  IndexEvents::Swapped Swap(std::shared_ptr<const IndexVersion> version)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Frees the kept previous version now.
  void DropPrevious() ABSL_LOCKS_EXCLUDED(mu_);
  void Reject(const std::string& source, const absl::Status& status)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Reads, builds and swaps in one checkpoint whose manifest has `stamp`;
  // a failure is rejected and remembered.
  absl::Status LoadCheckpoint(const CheckpointEntry& entry,
                              const std::string& stamp)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(build_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // Reads the checkpoint of `entry` (within the byte budget) and builds
  // and swaps it in. `start`: when reading began.
  absl::StatusOr<VersionInfo> ReadAndSwap(const CheckpointEntry& entry,
                                          absl::Time start)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(build_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // Remembers the rejections of earlier runs, once.
  void RestoreRejections() ABSL_EXCLUSIVE_LOCKS_REQUIRED(build_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Raises last_sequence_ past every snapshot under data_dir, loadable or
  // not (a newer snapshot that failed to load still used its sequence).
  void SkipSnapshotSequences() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When <checkpoints>/PROMOTE is new (or rewritten), loads the checkpoint
  // it names regardless of step and returns the outcome; nullopt otherwise.
  std::optional<absl::Status> Promote(
      const std::vector<CheckpointEntry>& entries)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(build_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // RESOURCE_EXHAUSTED when a version of `rows` x `dim` (or of `needed`
  // bytes) would not fit beside the served one under max_index_bytes.
  absl::Status CheckBudget(size_t rows, size_t dim, bool has_labels) const
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status CheckBytes(size_t needed) const ABSL_LOCKS_EXCLUDED(mu_);
  // Whether checkpoints' rows are mapped (mmap_vectors with a data_dir).
  bool MapsVectors() const;
  // The staging file a checkpoint's rows are gathered into when mapped.
  std::string StagingVectorsPath() const;

  const IndexManagerOptions options_;
  // Where snapshots go and how their versions are restored: one struct
  // for writing and reading, built from options_.
  const SnapshotOptions snapshots_;
  absl::Mutex build_mu_;  // serialises builds and snapshot writes
  mutable absl::Mutex mu_;
  std::shared_ptr<const IndexVersion> current_ ABSL_GUARDED_BY(mu_);
  // The version current_ replaced, until previous_until_ (Previous).
  mutable std::shared_ptr<const IndexVersion> previous_ ABSL_GUARDED_BY(mu_);
  absl::Time previous_until_ ABSL_GUARDED_BY(mu_);
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  BuildStatus status_ ABSL_GUARDED_BY(mu_);
  // Checkpoints given up on (kept under data_dir across restarts).
  CheckpointRejections rejections_ ABSL_GUARDED_BY(build_mu_);
  bool rejections_restored_ ABSL_GUARDED_BY(build_mu_) = false;
  // The PROMOTE file as last acted on.
  std::string promote_stamp_ ABSL_GUARDED_BY(build_mu_);
  IndexEvents events_ ABSL_GUARDED_BY(mu_);
  absl::Mutex watch_mu_;  // held neither by nor around a build
  std::unique_ptr<CheckpointWatcher> watcher_ ABSL_GUARDED_BY(watch_mu_);
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_VERSIONS_INDEX_MANAGER_H_

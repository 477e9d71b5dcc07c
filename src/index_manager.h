// IndexManager: owns the served IndexVersion and replaces it when a newer
// checkpoint appears under the checkpoints directory.
//
// Thread-safe. Current() is cheap (one locked shared_ptr copy) and never
// waits for a build: builds run outside the lock and publish by swapping
// the pointer, so requests in flight finish on the version they started
// with. One build runs at a time.
#ifndef HARDNEG_SRC_INDEX_MANAGER_H_
#define HARDNEG_SRC_INDEX_MANAGER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "index_version.h"
#include "metric.h"

namespace hardneg {

struct IndexManagerOptions {
  std::string checkpoints_dir;
  IndexBuildOptions build;
  // When set, checkpoints must use this metric; otherwise the manifest's
  // (inner_product when the manifest names none).
  std::optional<Metric> metric;
};

// What GetIndexInfo reports beyond the served version.
struct BuildStatus {
  std::string state;          // "empty", "loading", "serving"
  std::string last_rejected;  // "<dir>: <reason>", empty when none
};

class IndexManager {
 public:
  explicit IndexManager(IndexManagerOptions options);
  ~IndexManager();  // stops watching and waits for a running build

  IndexManager(const IndexManager&) = delete;
  IndexManager& operator=(const IndexManager&) = delete;

  // The served version; null until one is loaded.
  std::shared_ptr<const IndexVersion> Current() const ABSL_LOCKS_EXCLUDED(mu_);

  // Serves the newest complete checkpoint with a higher step than the
  // served one, trying older ones when the newest is rejected. OK when
  // there is nothing new; the error of the last rejection when every new
  // checkpoint was rejected (the served version keeps serving). Each
  // rejection is logged with the directory and the reason.
  absl::Status LoadNewest() ABSL_LOCKS_EXCLUDED(mu_, load_mu_);

  // Calls LoadNewest every `interval` on a background thread until
  // destruction.
  void StartWatching(absl::Duration interval) ABSL_LOCKS_EXCLUDED(mu_);

  BuildStatus build_status() const ABSL_LOCKS_EXCLUDED(mu_);

  // Calls `listener` after every swap, on the thread that swapped.
  void SetSwapListener(std::function<void(const IndexVersion&)> listener)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::StatusOr<std::shared_ptr<const IndexVersion>> Load(
      const std::string& dir, uint64_t sequence) const;
  void WatchLoop(absl::Duration interval) ABSL_LOCKS_EXCLUDED(mu_);

  const IndexManagerOptions options_;
  absl::Mutex load_mu_;  // serialises builds
  mutable absl::Mutex mu_;
  std::shared_ptr<const IndexVersion> current_ ABSL_GUARDED_BY(mu_);
  std::string state_ ABSL_GUARDED_BY(mu_) = "empty";
  std::string last_rejected_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void(const IndexVersion&)> listener_ ABSL_GUARDED_BY(mu_);
  std::thread watcher_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_MANAGER_H_

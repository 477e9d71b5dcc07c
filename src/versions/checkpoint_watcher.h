// CheckpointWatcher: notices when something may have changed under a
// checkpoint root (a manifest written, a directory renamed in, PROMOTE
// rewritten) and calls back, on a thread of its own. inotify wakes it at
// once; a scan at least every `poll_interval` is the fallback (filesystems
// without inotify, such as some network volumes, and a root that does not
// exist yet). It reads nothing itself: the callback decides what is new.
//
// Thread-safe: Stop may be called from any thread, except from the
// callback. The callback runs on the watcher's thread only, one call at a
// time, starting with one as soon as the watches are in place.
#ifndef HARDNEG_SRC_VERSIONS_CHECKPOINT_WATCHER_H_
#define HARDNEG_SRC_VERSIONS_CHECKPOINT_WATCHER_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/time/time.h"

namespace hardneg {

class CheckpointWatcher {
 public:
  // Starts watching `root` (which need not exist yet) and calling `scan`.
  CheckpointWatcher(std::string root, absl::Duration poll_interval,
                    std::function<void()> scan);
  ~CheckpointWatcher();  // Stop()

  CheckpointWatcher(const CheckpointWatcher&) = delete;
  CheckpointWatcher& operator=(const CheckpointWatcher&) = delete;

  // Wakes the thread and waits for it (and for a scan it is running) to
  // end. Idempotent.
  void Stop();

 private:
  void Loop();

  const std::string root_;
  const absl::Duration poll_interval_;
  const std::function<void()> scan_;
  const int wake_fd_;  // eventfd that interrupts the poll
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: starts once the rest is set
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_VERSIONS_CHECKPOINT_WATCHER_H_

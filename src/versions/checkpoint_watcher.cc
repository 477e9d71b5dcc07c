#include "versions/checkpoint_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

namespace hardneg {
namespace {

constexpr uint32_t kDirEvents =
    IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF;

// The inotify watches of the root and of its direct subdirectories (where
// manifests are written).
class Watches {
 public:
  explicit Watches(const std::string& root)
      : root_(root), fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {}
  ~Watches() {
    if (fd_ >= 0) ::close(fd_);
  }
  Watches(const Watches&) = delete;
  Watches& operator=(const Watches&) = delete;

  int fd() const { return fd_; }

  // Watches the root (again) when it is not watched and now can be; true
  // when it did, since whatever changed before sent no event.
  bool Establish() {
    if (fd_ < 0 || root_wd_ >= 0) return false;
    root_wd_ = ::inotify_add_watch(fd_, root_.c_str(), kDirEvents);
    if (root_wd_ < 0) return false;
    WatchSubdirs();
    return true;
  }

  // Consumes the pending events: new subdirectories are watched, and a
  // root that went away is to be watched again.
  void Drain() {
    if (fd_ < 0) return;
    bool new_dir = false;
    ssize_t n;
    while ((n = ::read(fd_, buffer_.data(), buffer_.size())) > 0) {
      for (ssize_t off = 0; off < n;) {
        const auto* event =
            reinterpret_cast<const inotify_event*>(buffer_.data() + off);
        if (event->wd == root_wd_ && (event->mask & IN_ISDIR)) new_dir = true;
        if ((event->mask & (IN_DELETE_SELF | IN_IGNORED)) &&
            event->wd == root_wd_) {
          root_wd_ = -1;
        }
        off += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      }
    }
    if (new_dir) WatchSubdirs();
  }

 private:
  void WatchSubdirs() {
    namespace fs = std::filesystem;
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(root_, ec)) {
      if (e.is_directory(ec)) {
        ::inotify_add_watch(fd_, e.path().c_str(), kDirEvents);
      }
    }
  }

  const std::string& root_;
  const int fd_;
  int root_wd_ = -1;
  std::vector<char> buffer_ = std::vector<char>(64 * 1024);
};

}  // namespace

CheckpointWatcher::CheckpointWatcher(std::string root,
                                     absl::Duration poll_interval,
                                     std::function<void()> scan)
    : root_(std::move(root)),
      poll_interval_(poll_interval),
      scan_(std::move(scan)),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      thread_([this] { Loop(); }) {}

CheckpointWatcher::~CheckpointWatcher() {
  Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void CheckpointWatcher::Stop() {
  stopping_.store(true);
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }
  if (thread_.joinable()) thread_.join();
}

void CheckpointWatcher::Loop() {
  Watches watches(root_);
  const int timeout_ms = static_cast<int>(
      std::max<int64_t>(1, absl::ToInt64Milliseconds(poll_interval_)));
  while (true) {
    // Scan at once after (re)establishing the watches.
    const bool scan_now = watches.Establish();
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {watches.fd(), POLLIN, 0}};
    ::poll(fds, watches.fd() >= 0 ? 2 : 1, scan_now ? 0 : timeout_ms);
    if (stopping_.load()) return;
    watches.Drain();
    scan_();
  }
}

}  // namespace hardneg

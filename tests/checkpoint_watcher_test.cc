// CheckpointWatcher on its own: it calls back once its watches are in
// place, at once when a manifest is written or a directory is renamed in,
// by polling when the root cannot be watched, and stops promptly.
#include "versions/checkpoint_watcher.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace hardneg {
namespace {

namespace fs = std::filesystem;

// Counts the watcher's calls; waits for the count to reach a value.
class Calls {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++count_;
  }
  int count() {
    absl::MutexLock lock(&mu_);
    return count_;
  }
  bool AwaitAtLeast(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return count_ >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }

 private:
  absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

class CheckpointWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/hardneg_watcher_test_" +
            std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(root_);
    fs::create_directories(root_ + "/ckpts");
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string root_;
};

TEST_F(CheckpointWatcherTest, NotifiesAtStartAndOnEachManifest) {
  Calls calls;
  CheckpointWatcher watcher(root_ + "/ckpts", absl::Hours(1),
                            [&calls] { calls.Add(); });
  // Once the watches are in place: what changed before sent no event.
  ASSERT_TRUE(calls.AwaitAtLeast(1, absl::Seconds(30)));
  const int before = calls.count();
  fs::create_directories(root_ + "/ckpts/v1");
  std::ofstream(root_ + "/ckpts/v1/manifest.json") << "{}";
  ASSERT_TRUE(calls.AwaitAtLeast(before + 1, absl::Seconds(30)));
  // A directory renamed in whole.
  fs::create_directories(root_ + "/v2");
  std::ofstream(root_ + "/v2/manifest.json") << "{}";
  const int after_v1 = calls.count();
  fs::rename(root_ + "/v2", root_ + "/ckpts/v2");
  ASSERT_TRUE(calls.AwaitAtLeast(after_v1 + 1, absl::Seconds(30)));
  // And a manifest rewritten inside it (its directory is watched too).
  absl::SleepFor(absl::Milliseconds(50));
  const int after_v2 = calls.count();
  std::ofstream(root_ + "/ckpts/v2/manifest.json") << "{} ";
  ASSERT_TRUE(calls.AwaitAtLeast(after_v2 + 1, absl::Seconds(30)));
}

TEST_F(CheckpointWatcherTest, PollsARootThatDoesNotExist) {
  Calls calls;
  CheckpointWatcher watcher(root_ + "/missing", absl::Milliseconds(10),
                            [&calls] { calls.Add(); });
  EXPECT_TRUE(calls.AwaitAtLeast(3, absl::Seconds(30)));
}

TEST_F(CheckpointWatcherTest, StopsPromptlyAndCallsNoMore) {
  Calls calls;
  CheckpointWatcher watcher(root_ + "/ckpts", absl::Hours(1),
                            [&calls] { calls.Add(); });
  ASSERT_TRUE(calls.AwaitAtLeast(1, absl::Seconds(30)));
  const absl::Time start = absl::Now();
  watcher.Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  const int stopped_at = calls.count();
  std::ofstream(root_ + "/ckpts/PROMOTE") << "v1";
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(calls.count(), stopped_at);
  watcher.Stop();  // idempotent
}

}  // namespace
}  // namespace hardneg

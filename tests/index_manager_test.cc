#include "versions/index_manager.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "format/checkpoint.h"
#include "format/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "index/row_dots.h"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class IndexManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/hardneg_manager_test_" +
            std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(root_);
    fs::create_directories(root_ + "/ckpts");
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string ckpts() const { return root_ + "/ckpts"; }

  // A checkpoint of `n` rows x `dim`, ids offset by `id_base`; one of the
  // same name is replaced.
  void Write(const std::string& dir_root, const std::string& name,
             uint64_t step, size_t n = 50, uint32_t dim = 4,
             Metric metric = Metric::kInnerProduct, int64_t id_base = 0) {
    std::mt19937 rng(static_cast<uint32_t>(step));
    std::normal_distribution<float> normal;
    std::vector<float> embeddings(n * dim);
    for (float& v : embeddings) v = normal(rng);
    std::vector<int64_t> ids(n), labels(n);
    for (size_t i = 0; i < n; ++i) {
      ids[i] = id_base + static_cast<int64_t>(i);
      labels[i] = static_cast<int64_t>(i % 3);
    }
    CheckpointManifest manifest;
    manifest.name = name;
    manifest.step = step;
    manifest.dim = dim;
    manifest.metric = metric;
    ASSERT_TRUE(WriteCheckpoint(dir_root, manifest, embeddings, ids, labels,
                                /*replace=*/true)
                    .ok());
  }

  IndexManagerOptions Options() const {
    IndexManagerOptions options;
    options.checkpoints_dir = ckpts();
    return options;
  }

  std::string root_;
};

TEST_F(IndexManagerTest, ServesTheHighestStepAndCountsSequences) {
  Write(ckpts(), "a", 5);
  Write(ckpts(), "b", 7);
  Write(ckpts(), "c", 6);
  IndexManager manager(Options());
  EXPECT_EQ(manager.Current(), nullptr);
  EXPECT_EQ(manager.build_status().state, BuildState::kEmpty);
  ASSERT_TRUE(manager.LoadNewest().ok());
  ASSERT_NE(manager.Current(), nullptr);
  EXPECT_EQ(manager.Current()->info().name, "b");
  EXPECT_EQ(manager.Current()->info().sequence, 1u);
  EXPECT_EQ(manager.build_status().state, BuildState::kServing);
  // Nothing newer: no swap.
  ASSERT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(manager.Current()->info().sequence, 1u);
  Write(ckpts(), "d", 8);
  ASSERT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(manager.Current()->info().name, "d");
  EXPECT_EQ(manager.Current()->info().sequence, 2u);
}

// Each kind of malformed checkpoint is rejected, named with its reason,
// counted, and the served version keeps serving.
TEST_F(IndexManagerTest, RejectsMalformedCheckpointsWhileTheOldOneServes) {
  Write(ckpts(), "good", 1);
  IndexManager manager(Options());
  ASSERT_TRUE(manager.LoadNewest().ok());
  struct Case {
    std::string name;
    std::function<void(const std::string& dir)> corrupt;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"truncated",
       [](const std::string& dir) {
         fs::resize_file(dir + "/embeddings-00000.npy", 100);
       },
       "embeddings-00000.npy"},
      {"bad-magic",
       [](const std::string& dir) {
         std::ofstream(dir + "/ids-00000.npy") << "not numpy at all";
       },
       "ids-00000.npy"},
      {"missing-shard",
       [](const std::string& dir) { fs::remove(dir + "/ids-00000.npy"); },
       "ids-00000.npy"},
      {"nan",
       [](const std::string& dir) {
         std::vector<float> v(50 * 4, 1.0f);
         v[7] = std::nanf("");
         ASSERT_TRUE(
             WriteNpyMatrix(dir + "/embeddings-00000.npy", v.data(), 50, 4)
                 .ok());
       },
       "row 1"},
      {"duplicate-ids",
       [](const std::string& dir) {
         std::vector<int64_t> ids(50, 3);
         ASSERT_TRUE(WriteNpyInt64(dir + "/ids-00000.npy", ids).ok());
       },
       "duplicate id 3"},
  };
  uint64_t step = 10;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    // Write elsewhere, corrupt, then rename in whole: a complete directory.
    Write(root_, c.name, step++);
    c.corrupt(root_ + "/" + c.name);
    fs::rename(root_ + "/" + c.name, ckpts() + "/" + c.name);
    absl::Status status = manager.LoadNewest();
    EXPECT_FALSE(status.ok());
    EXPECT_EQ(manager.Current()->info().name, "good");
    BuildStatus build = manager.build_status();
    EXPECT_THAT(build.last_rejected, HasSubstr(c.name));
    EXPECT_THAT(build.last_rejected, HasSubstr(c.reason));
    fs::remove_all(ckpts() + "/" + c.name);
  }
  EXPECT_EQ(manager.build_status().rejected_total, cases.size());
}

TEST_F(IndexManagerTest, RejectedCheckpointIsNotRetriedUntilItChanges) {
  Write(ckpts(), "good", 1);
  IndexManager manager(Options());
  ASSERT_TRUE(manager.LoadNewest().ok());
  Write(ckpts(), "broken", 2);
  fs::remove(ckpts() + "/broken/ids-00000.npy");
  EXPECT_FALSE(manager.LoadNewest().ok());
  EXPECT_TRUE(manager.LoadNewest().ok());  // not read again
  EXPECT_EQ(manager.build_status().rejected_total, 1u);
  Write(ckpts(), "broken", 2);  // fixed: a new manifest
  ASSERT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(manager.Current()->info().name, "broken");
}

TEST_F(IndexManagerTest, SchemaChangeNeedsPermission) {
  Write(ckpts(), "d4", 1, 50, 4);
  {
    IndexManager manager(Options());
    ASSERT_TRUE(manager.LoadNewest().ok());
    Write(ckpts(), "d8", 2, 50, 8);
    absl::Status status = manager.LoadNewest();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(status.message()), HasSubstr(kSchemaChangesTerm));
    EXPECT_EQ(manager.Current()->info().name, "d4");
    Write(ckpts(), "l2", 3, 50, 4, Metric::kL2);
    EXPECT_EQ(manager.LoadNewest().code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(manager.Current()->info().name, "d4");
  }
  IndexManagerOptions options = Options();
  options.allow_schema_change = true;
  fs::remove_all(ckpts() + "/l2");
  IndexManager manager(options);
  ASSERT_TRUE(manager.LoadNewest().ok());  // d8: newest
  EXPECT_EQ(manager.Current()->dim(), 8u);
}

TEST_F(IndexManagerTest, InstallSwapsAndHonoursTheBudget) {
  Write(ckpts(), "base", 1, 100, 4);
  IndexManagerOptions options = Options();
  IndexManager probe(options);
  ASSERT_TRUE(probe.LoadNewest().ok());
  const size_t served = probe.Current()->MemoryBytes();
  options.max_index_bytes = served * 2 + served / 2;
  IndexManager manager(options);
  ASSERT_TRUE(manager.LoadNewest().ok());
  EXPECT_LT(manager.RemainingBytes(), options.max_index_bytes);

  auto store = [](size_t n) {
    std::vector<int64_t> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i);
    return *CandidateStore::Create(4, ids, std::vector<float>(n * 4, 0.5f),
                                   std::nullopt);
  };
  absl::StatusOr<VersionInfo> small =
      manager.Install("small", 2, Metric::kInnerProduct, store(100));
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->sequence, 2u);
  EXPECT_EQ(manager.Current()->info().name, "small");
  absl::StatusOr<VersionInfo> big =
      manager.Install("big", 3, Metric::kInnerProduct, store(1000));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(manager.Current()->info().name, "small");
  EXPECT_THAT(manager.build_status().last_rejected, HasSubstr("publish big"));
}

// A publisher that waited and went away during the build (Install's
// before_swap says so) gets nothing installed, and the next sequence is
// still the next one served.
TEST_F(IndexManagerTest, InstallAbandonedBeforeTheSwapInstallsNothing) {
  Write(ckpts(), "base", 1, 100, 4);
  IndexManager manager(Options());
  ASSERT_TRUE(manager.LoadNewest().ok());
  auto store = [] {
    return *CandidateStore::Create(4, {1, 2, 3}, std::vector<float>(12, 0.5f),
                                   std::nullopt);
  };
  int asked = 0;
  absl::StatusOr<VersionInfo> gone = manager.Install(
      "gone", 2, Metric::kInnerProduct, store(), std::nullopt, [&] {
        ++asked;
        return absl::CancelledError("the publisher went away");
      });
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(manager.Current()->info().name, "base");
  EXPECT_THAT(manager.build_status().last_rejected,
              HasSubstr("the publisher went away"));
  absl::StatusOr<VersionInfo> kept =
      manager.Install("kept", 3, Metric::kInnerProduct, store(), std::nullopt,
                      [] { return absl::OkStatus(); });
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(manager.Current()->info().name, "kept");
  EXPECT_GT(kept->sequence, 1u);
}

// The server used to read all 8 GiB of this (sparse) checkpoint with a
// budget of 1 GiB and abort; at restart it did the same: a crash-loop.
TEST_F(IndexManagerTest, ACheckpointOverTheBudgetIsRejectedFromItsHeaders) {
  Write(ckpts(), "small", 1, 50, 4);
  const std::string dir = ckpts() + "/huge";
  fs::create_directories(dir);
  const size_t rows = size_t{1} << 29;  // x 4 dims x 4 bytes = 8 GiB
  ASSERT_TRUE(
      WriteNpyMatrix(dir + "/embeddings-00000.npy", nullptr, 0, 4).ok());
  ASSERT_TRUE(WriteNpyInt64(dir + "/ids-00000.npy", {}).ok());
  // Rewrite both headers to claim `rows` rows, and extend the files
  // (sparsely) to match, so that every check but the budget passes.
  auto claim = [&](const std::string& path, const std::string& shape,
                   size_t data_bytes) {
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    const size_t at = text.find("(0");
    ASSERT_NE(at, std::string::npos) << text;
    const size_t end = text.find(')', at);
    std::string header = text.substr(0, at) + shape + text.substr(end + 1);
    // Keep the header length: pad or trim the spaces before '\n'.
    while (header.size() > text.size()) header.erase(header.rfind(' '), 1);
    while (header.size() < text.size()) header.insert(header.rfind('\n'), " ");
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << header;
    out.close();
    ASSERT_EQ(::truncate(path.c_str(),
                         static_cast<off_t>(header.size() + data_bytes)),
              0);
  };
  claim(dir + "/embeddings-00000.npy", absl::StrCat("(", rows, ", 4)"),
        rows * 16);
  claim(dir + "/ids-00000.npy", absl::StrCat("(", rows, ",)"), rows * 8);
  CheckpointManifest manifest;
  manifest.name = "huge";
  manifest.step = 2;
  manifest.dim = 4;
  std::ofstream(dir + "/manifest.json")
      << R"({"name": "huge", "step": 2, "dim": 4, "shards": [)"
      << R"({"embeddings": "embeddings-00000.npy", "ids": "ids-00000.npy"}]})";

  IndexManagerOptions options = Options();
  options.max_index_bytes = size_t{1} << 30;
  IndexManager manager(options);
  // The next checkpoint down serves instead.
  EXPECT_TRUE(manager.LoadNewest().ok());
  ASSERT_NE(manager.Current(), nullptr);
  EXPECT_EQ(manager.Current()->info().name, "small");
  const BuildStatus status = manager.build_status();
  EXPECT_EQ(status.rejected_total, 1u);
  EXPECT_THAT(status.last_rejected, HasSubstr("huge"));
  EXPECT_THAT(status.last_rejected, HasSubstr("over the index byte budget"));
}

TEST_F(IndexManagerTest, AManifestThatDoesNotParseIsReportedOnce) {
  Write(ckpts(), "good", 1);
  fs::create_directories(ckpts() + "/broken");
  std::ofstream(ckpts() + "/broken/manifest.json") << "{\"name\": ";
  IndexManager manager(Options());
  EXPECT_TRUE(manager.LoadNewest().ok());  // "good" serves
  EXPECT_EQ(manager.Current()->info().name, "good");
  BuildStatus status = manager.build_status();
  EXPECT_EQ(status.rejected_total, 1u);
  EXPECT_THAT(status.last_rejected, HasSubstr("broken"));
  EXPECT_THAT(status.last_rejected, HasSubstr("not valid JSON"));
  // Polled again, unchanged: not reported again.
  EXPECT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(manager.build_status().rejected_total, 1u);
  // Rewritten: read again (and rejected again, for another reason).
  std::ofstream(ckpts() + "/broken/manifest.json")
      << R"({"name": "b", "step": -1, "dim": 4, "shards": []})";
  EXPECT_EQ(manager.LoadNewest().code(), absl::StatusCode::kInvalidArgument);
  status = manager.build_status();
  EXPECT_EQ(status.rejected_total, 2u);
  EXPECT_THAT(status.last_rejected, HasSubstr("must be non-negative"));
}

TEST_F(IndexManagerTest, ARejectionIsRememberedAcrossRestartsWithADataDir) {
  Write(ckpts(), "inner", 1, 50, 4, Metric::kInnerProduct);
  IndexManagerOptions options = Options();
  options.data_dir = root_ + "/data";
  {
    // This server wants l2: it rejects the checkpoint.
    IndexManagerOptions l2 = options;
    l2.metric = Metric::kL2;
    IndexManager manager(l2);
    EXPECT_FALSE(manager.LoadNewest().ok());
    EXPECT_EQ(manager.Current(), nullptr);
  }
  {
    // Restarted without --metric it would accept it, but the checkpoint
    // was not rewritten, so it is not read again.
    IndexManager manager(options);
    EXPECT_TRUE(manager.LoadNewest().ok());
    EXPECT_EQ(manager.Current(), nullptr);
  }
  // Rewritten (same content, a new manifest): tried again, and served.
  Write(ckpts(), "inner", 1, 50, 4, Metric::kInnerProduct);
  IndexManager manager(options);
  EXPECT_TRUE(manager.LoadNewest().ok());
  ASSERT_NE(manager.Current(), nullptr);
  EXPECT_EQ(manager.Current()->info().name, "inner");
}

// A load that never ended (the process was killed, say by the OOM killer,
// while reading or building) is forgiven once, and rejected the second
// time, so that a restart cannot crash-loop on it.
TEST_F(IndexManagerTest, ALoadInterruptedTwiceIsRejectedAtRestart) {
  Write(ckpts(), "v1", 1);
  IndexManagerOptions options = Options();
  options.data_dir = root_ + "/data";
  fs::create_directories(options.data_dir);
  const std::string dir = ckpts() + "/v1";
  const std::string marker = options.data_dir + "/loading-checkpoint.tsv";
  auto interrupted = [&](int tries) {
    std::ofstream(marker) << dir << "\t" << ManifestStamp(dir) << "\t" << tries
                          << "\n";
  };
  interrupted(1);
  {
    IndexManager manager(options);
    EXPECT_TRUE(manager.LoadNewest().ok());
    ASSERT_NE(manager.Current(), nullptr);  // forgiven once
    EXPECT_FALSE(fs::exists(marker));       // and the load finished
  }
  // The same checkpoint again, now as if interrupted twice.
  fs::remove_all(options.data_dir);
  fs::create_directories(options.data_dir);
  interrupted(2);
  IndexManager manager(options);
  manager.LoadNewest().IgnoreError();
  EXPECT_EQ(manager.Current(), nullptr);
  const BuildStatus status = manager.build_status();
  EXPECT_EQ(status.rejected_total, 1u);
  // Relative to the checkpoint root: clients need not see this host's
  // paths.
  EXPECT_THAT(status.last_rejected,
              ::testing::StartsWith("v1: loading it was interrupted 2 times"));
  EXPECT_FALSE(fs::exists(marker));
}

// A version published with step 2^64-1 used to be final: no checkpoint
// could ever pass it. PROMOTE lets an operator force one.
TEST_F(IndexManagerTest, PromoteServesANamedCheckpointWhateverItsStep) {
  IndexManager manager(Options());
  auto store = [](size_t n) {
    std::vector<int64_t> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int64_t>(i);
    return *CandidateStore::Create(4, ids, std::vector<float>(n * 4, 0.5f),
                                   std::nullopt);
  };
  ASSERT_TRUE(manager
                  .Install("stuck", std::numeric_limits<uint64_t>::max(),
                           Metric::kInnerProduct, store(10))
                  .ok());
  Write(ckpts(), "fix", 5);
  EXPECT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(manager.Current()->info().name, "stuck");  // step 5 < 2^64-1

  std::ofstream(ckpts() + "/PROMOTE") << "fix\n";
  EXPECT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(manager.Current()->info().name, "fix");
  EXPECT_EQ(manager.Current()->info().step, 5u);
  // Acted on once: the file left in place does not reload it.
  EXPECT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(manager.Current()->info().sequence, 2u);
  // Steps count again from the promoted version.
  Write(ckpts(), "next", 6);
  EXPECT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(manager.Current()->info().name, "next");

  // A name that is no checkpoint is reported.
  fs::remove(ckpts() + "/PROMOTE");
  std::ofstream(ckpts() + "/PROMOTE") << "nothing-here";
  EXPECT_EQ(manager.LoadNewest().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(manager.build_status().last_rejected,
              HasSubstr("PROMOTE: names \"nothing-here\""));
  EXPECT_EQ(manager.Current()->info().name, "next");
}

// inotify: with a poll interval of an hour, only the notification can make
// the watcher load a checkpoint written in place or renamed in.
TEST_F(IndexManagerTest, WatcherLoadsNewCheckpointsFromNotifications) {
  Write(ckpts(), "v1", 1);
  IndexManager manager(Options());
  ASSERT_TRUE(manager.LoadNewest().ok());
  auto swapped = std::make_shared<absl::Notification>();
  auto swapped2 = std::make_shared<absl::Notification>();
  IndexEvents events;
  events.swapped = [&, swapped, swapped2](const IndexVersion& v,
                                          absl::Duration) {
    if (v.info().name == "v2") swapped->Notify();
    if (v.info().name == "v3") swapped2->Notify();
  };
  manager.SetEvents(events);
  manager.StartWatching(absl::Hours(1));
  Write(ckpts(), "v2", 2);  // in place, manifest last
  ASSERT_TRUE(swapped->WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(manager.Current()->info().sequence, 2u);
  Write(root_, "v3", 3);
  fs::rename(root_ + "/v3", ckpts() + "/v3");  // renamed in whole
  ASSERT_TRUE(swapped2->WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(manager.Current()->info().name, "v3");
}

TEST_F(IndexManagerTest, PollingFindsCheckpointsWithoutNotifications) {
  IndexManager manager(Options());
  auto swapped = std::make_shared<absl::Notification>();
  IndexEvents events;
  events.swapped = [swapped](const IndexVersion&, absl::Duration) {
    swapped->Notify();
  };
  manager.SetEvents(events);
  // The root does not exist yet, so inotify cannot watch it: the poll must.
  fs::remove_all(ckpts());
  manager.StartWatching(absl::Milliseconds(20));
  Write(ckpts(), "late", 1);
  ASSERT_TRUE(swapped->WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(manager.Current()->info().name, "late");
}

// The index options travel with the snapshot: a restored version's index
// is built as the served one was (half_scan's binary16 copy, observable in
// its memory, kept or left out alike).
TEST_F(IndexManagerTest, ARestoredVersionKeepsTheIndexOptions) {
  Write(ckpts(), "v1", 1, 64, 8);
  for (const bool half_scan : {false, true}) {
    SCOPED_TRACE(half_scan ? "half_scan" : "no half_scan");
    IndexManagerOptions options = Options();
    options.data_dir = absl::StrCat(root_, "/data-", half_scan);
    options.build.half_scan = half_scan;
    options.build.scan = ScanPrecision::kF32;
    size_t built_bytes = 0;
    {
      IndexManager manager(options);
      ASSERT_TRUE(manager.LoadNewest().ok());
      built_bytes = manager.Current()->index().MemoryBytes();
    }
    IndexManager restarted(options);
    ASSERT_TRUE(restarted.RestoreSnapshot().ok());
    ASSERT_NE(restarted.Current(), nullptr);
    EXPECT_EQ(restarted.Current()->index().MemoryBytes(), built_bytes);
    const bool has_half_copy = half_scan && RowDotsSimd();
    EXPECT_EQ(built_bytes > 0, has_half_copy);
  }
}

TEST_F(IndexManagerTest, BuildStateNamesAreTheWireNames) {
  EXPECT_EQ(BuildStateName(BuildState::kEmpty), "empty");
  EXPECT_EQ(BuildStateName(BuildState::kBuilding), "building");
  EXPECT_EQ(BuildStateName(BuildState::kServing), "serving");
}

TEST_F(IndexManagerTest, InstallWithoutAMetricTakesTheServedOne) {
  Write(ckpts(), "l2", 1, 50, 4, Metric::kL2);
  IndexManager manager(Options());
  ASSERT_TRUE(manager.LoadNewest().ok());
  std::vector<int64_t> ids = {1, 2};
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      4, std::move(ids), std::vector<float>(8, 0.5f), std::nullopt);
  ASSERT_TRUE(store.ok());
  absl::StatusOr<VersionInfo> installed =
      manager.Install("next", 2, std::nullopt, *std::move(store));
  ASSERT_TRUE(installed.ok()) << installed.status();
  EXPECT_EQ(installed->metric, Metric::kL2);
}

}  // namespace
}  // namespace hardneg

namespace hardneg {
namespace {

// The key=value fields of each `event=<event>` line of `log`.
std::vector<std::map<std::string, std::string>> EventLines(
    const std::string& log, const std::string& event) {
  std::vector<std::map<std::string, std::string>> lines;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    std::map<std::string, std::string> fields;
    std::istringstream words(line);
    for (std::string word; words >> word;) {
      const size_t eq = word.find('=');
      if (eq != std::string::npos) {
        fields[word.substr(0, eq)] = word.substr(eq + 1);
      }
    }
    if (fields["event"] == event) lines.push_back(std::move(fields));
  }
  return lines;
}

size_t Field(const std::map<std::string, std::string>& line,
             const std::string& key) {
  auto it = line.find(key);
  EXPECT_NE(it, line.end()) << key;
  return it == line.end() ? 0 : std::stoull(it->second);
}

// The progress a checkpoint's load reports only rises: through the read,
// which `loading` lines log from 0 to 100 percent with its rows and bytes,
// then the build, to 1 when the version serves.
TEST_F(IndexManagerTest, ALoadReportsRisingProgressAndLoadingLines) {
  constexpr size_t kRows = 300000;
  Write(ckpts(), "big", 3, kRows, 8);
  IndexManager manager(Options());
  std::vector<double> seen;
  IndexEvents events;
  events.progress = [&](const std::string& name, double progress) {
    EXPECT_EQ(name, "big");
    EXPECT_EQ(manager.build_status().building, "big");
    seen.push_back(progress);
  };
  manager.SetEvents(events);
  ::testing::internal::CaptureStderr();
  const absl::Status loaded = manager.LoadNewest();
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(loaded.ok()) << loaded;

  ASSERT_GE(seen.size(), 2u);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i], seen[i - 1]);
  EXPECT_GT(seen.front(), 0);
  EXPECT_LT(seen.front(), 1);
  EXPECT_EQ(seen.back(), 1);
  const BuildStatus status = manager.build_status();
  EXPECT_EQ(status.state, BuildState::kServing);
  EXPECT_EQ(status.progress, 1);
  EXPECT_EQ(status.building, "");

  const auto lines = EventLines(log, "loading");
  ASSERT_GE(lines.size(), 2u) << log;
  EXPECT_EQ(Field(lines.front(), "rows"), 0u);
  EXPECT_EQ(Field(lines.front(), "percent"), 0u);
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_GE(Field(lines[i], "rows"), Field(lines[i - 1], "rows"));
    EXPECT_GE(Field(lines[i], "bytes"), Field(lines[i - 1], "bytes"));
    EXPECT_GE(Field(lines[i], "percent"), Field(lines[i - 1], "percent"));
  }
  EXPECT_EQ(std::count_if(
                lines.begin(), lines.end(),
                [](const auto& line) { return line.at("percent") == "100"; }),
            1)
      << log;
  const auto& last = lines.back();
  EXPECT_EQ(last.at("name"), "big");
  EXPECT_EQ(Field(last, "rows"), kRows);
  EXPECT_EQ(Field(last, "total_rows"), kRows);
  EXPECT_EQ(Field(last, "bytes"), Field(last, "total_bytes"));
  EXPECT_GT(Field(last, "bytes"), kRows * 8 * sizeof(float));
  EXPECT_EQ(Field(last, "percent"), 100u);
  ASSERT_EQ(EventLines(log, "index_build").size(), 1u) << log;
  EXPECT_EQ(Field(EventLines(log, "index_build")[0], "candidates"), kRows);
}

// A load that fails after its read began leaves no progress behind: no
// version being built, progress 0, and nothing served.
TEST_F(IndexManagerTest, AFailedLoadEndsItsProgress) {
  std::vector<float> embeddings(1000 * 4, 0.5f);
  embeddings.back() = std::numeric_limits<float>::quiet_NaN();
  std::vector<int64_t> ids(1000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
  CheckpointManifest manifest;
  manifest.name = "nan";
  manifest.step = 1;
  manifest.dim = 4;
  ASSERT_TRUE(WriteCheckpoint(ckpts(), manifest, embeddings, ids, {}).ok());
  IndexManager manager(Options());
  double highest = 0;
  IndexEvents events;
  events.progress = [&](const std::string&, double progress) {
    highest = std::max(highest, progress);
  };
  manager.SetEvents(events);
  EXPECT_FALSE(manager.LoadNewest().ok());
  EXPECT_GT(highest, 0);  // the read had begun
  const BuildStatus status = manager.build_status();
  EXPECT_EQ(status.state, BuildState::kEmpty);
  EXPECT_EQ(status.progress, 0);
  EXPECT_EQ(status.building, "");
  EXPECT_EQ(status.rejected_total, 1u);
}

}  // namespace
}  // namespace hardneg

// Crash safety of snapshots, with the real binary: a hardneg-server serving
// v1 sees a big v2 checkpoint arrive and is killed with SIGKILL at several
// points of building and snapshotting it; restarted on the same --data_dir
// with no checkpoints at all, it must serve a complete version at once (v1
// or v2, whichever snapshot completed), never a lower sequence than was
// served before the kill, answer MineOnce exactly against that version's
// data, and continue the sequence with the next checkpoint.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "format/checkpoint.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "versions/snapshot.h"

extern char** environ;

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kDim = 64;
// Big enough that reading, building and snapshotting v2 takes a moment, so
// that the kills below land in the middle of it.
constexpr size_t kBigRows = 200000;
constexpr size_t kSmallRows = 3000;
constexpr auto kDeadline = std::chrono::seconds(20);

// One checkpoint's content, kept to compute the expected answers.
struct CheckpointData {
  std::string name;
  uint64_t step = 0;
  size_t rows = 0;
  int64_t first_id = 0;
  std::vector<float> embeddings;
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;
};

CheckpointData MakeData(const std::string& name, uint64_t step, size_t rows,
                        int64_t first_id, uint32_t seed) {
  CheckpointData data{name, step, rows, first_id, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  data.embeddings.resize(rows * kDim);
  for (float& v : data.embeddings) v = normal(rng);
  data.ids.resize(rows);
  data.labels.resize(rows);
  for (size_t i = 0; i < rows; ++i) {
    data.ids[i] = first_id + static_cast<int64_t>(i);
    data.labels[i] = static_cast<int64_t>(i % 10);
  }
  return data;
}

void WriteStaged(const std::string& root, const CheckpointData& data) {
  CheckpointManifest manifest;
  manifest.name = data.name;
  manifest.step = data.step;
  manifest.dim = kDim;
  manifest.metric = Metric::kInnerProduct;
  absl::Status written =
      WriteCheckpoint(root, manifest, data.embeddings, data.ids, data.labels);
  ASSERT_TRUE(written.ok()) << written;
}

// Places a staged checkpoint under `root` the way an encoder writes one in
// place: the data files first, manifest.json last. Hard links make it
// instant and leave the staged copy intact.
void DropCheckpoint(const std::string& staged, const std::string& root) {
  const std::string dir =
      absl::StrCat(root, "/", fs::path(staged).filename().string());
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(staged)) {
    if (entry.path().filename() == "manifest.json") continue;
    fs::create_hard_link(entry.path(), dir / entry.path().filename());
  }
  fs::create_hard_link(staged + "/manifest.json", dir + "/manifest.json");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A hardneg-server child process; SIGKILLed and reaped on destruction.
class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() {
    Kill();
    if (stdout_fd_ >= 0) close(stdout_fd_);
  }

  // Starts the server and waits for its "listening on <port>" line. Its
  // stderr goes to `log_path`.
  ::testing::AssertionResult Start(const std::vector<std::string>& flags,
                                   const std::string& log_path) {
    log_path_ = log_path;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      return ::testing::AssertionFailure() << "pipe2 failed";
    }
    stdout_fd_ = fds[0];
    std::vector<std::string> args = {HARDNEG_SERVER_PATH};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    // Without it the server re-executes itself to set it.
    setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
    const int spawned =
        posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    if (spawned != 0) {
      pid_ = -1;
      return ::testing::AssertionFailure()
             << "cannot spawn " << argv[0] << ": " << std::strerror(spawned);
    }
    return ReadPort();
  }

  // Sends SIGTERM and returns the wait status (see waitpid).
  int Terminate() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  int port() const { return port_; }
  std::string Log() const { return ReadFile(log_path_); }

 private:
  ::testing::AssertionResult ReadPort() {
    const std::string prefix = "listening on ";
    std::string line;
    const Clock::time_point deadline = Clock::now() + kDeadline;
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - Clock::now());
      pollfd fd = {stdout_fd_, POLLIN, 0};
      if (left.count() <= 0 ||
          poll(&fd, 1, static_cast<int>(left.count())) == 0) {
        return ::testing::AssertionFailure()
               << "no \"listening on\" line within the deadline; log:\n"
               << Log();
      }
      char c;
      const ssize_t got = read(stdout_fd_, &c, 1);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        return ::testing::AssertionFailure()
               << "the server exited before listening; log:\n"
               << Log();
      }
      if (c != '\n') {
        line.push_back(c);
        continue;
      }
      if (absl::StartsWith(line, prefix)) {
        port_ = std::atoi(line.c_str() + prefix.size());
        if (port_ > 0) return ::testing::AssertionSuccess();
      }
      line.clear();
    }
  }

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int port_ = 0;
  std::string log_path_;
};

std::shared_ptr<grpc::Channel> Connect(int port) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() + kDeadline);
}

// GetIndexInfo; the status is checked by the caller.
grpc::Status GetInfo(v1::Miner::Stub& stub, v1::IndexInfo* info) {
  grpc::ClientContext context;
  SetDeadline(&context);
  return stub.GetIndexInfo(&context, v1::GetIndexInfoRequest(), info);
}

// Polls GetIndexInfo until the served sequence reaches `sequence`.
::testing::AssertionResult WaitForSequence(v1::Miner::Stub& stub,
                                           uint64_t sequence,
                                           v1::IndexInfo* info) {
  const Clock::time_point deadline = Clock::now() + kDeadline;
  while (Clock::now() < deadline) {
    grpc::Status status = GetInfo(stub, info);
    if (status.ok() && info->version().sequence() >= sequence) {
      return ::testing::AssertionSuccess();
    }
    // Polling an outside process: nothing else to block on. The condition
    // is checked after every pause, so its length only bounds the waste.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return ::testing::AssertionFailure()
         << "sequence " << sequence << " not served within the deadline; "
         << "last seen " << info->ShortDebugString();
}

bool HasEntryStartingWith(const std::string& dir, const std::string& prefix) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    if (absl::StartsWith(it->path().filename().string(), prefix)) return true;
  }
  return false;
}

// Blocks until an entry of `dir` starts with `prefix` (inotify, no polling).
::testing::AssertionResult WaitForEntry(const std::string& dir,
                                        const std::string& prefix) {
  const int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (fd < 0) return ::testing::AssertionFailure() << "inotify_init1 failed";
  // Watch first, then look: an entry made in between is seen either way.
  inotify_add_watch(fd, dir.c_str(), IN_MOVED_TO | IN_CREATE);
  const Clock::time_point deadline = Clock::now() + kDeadline;
  bool found = HasEntryStartingWith(dir, prefix);
  for (; !found && Clock::now() < deadline;
       found = HasEntryStartingWith(dir, prefix)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - Clock::now());
    pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(std::max<int64_t>(1, left.count()))) >
        0) {
      // The events' names too: a temporary entry may be renamed away
      // before the listing sees it.
      alignas(inotify_event) char events[4096];
      ssize_t got;
      while ((got = read(fd, events, sizeof(events))) > 0) {
        for (ssize_t at = 0; at < got;) {
          const auto* event =
              reinterpret_cast<const inotify_event*>(events + at);
          if (event->len > 0 &&
              std::string(event->name).rfind(prefix, 0) == 0) {
            found = true;
          }
          at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
        }
      }
      if (found) break;
    }
  }
  close(fd);
  if (found) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "no " << dir << "/" << prefix << "* within the deadline";
}

std::string SnapshotName(uint64_t sequence) {
  std::string digits = std::to_string(sequence);
  digits.insert(0, 20 - digits.size(), '0');
  return "snapshot-" + digits;
}

// Every snapshot-* under `data_dir` is complete: it has meta.json and loads
// on its own (a copy of it alone, made of hard links, is read).
void ExpectEverySnapshotComplete(const std::string& data_dir,
                                 const std::string& scratch) {
  for (const auto& entry : fs::directory_iterator(data_dir)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, "snapshot-")) continue;
    SCOPED_TRACE(name);
    EXPECT_TRUE(fs::exists(entry.path() / "meta.json"));
    const std::string alone = absl::StrCat(scratch, "/", name);
    fs::remove_all(alone);
    fs::create_directories(fs::path(alone) / name);
    for (const auto& file : fs::directory_iterator(entry.path())) {
      fs::create_hard_link(file.path(),
                           fs::path(alone) / name / file.path().filename());
    }
    absl::StatusOr<std::shared_ptr<const IndexVersion>> loaded =
        ReadNewestSnapshot({alone, 3, {}, {}});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(SnapshotName((*loaded)->info().sequence), name);
    fs::remove_all(alone);
  }
}

// The ids of the k best candidates of `data` for `query`, scored exactly as
// the server scores returned candidates (double sums rounded to float),
// ties by id.
std::vector<int64_t> ExactTopIds(const CheckpointData& data,
                                 const std::vector<float>& query, size_t k) {
  std::vector<std::pair<float, int64_t>> scored(data.rows);
  for (size_t r = 0; r < data.rows; ++r) {
    double sum = 0;
    for (size_t i = 0; i < kDim; ++i) {
      sum += static_cast<double>(query[i]) * data.embeddings[r * kDim + i];
    }
    scored[r] = {static_cast<float>(sum), data.ids[r]};
  }
  std::partial_sort(
      scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(k),
      scored.end(), [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
  std::vector<int64_t> ids;
  for (size_t j = 0; j < k; ++j) ids.push_back(scored[j].second);
  return ids;
}

// MineOnce answers exactly against `data`, and names its version.
void ExpectMinesAgainst(v1::Miner::Stub& stub, const CheckpointData& data,
                        uint64_t sequence) {
  constexpr size_t kQueries = 4;
  constexpr size_t kNegatives = 5;
  std::mt19937 rng(99);
  std::normal_distribution<float> normal;
  v1::MineRequest request;
  request.set_request_id(7);
  request.mutable_options()->set_num_negatives(kNegatives);
  std::vector<std::vector<float>> queries(kQueries);
  for (auto& query : queries) {
    v1::Query* q = request.add_queries();
    for (size_t i = 0; i < kDim; ++i) {
      query.push_back(normal(rng));
      q->add_embedding(query.back());
    }
  }
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::MineResponse response;
  grpc::Status status = stub.MineOnce(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.index().name(), data.name);
  EXPECT_EQ(response.index().sequence(), sequence);
  ASSERT_EQ(response.results_size(), static_cast<int>(kQueries));
  for (int q = 0; q < response.results_size(); ++q) {
    std::vector<int64_t> got;
    for (const v1::Negative& negative : response.results(q).negatives()) {
      got.push_back(negative.id());
    }
    EXPECT_EQ(got,
              ExactTopIds(data, queries[static_cast<size_t>(q)], kNegatives))
        << "query " << q;
  }
}

enum class KillPoint {
  kAtManifest,  // as soon as v2's manifest.json is in place
  kAfter20Ms,   // somewhere in reading, building or snapshotting v2
  kAfter100Ms,  // (timing-dependent: each run samples other points)
  kAfter300Ms,
  kWhileSnapshotting,  // as soon as v2's temporary snapshot dir appears
  kWhenServed,         // as soon as GetIndexInfo reports v2
  kWhenSnapshotted,    // once snapshot 2 is in place
};

std::string KillPointName(KillPoint point) {
  switch (point) {
    case KillPoint::kAtManifest:
      return "AtManifest";
    case KillPoint::kAfter20Ms:
      return "After20Ms";
    case KillPoint::kAfter100Ms:
      return "After100Ms";
    case KillPoint::kAfter300Ms:
      return "After300Ms";
    case KillPoint::kWhileSnapshotting:
      return "WhileSnapshotting";
    case KillPoint::kWhenServed:
      return "WhenServed";
    case KillPoint::kWhenSnapshotted:
      return "WhenSnapshotted";
  }
  return "Unknown";
}

class RestartTest : public ::testing::TestWithParam<KillPoint> {
 protected:
  static void SetUpTestSuite() {
    staging_ = new std::string(
        absl::StrCat(::testing::TempDir(), "/restart_test_staging_", getpid()));
    fs::remove_all(*staging_);
    fs::create_directories(*staging_);
    v1_ = new CheckpointData(MakeData("v1", 1, kSmallRows, 1000000, 1));
    v2_ = new CheckpointData(MakeData("v2", 2, kBigRows, 2000000, 2));
    v3_ = new CheckpointData(MakeData("v3", 3, kSmallRows, 3000000, 3));
    for (const CheckpointData* data : {v1_, v2_, v3_}) {
      WriteStaged(*staging_, *data);
    }
  }

  static void TearDownTestSuite() {
    fs::remove_all(*staging_);
    delete staging_;
    delete v1_;
    delete v2_;
    delete v3_;
  }

  void SetUp() override {
    root_ = absl::StrCat(::testing::TempDir(), "/restart_test_",
                         KillPointName(GetParam()), "_", getpid());
    fs::remove_all(root_);
    for (const char* sub : {"/checkpoints", "/empty", "/data", "/scratch"}) {
      fs::create_directories(root_ + sub);
    }
  }

  void TearDown() override {
    if (!HasFailure()) {
      fs::remove_all(root_);
      return;
    }
    // Keep only the servers' logs for a post-mortem.
    for (const char* sub : {"/checkpoints", "/empty", "/data", "/scratch"}) {
      fs::remove_all(root_ + sub);
    }
  }

  std::vector<std::string> Flags(const std::string& checkpoints) const {
    return {"--checkpoints=" + checkpoints,
            "--data_dir=" + root_ + "/data",
            "--grpc_port=0",
            "--host=127.0.0.1",
            "--poll_interval=100ms",
            "--threads=1"};
  }

  static std::string* staging_;
  static CheckpointData* v1_;
  static CheckpointData* v2_;
  static CheckpointData* v3_;
  std::string root_;
};

std::string* RestartTest::staging_ = nullptr;
CheckpointData* RestartTest::v1_ = nullptr;
CheckpointData* RestartTest::v2_ = nullptr;
CheckpointData* RestartTest::v3_ = nullptr;

TEST_P(RestartTest, RestartServesTheLastCompleteSnapshot) {
  const KillPoint point = GetParam();
  const std::string data_dir = root_ + "/data";
  const std::string checkpoints = root_ + "/checkpoints";
  uint64_t served_before_kill = 0;
  {
    DropCheckpoint(*staging_ + "/v1", checkpoints);
    ServerProcess server;
    std::vector<std::string> flags = Flags(checkpoints);
    if (point == KillPoint::kWhileSnapshotting) {
      // Rows on the heap: the snapshot writes its vectors.npy (with mapped
      // rows it only links the server's copy, and is over in an instant).
      flags.push_back("--mmap_vectors=false");
    }
    ASSERT_TRUE(server.Start(flags, root_ + "/first.log"));
    auto stub = v1::Miner::NewStub(Connect(server.port()));
    v1::IndexInfo info;
    grpc::Status status = GetInfo(*stub, &info);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(info.version().name(), "v1");
    EXPECT_EQ(info.version().sequence(), 1u);
    served_before_kill = info.version().sequence();

    DropCheckpoint(*staging_ + "/v2", checkpoints);
    switch (point) {
      case KillPoint::kAtManifest:
        break;
      case KillPoint::kAfter20Ms:
      case KillPoint::kAfter100Ms:
      case KillPoint::kAfter300Ms: {
        // Not synchronisation: where the kill lands is the variable under
        // test, and every landing point must be safe.
        const int ms = point == KillPoint::kAfter20Ms    ? 20
                       : point == KillPoint::kAfter100Ms ? 100
                                                         : 300;
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        if (GetInfo(*stub, &info).ok()) {
          served_before_kill =
              std::max<uint64_t>(served_before_kill, info.version().sequence());
        }
        break;
      }
      case KillPoint::kWhileSnapshotting:
        ASSERT_TRUE(WaitForEntry(data_dir, ".tmp-snapshot-2-")) << server.Log();
        if (GetInfo(*stub, &info).ok()) {
          served_before_kill = info.version().sequence();
        }
        break;
      case KillPoint::kWhenServed:
        ASSERT_TRUE(WaitForSequence(*stub, 2, &info)) << server.Log();
        served_before_kill = info.version().sequence();
        break;
      case KillPoint::kWhenSnapshotted:
        ASSERT_TRUE(WaitForEntry(data_dir, SnapshotName(2))) << server.Log();
        if (GetInfo(*stub, &info).ok()) {
          served_before_kill = info.version().sequence();
        }
        break;
    }
    server.Kill();
  }

  ExpectEverySnapshotComplete(data_dir, root_ + "/scratch");

  // No checkpoint at all: whatever serves comes from the snapshots.
  ServerProcess restarted;
  ASSERT_TRUE(restarted.Start(Flags(root_ + "/empty"), root_ + "/second.log"));
  auto stub = v1::Miner::NewStub(Connect(restarted.port()));
  v1::IndexInfo info;
  grpc::Status status = GetInfo(*stub, &info);
  ASSERT_TRUE(status.ok()) << status.error_message() << restarted.Log();
  const uint64_t sequence = info.version().sequence();
  EXPECT_GE(sequence, served_before_kill)
      << "the restarted server went back to an older version than the one "
         "served before the kill; its log:\n"
      << restarted.Log();
  ASSERT_TRUE(sequence == 1 || sequence == 2) << info.ShortDebugString();
  const CheckpointData& data = sequence == 1 ? *v1_ : *v2_;
  EXPECT_EQ(info.version().name(), data.name);
  EXPECT_EQ(info.step(), data.step);
  EXPECT_EQ(info.size(), data.rows);
  EXPECT_EQ(info.dim(), kDim);
  EXPECT_EQ(info.metric(), "inner_product");
  EXPECT_TRUE(info.has_labels());
  if (point == KillPoint::kWhenSnapshotted) {
    EXPECT_EQ(sequence, 2u);
  }

  auto health = grpc::health::v1::Health::NewStub(Connect(restarted.port()));
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(health->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  ExpectMinesAgainst(*stub, data, sequence);

  // The restore removed what the kill left half-written.
  for (const auto& entry : fs::directory_iterator(data_dir)) {
    EXPECT_FALSE(absl::StartsWith(entry.path().filename().string(), ".tmp-"))
        << entry.path();
  }

  // The sequence continues from the restored one.
  DropCheckpoint(*staging_ + "/v3", root_ + "/empty");
  ASSERT_TRUE(WaitForSequence(*stub, sequence + 1, &info)) << restarted.Log();
  EXPECT_EQ(info.version().name(), "v3");
  EXPECT_EQ(info.version().sequence(), sequence + 1);
  ExpectMinesAgainst(*stub, *v3_, sequence + 1);
}

// Hostile checkpoints, as a real server meets them at start and at every
// restart: a manifest of 100,000 nested arrays used to overflow the stack
// (a segfault, and a crash-loop). It is rejected and reported, the good
// checkpoint serves, and SIGTERM exits 0, twice in a row.
TEST(HostileCheckpointTest, RejectedAtEveryStartAndTheServerExitsCleanly) {
  const std::string root =
      absl::StrCat(::testing::TempDir(), "/restart_test_hostile_", getpid());
  fs::remove_all(root);
  fs::create_directories(root + "/checkpoints/deep");
  WriteStaged(root + "/checkpoints", MakeData("good", 1, 100, 0, 7));
  std::ofstream(root + "/checkpoints/deep/manifest.json")
      << std::string(100000, '[') << std::string(100000, ']');
  for (int start = 0; start < 2; ++start) {
    ServerProcess server;
    const std::string log = absl::StrCat(root, "/server", start, ".log");
    ASSERT_TRUE(
        server.Start({"--checkpoints=" + root + "/checkpoints",
                      "--data_dir=" + root + "/data", "--grpc_port=0",
                      "--metrics_port=-1", "--host=127.0.0.1", "--threads=1"},
                     log));
    {
      // Closed before the SIGTERM: an idle C++ channel answers the server's
      // shutdown ping only at its backup poll, 5 s later.
      auto stub = v1::Miner::NewStub(Connect(server.port()));
      v1::IndexInfo info;
      ASSERT_TRUE(GetInfo(*stub, &info).ok());
      EXPECT_EQ(info.version().name(), "good");
      if (start == 0) {
        EXPECT_THAT(info.last_rejected(),
                    ::testing::HasSubstr("nested deeper than"));
      }
    }
    const int status = server.Terminate();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "wait status " << status << "; log:\n"
        << ReadFile(log);
    EXPECT_THAT(ReadFile(log), ::testing::HasSubstr("event=stopped"));
  }
  fs::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(
    KillPoints, RestartTest,
    ::testing::Values(KillPoint::kAtManifest, KillPoint::kAfter20Ms,
                      KillPoint::kAfter100Ms, KillPoint::kAfter300Ms,
                      KillPoint::kWhileSnapshotting, KillPoint::kWhenServed,
                      KillPoint::kWhenSnapshotted),
    [](const auto& param_info) { return KillPointName(param_info.param); });

}  // namespace
}  // namespace hardneg

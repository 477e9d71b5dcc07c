// A version swap under concurrent streaming load: zero failed requests,
// each stream switches version exactly once, and every answer is exact
// against the version it reports.
#include <atomic>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "format/checkpoint.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "mining/miner.h"
#include "server/server.h"
#include "versions/index_manager.h"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kDim = 32;
constexpr int kCandidates = 4000;
constexpr int kQueries = 4;
constexpr int kStreams = 6;

void WriteVersion(const std::string& root, const std::string& name,
                  uint64_t step) {
  std::mt19937 rng(static_cast<uint32_t>(step * 7919));
  std::normal_distribution<float> normal;
  std::vector<float> embeddings(size_t{kCandidates} * kDim);
  for (float& v : embeddings) v = normal(rng);
  std::vector<int64_t> ids(kCandidates), labels(kCandidates);
  for (int i = 0; i < kCandidates; ++i) {
    ids[i] = i;
    labels[i] = i % 4;
  }
  CheckpointManifest manifest;
  manifest.name = name;
  manifest.step = step;
  manifest.dim = kDim;
  manifest.metric = Metric::kInnerProduct;
  ASSERT_TRUE(WriteCheckpoint(root, manifest, embeddings, ids, labels).ok());
}

v1::MineRequest Request(uint64_t id, const std::vector<float>& queries) {
  v1::MineRequest request;
  request.set_request_id(id);
  request.mutable_options()->set_num_negatives(5);
  for (int q = 0; q < kQueries; ++q) {
    v1::Query* query = request.add_queries();
    query->mutable_embedding()->Add(queries.begin() + q * kDim,
                                    queries.begin() + (q + 1) * kDim);
    query->set_label(q % 4);
    query->add_positive_ids(q * 10);
  }
  return request;
}

// The ids the in-process Miner gives for Request() on `version`.
std::vector<std::vector<int64_t>> Expected(const IndexVersion& version,
                                           const std::vector<float>& queries) {
  std::vector<MiningQuery> mq(kQueries);
  std::vector<int64_t> positives(kQueries);
  for (int q = 0; q < kQueries; ++q) {
    positives[q] = q * 10;
    mq[q].embedding = absl::MakeConstSpan(queries.data() + q * kDim, kDim);
    mq[q].positive_ids = absl::MakeConstSpan(&positives[q], 1);
    mq[q].label = q % 4;
  }
  MiningOptions options;
  options.num_negatives = 5;
  auto results = Miner().Mine(version, mq, options);
  EXPECT_TRUE(results.ok());
  std::vector<std::vector<int64_t>> ids;
  for (const MiningResult& r : *results) {
    ids.emplace_back();
    for (const MinedNegative& n : r.negatives) ids.back().push_back(n.id);
  }
  return ids;
}

TEST(SwapTest, SwapUnderStreamingLoadFailsNothing) {
  const std::string root =
      ::testing::TempDir() + "/hardneg_swap_test_" + std::to_string(::getpid());
  fs::remove_all(root);
  fs::create_directories(root);
  WriteVersion(root, "v1", 1);
  IndexManagerOptions options;
  options.checkpoints_dir = root;
  IndexManager manager(options);
  ASSERT_TRUE(manager.LoadNewest().ok());
  std::shared_ptr<const IndexVersion> first = manager.Current();
  ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.threads = 2;
  auto server = HardnegServer::Start(server_options, &manager);
  ASSERT_TRUE(server.ok());
  manager.StartWatching(absl::Milliseconds(50));
  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                          grpc::InsecureChannelCredentials());

  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> queries(kQueries * kDim);
  for (float& v : queries) v = normal(rng);

  // A request insisting on a version that is not live yet.
  {
    auto stub = v1::Miner::NewStub(channel);
    v1::MineRequest request = Request(1, queries);
    request.mutable_options()->set_min_index_sequence(2);
    grpc::ClientContext context;
    v1::MineResponse response;
    grpc::Status status = stub->MineOnce(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::FAILED_PRECONDITION);
    EXPECT_THAT(status.error_message(), HasSubstr("min_index_sequence"));
  }

  std::atomic<int> warmed_up{0};
  absl::Notification all_warm;
  std::atomic<bool> swapped{false};
  struct Seen {
    std::vector<uint64_t> sequences;
    std::vector<std::vector<std::vector<int64_t>>> ids;
    int errors = 0;
  };
  std::vector<Seen> seen(kStreams);
  std::vector<std::thread> streams;
  for (int s = 0; s < kStreams; ++s) {
    streams.emplace_back([&, s] {
      auto stub = v1::Miner::NewStub(channel);
      grpc::ClientContext context;
      auto stream = stub->Mine(&context);
      int after_swap = 0;
      // Bounded: at most 5000 requests per stream.
      for (uint64_t i = 0; i < 5000 && after_swap < 30; ++i) {
        if (!stream->Write(Request(i, queries))) break;
        v1::MineResponse response;
        if (!stream->Read(&response)) break;
        if (response.error().code() != 0 || response.request_id() != i) {
          ++seen[s].errors;
          continue;
        }
        seen[s].sequences.push_back(response.index().sequence());
        auto& ids = seen[s].ids.emplace_back();
        for (const v1::QueryResult& r : response.results()) {
          auto& row = ids.emplace_back();
          for (const v1::Negative& n : r.negatives()) row.push_back(n.id());
        }
        if (i == 20 && ++warmed_up == kStreams) all_warm.Notify();
        if (swapped && response.index().sequence() == 2) ++after_swap;
      }
      stream->WritesDone();
      EXPECT_TRUE(stream->Finish().ok());
    });
  }
  ASSERT_TRUE(all_warm.WaitForNotificationWithTimeout(absl::Seconds(60)));
  WriteVersion(root, "v2", 2);
  swapped = true;
  for (auto& t : streams) t.join();

  std::shared_ptr<const IndexVersion> second = manager.Current();
  ASSERT_EQ(second->info().name, "v2");
  const auto expected1 = Expected(*first, queries);
  const auto expected2 = Expected(*second, queries);
  ASSERT_NE(expected1, expected2);
  for (int s = 0; s < kStreams; ++s) {
    SCOPED_TRACE(s);
    EXPECT_EQ(seen[s].errors, 0);
    int switches = 0;
    for (size_t i = 0; i < seen[s].sequences.size(); ++i) {
      const uint64_t seq = seen[s].sequences[i];
      ASSERT_TRUE(seq == 1 || seq == 2);
      if (i > 0 && seq != seen[s].sequences[i - 1]) ++switches;
      EXPECT_EQ(seen[s].ids[i], seq == 1 ? expected1 : expected2) << i;
    }
    EXPECT_EQ(switches, 1);
    EXPECT_EQ(seen[s].sequences.front(), 1u);
    EXPECT_EQ(seen[s].sequences.back(), 2u);
  }
  server->reset();
  fs::remove_all(root);
}

}  // namespace
}  // namespace hardneg

// hardneg::Client against a real in-process server: the plain-struct API,
// in-band errors on a stream that stays usable, and index info.
#include "client/client.h"

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "format/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "versions/index_manager.h"

namespace hardneg {
namespace {

using client::FailedRequestId;
using client::MineReply;
using ::testing::HasSubstr;
using ClientOptions = client::ClientOptions;
using ClientIndexInfo = client::IndexInfo;
using ClientMiningOptions = client::MiningOptions;
using ClientNegative = client::Negative;
using ClientQueryResult = client::QueryResult;

constexpr int kDim = 8;
constexpr int kCandidates = 200;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/hardneg_client_test_" +
            std::to_string(::getpid());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
    std::mt19937 rng(11);
    std::normal_distribution<float> normal;
    embeddings_.resize(size_t{kCandidates} * kDim);
    for (float& v : embeddings_) v = normal(rng);
    std::vector<int64_t> ids(kCandidates), labels(kCandidates);
    for (int i = 0; i < kCandidates; ++i) {
      ids[i] = i;
      labels[i] = i % 3;
    }
    CheckpointManifest manifest;
    manifest.name = "c1";
    manifest.step = 9;
    manifest.dim = kDim;
    manifest.metric = Metric::kL2;
    ASSERT_TRUE(
        WriteCheckpoint(root_, manifest, embeddings_, ids, labels).ok());
    IndexManagerOptions options;
    options.checkpoints_dir = root_;
    manager_ = std::make_unique<IndexManager>(options);
    ASSERT_TRUE(manager_->LoadNewest().ok());
    ServerOptions server_options;
    server_options.host = "127.0.0.1";
    server_options.port = 0;
    server_options.threads = 2;
    auto server = HardnegServer::Start(server_options, manager_.get());
    ASSERT_TRUE(server.ok());
    server_ = *std::move(server);
    auto client = Client::Connect(
        "127.0.0.1:" + std::to_string(server_->port()), ClientOptions{});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  void TearDown() override {
    client_.reset();
    server_.reset();
    manager_.reset();
    std::filesystem::remove_all(root_);
  }

  // Candidate `row` itself as a query, excluding itself by id.
  client::Query SelfQuery(int row) const {
    client::Query q;
    q.embedding.assign(embeddings_.begin() + row * kDim,
                       embeddings_.begin() + (row + 1) * kDim);
    q.query_id = row;
    return q;
  }

  std::string root_;
  std::vector<float> embeddings_;
  std::unique_ptr<IndexManager> manager_;
  std::unique_ptr<HardnegServer> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, MineOnceReturnsPlainStructs) {
  ClientMiningOptions options;
  options.num_negatives = 4;
  client::Query q = SelfQuery(17);
  q.positive_ids = {3};
  q.label = 1;
  absl::StatusOr<MineReply> reply = client_->MineOnce({q}, options, 77);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->request_id, 77u);
  EXPECT_EQ(reply->index.name, "c1");
  EXPECT_EQ(reply->index.sequence, 1u);
  ASSERT_EQ(reply->results.size(), 1u);
  const ClientQueryResult& result = reply->results[0];
  ASSERT_EQ(result.negatives.size(), 4u);
  ASSERT_TRUE(result.positive_score.has_value());
  for (size_t i = 0; i < result.negatives.size(); ++i) {
    const ClientNegative& n = result.negatives[i];
    EXPECT_NE(n.id, 17);
    EXPECT_NE(n.id, 3);
    EXPECT_NE(n.label, 1);
    EXPECT_EQ(n.rank, i);
    if (i > 0) {
      EXPECT_LE(result.negatives[i - 1].score, n.score);  // L2
    }
  }
}

TEST_F(ClientTest, StreamReportsInBandErrorsAndStaysUsable) {
  std::unique_ptr<MineStream> stream = client_->OpenStream();
  ClientMiningOptions options;
  options.num_negatives = 2;
  client::Query bad = SelfQuery(1);
  bad.embedding.pop_back();
  ASSERT_TRUE(stream->Send(1, {SelfQuery(0)}, options).ok());
  ASSERT_TRUE(stream->Send(2, {SelfQuery(0), bad}, options).ok());
  ASSERT_TRUE(stream->Send(3, {SelfQuery(2)}, options).ok());
  ASSERT_TRUE(stream->CloseSend().ok());

  absl::StatusOr<MineReply> first = stream->Receive();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->request_id, 1u);
  absl::StatusOr<MineReply> second = stream->Receive();
  EXPECT_EQ(second.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("queries[1].embedding"));
  EXPECT_EQ(FailedRequestId(second.status()), 2u);
  absl::StatusOr<MineReply> third = stream->Receive();
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->request_id, 3u);
  EXPECT_EQ(stream->Receive().status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(stream->CloseAndFinish().ok());
}

TEST_F(ClientTest, IndexInfo) {
  absl::StatusOr<ClientIndexInfo> info = client_->GetIndexInfo();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version.name, "c1");
  EXPECT_EQ(info->size, static_cast<uint64_t>(kCandidates));
  EXPECT_EQ(info->dim, static_cast<uint32_t>(kDim));
  EXPECT_EQ(info->metric, "l2");
  EXPECT_EQ(info->step, 9u);
  EXPECT_TRUE(info->has_labels);
}

TEST_F(ClientTest, UnaryErrorsKeepTheirCode) {
  ClientMiningOptions options;
  options.num_negatives = 0;
  absl::StatusOr<MineReply> reply = client_->MineOnce({SelfQuery(0)}, options);
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(reply.status().message()),
              HasSubstr("num_negatives"));
}

}  // namespace
}  // namespace hardneg

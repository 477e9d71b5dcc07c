// Publish over gRPC against a real in-process server on loopback TCP: full
// and incremental publishes through the client library, wait=false, bad
// streams, the memory budget and schema changes. Every failure must leave
// the old version serving.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "format/checkpoint.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "mining/miner.h"
#include "server/miner_service.h"
#include "server/publish_reactor.h"
#include "server/worker_pool.h"
#include "versions/index_manager.h"

namespace hardneg {
namespace {

using ::testing::Contains;
using ::testing::Each;
using ::testing::Ge;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint32_t kDim = 8;
constexpr int kCandidates = 200;  // ids 0..199 in the first version

// The Miner service with Publish served by NewPublishReactor, the other
// RPCs by MinerService.
class PublishingService final : public RawMinerCallbackService {
 public:
  PublishingService(IndexManager* manager, MinerService* service)
      : manager_(manager), service_(service) {}

  grpc::ServerUnaryReactor* MineOnce(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override {
    return service_->MineOnce(context, request, response);
  }
  grpc::ServerUnaryReactor* GetIndexInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override {
    return service_->GetIndexInfo(context, request, response);
  }
  grpc::ServerReadReactor<grpc::ByteBuffer>* Publish(
      grpc::CallbackServerContext* context,
      grpc::ByteBuffer* response) override {
    return NewPublishReactor(context, response, manager_, &builds_);
  }

 private:
  IndexManager* const manager_;
  MinerService* const service_;
  PublishBuilds builds_;  // joined before the manager goes
};

// Rows to publish.
struct Rows {
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;
  std::vector<float> embeddings;

  void Add(int64_t id, int64_t label, const std::vector<float>& v) {
    ids.push_back(id);
    labels.push_back(label);
    embeddings.insert(embeddings.end(), v.begin(), v.end());
  }
  std::vector<float> Row(size_t row, uint32_t dim = kDim) const {
    return std::vector<float>(embeddings.begin() + row * dim,
                              embeddings.begin() + (row + 1) * dim);
  }
};

Rows RandomRows(int n, int64_t first_id, uint32_t seed, uint32_t dim = kDim) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Rows rows;
  for (int i = 0; i < n; ++i) {
    std::vector<float> v(dim);
    for (float& x : v) x = normal(rng);
    rows.Add(first_id + i, i % 3, v);
  }
  return rows;
}

client::PublishSpec Spec(const std::string& name, uint64_t step,
                         const Rows& rows, uint32_t dim = kDim) {
  client::PublishSpec spec;
  spec.name = name;
  spec.step = step;
  spec.dim = dim;
  spec.ids = rows.ids;
  spec.labels = rows.labels;
  spec.embeddings = rows.embeddings;
  spec.chunk_rows = 64;
  return spec;
}

class PublishServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(IndexManagerOptions{}); }

  // Serves a first version "v1" (L2, step 10) of kCandidates rows.
  void Start(IndexManagerOptions options) {
    root_ = ::testing::TempDir() + "/hardneg_publish_service_test_" +
            std::to_string(::getpid());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
    first_ = RandomRows(kCandidates, 0, 1);
    CheckpointManifest manifest;
    manifest.name = "v1";
    manifest.step = 10;
    manifest.dim = kDim;
    manifest.metric = Metric::kL2;
    ASSERT_TRUE(WriteCheckpoint(root_, manifest, first_.embeddings, first_.ids,
                                first_.labels)
                    .ok());
    options.checkpoints_dir = root_;
    manager_ = std::make_unique<IndexManager>(options);
    ASSERT_TRUE(manager_->LoadNewest().ok());
    ASSERT_NE(manager_->Current(), nullptr);

    pool_ = std::make_unique<WorkerPool>(2);
    miner_service_ =
        std::make_unique<MinerService>(manager_.get(), &miner_, pool_.get());
    service_ = std::make_unique<PublishingService>(manager_.get(),
                                                   miner_service_.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.SetMaxReceiveMessageSize(64 << 20);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto client = Client::Connect("127.0.0.1:" + std::to_string(port_),
                                  client::ClientOptions{});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  void TearDown() override {
    client_.reset();
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    service_.reset();  // waits for builds still running
    // The pool's last DrainQueue tasks still use the MinerService: drain
    // them first, as HardnegServer::Shutdown does.
    pool_.reset();
    miner_service_.reset();
    manager_.reset();
    std::filesystem::remove_all(root_);
  }

  std::unique_ptr<v1::Miner::Stub> Stub() {
    return v1::Miner::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                            grpc::InsecureChannelCredentials()));
  }

  // Mines `embedding` for `n` negatives (L2: the closest first).
  client::MineReply Mine(const std::vector<float>& embedding, uint32_t n) {
    client::Query query;
    query.embedding = embedding;
    client::MiningOptions options;
    options.num_negatives = n;
    absl::StatusOr<client::MineReply> reply =
        client_->MineOnce({query}, options);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? *std::move(reply) : client::MineReply{};
  }

  std::vector<int64_t> Ids(const client::MineReply& reply) {
    std::vector<int64_t> ids;
    for (const client::QueryResult& result : reply.results) {
      for (const client::Negative& n : result.negatives) ids.push_back(n.id);
    }
    return ids;
  }

  // The served version, as GetIndexInfo reports it.
  client::IndexInfo Info() {
    absl::StatusOr<client::IndexInfo> info = client_->GetIndexInfo();
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? *std::move(info) : client::IndexInfo{};
  }

  void ExpectFirstVersionServes() {
    const client::IndexInfo info = Info();
    EXPECT_EQ(info.version.name, "v1");
    EXPECT_EQ(info.version.sequence, 1u);
    EXPECT_EQ(info.size, static_cast<uint64_t>(kCandidates));
    EXPECT_EQ(info.dim, kDim);
  }

  std::string root_;
  Rows first_;
  std::unique_ptr<IndexManager> manager_;
  Miner miner_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<MinerService> miner_service_;
  std::unique_ptr<PublishingService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<Client> client_;
};

TEST_F(PublishServiceTest, FullPublishServesTheNewData) {
  for (const bool send_bytes : {false, true}) {
    SCOPED_TRACE(send_bytes ? "embeddings_bytes" : "packed floats");
    const uint64_t sequence = Info().version.sequence;
    const std::string name = send_bytes ? "v-bytes" : "v-floats";
    const Rows rows = RandomRows(300, 10000, send_bytes ? 2 : 3);
    client::PublishSpec spec = Spec(name, 20, rows);
    spec.send_bytes = send_bytes;
    std::vector<client::PublishProgress> progress;
    absl::StatusOr<client::ServedVersion> version = client_->Publish(
        spec, [&](const client::PublishProgress& p) { progress.push_back(p); });
    ASSERT_TRUE(version.ok()) << version.status();
    EXPECT_EQ(version->name, name);
    EXPECT_EQ(version->sequence, sequence + 1);
    ASSERT_EQ(progress.size(), 5u);  // 300 rows in chunks of 64
    EXPECT_EQ(progress.back().rows_sent, 300u);
    EXPECT_EQ(progress.back().total_rows, 300u);

    // Row 17 itself is the closest candidate (L2, score 0), and every
    // negative comes from the new data.
    const client::MineReply reply = Mine(rows.Row(17), 50);
    EXPECT_EQ(reply.index.name, name);
    EXPECT_EQ(reply.index.sequence, sequence + 1);
    const std::vector<int64_t> ids = Ids(reply);
    ASSERT_EQ(ids.size(), 50u);
    EXPECT_EQ(ids[0], 10017);
    EXPECT_THAT(ids, Each(Ge(10000)));
    const client::IndexInfo info = Info();
    EXPECT_EQ(info.size, 300u);
    EXPECT_EQ(info.step, 20u);
    EXPECT_EQ(info.metric, "l2");  // the served version's, as none was given
  }
}

TEST_F(PublishServiceTest, IncrementalPublishUpsertsAndDeletes) {
  Rows upserts;
  upserts.Add(5, 2, std::vector<float>(kDim, 40.0f));      // moves id 5
  upserts.Add(9999, 1, std::vector<float>(kDim, -40.0f));  // new
  std::vector<int64_t> deleted;
  for (int64_t id = 100; id < 150; ++id) deleted.push_back(id);
  client::PublishSpec spec = Spec("v1-delta", 11, upserts);
  spec.base_version = "v1";
  spec.delete_ids = deleted;
  absl::StatusOr<client::ServedVersion> version = client_->Publish(spec);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->name, "v1-delta");
  EXPECT_EQ(version->sequence, 2u);
  EXPECT_EQ(Info().size, static_cast<uint64_t>(kCandidates - 50 + 1));

  // Every remaining candidate, nearest first: the new id 9999 sits at its
  // new place, id 5 at its, and no deleted id comes back.
  const client::MineReply near_new = Mine(upserts.Row(1), kCandidates);
  EXPECT_EQ(near_new.index.name, "v1-delta");
  std::vector<int64_t> ids = Ids(near_new);
  ASSERT_EQ(ids.size(), static_cast<size_t>(kCandidates - 50 + 1));
  EXPECT_EQ(ids.front(), 9999);
  EXPECT_EQ(ids.back(), 5);
  for (const int64_t id : deleted) EXPECT_THAT(ids, Not(Contains(id)));
  EXPECT_EQ(Ids(Mine(upserts.Row(0), 1)), std::vector<int64_t>{5});
  // An untouched row is still where it was.
  EXPECT_EQ(Ids(Mine(first_.Row(42), 1)), std::vector<int64_t>{42});

  // A second delta against the new version; one against the old name fails.
  const Rows no_rows;
  client::PublishSpec stale = Spec("v1-delta2", 12, no_rows);
  stale.base_version = "v1";
  stale.delete_ids = deleted;
  EXPECT_EQ(client_->Publish(stale).status().code(),
            absl::StatusCode::kFailedPrecondition);
  stale.base_version = "v1-delta";
  const std::vector<int64_t> delete_five = {5};
  stale.delete_ids = delete_five;
  ASSERT_TRUE(client_->Publish(stale).ok());
  EXPECT_THAT(Ids(Mine(upserts.Row(0), kCandidates)), Not(Contains(5)));
}

TEST_F(PublishServiceTest, NoWaitAnswersBeforeTheVersionServes) {
  const Rows rows = RandomRows(2000, 50000, 4);
  client::PublishSpec spec = Spec("v-later", 30, rows);
  spec.chunk_rows = 500;
  spec.wait = false;
  absl::StatusOr<client::ServedVersion> version = client_->Publish(spec);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->name, "v-later");
  EXPECT_EQ(version->sequence, 0u);  // not serving yet when answered

  client::IndexInfo info;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    info = Info();
    if (info.version.name == "v-later") break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(info.version.name, "v-later");
  EXPECT_EQ(info.version.sequence, 2u);
  EXPECT_EQ(info.size, 2000u);
}

TEST_F(PublishServiceTest, RejectsAStreamThatDoesNotStartWithAHeader) {
  auto stub = Stub();
  {
    grpc::ClientContext context;
    v1::PublishResponse response;
    auto writer = stub->Publish(&context, &response);
    v1::PublishRequest request;
    request.mutable_chunk()->add_ids(1);
    for (uint32_t i = 0; i < kDim; ++i) {
      request.mutable_chunk()->add_embeddings(1);
    }
    writer->Write(request);
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(),
                HasSubstr("the first PublishRequest must carry a header"));
  }
  {
    grpc::ClientContext context;
    v1::PublishResponse response;
    auto writer = stub->Publish(&context, &response);
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("without a header"));
  }
  ExpectFirstVersionServes();
}

TEST_F(PublishServiceTest, RejectsBadChunksAndCutShortStreams) {
  auto stub = Stub();
  // Sends a header then `chunk`; returns the RPC's status.
  auto publish = [&](const v1::PublishChunk& chunk,
                     std::optional<uint64_t> total_ids) {
    grpc::ClientContext context;
    v1::PublishResponse response;
    auto writer = stub->Publish(&context, &response);
    v1::PublishRequest request;
    request.mutable_header()->set_name("bad");
    request.mutable_header()->set_dim(kDim);
    if (total_ids) request.mutable_header()->set_total_ids(*total_ids);
    writer->Write(request);
    *request.mutable_chunk() = chunk;
    writer->Write(request);
    writer->WritesDone();
    return writer->Finish();
  };
  v1::PublishChunk both;
  both.add_ids(1);
  for (uint32_t i = 0; i < kDim; ++i) both.add_embeddings(1);
  both.set_embeddings_bytes(std::string(kDim * 4, '\0'));
  grpc::Status status = publish(both, std::nullopt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("both embeddings"));

  v1::PublishChunk ragged;
  ragged.add_ids(1);
  ragged.set_embeddings_bytes(std::string(kDim * 4 - 1, '\0'));
  status = publish(ragged, std::nullopt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("multiple of 4"));

  v1::PublishChunk one_row;
  one_row.add_ids(1);
  for (uint32_t i = 0; i < kDim; ++i) one_row.add_embeddings(1);
  status = publish(one_row, 2);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("cut short"));

  v1::PublishChunk nan_row = one_row;
  nan_row.set_embeddings(3, std::nanf(""));
  status = publish(nan_row, std::nullopt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("id 1"));
  ExpectFirstVersionServes();
}

TEST_F(PublishServiceTest, CancelledPublishInstallsNothing) {
  auto stub = Stub();
  {
    grpc::ClientContext context;
    v1::PublishResponse response;
    auto writer = stub->Publish(&context, &response);
    v1::PublishRequest request;
    request.mutable_header()->set_name("cancelled");
    request.mutable_header()->set_dim(kDim);
    ASSERT_TRUE(writer->Write(request));
    request.mutable_chunk()->add_ids(1);
    for (uint32_t i = 0; i < kDim; ++i) {
      request.mutable_chunk()->add_embeddings(1);
    }
    ASSERT_TRUE(writer->Write(request));
    context.TryCancel();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The next publish gets the next sequence: nothing came in between.
  absl::StatusOr<client::ServedVersion> version =
      client_->Publish(Spec("after", 20, RandomRows(10, 0, 5)));
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->sequence, 2u);
}

TEST_F(PublishServiceTest, DimensionChangeNeedsAllowSchemaChange) {
  const Rows wide = RandomRows(100, 0, 6, 2 * kDim);
  absl::StatusOr<client::ServedVersion> version =
      client_->Publish(Spec("wide", 20, wide, 2 * kDim));
  EXPECT_EQ(version.status().code(), absl::StatusCode::kFailedPrecondition);
  ExpectFirstVersionServes();
  EXPECT_EQ(Mine(first_.Row(3), 1).index.name, "v1");
}

class PublishBudgetTest : public PublishServiceTest {
 protected:
  void SetUp() override {
    IndexManagerOptions options;
    options.max_index_bytes = 256 << 10;  // v1 takes a few tens of KiB
    Start(options);
  }
};

TEST_F(PublishBudgetTest, OverBudgetIsResourceExhaustedAndKeepsServing) {
  const Rows big = RandomRows(20000, 0, 7);  // ~1 MiB of floats
  absl::StatusOr<client::ServedVersion> version =
      client_->Publish(Spec("big", 20, big));
  EXPECT_EQ(version.status().code(), absl::StatusCode::kResourceExhausted);
  ExpectFirstVersionServes();

  version = client_->Publish(Spec("small", 20, RandomRows(100, 0, 8)));
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->sequence, 2u);
}

}  // namespace
}  // namespace hardneg

namespace hardneg {
namespace {

// An IVF index, whose build reports progress halfway (once trained).
class PublishProgressTest : public PublishServiceTest {
 protected:
  void SetUp() override {
    IndexManagerOptions options;
    options.build.factory = "IVF4,Flat";
    Start(options);
  }
};

// A waiting Publish follows the server's build: the server's build is held
// halfway until the client has reported it, so nothing depends on timing.
TEST_F(PublishProgressTest, AWaitingPublishReportsTheServersBuild) {
  absl::Notification halfway;
  absl::Notification seen;
  IndexEvents events;
  events.progress = [&](const std::string& name, double progress) {
    if (name == "v-built" && progress > 0 && progress < 1) {
      halfway.Notify();
      seen.WaitForNotification();
    }
  };
  manager_->SetEvents(std::move(events));
  const Rows rows = RandomRows(500, 50000, 5);
  client::PublishSpec spec = Spec("v-built", 30, rows);
  std::vector<client::PublishProgress> reports;
  absl::StatusOr<client::ServedVersion> version =
      client_->Publish(spec, [&](const client::PublishProgress& progress) {
        reports.push_back(progress);
        if (progress.building && progress.build_progress > 0 &&
            !seen.HasBeenNotified()) {
          seen.Notify();
        }
      });
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->name, "v-built");
  EXPECT_TRUE(halfway.HasBeenNotified());
  ASSERT_TRUE(seen.HasBeenNotified());
  double last = 0;
  bool built = false;
  for (const client::PublishProgress& report : reports) {
    if (!report.building) {
      EXPECT_FALSE(built) << "an upload report after the build began";
      continue;
    }
    built = true;
    EXPECT_EQ(report.rows_sent, report.total_rows);
    EXPECT_GE(report.build_progress, last);
    last = report.build_progress;
  }
  EXPECT_GT(last, 0);
}

}  // namespace
}  // namespace hardneg

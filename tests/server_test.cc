// In-process server tests over loopback TCP: streams with many requests,
// in-band errors that leave the stream usable, health, GetIndexInfo.
#include "server/server.h"

#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "format/checkpoint.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/impl/codegen/client_unary_call.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "grpcpp/support/sync_stream.h"
#include "gtest/gtest.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "mining/miner.h"
#include "prometheus/registry.h"
#include "server/convert.h"
#include "server/metrics.h"
#include "server/wire.h"
#include "versions/index_manager.h"

namespace hardneg {
namespace {

using ::testing::HasSubstr;

constexpr int kDim = 32;
constexpr int kCandidates = 3000;

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/hardneg_server_test_" + name +
                    "_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteRandomCheckpoint(const std::string& root, const std::string& name,
                           uint64_t step, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> embeddings(size_t{kCandidates} * kDim);
  for (float& v : embeddings) v = normal(rng);
  std::vector<int64_t> ids(kCandidates), labels(kCandidates);
  for (int i = 0; i < kCandidates; ++i) {
    ids[i] = 100000 + i * 7;
    labels[i] = i % 5;
  }
  CheckpointManifest manifest;
  manifest.name = name;
  manifest.step = step;
  manifest.dim = kDim;
  manifest.metric = Metric::kInnerProduct;
  ASSERT_TRUE(WriteCheckpoint(root, manifest, embeddings, ids, labels).ok());
}

v1::MineRequest RandomRequest(uint64_t request_id, int queries,
                              uint32_t num_negatives, std::mt19937& rng,
                              int dim = kDim) {
  std::normal_distribution<float> normal;
  v1::MineRequest request;
  request.set_request_id(request_id);
  request.mutable_options()->set_num_negatives(num_negatives);
  for (int q = 0; q < queries; ++q) {
    v1::Query* query = request.add_queries();
    for (int i = 0; i < dim; ++i) query->add_embedding(normal(rng));
    query->add_positive_ids(100000 +
                            7 * static_cast<int64_t>(rng() % kCandidates));
    query->set_label(static_cast<int64_t>(rng() % 5));
  }
  return request;
}

std::shared_ptr<grpc::Channel> Connect(int port) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials(), args);
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(FreshDir("served"));
    WriteRandomCheckpoint(*root_, "v1", 100, 1);
    IndexManagerOptions options;
    options.checkpoints_dir = *root_;
    manager_ = new IndexManager(options);
    ASSERT_TRUE(manager_->LoadNewest().ok());
    ServerOptions server_options;
    server_options.host = "127.0.0.1";
    server_options.port = 0;
    server_options.threads = 2;
    absl::StatusOr<std::unique_ptr<HardnegServer>> server =
        HardnegServer::Start(server_options, manager_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }

  static void TearDownTestSuite() {
    delete server_;
    delete manager_;
    std::filesystem::remove_all(*root_);
    delete root_;
  }

  std::unique_ptr<v1::Miner::Stub> Stub() {
    return v1::Miner::NewStub(Connect(server_->port()));
  }

  static std::string* root_;
  static IndexManager* manager_;
  static HardnegServer* server_;
};

std::string* ServerTest::root_ = nullptr;
IndexManager* ServerTest::manager_ = nullptr;
HardnegServer* ServerTest::server_ = nullptr;

TEST_F(ServerTest, StreamAnswersEveryRequestInOrderWithErrorsInBand) {
  auto stub = Stub();
  std::mt19937 rng(7);
  constexpr int kRequests = 60;
  std::vector<v1::MineRequest> requests;
  for (int i = 0; i < kRequests; ++i) {
    // Every 7th request has a wrong dimension; every 11th asks for 0.
    v1::MineRequest request =
        RandomRequest(5000 + i * 3, 1 + i % 4, i % 11 == 10 ? 0 : 1 + i % 9,
                      rng, i % 7 == 6 ? kDim - 1 : kDim);
    requests.push_back(request);
  }
  grpc::ClientContext context;
  auto stream = stub->Mine(&context);
  // Write everything from another thread while reading, so that the server
  // sees many requests in flight on one stream.
  std::thread writer([&] {
    for (const auto& request : requests) ASSERT_TRUE(stream->Write(request));
    stream->WritesDone();
  });
  std::vector<v1::MineResponse> responses;
  v1::MineResponse response;
  while (stream->Read(&response)) responses.push_back(response);
  writer.join();
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(responses.size(), requests.size());
  for (int i = 0; i < kRequests; ++i) {
    const v1::MineResponse& r = responses[i];
    EXPECT_EQ(r.request_id(), requests[i].request_id());
    if (i % 7 == 6) {
      EXPECT_EQ(r.error().code(),
                static_cast<uint32_t>(grpc::INVALID_ARGUMENT));
      EXPECT_THAT(r.error().message(), HasSubstr("queries[0].embedding"));
      EXPECT_EQ(r.results_size(), 0);
    } else if (i % 11 == 10) {
      EXPECT_EQ(r.error().code(),
                static_cast<uint32_t>(grpc::INVALID_ARGUMENT));
      EXPECT_THAT(r.error().message(), HasSubstr("num_negatives"));
    } else {
      EXPECT_EQ(r.error().code(), 0u) << r.error().message();
      EXPECT_EQ(r.index().name(), "v1");
      EXPECT_EQ(r.index().sequence(), 1u);
      ASSERT_EQ(r.results_size(), requests[i].queries_size());
      for (const v1::QueryResult& result : r.results()) {
        EXPECT_EQ(result.negatives_size(),
                  static_cast<int>(requests[i].options().num_negatives()));
        EXPECT_TRUE(result.has_positive_score());
      }
      // The unary RPC answers the same request identically.
      grpc::ClientContext once_context;
      v1::MineResponse once;
      ASSERT_TRUE(stub->MineOnce(&once_context, requests[i], &once).ok());
      EXPECT_EQ(once.SerializeAsString(), r.SerializeAsString());
    }
  }
}

TEST_F(ServerTest, ConcurrentStreamsKeepTheirOwnOrder) {
  constexpr int kStreams = 8;
  constexpr int kRequests = 25;
  std::vector<std::thread> threads;
  std::vector<int> failures(kStreams, 0);
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] {
      auto stub = Stub();
      std::mt19937 rng(100 + s);
      grpc::ClientContext context;
      auto stream = stub->Mine(&context);
      for (int i = 0; i < kRequests; ++i) {
        stream->Write(RandomRequest(s * 1000 + i, 2, 3, rng));
      }
      stream->WritesDone();
      v1::MineResponse response;
      int expected = 0;
      while (stream->Read(&response)) {
        if (response.request_id() !=
                static_cast<uint64_t>(s * 1000 + expected) ||
            response.error().code() != 0 || response.results_size() != 2) {
          ++failures[s];
        }
        ++expected;
      }
      if (expected != kRequests || !stream->Finish().ok()) ++failures[s];
    });
  }
  for (auto& t : threads) t.join();
  for (int s = 0; s < kStreams; ++s)
    EXPECT_EQ(failures[s], 0) << "stream " << s;
}

TEST_F(ServerTest, MineOnceReturnsInvalidArgumentNamingTheField) {
  auto stub = Stub();
  std::mt19937 rng(3);
  v1::MineRequest request = RandomRequest(9, 3, 4, rng);
  request.mutable_queries(1)->set_embedding(5, std::nanf(""));
  grpc::ClientContext context;
  v1::MineResponse response;
  grpc::Status status = stub->MineOnce(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("queries[1].embedding[5]"));

  v1::MineRequest empty;
  empty.mutable_options()->set_num_negatives(1);
  grpc::ClientContext context2;
  status = stub->MineOnce(&context2, empty, &response);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("queries"));
}

// options.ivf_min_candidates travels to the miner's checks: at the limit
// it is accepted, past it refused naming the field and the limit.
TEST_F(ServerTest, IvfMinCandidatesIsHeldToItsLimit) {
  auto stub = Stub();
  std::mt19937 rng(5);
  v1::MineRequest request = RandomRequest(10, 2, 3, rng);
  const uint32_t limit = MinerLimits().max_ivf_min_candidates;
  request.mutable_options()->set_ivf_min_candidates(limit);
  grpc::ClientContext context;
  v1::MineResponse response;
  EXPECT_TRUE(stub->MineOnce(&context, request, &response).ok());
  request.mutable_options()->set_ivf_min_candidates(limit + 1);
  grpc::ClientContext context2;
  const grpc::Status status = stub->MineOnce(&context2, request, &response);
  EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(
      status.error_message(),
      HasSubstr("options.ivf_min_candidates is " + std::to_string(limit + 1)));
  EXPECT_THAT(status.error_message(), HasSubstr("max_ivf_min_candidates"));
}

TEST_F(ServerTest, MineOnceEchoesRequestIdAndVersion) {
  auto stub = Stub();
  std::mt19937 rng(4);
  v1::MineRequest request = RandomRequest(123456789, 2, 5, rng);
  request.mutable_options()->set_return_embeddings(true);
  grpc::ClientContext context;
  v1::MineResponse response;
  ASSERT_TRUE(stub->MineOnce(&context, request, &response).ok());
  EXPECT_EQ(response.request_id(), 123456789u);
  EXPECT_EQ(response.index().name(), "v1");
  ASSERT_EQ(response.results_size(), 2);
  EXPECT_EQ(response.results(0).negatives(0).embedding_size(), kDim);
}

TEST_F(ServerTest, LargeResponsesFitTheMessageLimit) {
  auto stub = Stub();
  std::mt19937 rng(5);
  // 200 queries x 200 negatives x 32 floats with embeddings is ~6 MB, over
  // gRPC's default 4 MB.
  v1::MineRequest request = RandomRequest(1, 200, 200, rng);
  request.mutable_options()->set_return_embeddings(true);
  grpc::ClientContext context;
  v1::MineResponse response;
  grpc::Status status = stub->MineOnce(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(response.ByteSizeLong(), size_t{4} << 20);
}

// A hostile probe: 2,000 queries x 10,000 negatives with embeddings, an
// answer of gigabytes, used to abort the server. It is refused before any
// work, naming the limit, and the server keeps answering.
TEST_F(ServerTest, AnAnswerTooLargeToSendIsRefusedBeforeTheWork) {
  auto stub = Stub();
  std::mt19937 rng(6);
  v1::MineRequest request = RandomRequest(1, 100, 10000, rng);
  request.mutable_options()->set_return_embeddings(true);
  grpc::ClientContext context;
  v1::MineResponse response;
  grpc::Status status = stub->MineOnce(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("over the message limit"));
  EXPECT_THAT(status.error_message(), HasSubstr("return_embeddings"));

  // The probe itself.
  request = RandomRequest(2, 2000, 10000, rng);
  request.mutable_options()->set_return_embeddings(true);
  grpc::ClientContext probe_context;
  status = stub->MineOnce(&probe_context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // An answer that would fit a message, but more negatives than one
  // request may ask for (120 x 10,000 > 2^20).
  request = RandomRequest(3, 120, 10000, rng);
  grpc::ClientContext big_context;
  status = stub->MineOnce(&big_context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("max_request_negatives"));

  grpc::ClientContext after;
  request = RandomRequest(3, 2, 5, rng);
  ASSERT_TRUE(stub->MineOnce(&after, request, &response).ok());
  EXPECT_EQ(response.results_size(), 2);
}

// A hostile probe: 1,500 queries with range_max 1e6 each, on a 1M-row
// index, used to take the server's memory (survivors of every query kept
// at once). Here 6,000 queries rank all 3,000 rows: 18M > 2^24.
TEST_F(ServerTest, ADeepFetchOverTheBudgetIsRefused) {
  auto stub = Stub();
  std::mt19937 rng(7);
  v1::MineRequest request = RandomRequest(1, 6000, 10, rng);
  request.mutable_options()->set_range_max(1000000);
  grpc::ClientContext context;
  v1::MineResponse response;
  grpc::Status status = stub->MineOnce(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("max_request_fetch"));
  EXPECT_THAT(status.error_message(), HasSubstr("6000 queries"));
}

// Bytes that are not a valid message of any type: field 2 (length-
// delimited) claims 16 bytes and carries 3.
grpc::ByteBuffer CorruptMessage() {
  static const char kBytes[] =
      "\x12\x10"
      "abc";
  grpc::Slice slice(kBytes, sizeof(kBytes) - 1);
  return grpc::ByteBuffer(&slice, 1);
}

grpc::ByteBuffer Raw(const google::protobuf::MessageLite& message) {
  grpc::ByteBuffer buffer;
  bool own = false;
  EXPECT_TRUE((grpc::GenericSerialize<grpc::ProtoBufferWriter,
                                      google::protobuf::MessageLite>(
                   message, &buffer, &own))
                  .ok());
  return buffer;
}

// A corrupt message inside a Mine stream used to end it as if the client
// had closed it: the requests after it were dropped and the stream ended
// OK. Now the requests before it are answered and the stream fails,
// naming the message.
TEST_F(ServerTest, ACorruptMessageFailsAMineStream) {
  auto channel = Connect(server_->port());
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
      stream(grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer,
                                                       grpc::ByteBuffer>::
                 Create(channel.get(),
                        grpc::internal::RpcMethod(
                            "/hardneg.v1.Miner/Mine",
                            grpc::internal::RpcMethod::BIDI_STREAMING),
                        &context));
  std::mt19937 rng(9);
  ASSERT_TRUE(stream->Write(Raw(RandomRequest(1, 2, 3, rng))));
  ASSERT_TRUE(stream->Write(CorruptMessage()));
  stream->Write(Raw(RandomRequest(3, 2, 3, rng)));
  stream->WritesDone();
  grpc::ByteBuffer bytes;
  ASSERT_TRUE(stream->Read(&bytes));
  v1::MineResponse first;
  ASSERT_TRUE(ParseMessage(bytes, "response", &first).ok());
  EXPECT_EQ(first.request_id(), 1u);
  EXPECT_EQ(first.results_size(), 2);
  EXPECT_FALSE(stream->Read(&bytes));  // nothing for request 3
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("MineRequest 2 of the stream could not be parsed"));
}

// Unparsable unary requests used to get UNIMPLEMENTED with no message.
TEST_F(ServerTest, ACorruptUnaryRequestIsInvalidArgument) {
  auto channel = Connect(server_->port());
  for (const char* method :
       {"/hardneg.v1.Miner/MineOnce", "/hardneg.v1.Miner/GetIndexInfo"}) {
    grpc::ClientContext context;
    grpc::ByteBuffer response;
    const grpc::Status status =
        grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
            channel.get(),
            grpc::internal::RpcMethod(method,
                                      grpc::internal::RpcMethod::NORMAL_RPC),
            &context, CorruptMessage(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method;
    EXPECT_THAT(status.error_message(), HasSubstr("could not be parsed"));
  }
}

// A corrupt message inside a Publish stream used to end it as if complete:
// the rows received so far were installed and the client got OK.
TEST_F(ServerTest, ACorruptMessageFailsAPublishAndInstallsNothing) {
  auto channel = Connect(server_->port());
  const uint64_t sequence = manager_->Current()->info().sequence;
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
      grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
          channel.get(),
          grpc::internal::RpcMethod(
              "/hardneg.v1.Miner/Publish",
              grpc::internal::RpcMethod::CLIENT_STREAMING),
          &context, &response));
  v1::PublishRequest header;
  header.mutable_header()->set_name("prefix");
  header.mutable_header()->set_step(1000);
  header.mutable_header()->set_dim(kDim);
  ASSERT_TRUE(writer->Write(Raw(header)));
  v1::PublishRequest chunk;
  for (int i = 0; i < 10; ++i) {
    chunk.mutable_chunk()->add_ids(900000 + i);
    for (int d = 0; d < kDim; ++d) chunk.mutable_chunk()->add_embeddings(0.5f);
  }
  ASSERT_TRUE(writer->Write(Raw(chunk)));
  writer->Write(CorruptMessage());
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("PublishRequest 3 of the stream could not be parsed"));
  EXPECT_THAT(status.error_message(), HasSubstr("nothing was installed"));
  EXPECT_EQ(manager_->Current()->info().sequence, sequence);
  EXPECT_EQ(manager_->Current()->info().name, "v1");
}

TEST_F(ServerTest, GetIndexInfoDescribesTheServedVersion) {
  auto stub = Stub();
  grpc::ClientContext context;
  v1::IndexInfo info;
  ASSERT_TRUE(stub->GetIndexInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.version().name(), "v1");
  EXPECT_EQ(info.version().sequence(), 1u);
  EXPECT_EQ(info.size(), static_cast<uint64_t>(kCandidates));
  EXPECT_EQ(info.dim(), static_cast<uint32_t>(kDim));
  EXPECT_EQ(info.metric(), "inner_product");
  EXPECT_EQ(info.index_type(), "Flat");
  EXPECT_EQ(info.build_state(), "serving");
  EXPECT_EQ(info.step(), 100u);
}

TEST_F(ServerTest, HealthIsServingWithAnIndex) {
  auto health = grpc::health::v1::Health::NewStub(Connect(server_->port()));
  for (const char* service : {"", "hardneg.v1.Miner"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, request, &response).ok());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING)
        << service;
  }
}

TEST_F(ServerTest, PublishWithoutAHeaderIsRejected) {
  auto stub = Stub();
  grpc::ClientContext context;
  v1::PublishResponse response;
  auto writer = stub->Publish(&context, &response);
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::INVALID_ARGUMENT);
  // The served version is untouched.
  grpc::ClientContext info_context;
  v1::IndexInfo info;
  ASSERT_TRUE(stub->GetIndexInfo(&info_context, {}, &info).ok());
  EXPECT_EQ(info.version().name(), "v1");
}

TEST_F(ServerTest, CancelledStreamLeavesTheServerHealthy) {
  for (int round = 0; round < 5; ++round) {
    auto stub = Stub();
    std::mt19937 rng(round);
    grpc::ClientContext context;
    auto stream = stub->Mine(&context);
    for (int i = 0; i < 20; ++i) stream->Write(RandomRequest(i, 8, 50, rng));
    v1::MineResponse response;
    stream->Read(&response);
    context.TryCancel();
    while (stream->Read(&response)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::CANCELLED);
  }
  auto stub = Stub();
  std::mt19937 rng(1);
  grpc::ClientContext context;
  v1::MineResponse response;
  EXPECT_TRUE(
      stub->MineOnce(&context, RandomRequest(1, 1, 1, rng), &response).ok());
}

TEST(ServerWithoutIndexTest, NotServingUntilACheckpointLoads) {
  const std::string root = FreshDir("empty");
  IndexManagerOptions options;
  options.checkpoints_dir = root;
  IndexManager manager(options);
  EXPECT_TRUE(manager.LoadNewest().ok());  // nothing to load is not an error
  ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.threads = 1;
  auto server = HardnegServer::Start(server_options, &manager);
  ASSERT_TRUE(server.ok());
  HardnegServer* s = server->get();
  IndexEvents events;
  events.swapped = [s](const IndexVersion&, absl::Duration) {
    s->UpdateHealth();
  };
  manager.SetEvents(std::move(events));
  auto channel = Connect(s->port());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto stub = v1::Miner::NewStub(channel);
  auto check = [&] {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckResponse response;
    EXPECT_TRUE(health->Check(&context, {}, &response).ok());
    return response.status();
  };
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  std::mt19937 rng(1);
  {
    grpc::ClientContext context;
    v1::MineResponse response;
    grpc::Status status =
        stub->MineOnce(&context, RandomRequest(1, 1, 1, rng), &response);
    EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE);
    EXPECT_THAT(status.error_message(), HasSubstr("--checkpoints"));
  }
  WriteRandomCheckpoint(root, "late", 5, 2);
  ASSERT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::SERVING);
  grpc::ClientContext context;
  v1::MineResponse response;
  EXPECT_TRUE(
      stub->MineOnce(&context, RandomRequest(1, 1, 1, rng), &response).ok());
  EXPECT_EQ(response.index().name(), "late");
  server->reset();
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace hardneg

namespace hardneg {
namespace {

// A server of its own over a fresh checkpoint, for tests that need other
// options than ServerTest's.
class OwnServer {
 public:
  OwnServer(const std::string& name, uint32_t seed, ServerOptions options)
      : root_(FreshDir(name)) {
    WriteRandomCheckpoint(root_, "v1", 1, seed);
    IndexManagerOptions manager_options;
    manager_options.checkpoints_dir = root_;
    manager_ = std::make_unique<IndexManager>(manager_options);
    EXPECT_TRUE(manager_->LoadNewest().ok());
    options.host = "127.0.0.1";
    options.port = 0;
    absl::StatusOr<std::unique_ptr<HardnegServer>> server =
        HardnegServer::Start(options, manager_.get());
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  ~OwnServer() {
    server_.reset();
    manager_.reset();
    std::filesystem::remove_all(root_);
  }

  HardnegServer& server() { return *server_; }
  std::unique_ptr<v1::Miner::Stub> Stub() {
    return v1::Miner::NewStub(Connect(server_->port()));
  }
  // Occupies the only worker until the returned notification is notified.
  std::unique_ptr<absl::Notification> HoldTheWorker() {
    auto release = std::make_unique<absl::Notification>();
    absl::Notification holding;
    server_->pool_for_testing()->Submit([&holding, r = release.get()] {
      holding.Notify();
      r->WaitForNotification();
    });
    holding.WaitForNotification();
    return release;
  }

 private:
  std::string root_;
  std::unique_ptr<IndexManager> manager_;
  std::unique_ptr<HardnegServer> server_;
};

// Admission control: with the only worker busy, a request that would pass
// max_queued_queries is answered RESOURCE_EXHAUSTED at once, naming the
// limit: in-band and in order on a stream, and as the status of MineOnce.
// Requests that fit are still taken.
TEST(AdmissionTest, ARequestPastTheQueueLimitIsRefusedAtOnce) {
  ServerOptions options;
  options.threads = 1;
  options.service.max_queued_queries = 4;
  OwnServer own("admission", 3, options);
  auto stub = own.Stub();
  std::unique_ptr<absl::Notification> release = own.HoldTheWorker();

  std::mt19937 rng(8);
  grpc::ClientContext stream_context;
  auto stream = stub->Mine(&stream_context);
  ASSERT_TRUE(stream->Write(RandomRequest(1, 3, 5, rng)));  // queued: 3
  ASSERT_TRUE(stream->Write(RandomRequest(2, 3, 5, rng)));  // 6 > 4
  ASSERT_TRUE(stream->Write(RandomRequest(3, 1, 5, rng)));  // 4: fits
  // A stream reads one request at a time, so 4 queued means request 2 was
  // judged too.
  own.server().AwaitQueuedQueriesForTesting(4);
  grpc::ClientContext once_context;
  v1::MineResponse once;
  grpc::Status refused =
      stub->MineOnce(&once_context, RandomRequest(9, 1, 5, rng), &once);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("max_queued_queries"));

  release->Notify();
  v1::MineResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.request_id(), 1u);
  EXPECT_FALSE(response.has_error());
  EXPECT_EQ(response.results_size(), 3);
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.request_id(), 2u);
  EXPECT_EQ(response.results_size(), 0);
  EXPECT_EQ(response.error().code(),
            static_cast<uint32_t>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_THAT(response.error().message(), HasSubstr("max_queued_queries"));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.request_id(), 3u);
  EXPECT_FALSE(response.has_error());
  EXPECT_EQ(response.results_size(), 1);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(AdmissionTest, AStreamPastTheLimitIsRefusedAndItsPlaceComesBack) {
  ServerOptions options;
  options.service.max_streams = 2;
  OwnServer own("streams", 5, options);
  auto stub = own.Stub();
  std::mt19937 rng(11);
  auto round_trip =
      [&](grpc::ClientReaderWriter<v1::MineRequest, v1::MineResponse>& stream) {
        v1::MineResponse response;
        return stream.Write(RandomRequest(1, 1, 2, rng)) &&
               stream.Read(&response);
      };
  grpc::ClientContext c1, c2, c3;
  auto s1 = stub->Mine(&c1);
  auto s2 = stub->Mine(&c2);
  // Answered: both streams are open on the server.
  ASSERT_TRUE(round_trip(*s1));
  ASSERT_TRUE(round_trip(*s2));
  auto s3 = stub->Mine(&c3);
  v1::MineResponse response;
  s3->Write(RandomRequest(1, 1, 2, rng));
  EXPECT_FALSE(s3->Read(&response));
  const grpc::Status refused = s3->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("max_streams"));
  s1->WritesDone();
  ASSERT_TRUE(s1->Finish().ok());
  // s1's place is free again once its reactor is done; the server learns
  // that asynchronously, so a new stream may need a retry or two.
  bool admitted = false;
  for (int attempt = 0; attempt < 100 && !admitted; ++attempt) {
    grpc::ClientContext c4;
    auto s4 = stub->Mine(&c4);
    admitted = round_trip(*s4);
    s4->WritesDone();
    s4->Finish();
  }
  EXPECT_TRUE(admitted);
  s2->WritesDone();
  EXPECT_TRUE(s2->Finish().ok());
}

// The sum of hardneg_batch_size: the queries actually searched.
double SearchedQueries(prometheus::Registry& registry) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != "hardneg_batch_size") continue;
    double sum = 0;
    for (const prometheus::ClientMetric& metric : family.metric) {
      sum += metric.histogram.sample_sum;
    }
    return sum;
  }
  ADD_FAILURE() << "no hardneg_batch_size";
  return -1;
}

// Each batch's query count as it starts; the first batch is held running
// until `release` is notified.
class BatchLog {
 public:
  std::function<void(size_t)> Hook() {
    return [this](size_t queries) {
      bool first = false;
      {
        absl::MutexLock lock(&mu_);
        first = sizes_.empty();
        sizes_.push_back(queries);
      }
      if (first) {
        first_started.Notify();
        release.WaitForNotification();
      }
    };
  }
  std::vector<size_t> sizes() {
    absl::MutexLock lock(&mu_);
    return sizes_;
  }
  absl::Notification first_started;
  absl::Notification release;

 private:
  absl::Mutex mu_;
  std::vector<size_t> sizes_ ABSL_GUARDED_BY(mu_);
};

// One query through MineOnce, with a deadline, on a thread of its own.
std::thread MineOneQuery(v1::Miner::Stub* stub, uint64_t id,
                         grpc::Status* status) {
  return std::thread([stub, id, status] {
    std::mt19937 rng(static_cast<uint32_t>(id));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(60));
    v1::MineResponse response;
    *status = stub->MineOnce(&context, RandomRequest(id, 1, 3, rng), &response);
  });
}

ServerOptions BusyDelayOptions(BatchLog* log) {
  ServerOptions options;
  options.threads = 2;
  options.service.max_batch_queries = 3;
  // Far past the tests' deadlines: only a full batch, or the end of the
  // batch that runs, may end a wait.
  options.service.busy_batch_delay = absl::Hours(1);
  options.service.batch_started_for_testing = log->Hook();
  return options;
}

// busy_batch_delay: a request that finds no batch running starts at once;
// while one runs, the other worker's batch waits until it is full. (EXPECT,
// not ASSERT: a failure must still release A's batch and join every
// thread, or it would end in std::terminate or a hung shutdown.)
TEST(BusyBatchDelayTest, WhileABatchRunsTheNextFillsUp) {
  BatchLog log;
  OwnServer own("busy_fill", 4, BusyDelayOptions(&log));
  auto stub = own.Stub();
  grpc::Status a, b, c, d;
  std::thread ta = MineOneQuery(stub.get(), 1, &a);
  EXPECT_TRUE(
      log.first_started.WaitForNotificationWithTimeout(absl::Seconds(60)));
  // B waits beside A's batch (without the delay it would start alone);
  // C and D fill its batch.
  std::thread tb = MineOneQuery(stub.get(), 2, &b);
  EXPECT_TRUE(own.server().AwaitBusyWaitForTesting(absl::Seconds(60)));
  std::thread tc = MineOneQuery(stub.get(), 3, &c);
  std::thread td = MineOneQuery(stub.get(), 4, &d);
  // Answered while A's batch is still held.
  tb.join();
  tc.join();
  td.join();
  EXPECT_TRUE(b.ok()) << b.error_message();
  EXPECT_TRUE(c.ok()) << c.error_message();
  EXPECT_TRUE(d.ok()) << d.error_message();
  EXPECT_THAT(log.sizes(), ::testing::ElementsAre(1, 3));
  log.release.Notify();
  ta.join();
  EXPECT_TRUE(a.ok()) << a.error_message();
}

// A waiting batch starts when the batch it waited beside ends, full or
// not, instead of waiting out the delay (an hour here, past B's deadline).
TEST(BusyBatchDelayTest, AWaitEndsWithTheBatchThatRuns) {
  BatchLog log;
  OwnServer own("busy_end", 5, BusyDelayOptions(&log));
  auto stub = own.Stub();
  grpc::Status a, b;
  std::thread ta = MineOneQuery(stub.get(), 1, &a);
  EXPECT_TRUE(
      log.first_started.WaitForNotificationWithTimeout(absl::Seconds(60)));
  std::thread tb = MineOneQuery(stub.get(), 2, &b);
  EXPECT_TRUE(own.server().AwaitBusyWaitForTesting(absl::Seconds(60)));
  EXPECT_THAT(log.sizes(), ::testing::ElementsAre(1));
  log.release.Notify();
  ta.join();
  tb.join();
  EXPECT_TRUE(a.ok()) << a.error_message();
  EXPECT_TRUE(b.ok()) << b.error_message();
  EXPECT_THAT(log.sizes(), ::testing::ElementsAre(1, 1));
}

// A call cancelled while it waits for a worker is not mined: its place in
// the batch goes to requests someone still waits for. (A client that
// retries on timeout used to pile up work nobody would read.)
TEST(CancellationTest, ACancelledRequestIsNotMined) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry);
  ServerOptions options;
  options.threads = 1;
  options.metrics = &metrics;
  OwnServer own("cancel", 4, options);
  auto stub = own.Stub();
  std::unique_ptr<absl::Notification> release = own.HoldTheWorker();

  std::mt19937 rng(10);
  const v1::MineRequest doomed = RandomRequest(1, 5, 5, rng);
  grpc::ClientContext doomed_context;
  grpc::Status doomed_status;
  std::thread caller([&] {
    v1::MineResponse response;
    doomed_status = stub->MineOnce(&doomed_context, doomed, &response);
  });
  own.server().AwaitQueuedQueriesForTesting(5);
  doomed_context.TryCancel();
  caller.join();
  EXPECT_EQ(doomed_status.error_code(), grpc::StatusCode::CANCELLED);
  // The cancellation reaches the server asynchronously (RST_STREAM): wait
  // for it, with a generous bound, before the worker is freed.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (own.server().CancelledQueuedForTesting() == 0 &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(own.server().CancelledQueuedForTesting(), 1u);
  release->Notify();

  grpc::ClientContext context;
  v1::MineResponse response;
  ASSERT_TRUE(
      stub->MineOnce(&context, RandomRequest(2, 2, 5, rng), &response).ok());
  EXPECT_EQ(response.results_size(), 2);
  own.server().AwaitQueuedQueriesForTesting(0);
  EXPECT_EQ(SearchedQueries(registry), 2);
}

// Requests from many threads, each with its own options, are coalesced
// into shared searches (a batching delay makes sure of it); every answer
// must equal what the Miner gives for that request alone.
TEST(BatchingServerTest, CoalescedAnswersEqualUnbatchedOnes) {
  const std::string root = FreshDir("batching");
  WriteRandomCheckpoint(root, "b1", 1, 9);
  IndexManagerOptions options;
  options.checkpoints_dir = root;
  IndexManager manager(options);
  ASSERT_TRUE(manager.LoadNewest().ok());
  ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.threads = 2;
  server_options.service.max_batch_queries = 64;
  server_options.service.max_batch_delay = absl::Milliseconds(5);
  auto server = HardnegServer::Start(server_options, &manager);
  ASSERT_TRUE(server.ok());
  auto channel = Connect((*server)->port());
  std::shared_ptr<const IndexVersion> version = manager.Current();

  constexpr int kThreads = 8;
  constexpr int kRequests = 12;
  std::vector<std::vector<v1::MineRequest>> sent(kThreads);
  std::vector<std::vector<v1::MineResponse>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    std::mt19937 rng(1000 + t);
    for (int i = 0; i < kRequests; ++i) {
      v1::MineRequest request =
          RandomRequest(t * 100 + i, 1 + (i % 5), 1 + (t + i) % 7, rng);
      v1::MiningOptions* o = request.mutable_options();
      o->set_sampling(static_cast<v1::Sampling>((t + i) % 3));
      o->set_seed(static_cast<uint64_t>(t * 31 + i));
      o->set_range_min(static_cast<uint32_t>(i % 4));
      if (i % 3 == 0) o->set_max_score(3.0f);
      sent[t].push_back(request);
    }
    threads.emplace_back([&, t] {
      auto stub = v1::Miner::NewStub(channel);
      for (const v1::MineRequest& request : sent[t]) {
        grpc::ClientContext context;
        v1::MineResponse response;
        EXPECT_TRUE(stub->MineOnce(&context, request, &response).ok());
        got[t].push_back(response);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const Miner miner;
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(got[t].size(), sent[t].size());
    for (size_t i = 0; i < sent[t].size(); ++i) {
      DecodedMineRequest decoded;
      ASSERT_TRUE(DecodeMineRequest(sent[t][i], &decoded).ok());
      auto alone = miner.Mine(*version, decoded.queries, decoded.options);
      ASSERT_TRUE(alone.ok());
      v1::MineResponse expected;
      expected.set_request_id(sent[t][i].request_id());
      EncodeVersion(version->info(), expected.mutable_index());
      EncodeResults(*alone, *version, false, &expected);
      EXPECT_EQ(got[t][i].SerializeAsString(), expected.SerializeAsString())
          << "thread " << t << " request " << i;
    }
  }
  server->reset();
  std::filesystem::remove_all(root);
}

TEST(ThreadCountsTest, AutomaticCountsFillTheCoresOnce) {
  ServerOptions options;
  ThreadCounts counts = ResolveThreadCounts(options, 8);
  EXPECT_EQ(counts.workers, 8u);
  EXPECT_EQ(counts.blas_threads, 1);
  EXPECT_EQ(counts.lone_batch_threads, 8);
  options.threads = 1;
  counts = ResolveThreadCounts(options, 8);
  EXPECT_EQ(counts.blas_threads, 8);
  EXPECT_EQ(counts.lone_batch_threads, 0);
  options.threads = 4;
  options.blas_threads = 2;
  counts = ResolveThreadCounts(options, 8);
  EXPECT_EQ(counts.workers, 4u);
  EXPECT_EQ(counts.blas_threads, 2);
  EXPECT_EQ(counts.lone_batch_threads, 0);
  options = ServerOptions();
  EXPECT_EQ(ResolveThreadCounts(options, 0).workers, 2u);  // unknown cores
}

}  // namespace
}  // namespace hardneg

namespace hardneg {
namespace {

// GetIndexInfo shows a checkpoint's load as it goes: the building thread
// is held at the first progress strictly between 0 and 1 while a client
// asks, so the check never depends on timing.
TEST(BuildProgressTest, GetIndexInfoShowsALoadInProgress) {
  const std::string root = FreshDir("progress");
  constexpr size_t kRows = 300000;
  constexpr uint32_t kLoadDim = 8;
  std::vector<float> embeddings(kRows * kLoadDim, 0.25f);
  std::vector<int64_t> ids(kRows);
  for (size_t i = 0; i < kRows; ++i) ids[i] = static_cast<int64_t>(i);
  CheckpointManifest manifest;
  manifest.name = "big";
  manifest.step = 1;
  manifest.dim = kLoadDim;
  ASSERT_TRUE(WriteCheckpoint(root, manifest, embeddings, ids, {}).ok());
  IndexManagerOptions options;
  options.checkpoints_dir = root;
  IndexManager manager(options);
  ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.threads = 1;
  auto server = HardnegServer::Start(server_options, &manager);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::Notification held;
  absl::Notification release;
  IndexEvents events;
  events.progress = [&](const std::string&, double progress) {
    if (progress > 0 && progress < 1 && !held.HasBeenNotified()) {
      held.Notify();
      release.WaitForNotification();
    }
  };
  manager.SetEvents(std::move(events));
  auto stub = v1::Miner::NewStub(Connect((*server)->port()));
  auto info = [&] {
    grpc::ClientContext context;
    v1::IndexInfo response;
    EXPECT_TRUE(stub->GetIndexInfo(&context, {}, &response).ok());
    return response;
  };
  ::testing::internal::CaptureStderr();
  std::thread loader([&] { EXPECT_TRUE(manager.LoadNewest().ok()); });
  held.WaitForNotification();
  const v1::IndexInfo during = info();
  release.Notify();
  loader.join();
  const std::string log = ::testing::internal::GetCapturedStderr();
  // The log's last loading line: the whole checkpoint read.
  const size_t last = log.rfind("event=loading ");
  ASSERT_NE(last, std::string::npos) << log;
  const std::string line = log.substr(last, log.find('\n', last) - last);
  EXPECT_THAT(line, HasSubstr(" rows=300000 total_rows=300000 "));
  EXPECT_THAT(line, HasSubstr(" percent=100"));
  EXPECT_NE(log.find("event=loading name=big "), last) << "no first line";
  EXPECT_EQ(during.build_state(), "building");
  EXPECT_EQ(during.building(), "big");
  EXPECT_GT(during.build_progress(), 0);
  EXPECT_LT(during.build_progress(), 1);
  const v1::IndexInfo after = info();
  EXPECT_EQ(after.build_state(), "serving");
  EXPECT_EQ(after.building(), "");
  EXPECT_EQ(after.build_progress(), 1);
  EXPECT_EQ(after.size(), kRows);
  server->reset();
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace hardneg

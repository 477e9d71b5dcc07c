// hardneg-router's parts in one process: three shard servers (each
// holding its ShardOf share) and a router over them, against one server
// over the whole corpus. Randomized requests across every option must get
// EQUAL answers (the whole MineResponse); a version that reaches one shard
// before the others is not served until all hold it, and meanwhile the
// router answers from the old one everywhere; a stopped shard fails
// requests UNAVAILABLE naming it, or leaves it out with allow_partial; a
// publish through the router reaches every shard. Also the common-version
// rule alone (CommonVersion).
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "corpus/shard.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "random_corpus.h"
#include "router/router_service.h"
#include "router/shard_set.h"
#include "router/sharded_miner.h"
#include "server/auth.h"
#include "server/server.h"
#include "versions/index_manager.h"

namespace hardneg {
namespace {

using ::testing::HasSubstr;
using testing_corpus::RandomStore;
using testing_corpus::Rng;
using testing_corpus::ShardData;
using testing_corpus::StoreData;
using testing_corpus::StoreSpec;

constexpr uint32_t kShards = 3;

// --- CommonVersion ---------------------------------------------------

ShardState Shard(const std::string& current, uint64_t sequence,
                 const std::string& previous = "",
                 uint64_t previous_sequence = 0) {
  ShardState state;
  state.target = "t";
  state.info.emplace();
  state.info->mutable_version()->set_name(current);
  state.info->mutable_version()->set_sequence(sequence);
  state.info->set_dim(8);
  if (!previous.empty()) {
    state.info->mutable_previous_version()->set_name(previous);
    state.info->mutable_previous_version()->set_sequence(previous_sequence);
  }
  return state;
}

ShardState Down() {
  ShardState state;
  state.target = "t";
  state.error = "UNAVAILABLE: gone";
  return state;
}

TEST(CommonVersionTest, AllServingOneVersionServeIt) {
  std::optional<RouterVersion> v =
      CommonVersion({Shard("a", 3), Shard("a", 5), Shard("a", 4)});
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->name, "a");
  EXPECT_EQ(v->sequence, 5u);  // the highest
  EXPECT_EQ(v->dim, 8u);
}

TEST(CommonVersionTest, MidMoveTheOldVersionServesUntilAllHoldTheNew) {
  // Shard 0 moved to b (keeping a); shards 1 and 2 still serve a.
  std::optional<RouterVersion> v =
      CommonVersion({Shard("b", 4, "a", 3), Shard("a", 3), Shard("a", 3)});
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->name, "a");
  // Two moved: a is still the one every shard holds.
  v = CommonVersion(
      {Shard("b", 4, "a", 3), Shard("b", 4, "a", 3), Shard("a", 3)});
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->name, "a");
  // All moved: b, though every shard still keeps a.
  v = CommonVersion(
      {Shard("b", 4, "a", 3), Shard("b", 4, "a", 3), Shard("b", 5, "a", 3)});
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->name, "b");
  EXPECT_EQ(v->sequence, 5u);
}

TEST(CommonVersionTest, NoSharedVersionIsNone) {
  // Shard 0 no longer keeps a (its keep ran out, or a third version came).
  EXPECT_FALSE(CommonVersion({Shard("b", 4), Shard("a", 3)}).has_value());
  EXPECT_FALSE(CommonVersion({Down(), Down()}).has_value());
  EXPECT_FALSE(CommonVersion({Shard("", 0), Shard("", 0)}).has_value());
}

TEST(CommonVersionTest, UnreachableShardsAreLeftOutOfTheChoice) {
  std::optional<RouterVersion> v = CommonVersion({Down(), Shard("a", 2)});
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->name, "a");
}

TEST(CheckLayoutTest, AShardMustBeInItsPlace) {
  v1::IndexInfo info;
  info.set_shard_index(1);
  info.set_num_shards(3);
  EXPECT_EQ(CheckLayout(info, 1, 3), "");
  EXPECT_THAT(CheckLayout(info, 0, 3), HasSubstr("holds shard 1 of 3"));
  EXPECT_THAT(CheckLayout(info, 1, 4), HasSubstr("but is shard 1 of 4"));
  v1::IndexInfo whole;  // an unsharded server: only as the one shard
  EXPECT_EQ(CheckLayout(whole, 0, 1), "");
  EXPECT_THAT(CheckLayout(whole, 0, 2), HasSubstr("whole corpus"));
}

// --- In-process shards and router --------------------------------------

void Install(IndexManager& manager, const StoreData& data,
             const std::string& name, uint64_t step) {
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(data.dim, data.ids, data.vectors, data.labels);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE(
      manager.Install(name, step, Metric::kInnerProduct, *std::move(store))
          .ok());
}

// One server: its manager and gRPC server.
struct Served {
  std::unique_ptr<IndexManager> manager;
  std::unique_ptr<HardnegServer> server;
  std::string target() const {
    return absl::StrCat("127.0.0.1:", server->port());
  }
};

Served Serve(ShardFilter shard) {
  Served served;
  IndexManagerOptions options;
  options.shard = shard;
  options.keep_previous = absl::Hours(1);
  served.manager = std::make_unique<IndexManager>(options);
  ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.threads = 1;
  server_options.limits =
      shard.sharded() ? MinerLimits().ForShard() : MinerLimits();
  absl::StatusOr<std::unique_ptr<HardnegServer>> server =
      HardnegServer::Start(server_options, served.manager.get());
  EXPECT_TRUE(server.ok()) << server.status();
  if (server.ok()) served.server = *std::move(server);
  return served;
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Rng rng(11);
    StoreSpec spec;
    spec.n = 1500;
    spec.dim = 8;
    spec.num_base = 600;  // exact duplicates: ties broken by id
    spec.num_labels = 5;
    data_ = RandomStore(rng, spec);
    single_ = Serve(ShardFilter{});
    Install(*single_.manager, data_, "v1", 1);
    std::vector<std::string> targets;
    for (uint32_t i = 0; i < kShards; ++i) {
      shards_.push_back(Serve(ShardFilter{i, kShards}));
      Install(*shards_.back().manager, ShardData(data_, i, kShards), "v1", 1);
      targets.push_back(shards_.back().target());
    }
    ShardSetOptions set_options;
    set_options.poll_timeout = absl::Seconds(5);
    set_ = std::make_unique<ShardSet>(targets, set_options);
    ASSERT_TRUE(set_->Refresh().all_serving);
    ShardedMinerOptions miner_options;
    miner_options.shard_timeout = absl::Seconds(10);
    miner_ = std::make_unique<ShardedMiner>(set_.get(), miner_options, nullptr);
    service_ =
        std::make_unique<RouterService>(set_.get(), miner_.get(), nullptr);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    router_ = builder.BuildAndStart();
    ASSERT_NE(router_, nullptr);
    router_stub_ = v1::Miner::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
    single_stub_ = v1::Miner::NewStub(grpc::CreateChannel(
        single_.target(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (router_ != nullptr) router_->Shutdown();
  }

  static grpc::Status Call(v1::Miner::Stub& stub,
                           const v1::MineRequest& request,
                           v1::MineResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(20));
    return stub.MineOnce(&context, request, response);
  }

  // A random request over data_: 1-3 queries (rows, perturbed rows or
  // random directions), positives on any shard, labels, query ids, and
  // every option.
  v1::MineRequest RandomRequest(Rng& rng) {
    std::uniform_real_distribution<double> coin(0, 1);
    std::uniform_int_distribution<size_t> row(0, data_.size() - 1);
    std::normal_distribution<float> noise(0, 0.05f);
    v1::MineRequest request;
    const int queries = 1 + static_cast<int>(rng() % 3);
    for (int q = 0; q < queries; ++q) {
      v1::Query* query = request.add_queries();
      const size_t r = row(rng);
      for (float x : data_.Row(r)) {
        query->add_embedding(coin(rng) < 0.5 ? x : x + noise(rng));
      }
      if (coin(rng) < 0.6) {
        for (int p = static_cast<int>(rng() % 4); p >= 0; --p) {
          query->add_positive_ids(data_.ids[row(rng)]);
        }
      }
      if (coin(rng) < 0.2) query->add_positive_scores(noise(rng) * 10);
      if (coin(rng) < 0.3) query->set_label(static_cast<int64_t>(rng() % 5));
      if (coin(rng) < 0.3) query->set_query_id(data_.ids[r]);
    }
    v1::MiningOptions* options = request.mutable_options();
    options->set_num_negatives(1 + static_cast<uint32_t>(rng() % 12));
    if (coin(rng) < 0.4) {
      options->set_range_min(static_cast<uint32_t>(rng() % 900));
    }
    if (coin(rng) < 0.4) {
      options->set_range_max(options->range_min() + options->num_negatives() +
                             static_cast<uint32_t>(rng() % 300));
    }
    if (coin(rng) < 0.2) options->set_max_score(0.3f);
    if (coin(rng) < 0.2) options->set_min_score(-0.2f);
    if (coin(rng) < 0.3) options->set_absolute_margin(0.05f);
    if (coin(rng) < 0.2) options->set_relative_margin(0.1f);
    options->set_sampling(static_cast<v1::Sampling>(rng() % 3));
    if (coin(rng) < 0.5) options->set_temperature(0.05f);
    options->set_seed(rng());
    options->set_return_embeddings(coin(rng) < 0.2);
    return request;
  }

  // Publishes data_'s first 100 x `chunks` rows through the router as
  // version `name`, in `chunks` chunks, with header.total_ids `total_ids`.
  // `edit`, when set, changes each chunk before it is sent.
  grpc::Status Publish(
      const std::string& name, uint64_t total_ids, int chunks,
      const std::function<void(int, v1::PublishChunk*)>& edit = nullptr) {
    grpc::ClientContext context;
    v1::PublishResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::PublishRequest>> writer =
        router_stub_->Publish(&context, &response);
    v1::PublishRequest header;
    header.mutable_header()->set_name(name);
    header.mutable_header()->set_step(9);
    header.mutable_header()->set_dim(static_cast<uint32_t>(data_.dim));
    header.mutable_header()->set_total_ids(total_ids);
    writer->Write(header);
    for (int chunk = 0; chunk < chunks; ++chunk) {
      v1::PublishRequest message;
      for (size_t row = static_cast<size_t>(chunk) * 100;
           row < static_cast<size_t>(chunk + 1) * 100; ++row) {
        message.mutable_chunk()->add_ids(data_.ids[row]);
        message.mutable_chunk()->add_labels((*data_.labels)[row]);
        for (float x : data_.Row(row)) {
          message.mutable_chunk()->add_embeddings(x);
        }
      }
      if (edit) edit(chunk, message.mutable_chunk());
      writer->Write(message);
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    if (status.ok()) {
      EXPECT_EQ(response.version().name(), name);
    }
    return status;
  }

  StoreData data_;
  Served single_;
  std::vector<Served> shards_;
  std::unique_ptr<ShardSet> set_;
  std::unique_ptr<ShardedMiner> miner_;
  std::unique_ptr<RouterService> service_;
  std::unique_ptr<grpc::Server> router_;
  std::unique_ptr<v1::Miner::Stub> router_stub_;
  std::unique_ptr<v1::Miner::Stub> single_stub_;
};

TEST_F(RouterTest, RandomRequestsGetTheSingleServersAnswer) {
  Rng rng(5);
  int margins_with_positives = 0, deep = 0, shortfall = 0;
  for (int i = 0; i < 150; ++i) {
    const v1::MineRequest request = RandomRequest(rng);
    v1::MineResponse routed, single;
    const grpc::Status routed_status = Call(*router_stub_, request, &routed);
    const grpc::Status single_status = Call(*single_stub_, request, &single);
    ASSERT_EQ(routed_status.error_code(), single_status.error_code())
        << i << ": " << routed_status.error_message() << " / "
        << single_status.error_message();
    if (!single_status.ok()) continue;
    EXPECT_TRUE(
        google::protobuf::util::MessageDifferencer::Equals(routed, single))
        << "request " << i << "\n"
        << request.DebugString() << "router: " << routed.DebugString()
        << "single: " << single.DebugString();
    const v1::MiningOptions& o = request.options();
    for (const v1::Query& q : request.queries()) {
      margins_with_positives +=
          (o.has_absolute_margin() || o.has_relative_margin()) &&
          q.positive_ids_size() > 0;
    }
    deep += o.range_min() >= 300;
    for (const v1::QueryResult& r : single.results())
      shortfall += r.shortfall() > 0;
  }
  // The hard cases were drawn.
  EXPECT_GT(margins_with_positives, 10);
  EXPECT_GT(deep, 10);
  EXPECT_GT(shortfall, 3);
}

TEST_F(RouterTest, WideWindowsAndANamedVersionAnswerAsOneServer) {
  Rng rng(9);
  for (const uint32_t range_max : {1000000u, 500000u, 200000u}) {
    v1::MineRequest request = RandomRequest(rng);
    while (request.queries_size() < 2)
      *request.add_queries() = request.queries(0);
    request.mutable_options()->set_range_min(0);
    request.mutable_options()->set_range_max(range_max);
    request.mutable_options()->set_return_embeddings(range_max == 500000u);
    v1::MineResponse routed, single;
    const grpc::Status routed_status = Call(*router_stub_, request, &routed);
    ASSERT_TRUE(Call(*single_stub_, request, &single).ok());
    ASSERT_TRUE(routed_status.ok()) << routed_status.error_message();
    EXPECT_TRUE(
        google::protobuf::util::MessageDifferencer::Equals(routed, single));
  }
  v1::MineRequest named = RandomRequest(rng);
  named.mutable_options()->set_index_version("v1");
  v1::MineResponse routed, single;
  EXPECT_TRUE(Call(*router_stub_, named, &routed).ok());
  named.mutable_options()->set_index_version("nope");
  EXPECT_EQ(Call(*router_stub_, named, &routed).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Call(*single_stub_, named, &single).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(RouterTest, ANewVersionServesOnlyOnceEveryShardHoldsIt) {
  Rng rng(6);
  std::vector<v1::MineRequest> requests;
  std::vector<v1::MineResponse> before;
  for (int i = 0; i < 20; ++i) {
    requests.push_back(RandomRequest(rng));
    before.emplace_back();
    ASSERT_TRUE(Call(*single_stub_, requests.back(), &before.back()).ok());
  }
  // v2: the same ids, re-encoded.
  StoreData v2 = data_;
  for (float& x : v2.vectors) x = -x;
  Install(*shards_[0].manager, ShardData(v2, 0, kShards), "v2", 2);
  set_->Refresh();
  for (size_t i = 0; i < requests.size(); ++i) {
    v1::MineResponse routed;
    ASSERT_TRUE(Call(*router_stub_, requests[i], &routed).ok());
    EXPECT_EQ(routed.index().name(), "v1");
    EXPECT_TRUE(
        google::protobuf::util::MessageDifferencer::Equals(routed, before[i]))
        << i;
  }
  Install(*single_.manager, v2, "v2", 2);
  for (uint32_t s = 1; s < kShards; ++s) {
    Install(*shards_[s].manager, ShardData(v2, s, kShards), "v2", 2);
  }
  EXPECT_TRUE(set_->Refresh().all_serving);
  for (size_t i = 0; i < requests.size(); ++i) {
    v1::MineResponse routed, single;
    ASSERT_TRUE(Call(*router_stub_, requests[i], &routed).ok());
    ASSERT_TRUE(Call(*single_stub_, requests[i], &single).ok());
    EXPECT_EQ(routed.index().name(), "v2");
    EXPECT_TRUE(
        google::protobuf::util::MessageDifferencer::Equals(routed, single))
        << i;
  }
}

TEST_F(RouterTest, AStoppedShardIsNamedOrLeftOutWithAllowPartial) {
  Rng rng(7);
  v1::MineRequest request = RandomRequest(rng);
  request.mutable_options()->clear_absolute_margin();
  request.mutable_options()->clear_relative_margin();
  const std::string gone = shards_[1].target();
  shards_[1].server->Shutdown(absl::ZeroDuration());
  v1::MineResponse response;
  grpc::Status status = Call(*router_stub_, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr(gone));
  EXPECT_THAT(status.error_message(), HasSubstr("allow_partial"));

  request.mutable_options()->set_allow_partial(true);
  response.Clear();
  status = Call(*router_stub_, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.missing_shards_size(), 1);
  EXPECT_EQ(response.missing_shards(0), gone);
  for (const v1::QueryResult& result : response.results()) {
    for (const v1::Negative& negative : result.negatives()) {
      EXPECT_NE(ShardOf(negative.id(), kShards), 1u) << negative.id();
    }
  }
}

TEST_F(RouterTest, ShardsListedOutOfOrderAreNeverMerged) {
  ShardSet swapped(
      {shards_[1].target(), shards_[0].target(), shards_[2].target()},
      ShardSetOptions{});
  const ShardSetView view = swapped.Refresh();
  EXPECT_FALSE(view.all_serving);
  EXPECT_TRUE(view.shards[0].misplaced);
  EXPECT_TRUE(view.shards[1].misplaced);
  EXPECT_FALSE(view.shards[2].misplaced);
  ShardedMiner miner(&swapped, ShardedMinerOptions{}, nullptr);
  Rng rng(8);
  v1::MineRequest request = RandomRequest(rng);
  v1::MineResponse response;
  const absl::Status status = miner.Mine(
      request, std::chrono::system_clock::now() + std::chrono::seconds(20),
      &response);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr(shards_[1].target()));
  EXPECT_THAT(status.message(), HasSubstr("--shard_index order"));
}

TEST_F(RouterTest, APublishThroughTheRouterReachesEveryShard) {
  const grpc::Status status = Publish("p1", 300, 3);
  ASSERT_TRUE(status.ok()) << status.error_message();
  size_t total = 0;
  for (uint32_t s = 0; s < kShards; ++s) {
    const auto version = shards_[s].manager->Current();
    ASSERT_EQ(version->info().name, "p1");
    for (size_t r = 0; r < version->size(); ++r) {
      EXPECT_EQ(ShardOf(version->store().id(r), kShards), s);
    }
    total += version->size();
  }
  EXPECT_EQ(total, 300u);
  grpc::ClientContext info_context;
  v1::IndexInfo info;
  ASSERT_TRUE(
      router_stub_
          ->GetIndexInfo(&info_context, v1::GetIndexInfoRequest(), &info)
          .ok());
  EXPECT_EQ(info.version().name(), "p1");
  EXPECT_EQ(info.size(), 300u);
  EXPECT_EQ(info.shards_size(), static_cast<int>(kShards));
}

TEST_F(RouterTest, APublishOneShardWouldRefuseReachesNoShard) {
  // A NaN in one row (which only its own shard would see), then chunks
  // that disagree on labels (each alone fine on its shards).
  grpc::Status status = Publish("nan", 300, 3, [](int chunk, auto* c) {
    if (chunk == 2) c->set_embeddings(5, NAN);
  });
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("non-finite"));
  status = Publish("labels", 300, 3, [](int chunk, auto* c) {
    if (chunk == 1) c->clear_labels();
  });
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("agree on having labels"));
  for (const Served& shard : shards_) {
    EXPECT_EQ(shard.manager->Current()->info().name, "v1");
  }
}

TEST_F(RouterTest, APublishCutShortReachesNoShard) {
  // The header promises 200 ids; the stream carries 100.
  const grpc::Status status = Publish("cut", 200, 1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("cut short"));
  for (const Served& shard : shards_) {
    EXPECT_EQ(shard.manager->Current()->info().name, "v1");
  }
}

// A shard that requires a token, a router that sends it, and a router that
// requires its own clients' tokens, with their roles.
TEST(RouterAuthTest, TokensGuardTheRouterAndItsShards) {
  const std::string shard_token = "shard-token-0123456789";
  const std::string mine_token = "mine-token-0123456789";
  const std::string publish_token = "publish-token-0123456789";
  absl::StatusOr<TokenAuthorizer> shard_auth = TokenAuthorizer::FromText(
      shard_token + " mine,publish\n", "shard tokens");
  absl::StatusOr<TokenAuthorizer> router_auth = TokenAuthorizer::FromText(
      mine_token + " mine\n" + publish_token + " mine,publish\n",
      "router tokens");
  ASSERT_TRUE(shard_auth.ok() && router_auth.ok());

  IndexManager manager(IndexManagerOptions{});
  Rng rng(3);
  StoreSpec spec;
  spec.n = 200;
  spec.dim = 4;
  Install(manager, RandomStore(rng, spec), "v1", 1);
  ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.threads = 1;
  server_options.service.auth =
      std::make_shared<const TokenAuthorizer>(*std::move(shard_auth));
  absl::StatusOr<std::unique_ptr<HardnegServer>> shard =
      HardnegServer::Start(server_options, &manager);
  ASSERT_TRUE(shard.ok());
  const std::string target = absl::StrCat("127.0.0.1:", (*shard)->port());

  // Without the shard's token the router learns nothing.
  ShardSet tokenless({target}, ShardSetOptions{});
  EXPECT_FALSE(tokenless.Refresh().version.has_value());
  EXPECT_THAT(tokenless.View().shards[0].error, HasSubstr("UNAUTHENTICATED"));

  ShardSetOptions with_token;
  with_token.bearer_token = shard_token;
  ShardSet shards({target}, with_token);
  ASSERT_TRUE(shards.Refresh().all_serving);
  ShardedMiner miner(&shards, ShardedMinerOptions{}, nullptr);
  RouterServiceOptions service_options;
  service_options.auth =
      std::make_shared<const TokenAuthorizer>(*std::move(router_auth));
  RouterService service(&shards, &miner, nullptr, service_options);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> router = builder.BuildAndStart();
  ASSERT_NE(router, nullptr);
  auto stub = v1::Miner::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));

  v1::MineRequest request;
  v1::Query* query = request.add_queries();
  for (int i = 0; i < 4; ++i) query->add_embedding(0.5f);
  request.mutable_options()->set_num_negatives(3);
  auto mine = [&](const std::string& token) {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::MineResponse response;
    return stub->MineOnce(&context, request, &response).error_code();
  };
  EXPECT_EQ(mine(""), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(mine("not-a-token-0123456789"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(mine(mine_token), grpc::StatusCode::OK);
  auto publish = [&](const std::string& token) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    v1::PublishResponse response;
    auto writer = stub->Publish(&context, &response);
    v1::PublishRequest header;
    header.mutable_header()->set_name("p");
    header.mutable_header()->set_dim(4);
    writer->Write(header);
    v1::PublishRequest chunk;
    chunk.mutable_chunk()->add_ids(1);
    for (int i = 0; i < 4; ++i) chunk.mutable_chunk()->add_embeddings(1);
    writer->Write(chunk);
    writer->WritesDone();
    return writer->Finish().error_code();
  };
  EXPECT_EQ(publish(mine_token), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(manager.Current()->info().name, "v1");
  EXPECT_EQ(publish(publish_token), grpc::StatusCode::OK);
  EXPECT_EQ(manager.Current()->info().name, "p");
  router->Shutdown();
}

}  // namespace
}  // namespace hardneg

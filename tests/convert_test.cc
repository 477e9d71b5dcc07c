#include "server/convert.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hardneg {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::shared_ptr<const IndexVersion> TinyVersion() {
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      2, {10, 20}, {1, 0, 0, 1}, std::vector<int64_t>{7, 8});
  EXPECT_TRUE(store.ok());
  VersionInfo info;
  info.name = "tiny";
  info.sequence = 3;
  info.step = 42;
  absl::StatusOr<std::shared_ptr<const IndexVersion>> version =
      IndexVersion::Build(info, *std::move(store), IndexBuildOptions{});
  EXPECT_TRUE(version.ok());
  return *version;
}

TEST(DecodeMineRequestTest, MapsEveryOptionAndKeepsPresence) {
  v1::MineRequest request;
  v1::MiningOptions* o = request.mutable_options();
  o->set_num_negatives(5);
  o->set_range_min(2);
  o->set_range_max(9);
  o->set_max_score(0);  // a bound of 0 is a bound
  o->set_relative_margin(0.25f);
  o->set_sampling(v1::SAMPLING_SOFTMAX);
  o->set_temperature(0.5f);
  o->set_seed(77);
  o->set_return_embeddings(true);
  v1::Query* q = request.add_queries();
  q->add_embedding(1);
  q->add_embedding(2);
  q->add_positive_ids(4);
  q->add_positive_scores(0.5f);
  q->set_label(0);

  DecodedMineRequest decoded;
  ASSERT_TRUE(DecodeMineRequest(request, &decoded).ok());
  const MiningOptions& options = decoded.options;
  EXPECT_EQ(options.num_negatives, 5u);
  EXPECT_EQ(options.range_min, 2u);
  EXPECT_EQ(options.range_max, 9u);
  ASSERT_TRUE(options.max_score.has_value());
  EXPECT_EQ(*options.max_score, 0.0f);
  EXPECT_FALSE(options.min_score.has_value());
  EXPECT_FALSE(options.absolute_margin.has_value());
  EXPECT_EQ(options.relative_margin, 0.25f);
  EXPECT_EQ(options.sampling, Sampling::kSoftmax);
  EXPECT_EQ(options.temperature, 0.5f);
  EXPECT_EQ(options.seed, 77u);
  EXPECT_TRUE(decoded.return_embeddings);
  ASSERT_EQ(decoded.queries.size(), 1u);
  const MiningQuery& query = decoded.queries[0];
  EXPECT_THAT(
      std::vector<float>(query.embedding.begin(), query.embedding.end()),
      ElementsAre(1, 2));
  EXPECT_THAT(std::vector<int64_t>(query.positive_ids.begin(),
                                   query.positive_ids.end()),
              ElementsAre(4));
  EXPECT_EQ(query.label, 0);
  EXPECT_FALSE(query.query_id.has_value());
}

TEST(DecodeMineRequestTest, DecodesLittleEndianBytes) {
  v1::MineRequest request;
  const float values[3] = {0.5f, -2.0f, 3.25f};
  std::string bytes(sizeof(values), '\0');
  std::memcpy(bytes.data(), values, sizeof(values));
  for (int i = 0; i < 3; ++i) request.add_queries()->set_embedding_bytes(bytes);
  DecodedMineRequest decoded;
  ASSERT_TRUE(DecodeMineRequest(request, &decoded).ok());
  ASSERT_EQ(decoded.queries.size(), 3u);
  for (const MiningQuery& q : decoded.queries) {
    EXPECT_THAT(std::vector<float>(q.embedding.begin(), q.embedding.end()),
                ElementsAre(0.5f, -2.0f, 3.25f));
  }
}

TEST(DecodeMineRequestTest, RejectsMalformedPayloads) {
  {
    v1::MineRequest request;
    request.add_queries()->add_embedding(1);
    request.add_queries()->set_embedding_bytes(std::string(7, '\0'));
    DecodedMineRequest decoded;
    absl::Status status = DecodeMineRequest(request, &decoded);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("queries[1].embedding_bytes has 7 bytes"));
  }
  {
    v1::MineRequest request;
    v1::Query* q = request.add_queries();
    q->add_embedding(1);
    q->set_embedding_bytes(std::string(4, '\0'));
    DecodedMineRequest decoded;
    absl::Status status = DecodeMineRequest(request, &decoded);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr("queries[0]"));
  }
  {
    v1::MineRequest request;
    request.mutable_options()->set_sampling(static_cast<v1::Sampling>(9));
    DecodedMineRequest decoded;
    absl::Status status = DecodeMineRequest(request, &decoded);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr("options.sampling"));
  }
}

TEST(EncodeTest, ResultsCarryStoredLabelsAndOptionalEmbeddings) {
  std::shared_ptr<const IndexVersion> version = TinyVersion();
  MiningResult with_p;
  with_p.positive_score = 0.75f;
  with_p.shortfall = 1;
  with_p.negatives.push_back({20, 0.5f, 8, 3, 1});
  MiningResult without_p;
  std::vector<MiningResult> results = {with_p, without_p};

  v1::MineResponse plain;
  EncodeResults(results, *version, false, &plain);
  ASSERT_EQ(plain.results_size(), 2);
  const v1::QueryResult& r0 = plain.results(0);
  EXPECT_TRUE(r0.has_positive_score());
  EXPECT_EQ(r0.positive_score(), 0.75f);
  EXPECT_EQ(r0.shortfall(), 1u);
  ASSERT_EQ(r0.negatives_size(), 1);
  EXPECT_EQ(r0.negatives(0).id(), 20);
  EXPECT_EQ(r0.negatives(0).label(), 8);
  EXPECT_EQ(r0.negatives(0).rank(), 3u);
  EXPECT_EQ(r0.negatives(0).embedding_size(), 0);
  EXPECT_FALSE(plain.results(1).has_positive_score());

  v1::MineResponse with_embeddings;
  EncodeResults(results, *version, true, &with_embeddings);
  EXPECT_THAT(with_embeddings.results(0).negatives(0).embedding(),
              ElementsAre(0.0f, 1.0f));
}

// The reply bound holds for the largest encoded answer it admits: ids,
// labels and ranks at their widest varints, every query full.
TEST(ReplySizeTest, TheBoundCoversTheWorstEncodingAndRefusesPastIt) {
  constexpr size_t kDim = 16;
  constexpr int kQueries = 3;
  constexpr uint32_t kNegatives = 50;
  v1::MineResponse worst;
  worst.set_request_id(~uint64_t{0});
  worst.mutable_index()->set_name("v");
  worst.mutable_index()->set_sequence(~uint64_t{0});
  for (int q = 0; q < kQueries; ++q) {
    v1::QueryResult* result = worst.add_results();
    result->set_shortfall(~uint32_t{0});
    result->set_positive_score(1.5f);
    for (uint32_t i = 0; i < kNegatives; ++i) {
      v1::Negative* n = result->add_negatives();
      n->set_id(-1);  // ten bytes as a varint
      n->set_label(-1);
      n->set_score(-0.5f);
      n->set_rank(~uint32_t{0});
      for (size_t d = 0; d < kDim; ++d) n->add_embedding(0.25f);
    }
  }
  DecodedMineRequest request;
  request.queries.resize(kQueries);
  request.options.num_negatives = kNegatives;
  request.return_embeddings = true;
  const size_t encoded = worst.ByteSizeLong();
  // A limit that this answer would pass must refuse the request...
  EXPECT_FALSE(CheckReplySize(request, kDim, encoded - 1).ok());
  // ...and the bound is not wildly loose: within 25% of the worst case.
  EXPECT_TRUE(CheckReplySize(request, kDim, encoded * 5 / 4).ok());
  const absl::Status refused = CheckReplySize(request, kDim, encoded / 2);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("over the message limit"));
  EXPECT_THAT(refused.message(), HasSubstr("return_embeddings"));
  // Without embeddings the same request is small.
  request.return_embeddings = false;
  EXPECT_TRUE(CheckReplySize(request, kDim, encoded / 2).ok());
}

TEST(ReplySizeTest, RequestFetchIsRangeMaxTimesQueries) {
  v1::MineRequest request;
  request.add_queries();
  request.add_queries();
  request.mutable_options()->set_num_negatives(5);
  request.mutable_options()->set_range_min(3);
  EXPECT_EQ(RequestFetch(request), 16u);  // range_max 0: 3 + 5
  request.mutable_options()->set_range_max(1000000);
  EXPECT_EQ(RequestFetch(request), 2000000u);
}

TEST(EncodeTest, IndexInfoAndVersion) {
  std::shared_ptr<const IndexVersion> version = TinyVersion();
  v1::IndexInfo info = EncodeIndexInfo(
      version.get(), BuildStatus{BuildState::kServing, "", 0, "", 0});
  EXPECT_EQ(info.version().name(), "tiny");
  EXPECT_EQ(info.version().sequence(), 3u);
  EXPECT_EQ(info.size(), 2u);
  EXPECT_EQ(info.dim(), 2u);
  EXPECT_EQ(info.metric(), "inner_product");
  EXPECT_EQ(info.index_type(), "Flat");
  EXPECT_EQ(info.scan(),
            ScanPrecisionName(ResolveScanPrecision(ScanPrecision::kAuto)));
  EXPECT_EQ(info.build_state(), "serving");
  EXPECT_EQ(info.step(), 42u);
  EXPECT_TRUE(info.has_labels());

  v1::IndexInfo empty =
      EncodeIndexInfo(nullptr, BuildStatus{BuildState::kEmpty, "", 0, "", 0});
  EXPECT_EQ(empty.build_state(), "empty");
  EXPECT_EQ(empty.size(), 0u);
}

TEST(StatusTest, MapsCodeAndMessage) {
  grpc::Status status =
      ToGrpcStatus(absl::InvalidArgumentError("queries[2].embedding"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "queries[2].embedding");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(ToGrpcStatus(absl::FailedPreconditionError("x")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  v1::MineResponse response;
  EncodeError(absl::UnavailableError("no index"), &response);
  EXPECT_EQ(response.error().code(), 14u);
  EXPECT_EQ(response.error().message(), "no index");
}

// The domain names its settings in its own terms; what reaches an
// operator names the flag beside them.
TEST(ConvertTest, StatusesNameTheFlagsOfDomainSettings) {
  const absl::Status budget = absl::ResourceExhaustedError(
      absl::StrCat("over ", kIndexByteBudgetTerm, " of 10"));
  const grpc::Status wire = ToGrpcStatus(budget);
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(wire.error_message(),
            "over the index byte budget (--max_index_bytes) of 10");
  EXPECT_THAT(WithFlagNames(absl::StrCat("but ", kServedMetricTerm, " is l2")),
              ::testing::HasSubstr("(--metric)"));
  EXPECT_THAT(WithFlagNames(kSchemaChangesTerm),
              ::testing::HasSubstr("--allow_schema_change"));
  EXPECT_THAT(WithFlagNames(kIndexFactoryTerm),
              ::testing::HasSubstr("--index"));
  EXPECT_EQ(WithFlagNames("nothing to name"), "nothing to name");

  BuildStatus status;
  status.last_rejected = absl::StrCat("huge: over ", kIndexByteBudgetTerm);
  EXPECT_THAT(EncodeIndexInfo(nullptr, status).last_rejected(),
              ::testing::HasSubstr("max_index_bytes"));
}

}  // namespace
}  // namespace hardneg

// Metrics over a real in-process server (loopback TCP) with its own
// registry: a scripted run of requests moves every counter by exactly what
// it did, the index gauges follow the served version, and the exposition
// (collected, and as served on /metrics) passes `promtool check metrics`.
// MetricsEndpoint serves its collectables in order and survives other
// paths and bad requests (tests/http_endpoint_test.cc covers its HTTP).
#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "corpus/candidate_store.h"
#include "format/checkpoint.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "loopback_socket.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/server.h"
#include "versions/index_manager.h"

namespace hardneg {
namespace {

constexpr int kDim = 8;
constexpr int kCandidates = 12;  // id i has label i % 3
constexpr uint32_t kNegatives = 4;
constexpr char kPromtool[] = "/usr/bin/promtool";

using Labels = std::map<std::string, std::string>;
using Families = std::vector<prometheus::MetricFamily>;

std::vector<float> RandomVectors(size_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> vectors(rows * kDim);
  for (float& v : vectors) v = normal(rng);
  return vectors;
}

std::vector<int64_t> Ids(int64_t n) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = i;
  return ids;
}

std::vector<int64_t> Labels3(int64_t n) {
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = i % 3;
  return labels;
}

// Label 0 excludes ids 0, 3, 6, 9, and the positives exclude themselves,
// so the survivors are the other ids: with positives {1}, 7 survive
// (no shortfall); with kShortBy1, 3 survive (8, 10, 11); with kShortBy3, 1
// (11).
const std::vector<int64_t> kFullPositives = {1};
const std::vector<int64_t> kShortBy1 = {1, 2, 4, 5, 7};
const std::vector<int64_t> kShortBy3 = {1, 2, 4, 5, 7, 8, 10};

void AddQuery(const std::vector<int64_t>& positives, int dim, std::mt19937& rng,
              v1::MineRequest* request) {
  std::normal_distribution<float> normal;
  v1::Query* query = request->add_queries();
  for (int i = 0; i < dim; ++i) query->add_embedding(normal(rng));
  for (int64_t id : positives) query->add_positive_ids(id);
  query->set_label(0);
}

v1::MineRequest Request(
    uint64_t id, int queries, std::mt19937& rng,
    const std::vector<int64_t>& first_positives = kFullPositives) {
  v1::MineRequest request;
  request.set_request_id(id);
  request.mutable_options()->set_num_negatives(kNegatives);
  AddQuery(first_positives, kDim, rng, &request);
  for (int q = 1; q < queries; ++q)
    AddQuery(kFullPositives, kDim, rng, &request);
  return request;
}

// The one sample of family `name` with exactly `labels`, or null.
const prometheus::ClientMetric* Find(const Families& families,
                                     const std::string& name,
                                     const Labels& labels = {}) {
  for (const prometheus::MetricFamily& family : families) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      Labels have;
      for (const auto& label : metric.label) have[label.name] = label.value;
      if (have == labels) return &metric;
    }
  }
  return nullptr;
}

const prometheus::MetricFamily* FindFamily(const Families& families,
                                           const std::string& name) {
  for (const prometheus::MetricFamily& family : families) {
    if (family.name == name) return &family;
  }
  return nullptr;
}

// A counter's or gauge's value, or a histogram's sample count; NaN (which
// fails every comparison) when the sample does not exist.
double Value(const Families& families, const std::string& name,
             const Labels& labels = {}) {
  const prometheus::ClientMetric* metric = Find(families, name, labels);
  const prometheus::MetricFamily* family = FindFamily(families, name);
  if (metric == nullptr || family == nullptr) {
    ADD_FAILURE() << "no sample " << name << " with the given labels";
    return std::nan("");
  }
  switch (family->type) {
    case prometheus::MetricType::Counter:
      return metric->counter.value;
    case prometheus::MetricType::Gauge:
      return metric->gauge.value;
    case prometheus::MetricType::Histogram:
      return static_cast<double>(metric->histogram.sample_count);
    default:
      ADD_FAILURE() << name << " has an unexpected type";
      return std::nan("");
  }
}

// The sum over every sample of a counter family.
double FamilyTotal(const Families& families, const std::string& name) {
  const prometheus::MetricFamily* family = FindFamily(families, name);
  if (family == nullptr) return std::nan("");
  double total = 0;
  for (const auto& metric : family->metric) total += metric.counter.value;
  return total;
}

Labels Rpc(const std::string& method, const std::string& type) {
  return {{"grpc_service", "hardneg.v1.Miner"},
          {"grpc_method", method},
          {"grpc_type", type}};
}

Labels Handled(const std::string& method, const std::string& type,
               const std::string& code) {
  Labels labels = Rpc(method, type);
  labels["grpc_code"] = code;
  return labels;
}

// What `promtool check metrics` says about `text` (empty: no problems), or
// a failure when promtool is missing or cannot run.
::testing::AssertionResult PromtoolAccepts(const std::string& text) {
  if (!std::filesystem::exists(kPromtool)) {
    return ::testing::AssertionFailure()
           << kPromtool
           << " is missing: install Debian's `prometheus` package "
              "(scripts/install-deps.sh) to check the exposition";
  }
  const std::string path = ::testing::TempDir() + "/hardneg_metrics_" +
                           std::to_string(::getpid()) + ".txt";
  std::ofstream(path) << text;
  const std::string command =
      std::string(kPromtool) + " check metrics < " + path + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    return ::testing::AssertionFailure() << "cannot run " << command;
  }
  std::string output;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    output.append(buffer, n);
  }
  const int status = ::pclose(pipe);
  std::filesystem::remove(path);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !output.empty()) {
    return ::testing::AssertionFailure()
           << "promtool check metrics (exit status " << status << ") reports:\n"
           << output << "\non:\n"
           << text;
  }
  return ::testing::AssertionSuccess();
}

// Sends `request` to 127.0.0.1:<port> over a plain socket and returns all
// that comes back until the server closes the connection ("" when the
// connection fails). A 30 s receive timeout keeps a broken server from
// hanging the test.
std::string HttpExchange(int port, const std::string& request) {
  LoopbackSocket socket(port);
  if (!socket.connected() || !socket.Send(request)) return "";
  return socket.ReadAll();
}

// GET http://127.0.0.1:<port><path>; the status line and the body.
std::pair<std::string, std::string> HttpGet(int port, const std::string& path) {
  const std::string reply = HttpExchange(
      port, "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  const size_t line_end = reply.find("\r\n");
  const size_t body = reply.find("\r\n\r\n");
  if (line_end == std::string::npos || body == std::string::npos) return {};
  return {reply.substr(0, line_end), reply.substr(body + 4)};
}

class MetricsTest : public ::testing::Test {
 protected:
  // One server, index and endpoint shared by the tests, which compare
  // counters before and after what they do.
  static void SetUpTestSuite() {
    root_ = new std::string(::testing::TempDir() + "/hardneg_metrics_test_" +
                            std::to_string(::getpid()));
    std::filesystem::remove_all(*root_);
    std::filesystem::create_directories(*root_);
    CheckpointManifest manifest;
    manifest.name = "v1";
    manifest.step = 100;
    manifest.dim = kDim;
    manifest.metric = Metric::kInnerProduct;
    ASSERT_TRUE(WriteCheckpoint(*root_, manifest, RandomVectors(kCandidates, 1),
                                Ids(kCandidates), Labels3(kCandidates))
                    .ok());

    registry_ = new std::shared_ptr<prometheus::Registry>(
        std::make_shared<prometheus::Registry>());
    metrics_ = new ServerMetrics(**registry_);
    IndexManagerOptions options;
    options.checkpoints_dir = *root_;
    manager_ = new IndexManager(options);
    manager_->SetEvents(WithIndexMetrics(metrics_));
    ASSERT_TRUE(manager_->LoadNewest().ok());
    // A version already recorded by its swap is not recorded again.
    metrics_->IndexServed(*manager_->Current());

    ServerOptions server_options;
    server_options.host = "127.0.0.1";
    server_options.port = 0;
    server_options.threads = 2;
    server_options.metrics = metrics_;
    absl::StatusOr<std::unique_ptr<HardnegServer>> server =
        HardnegServer::Start(server_options, manager_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();

    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start("127.0.0.1", 0,
                               {*registry_, metrics_->ScrapeTimeMetrics()});
    ASSERT_TRUE(endpoint.ok()) << endpoint.status();
    endpoint_ = endpoint->release();
  }

  static void TearDownTestSuite() {
    delete endpoint_;
    delete server_;
    delete manager_;
    delete metrics_;
    delete registry_;
    std::filesystem::remove_all(*root_);
    delete root_;
  }

  static Families Collect() {
    Families families = (*registry_)->Collect();
    for (auto& family : metrics_->ScrapeTimeMetrics()->Collect()) {
      families.push_back(std::move(family));
    }
    return families;
  }

  std::unique_ptr<v1::Miner::Stub> Stub() {
    return v1::Miner::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                            grpc::InsecureChannelCredentials()));
  }

  static std::string* root_;
  static std::shared_ptr<prometheus::Registry>* registry_;
  static ServerMetrics* metrics_;
  static IndexManager* manager_;
  static HardnegServer* server_;
  static MetricsEndpoint* endpoint_;
};

std::string* MetricsTest::root_ = nullptr;
std::shared_ptr<prometheus::Registry>* MetricsTest::registry_ = nullptr;
ServerMetrics* MetricsTest::metrics_ = nullptr;
IndexManager* MetricsTest::manager_ = nullptr;
HardnegServer* MetricsTest::server_ = nullptr;
MetricsEndpoint* MetricsTest::endpoint_ = nullptr;

TEST_F(MetricsTest, CountersMoveByExactlyWhatAScriptedRunDid) {
  const Families before = Collect();
  auto stub = Stub();
  std::mt19937 rng(11);

  // 7 MineOnce calls of 3 queries; the first query of call 2 is short by 1
  // and that of call 5 by 3.
  uint64_t negatives_seen = 0;
  uint64_t shortfall_seen = 0;
  for (int i = 0; i < 7; ++i) {
    const v1::MineRequest request = Request(i, 3, rng,
                                            i == 2   ? kShortBy1
                                            : i == 5 ? kShortBy3
                                                     : kFullPositives);
    grpc::ClientContext context;
    v1::MineResponse response;
    const grpc::Status status = stub->MineOnce(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.results_size(), 3);
    for (const v1::QueryResult& result : response.results()) {
      negatives_seen += static_cast<uint64_t>(result.negatives_size());
      shortfall_seen += result.shortfall();
    }
  }
  EXPECT_EQ(negatives_seen, 7u * 3 * kNegatives - 4);
  EXPECT_EQ(shortfall_seen, 4u);

  // 2 MineOnce calls that fail: a wrong dimension, and no queries.
  {
    v1::MineRequest wrong_dim = Request(100, 1, rng);
    AddQuery(kFullPositives, kDim + 1, rng, &wrong_dim);
    v1::MineRequest no_queries;
    no_queries.mutable_options()->set_num_negatives(kNegatives);
    for (const v1::MineRequest* request : {&wrong_dim, &no_queries}) {
      grpc::ClientContext context;
      v1::MineResponse response;
      EXPECT_EQ(stub->MineOnce(&context, *request, &response).error_code(),
                grpc::INVALID_ARGUMENT);
    }
  }

  // One Mine stream of 5 requests of 2 queries; request 3 fails in-band.
  {
    grpc::ClientContext context;
    auto stream = stub->Mine(&context);
    for (int i = 0; i < 5; ++i) {
      v1::MineRequest request = Request(200 + i, 2, rng);
      if (i == 3) request.mutable_queries(1)->add_embedding(1.0f);
      ASSERT_TRUE(stream->Write(request));
    }
    stream->WritesDone();
    v1::MineResponse response;
    int answered = 0;
    while (stream->Read(&response)) {
      EXPECT_EQ(
          response.error().code(),
          answered == 3 ? static_cast<uint32_t>(grpc::INVALID_ARGUMENT) : 0u);
      if (answered != 3) {
        EXPECT_EQ(response.results_size(), 2);
        for (const v1::QueryResult& result : response.results()) {
          EXPECT_EQ(result.negatives_size(), static_cast<int>(kNegatives));
        }
      }
      ++answered;
    }
    EXPECT_EQ(answered, 5);
    ASSERT_TRUE(stream->Finish().ok());
  }

  // One GetIndexInfo, and one Publish rejected for its missing header.
  {
    grpc::ClientContext context;
    v1::IndexInfo info;
    ASSERT_TRUE(stub->GetIndexInfo(&context, {}, &info).ok());
  }
  {
    grpc::ClientContext context;
    v1::PublishResponse response;
    auto writer = stub->Publish(&context, &response);
    writer->WritesDone();
    EXPECT_EQ(writer->Finish().error_code(), grpc::INVALID_ARGUMENT);
  }

  // Every call has returned to the client, and each was recorded before
  // its answer was sent: no waiting needed.
  const Families after = Collect();
  auto delta = [&](const std::string& name, const Labels& labels = {}) {
    return Value(after, name, labels) - Value(before, name, labels);
  };
  EXPECT_EQ(delta("hardneg_queries_total"), 7 * 3 + 4 * 2);
  EXPECT_EQ(delta("hardneg_negatives_returned_total"),
            7 * 3 * kNegatives - 4 + 4 * 2 * kNegatives);
  EXPECT_EQ(delta("hardneg_shortfall_total"), 4);
  EXPECT_EQ(
      delta("hardneg_requests_failed_total", {{"code", "INVALID_ARGUMENT"}}),
      3);
  EXPECT_EQ(FamilyTotal(after, "hardneg_requests_failed_total") -
                FamilyTotal(before, "hardneg_requests_failed_total"),
            3);

  // Histograms: one latency sample per request (OK or not), one per-query
  // latency per answered request, and one batch size per search call:
  // requests queued together share one, so there are at most as many as
  // answered requests, and they sum to the queries answered.
  EXPECT_EQ(delta("hardneg_mine_latency_seconds", {{"rpc", "MineOnce"}}), 9);
  EXPECT_EQ(delta("hardneg_mine_latency_seconds", {{"rpc", "Mine"}}), 5);
  EXPECT_EQ(delta("hardneg_query_latency_seconds", {{"rpc", "MineOnce"}}), 7);
  EXPECT_EQ(delta("hardneg_query_latency_seconds", {{"rpc", "Mine"}}), 4);
  EXPECT_GE(delta("hardneg_batch_size"), 1);
  EXPECT_LE(delta("hardneg_batch_size"), 11);
  const prometheus::ClientMetric* batch_after =
      Find(after, "hardneg_batch_size");
  const prometheus::ClientMetric* batch_before =
      Find(before, "hardneg_batch_size");
  ASSERT_NE(batch_after, nullptr);
  ASSERT_NE(batch_before, nullptr);
  EXPECT_EQ(
      batch_after->histogram.sample_sum - batch_before->histogram.sample_sum,
      7 * 3 + 4 * 2);

  // Per RPC, per method and code.
  EXPECT_EQ(delta("grpc_server_started_total", Rpc("Mine", "bidi_stream")), 1);
  EXPECT_EQ(delta("grpc_server_started_total", Rpc("MineOnce", "unary")), 9);
  EXPECT_EQ(delta("grpc_server_started_total", Rpc("GetIndexInfo", "unary")),
            1);
  EXPECT_EQ(delta("grpc_server_started_total", Rpc("Publish", "client_stream")),
            1);
  EXPECT_EQ(
      delta("grpc_server_handled_total", Handled("Mine", "bidi_stream", "OK")),
      1);
  EXPECT_EQ(
      delta("grpc_server_handled_total", Handled("MineOnce", "unary", "OK")),
      7);
  EXPECT_EQ(delta("grpc_server_handled_total",
                  Handled("MineOnce", "unary", "INVALID_ARGUMENT")),
            2);
  EXPECT_EQ(delta("grpc_server_handled_total",
                  Handled("GetIndexInfo", "unary", "OK")),
            1);
  EXPECT_EQ(delta("grpc_server_handled_total",
                  Handled("Publish", "client_stream", "INVALID_ARGUMENT")),
            1);
  EXPECT_EQ(FamilyTotal(after, "grpc_server_handled_total") -
                FamilyTotal(before, "grpc_server_handled_total"),
            12);
  EXPECT_EQ(FamilyTotal(after, "grpc_server_started_total") -
                FamilyTotal(before, "grpc_server_started_total"),
            12);
  // A rejected Publish never reached the IndexManager.
  EXPECT_EQ(delta("hardneg_refresh_failures_total"), 0);
}

TEST_F(MetricsTest, LatencyHistogramsHaveTheContractBuckets) {
  const Families families = Collect();
  const std::vector<double> latency = {
      100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
      50e-3,  0.1,    0.25,   0.5,  1,      2.5,  5,     10};
  for (const char* name :
       {"hardneg_mine_latency_seconds", "hardneg_query_latency_seconds"}) {
    for (const char* rpc : {"Mine", "MineOnce"}) {
      const prometheus::ClientMetric* metric =
          Find(families, name, {{"rpc", rpc}});
      ASSERT_NE(metric, nullptr) << name << " " << rpc;
      ASSERT_EQ(metric->histogram.bucket.size(), latency.size() + 1);
      for (size_t i = 0; i < latency.size(); ++i) {
        EXPECT_DOUBLE_EQ(metric->histogram.bucket[i].upper_bound, latency[i]);
      }
      EXPECT_TRUE(std::isinf(metric->histogram.bucket.back().upper_bound));
    }
  }
  const prometheus::ClientMetric* batch = Find(families, "hardneg_batch_size");
  ASSERT_NE(batch, nullptr);
  ASSERT_EQ(batch->histogram.bucket.size(), 12u);  // 1, 2, ..., 1024, +Inf
  EXPECT_EQ(batch->histogram.bucket[0].upper_bound, 1);
  EXPECT_EQ(batch->histogram.bucket[10].upper_bound, 1024);
}

TEST_F(MetricsTest, IndexGaugesFollowTheServedVersion) {
  auto expect_served = [&](const Families& families) {
    const std::shared_ptr<const IndexVersion> served = manager_->Current();
    ASSERT_NE(served, nullptr);
    EXPECT_EQ(Value(families, "hardneg_index_candidates"),
              static_cast<double>(served->size()));
    EXPECT_EQ(Value(families, "hardneg_index_sequence"),
              static_cast<double>(served->info().sequence));
  };
  Families families = Collect();
  expect_served(families);
  EXPECT_GE(Value(families, "hardneg_index_age_seconds"), 0);
  const double refreshes = Value(families, "hardneg_refresh_duration_seconds");
  const double failures = Value(families, "hardneg_refresh_failures_total");
  const uint64_t sequence = manager_->Current()->info().sequence;

  // A bigger version goes live: the gauges follow, the age restarts, and
  // the build is observed.
  const absl::Time swap_start = absl::Now();
  absl::StatusOr<CandidateStore> bigger =
      CandidateStore::Create(kDim, Ids(20), RandomVectors(20, 2), Labels3(20));
  ASSERT_TRUE(bigger.ok());
  ASSERT_TRUE(
      manager_
          ->Install("bigger", 200, Metric::kInnerProduct, *std::move(bigger))
          .ok());
  families = Collect();
  const double since_swap_start =
      absl::ToDoubleSeconds(absl::Now() - swap_start);
  expect_served(families);
  EXPECT_EQ(Value(families, "hardneg_index_candidates"), 20);
  EXPECT_EQ(Value(families, "hardneg_index_sequence"),
            static_cast<double>(sequence + 1));
  EXPECT_LE(Value(families, "hardneg_index_age_seconds"), since_swap_start);
  EXPECT_EQ(Value(families, "hardneg_refresh_duration_seconds"), refreshes + 1);

  // A rejected version (another dim) is counted; the gauges stay.
  absl::StatusOr<CandidateStore> wrong_dim = CandidateStore::Create(
      kDim + 1, Ids(3), std::vector<float>(3 * (kDim + 1), 1.0f), Labels3(3));
  ASSERT_TRUE(wrong_dim.ok());
  EXPECT_EQ(manager_
                ->Install("wrong_dim", 300, Metric::kInnerProduct,
                          *std::move(wrong_dim))
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  families = Collect();
  EXPECT_EQ(Value(families, "hardneg_refresh_failures_total"), failures + 1);
  EXPECT_EQ(Value(families, "hardneg_index_candidates"), 20);

  // Back to the candidates the other tests mine.
  absl::StatusOr<CandidateStore> original = CandidateStore::Create(
      kDim, Ids(kCandidates), RandomVectors(kCandidates, 1),
      Labels3(kCandidates));
  ASSERT_TRUE(original.ok());
  ASSERT_TRUE(
      manager_->Install("v1", 400, Metric::kInnerProduct, *std::move(original))
          .ok());
  families = Collect();
  expect_served(families);
  EXPECT_EQ(Value(families, "hardneg_index_sequence"),
            static_cast<double>(sequence + 2));
  EXPECT_EQ(Value(families, "hardneg_refresh_duration_seconds"), refreshes + 2);
}

TEST_F(MetricsTest, ProcessMetricsDescribeThisProcess) {
  // /proc counts CPU time in clock ticks (10 ms): a test process that has
  // barely run can read 0, so use 50 ms of CPU first.
  timespec cpu{};
  do {
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
  } while (cpu.tv_sec == 0 && cpu.tv_nsec < 50'000'000);
  const Families families = Collect();
  EXPECT_GT(Value(families, "process_cpu_seconds_total"), 0);
  EXPECT_GT(Value(families, "process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(Value(families, "process_virtual_memory_bytes"),
            Value(families, "process_resident_memory_bytes"));
  EXPECT_GT(Value(families, "process_open_fds"), 2);
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  const double start = Value(families, "process_start_time_seconds");
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 3600);  // this test binary started within the hour
}

TEST_F(MetricsTest, ExpositionPassesPromtoolAndHasEveryContractName) {
  // Some traffic first, so that every histogram has samples.
  auto stub = Stub();
  std::mt19937 rng(5);
  grpc::ClientContext context;
  v1::MineResponse response;
  ASSERT_TRUE(stub->MineOnce(&context, Request(1, 2, rng), &response).ok());

  const Families families = Collect();
  for (const char* name : {
           "hardneg_mine_latency_seconds",
           "hardneg_query_latency_seconds",
           "hardneg_queries_total",
           "hardneg_negatives_returned_total",
           "hardneg_shortfall_total",
           "hardneg_requests_failed_total",
           "hardneg_index_candidates",
           "hardneg_index_sequence",
           "hardneg_index_age_seconds",
           "hardneg_refresh_duration_seconds",
           "hardneg_refresh_failures_total",
           "hardneg_batch_size",
           "grpc_server_started_total",
           "grpc_server_handled_total",
           "process_cpu_seconds_total",
           "process_resident_memory_bytes",
           "process_start_time_seconds",
       }) {
    EXPECT_NE(FindFamily(families, name), nullptr) << name;
  }
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, families);
  EXPECT_TRUE(PromtoolAccepts(text.str()));

  // The same, as the endpoint serves it.
  ASSERT_GT(endpoint_->port(), 0);
  const auto [status_line, body] = HttpGet(endpoint_->port(), "/metrics");
  EXPECT_NE(status_line.find(" 200"), std::string::npos) << status_line;
  EXPECT_NE(body.find("\nhardneg_queries_total "), std::string::npos) << body;
  EXPECT_NE(body.find("hardneg_index_age_seconds "), std::string::npos);
  EXPECT_NE(body.find("process_cpu_seconds_total "), std::string::npos);
  EXPECT_TRUE(PromtoolAccepts(body));
}

TEST(MetricsEndpointTest, ServesTheCollectablesInOrder) {
  auto first = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("hardneg_test_first_total")
      .Help("First.")
      .Register(*first)
      .Add({{"k", "v"}})
      .Increment(2);
  auto second = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge()
      .Name("hardneg_test_second")
      .Help("Second.")
      .Register(*second)
      .Add({})
      .Set(-1.5);
  for (const auto& order :
       {std::vector<std::shared_ptr<prometheus::Registry>>{first, second},
        std::vector<std::shared_ptr<prometheus::Registry>>{second, first}}) {
    Families families;
    for (const auto& registry : order) {
      for (auto& family : registry->Collect()) families.push_back(family);
    }
    std::ostringstream expected;
    prometheus::TextSerializer().Serialize(expected, families);
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start("127.0.0.1", 0, {order[0], order[1]});
    ASSERT_TRUE(endpoint.ok()) << endpoint.status();
    const int port = (*endpoint)->port();

    const auto [status_line, body] = HttpGet(port, "/metrics?x=1");
    EXPECT_EQ(status_line, "HTTP/1.1 200 OK");
    EXPECT_EQ(body, expected.str());
    const std::string head =
        HttpExchange(port, "HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    EXPECT_NE(head.find("\r\nContent-Type: text/plain; version=0.0.4; "
                        "charset=utf-8\r\n"),
              std::string::npos)
        << head;
    EXPECT_NE(head.find(absl::StrCat(
                  "\r\nContent-Length: ", expected.str().size(), "\r\n")),
              std::string::npos)
        << head;
    EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n");  // no body
  }
}

// A regression test for a crash: prometheus-cpp's Exposer answered other
// paths and bad requests on civetweb worker threads whose fixed ~100 KB
// stacks, less the 61 KB of static TLS of libopenblas (which this binary
// loads, as hardneg-server does), overflowed in civetweb's error path, and
// the whole process died.
TEST(MetricsEndpointTest, OtherPathsAndBadRequestsGet4xxAndScrapesGoOn) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("hardneg_test_requests_total")
      .Help("A counter for this test.")
      .Register(*registry)
      .Add({})
      .Increment(3);
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      MetricsEndpoint::Start("127.0.0.1", 0, {registry});
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();

  for (const char* path : {"/", "/healthz", "/metrics/x", "/../etc/passwd"}) {
    EXPECT_EQ(HttpGet(port, path).first, "HTTP/1.1 404 Not Found") << path;
  }
  EXPECT_EQ(HttpGet(port, "/" + std::string(5000, 'a')).first,
            "HTTP/1.1 404 Not Found");
  for (const std::string& request : {
           std::string("junk\r\n\r\n"),
           std::string("GET /metrics\r\n\r\n"),
           std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
                       15),  // a TLS hello
           std::string("GET /metrics HTTP/1.1\r\nHost: x\r\nX: ") +
               std::string(size_t{100} << 10, 'x') + "\r\n\r\n",
       }) {
    const std::string reply = HttpExchange(port, request);
    EXPECT_EQ(reply.substr(0, 10), "HTTP/1.1 4") << reply;
  }
  EXPECT_EQ(HttpExchange(port,
                         "POST /metrics HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 0\r\n\r\n")
                .substr(0, 12),
            "HTTP/1.1 405");

  const auto [status_line, body] = HttpGet(port, "/metrics");
  EXPECT_EQ(status_line, "HTTP/1.1 200 OK");
  EXPECT_NE(body.find("\nhardneg_test_requests_total 3\n"), std::string::npos)
      << body;
}

TEST(MetricsEndpointTest, AnAddressInUseIsUnavailable) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
            0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length),
            0);
  const int taken = ntohs(address.sin_port);
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      MetricsEndpoint::Start("127.0.0.1", taken, {});
  EXPECT_EQ(endpoint.status().code(), absl::StatusCode::kUnavailable);
  ::close(fd);
}

}  // namespace
}  // namespace hardneg

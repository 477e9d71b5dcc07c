#include "server/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/build_info.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"
#include "prometheus/text_serializer.h"

namespace hardneg {
namespace {

// Indexed by grpc::StatusCode (and absl::StatusCode: the values agree).
constexpr std::array<const char*, 17> kCodeNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};
constexpr size_t kUnknownCode = 2;

size_t CodeIndex(int code) {
  return code >= 0 && static_cast<size_t>(code) < kCodeNames.size()
             ? static_cast<size_t>(code)
             : kUnknownCode;
}

struct MethodSpec {
  const char* name;
  const char* type;  // grpc_type, as in go-grpc-prometheus
};
// In the order of ServerMetrics::rpcs_.
constexpr std::array<MethodSpec, 4> kMethods = {{
    {"Mine", "bidi_stream"},
    {"MineOnce", "unary"},
    {"Publish", "client_stream"},
    {"GetIndexInfo", "unary"},
}};

prometheus::Histogram::BucketBoundaries BatchBuckets() {
  prometheus::Histogram::BucketBoundaries buckets;
  for (double b = 1; b <= 1024; b *= 2) buckets.push_back(b);
  return buckets;
}

// Index builds: milliseconds for a small Flat index, up to many minutes
// for a trained IVF over millions of candidates.
prometheus::Histogram::BucketBoundaries RefreshBuckets() {
  return {0.01, 0.05, 0.1, 0.25, 0.5, 1,   2.5,  5,
          10,   30,   60,  120,  300, 600, 1800, 3600};
}

// Counts each call's final status; one per intercepted call.
class RpcCountingInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit RpcCountingInterceptor(const ServerMetrics::RpcCounters* counters)
      : counters_(counters) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      counters_->handled[CodeIndex(methods->GetSendStatus().error_code())]
          ->Increment();
    }
    methods->Proceed();
  }

 private:
  const ServerMetrics::RpcCounters* const counters_;
};

class RpcCountingFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcCountingFactory(
      const std::array<ServerMetrics::RpcCounters, 4>* rpcs)
      : rpcs_(rpcs) {
    for (size_t i = 0; i < kMethods.size(); ++i) {
      paths_[i] = absl::StrCat("/", v1::Miner::service_full_name(), "/",
                               kMethods[i].name);
    }
  }

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    for (size_t i = 0; i < paths_.size(); ++i) {
      if (paths_[i] == info->method()) {
        (*rpcs_)[i].started->Increment();
        return new RpcCountingInterceptor(&(*rpcs_)[i]);
      }
    }
    return nullptr;  // health, reflection: not counted
  }

 private:
  const std::array<ServerMetrics::RpcCounters, 4>* const rpcs_;
  std::array<std::string, 4> paths_;
};

prometheus::ClientMetric GaugeValue(double value) {
  prometheus::ClientMetric metric;
  metric.gauge.value = value;
  return metric;
}

prometheus::MetricFamily Family(std::string name, std::string help,
                                prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric = GaugeValue(value);
  }
  family.metric.push_back(std::move(metric));
  return family;
}

// The fields of /proc/self/stat after the command name, which may hold
// spaces: fields()[0] is field 3 (state) of proc(5).
std::vector<std::string> ReadStatFields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  const size_t paren = line.rfind(')');
  if (paren == std::string::npos) return {};
  std::istringstream rest(line.substr(paren + 1));
  return {std::istream_iterator<std::string>(rest),
          std::istream_iterator<std::string>()};
}

double FieldOrZero(const std::vector<std::string>& fields, size_t proc_field) {
  const size_t i = proc_field - 3;
  return i < fields.size() ? std::strtod(fields[i].c_str(), nullptr) : 0;
}

}  // namespace

// The metrics computed when scraped: the index age and the process.
class ServerMetrics::ScrapeTime final : public prometheus::Collectable {
 public:
  ScrapeTime()
      : ticks_per_second_(static_cast<double>(sysconf(_SC_CLK_TCK))),
        page_size_(static_cast<double>(sysconf(_SC_PAGESIZE))),
        start_time_seconds_(ProcessStartTime()) {}

  void SetLive(absl::Time since) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    live_ = true;
    live_since_ = since;
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> families;
    {
      absl::MutexLock lock(&mu_);
      if (live_) {
        families.push_back(
            Family("hardneg_index_age_seconds",
                   "Seconds since the served index version went live (absent "
                   "while no version is served).",
                   MetricType::Gauge,
                   absl::ToDoubleSeconds(absl::Now() - live_since_)));
      }
    }
    const std::vector<std::string> stat = ReadStatFields();
    if (!stat.empty()) {
      families.push_back(Family(
          "process_cpu_seconds_total",
          "Total user and system CPU time spent in seconds.",
          MetricType::Counter,
          (FieldOrZero(stat, 14) + FieldOrZero(stat, 15)) / ticks_per_second_));
      families.push_back(Family("process_virtual_memory_bytes",
                                "Virtual memory size in bytes.",
                                MetricType::Gauge, FieldOrZero(stat, 23)));
    }
    std::ifstream statm("/proc/self/statm");
    double size_pages = 0;
    double resident_pages = 0;
    if (statm >> size_pages >> resident_pages) {
      families.push_back(Family(
          "process_resident_memory_bytes", "Resident memory size in bytes.",
          MetricType::Gauge, resident_pages * page_size_));
    }
    if (start_time_seconds_ > 0) {
      families.push_back(
          Family("process_start_time_seconds",
                 "Start time of the process since unix epoch in seconds.",
                 MetricType::Gauge, start_time_seconds_));
    }
    std::error_code ec;
    double open_fds = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      ++open_fds;
    }
    if (!ec) {
      families.push_back(Family("process_open_fds",
                                "Number of open file descriptors.",
                                MetricType::Gauge, open_fds));
    }
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
      families.push_back(
          Family("process_max_fds", "Maximum number of open file descriptors.",
                 MetricType::Gauge, static_cast<double>(limit.rlim_cur)));
    }
    return families;
  }

 private:
  // Boot time (btime in /proc/stat) plus the start time in /proc/self/stat,
  // in clock ticks after boot; 0 when unknown.
  double ProcessStartTime() const {
    std::ifstream in("/proc/stat");
    std::string key;
    double boot_time = 0;
    while (in >> key) {
      if (key == "btime") {
        in >> boot_time;
        break;
      }
      in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
    }
    const std::vector<std::string> stat = ReadStatFields();
    if (boot_time <= 0 || stat.empty()) return 0;
    return boot_time + FieldOrZero(stat, 22) / ticks_per_second_;
  }

  const double ticks_per_second_;
  const double page_size_;
  const double start_time_seconds_;
  mutable absl::Mutex mu_;
  bool live_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time live_since_ ABSL_GUARDED_BY(mu_);
};

ServerMetrics::ServerMetrics(prometheus::Registry& registry)
    : scrape_time_(std::make_shared<ScrapeTime>()) {
  RegisterBuildInfo(registry);
  RegisterMiningMetrics(registry);
  RegisterIndexMetrics(registry);
  RegisterRpcMetrics(registry);
}

void ServerMetrics::RegisterMiningMetrics(prometheus::Registry& registry) {
  auto& mine_latency =
      prometheus::BuildHistogram()
          .Name("hardneg_mine_latency_seconds")
          .Help(
              "Latency of one mining request, from when it is read to when "
              "its response is ready (OK or error), by rpc.")
          .Register(registry);
  auto& query_latency =
      prometheus::BuildHistogram()
          .Name("hardneg_query_latency_seconds")
          .Help(
              "Latency of an answered mining request divided by its number "
              "of queries, by rpc.")
          .Register(registry);
  for (MineRpc rpc : {MineRpc::kMine, MineRpc::kMineOnce}) {
    const size_t i = static_cast<size_t>(rpc);
    const prometheus::Labels labels = {
        {"rpc", rpc == MineRpc::kMine ? "Mine" : "MineOnce"}};
    mine_latency_[i] = &mine_latency.Add(labels, LatencyBuckets());
    query_latency_[i] = &query_latency.Add(labels, LatencyBuckets());
  }
  batch_size_ = &prometheus::BuildHistogram()
                     .Name("hardneg_batch_size")
                     .Help("Queries per Miner search call.")
                     .Register(registry)
                     .Add({}, BatchBuckets());
  queries_ = &prometheus::BuildCounter()
                  .Name("hardneg_queries_total")
                  .Help("Queries answered (in requests that succeeded).")
                  .Register(registry)
                  .Add({});
  negatives_ = &prometheus::BuildCounter()
                    .Name("hardneg_negatives_returned_total")
                    .Help("Negatives returned, over all answered queries.")
                    .Register(registry)
                    .Add({});
  shortfall_ = &prometheus::BuildCounter()
                    .Name("hardneg_shortfall_total")
                    .Help(
                        "Negatives asked for but not found (sum of each "
                        "query's shortfall).")
                    .Register(registry)
                    .Add({});
  auto& failed =
      prometheus::BuildCounter()
          .Name("hardneg_requests_failed_total")
          .Help(
              "Mining requests answered with an error (in-band on Mine, "
              "the RPC status on MineOnce), by gRPC code.")
          .Register(registry);
  for (size_t code = 1; code < kCodeNames.size(); ++code) {
    failed_[code] = &failed.Add({{"code", kCodeNames[code]}});
  }
}

void ServerMetrics::RegisterIndexMetrics(prometheus::Registry& registry) {
  index_candidates_ = &prometheus::BuildGauge()
                           .Name("hardneg_index_candidates")
                           .Help("Candidates in the served index version.")
                           .Register(registry)
                           .Add({});
  index_sequence_ =
      &prometheus::BuildGauge()
           .Name("hardneg_index_sequence")
           .Help(
               "Sequence of the served index version (rises by one with "
               "every swap; 0 before the first).")
           .Register(registry)
           .Add({});
  refresh_duration_ =
      &prometheus::BuildHistogram()
           .Name("hardneg_refresh_duration_seconds")
           .Help(
               "Time to build a new index version, from the start of the "
               "build to the swap.")
           .Register(registry)
           .Add({}, RefreshBuckets());
  refresh_failures_ =
      &prometheus::BuildCounter()
           .Name("hardneg_refresh_failures_total")
           .Help(
               "Checkpoints and publishes rejected; the served version "
               "kept serving.")
           .Register(registry)
           .Add({});
}

void ServerMetrics::RegisterRpcMetrics(prometheus::Registry& registry) {
  auto& started = prometheus::BuildCounter()
                      .Name("grpc_server_started_total")
                      .Help("Total number of RPCs started on the server.")
                      .Register(registry);
  auto& handled =
      prometheus::BuildCounter()
          .Name("grpc_server_handled_total")
          .Help(
              "Total number of RPCs completed on the server, regardless "
              "of success or failure.")
          .Register(registry);
  const std::string service = v1::Miner::service_full_name();
  for (size_t m = 0; m < kMethods.size(); ++m) {
    const prometheus::Labels labels = {{"grpc_service", service},
                                       {"grpc_method", kMethods[m].name},
                                       {"grpc_type", kMethods[m].type}};
    rpcs_[m].started = &started.Add(labels);
    for (size_t code = 0; code < kCodeNames.size(); ++code) {
      prometheus::Labels with_code = labels;
      with_code["grpc_code"] = kCodeNames[code];
      rpcs_[m].handled[code] = &handled.Add(with_code);
    }
  }
}

std::shared_ptr<prometheus::Collectable> ServerMetrics::ScrapeTimeMetrics()
    const {
  return scrape_time_;
}

void ServerMetrics::RecordMined(MineRpc rpc, double seconds, uint64_t queries,
                                uint64_t negatives, uint64_t shortfall) {
  const size_t i = static_cast<size_t>(rpc);
  mine_latency_[i]->Observe(seconds);
  if (queries > 0) {
    query_latency_[i]->Observe(seconds / static_cast<double>(queries));
    queries_->Increment(static_cast<double>(queries));
  }
  if (negatives > 0) negatives_->Increment(static_cast<double>(negatives));
  if (shortfall > 0) shortfall_->Increment(static_cast<double>(shortfall));
}

void ServerMetrics::RecordFailed(MineRpc rpc, double seconds,
                                 absl::StatusCode code) {
  mine_latency_[static_cast<size_t>(rpc)]->Observe(seconds);
  size_t index = CodeIndex(static_cast<int>(code));
  if (index == 0) index = kUnknownCode;  // an error must not count as OK
  failed_[index]->Increment();
}

void ServerMetrics::RecordBatch(size_t queries) {
  batch_size_->Observe(static_cast<double>(queries));
}

void ServerMetrics::IndexServed(const IndexVersion& version) {
  absl::MutexLock lock(&mu_);
  if (serving_ && version.info().sequence <= served_sequence_) return;
  serving_ = true;
  served_sequence_ = version.info().sequence;
  index_candidates_->Set(static_cast<double>(version.size()));
  index_sequence_->Set(static_cast<double>(version.info().sequence));
  scrape_time_->SetLive(absl::Now());
}

void ServerMetrics::IndexSwapped(const IndexVersion& version,
                                 absl::Duration build_time) {
  if (build_time > absl::ZeroDuration()) {
    refresh_duration_->Observe(absl::ToDoubleSeconds(build_time));
  }
  IndexServed(version);
}

void ServerMetrics::IndexRejected() { refresh_failures_->Increment(); }

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ServerMetrics::NewRpcInterceptorFactory() {
  return std::make_unique<RpcCountingFactory>(&rpcs_);
}

IndexEvents WithIndexMetrics(ServerMetrics* metrics, IndexEvents events) {
  IndexEvents chained;
  chained.swapped = [metrics, swapped = std::move(events.swapped)](
                        const IndexVersion& version, absl::Duration time) {
    if (swapped) swapped(version, time);
    metrics->IndexSwapped(version, time);
  };
  chained.rejected = [metrics, rejected = std::move(events.rejected)](
                         const std::string& source, const absl::Status& why) {
    if (rejected) rejected(source, why);
    metrics->IndexRejected();
  };
  return chained;
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& host, int port,
    const std::vector<std::shared_ptr<prometheus::Collectable>>& collectables) {
  HttpResource metrics;
  metrics.path = "/metrics";
  metrics.content_type = "text/plain; version=0.0.4; charset=utf-8";
  metrics.body = [collectables] {
    std::vector<prometheus::MetricFamily> families;
    for (const auto& collectable : collectables) {
      if (collectable == nullptr) continue;
      std::vector<prometheus::MetricFamily> collected = collectable->Collect();
      families.insert(families.end(),
                      std::make_move_iterator(collected.begin()),
                      std::make_move_iterator(collected.end()));
    }
    return prometheus::TextSerializer().Serialize(families);
  };
  std::vector<HttpResource> resources;
  resources.push_back(std::move(metrics));
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> http =
      HttpEndpoint::Start(host, port, std::move(resources));
  if (!http.ok()) {
    return absl::Status(
        http.status().code(),
        absl::StrCat("cannot serve /metrics: ", http.status().message()));
  }
  return std::unique_ptr<MetricsEndpoint>(
      new MetricsEndpoint(*std::move(http)));
}

void RegisterBuildInfo(prometheus::Registry& registry) {
  prometheus::BuildGauge()
      .Name("hardneg_build_info")
      .Help(
          "Always 1; the labels say which build this is: the version and "
          "the git revision it was built from.")
      .Register(registry)
      .Add({{"version", std::string(BuildVersion())},
            {"revision", std::string(BuildRevision())}})
      .Set(1);
}

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
          50e-3,  0.1,    0.25,   0.5,  1,      2.5,  5,     10};
}

}  // namespace hardneg

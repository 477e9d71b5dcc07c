// ServerMetrics: hardneg's Prometheus metrics (README, "Metrics"), with
// every handle resolved once at construction, so that recording a request
// costs a few atomic adds and histogram observations and never a
// Family::Add. The registry is passed in: no global registry.
//
// What is exported:
//   - per request (Mine stream requests and MineOnce calls): latency,
//     latency per query, queries, negatives, shortfall, failures by code;
//   - per Miner call: the batch size;
//   - per RPC, for the four Miner methods: grpc_server_started_total and
//     grpc_server_handled_total (through a gRPC server interceptor);
//   - per index version: candidates, sequence, age, refresh duration and
//     refresh failures (through IndexEvents);
//   - the process: CPU seconds, resident and virtual memory, start time and
//     file descriptors, read from /proc at scrape time.
//
// The age and process metrics are computed at scrape time, so they come
// from ScrapeTimeMetrics() rather than the registry; MetricsEndpoint serves
// both.
//
// Thread-safe: every method may be called from any thread, concurrently
// with scrapes.
#ifndef HARDNEG_SERVER_METRICS_H_
#define HARDNEG_SERVER_METRICS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/http_endpoint.h"
#include "versions/index_manager.h"
#include "versions/index_version.h"

namespace hardneg {

// Buckets of every latency histogram, 100us to 10s: mining takes from well
// under a millisecond (a small exact index) to seconds (a large batch);
// the Prometheus defaults start at 5ms. Shared with hardneg-router's.
prometheus::Histogram::BucketBoundaries LatencyBuckets();

// Registers hardneg_build_info{version,revision} = 1 (base/build_info.h), as
// both binaries export it: which build a scrape came from.
void RegisterBuildInfo(prometheus::Registry& registry);

// The RPC a mining request came in on (the `rpc` label).
enum class MineRpc { kMine = 0, kMineOnce = 1 };

class ServerMetrics {
 public:
  // Registers every family in `registry`, which must outlive this object.
  explicit ServerMetrics(prometheus::Registry& registry);

  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // A request that was answered with results, `seconds` after it was read.
  void RecordMined(MineRpc rpc, double seconds, uint64_t queries,
                   uint64_t negatives, uint64_t shortfall);
  // A request answered with an error (in-band on Mine, the RPC status on
  // MineOnce). `code` is never OK.
  void RecordFailed(MineRpc rpc, double seconds, absl::StatusCode code);
  // One Miner call over `queries` queries.
  void RecordBatch(size_t queries);

  // `version` is live: sets the index gauges and restarts the age. A
  // version no newer (by sequence) than the one recorded is ignored, so
  // this may be called for the version served at start, racing its swap.
  void IndexServed(const IndexVersion& version);
  // A build went live after `build_time` (zero for a snapshot restore,
  // which is not observed as a refresh).
  void IndexSwapped(const IndexVersion& version, absl::Duration build_time);
  // A checkpoint or publish was rejected.
  void IndexRejected();

  // The grpc_server_started_total / grpc_server_handled_total counters of
  // the hardneg.v1.Miner methods; other services are not intercepted. This
  // object must outlive the gRPC server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  NewRpcInterceptorFactory();

  // hardneg_index_age_seconds and the process_* metrics, computed when
  // collected. Shared so that a MetricsEndpoint may hold it; it may outlive
  // this object.
  std::shared_ptr<prometheus::Collectable> ScrapeTimeMetrics() const;

  // The handles of one Miner method, for the interceptor.
  struct RpcCounters {
    prometheus::Counter* started = nullptr;
    std::array<prometheus::Counter*, 17> handled{};  // by grpc::StatusCode
  };

 private:
  class ScrapeTime;

  // The constructor's steps: each registers one group of families and
  // resolves their handles.
  void RegisterMiningMetrics(prometheus::Registry& registry);
  void RegisterIndexMetrics(prometheus::Registry& registry);
  void RegisterRpcMetrics(prometheus::Registry& registry);

  std::array<prometheus::Histogram*, 2> mine_latency_{};   // by MineRpc
  std::array<prometheus::Histogram*, 2> query_latency_{};  // by MineRpc
  prometheus::Histogram* batch_size_;
  prometheus::Counter* queries_;
  prometheus::Counter* negatives_;
  prometheus::Counter* shortfall_;
  std::array<prometheus::Counter*, 17> failed_{};  // by absl::StatusCode
  prometheus::Gauge* index_candidates_;
  prometheus::Gauge* index_sequence_;
  prometheus::Histogram* refresh_duration_;
  prometheus::Counter* refresh_failures_;
  // Mine, MineOnce, Publish, GetIndexInfo.
  std::array<RpcCounters, 4> rpcs_;

  const std::shared_ptr<ScrapeTime> scrape_time_;

  // Orders IndexServed calls, which may race (a build thread's swap and a
  // caller recording the version served at start).
  absl::Mutex mu_;
  uint64_t served_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
};

// `events` with the index metrics chained on: each swap and rejection runs
// `events`' own callback, then records in `metrics`, which must outlive
// the IndexManager these events are set on.
IndexEvents WithIndexMetrics(ServerMetrics* metrics, IndexEvents events = {});

// Serves the Prometheus text exposition (format 0.0.4) on GET /metrics:
// the metric families of `collectables`, collected at each scrape and
// concatenated in order. Other requests get what HttpEndpoint says (404 for
// other paths, 405 for other methods, 400 for malformed requests); each
// connection carries one request.
//
// Thread-safe: port() may be called from any thread. The collectables are
// collected on the endpoint's own thread, concurrently with the rest of the
// program. The destructor stops promptly, then releases the collectables.
class MetricsEndpoint {
 public:
  // Listens on host:port (port 0 picks a free one); an IPv6 host may be
  // given with or without brackets ("::1", "[::1]"). UNAVAILABLE when the
  // address cannot be bound; INVALID_ARGUMENT for a port outside
  // [0, 65535].
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& host, int port,
      const std::vector<std::shared_ptr<prometheus::Collectable>>&
          collectables);

  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  int port() const { return http_->port(); }

 private:
  explicit MetricsEndpoint(std::unique_ptr<HttpEndpoint> http)
      : http_(std::move(http)) {}

  std::unique_ptr<HttpEndpoint> http_;  // holds the collectables
};

}  // namespace hardneg

#endif  // HARDNEG_SERVER_METRICS_H_

// RouterMetrics: what hardneg-router exports, in hardneg-server's naming
// style (hardneg_<what>_<unit>):
//
//   hardneg_router_requests_total{rpc, code}     answered calls
//   hardneg_router_fanout_seconds{rpc}           a mining request, end to end
//   hardneg_router_shard_seconds{shard, call}    one call to one shard
//   hardneg_router_shard_errors_total{shard, code}
//   hardneg_router_shards_serving                shards serving the common
//                                                version, as last polled
//   hardneg_router_index_sequence                the common version's
//                                                sequence (0: none)
//
// `shard` is the shard's position in --shards (its target is in
// GetIndexInfo), so that label values stay few and fixed.
//
// Thread-safe (prometheus-cpp's metrics are).
#ifndef HARDNEG_ROUTER_ROUTER_METRICS_H_
#define HARDNEG_ROUTER_ROUTER_METRICS_H_

#include <cstddef>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/support/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace hardneg {

// The calls a router makes to a shard.
enum class ShardCall { kMineOnce, kWeakestPositives, kPublish };

class RouterMetrics {
 public:
  RouterMetrics(prometheus::Registry& registry, size_t shards);

  // One answered call of `rpc` ("Mine", "MineOnce", "Publish",
  // "GetIndexInfo"); mining calls also record their latency.
  void RecordRequest(const char* rpc, grpc::StatusCode code,
                     absl::Duration latency);
  void RecordShardCall(size_t shard, ShardCall call, const grpc::Status& status,
                       absl::Duration latency);
  void SetServing(size_t shards_serving, uint64_t sequence);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& fanout_;
  prometheus::Family<prometheus::Histogram>& shard_seconds_;
  prometheus::Family<prometheus::Counter>& shard_errors_;
  prometheus::Gauge& shards_serving_;
  prometheus::Gauge& sequence_;
};

}  // namespace hardneg

#endif  // HARDNEG_ROUTER_ROUTER_METRICS_H_

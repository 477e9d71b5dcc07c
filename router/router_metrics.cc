#include "router/router_metrics.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/metrics.h"

namespace hardneg {
namespace {

const char* CallName(ShardCall call) {
  switch (call) {
    case ShardCall::kMineOnce:
      return "MineOnce";
    case ShardCall::kWeakestPositives:
      return "WeakestPositives";
    case ShardCall::kPublish:
      return "Publish";
  }
  return "MineOnce";
}

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace

RouterMetrics::RouterMetrics(prometheus::Registry& registry, size_t shards)
    : requests_(prometheus::BuildCounter()
                    .Name("hardneg_router_requests_total")
                    .Help("Calls the router answered, by RPC and status code.")
                    .Register(registry)),
      fanout_(prometheus::BuildHistogram()
                  .Name("hardneg_router_fanout_seconds")
                  .Help("Mining requests through the router, from read to "
                        "answer: every shard round and the merge.")
                  .Register(registry)),
      shard_seconds_(prometheus::BuildHistogram()
                         .Name("hardneg_router_shard_seconds")
                         .Help("One call to one shard, by shard position in "
                               "--shards and call.")
                         .Register(registry)),
      shard_errors_(prometheus::BuildCounter()
                        .Name("hardneg_router_shard_errors_total")
                        .Help("Failed calls to a shard, by shard position "
                              "and status code.")
                        .Register(registry)),
      shards_serving_(prometheus::BuildGauge()
                          .Name("hardneg_router_shards_serving")
                          .Help("Shards serving the router's version, as "
                                "last polled.")
                          .Register(registry)
                          .Add({})),
      sequence_(prometheus::BuildGauge()
                    .Name("hardneg_router_index_sequence")
                    .Help("Sequence of the version every shard serves; 0 "
                          "when they share none.")
                    .Register(registry)
                    .Add({})) {
  RegisterBuildInfo(registry);
  // Every series exists from the start, so that rates and alerts see 0.
  for (size_t i = 0; i < shards; ++i) {
    for (ShardCall call : {ShardCall::kMineOnce, ShardCall::kWeakestPositives,
                           ShardCall::kPublish}) {
      shard_seconds_.Add({{"shard", absl::StrCat(i)}, {"call", CallName(call)}},
                         LatencyBuckets());
    }
  }
}

void RouterMetrics::RecordRequest(const char* rpc, grpc::StatusCode code,
                                  absl::Duration latency) {
  requests_.Add({{"rpc", rpc}, {"code", CodeName(code)}}).Increment();
  const std::string name = rpc;
  if (name == "Mine" || name == "MineOnce") {
    fanout_.Add({{"rpc", rpc}}, LatencyBuckets())
        .Observe(absl::ToDoubleSeconds(latency));
  }
}

void RouterMetrics::RecordShardCall(size_t shard, ShardCall call,
                                    const grpc::Status& status,
                                    absl::Duration latency) {
  const std::string index = absl::StrCat(shard);
  shard_seconds_
      .Add({{"shard", index}, {"call", CallName(call)}}, LatencyBuckets())
      .Observe(absl::ToDoubleSeconds(latency));
  if (!status.ok()) {
    shard_errors_
        .Add({{"shard", index}, {"code", CodeName(status.error_code())}})
        .Increment();
  }
}

void RouterMetrics::SetServing(size_t shards_serving, uint64_t sequence) {
  shards_serving_.Set(static_cast<double>(shards_serving));
  sequence_.Set(static_cast<double>(sequence));
}

}  // namespace hardneg

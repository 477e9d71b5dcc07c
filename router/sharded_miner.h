// ShardedMiner: a router's answer to one MineRequest, mined over every
// shard and merged exactly as mining/shard_merge.h proves: the same answer
// one server gives over the whole corpus.
//
// Per request: the request is checked as a server checks it (the same
// messages), pinned to the version every shard holds (ShardSet), and, when
// it has a margin and positive_ids, sent first to every shard's
// Shard.WeakestPositives for the global p; then to every shard's MineOnce
// with ShardOptions; the answers are merged per query. A shard that fails
// (slow past --shard_timeout or the request's deadline, gone, or no longer
// holding the pinned version after one retry on a fresh view) fails the
// request UNAVAILABLE naming it, unless options.allow_partial: then the
// answer is exact over the live shards and missing_shards names the rest.
//
// Thread-safe; the ShardSet and RouterMetrics must outlive it.
#ifndef HARDNEG_ROUTER_SHARDED_MINER_H_
#define HARDNEG_ROUTER_SHARDED_MINER_H_

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "hardneg/v1/miner.pb.h"
#include "mining/miner.h"
#include "router/router_metrics.h"
#include "router/shard_set.h"
#include "server/convert.h"

namespace hardneg {

struct ShardedMinerOptions {
  MinerLimits limits;
  // The longest one call to one shard may take (the request's own deadline
  // bounds it too).
  absl::Duration shard_timeout = absl::Seconds(30);
  // Largest answer, encoded, as hardneg-server's --max_reply_bytes.
  size_t max_reply_bytes = size_t{64} << 20;
};

class ShardedMiner {
 public:
  // `metrics` may be null.
  ShardedMiner(ShardSet* shards, ShardedMinerOptions options,
               RouterMetrics* metrics)
      : shards_(shards),
        options_(options),
        miner_(options.limits),
        metrics_(metrics) {}

  // Fills `response` (request_id, results, index, missing_shards), or
  // returns the error to answer with. `deadline`: the caller's.
  absl::Status Mine(const v1::MineRequest& request,
                    std::chrono::system_clock::time_point deadline,
                    v1::MineResponse* response) const;

 private:
  // Which shards answered one round: `live` shards are asked the next
  // round; `missing` names the others, with why.
  struct Round {
    std::vector<bool> live;
    std::vector<std::string> missing;  // "shard 1 (target): UNAVAILABLE: ..."
    std::vector<std::string> missing_targets;
    bool pin_missed = false;  // a shard no longer holds the pinned version
  };

  // Mine for the version `version` of `view`; sets `*pin_missed` when a
  // shard no longer holds it (the caller retries on a fresh view).
  absl::Status MinePinned(const v1::MineRequest& request,
                          const DecodedMineRequest& decoded,
                          const ShardSetView& view,
                          std::chrono::system_clock::time_point deadline,
                          v1::MineResponse* response, bool* pin_missed) const;
  // Asks every live shard of `round` at once (WeakestPositives when
  // `weakest`, else MineOnce) and waits for all; records each outcome in
  // `round`. The error to answer with when a shard refused the request
  // itself (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...).
  absl::Status CallShards(const v1::MineRequest& request, bool weakest,
                          std::chrono::system_clock::time_point deadline,
                          Round* round,
                          std::vector<v1::MineResponse>* answers) const;
  // Merges the live shards' answers of every query into `response`.
  absl::Status Merge(const DecodedMineRequest& decoded,
                     const RouterVersion& version, const Round& round,
                     const std::vector<v1::MineResponse>& answers,
                     v1::MineResponse* response) const;

  ShardSet* const shards_;
  const ShardedMinerOptions options_;
  const Miner miner_;  // for its checks: the router mines nothing itself
  RouterMetrics* const metrics_;
};

// "no version is held by every shard: shard 0 (T0) serves 'a', shard 1
// (T1) UNAVAILABLE: ...": why a view has no common version.
std::string DescribeNoCommonVersion(const ShardSetView& view);

}  // namespace hardneg

#endif  // HARDNEG_ROUTER_SHARDED_MINER_H_

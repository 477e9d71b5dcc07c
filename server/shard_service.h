// ShardService: the hardneg.v1.Shard service (proto/hardneg/v1/shard.proto)
// a server offers a router beside the Miner API: each query's weakest
// positive stored here, the first round of a sharded request with a margin
// (mining/shard_merge.h).
//
// The answer is cheap (a few stored rows scored per query), so it is
// computed on gRPC's thread, not queued for the search workers.
//
// Thread-safe; the IndexManager and MinerService must outlive it.
#ifndef HARDNEG_SERVER_SHARD_SERVICE_H_
#define HARDNEG_SERVER_SHARD_SERVICE_H_

#include "absl/status/status.h"
#include "hardneg/v1/shard.grpc.pb.h"
#include "server/miner_service.h"
#include "versions/index_manager.h"

namespace hardneg {

class ShardService final : public v1::Shard::CallbackService {
 public:
  ShardService(IndexManager* manager, const MinerService* miner_service)
      : manager_(manager), miner_service_(miner_service) {}

  grpc::ServerUnaryReactor* WeakestPositives(
      grpc::CallbackServerContext* context, const v1::MineRequest* request,
      v1::MineResponse* response) override;

 private:
  // The answer to `request`: INVALID_ARGUMENT naming the query for an
  // embedding of the wrong dimension or with NaN/Inf, or more positive_ids
  // than the limits allow; the version errors of MinerService::VersionFor.
  absl::Status Answer(const v1::MineRequest& request,
                      v1::MineResponse* response) const;

  IndexManager* const manager_;
  const MinerService* const miner_service_;
};

}  // namespace hardneg

#endif  // HARDNEG_SERVER_SHARD_SERVICE_H_

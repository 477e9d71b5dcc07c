// RouterService: hardneg.v1.Miner served by a router over its shards
// (ShardSet): Mine and MineOnce through ShardedMiner, GetIndexInfo from the
// shards' polled infos (with a per-shard breakdown), and Publish split by
// ShardOf across the shards.
//
// On gRPC's synchronous API: a Mine stream is answered one request at a
// time, in order (its shards' calls run concurrently).
//
// Thread-safe; the ShardSet, ShardedMiner and RouterMetrics must outlive
// it.
#ifndef HARDNEG_ROUTER_ROUTER_SERVICE_H_
#define HARDNEG_ROUTER_ROUTER_SERVICE_H_

#include <memory>

#include "absl/time/time.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "router/router_metrics.h"
#include "router/shard_set.h"
#include "router/sharded_miner.h"
#include "server/auth.h"

namespace hardneg {

struct RouterServiceOptions {
  // Bearer tokens and roles every call must present (as hardneg-server's
  // --auth_tokens); null: open.
  std::shared_ptr<const TokenAuthorizer> auth;
  // How long a publish with wait waits, after every shard has answered,
  // for the router's view to serve the new version.
  absl::Duration publish_wait = absl::Minutes(10);
};

class RouterService final : public v1::Miner::Service {
 public:
  // `metrics` may be null.
  RouterService(ShardSet* shards, const ShardedMiner* miner,
                RouterMetrics* metrics, RouterServiceOptions options = {})
      : shards_(shards), miner_(miner), metrics_(metrics), options_(options) {}

  grpc::Status Mine(grpc::ServerContext* context,
                    grpc::ServerReaderWriter<v1::MineResponse, v1::MineRequest>*
                        stream) override;
  grpc::Status MineOnce(grpc::ServerContext* context,
                        const v1::MineRequest* request,
                        v1::MineResponse* response) override;
  grpc::Status Publish(grpc::ServerContext* context,
                       grpc::ServerReader<v1::PublishRequest>* reader,
                       v1::PublishResponse* response) override;
  grpc::Status GetIndexInfo(grpc::ServerContext* context,
                            const v1::GetIndexInfoRequest* request,
                            v1::IndexInfo* response) override;

 private:
  void Record(const char* rpc, const grpc::Status& status, absl::Time start);
  // OK when no tokens are configured or the call's token has `role`.
  grpc::Status Authorize(const grpc::ServerContext& context, Role role) const;

  ShardSet* const shards_;
  const ShardedMiner* const miner_;
  RouterMetrics* const metrics_;
  const RouterServiceOptions options_;
};

// The router's IndexInfo for `view`: the common version, the sum of the
// shards' sizes, and each shard's own info.
v1::IndexInfo RouterIndexInfo(const ShardSetView& view);

}  // namespace hardneg

#endif  // HARDNEG_ROUTER_ROUTER_SERVICE_H_

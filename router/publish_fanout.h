// Publish through a router: the client's stream is split by ShardOf
// (corpus/shard.h) and forwarded to every shard's Publish as it is read,
// so that each shard receives only its own rows (and delete_ids).
//
// The router checks what needs the whole stream: at least one id in a
// full publish, no id twice, and header.total_ids / total_delete_ids
// against what the stream carried (the shards are sent neither total:
// their shares differ); and every check a shard would make on its rows
// alone (sizes, labels in all chunks or none, finite values, delete_ids
// only in an incremental publish), on all rows, so that the shards accept
// or refuse the same publish. On any error, or when a shard ends its
// stream early (it refused the publish), every shard's stream is
// cancelled before it ends, so that no shard installs anything. Every
// shard then gets the stream's end before any is waited for, so they
// build together. A shard that fails after that (its build, its budget,
// another base version) fails the publish naming it; the other shards may
// then serve the new version, and the router keeps answering from the
// version they all still hold until that is gone (see ShardSet).
//
// Stateless function; the ShardSet must outlive the call.
#ifndef HARDNEG_ROUTER_PUBLISH_FANOUT_H_
#define HARDNEG_ROUTER_PUBLISH_FANOUT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/sync_stream.h"
#include "hardneg/v1/miner.pb.h"
#include "router/router_metrics.h"
#include "router/shard_set.h"

namespace hardneg {

struct ForwardedPublish {
  v1::PublishHeader header;                    // as the client sent it
  std::vector<v1::PublishResponse> responses;  // one per shard
};

// Reads the client's stream from `reader` and forwards it. `metrics` may
// be null.
absl::StatusOr<ForwardedPublish> ForwardPublish(
    ShardSet& shards, grpc::ServerContext& context,
    grpc::ServerReader<v1::PublishRequest>& reader, RouterMetrics* metrics);

}  // namespace hardneg

#endif  // HARDNEG_ROUTER_PUBLISH_FANOUT_H_

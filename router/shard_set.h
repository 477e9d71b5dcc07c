// ShardSet: a router's shards (one gRPC target each, given to --shards),
// the channels to them, and what each serves, polled with GetIndexInfo.
//
// The router answers from one version on every shard, never a mix: the
// common version is the one every reachable shard holds, served or kept as
// its previous version (IndexInfo.previous_version), preferring one that
// every shard serves. A router pins each request to it
// (MiningOptions.index_version), so a request that starts while the shards
// move to a new version is answered from the old one on all of them; the
// new version goes live on the router once every shard serves it.
//
// A target that resolves to several addresses (a dns:/// name of a
// headless Service) is one shard with replicas: its channel spreads calls
// over them with round_robin.
//
// Thread-safe. The poller thread runs from Start until destruction.
#ifndef HARDNEG_ROUTER_SHARD_SET_H_
#define HARDNEG_ROUTER_SHARD_SET_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/status.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "hardneg/v1/shard.grpc.pb.h"

namespace hardneg {

// Waits for the callbacks of calls made at once to every shard. An
// absl::Mutex rather than absl::BlockingCounter, whose atomics live in
// Debian's uninstrumented abseil, out of ThreadSanitizer's sight
// (tests/sanitizers/tsan_absl_sync.cc models the Mutex).
class PendingCalls {
 public:
  explicit PendingCalls(size_t calls) : pending_(calls) {}
  // One call's callback is done (after it wrote its results).
  void Done() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    --pending_;
  }
  // Returns once every call's Done ran.
  void Wait() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](size_t* pending) { return *pending == 0; }, &pending_));
  }

 private:
  absl::Mutex mu_;
  size_t pending_ ABSL_GUARDED_BY(mu_);
};

// One shard as last polled.
struct ShardState {
  std::string target;
  std::optional<v1::IndexInfo> info;  // the last poll's answer, if it worked
  std::string error;                  // the last poll's error, if it failed
  // The shard holds another part of the corpus than its place in --shards
  // says (its --shard_index or --num_shards): its answers would merge into
  // a wrong partition, so it is never asked, and `error` says why.
  bool misplaced = false;
};

// "" when a server reporting `info` may be shard `index` of `count`: it
// holds that shard (--shard_index, --num_shards), or it is unsharded and
// the only shard. Otherwise why not.
std::string CheckLayout(const v1::IndexInfo& info, size_t index, size_t count);

// The version a router serves: the one its shards share.
struct RouterVersion {
  std::string name;
  // The highest sequence any shard gives it: rises with every new common
  // version (each shard's sequences rise), so min_index_sequence works.
  uint64_t sequence = 0;
  uint64_t step = 0;
  uint32_t dim = 0;
  std::string metric;
  std::string index_type;
  std::string scan;  // as the shard that last described the version says
  bool has_labels = false;
};

struct ShardSetView {
  std::vector<ShardState> shards;  // in --shards order
  // Held by every reachable shard; nullopt when they share none (or none
  // is reachable).
  std::optional<RouterVersion> version;
  // Every shard reachable, in its place, and serving `version` as its
  // current version:
  // what the router's health reports as SERVING.
  bool all_serving = false;
};

// "UNAVAILABLE: <message>": a shard's error, for messages and ShardInfo.
std::string DescribeStatus(const grpc::Status& status);

// The common version of `shards` (the rules above); pure, for tests.
std::optional<RouterVersion> CommonVersion(
    const std::vector<ShardState>& shards);

struct ShardSetOptions {
  // The longest a poll of one shard may take.
  absl::Duration poll_timeout = absl::Seconds(5);
  // Largest message the router receives from a shard.
  int max_receive_bytes = 256 << 20;
  // TLS towards the shards; null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Sent with every call to a shard as "authorization: Bearer <token>",
  // for shards run with --auth_tokens (roles mine and publish). Empty: none.
  std::string bearer_token;
};

class ShardSet {
 public:
  ShardSet(std::vector<std::string> targets, ShardSetOptions options);
  ~ShardSet();  // stops the poller

  ShardSet(const ShardSet&) = delete;
  ShardSet& operator=(const ShardSet&) = delete;

  // Polls every `interval`, and calls `changed` (on the poller thread)
  // after each poll whose view differs in version or all_serving.
  void Start(absl::Duration interval,
             std::function<void(const ShardSetView&)> changed);

  // The last poll's view.
  ShardSetView View() const ABSL_LOCKS_EXCLUDED(mu_);
  // Polls every shard now (concurrently) and returns the new view.
  ShardSetView Refresh() ABSL_LOCKS_EXCLUDED(mu_);

  // Adds what every call to a shard carries (the bearer token).
  void Prepare(grpc::ClientContext& context) const;

  size_t size() const { return targets_.size(); }
  const std::string& target(size_t i) const { return targets_[i]; }
  v1::Miner::Stub* miner(size_t i) const { return miners_[i].get(); }
  v1::Shard::Stub* shard(size_t i) const { return shards_[i].get(); }

 private:
  void Poll();

  const std::vector<std::string> targets_;
  const ShardSetOptions options_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<v1::Miner::Stub>> miners_;
  std::vector<std::unique_ptr<v1::Shard::Stub>> shards_;
  mutable absl::Mutex mu_;
  ShardSetView view_ ABSL_GUARDED_BY(mu_);
  // Refreshes run concurrently (the poller, a publish's wait, a retry):
  // each takes a ticket when it starts, and a view is kept only when no
  // later-started one was kept already, so a slow poll never brings back
  // an older view.
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t view_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void(const ShardSetView&)> changed_;
  absl::Duration interval_;
  absl::Notification stop_;
  std::thread poller_;  // last: starts once the rest is set
};

}  // namespace hardneg

#endif  // HARDNEG_ROUTER_SHARD_SET_H_

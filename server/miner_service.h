// MinerService: the hardneg.v1.Miner gRPC service on the callback API.
//
// Reactions never block: each MineRequest is decoded, mined and encoded on
// the WorkerPool, which then completes the RPC (MineOnce) or queues the
// response (Mine). A Mine stream answers in request order, one response per
// request; a bad request is answered in-band and the stream stays open.
// Each request and its response share one protobuf arena, so results and
// negatives are not allocated one by one.
//
// With a ServerMetrics, each mining request is recorded where it completes
// (a Mine request when its response is queued, a MineOnce call before it
// finishes), and each Miner call's batch size; without one (nullptr),
// nothing is measured.
//
// Thread-safe; the IndexManager, Miner and ServerMetrics must outlive it.
// The WorkerPool must serve it while it serves, and be destroyed (which
// runs the pool's queued tasks, some of them the service's) before it is,
// as HardnegServer::Shutdown does.
#ifndef HARDNEG_SERVER_MINER_SERVICE_H_
#define HARDNEG_SERVER_MINER_SERVICE_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/byte_buffer.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "mining/miner.h"
#include "server/auth.h"
#include "server/convert.h"
#include "server/metrics.h"
#include "server/publish_reactor.h"
#include "server/worker_pool.h"
#include "versions/index_manager.h"

namespace hardneg {

struct MinerServiceOptions {
  // Requests a single Mine stream may have in flight before the server
  // stops reading from it (flow control towards a fast sender).
  size_t max_in_flight_per_stream = 16;
  // Answer bytes (bounded from each request before it is mined) one Mine
  // stream may hold unsent before the server stops reading it: a client
  // that does not read costs at most this, plus one answer, however large
  // its answers. At least one request is always read.
  size_t max_stream_reply_bytes = size_t{64} << 20;
  // Mine streams open at once; one more is refused with
  // RESOURCE_EXHAUSTED. Each may hold max_in_flight_per_stream requests.
  size_t max_streams = 1024;
  // Requests queued from all streams and calls are coalesced into one
  // search of up to this many queries (a larger request still goes alone).
  size_t max_batch_queries = 256;
  // How long a worker waits for more requests to join a batch that is not
  // full. 0: never wait; requests that queue while the workers are busy
  // are coalesced anyway, so a lone query is never held back.
  absl::Duration max_batch_delay = absl::ZeroDuration();
  // How long a worker waits for more requests to fill its batch while
  // another batch is being searched (under load), and no longer than that
  // batch runs: a lone request never waits for it. Where each query's cost
  // is mostly a share of reading the candidates (an IVF index over
  // labelled candidates probing tens of thousands of them, whose batch
  // reads each cell once for all its queries) fuller batches serve more
  // queries a second; where each query pays for its own arithmetic (the
  // exact index on a corpus that fits the caches) the wait idles a core.
  // README, "Throughput and latency", has the figures. 0: never wait.
  absl::Duration busy_batch_delay = absl::ZeroDuration();
  // Called with each batch's query count just before it is searched (for
  // tests: it may block, holding that batch running).
  std::function<void(size_t)> batch_started_for_testing;
  // OpenMP threads for a batch that runs while no other batch runs or
  // waits, so that a lone query uses every core (the Flat kernel splits
  // its rows). 0 leaves each worker's own setting.
  int lone_batch_threads = 0;
  // Admission control: queries waiting for a worker, from every stream and
  // call. A request that would pass it is answered RESOURCE_EXHAUSTED at
  // once (in-band on a Mine stream), and the client may retry.
  size_t max_queued_queries = 65536;
  // A batch ranks at most this many candidates (range_max x queries over
  // its requests), so coalescing never multiplies one request's memory.
  uint64_t max_batch_fetch = uint64_t{1} << 24;
  // Largest answer, encoded; a request whose answer could be larger is
  // refused before any work (RESOURCE_EXHAUSTED).
  size_t max_reply_bytes = size_t{64} << 20;
  // Bearer tokens and roles every call must present; null: open.
  std::shared_ptr<const TokenAuthorizer> auth;
};

// One mining request waiting for a batch. `done` runs on a worker once
// `response` is filled (or the request failed with that status).
struct MineJob {
  const v1::MineRequest* request = nullptr;
  v1::MineResponse* response = nullptr;
  std::function<void(const absl::Status&)> done;
  // True once nobody waits for the answer (the call was cancelled, timed
  // out, or its stream broke): the job is then answered CANCELLED without
  // being mined, and frees its place at once. Null: never.
  std::function<bool()> cancelled;
};

// Every method raw (see wire.h): messages that do not parse fail their
// call with INVALID_ARGUMENT instead of ending a stream as if it were
// complete.
using RawMinerCallbackService = v1::Miner::WithRawCallbackMethod_Mine<
    v1::Miner::WithRawCallbackMethod_MineOnce<
        v1::Miner::WithRawCallbackMethod_Publish<
            v1::Miner::WithRawCallbackMethod_GetIndexInfo<
                v1::Miner::Service>>>>;

class MinerService final : public RawMinerCallbackService {
 public:
  // `metrics` may be null: nothing is measured.
  MinerService(IndexManager* manager, const Miner* miner, WorkerPool* pool,
               MinerServiceOptions options = {},
               ServerMetrics* metrics = nullptr);

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Mine(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* MineOnce(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* Publish(
      grpc::CallbackServerContext* context,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetIndexInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;

  // Queues `job` for the next batch; a worker of the pool answers it.
  // RESOURCE_EXHAUSTED, naming max_queued_queries, when the queue is full:
  // then `job.done` is never called and the caller answers.
  absl::Status Enqueue(MineJob job) const ABSL_LOCKS_EXCLUDED(queue_mu_);

  // Records one mining request that was read at `start` and answered
  // with `response` (results when `status` is OK). No-op without metrics.
  void RecordRequest(MineRpc rpc, std::chrono::steady_clock::time_point start,
                     const absl::Status& status,
                     const v1::MineResponse& response) const;

  WorkerPool* pool() const { return pool_; }
  const Miner& miner() const { return *miner_; }
  // OK when no tokens are configured or the call's token has `role`.
  absl::Status Authorize(grpc::CallbackServerContext* context, Role role) const;

  // From now on, jobs still queued are answered UNAVAILABLE ("shutting
  // down") instead of being mined, so that shutdown never waits for work
  // nobody will read. Idempotent.
  void StopMining() ABSL_LOCKS_EXCLUDED(queue_mu_);
  // Blocks until exactly `queries` queries wait for a worker (for tests).
  void AwaitQueuedQueriesForTesting(size_t queries) const
      ABSL_LOCKS_EXCLUDED(queue_mu_);
  // Blocks until a worker waits for its batch to fill beside a running one
  // (busy_batch_delay), at most `timeout`; true if one does (for tests).
  bool AwaitBusyWaitForTesting(absl::Duration timeout) const
      ABSL_LOCKS_EXCLUDED(queue_mu_);
  // Queued jobs whose call is known here to be cancelled (for tests).
  size_t CancelledQueuedForTesting() const ABSL_LOCKS_EXCLUDED(queue_mu_);
  const MinerServiceOptions& options() const { return options_; }
  // The most bytes an answer to `request` can take, for the dim served now.
  uint64_t ReplyBytesBound(const v1::MineRequest& request) const;
  // A Mine stream ended (called by its reactor).
  void StreamEnded() const { streams_.fetch_sub(1); }

  // The version a request with `options` is answered from: the one its
  // index_version names (served, or kept as the previous one), else
  // `current`. FAILED_PRECONDITION for a pinned version not held here;
  // UNAVAILABLE when nothing serves.
  absl::StatusOr<std::shared_ptr<const IndexVersion>> VersionFor(
      const v1::MiningOptions& options,
      const std::shared_ptr<const IndexVersion>& current) const;

 private:
  // Takes the queued jobs that fit one batch and answers them.
  void DrainQueue() const ABSL_LOCKS_EXCLUDED(queue_mu_);
  // Answers `jobs` with one search per version they ask for (almost always
  // the served one); calls each done.
  void HandleBatch(std::vector<MineJob>& jobs) const;
  // HandleBatch's checks of one job before it is mined: sets its version
  // (and the response's), decodes it; the error to answer it with.
  absl::Status PrepareJob(const MineJob& job,
                          const std::shared_ptr<const IndexVersion>& current,
                          std::shared_ptr<const IndexVersion>* version,
                          std::unique_ptr<DecodedMineRequest>* decoded) const;

  IndexManager* const manager_;
  const Miner* const miner_;
  WorkerPool* const pool_;
  const MinerServiceOptions options_;
  ServerMetrics* const metrics_;  // null: metrics off
  mutable absl::Mutex queue_mu_;
  mutable std::deque<MineJob> queue_ ABSL_GUARDED_BY(queue_mu_);
  mutable size_t queued_queries_ ABSL_GUARDED_BY(queue_mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(queue_mu_) = false;
  // Batches being answered now.
  mutable int running_batches_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // Workers waiting for their batch to fill beside a running one.
  mutable int busy_waits_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // Mine streams open now.
  mutable std::atomic<size_t> streams_{0};
  // Owns Publish builds that outlive their call (wait=false); declared last
  // so that it joins them before the rest is destroyed.
  PublishBuilds publish_builds_;
};

}  // namespace hardneg

#endif  // HARDNEG_SERVER_MINER_SERVICE_H_

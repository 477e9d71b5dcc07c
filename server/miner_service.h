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

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/message_allocator.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "index_manager.h"
#include "metrics.h"
#include "miner.h"
#include "publish_reactor.h"
#include "worker_pool.h"

namespace hardneg {

struct MinerServiceOptions {
  // Requests a single Mine stream may have in flight before the server
  // stops reading from it (flow control towards a fast sender).
  size_t max_in_flight_per_stream = 16;
  // Requests queued from all streams and calls are coalesced into one
  // search of up to this many queries (a larger request still goes alone).
  size_t max_batch_queries = 256;
  // How long a worker waits for more requests to join a batch that is not
  // full. 0: never wait; requests that queue while the workers are busy
  // are coalesced anyway, so a lone query is never held back.
  absl::Duration max_batch_delay = absl::ZeroDuration();
  // OpenMP threads for a batch that runs while no other batch runs or
  // waits, so that a lone query uses every core (the Flat kernel splits
  // its rows). 0 leaves each worker's own setting.
  int lone_batch_threads = 0;
};

// One mining request waiting for a batch. `done` runs on a worker once
// `response` is filled (or the request failed with that status).
struct MineJob {
  const v1::MineRequest* request = nullptr;
  v1::MineResponse* response = nullptr;
  std::function<void(const absl::Status&)> done;
};

class MinerService final : public v1::Miner::CallbackService {
 public:
  // `metrics` may be null: nothing is measured.
  MinerService(IndexManager* manager, const Miner* miner, WorkerPool* pool,
               MinerServiceOptions options = {},
               ServerMetrics* metrics = nullptr);

  grpc::ServerBidiReactor<v1::MineRequest, v1::MineResponse>* Mine(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* MineOnce(grpc::CallbackServerContext* context,
                                     const v1::MineRequest* request,
                                     v1::MineResponse* response) override;
  grpc::ServerReadReactor<v1::PublishRequest>* Publish(
      grpc::CallbackServerContext* context,
      v1::PublishResponse* response) override;
  grpc::ServerUnaryReactor* GetIndexInfo(grpc::CallbackServerContext* context,
                                         const v1::GetIndexInfoRequest* request,
                                         v1::IndexInfo* response) override;

  // Queues `job` for the next batch; a worker of the pool answers it.
  void Enqueue(MineJob job) const ABSL_LOCKS_EXCLUDED(queue_mu_);

  // Records one mining request that was read at `start` and answered
  // with `response` (results when `status` is OK). No-op without metrics.
  void RecordRequest(MineRpc rpc, std::chrono::steady_clock::time_point start,
                     const absl::Status& status,
                     const v1::MineResponse& response) const;

  WorkerPool* pool() const { return pool_; }
  const MinerServiceOptions& options() const { return options_; }

 private:
  // Takes the queued jobs that fit one batch and answers them.
  void DrainQueue() const ABSL_LOCKS_EXCLUDED(queue_mu_);
  // Answers `jobs` with one search over the same version; calls each done.
  void HandleBatch(std::vector<MineJob>& jobs) const;

  IndexManager* const manager_;
  const Miner* const miner_;
  WorkerPool* const pool_;
  const MinerServiceOptions options_;
  ServerMetrics* const metrics_;  // null: metrics off
  // Puts each MineOnce call's messages on an arena of their own.
  const std::unique_ptr<
      grpc::MessageAllocator<v1::MineRequest, v1::MineResponse>>
      allocator_;
  mutable absl::Mutex queue_mu_;
  mutable std::deque<MineJob> queue_ ABSL_GUARDED_BY(queue_mu_);
  // Batches being answered now.
  mutable int running_batches_ ABSL_GUARDED_BY(queue_mu_) = 0;
  // Owns Publish builds that outlive their call (wait=false); declared last
  // so that it joins them before the rest is destroyed.
  PublishBuilds publish_builds_;
};

}  // namespace hardneg

#endif  // HARDNEG_SERVER_MINER_SERVICE_H_

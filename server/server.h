// HardnegServer: the gRPC server around a MinerService, with the standard
// health service (SERVING only while an index is loaded) and reflection,
// and, with ServerOptions::metrics, per-request and per-RPC metrics.
//
// Start, port and Shutdown may be called from any thread; Shutdown is
// idempotent and is also run by the destructor.
#ifndef HARDNEG_SERVER_SERVER_H_
#define HARDNEG_SERVER_SERVER_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "mining/miner.h"
#include "server/metrics.h"
#include "server/miner_service.h"
#include "server/shard_service.h"
#include "server/worker_pool.h"
#include "versions/index_manager.h"

namespace hardneg {

struct ServerOptions {
  std::string host = "127.0.0.1";  // 0.0.0.0: every network
  int port = 50051;                // 0 picks a free port
  size_t threads = 0;              // search workers; 0 means one per core
  // Threads one search may use inside BLAS/OpenMP; 0 means 1 when there
  // are several workers (they already fill the cores), else one per core,
  // and one per core for a batch that runs while no other runs or waits.
  int blas_threads = 0;
  size_t max_message_bytes = size_t{64} << 20;
  // After this long a connection is sent GOAWAY (gRPC adds +-10% jitter):
  // clients open a new one, re-resolving their target, so calls spread over
  // replicas added since. Calls in flight get `max_connection_age_grace`,
  // then are cancelled (a Mine stream ends UNAVAILABLE and is reopened by
  // its client). Zero: connections live forever (gRPC's default).
  absl::Duration max_connection_age = absl::ZeroDuration();
  absl::Duration max_connection_age_grace = absl::Seconds(30);
  // TLS (and mTLS) for the gRPC port; null: plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  MinerLimits limits;
  MinerServiceOptions service;
  // Not owned; must outlive the server. Null: no metrics (requests are not
  // measured and no interceptor runs).
  ServerMetrics* metrics = nullptr;
};

// The server's thread counts, resolved once (the only place that reads
// the core count) and passed down to the workers and the service.
struct ThreadCounts {
  size_t workers = 1;          // search workers
  int blas_threads = 1;        // OpenMP/BLAS threads of one search
  int lone_batch_threads = 0;  // MinerServiceOptions::lone_batch_threads
};

// `options`' thread settings with their 0 ("automatic") values resolved
// for a machine of `cores` cores (0: unknown, taken as 2).
ThreadCounts ResolveThreadCounts(const ServerOptions& options, unsigned cores);

class HardnegServer {
 public:
  // Binds and starts serving. `manager` must outlive the server.
  // UNAVAILABLE when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<HardnegServer>> Start(
      const ServerOptions& options, IndexManager* manager);
  ~HardnegServer();

  HardnegServer(const HardnegServer&) = delete;
  HardnegServer& operator=(const HardnegServer&) = delete;

  int port() const { return port_; }

  // Health follows whether an index is loaded; after Shutdown it stays
  // NOT_SERVING and this touches nothing else.
  void UpdateHealth() ABSL_LOCKS_EXCLUDED(health_mu_);

  // Stops accepting calls, lets calls in flight finish for up to
  // `deadline`, then cancels the rest: queued requests are answered
  // without being mined, so it returns soon after the deadline (at most
  // one search later). Drains the worker pool.
  void Shutdown(absl::Duration deadline);

  // A channel to this server that bypasses the network (for tests).
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // The search workers (for tests that need to hold them busy).
  WorkerPool* pool_for_testing() { return pool_.get(); }
  // Blocks until exactly `queries` queries wait for a worker (for tests).
  void AwaitQueuedQueriesForTesting(size_t queries) const {
    service_->AwaitQueuedQueriesForTesting(queries);
  }
  bool AwaitBusyWaitForTesting(absl::Duration timeout) const {
    return service_->AwaitBusyWaitForTesting(timeout);
  }
  size_t CancelledQueuedForTesting() const {
    return service_->CancelledQueuedForTesting();
  }

 private:
  HardnegServer(const ServerOptions& options, IndexManager* manager,
                const ThreadCounts& threads);

  IndexManager* const manager_;
  // Declared before the members whose destruction can call UpdateHealth
  // (Publish builds joined by service_), so it outlives them.
  absl::Mutex health_mu_;
  bool shut_down_ ABSL_GUARDED_BY(health_mu_) = false;
  Miner miner_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<MinerService> service_;
  std::unique_ptr<ShardService> shard_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace hardneg

#endif  // HARDNEG_SERVER_SERVER_H_

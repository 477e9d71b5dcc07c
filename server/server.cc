#include "server/server.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/host_port.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace hardneg {
namespace {

constexpr char kServiceName[] = "hardneg.v1.Miner";

// Runs on each search worker: OpenMP's thread count is per thread.
std::function<void()> WorkerThreadInit(int blas_threads) {
  return [blas_threads] {
    omp_set_num_threads(blas_threads);
    openblas_set_num_threads(blas_threads);
  };
}

MinerServiceOptions ServiceOptions(const ServerOptions& options,
                                   const ThreadCounts& threads) {
  MinerServiceOptions service = options.service;
  service.max_reply_bytes = options.max_message_bytes;
  service.max_batch_fetch = options.limits.max_request_fetch;
  service.lone_batch_threads = threads.lone_batch_threads;
  return service;
}

}  // namespace

ThreadCounts ResolveThreadCounts(const ServerOptions& options, unsigned cores) {
  const int all = cores == 0 ? 2 : static_cast<int>(cores);
  ThreadCounts counts;
  counts.workers =
      options.threads == 0 ? static_cast<size_t>(all) : options.threads;
  const bool automatic = options.blas_threads <= 0;
  // Workers x BLAS threads must not exceed the cores, or OpenBLAS's
  // threads spin against each other.
  counts.blas_threads = !automatic           ? options.blas_threads
                        : counts.workers > 1 ? 1
                                             : all;
  // With automatic BLAS threads and several workers, a batch that runs
  // alone may use every core.
  counts.lone_batch_threads = options.service.lone_batch_threads;
  if (automatic && counts.workers > 1 && counts.lone_batch_threads == 0) {
    counts.lone_batch_threads = all;
  }
  return counts;
}

HardnegServer::HardnegServer(const ServerOptions& options,
                             IndexManager* manager, const ThreadCounts& threads)
    : manager_(manager),
      miner_(options.limits),
      pool_(std::make_unique<WorkerPool>(
          threads.workers, WorkerThreadInit(threads.blas_threads))),
      service_(std::make_unique<MinerService>(manager, &miner_, pool_.get(),
                                              ServiceOptions(options, threads),
                                              options.metrics)),
      shard_service_(std::make_unique<ShardService>(manager, service_.get())) {}

absl::StatusOr<std::unique_ptr<HardnegServer>> HardnegServer::Start(
    const ServerOptions& options, IndexManager* manager) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<HardnegServer> server(new HardnegServer(
      options, manager,
      ResolveThreadCounts(options, std::thread::hardware_concurrency())));
  grpc::ServerBuilder builder;
  const std::string address = HostPort(options.host, options.port);
  builder.AddListeningPort(address,
                           options.credentials != nullptr
                               ? options.credentials
                               : grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  if (options.max_connection_age > absl::ZeroDuration()) {
    auto ms = [](absl::Duration d) {
      return static_cast<int>(
          std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, INT32_MAX));
    };
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               ms(options.max_connection_age));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               ms(options.max_connection_age_grace));
  }
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->shard_service_.get());
  if (options.metrics != nullptr) {
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.push_back(options.metrics->NewRpcInterceptorFactory());
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address,
                     ": the port is in use or the address is not local"));
  }
  server->UpdateHealth();
  return server;
}

HardnegServer::~HardnegServer() { Shutdown(absl::Seconds(5)); }

void HardnegServer::UpdateHealth() {
  absl::MutexLock lock(&health_mu_);
  if (shut_down_ || server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  const bool serving = manager_->Current() != nullptr;
  health->SetServingStatus(serving);
  health->SetServingStatus(kServiceName, serving);
}

void HardnegServer::Shutdown(absl::Duration deadline) {
  {
    absl::MutexLock lock(&health_mu_);
    if (shut_down_ || server_ == nullptr) return;
    shut_down_ = true;
    if (grpc::HealthCheckServiceInterface* health =
            server_->GetHealthCheckService()) {
      health->SetServingStatus(false);
      health->SetServingStatus(kServiceName, false);
    }
  }
  server_->Shutdown(absl::ToChronoTime(absl::Now() + deadline));
  // Past the deadline every call is cancelled: what is still queued is
  // answered, not mined.
  service_->StopMining();
  server_->Wait();
  pool_.reset();  // runs what is queued, then joins
}

std::shared_ptr<grpc::Channel> HardnegServer::InProcessChannel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return server_->InProcessChannel(args);
}

}  // namespace hardneg

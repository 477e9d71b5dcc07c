// hardneg-server: parses flags and wires the objects together.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "index_manager.h"
#include "log.h"
#include "metrics.h"
#include "omp_policy.h"
#include "prometheus/registry.h"
#include "server.h"

ABSL_FLAG(std::string, checkpoints, "",
          "Directory of checkpoints; the newest complete one is served and "
          "the directory is watched for newer ones.");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port; 0 picks a free one.");
ABSL_FLAG(std::string, host, "0.0.0.0",
          "Address to listen on (gRPC and /metrics).");
ABSL_FLAG(std::optional<int>, metrics_port, std::nullopt,
          "Port of the Prometheus /metrics endpoint; 0 picks a free one, "
          "-1 disables metrics. Default: 9464, or a free one when "
          "--grpc_port is 0 (so that servers started for tests never "
          "collide).");
ABSL_FLAG(std::string, index, "Flat",
          "FAISS factory string: Flat (exact), or e.g. IVF1024,Flat.");
ABSL_FLAG(uint32_t, nprobe, 0,
          "Inverted lists probed per query by IVF --index types (0: FAISS's "
          "default of 1). More: better recall, slower search.");
ABSL_FLAG(std::string, metric, "",
          "inner_product or l2; when empty, each checkpoint's manifest says.");
ABSL_FLAG(int, threads, 0, "Search worker threads; 0 means one per core.");
ABSL_FLAG(int, blas_threads, 0,
          "Threads one search may use; 0 means 1 when there are several "
          "search workers (they already fill the cores), else one per core, "
          "and one per core for a batch that runs while no other does.");
ABSL_FLAG(absl::Duration, poll_interval, absl::Seconds(2),
          "How often --checkpoints is scanned for a newer checkpoint.");
ABSL_FLAG(std::string, data_dir, "",
          "Snapshots of every served version go here; at start the newest "
          "is served at once. Empty: no snapshots.");
ABSL_FLAG(int, keep_snapshots, 3, "Snapshots kept under --data_dir.");
ABSL_FLAG(int, build_threads, 1,
          "Threads one background index build may use, so that serving "
          "keeps its latency.");
ABSL_FLAG(bool, allow_schema_change, false,
          "Accept a new version whose dim or metric differs from the "
          "served one (trainers' queries would all fail at once).");
ABSL_FLAG(uint64_t, max_index_bytes, 0,
          "Memory budget for the served version plus the one being built "
          "(0: none); a publish over it gets RESOURCE_EXHAUSTED.");
ABSL_FLAG(uint32_t, max_batch, 256,
          "Queries from all streams and calls coalesced into one search, at "
          "most.");
ABSL_FLAG(int64_t, max_batch_delay_us, 0,
          "How long a worker waits for more requests to fill a batch; 0 "
          "never waits (requests that queue while workers are busy are "
          "coalesced anyway).");
ABSL_FLAG(uint32_t, max_negatives, 10000, "Largest num_negatives accepted.");
ABSL_FLAG(uint32_t, max_range, 1000000, "Largest range_max accepted.");
ABSL_FLAG(uint32_t, max_nprobe, 4096,
          "Largest per-request options.nprobe accepted (IVF indexes).");

namespace {

constexpr int kDefaultMetricsPort = 9464;

}  // namespace

int main(int argc, char** argv) {
  hardneg::EnsurePassiveOpenMp(argv);
  absl::SetProgramUsageMessage(
      "hardneg-server --checkpoints DIR [--grpc_port N] [--index Flat] ...");
  absl::ParseCommandLine(argc, argv);
  using hardneg::Log;
  using hardneg::LogLevel;

  // Block termination signals before any thread starts, so that only the
  // sigwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  hardneg::IndexManagerOptions manager_options;
  manager_options.checkpoints_dir = absl::GetFlag(FLAGS_checkpoints);
  manager_options.build.factory = absl::GetFlag(FLAGS_index);
  manager_options.build.nprobe = absl::GetFlag(FLAGS_nprobe);
  if (!absl::GetFlag(FLAGS_metric).empty()) {
    absl::StatusOr<hardneg::Metric> metric =
        hardneg::ParseMetric(absl::GetFlag(FLAGS_metric));
    if (!metric.ok()) {
      std::fprintf(stderr, "--metric: %s\n",
                   std::string(metric.status().message()).c_str());
      return 2;
    }
    manager_options.metric = *metric;
  }
  manager_options.data_dir = absl::GetFlag(FLAGS_data_dir);
  manager_options.keep_snapshots =
      static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_keep_snapshots)));
  manager_options.build_threads = absl::GetFlag(FLAGS_build_threads);
  manager_options.allow_schema_change =
      absl::GetFlag(FLAGS_allow_schema_change);
  manager_options.max_index_bytes =
      static_cast<size_t>(absl::GetFlag(FLAGS_max_index_bytes));
  if (manager_options.checkpoints_dir.empty() &&
      manager_options.data_dir.empty()) {
    std::fprintf(stderr,
                 "--checkpoints DIR (or --data_dir with a snapshot, or both) "
                 "is required\n");
    return 2;
  }
  // Declared before the manager: its build threads record into them.
  const int metrics_port =
      absl::GetFlag(FLAGS_metrics_port)
          .value_or(absl::GetFlag(FLAGS_grpc_port) == 0 ? 0
                                                        : kDefaultMetricsPort);
  if (metrics_port < -1 || metrics_port > 65535) {
    std::fprintf(stderr,
                 "--metrics_port must be a port, 0 (a free one) or -1 (off)\n");
    return 2;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<hardneg::ServerMetrics> metrics;
  if (metrics_port >= 0) {
    metrics = std::make_unique<hardneg::ServerMetrics>(*registry);
  }
  hardneg::IndexManager manager(manager_options);
  // The first load is a refresh too; health joins once the server is up.
  if (metrics != nullptr) {
    manager.SetEvents(hardneg::WithIndexMetrics(metrics.get()));
  }
  // The newest snapshot serves at once; without one, the newest checkpoint
  // is loaded before listening, so "listening on" means "serving".
  if (!manager.RestoreSnapshot().ok()) {
    absl::Status loaded = manager.LoadNewest();
    if (!loaded.ok()) {
      Log(LogLevel::kWarning, "no_checkpoint_served",
          {{"reason", std::string(loaded.message())}});
    }
  }

  hardneg::ServerOptions server_options;
  server_options.host = absl::GetFlag(FLAGS_host);
  server_options.port = absl::GetFlag(FLAGS_grpc_port);
  server_options.threads =
      static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_threads)));
  server_options.blas_threads = absl::GetFlag(FLAGS_blas_threads);
  server_options.service.max_batch_queries =
      std::max<uint32_t>(1, absl::GetFlag(FLAGS_max_batch));
  server_options.service.max_batch_delay = absl::Microseconds(
      std::max<int64_t>(0, absl::GetFlag(FLAGS_max_batch_delay_us)));
  server_options.limits.max_negatives = absl::GetFlag(FLAGS_max_negatives);
  server_options.limits.max_range = absl::GetFlag(FLAGS_max_range);
  server_options.limits.max_nprobe = absl::GetFlag(FLAGS_max_nprobe);
  server_options.metrics = metrics.get();
  absl::StatusOr<std::unique_ptr<hardneg::HardnegServer>> server =
      hardneg::HardnegServer::Start(server_options, &manager);
  if (!server.ok()) {
    Log(LogLevel::kError, "start_failed",
        {{"reason", std::string(server.status().message())}});
    return 1;
  }
  hardneg::HardnegServer* s = server->get();
  hardneg::IndexEvents events;
  events.swapped = [s](const hardneg::IndexVersion&, absl::Duration) {
    s->UpdateHealth();
  };
  std::unique_ptr<hardneg::MetricsEndpoint> endpoint;
  if (metrics != nullptr) {
    events = hardneg::WithIndexMetrics(metrics.get(), std::move(events));
    absl::StatusOr<std::unique_ptr<hardneg::MetricsEndpoint>> started =
        hardneg::MetricsEndpoint::Start(
            server_options.host, metrics_port,
            {registry, metrics->ScrapeTimeMetrics()});
    if (!started.ok()) {
      Log(LogLevel::kError, "start_failed",
          {{"reason", std::string(started.status().message())}});
      return 1;
    }
    endpoint = *std::move(started);
  }
  manager.SetEvents(std::move(events));
  manager.StartWatching(absl::GetFlag(FLAGS_poll_interval));
  std::printf("listening on %d\n", s->port());
  if (endpoint != nullptr) std::printf("metrics on %d\n", endpoint->port());
  std::fflush(stdout);
  Log(LogLevel::kInfo, "start",
      {{"port", absl::StrCat(s->port())},
       {"metrics_port", absl::StrCat(endpoint ? endpoint->port() : -1)},
       {"checkpoints", manager_options.checkpoints_dir},
       {"index", manager_options.build.factory}});

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  Log(LogLevel::kInfo, "shutdown",
      {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
  s->Shutdown(absl::Seconds(10));
  // No swap may call into the server once it is gone.
  manager.StopWatching();
  server->reset();
  endpoint.reset();
  Log(LogLevel::kInfo, "stopped");
  return 0;
}

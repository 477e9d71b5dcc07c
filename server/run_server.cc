#include "server/run_server.h"

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "prometheus/registry.h"
#include "server/convert.h"
#include "server/metrics.h"
#include "server/server.h"
#include "versions/index_manager.h"

namespace hardneg {

int RunServer(const ServerConfig& config, const sigset_t& signals) {
  // Declared before the manager: its build threads record into them.
  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<ServerMetrics> metrics;
  if (config.metrics_port >= 0) {
    metrics = std::make_unique<ServerMetrics>(*registry);
  }
  IndexManagerOptions manager_options = config.manager;
  manager_options.describe_for_log = WithFlagNames;
  IndexManager manager(manager_options);
  // The first load is a refresh too; health joins once the server is up.
  if (metrics != nullptr) {
    manager.SetEvents(WithIndexMetrics(metrics.get()));
  }
  // The newest snapshot serves at once; without one, the newest checkpoint
  // is loaded before listening, so "listening on" means "serving".
  if (!manager.RestoreSnapshot().ok()) {
    absl::Status loaded = manager.LoadNewest();
    if (!loaded.ok()) {
      Log(LogLevel::kWarning, "no_checkpoint_served",
          {{"reason", WithFlagNames(loaded.message())}});
    }
  }

  ServerOptions server_options = config.server;
  server_options.metrics = metrics.get();
  absl::StatusOr<std::unique_ptr<HardnegServer>> server =
      HardnegServer::Start(server_options, &manager);
  if (!server.ok()) {
    Log(LogLevel::kError, "start_failed",
        {{"reason", std::string(server.status().message())}});
    return 1;
  }
  HardnegServer* s = server->get();
  IndexEvents events;
  events.swapped = [s](const IndexVersion&, absl::Duration) {
    s->UpdateHealth();
  };
  std::unique_ptr<MetricsEndpoint> endpoint;
  if (metrics != nullptr) {
    events = WithIndexMetrics(metrics.get(), std::move(events));
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> started =
        MetricsEndpoint::Start(server_options.host, config.metrics_port,
                               {registry, metrics->ScrapeTimeMetrics()});
    if (!started.ok()) {
      Log(LogLevel::kError, "start_failed",
          {{"reason", std::string(started.status().message())}});
      return 1;
    }
    endpoint = *std::move(started);
  }
  manager.SetEvents(std::move(events));
  manager.StartWatching(config.poll_interval);
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
  s->Shutdown(config.shutdown_grace);
  // Every call is answered or cancelled and the workers have stopped; no
  // swap may call into the server from here on.
  manager.StopWatching();
  endpoint.reset();
  Log(LogLevel::kInfo, "stopped");
  std::fflush(stdout);
  std::fflush(stderr);
  // What is left is library teardown: destroying the grpc::Server runs
  // grpc_shutdown, which after a large Mine answer waited about 10 s for
  // gRPC's executor thread (in epoll_wait), whatever --shutdown_grace was.
  // Nothing of ours needs it, and a pod must stop within its grace period.
  std::_Exit(0);
}

}  // namespace hardneg

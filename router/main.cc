// hardneg-router: serves hardneg.v1.Miner over shard servers
// (hardneg-server --num_shards N --shard_index I), answering exactly as one
// server over the whole corpus would (router/sharded_miner.h), plus health
// (SERVING while every shard serves a common version), reflection and
// Prometheus metrics.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "base/host_port.h"
#include "base/log.h"
#include "client/client.h"
#include "format/file_util.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "prometheus/registry.h"
#include "router/router_metrics.h"
#include "router/router_service.h"
#include "router/shard_set.h"
#include "router/sharded_miner.h"
#include "server/common_flags.h"
#include "server/metrics.h"

ABSL_FLAG(std::string, shards, "",
          "Comma-separated gRPC targets of the shard servers, shard 0 "
          "first (host:port, or dns:///name:port for a shard with "
          "replicas). Required.");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port; 0 picks a free one.");
ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address to listen on (gRPC and metrics). The default admits only "
          "this machine; --host=0.0.0.0 admits every network.");
ABSL_FLAG(std::optional<int>, metrics_port, std::nullopt,
          "Prometheus /metrics port; -1 turns metrics off, 0 picks a free "
          "one. Default: 9464, or a free one when --grpc_port is 0.");
ABSL_FLAG(absl::Duration, shard_timeout, absl::Seconds(30),
          "The longest one call to one shard may take (a request's own "
          "deadline bounds it too); a shard past it fails the request "
          "UNAVAILABLE naming it, or is left out with allow_partial.");
ABSL_FLAG(absl::Duration, poll_interval, absl::Seconds(1),
          "How often every shard's GetIndexInfo is polled: how soon a new "
          "version serves, and health follows the shards.");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "After SIGTERM, how long calls in flight may finish.");
ABSL_FLAG(uint64_t, max_message_bytes, uint64_t{64} << 20,
          "Largest message received from clients and shards.");
ABSL_FLAG(std::string, shard_tls_ca, "",
          "Connect to the shards with TLS, trusting this PEM CA bundle (the "
          "one that signed their --tls_cert). Empty: plaintext.");
ABSL_FLAG(std::string, shard_tls_cert, "",
          "PEM client certificate for shards that require mutual TLS (with "
          "--shard_tls_key).");
ABSL_FLAG(std::string, shard_tls_key, "",
          "PEM private key of --shard_tls_cert.");
ABSL_FLAG(std::string, shard_token_file, "",
          "File holding the bearer token the router sends its shards (run "
          "with --auth_tokens; the token needs the mine and publish roles). "
          "Empty: none.");

namespace hardneg {
namespace {

constexpr char kServiceName[] = "hardneg.v1.Miner";
constexpr int kDefaultMetricsPort = 9464;

// TLS and the bearer token towards the shards, into `options`.
absl::Status ShardAccessFromFlags(ShardSetOptions* options) {
  const std::string ca = absl::GetFlag(FLAGS_shard_tls_ca);
  const std::string cert = absl::GetFlag(FLAGS_shard_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_shard_tls_key);
  if (!ca.empty() || !cert.empty() || !key.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        client::TlsCredentialsFromFiles(ca, cert, key);
    if (!credentials.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shard_tls_ca/--shard_tls_cert/--shard_tls_key: ",
                       credentials.status().message()));
    }
    options->credentials = *std::move(credentials);
  }
  const std::string token_file = absl::GetFlag(FLAGS_shard_token_file);
  if (!token_file.empty()) {
    absl::StatusOr<std::string> token =
        ReadSmallTextFile(token_file, size_t{64} << 10);
    if (!token.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shard_token_file: ", token.status().message()));
    }
    options->bearer_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options->bearer_token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shard_token_file: ", token_file, " is empty"));
    }
  }
  return absl::OkStatus();
}

// Polls the shards; health is SERVING (and the metrics say how many shards
// serve) while every shard serves the common version.
void WatchShards(ShardSet& shards, grpc::HealthCheckServiceInterface* health,
                 RouterMetrics* metrics) {
  shards.Start(
      absl::GetFlag(FLAGS_poll_interval), [=](const ShardSetView& view) {
        health->SetServingStatus(kServiceName, view.all_serving);
        health->SetServingStatus(view.all_serving);
        size_t serving = 0;
        for (const ShardState& shard : view.shards) {
          serving += view.version.has_value() && shard.info.has_value() &&
                     shard.info->version().name() == view.version->name;
        }
        if (metrics != nullptr) {
          metrics->SetServing(serving,
                              view.version ? view.version->sequence : 0);
        }
        Log(view.all_serving ? LogLevel::kInfo : LogLevel::kWarning, "shards",
            {{"version", view.version ? view.version->name : ""},
             {"serving", absl::StrCat(serving, "/", view.shards.size())}});
      });
}

// Blocks until SIGTERM or SIGINT, then reports NOT_SERVING and lets calls
// in flight finish within --shutdown_grace.
void WaitForSignal(const sigset_t& signals, grpc::Server& server,
                   grpc::HealthCheckServiceInterface* health) {
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  Log(LogLevel::kInfo, "shutdown",
      {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
  health->SetServingStatus(kServiceName, false);
  health->SetServingStatus(false);
  server.Shutdown(std::chrono::system_clock::now() +
                  std::chrono::milliseconds(absl::ToInt64Milliseconds(
                      absl::GetFlag(FLAGS_shutdown_grace))));
}

// The router's gRPC server on `address` (health NOT_SERVING until the shards
// serve); null, logged, when it cannot listen.
std::unique_ptr<grpc::Server> StartGrpc(
    const std::string& address,
    const std::shared_ptr<grpc::ServerCredentials>& tls, int max_bytes,
    RouterService* service, int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      address, tls != nullptr ? tls : grpc::InsecureServerCredentials(), port);
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    Log(LogLevel::kError, "start_failed",
        {{"reason", absl::StrCat("cannot listen on ", address)}});
    return nullptr;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(kServiceName, false);
  health->SetServingStatus(false);
  return server;
}

int Run(const sigset_t& signals) {
  std::vector<std::string> targets =
      absl::StrSplit(absl::GetFlag(FLAGS_shards), ',', absl::SkipWhitespace());
  if (targets.empty()) {
    std::fprintf(stderr, "--shards T0,T1,... is required\n");
    return 2;
  }
  const int grpc_port = absl::GetFlag(FLAGS_grpc_port);
  const int metrics_port =
      absl::GetFlag(FLAGS_metrics_port)
          .value_or(grpc_port == 0 ? 0 : kDefaultMetricsPort);
  const std::string host = absl::GetFlag(FLAGS_host);
  const int max_bytes = static_cast<int>(
      std::min<uint64_t>(absl::GetFlag(FLAGS_max_message_bytes), INT32_MAX));
  const absl::Duration shard_timeout = absl::GetFlag(FLAGS_shard_timeout);

  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<RouterMetrics> metrics;
  if (metrics_port >= 0) {
    metrics = std::make_unique<RouterMetrics>(*registry, targets.size());
  }
  ShardSetOptions set_options;
  set_options.poll_timeout = std::min(shard_timeout, absl::Seconds(5));
  set_options.max_receive_bytes = max_bytes;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tls = TlsFromFlags();
  absl::StatusOr<std::shared_ptr<const TokenAuthorizer>> auth = AuthFromFlags();
  absl::Status towards_shards = ShardAccessFromFlags(&set_options);
  for (const absl::Status& status :
       {tls.status(), auth.status(), towards_shards}) {
    if (!status.ok()) {
      std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
      return 2;
    }
  }
  ShardSet shards(targets, set_options);
  ShardedMinerOptions miner_options;
  miner_options.limits = LimitsFromFlags();
  miner_options.shard_timeout = shard_timeout;
  miner_options.max_reply_bytes = static_cast<size_t>(max_bytes);
  ShardedMiner miner(&shards, miner_options, metrics.get());
  RouterServiceOptions service_options;
  service_options.auth = *std::move(auth);
  RouterService service(&shards, &miner, metrics.get(), service_options);

  int port = 0;
  std::unique_ptr<grpc::Server> server =
      StartGrpc(HostPort(host, grpc_port), *tls, max_bytes, &service, &port);
  if (server == nullptr) return 1;
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  std::unique_ptr<MetricsEndpoint> endpoint;
  if (metrics != nullptr) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> started =
        MetricsEndpoint::Start(host, metrics_port, {registry});
    if (!started.ok()) {
      Log(LogLevel::kError, "start_failed",
          {{"reason", std::string(started.status().message())}});
      return 1;
    }
    endpoint = *std::move(started);
  }
  WatchShards(shards, health, metrics.get());
  std::printf("listening on %d\n", port);
  if (endpoint != nullptr) std::printf("metrics on %d\n", endpoint->port());
  std::fflush(stdout);
  Log(LogLevel::kInfo, "start",
      {{"port", absl::StrCat(port)},
       {"metrics_port", absl::StrCat(endpoint ? endpoint->port() : -1)},
       {"shards", absl::GetFlag(FLAGS_shards)}});

  WaitForSignal(signals, *server, health);
  endpoint.reset();
  Log(LogLevel::kInfo, "stopped");
  std::fflush(stdout);
  std::fflush(stderr);
  // As hardneg-server: gRPC's library teardown can wait seconds for
  // nothing of ours.
  std::_Exit(0);
}

}  // namespace
}  // namespace hardneg

int main(int argc, char** argv) {
  const sigset_t signals = hardneg::StartBinary(
      argc, argv, {"router/main.cc"},
      "hardneg-router --shards HOST:PORT,HOST:PORT,... [--grpc_port N] ...");
  return hardneg::Run(signals);
}

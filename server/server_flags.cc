#include "server/server_flags.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "corpus/metric.h"
#include "format/file_util.h"
#include "grpcpp/security/server_credentials.h"
#include "index/reduced_scan.h"
#include "server/auth.h"
#include "server/common_flags.h"

ABSL_FLAG(std::string, checkpoints, "",
          "Directory of checkpoints; the newest complete one is served and "
          "the directory is watched for newer ones.");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port; 0 picks a free one.");
ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address to listen on (gRPC and /metrics). The default admits "
          "only this machine; --host=0.0.0.0 (as the image and the "
          "Kubernetes manifests set) admits every network, so guard it with "
          "--auth_tokens and TLS.");
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
ABSL_FLAG(uint32_t, ivf_min_candidates, 0,
          "IVF-Flat --index over labelled candidates: each query probes "
          "lists, nearest first, skipping those holding only its label, until "
          "it has scanned this many candidates without its label (and at "
          "least --nprobe lists holding some). 0: automatic (64 per result "
          "fetched, at least 8 average lists). A request's "
          "options.ivf_min_candidates overrides it.");
ABSL_FLAG(bool, half_scan, true,
          "Flat at --scan f32: also keep the vectors in float16 (+50% of "
          "their memory) for searches of 1-3 queries, which read them first "
          "and rescore from float32: about 2x faster single queries, as "
          "exact as without it.");
ABSL_FLAG(std::string, scan, "auto",
          "Flat: the precision of the first pass over the vectors: int8 "
          "(AVX512_VNNI; +25% of their memory), bf16 (AVX512_BF16; +50%), "
          "f32 (sgemm), or auto (the fastest this CPU runs natively). The "
          "candidates within the reduced pass's proven error bound are "
          "rescored in float32: answers are f32's. Kept in snapshots.");
ABSL_FLAG(std::string, metric, "",
          "inner_product or l2; when empty, each checkpoint's manifest says.");
ABSL_FLAG(int, threads, 0, "Search worker threads; 0 means one per core.");
ABSL_FLAG(int, blas_threads, 0,
          "Threads one search may use; 0 means 1 when there are several "
          "search workers (they already fill the cores), else one per core, "
          "and one per core for a batch that runs while no other does.");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "After SIGTERM or SIGINT: how long calls in flight may finish; "
          "then the rest are cancelled (queued requests are not mined) and "
          "the server exits 0.");
ABSL_FLAG(absl::Duration, poll_interval, absl::Seconds(2),
          "How often --checkpoints is scanned for a newer checkpoint.");
ABSL_FLAG(std::string, data_dir, "",
          "Snapshots of every served version go here; at start the newest "
          "is served at once. Empty: no snapshots.");
ABSL_FLAG(int, keep_snapshots, 3, "Snapshots kept under --data_dir.");
ABSL_FLAG(bool, mmap_vectors, true,
          "With --data_dir: keep each version's float32 vectors in a file "
          "there, memory-mapped read-only (page cache, evictable, not counted "
          "in --max_index_bytes), not on the heap. Without --data_dir, and "
          "for a Publish, they stay on the heap.");
ABSL_FLAG(int, build_threads, 1,
          "Threads one background index build may use, so that serving "
          "keeps its latency.");
ABSL_FLAG(bool, allow_schema_change, false,
          "Accept a new version whose dim or metric differs from the "
          "served one (trainers' queries would all fail at once).");
ABSL_FLAG(uint64_t, max_index_bytes, 0,
          "Memory budget for the served version plus the one being built "
          "(0: none), in heap bytes: mapped vectors (--mmap_vectors) are not "
          "counted; a publish over it gets RESOURCE_EXHAUSTED.");
ABSL_FLAG(uint32_t, max_batch, 256,
          "Queries from all streams and calls coalesced into one search, at "
          "most.");
ABSL_FLAG(int64_t, max_batch_delay_us, 0,
          "How long a worker waits for more requests to fill a batch; 0 "
          "never waits (requests that queue while workers are busy are "
          "coalesced anyway).");
ABSL_FLAG(int64_t, busy_batch_delay_us, 0,
          "How long a worker waits for more requests to fill a batch while "
          "another batch is being searched (and no longer than it runs); 0 "
          "never waits. Under load it fills batches to --max_batch: on an "
          "IVF index over labelled candidates that probes tens of thousands "
          "a query, 5000 served about 11% more queries a second (README, "
          "\"Throughput and latency\").");
ABSL_FLAG(uint32_t, num_shards, 1,
          "Shards the corpus is split into; this server keeps only the "
          "candidates of --shard_index (ids with splitmix64(id) % "
          "num_shards == shard_index) from every checkpoint, publish and "
          "snapshot. 1: the whole corpus. A hardneg-router fans out over "
          "the shards.");
ABSL_FLAG(uint32_t, shard_index, 0,
          "Which shard this server holds, in [0, --num_shards). Set to the "
          "pod's ordinal in a StatefulSet.");
ABSL_FLAG(absl::Duration, keep_previous_version, absl::Seconds(60),
          "On a shard (--num_shards > 1): how long the version a swap "
          "replaces stays servable for requests a router pins to it, while "
          "the other shards move. A new build frees it at once.");
ABSL_FLAG(uint32_t, max_in_flight_per_stream, 16,
          "Requests one Mine stream may have unanswered (or answered but not "
          "yet taken by its client) before the server stops reading it.");
ABSL_FLAG(uint64_t, max_stream_reply_bytes, uint64_t{64} << 20,
          "Answer bytes (bounded from each request before it is mined) one "
          "Mine stream may hold unsent before the server stops reading it.");
ABSL_FLAG(uint32_t, max_streams, 1024,
          "Mine streams open at once; one more gets RESOURCE_EXHAUSTED.");
ABSL_FLAG(uint64_t, max_queued_queries, 65536,
          "Admission control: queries waiting for a search worker, over all "
          "streams and calls; a request past it gets RESOURCE_EXHAUSTED at "
          "once and may be retried.");
ABSL_FLAG(absl::Duration, max_connection_age, absl::ZeroDuration(),
          "Send each connection GOAWAY after this long (+-10% jitter), so "
          "clients reconnect and re-resolve: with replicas behind a "
          "headless Service, long-lived Mine streams move onto pods added "
          "since. Calls in flight then have --max_connection_age_grace. "
          "0: never (one server gains nothing from cutting streams).");
ABSL_FLAG(absl::Duration, max_connection_age_grace, absl::Seconds(30),
          "After --max_connection_age, how long calls in flight may finish "
          "before they are cancelled (a Mine stream ends UNAVAILABLE).");

namespace hardneg {
namespace {

constexpr int kDefaultMetricsPort = 9464;

// The index manager's part: checkpoints, snapshots, index building.
absl::StatusOr<IndexManagerOptions> ManagerOptionsFromFlags() {
  IndexManagerOptions manager;
  manager.checkpoints_dir = absl::GetFlag(FLAGS_checkpoints);
  manager.build.factory = absl::GetFlag(FLAGS_index);
  manager.build.nprobe = absl::GetFlag(FLAGS_nprobe);
  manager.build.ivf_min_candidates = absl::GetFlag(FLAGS_ivf_min_candidates);
  manager.build.half_scan = absl::GetFlag(FLAGS_half_scan);
  const std::optional<ScanPrecision> scan =
      ParseScanPrecision(absl::GetFlag(FLAGS_scan));
  if (!scan.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--scan: \"", absl::GetFlag(FLAGS_scan),
                     "\" is not one of auto, f32, bf16, int8"));
  }
  manager.build.scan = *scan;
  if (!absl::GetFlag(FLAGS_metric).empty()) {
    absl::StatusOr<Metric> metric = ParseMetric(absl::GetFlag(FLAGS_metric));
    if (!metric.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metric: ", metric.status().message()));
    }
    manager.metric = *metric;
  }
  manager.data_dir = absl::GetFlag(FLAGS_data_dir);
  manager.keep_snapshots =
      static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_keep_snapshots)));
  manager.mmap_vectors = absl::GetFlag(FLAGS_mmap_vectors);
  manager.build_threads = absl::GetFlag(FLAGS_build_threads);
  manager.allow_schema_change = absl::GetFlag(FLAGS_allow_schema_change);
  manager.max_index_bytes =
      static_cast<size_t>(absl::GetFlag(FLAGS_max_index_bytes));
  manager.shard.count = absl::GetFlag(FLAGS_num_shards);
  manager.shard.index = absl::GetFlag(FLAGS_shard_index);
  if (manager.shard.count == 0 || manager.shard.index >= manager.shard.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shard_index ", manager.shard.index, " must be below --num_shards ",
        manager.shard.count, " (and --num_shards at least 1)"));
  }
  if (manager.shard.sharded()) {
    manager.keep_previous = std::max(
        absl::ZeroDuration(), absl::GetFlag(FLAGS_keep_previous_version));
  }
  if (manager.checkpoints_dir.empty() && manager.data_dir.empty()) {
    return absl::InvalidArgumentError(
        "--checkpoints DIR (or --data_dir with a snapshot, or both) is "
        "required");
  }
  return manager;
}

// The gRPC server's part: address, threads, batching, admission, access.
absl::StatusOr<ServerOptions> ServerOptionsFromFlags() {
  ServerOptions server;
  server.host = absl::GetFlag(FLAGS_host);
  server.port = absl::GetFlag(FLAGS_grpc_port);
  server.threads =
      static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_threads)));
  server.blas_threads = absl::GetFlag(FLAGS_blas_threads);
  server.max_connection_age = absl::GetFlag(FLAGS_max_connection_age);
  server.max_connection_age_grace = std::max(
      absl::ZeroDuration(), absl::GetFlag(FLAGS_max_connection_age_grace));
  server.service.max_batch_queries =
      std::max<uint32_t>(1, absl::GetFlag(FLAGS_max_batch));
  server.service.max_batch_delay = absl::Microseconds(
      std::max<int64_t>(0, absl::GetFlag(FLAGS_max_batch_delay_us)));
  server.service.busy_batch_delay = absl::Microseconds(
      std::max<int64_t>(0, absl::GetFlag(FLAGS_busy_batch_delay_us)));
  server.limits = LimitsFromFlags();
  if (absl::GetFlag(FLAGS_num_shards) > 1) {
    server.limits = server.limits.ForShard();
  }
  server.service.max_in_flight_per_stream =
      std::max<uint32_t>(1, absl::GetFlag(FLAGS_max_in_flight_per_stream));
  server.service.max_stream_reply_bytes =
      static_cast<size_t>(absl::GetFlag(FLAGS_max_stream_reply_bytes));
  server.service.max_streams =
      std::max<uint32_t>(1, absl::GetFlag(FLAGS_max_streams));
  server.service.max_queued_queries =
      static_cast<size_t>(absl::GetFlag(FLAGS_max_queued_queries));
  HARDNEG_ASSIGN_OR_RETURN(server.credentials, TlsFromFlags());
  HARDNEG_ASSIGN_OR_RETURN(server.service.auth, AuthFromFlags());
  return server;
}

}  // namespace

absl::StatusOr<ServerConfig> ServerConfigFromFlags() {
  ServerConfig config;
  HARDNEG_ASSIGN_OR_RETURN(config.manager, ManagerOptionsFromFlags());
  config.metrics_port =
      absl::GetFlag(FLAGS_metrics_port)
          .value_or(absl::GetFlag(FLAGS_grpc_port) == 0 ? 0
                                                        : kDefaultMetricsPort);
  if (config.metrics_port < -1 || config.metrics_port > 65535) {
    return absl::InvalidArgumentError(
        "--metrics_port must be a port, 0 (a free one) or -1 (off)");
  }
  config.poll_interval = absl::GetFlag(FLAGS_poll_interval);
  config.shutdown_grace =
      std::max(absl::ZeroDuration(), absl::GetFlag(FLAGS_shutdown_grace));
  HARDNEG_ASSIGN_OR_RETURN(config.server, ServerOptionsFromFlags());
  return config;
}

}  // namespace hardneg

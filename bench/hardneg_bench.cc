// hardneg-bench: throughput and latency of hard-negative mining, measured
// in one run against two references on the same machine (issue 4, section
// 6). Workloads: W1 100,000 x 128 and W3 200,000 x 768, uniform random unit
// vectors; W2 1,000,000 x 128, unit vectors in 3,000 clusters (uniform
// vectors have no neighbourhoods for IVF to find). Inner product; each
// query excludes one positive id and asks for 10 negatives in the window
// [0, 10). For each workload it prints:
//
//   (d) the sgemm rate (cblas_sgemm 256 x 4096 x dim, one BLAS thread on
//       each core at once, best of 3), giving the bound
//       q/s = rate / (2 * N * d), as OpenBLAS runs here (held to its AVX2
//       kernels when OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE say so);
//   (j) the same at the AVX-512 rate: measured in a child process (the
//       bench again, --sgemm_only=d) with those two variables unset, since
//       OpenBLAS reads them when it loads; the float32 bound issue 13's
//       reduced-precision scans must also pass (on a CPU without AVX-512,
//       only OpenBLAS's unpinned choice of kernels, and named so);
//   (k) the peak of vdpbf16ps (bf16) and vpdpbusd (int8): zmm operands in
//       registers, 16 independent accumulators, one thread per core at
//       once, best of 3 (instruction_peak.cc), in GFLOP/s-equivalent
//       (64 and 128 operations an instruction) and its q/s bound; n/a on a
//       CPU without the instruction;
//   (a) in-process faiss::IndexFlatIP search, batches of 256, k = 11: the
//       reference; and one query a call, for the single-query latency;
//   (b) hardneg's Miner::Mine in-process on the IndexVersion that
//       IndexManager::LoadNewest builds from a checkpoint written here,
//       batches of 256, 16 and 1;
//   (e) the bare gRPC round trip (GetIndexInfo), part of every request;
//   (c) the service over loopback: HardnegServer in this process (127.0.0.1,
//       port 0, default threads), S client threads each with its own
//       channel and Mine stream, requests of B queries (embedding_bytes),
//       up to 4 requests in flight per stream; plus S=1, B=1 with one
//       request in flight for the unloaded single-query latency;
//   (f) W2 only: IVF1024,Flat built from the same checkpoint (labels =
//       cluster ids), the Miner at B=256 with per-request nprobe and
//       ivf_min_candidates, each with its recall@10 of negatives against
//       the exact (Flat) Miner on 512 queries with the same exclusions; in
//       two modes: one positive excluded, and also the query's own class
//       (label = its cluster, as trainers exclude same-class items);
//       the index ranks and scans cells (a list's entries of one label)
//       at --scan auto, as a server would; the exact Flat it is compared
//       with scans at --scan auto too;
//   (g) W2 only: per mode, the service on IVF, S=8 B=16, at the setting
//       whose (f) line was fastest of those whose recall reaches the
//       mode's target, against the exact service with the same
//       exclusions (W2's (c) S=8 B=16 excludes one positive; "(c) own
//       class excluded" both); three (g) lines alternate with two of the
//       exact service again ("(c) exact again"), and the ratio is of the
//       better of each side's three, so that the machine's drift between
//       (c) and (g) does not decide it; in the own-class mode each
//       server of these lines runs in the shape that serves it best
//       (kIvfServerShape: IVF on one worker of both cores, batches of up
//       to 512 queries filled for up to 2 ms; the exact service on two
//       workers with busy_batch_delay 5 ms);
//   (h) the same query mined in-process and then over the service,
//       alternately, for the single-query gap without drift between lines;
//   (i) the (e) round trip, each right after an untimed in-process
//       single-query Mine: what the gRPC path costs once a scan of the
//       candidates has evicted it from the caches;
//   (l) each scan precision (IndexBuildOptions::scan: f32, bf16, int8; one
//       the CPU does not run natively is skipped) on its own IndexVersion:
//       the Miner at B=256 and B=1, the service at S=8 B=16, the share of
//       512 queries whose negatives are identical to f32's (with recall@10
//       of f32's), and the share of the reduced pass's queries over these
//       lines that fell back to float32 (VectorIndex::scan_stats);
//   (a), (d) and (j) again at the end: the summary divides by the better
//       of each pair, so a slow first measurement cannot flatter the
//       ratios.
//
// W4 (issue 13), only when named (--workloads W4; it writes about 2 x 27
// GB under --w4_dir): 8.8M x 768 uniform unit vectors (--w4_rows), the
// size of MS MARCO's passages, 27 GB of float32 on a 24 GB machine. v1 is
// written straight to disk as the server's own snapshot (scan int8), and
// an IndexManager with a data_dir and mmap_vectors restores it as after a
// restart: float32 rows mapped, the int8 copy on the heap. It prints (d)
// and (j) for this n; the exact answers of 4 queries by a brute-force
// double scan of the file, against the Miner's and the service's; the
// Miner and the service (S=1, one request in flight) at B=256; then a
// swap: a checkpoint v2 whose embeddings are a hard link to v1's rows
// (ids + 10^12, so answers name their version) is loaded with LoadNewest
// while 2 streams of B=16 keep mining, counting failed requests and
// checking v2's answers. A thread samples RssAnon, RssFile, MemAvailable
// and the free disk every 100 ms and prints progress every 10 s of the
// long phases; the summary gives each W4 target beside its figure.
//
// Every line gives q/s, p50 and p99 latency of a call (a batch for (a) and
// (b), a request for (c)) and the ratios to (a) and to the bound. A cell of
// (c) is skipped when the queries it keeps in flight would take longer than
// two cell durations to drain at (a)'s rate. The summary states each of the
// issues' targets beside the measured ratio; issue 13's are taken from (l)
// at the precision scan auto resolves to, and a table gives every
// precision's (l) figures against (d), (j) and (k).
//
// A benchmark, not a test: it asserts nothing and is not registered with
// CTest; its numbers depend on the machine and on what else runs on it.
#include <cblas.h>
#include <faiss/IndexFlat.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <omp.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "bench_util.h"
#include "format/checkpoint.h"
#include "format/file_util.h"
#include "format/npy.h"
#include "generated_snapshot.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "hardneg/v1/miner.pb.h"
#include "index/cpu_state.h"
#include "index/reduced_scan.h"
#include "instruction_peak.h"
#include "memory_sampler.h"
#include "mining/miner.h"
#include "server/omp_policy.h"
#include "server/server.h"
#include "versions/index_manager.h"
#include "versions/index_version.h"

ABSL_FLAG(bool, quick, false,
          "Divide every workload's n by 10 and shorten every measurement.");
ABSL_FLAG(std::string, workloads, "",
          "Workloads to run, e.g. W1 or W1,W3 (empty: W1,W2,W3). W4 runs "
          "only when named: it writes tens of GB.");
ABSL_FLAG(double, cell_seconds, 0,
          "Measuring time of each line (0: 3 s, or 1 s with --quick).");
ABSL_FLAG(int, max_requests, 100000,
          "Each stream of (c) stops sending after this many requests.");
ABSL_FLAG(std::string, tmp_dir, "",
          "Where the checkpoints are written (empty: $TMPDIR or /tmp).");
ABSL_FLAG(uint64_t, seed, 42, "Seed of the vectors and queries.");
ABSL_FLAG(uint64_t, w4_rows, 8800000,
          "W4's rows (of 768 floats; --quick leaves it alone). The default, "
          "MS MARCO's size, needs about 2 x 27 GB of disk.");
ABSL_FLAG(std::string, w4_dir, "",
          "Where W4 writes, in a fresh hardneg-w4-XXXXXX directory removed "
          "at the end (empty: --tmp_dir).");
ABSL_FLAG(uint32_t, sgemm_only, 0,
          "Internal: only measure (d)'s sgemm rate at this dim, print it and "
          "exit. The bench runs itself so, without OPENBLAS_CORETYPE and "
          "OPENBLAS_L2_SIZE, for (j).");

namespace hardneg {
namespace {

using bench::CountCores;
using bench::DefaultTmpDir;
using bench::FillClusteredUnitVectors;
using bench::FillUnitVectors;
using bench::LoadAverage;
using bench::SplitMix64;
using bench::TempDir;

namespace pb = ::hardneg::v1;

constexpr uint32_t kNumNegatives = 10;
constexpr uint32_t kRangeMax = 10;
constexpr int kFaissK = 11;  // 10 negatives + 1 positive to exclude
constexpr size_t kFaissBatch = 256;
constexpr int kInFlight = 4;
constexpr size_t kQueryPool = 2048;
constexpr int kSgemmM = 256;
constexpr int kSgemmN = 4096;
// Noise norm around a cluster's centre, for clustered workloads.
constexpr float kClusterSpread = 1.0f;
// IVF on workloads that ask for it: lists, and the settings tried
// (options.nprobe, options.ivf_min_candidates; 0 is the server's default).
constexpr char kIvfFactory[] = "IVF1024,Flat";
struct IvfSetting {
  uint32_t nprobe = 0;
  uint32_t min_candidates = 0;
};
// 36,000 to 38,000: the own-class mode's recall@10 crosses 0.95 between
// them on W2 (0.9498, 0.9508, 0.9527; 0.9418 at 32,000, 0.9553 at
// 40,000).
constexpr IvfSetting kIvfSettings[] = {
    {4, 0},     {16, 0},    {64, 0},     {1, 2000},   {1, 8000},  {1, 16000},
    {1, 32000}, {1, 36000}, {1, 37000},  {1, 38000},  {1, 40000}, {1, 48000},
    {1, 64000}, {1, 96000}, {1, 128000}, {1, 256000}, {1, 512000}};
// The issue's targets for IVF: recall@10 at a speed over the exact service.
constexpr double kIvfRecallTarget = 0.99;       // one positive excluded
constexpr double kIvfClassRecallTarget = 0.95;  // own class excluded too
// (g)'s IVF service lines, alternated with the exact service's.
constexpr int kIvfServiceRounds = 3;
// How a server of the (g) lines runs (ServerOptions::threads, and
// MinerServiceOptions' max_batch_queries, max_batch_delay and
// busy_batch_delay; 0 threads or max_batch: the server's default): the
// server's defaults unless a shape served that side better.
struct ServerShape {
  size_t threads = 0;
  size_t max_batch = 0;
  absl::Duration max_batch_delay = absl::ZeroDuration();
  absl::Duration busy_batch_delay = absl::ZeroDuration();
};
// Per mode (one positive, own class): the IVF server of the (g) lines,
// and the exact one of the lines alternated with them. The own class
// probes 37,000 or so candidates a query, and a batch reads each cell once
// for all its queries, so the more queries a batch the better: on two
// workers, batches filled while the other's runs (busy_batch_delay 5 ms)
// served about 11% more q/s than the defaults; one worker of both cores
// at batches of up to 512 (all the bench's queries in flight), filled for
// up to 2 ms, 10% more again (5 of 5 alternated lines, p99 36 ms against
// 55). The exact service gained about 3% from the busy delay, and lost
// about 9% on one worker at 512. One positive probes 2,000, where the
// busy delay cost the IVF service about 4% (README, "Throughput and
// latency").
constexpr ServerShape kIvfServerShape[2][2] = {
    {{}, {}},
    {{1, 512, absl::Milliseconds(2), absl::ZeroDuration()},
     {0, 0, absl::ZeroDuration(), absl::Milliseconds(5)}}};
constexpr double kIvfSpeedupTarget = 5;
// Queries whose negatives are compared, IVF against exact.
constexpr size_t kRecallQueries = 512;

struct Workload {
  std::string name;
  size_t n = 0;
  size_t dim = 0;
  // 0: uniform unit vectors; else a mixture of this many clusters.
  size_t clusters = 0;
  // Also measure IVF against exact search.
  bool ivf = false;
  // Also measure the scans on rows sharing a direction (m).
  bool shared_direction = false;
};

// One printed line: calls are batches (a, b) or requests (c).
struct LineStats {
  double qps = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  size_t calls = 0;
  size_t queries = 0;
  size_t errors = 0;
};

LineStats Summarize(std::vector<double> ms, size_t queries, double seconds) {
  LineStats stats;
  stats.calls = ms.size();
  stats.queries = queries;
  stats.qps = seconds > 0 ? static_cast<double>(queries) / seconds : 0;
  if (ms.empty()) return stats;
  std::sort(ms.begin(), ms.end());
  auto rank = [&](double p) {
    const auto r =
        static_cast<size_t>(std::ceil(p * static_cast<double>(ms.size())));
    return ms[std::max<size_t>(r, 1) - 1];
  };
  stats.p50_ms = rank(0.50);
  stats.p99_ms = rank(0.99);
  return stats;
}

// (d): `threads` threads at once, each with one BLAS thread, call
// cblas_sgemm(256 x 4096 x dim) back to back for `seconds`. Returns the
// total GFLOP/s. The BLAS thread count is left at 1 (as the server's
// workers set it on 2+ cores) and restored by the caller.
double SgemmGflops(size_t dim, int threads, double seconds) {
  std::atomic<uint64_t> calls{0};
  std::vector<std::thread> pool;
  absl::Time start = absl::Now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      omp_set_num_threads(1);
      SplitMix64 rng(1234 + static_cast<uint64_t>(t));
      std::vector<float> a(kSgemmM * dim), b(kSgemmN * dim),
          c(kSgemmM * kSgemmN);
      for (float& x : a) x = rng.NextSigned();
      for (float& x : b) x = rng.NextSigned();
      const int d = static_cast<int>(dim);
      auto call = [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kSgemmM, kSgemmN,
                    d, 1.0f, a.data(), d, b.data(), d, 0.0f, c.data(), kSgemmN);
      };
      call();  // warm-up, not counted
      const absl::Time deadline = absl::Now() + absl::Seconds(seconds);
      uint64_t local = 0;
      while (absl::Now() < deadline) {
        call();
        ++local;
      }
      calls += local;
    });
  }
  for (std::thread& t : pool) t.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  const double flops = 2.0 * kSgemmM * kSgemmN * static_cast<double>(dim) *
                       static_cast<double>(calls.load());
  return flops / elapsed / 1e9;
}

// The same queries for every line: unit vectors, one positive id each.
struct QueryPool {
  size_t dim = 0;
  std::vector<float> embeddings;  // kQueryPool x dim
  std::vector<int64_t> positives;
  // Each query's class: its cluster (clustered workloads; else 0), the
  // label a request that excludes the query's own class sends.
  std::vector<int64_t> labels;
};

// What IVF lines vary per request.
struct MineSettings {
  IvfSetting ivf;
  bool exclude_class = false;  // set each query's label to its class
};

// The centres of a clustered workload's mixture (seeded, so the candidates
// and the queries share them).
std::vector<float> MakeCenters(const Workload& w, uint64_t seed) {
  std::vector<float> centers(w.clusters * w.dim);
  SplitMix64 rng(seed ^ 0xc3a5c85c97cb3127ULL);
  FillUnitVectors(&rng, w.clusters, w.dim, centers.data());
  return centers;
}

// `n` vectors of workload `w`.
void FillWorkloadVectors(const Workload& w, const std::vector<float>& centers,
                         SplitMix64* rng, size_t n, float* out) {
  if (w.clusters == 0) {
    FillUnitVectors(rng, n, w.dim, out);
  } else {
    FillClusteredUnitVectors(rng, n, w.dim, centers.data(), w.clusters,
                             kClusterSpread, out);
  }
}

QueryPool MakeQueries(const Workload& w, const std::vector<float>& centers,
                      uint64_t seed) {
  QueryPool pool;
  pool.dim = w.dim;
  pool.embeddings.resize(kQueryPool * w.dim);
  pool.positives.resize(kQueryPool);
  SplitMix64 rng(seed);
  FillWorkloadVectors(w, centers, &rng, kQueryPool, pool.embeddings.data());
  for (int64_t& p : pool.positives) {
    p = static_cast<int64_t>(rng.NextBelow(w.n));
  }
  // FillClusteredUnitVectors puts row i in cluster i % clusters.
  pool.labels.resize(kQueryPool);
  for (size_t q = 0; q < kQueryPool; ++q) {
    pool.labels[q] = w.clusters == 0 ? 0 : static_cast<int64_t>(q % w.clusters);
  }
  return pool;
}

// (a) FAISS IndexFlatIP, batches of `batch` (kFaissBatch for the
// reference), default OpenMP threads.
LineStats RunFaiss(const faiss::IndexFlatIP& index, const QueryPool& pool,
                   size_t batch, double seconds) {
  std::vector<float> distances(batch * kFaissK);
  std::vector<faiss::Index::idx_t> labels(batch * kFaissK);
  std::vector<double> ms;
  size_t queries = 0;
  size_t offset = 0;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(seconds);
  do {
    const absl::Time t = absl::Now();
    index.search(static_cast<faiss::Index::idx_t>(batch),
                 pool.embeddings.data() + offset * pool.dim, kFaissK,
                 distances.data(), labels.data());
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    queries += batch;
    offset = (offset + batch) % kQueryPool;
  } while (absl::Now() < deadline || ms.size() < 2);
  return Summarize(std::move(ms), queries,
                   absl::ToDoubleSeconds(absl::Now() - start));
}

MiningOptions BenchMiningOptions(uint64_t seed) {
  MiningOptions options;
  options.num_negatives = kNumNegatives;
  options.range_min = 0;
  options.range_max = kRangeMax;
  options.seed = seed;
  return options;
}

// (b) Miner::Mine of `batch` queries back to back on this thread.
LineStats RunMiner(const IndexVersion& version, const QueryPool& pool,
                   size_t batch, const MineSettings& settings, double seconds,
                   size_t max_calls) {
  const Miner miner;
  std::vector<MiningQuery> queries(batch);
  std::vector<double> ms;
  size_t total = 0;
  size_t errors = 0;
  size_t offset = 0;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(seconds);
  uint64_t call = 0;
  do {
    for (size_t i = 0; i < batch; ++i) {
      const size_t q = (offset + i) % kQueryPool;
      queries[i].embedding =
          absl::MakeConstSpan(pool.embeddings.data() + q * pool.dim, pool.dim);
      queries[i].positive_ids = absl::MakeConstSpan(&pool.positives[q], 1);
      if (settings.exclude_class) queries[i].label = pool.labels[q];
    }
    offset = (offset + batch) % kQueryPool;
    MiningOptions options = BenchMiningOptions(call++);
    options.nprobe = settings.ivf.nprobe;
    options.ivf_min_candidates = settings.ivf.min_candidates;
    const absl::Time t = absl::Now();
    absl::StatusOr<std::vector<MiningResult>> result =
        miner.Mine(version, queries, options);
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    if (!result.ok()) {
      if (errors++ == 0) {
        std::fprintf(stderr, "Miner::Mine: %s\n",
                     result.status().ToString().c_str());
      }
    }
    total += batch;
  } while ((absl::Now() < deadline || ms.size() < 2) && ms.size() < max_calls);
  LineStats stats = Summarize(std::move(ms), total,
                              absl::ToDoubleSeconds(absl::Now() - start));
  stats.errors = errors;
  return stats;
}

// Lets the stream threads of one cell start measuring together.
class StartGate {
 public:
  explicit StartGate(int streams) : waiting_for_(streams) {}
  // Called by each stream when warmed up; returns the common start time.
  absl::Time ArriveAndWait() {
    absl::MutexLock lock(&mu_);
    if (--waiting_for_ == 0) start_ = absl::Now();
    mu_.Await(absl::Condition(
        +[](int* left) { return *left <= 0; }, &waiting_for_));
    return start_;
  }

 private:
  absl::Mutex mu_;
  int waiting_for_;
  absl::Time start_;
};

struct StreamResult {
  std::vector<double> ms;
  size_t queries = 0;
  size_t errors = 0;
  absl::Time start;
  absl::Time last_response;
  std::string first_error;
};

struct CellConfig {
  int streams = 1;
  size_t batch = 1;
  int in_flight = kInFlight;
  double seconds = 3;
  int max_requests = 100000;
  MineSettings settings;  // options.nprobe etc. of every request
};

void NoteError(StreamResult* out, const std::string& what) {
  if (out->errors++ == 0) out->first_error = what;
}

// One client stream of (c): its own channel (a local subchannel pool, so
// its own TCP connection) and Mine stream; one thread writes and reads,
// keeping up to cfg.in_flight requests outstanding.
void RunStream(const std::string& target, const CellConfig& cfg,
               const QueryPool& pool, int stream_index, StartGate* gate,
               StreamResult* out) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(-1);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      target, grpc::InsecureChannelCredentials(), args);
  std::unique_ptr<pb::Miner::Stub> stub = pb::Miner::NewStub(channel);
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<pb::MineRequest, pb::MineResponse>>
      stream = stub->Mine(&context);

  // A few prebuilt requests, reused with fresh request ids.
  std::vector<pb::MineRequest> templates(kInFlight);
  for (int t = 0; t < kInFlight; ++t) {
    pb::MineRequest& request = templates[t];
    pb::MiningOptions* options = request.mutable_options();
    options->set_num_negatives(kNumNegatives);
    options->set_range_min(0);
    options->set_range_max(kRangeMax);
    options->set_seed(static_cast<uint64_t>(t));
    options->set_nprobe(cfg.settings.ivf.nprobe);
    options->set_ivf_min_candidates(cfg.settings.ivf.min_candidates);
    const size_t first =
        (static_cast<size_t>(stream_index * kInFlight + t) * cfg.batch) %
        kQueryPool;
    for (size_t i = 0; i < cfg.batch; ++i) {
      const size_t q = (first + i) % kQueryPool;
      pb::Query* query = request.add_queries();
      query->set_embedding_bytes(
          reinterpret_cast<const char*>(pool.embeddings.data() + q * pool.dim),
          pool.dim * sizeof(float));
      query->add_positive_ids(pool.positives[q]);
      if (cfg.settings.exclude_class) query->set_label(pool.labels[q]);
    }
  }

  std::unordered_map<uint64_t, absl::Time> sent;
  uint64_t next_id = 1;
  pb::MineResponse response;
  auto send = [&]() -> bool {
    pb::MineRequest& request = templates[next_id % kInFlight];
    request.set_request_id(next_id);
    sent[next_id] = absl::Now();
    ++next_id;
    return stream->Write(request);
  };
  // Returns false when the stream ended.
  auto receive = [&](bool record) -> bool {
    if (!stream->Read(&response)) return false;
    const absl::Time now = absl::Now();
    auto it = sent.find(response.request_id());
    if (it == sent.end()) {
      NoteError(out, "response to an unknown request_id");
      return true;
    }
    if (response.error().code() != 0) {
      NoteError(out, "MineError " + std::to_string(response.error().code()) +
                         ": " + response.error().message());
    } else if (static_cast<size_t>(response.results_size()) != cfg.batch) {
      NoteError(out, "wrong number of results");
    } else if (record) {
      out->ms.push_back(absl::ToDoubleMilliseconds(now - it->second));
      out->queries += cfg.batch;
      out->last_response = now;
    }
    sent.erase(it);
    return true;
  };

  // Warm-up: one request answered before the clock starts.
  bool alive = send() && receive(false);
  out->start = gate->ArriveAndWait();
  out->last_response = out->start;
  if (!alive) {
    NoteError(out, "stream closed during warm-up");
  } else {
    const absl::Time deadline = out->start + absl::Seconds(cfg.seconds);
    int requests = 0;
    auto may_send = [&] {
      return requests < cfg.max_requests && absl::Now() < deadline;
    };
    int outstanding = 0;
    while (outstanding < cfg.in_flight && may_send()) {
      if (!send()) break;
      ++requests;
      ++outstanding;
    }
    while (outstanding > 0) {
      if (!receive(true)) {
        NoteError(out, "stream ended with requests in flight");
        break;
      }
      --outstanding;
      if (may_send() && send()) {
        ++requests;
        ++outstanding;
      }
    }
  }
  stream->WritesDone();
  while (stream->Read(&response)) {
  }
  grpc::Status status = stream->Finish();
  if (!status.ok()) NoteError(out, "Finish: " + status.error_message());
}

// (e) A Mine request of one query on one stream costs a gRPC round trip
// besides the search; this times that round trip alone with GetIndexInfo
// (a unary call answered from memory) on one channel, back to back.
LineStats RunRoundTrips(const std::string& target, double seconds,
                        const std::function<void(size_t call)>& before = {}) {
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  std::unique_ptr<pb::Miner::Stub> stub = pb::Miner::NewStub(channel);
  std::vector<double> ms;
  size_t errors = 0;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(seconds);
  do {
    if (before) before(ms.size());
    grpc::ClientContext context;
    pb::GetIndexInfoRequest request;
    pb::IndexInfo info;
    const absl::Time t = absl::Now();
    const grpc::Status status = stub->GetIndexInfo(&context, request, &info);
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    if (!status.ok()) ++errors;
  } while (absl::Now() < deadline || ms.size() < 2);
  const size_t calls = ms.size();
  // With `before`, q/s counts the round trips' own time only.
  const double seconds_spent =
      before ? std::accumulate(ms.begin(), ms.end(), 0.0) / 1000
             : absl::ToDoubleSeconds(absl::Now() - start);
  LineStats stats = Summarize(std::move(ms), calls, seconds_spent);
  stats.errors = errors;
  return stats;
}

LineStats RunCell(const std::string& target, const CellConfig& cfg,
                  const QueryPool& pool, std::string* first_error) {
  StartGate gate(cfg.streams);
  std::vector<StreamResult> results(static_cast<size_t>(cfg.streams));
  std::vector<std::thread> threads;
  for (int s = 0; s < cfg.streams; ++s) {
    threads.emplace_back(RunStream, target, std::cref(cfg), std::cref(pool), s,
                         &gate, &results[static_cast<size_t>(s)]);
  }
  for (std::thread& t : threads) t.join();
  std::vector<double> ms;
  size_t queries = 0;
  size_t errors = 0;
  absl::Time start = absl::InfiniteFuture();
  absl::Time end = absl::InfinitePast();
  for (const StreamResult& r : results) {
    ms.insert(ms.end(), r.ms.begin(), r.ms.end());
    queries += r.queries;
    errors += r.errors;
    start = std::min(start, r.start);
    end = std::max(end, r.last_response);
    if (r.errors > 0 && first_error->empty()) *first_error = r.first_error;
  }
  LineStats stats =
      Summarize(std::move(ms), queries, absl::ToDoubleSeconds(end - start));
  stats.errors = errors;
  return stats;
}

struct Options {
  double seconds = 3;
  int max_requests = 100000;
  std::string tmp_dir;
  uint64_t seed = 42;
  int cores = 1;
  size_t w4_rows = 0;
  std::string w4_dir;  // W4's parent directory (--w4_dir, else tmp_dir)
};

void PrintHeader() {
  std::printf("  %-34s %10s %9s %9s %7s %8s %8s\n", "line", "q/s", "p50 ms",
              "p99 ms", "calls", "x (a)", "x bound");
}

void PrintLine(const std::string& name, const LineStats& s, double ref_qps,
               double bound_qps) {
  std::printf(
      "  %-34s %10.1f %9.3f %9.3f %7zu %8.3f %8.3f%s\n", name.c_str(), s.qps,
      s.p50_ms, s.p99_ms, s.calls, ref_qps > 0 ? s.qps / ref_qps : 0,
      bound_qps > 0 ? s.qps / bound_qps : 0, s.errors > 0 ? "  ERRORS" : "");
  std::fflush(stdout);
}

// (h): the same query mined in-process (Miner::Mine, B=1, this thread)
// and then sent over the service (one Mine stream, one request in flight),
// alternately, so that both see the same machine at the same moment.
struct Interleaved {
  size_t pairs = 0;
  double miner_p50 = 0;
  double service_p50 = 0;
  double difference_p50 = 0;  // median of (service - in-process) per pair
};

Interleaved RunInterleaved(const std::string& target,
                           const IndexVersion& version, const QueryPool& pool,
                           double seconds) {
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  std::unique_ptr<pb::Miner::Stub> stub = pb::Miner::NewStub(channel);
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<pb::MineRequest, pb::MineResponse>>
      stream = stub->Mine(&context);
  const Miner miner;
  std::vector<double> local;
  std::vector<double> remote;
  std::vector<double> difference;
  pb::MineRequest request;
  pb::MineResponse response;
  const absl::Time deadline = absl::Now() + absl::Seconds(2 * seconds);
  for (size_t i = 0; absl::Now() < deadline || i < 2; ++i) {
    const size_t q = i % kQueryPool;
    MiningQuery query;
    query.embedding =
        absl::MakeConstSpan(pool.embeddings.data() + q * pool.dim, pool.dim);
    query.positive_ids = absl::MakeConstSpan(&pool.positives[q], 1);
    const MiningOptions options = BenchMiningOptions(i);
    absl::Time t = absl::Now();
    const bool mined =
        miner.Mine(version, absl::MakeConstSpan(&query, 1), options).ok();
    const double in_process = absl::ToDoubleMilliseconds(absl::Now() - t);

    request.Clear();
    request.set_request_id(i + 1);
    pb::MiningOptions* o = request.mutable_options();
    o->set_num_negatives(kNumNegatives);
    o->set_range_max(kRangeMax);
    o->set_seed(i);
    pb::Query* pq = request.add_queries();
    pq->set_embedding_bytes(
        reinterpret_cast<const char*>(pool.embeddings.data() + q * pool.dim),
        pool.dim * sizeof(float));
    pq->add_positive_ids(pool.positives[q]);
    t = absl::Now();
    if (!stream->Write(request) || !stream->Read(&response)) break;
    const double service = absl::ToDoubleMilliseconds(absl::Now() - t);
    if (!mined || response.error().code() != 0) continue;
    if (i == 0) continue;  // warm-up
    local.push_back(in_process);
    remote.push_back(service);
    difference.push_back(service - in_process);
  }
  stream->WritesDone();
  (void)stream->Finish();
  Interleaved out;
  out.pairs = local.size();
  auto median = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  out.miner_p50 = median(local);
  out.service_p50 = median(remote);
  out.difference_p50 = median(difference);
  return out;
}

// (l) One scan precision's figures.
struct ScanModeFigures {
  ScanPrecision precision = ScanPrecision::kF32;
  bool measured = false;         // false: this CPU does not run it natively
  double miner_qps = 0;          // Miner B=256
  double miner_p50 = 0;          // Miner B=1
  double service_qps = 0;        // the service, S=8 B=16
  size_t compared = 0;           // queries mined at f32 and at this precision
  size_t identical = 0;          // of those, with the same negative ids
  double recall = 0;             // recall@10 of f32's negatives
  VectorIndex::ScanStats stats;  // over this precision's lines
};

// The float32 bound at the AVX-512 rate (j), the reduced instructions'
// peaks (k) and each scan precision's lines (l).
struct ScanFigures {
  double unpinned_bound_qps[2] = {0, 0};  // (j) at the start and at the end
  std::optional<double> peak_qps[2];      // (k) bf16, int8
  std::vector<ScanModeFigures> modes;     // (l) f32, bf16, int8
  // (m): f32, then int8 (when measured), on rows sharing a direction.
  std::vector<ScanModeFigures> shared;
};

// What the summary reports for one workload.
struct Summary {
  std::string workload;
  double faiss_qps[2] = {0, 0};  // (a) at the start and at the end
  double bound_qps[2] = {0, 0};  // (d) at the start and at the end
  double service_qps = 0;        // (c) S=8 B=16
  double miner_p50 = 0;          // (b) B=1
  double service_p50 = 0;        // (c) S=1 B=1, 1 in flight
  double round_trip_p50 = 0;     // (e)
  double cold_trip_p50 = 0;      // (i)
  double faiss_single_p50 = 0;   // (a) B=1
  Interleaved interleaved;       // (h)
  ScanFigures scan;              // (j), (k), (l)
  // IVF, per mode (0: one positive excluded; 1: own class excluded too):
  // the setting whose Miner (f) was fastest of those whose recall reaches
  // the mode's target.
  bool ivf = false;
  struct IvfResult {
    bool found = false;
    IvfSetting setting;
    double recall = 0;
    double speedup = 0;          // IVF Miner B=256 q/s over exact Miner B=256
    double service_speedup = 0;  // (g) S=8 B=16, IVF over exact (c)
    double best_recall = 0;      // the best of all settings, when none did
  } ivf_modes[2];
};

// (d) measured a few times; the best is the bound (the least flattering).
double MeasureBound(const Workload& w, const Options& opt, double* gflops) {
  openblas_set_num_threads(1);
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    best = std::max(best,
                    SgemmGflops(w.dim, opt.cores, std::min(0.5, opt.seconds)));
  }
  openblas_set_num_threads(opt.cores);
  omp_set_num_threads(opt.cores);
  *gflops = best;
  return best * 1e9 /
         (2.0 * static_cast<double>(w.n) * static_cast<double>(w.dim));
}

// What --sgemm_only=dim prints: (d)'s measurement alone.
int SgemmOnlyMain(uint32_t dim, const Options& opt) {
  Workload w;
  w.n = 1;
  w.dim = dim;
  double gflops = 0;
  MeasureBound(w, opt, &gflops);
  // MeasureUnpinnedSgemm reads this line.
  std::printf("sgemm_only %.3f GFLOP/s on core %s\n", gflops,
              openblas_get_corename());
  return 0;
}

// The environment variables that hold OpenBLAS to its AVX2 kernels here.
constexpr absl::string_view kOpenblasPins[] = {"OPENBLAS_CORETYPE",
                                               "OPENBLAS_L2_SIZE"};

// (j) (d)'s measurement at the rate OpenBLAS reaches when free to pick its
// kernels (AVX-512 where the CPU has it). OpenBLAS reads kOpenblasPins when
// it loads, so this runs the bench again (--sgemm_only) without them and
// reads what it prints. Sets `corename` to the kernels it chose.
absl::StatusOr<double> MeasureUnpinnedSgemm(size_t dim, const Options& opt,
                                            std::string* corename) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const bool pinned =
        std::any_of(std::begin(kOpenblasPins), std::end(kOpenblasPins),
                    [&](absl::string_view name) {
                      return entry.size() > name.size() &&
                             entry.substr(0, name.size()) == name &&
                             entry[name.size()] == '=';
                    });
    if (!pinned) env_strings.emplace_back(entry);
  }
  std::vector<std::string> arg_strings = {
      "hardneg-bench", "--sgemm_only=" + std::to_string(dim),
      "--cell_seconds=" + std::to_string(opt.seconds)};
  auto pointers = [](std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (std::string& str : strings) out.push_back(str.data());
    out.push_back(nullptr);
    return out;
  };
  std::vector<char*> env = pointers(env_strings);
  std::vector<char*> args = pointers(arg_strings);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(std::string("pipe2: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr,
                                  args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  std::string output;
  if (spawned == 0) {
    char buffer[256];
    ssize_t got;
    while ((got = read(fds[0], buffer, sizeof buffer)) > 0 ||
           (got < 0 && errno == EINTR)) {
      if (got > 0) output.append(buffer, static_cast<size_t>(got));
    }
  }
  close(fds[0]);
  if (spawned != 0) {
    return absl::InternalError(std::string("posix_spawn /proc/self/exe: ") +
                               std::strerror(spawned));
  }
  int wait_status = 0;
  while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
  }
  double gflops = 0;
  char name[64] = "";
  if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0 ||
      std::sscanf(output.c_str(), "sgemm_only %lf GFLOP/s on core %63s",
                  &gflops, name) != 2) {
    return absl::InternalError(
        "hardneg-bench --sgemm_only=" + std::to_string(dim) + " printed \"" +
        output + "\" (wait status " + std::to_string(wait_status) + ")");
  }
  *corename = name;
  return gflops;
}

// The ids of the negatives each of the first `count` queries gets from
// `version` (B = 256, the bench's mining options).
std::vector<std::vector<int64_t>> MineIds(const IndexVersion& version,
                                          const QueryPool& pool, size_t count,
                                          const MineSettings& settings) {
  const Miner miner;
  std::vector<std::vector<int64_t>> ids;
  for (size_t q0 = 0; q0 < count; q0 += kFaissBatch) {
    std::vector<MiningQuery> queries;
    for (size_t q = q0; q < std::min(count, q0 + kFaissBatch); ++q) {
      MiningQuery& query = queries.emplace_back();
      query.embedding =
          absl::MakeConstSpan(pool.embeddings.data() + q * pool.dim, pool.dim);
      query.positive_ids = absl::MakeConstSpan(&pool.positives[q], 1);
      if (settings.exclude_class) query.label = pool.labels[q];
    }
    MiningOptions options = BenchMiningOptions(0);
    options.nprobe = settings.ivf.nprobe;
    options.ivf_min_candidates = settings.ivf.min_candidates;
    absl::StatusOr<std::vector<MiningResult>> results =
        miner.Mine(version, queries, options);
    for (size_t i = 0; i < queries.size(); ++i) {
      std::vector<int64_t>& out = ids.emplace_back();
      if (!results.ok()) continue;
      for (const MinedNegative& negative : (*results)[i].negatives) {
        out.push_back(negative.id);
      }
    }
  }
  return ids;
}

// Mean over queries of |got & want| / |want|.
double Recall(const std::vector<std::vector<int64_t>>& got,
              const std::vector<std::vector<int64_t>>& want) {
  double sum = 0;
  for (size_t q = 0; q < want.size(); ++q) {
    size_t hits = 0;
    for (int64_t id : got[q]) {
      hits += std::count(want[q].begin(), want[q].end(), id);
    }
    sum += want[q].empty() ? 1.0
                           : static_cast<double>(hits) /
                                 static_cast<double>(want[q].size());
  }
  return want.empty() ? 0 : sum / static_cast<double>(want.size());
}

std::string CellName(const CellConfig& cfg) {
  return "(c) S=" + std::to_string(cfg.streams) +
         " B=" + std::to_string(cfg.batch) + " in-flight " +
         std::to_string(cfg.in_flight);
}

// Starts a server on `manager` (loopback, a free port) of `shape`.
absl::StatusOr<std::unique_ptr<HardnegServer>> StartServer(
    IndexManager* manager, const ServerShape& shape = {}) {
  ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  server_options.threads = shape.threads;
  if (shape.max_batch != 0) {
    server_options.service.max_batch_queries = shape.max_batch;
  }
  server_options.service.max_batch_delay = shape.max_batch_delay;
  server_options.service.busy_batch_delay = shape.busy_batch_delay;
  return HardnegServer::Start(server_options, manager);
}

// The server flags of `shape` that are not the defaults, after a space
// (empty when none).
std::string ShapeName(const ServerShape& shape) {
  const ServerShape defaults;
  std::string name;
  if (shape.threads != defaults.threads) {
    absl::StrAppend(&name, " --threads ", shape.threads);
  }
  if (shape.max_batch != defaults.max_batch) {
    absl::StrAppend(&name, " --max_batch ", shape.max_batch);
  }
  if (shape.max_batch_delay != defaults.max_batch_delay) {
    absl::StrAppend(&name, " --max_batch_delay_us ",
                    absl::ToInt64Microseconds(shape.max_batch_delay));
  }
  if (shape.busy_batch_delay != defaults.busy_batch_delay) {
    absl::StrAppend(&name, " --busy_batch_delay_us ",
                    absl::ToInt64Microseconds(shape.busy_batch_delay));
  }
  return name;
}

// The exact (Flat) references of one IVF mode.
struct ExactReference {
  std::vector<std::vector<int64_t>> ids;  // negatives of kRecallQueries
  double miner_qps = 0;                   // Miner B=256
  double service_qps = 0;                 // (c) S=8 B=16
};

std::string SettingName(const IvfSetting& setting) {
  return "nprobe=" + std::to_string(setting.nprobe) + " min_cand=" +
         (setting.min_candidates == 0 ? std::string("auto")
                                      : std::to_string(setting.min_candidates));
}

// The service on `manager`'s version, S=8 B=16 with `settings`, printed
// as line `label` (the (g) and (l) lines).
absl::StatusOr<LineStats> RunServiceLine(
    IndexManager* manager, const Options& opt, const QueryPool& pool,
    const MineSettings& settings, const std::string& label, double ref_qps,
    double bound_qps, const ServerShape& shape = {}) {
  absl::StatusOr<std::unique_ptr<HardnegServer>> server =
      StartServer(manager, shape);
  if (!server.ok()) return server.status();
  CellConfig cfg;
  cfg.streams = 8;
  cfg.batch = 16;
  cfg.seconds = opt.seconds;
  cfg.max_requests = opt.max_requests;
  cfg.settings = settings;
  std::string first_error;
  const LineStats s = RunCell("127.0.0.1:" + std::to_string((*server)->port()),
                              cfg, pool, &first_error);
  PrintLine(label, s, ref_qps, bound_qps);
  if (!first_error.empty()) {
    std::printf("    first error: %s\n", first_error.c_str());
  }
  (*server)->Shutdown(absl::Seconds(5));
  return s;
}

// IVF on `w`: builds kIvfFactory, then per mode (exact[0]: one positive
// excluded; exact[1]: own class excluded too) and per setting the Miner's
// q/s and recall@10 of negatives against the exact answer, then the
// service at the fastest setting (by the Miner) that reaches the mode's
// recall target, alternating with the exact service on `exact_manager`.
absl::Status RunIvf(const Workload& w, const Options& opt,
                    const std::string& checkpoints, const QueryPool& pool,
                    const ExactReference (&exact)[2],
                    IndexManager* exact_manager, double ref_qps,
                    double bound_qps, Summary* summary) {
  IndexManagerOptions options;
  options.checkpoints_dir = checkpoints;
  options.build.factory = kIvfFactory;
  options.build_threads = opt.cores;
  IndexManager manager(options);
  const absl::Time t = absl::Now();
  HARDNEG_RETURN_IF_ERROR(manager.LoadNewest());
  std::shared_ptr<const IndexVersion> version = manager.Current();
  if (version == nullptr) return absl::InternalError("LoadNewest served none");
  std::printf(
      "  %s built in %.1f s (trained on %zu of %zu rows; lists scanned at "
      "%s: int8 or bf16 when the lists are split into cells by label, "
      "index/ivf_probe.h); recall@%u: the share of the exact negatives "
      "(Flat at --scan auto, same options and exclusions) that IVF "
      "returns, over %zu queries\n",
      kIvfFactory, absl::ToDoubleSeconds(absl::Now() - t),
      std::min<size_t>(w.n, IndexBuildOptions{}.max_train_rows), w.n,
      ScanPrecisionName(version->index().scan()), kNumNegatives,
      exact[0].ids.size());
  std::fflush(stdout);
  summary->ivf = true;
  for (int mode = 0; mode < 2; ++mode) {
    const bool exclude_class = mode == 1;
    const double target =
        exclude_class ? kIvfClassRecallTarget : kIvfRecallTarget;
    Summary::IvfResult& result = summary->ivf_modes[mode];
    std::printf("  IVF, %s:\n", exclude_class
                                    ? "own class (query label) excluded"
                                    : "one positive excluded");
    for (const IvfSetting& setting : kIvfSettings) {
      const MineSettings settings{setting, exclude_class};
      const double recall =
          Recall(MineIds(*version, pool, exact[mode].ids.size(), settings),
                 exact[mode].ids);
      const LineStats s =
          RunMiner(*version, pool, kFaissBatch, settings, opt.seconds, 100000);
      PrintLine("(f) IVF " + SettingName(setting), s, ref_qps, bound_qps);
      std::printf("    recall@%u %.4f, %.2fx exact Miner B=%zu\n",
                  kNumNegatives, recall, s.qps / exact[mode].miner_qps,
                  kFaissBatch);
      std::fflush(stdout);
      result.best_recall = std::max(result.best_recall, recall);
      const double speedup = s.qps / exact[mode].miner_qps;
      if (recall >= target && (!result.found || speedup > result.speedup)) {
        result.found = true;
        result.setting = setting;
        result.recall = recall;
        result.speedup = speedup;
      }
    }
    if (!result.found) continue;
    // The exact (c) line ran minutes before, and the machine drifts by
    // 20-30% over minutes: IVF and the exact service alternate here, and
    // the ratio is of the better of each (the exact one also counting
    // (c)'s first measurement).
    const ServerShape& ivf_shape = kIvfServerShape[mode][0];
    const ServerShape& exact_shape = kIvfServerShape[mode][1];
    const std::string name = "(g) IVF " + SettingName(result.setting) +
                             " S=8 B=16" + ShapeName(ivf_shape);
    double ivf_qps = 0;
    double exact_qps = exact[mode].service_qps;
    for (int round = 0; round < kIvfServiceRounds; ++round) {
      absl::StatusOr<LineStats> s = RunServiceLine(
          &manager, opt, pool, {result.setting, exclude_class},
          round == 0 ? name : name + " again", ref_qps, bound_qps, ivf_shape);
      if (!s.ok()) return s.status();
      ivf_qps = std::max(ivf_qps, s->qps);
      if (round + 1 == kIvfServiceRounds) break;
      absl::StatusOr<LineStats> e = RunServiceLine(
          exact_manager, opt, pool, {{}, exclude_class},
          std::string("(c) exact again, ") +
              (exclude_class ? "own class excluded" : "one positive excluded") +
              ShapeName(exact_shape),
          ref_qps, bound_qps, exact_shape);
      if (!e.ok()) return e.status();
      exact_qps = std::max(exact_qps, e->qps);
    }
    result.service_speedup = ivf_qps / exact_qps;
    std::printf(
        "    %.2fx the exact service S=8 B=16 with the same exclusions "
        "(%.1f / %.1f q/s: the better of the alternated lines each)\n",
        result.service_speedup, ivf_qps, exact_qps);
  }
  return absl::OkStatus();
}

// The scan precisions (l) measures, f32 first: the others are compared
// with it.
constexpr ScanPrecision kScanModes[] = {
    ScanPrecision::kF32, ScanPrecision::kBf16, ScanPrecision::kInt8};
// Queries whose negatives are compared, each precision against f32.
constexpr size_t kAgreementQueries = 512;

// What a CPU needs to run `precision` natively.
const char* ScanFeatures(ScanPrecision precision) {
  switch (precision) {
    case ScanPrecision::kBf16:
      return "AVX-512 F/BW and AVX512_BF16";
    case ScanPrecision::kInt8:
      return "AVX-512 F/BW and AVX512_VNNI";
    default:
      return "nothing";
  }
}

// What (j) measured: OpenBLAS picks its AVX-512 kernels unpinned only
// where the CPU has AVX-512.
const char* UnpinnedRate() {
  return CpuFeatures().avx512f
             ? "the AVX-512 rate"
             : "OpenBLAS's unpinned rate (this CPU has no AVX-512)";
}

// The floating-point operations of one query's exact scan: 2 N d.
double QueryFlops(const Workload& w) {
  return 2.0 * static_cast<double>(w.n) * static_cast<double>(w.dim);
}

// (j) and (k), printed beside (d): the float32 bound at the rate OpenBLAS
// reaches unpinned, and the bounds of the bf16 and int8 instructions.
absl::Status MeasureScanBounds(const Workload& w, const Options& opt,
                               ScanFigures* out) {
  std::string corename;
  absl::StatusOr<double> unpinned = MeasureUnpinnedSgemm(w.dim, opt, &corename);
  if (!unpinned.ok()) return unpinned.status();
  out->unpinned_bound_qps[0] = *unpinned * 1e9 / QueryFlops(w);
  std::string pins;
  for (absl::string_view name : kOpenblasPins) {
    const char* value = std::getenv(std::string(name).c_str());
    absl::StrAppend(&pins, pins.empty() ? "" : ", ", name, "=",
                    value != nullptr ? value : "(unset)");
  }
  std::printf(
      "  (j) the same at %s, in a child process without %s "
      "(OpenBLAS core %s there, %s in (d)): %.1f GFLOP/s -> bound %.1f "
      "q/s\n",
      UnpinnedRate(), pins.c_str(), corename.c_str(), openblas_get_corename(),
      *unpinned, out->unpinned_bound_qps[0]);
  const ScanPrecision reduced[] = {ScanPrecision::kBf16, ScanPrecision::kInt8};
  const char* instruction[] = {"vdpbf16ps (bf16)", "vpdpbusd (int8)"};
  for (size_t i = 0; i < 2; ++i) {
    const std::optional<double> gops = bench::InstructionPeakGops(
        reduced[i], opt.cores, std::min(0.25, opt.seconds));
    if (!gops.has_value()) {
      std::printf("  (k) %s peak: n/a (this CPU lacks %s)\n", instruction[i],
                  ScanFeatures(reduced[i]));
      continue;
    }
    out->peak_qps[i] = *gops * 1e9 / QueryFlops(w);
    std::printf(
        "  (k) %s peak, zmm, %d independent accumulators on %d cores at "
        "once (best of 3): %.1f GFLOP/s-equivalent (%d an instruction) -> "
        "bound %.1f q/s\n",
        instruction[i], bench::kPeakAccumulators, opt.cores, *gops,
        bench::OpsPerInstruction(reduced[i]), *out->peak_qps[i]);
  }
  std::fflush(stdout);
  return absl::OkStatus();
}

// (l) Each of kScanModes the CPU runs natively, on its own IndexVersion
// (IndexManager over `checkpoints` with build.scan set): the Miner at
// B=256 and B=1, the service at S=8 B=16, the negatives of
// kAgreementQueries queries against f32's, and the share of the reduced
// pass's queries that fell back to float32 over these lines.
// A Flat index over `checkpoints` at `precision`.
IndexManagerOptions FlatOptions(const std::string& checkpoints,
                                ScanPrecision precision, const Options& opt) {
  IndexManagerOptions options;
  options.checkpoints_dir = checkpoints;
  options.build.scan = precision;
  options.build_threads = opt.cores;
  return options;
}

// Loads `manager`'s newest version and returns it.
absl::StatusOr<std::shared_ptr<const IndexVersion>> LoadCurrent(
    IndexManager& manager) {
  HARDNEG_RETURN_IF_ERROR(manager.LoadNewest());
  std::shared_ptr<const IndexVersion> version = manager.Current();
  if (version == nullptr) return absl::InternalError("LoadNewest served none");
  return version;
}

// What MineAtScan leaves for Agreement: the scan counters before it, and
// the negatives of kAgreementQueries queries.
struct MinedAtScan {
  VectorIndex::ScanStats before;
  std::vector<std::vector<int64_t>> ids;
};

// The negatives of kAgreementQueries queries on `version`, then its Miner
// B=256, printed as `label` + " Miner B=256" and set in `fig`.
MinedAtScan MineAtScan(const IndexVersion& version, const QueryPool& pool,
                       const Options& opt, const std::string& label,
                       double ref_qps, double bound_qps, ScanModeFigures* fig) {
  fig->measured = true;
  MinedAtScan mined;
  mined.before = version.index().scan_stats();
  mined.ids = MineIds(version, pool, kAgreementQueries, MineSettings{});
  const LineStats batched =
      RunMiner(version, pool, kFaissBatch, MineSettings{}, opt.seconds, 100000);
  PrintLine(label + " Miner B=256", batched, ref_qps, bound_qps);
  fig->miner_qps = batched.qps;
  return mined;
}

// The scan counters since `before`, and how `ids` (this precision's
// negatives) agree with f32's: for f32 itself, `ids` become `f32_ids`.
// True when `fig` is f32's.
bool Agreement(const IndexVersion& version,
               const VectorIndex::ScanStats& before,
               std::vector<std::vector<int64_t>> ids,
               std::vector<std::vector<int64_t>>* f32_ids,
               ScanModeFigures* fig) {
  const VectorIndex::ScanStats after = version.index().scan_stats();
  fig->stats.reduced_queries = after.reduced_queries - before.reduced_queries;
  fig->stats.fallbacks = after.fallbacks - before.fallbacks;
  if (fig->precision == ScanPrecision::kF32) {
    *f32_ids = std::move(ids);
    return true;
  }
  fig->compared = std::min(ids.size(), f32_ids->size());
  for (size_t q = 0; q < fig->compared; ++q) {
    fig->identical += ids[q] == (*f32_ids)[q] ? 1 : 0;
  }
  fig->recall = Recall(ids, *f32_ids);
  return false;
}

absl::Status RunScanModes(const Options& opt, const std::string& checkpoints,
                          const QueryPool& pool, double ref_qps,
                          double bound_qps, ScanFigures* out) {
  std::printf(
      "  (l) each scan precision on its own index (auto resolves to %s on "
      "this CPU); negatives of %zu queries compared with f32's\n",
      ScanPrecisionName(ResolveScanPrecision(ScanPrecision::kAuto)),
      kAgreementQueries);
  std::fflush(stdout);
  std::vector<std::vector<int64_t>> f32_ids;
  for (ScanPrecision precision : kScanModes) {
    ScanModeFigures& fig = out->modes.emplace_back();
    fig.precision = precision;
    const std::string name = ScanPrecisionName(precision);
    if (!CpuRunsScan(precision)) {
      std::printf(
          "  (l) %s skipped: this CPU lacks %s (only the portable kernels "
          "would run)\n",
          name.c_str(), ScanFeatures(precision));
      continue;
    }
    IndexManager manager(FlatOptions(checkpoints, precision, opt));
    absl::StatusOr<std::shared_ptr<const IndexVersion>> loaded =
        LoadCurrent(manager);
    if (!loaded.ok()) return loaded.status();
    const std::shared_ptr<const IndexVersion> version = *std::move(loaded);
    if (version->index().scan() != precision) {
      return absl::InternalError("asked for scan " + name +
                                 ", the index scans at " +
                                 ScanPrecisionName(version->index().scan()));
    }
    MinedAtScan mined = MineAtScan(*version, pool, opt, "(l) " + name, ref_qps,
                                   bound_qps, &fig);
    const LineStats lone =
        RunMiner(*version, pool, 1, MineSettings{}, opt.seconds, 100000);
    PrintLine("(l) " + name + " Miner B=1", lone, ref_qps, bound_qps);
    fig.miner_p50 = lone.p50_ms;
    absl::StatusOr<LineStats> cell =
        RunServiceLine(&manager, opt, pool, MineSettings{},
                       "(l) " + name + " S=8 B=16", ref_qps, bound_qps);
    if (!cell.ok()) return cell.status();
    fig.service_qps = cell->qps;
    if (Agreement(*version, mined.before, std::move(mined.ids), &f32_ids,
                  &fig)) {
      continue;
    }
    std::printf(
        "    %s: negatives identical to f32's for %zu of %zu queries "
        "(recall@%u %.4f); fell back to float32: %llu of %llu queries "
        "(%.3f%%)\n",
        name.c_str(), fig.identical, fig.compared, kNumNegatives, fig.recall,
        static_cast<unsigned long long>(fig.stats.fallbacks),
        static_cast<unsigned long long>(fig.stats.reduced_queries),
        fig.stats.reduced_queries == 0
            ? 0.0
            : 100.0 * static_cast<double>(fig.stats.fallbacks) /
                  static_cast<double>(fig.stats.reduced_queries));
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

// Writes `embeddings` (w.n rows of workload `w`) as checkpoint v1 under
// `checkpoints`: ids 0 .. n - 1, and each row's class as its label.
absl::Status WriteWorkloadCheckpoint(const Workload& w,
                                     const std::string& checkpoints,
                                     const std::vector<float>& embeddings) {
  std::vector<int64_t> ids(w.n);
  std::vector<int64_t> labels(w.n);
  for (size_t i = 0; i < w.n; ++i) {
    ids[i] = static_cast<int64_t>(i);
    // Clustered workloads: the class is the cluster (row i is in cluster
    // i % clusters), so excluding a query's class removes its cluster.
    labels[i] = static_cast<int64_t>(i % (w.clusters == 0 ? 10 : w.clusters));
  }
  CheckpointManifest manifest;
  manifest.name = "v1";
  manifest.step = 1;
  manifest.dim = static_cast<uint32_t>(w.dim);
  manifest.metric = Metric::kInnerProduct;
  return WriteCheckpoint(checkpoints, manifest, embeddings, ids, labels);
}

// (m): how far x = (a u + g) / |a u + g| (u fixed, g the workload's unit
// rows) lies along u: two such rows have a mean cosine of about
// a^2 / (1 + a^2), 0.8 here, as many encoders' embeddings do.
constexpr float kSharedDirection = 2.0f;

// Moves `n` unit rows of `dim` along u = (1, ..., 1) / sqrt(dim) as
// kSharedDirection says, in place.
void ShareDirection(size_t n, size_t dim, float* rows) {
  const auto along = static_cast<float>(kSharedDirection /
                                        std::sqrt(static_cast<double>(dim)));
  for (size_t r = 0; r < n; ++r) {
    float* x = rows + r * dim;
    double sq = 0;
    for (size_t j = 0; j < dim; ++j) {
      x[j] += along;
      sq += static_cast<double>(x[j]) * x[j];
    }
    const auto inverse = static_cast<float>(1 / std::sqrt(sq));
    for (size_t j = 0; j < dim; ++j) x[j] *= inverse;
  }
}

// (m) The exact Miner at f32 and int8 on workload `w`'s rows and queries
// moved to share a direction, where packed values would spend their
// precision on what the rows share unless packed less their mean
// (index/reduced_scan.h).
absl::Status RunSharedDirection(const Workload& w, const Options& opt,
                                const QueryPool& uniform, double ref_qps,
                                double bound_qps, ScanFigures* out) {
  std::printf(
      "  (m) rows and queries sharing a direction (x = (%.0f u + g) / |%.0f u "
      "+ g|, mean cosine about %.1f): each scan precision's Miner, int8 "
      "packing the rows less their mean and the queries less their share "
      "along it\n",
      kSharedDirection, kSharedDirection,
      kSharedDirection * kSharedDirection /
          (1 + kSharedDirection * kSharedDirection));
  std::fflush(stdout);
  absl::StatusOr<TempDir> tmp = TempDir::Create(opt.tmp_dir, "hardneg-bench");
  if (!tmp.ok()) return tmp.status();
  const std::string checkpoints = tmp->path() + "/checkpoints";
  QueryPool pool = uniform;
  ShareDirection(kQueryPool, w.dim, pool.embeddings.data());
  {
    std::vector<float> embeddings(w.n * w.dim);
    SplitMix64 rng(opt.seed);
    FillWorkloadVectors(w, {}, &rng, w.n, embeddings.data());
    ShareDirection(w.n, w.dim, embeddings.data());
    HARDNEG_RETURN_IF_ERROR(
        WriteWorkloadCheckpoint(w, checkpoints, embeddings));
  }
  std::vector<std::vector<int64_t>> f32_ids;
  for (ScanPrecision precision : {ScanPrecision::kF32, ScanPrecision::kInt8}) {
    const std::string name = ScanPrecisionName(precision);
    if (!CpuRunsScan(precision)) {
      std::printf("  (m) %s skipped: this CPU lacks %s\n", name.c_str(),
                  ScanFeatures(precision));
      continue;
    }
    IndexManager manager(FlatOptions(checkpoints, precision, opt));
    absl::StatusOr<std::shared_ptr<const IndexVersion>> loaded =
        LoadCurrent(manager);
    if (!loaded.ok()) return loaded.status();
    const std::shared_ptr<const IndexVersion> version = *std::move(loaded);
    ScanModeFigures& fig = out->shared.emplace_back();
    fig.precision = precision;
    MinedAtScan mined = MineAtScan(*version, pool, opt, "(m) " + name, ref_qps,
                                   bound_qps, &fig);
    if (Agreement(*version, mined.before, std::move(mined.ids), &f32_ids,
                  &fig)) {
      continue;
    }
    std::printf(
        "    %s: %.2fx f32's q/s; negatives identical to f32's for %zu of %zu "
        "queries; fell back to float32: %llu of %llu queries\n",
        name.c_str(),
        out->shared.front().miner_qps > 0
            ? fig.miner_qps / out->shared.front().miner_qps
            : 0.0,
        fig.identical, fig.compared,
        static_cast<unsigned long long>(fig.stats.fallbacks),
        static_cast<unsigned long long>(fig.stats.reduced_queries));
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

absl::Status RunWorkload(const Workload& w, const Options& opt,
                         Summary* summary) {
  summary->workload = w.name;
  std::printf(
      "\n== %s: %zu x %zu, inner product, %s, %u negatives, 1 positive "
      "excluded, window [0, %u) (load average %s) ==\n",
      w.name.c_str(), w.n, w.dim,
      w.clusters == 0
          ? "uniform unit vectors"
          : ("unit vectors in " + std::to_string(w.clusters) + " clusters")
                .c_str(),
      kNumNegatives, kRangeMax, LoadAverage().c_str());
  std::fflush(stdout);

  double gflops = 0;
  const double bound_qps = MeasureBound(w, opt, &gflops);
  summary->bound_qps[0] = bound_qps;
  std::printf(
      "  (d) sgemm 256x4096x%zu: %.1f GFLOP/s on %d cores at once (1 BLAS "
      "thread each, best of 3) -> bound %.1f q/s (2*N*d = %.1f "
      "MFLOP/query)\n",
      w.dim, gflops, opt.cores, bound_qps,
      2.0 * static_cast<double>(w.n) * static_cast<double>(w.dim) / 1e6);
  std::fflush(stdout);
  HARDNEG_RETURN_IF_ERROR(MeasureScanBounds(w, opt, &summary->scan));

  // Data: the checkpoint and FAISS get the same vectors.
  absl::StatusOr<TempDir> tmp = TempDir::Create(opt.tmp_dir, "hardneg-bench");
  if (!tmp.ok()) return tmp.status();
  const std::string checkpoints = tmp->path() + "/checkpoints";
  const std::vector<float> centers = MakeCenters(w, opt.seed);
  const QueryPool pool = MakeQueries(w, centers, opt.seed + 7);
  faiss::IndexFlatIP flat(static_cast<faiss::Index::idx_t>(w.dim));
  {
    absl::Time t = absl::Now();
    std::vector<float> embeddings(w.n * w.dim);
    SplitMix64 rng(opt.seed);
    FillWorkloadVectors(w, centers, &rng, w.n, embeddings.data());
    HARDNEG_RETURN_IF_ERROR(
        WriteWorkloadCheckpoint(w, checkpoints, embeddings));
    flat.add(static_cast<faiss::Index::idx_t>(w.n), embeddings.data());
    std::printf(
        "  data generated, checkpoint written, FAISS index built in "
        "%.1f s (not timed below)\n",
        absl::ToDoubleSeconds(absl::Now() - t));
  }
  PrintHeader();
  const LineStats faiss_stats = RunFaiss(flat, pool, kFaissBatch, opt.seconds);
  PrintLine("(a) faiss IndexFlatIP B=256 k=11", faiss_stats, faiss_stats.qps,
            bound_qps);
  summary->faiss_qps[0] = faiss_stats.qps;
  const double ref_qps = faiss_stats.qps;
  const LineStats faiss_single =
      RunFaiss(flat, pool, 1, std::min(1.0, opt.seconds));
  PrintLine("(a) faiss IndexFlatIP B=1 k=11", faiss_single, ref_qps, bound_qps);
  summary->faiss_single_p50 = faiss_single.p50_ms;

  IndexManagerOptions manager_options;
  manager_options.checkpoints_dir = checkpoints;
  IndexManager manager(manager_options);
  HARDNEG_RETURN_IF_ERROR(manager.LoadNewest());
  std::shared_ptr<const IndexVersion> version = manager.Current();
  if (version == nullptr) return absl::InternalError("LoadNewest served none");

  double miner_qps = 0;  // B=256
  for (size_t batch : {size_t{256}, size_t{16}, size_t{1}}) {
    const LineStats s =
        RunMiner(*version, pool, batch, {}, opt.seconds, 100000);
    PrintLine("(b) Miner::Mine B=" + std::to_string(batch), s, ref_qps,
              bound_qps);
    if (batch == 256) miner_qps = s.qps;
    if (batch == 1) summary->miner_p50 = s.p50_ms;
  }
  // IVF's references: exact[0] with one positive excluded, exact[1] with
  // the query's own class excluded too.
  ExactReference exact[2];
  if (w.ivf) {
    exact[0].miner_qps = miner_qps;
    exact[0].ids = MineIds(*version, pool, kRecallQueries, {});
    const MineSettings own_class{{}, true};
    exact[1].ids = MineIds(*version, pool, kRecallQueries, own_class);
    const LineStats s =
        RunMiner(*version, pool, kFaissBatch, own_class, opt.seconds, 100000);
    PrintLine("(b) Miner::Mine B=256 own class excluded", s, ref_qps,
              bound_qps);
    exact[1].miner_qps = s.qps;
  }

  absl::StatusOr<std::unique_ptr<HardnegServer>> server = StartServer(&manager);
  if (!server.ok()) return server.status();
  const std::string target = "127.0.0.1:" + std::to_string((*server)->port());

  const LineStats trips = RunRoundTrips(target, std::min(1.0, opt.seconds));
  PrintLine("(e) GetIndexInfo round trip", trips, 0, 0);
  summary->round_trip_p50 = trips.p50_ms;

  std::vector<CellConfig> cells;
  {
    CellConfig lone;
    lone.in_flight = 1;
    cells.push_back(lone);
  }
  for (int streams : {1, 8, 32}) {
    for (size_t batch : {size_t{1}, size_t{16}, size_t{256}}) {
      CellConfig cfg;
      cfg.streams = streams;
      cfg.batch = batch;
      cells.push_back(cfg);
    }
  }
  for (CellConfig& cfg : cells) {
    cfg.seconds = opt.seconds;
    cfg.max_requests = opt.max_requests;
    const std::string name = CellName(cfg);
    const double outstanding = static_cast<double>(cfg.streams) *
                               static_cast<double>(cfg.batch) * cfg.in_flight;
    const double drain_s = ref_qps > 0 ? outstanding / ref_qps : 0;
    if (drain_s > 2 * opt.seconds) {
      std::printf(
          "  %-34s skipped: %.0f queries in flight take %.1f s at "
          "(a)'s rate\n",
          name.c_str(), outstanding, drain_s);
      continue;
    }
    std::string first_error;
    const LineStats s = RunCell(target, cfg, pool, &first_error);
    PrintLine(name, s, ref_qps, bound_qps);
    if (!first_error.empty()) {
      std::printf("    first error: %s\n", first_error.c_str());
    }
    if (cfg.streams == 1 && cfg.batch == 1 && cfg.in_flight == 1) {
      summary->service_p50 = s.p50_ms;
    }
    if (cfg.streams == 8 && cfg.batch == 16) summary->service_qps = s.qps;
  }
  if (w.ivf) {
    CellConfig cfg;
    cfg.streams = 8;
    cfg.batch = 16;
    cfg.seconds = opt.seconds;
    cfg.max_requests = opt.max_requests;
    cfg.settings.exclude_class = true;
    std::string first_error;
    const LineStats s = RunCell(target, cfg, pool, &first_error);
    PrintLine("(c) S=8 B=16 own class excluded", s, ref_qps, bound_qps);
    if (!first_error.empty()) {
      std::printf("    first error: %s\n", first_error.c_str());
    }
    exact[0].service_qps = summary->service_qps;
    exact[1].service_qps = s.qps;
  }
  const Interleaved single =
      RunInterleaved(target, *version, pool, opt.seconds);
  std::printf(
      "  (h) one query, in-process then over the service, alternately "
      "(%zu pairs): p50 %.3f ms in-process, %.3f ms service; p50 of the "
      "pairwise differences %.3f ms\n",
      single.pairs, single.miner_p50, single.service_p50,
      single.difference_p50);
  std::fflush(stdout);
  summary->interleaved = single;
  const Miner miner;
  const LineStats cold =
      RunRoundTrips(target, std::min(1.0, opt.seconds), [&](size_t call) {
        const size_t q = call % kQueryPool;
        MiningQuery query;
        query.embedding = absl::MakeConstSpan(
            pool.embeddings.data() + q * pool.dim, pool.dim);
        query.positive_ids = absl::MakeConstSpan(&pool.positives[q], 1);
        (void)miner.Mine(*version, absl::MakeConstSpan(&query, 1),
                         BenchMiningOptions(call));
      });
  PrintLine("(i) round trip after a scan", cold, 0, 0);
  summary->cold_trip_p50 = cold.p50_ms;
  version.reset();
  (*server)->Shutdown(absl::Seconds(5));
  server->reset();

  HARDNEG_RETURN_IF_ERROR(
      RunScanModes(opt, checkpoints, pool, ref_qps, bound_qps, &summary->scan));
  if (w.shared_direction) {
    HARDNEG_RETURN_IF_ERROR(
        RunSharedDirection(w, opt, pool, ref_qps, bound_qps, &summary->scan));
  }

  if (w.ivf) {
    HARDNEG_RETURN_IF_ERROR(RunIvf(w, opt, checkpoints, pool, exact, &manager,
                                   ref_qps, bound_qps, summary));
  }

  // The references again, after the rest: the summary takes the better.
  const LineStats faiss_again = RunFaiss(flat, pool, kFaissBatch, opt.seconds);
  PrintLine("(a) again, at the end", faiss_again, ref_qps, bound_qps);
  summary->faiss_qps[1] = faiss_again.qps;
  summary->bound_qps[1] = MeasureBound(w, opt, &gflops);
  std::printf("  (d) again, at the end: %.1f GFLOP/s -> bound %.1f q/s\n",
              gflops, summary->bound_qps[1]);
  std::string corename;
  absl::StatusOr<double> unpinned = MeasureUnpinnedSgemm(w.dim, opt, &corename);
  if (!unpinned.ok()) return unpinned.status();
  summary->scan.unpinned_bound_qps[1] = *unpinned * 1e9 / QueryFlops(w);
  std::printf("  (j) again, at the end: %.1f GFLOP/s -> bound %.1f q/s\n",
              *unpinned, summary->scan.unpinned_bound_qps[1]);
  return absl::OkStatus();
}

// W4 (issue 13): a corpus the size of MS MARCO's passages, 8.8M x 768
// (27 GB of float32 on a 24 GB machine), served exactly from a snapshot
// with its float32 rows mapped and an int8 first pass on the heap, then
// swapped to a new version while streams keep mining.
constexpr size_t kW4Dim = 768;
// v2 holds v1's rows under these ids plus this offset, so that every
// answer says which version gave it.
constexpr int64_t kW4IdOffset = 1000000000000;
// Queries checked against the brute-force scan of the whole file.
constexpr size_t kW4ExactQueries = 4;
// The streams that keep mining through the swap, and their requests.
constexpr int kW4SwapStreams = 2;
constexpr size_t kW4SwapBatch = 16;
// How long the swap's streams go on once v2 serves, at most, waiting for
// each to be answered by v2 twice.
constexpr absl::Duration kW4AfterSwap = absl::Seconds(120);
// Phases of the memory sampler.
enum W4Phase : size_t { kW4Generate, kW4Load, kW4Mining, kW4Swap };

struct W4Summary {
  bool ran = false;
  size_t rows = 0;
  double bound_qps[2] = {0, 0};           // (d) at the start and at the end
  double unpinned_bound_qps[2] = {0, 0};  // (j) at the start and the end
  double generate_seconds = 0;
  double load_seconds = 0;
  size_t version_heap_bytes = 0;  // v1's MemoryBytes
  LineStats miner;                // Miner B=256
  LineStats service;              // service S=1 B=256, one in flight
  VectorIndex::ScanStats scan;    // over the two lines above
  size_t exact_checked = 0;       // queries x {in-process, service}
  size_t exact_identical = 0;
  // The swap.
  absl::Status swap_status;
  double swap_seconds = 0;
  size_t swap_requests = 0;
  size_t swap_failed = 0;
  size_t swap_v1_answers = 0;
  size_t swap_v2_answers = 0;
  std::string swap_first_error;
  LineStats swap_latency;  // of the swap streams' requests
  size_t v2_checked = 0;
  size_t v2_identical = 0;
  bench::MemorySampler::Extremes memory[4];
  size_t mem_total = 0;
  size_t disk_free_before = 0;
  size_t disk_free_after = 0;
};

// The negatives (id, score) of queries [first, first + count) of `pool`,
// mined in-process on `version` in one batch; empty lists on an error.
std::vector<std::vector<bench::ExactHit>> MineHits(const IndexVersion& version,
                                                   const QueryPool& pool,
                                                   size_t first, size_t count) {
  std::vector<MiningQuery> queries(count);
  for (size_t i = 0; i < count; ++i) {
    const size_t q = first + i;
    queries[i].embedding =
        absl::MakeConstSpan(pool.embeddings.data() + q * pool.dim, pool.dim);
    queries[i].positive_ids = absl::MakeConstSpan(&pool.positives[q], 1);
  }
  const Miner miner;
  absl::StatusOr<std::vector<MiningResult>> results =
      miner.Mine(version, queries, BenchMiningOptions(0));
  std::vector<std::vector<bench::ExactHit>> hits(count);
  if (!results.ok()) {
    std::fprintf(stderr, "Miner::Mine: %s\n",
                 results.status().ToString().c_str());
    return hits;
  }
  for (size_t i = 0; i < count; ++i) {
    for (const MinedNegative& n : (*results)[i].negatives) {
      hits[i].push_back({n.id, n.score});
    }
  }
  return hits;
}

// The request of queries [first, first + count) of `pool`, with the
// bench's mining options.
pb::MineRequest PoolRequest(const QueryPool& pool, size_t first, size_t count,
                            uint64_t request_id) {
  pb::MineRequest request;
  request.set_request_id(request_id);
  pb::MiningOptions* options = request.mutable_options();
  options->set_num_negatives(kNumNegatives);
  options->set_range_min(0);
  options->set_range_max(kRangeMax);
  for (size_t i = 0; i < count; ++i) {
    const size_t q = (first + i) % kQueryPool;
    pb::Query* query = request.add_queries();
    query->set_embedding_bytes(
        reinterpret_cast<const char*>(pool.embeddings.data() + q * pool.dim),
        pool.dim * sizeof(float));
    query->add_positive_ids(pool.positives[q]);
  }
  return request;
}

// As MineHits, over the service at `target` (one request on a new
// stream); sets `version` to the name of the version that answered.
absl::StatusOr<std::vector<std::vector<bench::ExactHit>>> MineHitsOverService(
    const std::string& target, const QueryPool& pool, size_t first,
    size_t count, std::string* version) {
  std::unique_ptr<pb::Miner::Stub> stub = pb::Miner::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  auto stream = stub->Mine(&context);
  pb::MineResponse response;
  const bool answered = stream->Write(PoolRequest(pool, first, count, 1)) &&
                        stream->Read(&response);
  stream->WritesDone();
  const grpc::Status status = stream->Finish();
  if (!answered || !status.ok()) {
    return absl::UnavailableError("Mine stream: " + status.error_message());
  }
  if (response.error().code() != 0) {
    return absl::InternalError("MineError: " + response.error().message());
  }
  *version = response.index().name();
  std::vector<std::vector<bench::ExactHit>> hits(count);
  for (int i = 0; i < response.results_size() && i < static_cast<int>(count);
       ++i) {
    for (const pb::Negative& n : response.results(i).negatives()) {
      hits[static_cast<size_t>(i)].push_back({n.id(), n.score()});
    }
  }
  return hits;
}

// How many of `got`'s lists equal `want`'s (ids shifted by `id_offset`,
// scores bit for bit, same order).
size_t CountIdentical(const std::vector<std::vector<bench::ExactHit>>& got,
                      const std::vector<std::vector<bench::ExactHit>>& want,
                      int64_t id_offset) {
  size_t identical = 0;
  for (size_t q = 0; q < want.size() && q < got.size(); ++q) {
    bool same = got[q].size() == want[q].size();
    for (size_t i = 0; same && i < want[q].size(); ++i) {
      same = got[q][i].id == want[q][i].id + id_offset &&
             got[q][i].score == want[q][i].score;
    }
    if (!same) {
      std::printf("    query %zu differs from the exact answer:", q);
      for (size_t i = 0; i < std::max(got[q].size(), want[q].size()); ++i) {
        if (i < got[q].size()) {
          std::printf(" got %lld/%.9g", static_cast<long long>(got[q][i].id),
                      got[q][i].score);
        }
        if (i < want[q].size()) {
          std::printf(" want %lld/%.9g",
                      static_cast<long long>(want[q][i].id + id_offset),
                      want[q][i].score);
        }
      }
      std::printf("\n");
    }
    identical += same ? 1 : 0;
  }
  return identical;
}

// What the streams that mine through the swap saw, together.
struct SwapTally {
  absl::Mutex mu;
  bool stop ABSL_GUARDED_BY(mu) = false;
  size_t requests ABSL_GUARDED_BY(mu) = 0;
  size_t failed ABSL_GUARDED_BY(mu) = 0;
  std::string first_error ABSL_GUARDED_BY(mu);
  std::unordered_map<std::string, size_t> answers ABSL_GUARDED_BY(mu);
  // Per stream, answers from the new version.
  std::vector<size_t> new_answers ABSL_GUARDED_BY(mu);
  std::vector<double> ms ABSL_GUARDED_BY(mu);
};

// One stream of the swap: requests of kW4SwapBatch queries, one in flight,
// until `tally->stop`; each failure (an error, a wrong result count, a
// broken stream) is counted. `new_version` names v2.
void RunSwapStream(const std::string& target, const QueryPool& pool, int index,
                   const std::string& new_version, SwapTally* tally) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(-1);
  std::unique_ptr<pb::Miner::Stub> stub =
      pb::Miner::NewStub(grpc::CreateCustomChannel(
          target, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext context;
  auto stream = stub->Mine(&context);
  auto fail = [&](const std::string& what) {
    absl::MutexLock lock(&tally->mu);
    ++tally->failed;
    if (tally->first_error.empty()) tally->first_error = what;
  };
  pb::MineResponse response;
  for (uint64_t id = 1;; ++id) {
    {
      absl::MutexLock lock(&tally->mu);
      if (tally->stop) break;
    }
    const size_t first =
        (static_cast<size_t>(index) * 997 + id * kW4SwapBatch) % kQueryPool;
    const absl::Time t = absl::Now();
    if (!stream->Write(PoolRequest(pool, first, kW4SwapBatch, id)) ||
        !stream->Read(&response)) {
      fail("the stream broke");
      break;
    }
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - t);
    if (response.error().code() != 0) {
      fail("MineError " + std::to_string(response.error().code()) + ": " +
           response.error().message());
    } else if (static_cast<size_t>(response.results_size()) != kW4SwapBatch) {
      fail("wrong number of results");
    }
    absl::MutexLock lock(&tally->mu);
    ++tally->requests;
    tally->ms.push_back(ms);
    ++tally->answers[response.index().name()];
    if (response.index().name() == new_version) {
      ++tally->new_answers[static_cast<size_t>(index)];
    }
  }
  stream->WritesDone();
  const grpc::Status status = stream->Finish();
  if (!status.ok()) fail("Finish: " + status.error_message());
}

// Writes the checkpoint of v2 under `checkpoints`: v1's vectors (a hard
// link: no disk), its ids plus kW4IdOffset, a higher step.
absl::Status WriteW4Checkpoint(const std::string& checkpoints,
                               const std::string& v1_snapshot,
                               const std::vector<int64_t>& v1_ids) {
  const std::string dir = checkpoints + "/w4-v2";
  if (mkdir(dir.c_str(), 0755) != 0) {
    return absl::InternalError(dir + ": mkdir: " + std::strerror(errno));
  }
  const std::string vectors = v1_snapshot + "/vectors.npy";
  const std::string embeddings = dir + "/embeddings-00000.npy";
  if (link(vectors.c_str(), embeddings.c_str()) != 0) {
    return absl::InternalError("link " + vectors + " " + embeddings + ": " +
                               std::strerror(errno));
  }
  std::vector<int64_t> ids(v1_ids);
  for (int64_t& id : ids) id += kW4IdOffset;
  HARDNEG_RETURN_IF_ERROR(WriteNpyInt64(dir + "/ids-00000.npy", ids));
  // The manifest last: it makes the checkpoint complete.
  return WriteFileAtomically(
      dir + "/manifest.json",
      absl::StrFormat(
          "{\"name\": \"w4-v2\", \"step\": 2, \"dim\": %d, \"metric\": "
          "\"inner_product\", \"shards\": [{\"embeddings\": "
          "\"embeddings-00000.npy\", \"ids\": \"ids-00000.npy\"}]}\n",
          kW4Dim));
}

double GiB(size_t bytes) { return static_cast<double>(bytes) / bench::kGiB; }

// Runs W4 into `out`. Everything it writes is under one scratch directory,
// removed on return, whatever the outcome.
absl::Status RunW4Phases(const Options& opt, W4Summary* out) {
  Workload w;
  w.name = "W4";
  w.n = opt.w4_rows;
  w.dim = kW4Dim;
  out->rows = w.n;
  out->ran = true;
  out->mem_total = bench::ReadProcKiB("/proc/meminfo", "MemTotal");
  const size_t matrix_bytes = w.n * w.dim * sizeof(float);
  std::printf(
      "\n== W4: %zu x %zu, inner product, uniform unit vectors (%.1f GiB of "
      "float32; this machine has %.1f GiB), served from a snapshot at scan "
      "int8 with the float32 rows mapped (load average %s) ==\n",
      w.n, w.dim, GiB(matrix_bytes), GiB(out->mem_total),
      LoadAverage().c_str());
  std::fflush(stdout);
  double gflops = 0;
  out->bound_qps[0] = MeasureBound(w, opt, &gflops);
  std::printf(
      "  (d) sgemm 256x4096x%zu: %.1f GFLOP/s -> float32 bound %.2f q/s "
      "(2*N*d = %.1f GFLOP/query)\n",
      w.dim, gflops, out->bound_qps[0], QueryFlops(w) / 1e9);
  std::string corename;
  absl::StatusOr<double> unpinned = MeasureUnpinnedSgemm(w.dim, opt, &corename);
  if (!unpinned.ok()) return unpinned.status();
  out->unpinned_bound_qps[0] = *unpinned * 1e9 / QueryFlops(w);
  std::printf("  (j) at %s (core %s): %.1f GFLOP/s -> %.2f q/s\n",
              UnpinnedRate(), corename.c_str(), *unpinned,
              out->unpinned_bound_qps[0]);

  const std::string& parent = opt.w4_dir;
  // v1's rows, the server's copy of v2's, ids and slack.
  const size_t needed =
      2 * matrix_bytes + 4 * w.n * sizeof(int64_t) + (size_t{1} << 30);
  out->disk_free_before = bench::DiskFreeBytes(parent);
  if (out->disk_free_before < needed) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "W4 needs about %.1f GiB free under %s (v1's rows, and the server's "
        "copy of v2's), and %.1f GiB are; see --w4_dir and --w4_rows",
        GiB(needed), parent, GiB(out->disk_free_before)));
  }
  absl::StatusOr<TempDir> tmp = TempDir::Create(parent, "hardneg-w4");
  if (!tmp.ok()) return tmp.status();
  const std::string data_dir = tmp->path() + "/data";
  const std::string checkpoints = tmp->path() + "/checkpoints";
  for (const std::string& dir : {data_dir, checkpoints}) {
    if (mkdir(dir.c_str(), 0755) != 0) {
      return absl::InternalError(dir + ": mkdir: " + std::strerror(errno));
    }
  }
  std::printf(
      "  writing under %s (%.1f GiB free; about %.1f GiB needed at the "
      "peak)\n",
      tmp->path().c_str(), GiB(out->disk_free_before), GiB(needed));
  constexpr absl::Duration kReportEvery = absl::Seconds(10);
  bench::MemorySampler sampler(absl::Milliseconds(100),
                               {"generate", "load", "mining", "swap"},
                               tmp->path());

  // v1, written as the server's own snapshot.
  std::atomic<size_t> rows_written{0};
  sampler.SetPhase(kW4Generate, kReportEvery, [&] {
    return absl::StrFormat("%zu of %zu rows written", rows_written.load(), w.n);
  });
  absl::Time t = absl::Now();
  bench::GeneratedSnapshotSpec spec;
  spec.data_dir = data_dir;
  spec.name = "w4-v1";
  spec.rows = w.n;
  spec.dim = w.dim;
  spec.seed = opt.seed;
  absl::StatusOr<std::string> v1_snapshot = bench::WriteGeneratedSnapshot(
      spec, [&](size_t rows) { rows_written = rows; });
  if (!v1_snapshot.ok()) return v1_snapshot.status();
  out->generate_seconds = absl::ToDoubleSeconds(absl::Now() - t);
  std::printf("  v1 generated and written as snapshot %s in %.1f s\n",
              v1_snapshot->c_str(), out->generate_seconds);
  std::fflush(stdout);

  // The service restores it, as after a restart.
  IndexManagerOptions manager_options;
  manager_options.checkpoints_dir = checkpoints;
  manager_options.data_dir = data_dir;
  manager_options.mmap_vectors = true;
  manager_options.build.scan = ScanPrecision::kInt8;
  manager_options.build_threads = opt.cores;
  // The server's own budget: the served version and the one being built
  // must fit in this machine's memory together.
  manager_options.max_index_bytes = out->mem_total;
  IndexManager manager(manager_options);
  sampler.SetPhase(kW4Load, kReportEvery);
  t = absl::Now();
  HARDNEG_RETURN_IF_ERROR(manager.RestoreSnapshot());
  out->load_seconds = absl::ToDoubleSeconds(absl::Now() - t);
  std::shared_ptr<const IndexVersion> version = manager.Current();
  if (version == nullptr) return absl::InternalError("no version restored");
  out->version_heap_bytes = version->MemoryBytes();
  std::printf(
      "  v1 restored in %.1f s: scan %s, float32 rows %s, heap %.2f GiB "
      "(MemoryBytes)\n",
      out->load_seconds, ScanPrecisionName(version->index().scan()),
      version->store().mapped() ? "mapped" : "ON THE HEAP",
      GiB(out->version_heap_bytes));
  std::fflush(stdout);

  const QueryPool pool = MakeQueries(w, {}, opt.seed + 7);
  std::atomic<size_t> rows_scored{0};
  sampler.SetPhase(kW4Mining, kReportEvery, [&] {
    return absl::StrFormat("%zu of %zu rows scored", rows_scored.load(), w.n);
  });
  t = absl::Now();
  absl::StatusOr<std::vector<std::vector<bench::ExactHit>>> exact =
      bench::ExactTopK(
          *v1_snapshot + "/vectors.npy", version->store().ids(),
          absl::MakeConstSpan(pool.embeddings.data(), kW4ExactQueries * w.dim),
          w.dim, absl::MakeConstSpan(pool.positives.data(), kW4ExactQueries),
          kNumNegatives, [&](size_t rows) { rows_scored = rows; });
  if (!exact.ok()) return exact.status();
  std::printf(
      "  exact answers of %zu queries by a brute-force scan in "
      "double of the file: %.1f s\n",
      kW4ExactQueries, absl::ToDoubleSeconds(absl::Now() - t));
  sampler.SetPhase(kW4Mining, kReportEvery);
  out->exact_checked += kW4ExactQueries;
  out->exact_identical +=
      CountIdentical(MineHits(*version, pool, 0, kW4ExactQueries), *exact, 0);

  absl::StatusOr<std::unique_ptr<HardnegServer>> server = StartServer(&manager);
  if (!server.ok()) return server.status();
  const std::string target = "127.0.0.1:" + std::to_string((*server)->port());
  std::string answered_by;
  absl::StatusOr<std::vector<std::vector<bench::ExactHit>>> served =
      MineHitsOverService(target, pool, 0, kW4ExactQueries, &answered_by);
  if (!served.ok()) return served.status();
  out->exact_checked += kW4ExactQueries;
  out->exact_identical += CountIdentical(*served, *exact, 0);
  std::printf(
      "  serves exactly: %zu of %zu answers (in-process and over the "
      "service) identical to the brute-force scan's, ids and scores\n",
      out->exact_identical, out->exact_checked);

  PrintHeader();
  const VectorIndex::ScanStats before = version->index().scan_stats();
  out->miner = RunMiner(*version, pool, kFaissBatch, MineSettings{},
                        opt.seconds, 100000);
  PrintLine("W4 Miner::Mine B=256", out->miner, 0, out->bound_qps[0]);
  CellConfig cfg;
  cfg.streams = 1;
  cfg.batch = kFaissBatch;
  cfg.in_flight = 1;
  // About three requests, whatever a batch takes here.
  cfg.seconds = std::max(opt.seconds, 3 * out->miner.p50_ms / 1000);
  cfg.max_requests = opt.max_requests;
  std::string first_error;
  out->service = RunCell(target, cfg, pool, &first_error);
  PrintLine("W4 service S=1 B=256 in-flight 1", out->service, 0,
            out->bound_qps[0]);
  if (!first_error.empty()) {
    std::printf("    first error: %s\n", first_error.c_str());
  }
  const VectorIndex::ScanStats after = version->index().scan_stats();
  out->scan.reduced_queries = after.reduced_queries - before.reduced_queries;
  out->scan.fallbacks = after.fallbacks - before.fallbacks;
  std::printf("    fell back to float32: %llu of %llu queries\n",
              static_cast<unsigned long long>(out->scan.fallbacks),
              static_cast<unsigned long long>(out->scan.reduced_queries));
  std::fflush(stdout);
  const std::string v1_name = version->info().name;
  version.reset();

  // The swap: v2 arrives as a checkpoint while streams mine.
  sampler.SetPhase(kW4Swap, kReportEvery, [&] {
    const BuildStatus status = manager.build_status();
    return absl::StrFormat("build %s %.0f%%", status.building,
                           100 * status.progress);
  });
  std::vector<int64_t> v1_ids = manager.Current()->store().ids();
  HARDNEG_RETURN_IF_ERROR(WriteW4Checkpoint(checkpoints, *v1_snapshot, v1_ids));
  v1_ids = {};
  SwapTally tally;
  {
    absl::MutexLock lock(&tally.mu);
    tally.new_answers.assign(kW4SwapStreams, 0);
  }
  std::vector<std::thread> streams;
  for (int s = 0; s < kW4SwapStreams; ++s) {
    streams.emplace_back(RunSwapStream, target, std::cref(pool), s, "w4-v2",
                         &tally);
  }
  t = absl::Now();
  out->swap_status = manager.LoadNewest();
  out->swap_seconds = absl::ToDoubleSeconds(absl::Now() - t);
  std::printf(
      "  LoadNewest (copy into data_dir, map, norms, int8 packing, "
      "snapshot) returned %s after %.1f s; serving %s\n",
      out->swap_status.ToString().c_str(), out->swap_seconds,
      manager.Current()->info().name.c_str());
  std::fflush(stdout);
  {
    absl::MutexLock lock(&tally.mu);
    auto each_saw_v2 = [&tally]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(tally.mu) {
      return std::all_of(tally.new_answers.begin(), tally.new_answers.end(),
                         [](size_t n) { return n >= 2; });
    };
    if (out->swap_status.ok()) {
      tally.mu.AwaitWithTimeout(absl::Condition(&each_saw_v2), kW4AfterSwap);
    }
    tally.stop = true;
  }
  for (std::thread& s : streams) s.join();
  {
    absl::MutexLock lock(&tally.mu);
    out->swap_requests = tally.requests;
    out->swap_failed = tally.failed;
    out->swap_first_error = tally.first_error;
    out->swap_v1_answers = tally.answers[v1_name];
    out->swap_v2_answers = tally.answers["w4-v2"];
    out->swap_latency = Summarize(tally.ms, tally.requests * kW4SwapBatch, 0);
  }
  served = MineHitsOverService(target, pool, 0, kW4ExactQueries, &answered_by);
  if (served.ok()) {
    out->v2_checked = kW4ExactQueries;
    out->v2_identical = CountIdentical(*served, *exact, kW4IdOffset);
  }
  std::printf(
      "  during the swap, %d streams of B=%zu (one in flight): %zu requests, "
      "%zu failed%s%s; answered by v1 %zu, by v2 %zu; p50 %.0f ms, p99 %.0f "
      "ms\n  after it, %s answered: %zu of %zu exact answers with v2's ids\n",
      kW4SwapStreams, kW4SwapBatch, out->swap_requests, out->swap_failed,
      out->swap_first_error.empty() ? "" : ", first: ",
      out->swap_first_error.c_str(), out->swap_v1_answers, out->swap_v2_answers,
      out->swap_latency.p50_ms, out->swap_latency.p99_ms, answered_by.c_str(),
      out->v2_identical, out->v2_checked);
  (*server)->Shutdown(absl::Seconds(5));
  server->reset();
  for (size_t phase = 0; phase < 4; ++phase) {
    out->memory[phase] = sampler.extremes(phase);
  }
  out->bound_qps[1] = MeasureBound(w, opt, &gflops);
  std::printf("  (d) again, at the end: %.1f GFLOP/s -> bound %.2f q/s\n",
              gflops, out->bound_qps[1]);
  // (j) too: a busy machine at the start must not flatter the ratio.
  unpinned = MeasureUnpinnedSgemm(w.dim, opt, &corename);
  if (!unpinned.ok()) return unpinned.status();
  out->unpinned_bound_qps[1] = *unpinned * 1e9 / QueryFlops(w);
  std::printf("  (j) again, at the end: %.1f GFLOP/s -> bound %.2f q/s\n",
              *unpinned, out->unpinned_bound_qps[1]);
  std::fflush(stdout);
  return absl::OkStatus();
}

absl::Status RunW4(const Options& opt, W4Summary* out) {
  const absl::Status status = RunW4Phases(opt, out);
  out->disk_free_after = bench::DiskFreeBytes(opt.w4_dir);
  std::printf("  scratch files removed: %.1f GiB free (%.1f GiB before)\n",
              GiB(out->disk_free_after), GiB(out->disk_free_before));
  return status;
}

// Issue 13's W4 targets beside the figures.
void PrintW4Summary(const W4Summary& s) {
  const double bound = std::max(s.bound_qps[0], s.bound_qps[1]);
  const double unpinned =
      std::max(s.unpinned_bound_qps[0], s.unpinned_bound_qps[1]);
  auto verdict = [](bool met) { return met ? "met" : "MISSED"; };
  std::printf("  W4 (%zu x %zu, scan int8, float32 rows mapped)\n", s.rows,
              kW4Dim);
  std::printf(
      "    serves exactly (v1 restored from its snapshot in %.0f s, heap "
      "%.2f GiB): %zu of %zu answers identical to a brute-force double scan "
      "(target: all): %s\n",
      s.load_seconds, GiB(s.version_heap_bytes), s.exact_identical,
      s.exact_checked,
      verdict(s.exact_checked > 0 && s.exact_identical == s.exact_checked));
  std::printf(
      "    swap to v2 (%s, %.1f s) under %d streams: %zu failed of %zu "
      "requests (target: 0), v2's answers exact %zu of %zu: %s\n",
      s.swap_status.ok() ? "served" : s.swap_status.ToString().c_str(),
      s.swap_seconds, kW4SwapStreams, s.swap_failed, s.swap_requests,
      s.v2_identical, s.v2_checked,
      verdict(s.swap_status.ok() && s.swap_failed == 0 &&
              s.swap_v2_answers > 0 && s.v2_checked > 0 &&
              s.v2_identical == s.v2_checked));
  size_t peak = 0;
  size_t min_available = std::numeric_limits<size_t>::max();
  const char* names[] = {"generate", "load", "mining", "swap"};
  std::string phases;
  for (size_t p = 0; p < 4; ++p) {
    peak = std::max(peak, s.memory[p].max_rss_anon);
    min_available = std::min(min_available, s.memory[p].min_mem_available);
    absl::StrAppendFormat(&phases, "%s%s %.2f", p == 0 ? "" : ", ", names[p],
                          GiB(s.memory[p].max_rss_anon));
  }
  std::printf(
      "    peak RssAnon (GiB) %s, of %.1f GiB (target: within it): %s; "
      "MemAvailable at least %.2f GiB; peak RssFile (mapped rows) %.2f GiB\n",
      phases.c_str(), GiB(s.mem_total), verdict(peak < s.mem_total),
      GiB(min_available),
      GiB(std::max(s.memory[kW4Mining].max_rss_file,
                   s.memory[kW4Swap].max_rss_file)));
  std::printf(
      "    B=256: Miner %.2f q/s, p50 %.0f ms; service S=1 %.2f q/s, p50 "
      "%.0f ms = %.2fx the float32 bound ((d) %.2f q/s), %.2fx at %s "
      "((j) %.2f q/s); fell back to float32: %llu of %llu "
      "queries\n",
      s.miner.qps, s.miner.p50_ms, s.service.qps, s.service.p50_ms,
      s.service.qps / bound, bound, s.service.qps / unpinned, UnpinnedRate(),
      unpinned, static_cast<unsigned long long>(s.scan.fallbacks),
      static_cast<unsigned long long>(s.scan.reduced_queries));
  std::printf(
      "    disk: %.1f GiB free before, at least %.1f GiB during, %.1f GiB "
      "after\n",
      GiB(s.disk_free_before),
      GiB(std::min(s.memory[kW4Load].min_disk_free,
                   s.memory[kW4Swap].min_disk_free)),
      GiB(s.disk_free_after));
}

// Issue 13's targets for one workload, on the precision auto resolves to,
// then every precision's figures from (l).
void PrintScanSummary(const Summary& s) {
  const double bound = std::max(s.bound_qps[0], s.bound_qps[1]);
  const double unpinned =
      std::max(s.scan.unpinned_bound_qps[0], s.scan.unpinned_bound_qps[1]);
  const ScanPrecision best = ResolveScanPrecision(ScanPrecision::kAuto);
  const ScanModeFigures* chosen = nullptr;
  for (const ScanModeFigures& m : s.scan.modes) {
    if (m.precision == best && m.measured) chosen = &m;
  }
  const char* best_name = ScanPrecisionName(best);
  if (chosen == nullptr) {
    std::printf("    issue 13: scan %s (auto's choice) was not measured\n",
                best_name);
    return;
  }
  const bool service_target = s.workload == "W1" || s.workload == "W3";
  std::printf(
      "    issue 13, at scan %s (auto's choice on this CPU), from (l):\n"
      "      service S=8 B=16: %.1f q/s = %.3fx the float32 bound as OpenBLAS "
      "runs here ((d) %.1f q/s%s), %.3fx the float32 bound at %s ((j) "
      "%.1f q/s%s)\n",
      best_name, chosen->service_qps, chosen->service_qps / bound, bound,
      service_target ? "; target >= 1.5" : "", chosen->service_qps / unpinned,
      UnpinnedRate(), unpinned, service_target ? "; target >= 1.0" : "");
  // (c) serves the default build options, so its cell measured the same
  // precision earlier: the gap between the two is this machine's drift.
  std::printf(
      "        (the (c) grid's S=8 B=16 cell, also at scan auto, earlier: "
      "%.1f q/s = %.3fx (d), %.3fx (j))\n",
      s.service_qps, s.service_qps / bound, s.service_qps / unpinned);
  if (best == ScanPrecision::kF32) {
    std::printf("      answers: the float32 path itself\n");
  } else {
    std::printf(
        "      answers: negatives identical to f32's for %zu of %zu queries "
        "(%.2f%%; target: all), recall@%u %.4f\n",
        chosen->identical, chosen->compared,
        chosen->compared == 0 ? 0.0
                              : 100.0 * static_cast<double>(chosen->identical) /
                                    static_cast<double>(chosen->compared),
        kNumNegatives, chosen->recall);
  }
  std::printf("      lone query: Miner B=1 p50 %.3f ms%s\n", chosen->miner_p50,
              s.workload == "W1" ? " (target <= 0.6)" : "");
  std::printf(
      "    scan precisions (l): %-5s %12s %10s %12s %7s %7s %7s %10s %9s\n",
      "scan", "Miner B=256", "B=1 p50", "S=8 B=16", "x (d)", "x (j)", "x (k)",
      "identical", "fell back");
  for (const ScanModeFigures& m : s.scan.modes) {
    const char* name = ScanPrecisionName(m.precision);
    if (!m.measured) {
      std::printf("%24s %-5s skipped: this CPU lacks %s\n", "", name,
                  ScanFeatures(m.precision));
      continue;
    }
    std::optional<double> peak;
    if (m.precision == ScanPrecision::kBf16) peak = s.scan.peak_qps[0];
    if (m.precision == ScanPrecision::kInt8) peak = s.scan.peak_qps[1];
    const std::string x_peak =
        peak.has_value() ? absl::StrFormat("%.3f", m.service_qps / *peak) : "-";
    const std::string identical =
        m.precision == ScanPrecision::kF32
            ? "-"
            : absl::StrFormat("%zu/%zu", m.identical, m.compared);
    const std::string fell_back =
        m.precision == ScanPrecision::kF32 || m.stats.reduced_queries == 0
            ? "-"
            : absl::StrFormat("%.3f%%",
                              100.0 * static_cast<double>(m.stats.fallbacks) /
                                  static_cast<double>(m.stats.reduced_queries));
    std::printf("%24s %-5s %12.1f %10.3f %12.1f %7.3f %7.3f %7s %10s %9s\n", "",
                name, m.miner_qps, m.miner_p50, m.service_qps,
                m.service_qps / bound, m.service_qps / unpinned, x_peak.c_str(),
                identical.c_str(), fell_back.c_str());
  }
  const std::vector<ScanModeFigures>& shared = s.scan.shared;
  if (shared.size() == 2 && shared[0].miner_qps > 0) {
    const ScanModeFigures& int8 = shared[1];
    std::printf(
        "      rows sharing a direction (m): int8 Miner B=256 at %.2fx f32's "
        "(%.1f against %.1f q/s), negatives identical for %zu of %zu, fell "
        "back on %llu of %llu queries\n",
        int8.miner_qps / shared[0].miner_qps, int8.miner_qps,
        shared[0].miner_qps, int8.identical, int8.compared,
        static_cast<unsigned long long>(int8.stats.fallbacks),
        static_cast<unsigned long long>(int8.stats.reduced_queries));
  }
}

void PrintSummary(const std::vector<Summary>& summaries, int cores) {
  std::printf(
      "\n== Summary (%d cores; each reference is the better of its two "
      "measurements) ==\n",
      cores);
  for (const Summary& s : summaries) {
    const double faiss = std::max(s.faiss_qps[0], s.faiss_qps[1]);
    const double bound = std::max(s.bound_qps[0], s.bound_qps[1]);
    std::printf("  %s\n", s.workload.c_str());
    if (s.service_qps > 0) {
      std::printf(
          "    service S=8 B=16: %.1f q/s = %.3fx faiss batched (%.1f q/s; "
          "target >= 1.0), %.3fx the sgemm bound (%.1f q/s; target >= 0.7)\n",
          s.service_qps, s.service_qps / faiss, faiss, s.service_qps / bound,
          bound);
    }
    std::printf(
        "    single query p50, the same query alternately (h): in-process "
        "%.3f ms, service %.3f ms, difference %.3f ms (target <= 0.3); a "
        "bare gRPC round trip is %.3f ms back to back (e) and %.3f ms right "
        "after an in-process scan (i)\n",
        s.interleaved.miner_p50, s.interleaved.service_p50,
        s.interleaved.difference_p50, s.round_trip_p50, s.cold_trip_p50);
    std::printf(
        "    (measured apart: Miner B=1 %.3f ms, service S=1 B=1 %.3f ms, "
        "in-process FAISS B=1 %.3f ms)\n",
        s.miner_p50, s.service_p50, s.faiss_single_p50);
    PrintScanSummary(s);
    if (s.ivf) {
      for (int mode = 0; mode < 2; ++mode) {
        const Summary::IvfResult& r = s.ivf_modes[mode];
        const char* what =
            mode == 0 ? "one positive excluded" : "own class excluded";
        const double target =
            mode == 0 ? kIvfRecallTarget : kIvfClassRecallTarget;
        if (!r.found) {
          std::printf(
              "    IVF (%s), %s: no setting tried reached recall@%u %.2f "
              "(best %.4f)\n",
              kIvfFactory, what, kNumNegatives, target, r.best_recall);
          continue;
        }
        std::printf(
            "    IVF (%s), %s: %s, recall@%u %.4f (target >= %.2f) at "
            "%.2fx the exact Miner and %.2fx the exact service (target >= "
            "%.0fx)\n",
            kIvfFactory, what, SettingName(r.setting).c_str(), kNumNegatives,
            r.recall, target, r.speedup, r.service_speedup, kIvfSpeedupTarget);
      }
    }
  }
}

int Main() {
  const bool quick = absl::GetFlag(FLAGS_quick);
  Options opt;
  opt.seconds = absl::GetFlag(FLAGS_cell_seconds);
  if (opt.seconds <= 0) opt.seconds = quick ? 1.0 : 3.0;
  opt.max_requests = std::max(1, absl::GetFlag(FLAGS_max_requests));
  opt.seed = absl::GetFlag(FLAGS_seed);
  opt.cores = CountCores();
  opt.tmp_dir = absl::GetFlag(FLAGS_tmp_dir);
  if (opt.tmp_dir.empty()) opt.tmp_dir = DefaultTmpDir();
  opt.w4_rows = static_cast<size_t>(absl::GetFlag(FLAGS_w4_rows));
  opt.w4_dir = absl::GetFlag(FLAGS_w4_dir);
  if (opt.w4_dir.empty()) opt.w4_dir = opt.tmp_dir;
  const uint32_t sgemm_only = absl::GetFlag(FLAGS_sgemm_only);
  if (sgemm_only > 0) return SgemmOnlyMain(sgemm_only, opt);
  const size_t divisor = quick ? 10 : 1;
  std::string names = absl::GetFlag(FLAGS_workloads);
  if (names.empty()) names = "W1,W2,W3";
  std::vector<Workload> workloads;
  bool w4 = false;
  for (absl::string_view name : absl::StrSplit(names, ',')) {
    if (name == "W4") {
      w4 = true;
    } else if (name == "W1") {
      workloads.push_back({"W1", 100000 / divisor, 128, 0, false, true});
    } else if (name == "W2") {
      workloads.push_back({"W2", 1000000 / divisor, 128, 3000 / divisor, true});
    } else if (name == "W3") {
      workloads.push_back({"W3", 200000 / divisor, 768});
    } else {
      std::fprintf(stderr,
                   "--workloads: unknown workload \"%s\" (W1, W2, W3, W4)\n",
                   std::string(name).c_str());
      return 2;
    }
  }
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  std::printf(
      "hardneg-bench: %d cores usable (%u online), OMP_WAIT_POLICY=%s, %s, "
      "%.1f s a line, up to %d requests in flight a stream\n",
      opt.cores, std::thread::hardware_concurrency(),
      wait_policy != nullptr ? wait_policy : "(unset)",
      quick ? "--quick (n / 10)" : "full sizes", opt.seconds, kInFlight);
  std::printf(
      "  calls: (a), (b) a batch on this thread (default OpenMP threads); (c) "
      "one request, send to response, clients in this process\n");
  std::fflush(stdout);

  std::vector<Summary> summaries;
  for (const Workload& w : workloads) {
    Summary& summary = summaries.emplace_back();
    absl::Status status = RunWorkload(w, opt, &summary);
    if (!status.ok()) {
      std::fprintf(stderr, "%s: %s\n", w.name.c_str(),
                   status.ToString().c_str());
      return 1;
    }
  }
  W4Summary w4_summary;
  if (w4) {
    const absl::Status status = RunW4(opt, &w4_summary);
    if (!status.ok()) {
      std::fprintf(stderr, "W4: %s\n", status.ToString().c_str());
      return 1;
    }
  }
  PrintSummary(summaries, opt.cores);
  if (w4_summary.ran) PrintW4Summary(w4_summary);
  return 0;
}

}  // namespace
}  // namespace hardneg

int main(int argc, char** argv) {
  hardneg::EnsurePassiveOpenMp(argv);
  absl::SetProgramUsageMessage(
      "hardneg-bench [--quick] [--workloads W1,W2,W3,W4] [--cell_seconds S] "
      "[--w4_rows N] [--w4_dir DIR]: "
      "mining throughput and latency against FAISS and the sgemm bound");
  absl::ParseCommandLine(argc, argv);
  return hardneg::Main();
}

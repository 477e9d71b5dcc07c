// hardneg-bench: throughput and latency of hard-negative mining, measured
// in one run against two references on the same machine (issue 4, section
// 6). For each workload (W1 100,000 x 128, W2 1,000,000 x 128, W3 200,000 x
// 768; inner product, random unit float32 vectors; each query excludes one
// positive id and asks for 10 negatives in the window [0, 10)) it prints:
//
//   (d) the sgemm rate (cblas_sgemm 256 x 4096 x dim, one BLAS thread on
//       each core at once), giving the bound q/s = rate / (2 * N * d);
//   (a) in-process faiss::IndexFlatIP search, batches of 256, k = 11: the
//       reference;
//   (b) hardneg's Miner::Mine in-process on the IndexVersion that
//       IndexManager::LoadNewest builds from a checkpoint written here,
//       batches of 256, 16 and 1;
//   (c) the service over loopback: HardnegServer in this process (127.0.0.1,
//       port 0, default threads), S client threads each with its own
//       channel and Mine stream, requests of B queries (embedding_bytes),
//       up to 4 requests in flight per stream; plus S=1, B=1 with one
//       request in flight for the unloaded single-query latency.
//
// Every line gives q/s, p50 and p99 latency of a call (a batch for (a) and
// (b), a request for (c)) and the ratios to (a) and to the bound. A cell of
// (c) is skipped when the queries it keeps in flight would take longer than
// two cell durations to drain at (a)'s rate.
//
// A benchmark, not a test: it asserts nothing and is not registered with
// CTest; its numbers depend on the machine and on what else runs on it.
#include <cblas.h>
#include <faiss/IndexFlat.h>
#include <grpcpp/grpcpp.h>
#include <omp.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "bench_util.h"
#include "checkpoint.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "hardneg/v1/miner.pb.h"
#include "index_manager.h"
#include "index_version.h"
#include "miner.h"
#include "omp_policy.h"
#include "server.h"

ABSL_FLAG(bool, quick, false,
          "Divide every workload's n by 10 and shorten every measurement.");
ABSL_FLAG(std::string, workloads, "",
          "Workloads to run, e.g. W1 or W1,W3 (empty: W1,W2,W3).");
ABSL_FLAG(double, cell_seconds, 0,
          "Measuring time of each line (0: 3 s, or 1 s with --quick).");
ABSL_FLAG(int, max_requests, 100000,
          "Each stream of (c) stops sending after this many requests.");
ABSL_FLAG(std::string, tmp_dir, "",
          "Where the checkpoints are written (empty: $TMPDIR or /tmp).");
ABSL_FLAG(uint64_t, seed, 42, "Seed of the vectors and queries.");

namespace hardneg {
namespace {

using bench::FillUnitVectors;
using bench::LoadAverage;
using bench::SplitMix64;

namespace pb = ::hardneg::v1;

constexpr uint32_t kNumNegatives = 10;
constexpr uint32_t kRangeMax = 10;
constexpr int kFaissK = 11;  // 10 negatives + 1 positive to exclude
constexpr size_t kFaissBatch = 256;
constexpr int kInFlight = 4;
constexpr size_t kQueryPool = 2048;
constexpr int kSgemmM = 256;
constexpr int kSgemmN = 4096;

int CountCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

class TempDir {
 public:
  static absl::StatusOr<TempDir> Create(const std::string& parent) {
    std::string pattern = parent + "/hardneg-bench-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      return absl::ErrnoToStatus(errno, "mkdtemp under " + parent);
    }
    return TempDir(std::move(pattern));
  }
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) {
    other.path_.clear();
  }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

struct Workload {
  std::string name;
  size_t n = 0;
  size_t dim = 0;
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
};

QueryPool MakeQueries(size_t n, size_t dim, uint64_t seed) {
  QueryPool pool;
  pool.dim = dim;
  pool.embeddings.resize(kQueryPool * dim);
  pool.positives.resize(kQueryPool);
  SplitMix64 rng(seed);
  FillUnitVectors(&rng, kQueryPool, dim, pool.embeddings.data());
  for (int64_t& p : pool.positives) p = static_cast<int64_t>(rng.NextBelow(n));
  return pool;
}

// (a) FAISS IndexFlatIP, batches of kFaissBatch, default OpenMP threads.
LineStats RunFaiss(const faiss::IndexFlatIP& index, const QueryPool& pool,
                   double seconds) {
  std::vector<float> distances(kFaissBatch * kFaissK);
  std::vector<faiss::Index::idx_t> labels(kFaissBatch * kFaissK);
  std::vector<double> ms;
  size_t queries = 0;
  size_t offset = 0;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + absl::Seconds(seconds);
  do {
    const absl::Time t = absl::Now();
    index.search(static_cast<faiss::Index::idx_t>(kFaissBatch),
                 pool.embeddings.data() + offset * pool.dim, kFaissK,
                 distances.data(), labels.data());
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    queries += kFaissBatch;
    offset = (offset + kFaissBatch) % kQueryPool;
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
                   size_t batch, double seconds, size_t max_calls) {
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
    }
    offset = (offset + batch) % kQueryPool;
    const MiningOptions options = BenchMiningOptions(call++);
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

struct SingleQuery {
  std::string workload;
  double miner_p50 = 0;
  double service_p50 = 0;      // S=1, B=1, 1 in flight
  double service_p50_q4 = -1;  // S=1, B=1, 4 in flight (-1: skipped)
};

absl::Status RunWorkload(const Workload& w, const Options& opt,
                         std::vector<SingleQuery>* singles) {
  std::printf(
      "\n== %s: %zu x %zu, inner product, %u negatives, 1 positive "
      "excluded, window [0, %u) (load average %s) ==\n",
      w.name.c_str(), w.n, w.dim, kNumNegatives, kRangeMax,
      LoadAverage().c_str());
  std::fflush(stdout);

  // (d)
  openblas_set_num_threads(1);
  const double gflops_one = SgemmGflops(w.dim, 1, std::min(1.0, opt.seconds));
  const double gflops =
      SgemmGflops(w.dim, opt.cores, std::min(1.0, opt.seconds));
  openblas_set_num_threads(opt.cores);
  omp_set_num_threads(opt.cores);
  const double bound_qps =
      gflops * 1e9 /
      (2.0 * static_cast<double>(w.n) * static_cast<double>(w.dim));
  std::printf(
      "  (d) sgemm 256x4096x%zu: %.1f GFLOP/s on %d cores at once (1 BLAS "
      "thread each; %.1f on one core) -> bound %.1f q/s (2*N*d = %.1f "
      "MFLOP/query)\n",
      w.dim, gflops, opt.cores, gflops_one, bound_qps,
      2.0 * static_cast<double>(w.n) * static_cast<double>(w.dim) / 1e6);
  std::fflush(stdout);

  // Data: the checkpoint and FAISS get the same vectors.
  absl::StatusOr<TempDir> tmp = TempDir::Create(opt.tmp_dir);
  if (!tmp.ok()) return tmp.status();
  const std::string checkpoints = tmp->path() + "/checkpoints";
  const QueryPool pool = MakeQueries(w.n, w.dim, opt.seed + 7);
  LineStats faiss_stats;
  {
    absl::Time t = absl::Now();
    std::vector<float> embeddings(w.n * w.dim);
    SplitMix64 rng(opt.seed);
    FillUnitVectors(&rng, w.n, w.dim, embeddings.data());
    std::vector<int64_t> ids(w.n);
    std::vector<int64_t> labels(w.n);
    for (size_t i = 0; i < w.n; ++i) {
      ids[i] = static_cast<int64_t>(i);
      labels[i] = static_cast<int64_t>(i % 10);
    }
    CheckpointManifest manifest;
    manifest.name = "v1";
    manifest.step = 1;
    manifest.dim = static_cast<uint32_t>(w.dim);
    manifest.metric = Metric::kInnerProduct;
    absl::Status written =
        WriteCheckpoint(checkpoints, manifest, embeddings, ids, labels);
    if (!written.ok()) return written;
    faiss::IndexFlatIP flat(static_cast<faiss::Index::idx_t>(w.dim));
    flat.add(static_cast<faiss::Index::idx_t>(w.n), embeddings.data());
    std::vector<float>().swap(embeddings);
    std::printf(
        "  data generated, checkpoint written, FAISS index built in "
        "%.1f s (not timed below)\n",
        absl::ToDoubleSeconds(absl::Now() - t));
    PrintHeader();
    faiss_stats = RunFaiss(flat, pool, opt.seconds);
    PrintLine("(a) faiss IndexFlatIP B=256 k=11", faiss_stats, faiss_stats.qps,
              bound_qps);
  }
  const double ref_qps = faiss_stats.qps;

  IndexManagerOptions manager_options;
  manager_options.checkpoints_dir = checkpoints;
  IndexManager manager(manager_options);
  absl::Status loaded = manager.LoadNewest();
  if (!loaded.ok()) return loaded;
  std::shared_ptr<const IndexVersion> version = manager.Current();
  if (version == nullptr) return absl::InternalError("LoadNewest served none");

  SingleQuery single;
  single.workload = w.name;
  for (size_t batch : {size_t{256}, size_t{16}, size_t{1}}) {
    const LineStats s = RunMiner(*version, pool, batch, opt.seconds, 100000);
    PrintLine("(b) Miner::Mine B=" + std::to_string(batch), s, ref_qps,
              bound_qps);
    if (batch == 1) single.miner_p50 = s.p50_ms;
  }
  version.reset();

  ServerOptions server_options;
  server_options.host = "127.0.0.1";
  server_options.port = 0;
  absl::StatusOr<std::unique_ptr<HardnegServer>> server =
      HardnegServer::Start(server_options, &manager);
  if (!server.ok()) return server.status();
  const std::string target = "127.0.0.1:" + std::to_string((*server)->port());

  struct Cell {
    int streams;
    size_t batch;
    int in_flight;
  };
  std::vector<Cell> cells = {{1, 1, 1}};
  for (int s : {1, 8, 32}) {
    for (size_t b : {size_t{1}, size_t{16}, size_t{256}}) {
      cells.push_back({s, b, kInFlight});
    }
  }
  for (const Cell& cell : cells) {
    const std::string name = "(c) S=" + std::to_string(cell.streams) +
                             " B=" + std::to_string(cell.batch) +
                             " in-flight " + std::to_string(cell.in_flight);
    const double outstanding = static_cast<double>(cell.streams) *
                               static_cast<double>(cell.batch) * cell.in_flight;
    const double drain_s = ref_qps > 0 ? outstanding / ref_qps : 0;
    if (drain_s > 2 * opt.seconds) {
      std::printf(
          "  %-34s skipped: %.0f queries in flight take %.1f s at "
          "(a)'s rate\n",
          name.c_str(), outstanding, drain_s);
      continue;
    }
    CellConfig cfg;
    cfg.streams = cell.streams;
    cfg.batch = cell.batch;
    cfg.in_flight = cell.in_flight;
    cfg.seconds = opt.seconds;
    cfg.max_requests = opt.max_requests;
    std::string first_error;
    const LineStats s = RunCell(target, cfg, pool, &first_error);
    PrintLine(name, s, ref_qps, bound_qps);
    if (!first_error.empty()) {
      std::printf("    first error: %s\n", first_error.c_str());
    }
    if (cell.streams == 1 && cell.batch == 1) {
      if (cell.in_flight == 1) {
        single.service_p50 = s.p50_ms;
      } else {
        single.service_p50_q4 = s.p50_ms;
      }
    }
  }
  (*server)->Shutdown(absl::Seconds(5));
  server->reset();
  singles->push_back(single);
  return absl::OkStatus();
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
  if (opt.tmp_dir.empty()) {
    const char* env = std::getenv("TMPDIR");
    opt.tmp_dir = env != nullptr && *env != '\0' ? env : "/tmp";
  }
  const size_t divisor = quick ? 10 : 1;
  std::string names = absl::GetFlag(FLAGS_workloads);
  if (names.empty()) names = "W1,W2,W3";
  std::vector<Workload> workloads;
  for (absl::string_view name : absl::StrSplit(names, ',')) {
    if (name == "W1") {
      workloads.push_back({"W1", 100000 / divisor, 128});
    } else if (name == "W2") {
      workloads.push_back({"W2", 1000000 / divisor, 128});
    } else if (name == "W3") {
      workloads.push_back({"W3", 200000 / divisor, 768});
    } else {
      std::fprintf(stderr,
                   "--workloads: unknown workload \"%s\" (W1, W2, W3)\n",
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

  std::vector<SingleQuery> singles;
  for (const Workload& w : workloads) {
    absl::Status status = RunWorkload(w, opt, &singles);
    if (!status.ok()) {
      std::fprintf(stderr, "%s: %s\n", w.name.c_str(),
                   status.ToString().c_str());
      return 1;
    }
  }
  std::printf("\n== Single query, p50 ms (%d cores) ==\n", opt.cores);
  std::printf("  %-5s %14s %18s %12s %20s\n", "load", "Miner B=1",
              "service S1 B1", "difference", "service S1 B1 q4");
  for (const SingleQuery& s : singles) {
    char q4[32] = "skipped";
    if (s.service_p50_q4 >= 0) {
      std::snprintf(q4, sizeof(q4), "%.3f", s.service_p50_q4);
    }
    std::printf("  %-5s %14.3f %18.3f %12.3f %20s\n", s.workload.c_str(),
                s.miner_p50, s.service_p50, s.service_p50 - s.miner_p50, q4);
  }
  std::printf(
      "  (service S1 B1: one request in flight; q4: four in flight, so each "
      "request also waits for the ones before it)\n");
  return 0;
}

}  // namespace
}  // namespace hardneg

int main(int argc, char** argv) {
  hardneg::EnsurePassiveOpenMp(argv);
  absl::SetProgramUsageMessage(
      "hardneg-bench [--quick] [--workloads W1,W2,W3] [--cell_seconds S]: "
      "mining throughput and latency against FAISS and the sgemm bound");
  absl::ParseCommandLine(argc, argv);
  return hardneg::Main();
}

// hardneg-refresh-bench: what a checkpoint refresh costs a serving process,
// measured against the issue's targets ("p99 during a build at most 2x
// steady state", "peak RSS at most 2.2x the index's bytes"). For each
// workload (W-A 1,000,000 x 128 and W-B 200,000 x 768, inner product,
// random unit float32 vectors, ids 0..n-1, labels id % 10) it measures:
//
//   1. manifest to serving: IndexManager::LoadNewest() of checkpoint v1,
//      then, with the watcher running, the time from WriteCheckpoint of v2
//      returning (its manifest is written last) until Current() is v2;
//   2. Miner latency of a thread mining back to back, in a steady-state
//      window and in the window from dropping v2 until the swap;
//   3. peak VmRSS during the swap against the versions' MemoryBytes().
//
// --rounds N repeats the refresh (v2, v3, ...) to pool more calls into the
// during-build window, which one refresh fills with only a few calls.
//
// A benchmark, not a test: it asserts nothing and is not registered with
// CTest; its numbers depend on the machine. main() drives one workload at a
// time; the helper classes below state their own thread-safety.
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "bench_util.h"
#include "format/checkpoint.h"
#include "mining/miner.h"
#include "server/omp_policy.h"
#include "versions/index_manager.h"
#include "versions/index_version.h"

ABSL_FLAG(bool, quick, false, "Divide every workload's n by 10.");
ABSL_FLAG(double, scale, 0,
          "Multiply every workload's n by this (0: 1, or 0.1 with --quick).");
ABSL_FLAG(std::string, workloads, "A,B", "Workloads to run: A, B or A,B.");
ABSL_FLAG(std::string, data_dir, "",
          "Give the IndexManager this --data_dir (one subdirectory per "
          "workload), so every swap also writes a snapshot. Empty: none.");
ABSL_FLAG(std::string, tmp_dir, "",
          "Where the checkpoints are written (empty: $TMPDIR or /tmp).");
ABSL_FLAG(std::string, index, "Flat", "FAISS factory string of the index.");
ABSL_FLAG(absl::Duration, steady_window, absl::Seconds(3),
          "Longest steady-state latency window.");
ABSL_FLAG(int, steady_calls, 200,
          "The steady-state window ends after this many calls, if sooner.");
ABSL_FLAG(int, rounds, 1,
          "Refreshes per workload (v2, v3, ...); more rounds pool more calls "
          "into the during-build latency window.");
ABSL_FLAG(int, blas_threads, 1,
          "BLAS threads of the load thread: 1, as hardneg-server's default "
          "on 2 cores (one search worker per core, one BLAS thread each).");
ABSL_FLAG(uint64_t, seed, 42, "Seed of the vectors and queries.");

namespace hardneg {
namespace {

using bench::CountCores;
using bench::DefaultTmpDir;
using bench::FillUnitVectors;
using bench::LoadAverage;
using bench::SplitMix64;
using bench::TempDir;

constexpr size_t kBatchQueries = 16;
constexpr uint32_t kNumNegatives = 10;
constexpr int64_t kNumLabels = 10;
constexpr absl::Duration kPollInterval = absl::Milliseconds(50);
constexpr absl::Duration kRssPeriod = absl::Milliseconds(5);
constexpr size_t kWarmupCalls = 3;
constexpr double kMaxP99Ratio = 2.0;
constexpr double kMaxRssRatio = 2.2;
constexpr double kMiB = 1024.0 * 1024.0;

// Writes checkpoint `name` (one shard, inner product) of `n` x `dim` random
// unit vectors under `root`. Everything it allocates is freed on return.
absl::Status WriteRandomCheckpoint(const std::string& root,
                                   const std::string& name, uint64_t step,
                                   size_t n, size_t dim, uint64_t seed) {
  std::vector<float> embeddings(n * dim);
  SplitMix64 rng(seed);
  FillUnitVectors(&rng, n, dim, embeddings.data());
  std::vector<int64_t> ids(n);
  std::vector<int64_t> labels(n);
  for (size_t i = 0; i < n; ++i) {
    ids[i] = static_cast<int64_t>(i);
    labels[i] = static_cast<int64_t>(i) % kNumLabels;
  }
  CheckpointManifest manifest;
  manifest.name = name;
  manifest.step = step;
  manifest.dim = static_cast<uint32_t>(dim);
  manifest.metric = Metric::kInnerProduct;
  return WriteCheckpoint(root, manifest, embeddings, ids, labels);
}

// The process's resident set (VmRSS of /proc/self/status) in bytes; 0 when
// it cannot be read.
size_t ReadRssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      return static_cast<size_t>(std::strtoull(line.c_str() + 6, nullptr, 10)) *
             1024;
    }
  }
  return 0;
}

// CPU time used by every process and by this one, in clock ticks, to tell
// how busy other processes kept the cores during a window.
struct CpuTicks {
  uint64_t all_busy = 0;
  uint64_t self = 0;
  absl::Time at;
};

CpuTicks ReadCpuTicks() {
  CpuTicks ticks;
  ticks.at = absl::Now();
  std::ifstream stat("/proc/stat");
  std::string cpu;
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0,
           softirq = 0, steal = 0;
  stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >>
      steal;
  ticks.all_busy = user + nice + system + irq + softirq + steal;
  std::ifstream self("/proc/self/stat");
  std::string line;
  std::getline(self, line);
  // Fields after the parenthesised command: state is field 3, utime 14.
  const size_t close = line.rfind(')');
  if (close != std::string::npos) {
    std::vector<std::string> fields =
        absl::StrSplit(line.substr(close + 2), ' ');
    if (fields.size() > 12) {
      ticks.self = std::strtoull(fields[11].c_str(), nullptr, 10) +
                   std::strtoull(fields[12].c_str(), nullptr, 10);
    }
  }
  return ticks;
}

// Cores other processes kept busy on average between `from` and `to`.
double OtherCores(const CpuTicks& from, const CpuTicks& to) {
  const double seconds = absl::ToDoubleSeconds(to.at - from.at);
  if (seconds <= 0) return 0;
  const double others = static_cast<double>(to.all_busy - from.all_busy) -
                        static_cast<double>(to.self - from.self);
  return std::max(0.0,
                  others / static_cast<double>(sysconf(_SC_CLK_TCK)) / seconds);
}

// Samples VmRSS every `period` on its own thread and keeps the peak since
// the last ResetPeak(). Thread-safe.
class RssSampler {
 public:
  explicit RssSampler(absl::Duration period)
      : period_(period), thread_([this] { Loop(); }) {}
  ~RssSampler() {
    stop_.Notify();
    thread_.join();
  }
  RssSampler(const RssSampler&) = delete;
  RssSampler& operator=(const RssSampler&) = delete;

  // Starts a new peak window at the current RSS; samples begun before the
  // call do not count in it.
  void ResetPeak() ABSL_LOCKS_EXCLUDED(mu_) {
    const size_t now = ReadRssBytes();
    absl::MutexLock lock(&mu_);
    ++generation_;
    peak_ = now;
    samples_ = 0;
  }
  size_t peak_bytes() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return peak_;
  }
  size_t samples() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return samples_;
  }

 private:
  void Loop() {
    while (!stop_.WaitForNotificationWithTimeout(period_)) {
      uint64_t generation;
      {
        absl::MutexLock lock(&mu_);
        generation = generation_;
      }
      const size_t rss = ReadRssBytes();
      absl::MutexLock lock(&mu_);
      if (generation != generation_) continue;  // taken before a reset
      peak_ = std::max(peak_, rss);
      ++samples_;
    }
  }

  const absl::Duration period_;
  absl::Notification stop_;
  mutable absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  size_t peak_ ABSL_GUARDED_BY(mu_) = 0;
  size_t samples_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;  // last: starts once the members above exist
};

struct MiningCall {
  absl::Time start;
  absl::Duration latency;
};

// Mines batches of kBatchQueries random queries (one positive id excluded
// each, the positive's label excluded, kNumNegatives negatives) against
// manager->Current() back to back on its own thread, recording each call.
// It holds the served version only for the duration of one call, as a
// request would. Thread-safe.
class MiningLoad {
 public:
  MiningLoad(const IndexManager* manager, size_t n, size_t dim,
             int blas_threads, uint64_t seed)
      : manager_(manager), n_(n), dim_(dim), blas_threads_(blas_threads) {
    calls_.reserve(1 << 16);
    thread_ = std::thread([this, seed] { Loop(seed); });
  }
  ~MiningLoad() { Stop(); }
  MiningLoad(const MiningLoad&) = delete;
  MiningLoad& operator=(const MiningLoad&) = delete;

  // Waits for the call in flight to finish.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  // Blocks until `count` calls have completed (or one failed), at most
  // `timeout`. Returns the number of completed calls.
  size_t WaitForCalls(size_t count, absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    awaited_ = count;
    mu_.AwaitWithTimeout(absl::Condition(this, &MiningLoad::Reached), timeout);
    return calls_.size();
  }

  std::vector<MiningCall> calls() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  absl::Status status() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return error_;
  }

 private:
  bool Reached() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return calls_.size() >= awaited_ || !error_.ok() || stop_;
  }

  void Loop(uint64_t seed) ABSL_LOCKS_EXCLUDED(mu_) {
    // As a search worker of hardneg-server: OpenMP's count is per thread.
    omp_set_num_threads(blas_threads_);
    openblas_set_num_threads(blas_threads_);
    SplitMix64 rng(seed);
    const Miner miner;
    std::vector<float> embeddings(kBatchQueries * dim_);
    std::vector<int64_t> positives(kBatchQueries);
    std::vector<MiningQuery> queries(kBatchQueries);
    MiningOptions options;
    options.num_negatives = kNumNegatives;
    for (uint64_t call = 0;; ++call) {
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
      }
      FillUnitVectors(&rng, kBatchQueries, dim_, embeddings.data());
      for (size_t i = 0; i < kBatchQueries; ++i) {
        positives[i] = static_cast<int64_t>(rng.NextBelow(n_));
        queries[i].embedding =
            absl::MakeConstSpan(embeddings.data() + i * dim_, dim_);
        queries[i].positive_ids = absl::MakeConstSpan(&positives[i], 1);
        queries[i].label = positives[i] % kNumLabels;
      }
      options.seed = call;
      const absl::Time start = absl::Now();
      absl::Status status;
      {
        // The only reference this thread takes; released right after.
        std::shared_ptr<const IndexVersion> version = manager_->Current();
        if (version == nullptr) {
          status = absl::FailedPreconditionError("no version is served");
        } else {
          status = miner.Mine(*version, queries, options).status();
        }
      }
      const absl::Duration latency = absl::Now() - start;
      absl::MutexLock lock(&mu_);
      if (!status.ok()) {
        error_ = status;
        return;
      }
      calls_.push_back({start, latency});
    }
  }

  const IndexManager* const manager_;
  const size_t n_;
  const size_t dim_;
  const int blas_threads_;
  mutable absl::Mutex mu_;
  std::vector<MiningCall> calls_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  size_t awaited_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

struct LatencyStats {
  size_t count = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

// Nearest-rank percentiles of the calls that started in [from, to) and
// finished by `done_by`.
LatencyStats Summarize(const std::vector<MiningCall>& calls, absl::Time from,
                       absl::Time to, absl::Time done_by) {
  std::vector<double> ms;
  for (const MiningCall& call : calls) {
    if (call.start >= from && call.start < to &&
        call.start + call.latency <= done_by) {
      ms.push_back(absl::ToDoubleMilliseconds(call.latency));
    }
  }
  LatencyStats stats;
  stats.count = ms.size();
  if (ms.empty()) return stats;
  std::sort(ms.begin(), ms.end());
  auto rank = [&](double p) {
    const auto r =
        static_cast<size_t>(std::ceil(p * static_cast<double>(ms.size())));
    return ms[std::max<size_t>(r, 1) - 1];
  };
  stats.p50_ms = rank(0.50);
  stats.p99_ms = rank(0.99);
  stats.max_ms = ms.back();
  return stats;
}

// What the swapped event reported for one version.
struct SwapRecord {
  absl::Time at;
  absl::Duration build_time;
  size_t bytes = 0;
};

// Collects the IndexManager's swapped events, and notifies when the version
// named in the last Expect() swaps in. Thread-safe.
class SwapRecorder {
 public:
  void OnSwapped(const IndexVersion& version, absl::Duration build_time)
      ABSL_LOCKS_EXCLUDED(mu_) {
    const absl::Time at = absl::Now();
    absl::MutexLock lock(&mu_);
    records_[version.info().name] = {at, build_time, version.MemoryBytes()};
    if (version.info().name == expected_ && !swapped_->HasBeenNotified()) {
      swapped_->Notify();
    }
  }

  // Arms a notification for the swap of version `name`; valid until the
  // next Expect().
  const absl::Notification& Expect(const std::string& name)
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    expected_ = name;
    swapped_ = std::make_unique<absl::Notification>();
    return *swapped_;
  }

  SwapRecord record(const std::string& name) const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto it = records_.find(name);
    return it == records_.end() ? SwapRecord{} : it->second;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, SwapRecord> records_ ABSL_GUARDED_BY(mu_);
  std::string expected_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<absl::Notification> swapped_ ABSL_GUARDED_BY(mu_) =
      std::make_unique<absl::Notification>();
};

struct Workload {
  std::string name;
  size_t n;
  size_t dim;
};

// One refresh: a new checkpoint dropped while the previous version serves.
struct RoundReport {
  std::string name;           // "v2", "v3", ...
  double write_s = 0;         // WriteCheckpoint (not in any window)
  double watcher_s = 0;       // WriteCheckpoint returned -> swapped event
  double build_s = 0;         // the swapped event's build_time
  double release_ms = 0;      // swapped -> previous version destroyed
  size_t previous_bytes = 0;  // the version it replaced
  size_t bytes = 0;
  size_t baseline_rss = 0;  // before the checkpoint is generated
  size_t peak_rss = 0;
  size_t peak_samples = 0;
  size_t after_rss = 0;    // once the previous version is gone
  double other_cores = 0;  // busy cores of other processes, drop -> swap

  // RSS that is not an index: code, libraries, buffers.
  double not_index() const {
    return static_cast<double>(baseline_rss) -
           static_cast<double>(previous_bytes);
  }
  double rss_ratio() const {
    return bytes > 0
               ? static_cast<double>(peak_rss) / static_cast<double>(bytes)
               : 0;
  }
};

struct WorkloadReport {
  Workload workload;
  double write_v1_s = 0;
  double load_newest_s = 0;
  double load_newest_build_s = 0;
  double read_s = 0;  // ReadCheckpoint of v2 alone, after the run
  LatencyStats steady;
  LatencyStats building;          // pooled over the rounds
  double steady_other_cores = 0;  // busy cores of other processes
  size_t v1_bytes = 0;
  size_t vector_bytes = 0;  // n * dim floats, the bulk of a version
  std::vector<RoundReport> rounds;

  double p99_ratio() const {
    return steady.p99_ms > 0 ? building.p99_ms / steady.p99_ms : 0;
  }
  // The worst round's.
  double rss_ratio() const {
    double worst = 0;
    for (const RoundReport& r : rounds) worst = std::max(worst, r.rss_ratio());
    return worst;
  }
};

double MiB(size_t bytes) { return static_cast<double>(bytes) / kMiB; }

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

void PrintLatency(const char* window, const LatencyStats& s) {
  std::printf("    %-24s %7zu %9.2f %9.2f %9.2f\n", window, s.count, s.p50_ms,
              s.p99_ms, s.max_ms);
}

struct BenchOptions {
  std::string tmp_dir;
  std::string data_dir;
  std::string index;
  absl::Duration steady_window;
  size_t steady_calls = 0;
  int rounds = 1;
  int blas_threads = 1;
  uint64_t seed = 0;
};

// Drops checkpoint `name` (step `step`) into `checkpoints` while
// `*previous` serves (and the load thread mines), and measures until the
// previous version is destroyed. On return `*previous` refers to the new
// version.
absl::StatusOr<RoundReport> RunRound(
    const std::string& checkpoints, const std::string& name, uint64_t step,
    uint64_t seed, const Workload& workload, IndexManager* manager,
    SwapRecorder* swaps, RssSampler* rss,
    std::weak_ptr<const IndexVersion>* previous, absl::Time* dropped) {
  RoundReport round;
  round.name = name;
  {
    std::shared_ptr<const IndexVersion> served = previous->lock();
    if (served == nullptr) return absl::InternalError("nothing is served");
    round.previous_bytes = served->MemoryBytes();
  }
  round.baseline_rss = ReadRssBytes();

  // Generating and writing the checkpoint competes with the load thread
  // too, so those calls are in neither latency window; its buffers are
  // freed before the peak window opens. The manifest is written last.
  const absl::Notification& swapped = swaps->Expect(name);
  const absl::Time t = absl::Now();
  absl::Status written = WriteRandomCheckpoint(checkpoints, name, step,
                                               workload.n, workload.dim, seed);
  *dropped = absl::Now();
  if (!written.ok()) return written;
  const CpuTicks cpu_dropped = ReadCpuTicks();
  rss->ResetPeak();
  round.write_s = Seconds(*dropped - t);

  if (!swapped.WaitForNotificationWithTimeout(absl::Minutes(10))) {
    return absl::DeadlineExceededError(name + " was not served in 10 minutes");
  }
  round.other_cores = OtherCores(cpu_dropped, ReadCpuTicks());
  const SwapRecord record = swaps->record(name);
  std::shared_ptr<const IndexVersion> current = manager->Current();
  if (current->info().name != name) {
    return absl::InternalError("swapped fired but Current() is " +
                               current->info().name);
  }
  round.watcher_s = Seconds(record.at - *dropped);
  round.build_s = Seconds(record.build_time);
  round.bytes = record.bytes;

  // The previous version lives until the watcher's LoadNewest returns and
  // the load thread's call in flight ends; the peak window closes once it
  // is gone.
  const absl::Time deadline = absl::Now() + absl::Minutes(2);
  while (!previous->expired() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  if (!previous->expired()) {
    return absl::InternalError("the previous version was never released");
  }
  round.release_ms = absl::ToDoubleMilliseconds(absl::Now() - record.at);
  round.peak_rss = rss->peak_bytes();
  round.peak_samples = rss->samples();
  // expired() turns true before the destructor has unmapped the vectors:
  // this reading only shows that the memory went back, once RSS settles.
  round.after_rss = ReadRssBytes();
  for (int i = 0; i < 200; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    const size_t now = ReadRssBytes();
    const bool settled =
        now + (1 << 20) > round.after_rss && round.after_rss + (1 << 20) > now;
    round.after_rss = now;
    if (settled) break;
  }
  *previous = current;  // weak: the bench holds no version between calls
  return round;
}

absl::StatusOr<WorkloadReport> RunWorkload(const Workload& workload,
                                           const BenchOptions& bench) {
  WorkloadReport report;
  report.workload = workload;
  std::printf(
      "\n== %s: %zu x %zu, inner product, index %s (load average %s) ==\n",
      workload.name.c_str(), workload.n, workload.dim, bench.index.c_str(),
      LoadAverage().c_str());
  std::fflush(stdout);
  absl::StatusOr<TempDir> tmp =
      TempDir::Create(bench.tmp_dir, "hardneg-refresh-bench");
  if (!tmp.ok()) return tmp.status();
  const std::string checkpoints = tmp->path() + "/checkpoints";

  absl::Time t = absl::Now();
  absl::Status written = WriteRandomCheckpoint(checkpoints, "v1", 1, workload.n,
                                               workload.dim, bench.seed);
  if (!written.ok()) return written;
  report.write_v1_s = Seconds(absl::Now() - t);

  IndexManagerOptions options;
  options.checkpoints_dir = checkpoints;
  options.build.factory = bench.index;
  options.build_threads = 1;
  if (!bench.data_dir.empty()) {
    options.data_dir = bench.data_dir + "/" + workload.name;
  }
  SwapRecorder swaps;  // outlives the manager, whose watcher calls it
  IndexManager manager(options);
  IndexEvents events;
  events.swapped = [&swaps](const IndexVersion& version, absl::Duration d) {
    swaps.OnSwapped(version, d);
  };
  manager.SetEvents(std::move(events));

  // 1a. LoadNewest of v1, as hardneg-server does before listening.
  t = absl::Now();
  absl::Status loaded = manager.LoadNewest();
  report.load_newest_s = Seconds(absl::Now() - t);
  if (!loaded.ok()) return loaded;
  std::weak_ptr<const IndexVersion> served;
  {
    std::shared_ptr<const IndexVersion> current = manager.Current();
    if (current == nullptr || current->info().name != "v1") {
      return absl::InternalError("LoadNewest did not serve v1");
    }
    report.v1_bytes = current->MemoryBytes();
    served = current;
  }  // the bench keeps no strong reference: only the manager holds v1
  report.load_newest_build_s = Seconds(swaps.record("v1").build_time);
  std::printf("  checkpoint v1 written in %.2f s (not timed below)\n",
              report.write_v1_s);
  std::printf("  1. LoadNewest() v1: %.3f s (IndexVersion build %.3f s)\n",
              report.load_newest_s, report.load_newest_build_s);
  std::fflush(stdout);

  manager.StartWatching(kPollInterval);
  RssSampler rss(kRssPeriod);
  MiningLoad load(&manager, workload.n, workload.dim, bench.blas_threads,
                  bench.seed + 1000);

  // 2a. Steady state: after a short warm-up, until steady_calls calls or
  // steady_window, whichever comes first.
  const size_t warm = load.WaitForCalls(kWarmupCalls, absl::Minutes(2));
  const CpuTicks cpu_from = ReadCpuTicks();
  const absl::Time steady_from = cpu_from.at;
  load.WaitForCalls(warm + bench.steady_calls, bench.steady_window);
  const CpuTicks cpu_to = ReadCpuTicks();
  const absl::Time steady_to = cpu_to.at;
  report.steady_other_cores = OtherCores(cpu_from, cpu_to);
  if (!load.status().ok()) return load.status();

  // 1b./2b./3. Refreshes with the watcher running.
  std::vector<std::pair<absl::Time, absl::Time>> build_windows;
  for (int i = 0; i < bench.rounds; ++i) {
    const uint64_t step = static_cast<uint64_t>(i) + 2;
    absl::Time dropped;
    absl::StatusOr<RoundReport> round = RunRound(
        checkpoints, "v" + std::to_string(step), step, bench.seed + step,
        workload, &manager, &swaps, &rss, &served, &dropped);
    if (!round.ok()) return round.status();
    const double watcher_s = round->watcher_s;
    build_windows.emplace_back(dropped, dropped + absl::Seconds(watcher_s));
    report.rounds.push_back(*std::move(round));
  }
  load.Stop();
  if (!load.status().ok()) return load.status();
  const std::vector<MiningCall> calls = load.calls();
  report.steady = Summarize(calls, steady_from, steady_to, steady_to);
  std::vector<MiningCall> building;
  for (const MiningCall& call : calls) {
    for (const auto& [from, to] : build_windows) {
      if (call.start >= from && call.start < to) building.push_back(call);
    }
  }
  report.building = Summarize(building, absl::InfinitePast(),
                              absl::InfiniteFuture(), absl::InfiniteFuture());

  // What reading a checkpoint costs on its own, on an idle process (the
  // watcher path is detection + this + the index build).
  {
    t = absl::Now();
    absl::StatusOr<Checkpoint> reread = ReadCheckpoint(checkpoints + "/v2");
    if (!reread.ok()) return reread.status();
    report.read_s = Seconds(absl::Now() - t);
    const CandidateStore& store = reread->store;
    report.vector_bytes = store.size() * store.dim() * sizeof(float);
  }

  for (const RoundReport& r : report.rounds) {
    std::printf(
        "  1. watcher path: %s WriteCheckpoint returned -> Current() is %s: "
        "%.3f s (IndexVersion build %.3f s; writing it took %.2f s before, "
        "not timed)\n",
        r.name.c_str(), r.name.c_str(), r.watcher_s, r.build_s, r.write_s);
  }
  std::printf(
      "     ReadCheckpoint(v2) alone (npy reads, finiteness check, "
      "CandidateStore::Create) takes %.3f s on an idle process; the rest is "
      "detection (inotify, %.0f ms poll fallback) and sharing the cores\n",
      report.read_s, absl::ToDoubleMilliseconds(kPollInterval));
  std::printf(
      "  2. Miner.Mine latency, %zu queries x %u negatives a call, load "
      "thread with %d BLAS thread(s), build_threads 1:\n",
      kBatchQueries, kNumNegatives, bench.blas_threads);
  std::printf("    %-24s %7s %9s %9s %9s\n", "window", "calls", "p50 ms",
              "p99 ms", "max ms");
  PrintLatency("steady state", report.steady);
  PrintLatency(
      bench.rounds == 1 ? "v2 dropped -> swapped" : "dropped -> swapped (all)",
      report.building);
  std::string round_cores;
  for (const RoundReport& r : report.rounds) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%s%.2f",
                  round_cores.empty() ? "" : ", ", r.other_cores);
    round_cores += buffer;
  }
  std::printf(
      "    other processes kept %.2f cores busy in the steady window, %s "
      "from drop to swap\n",
      report.steady_other_cores, round_cores.c_str());
  std::printf("    p99(build)/p99(steady) = %.2f%s\n", report.p99_ratio(),
              report.building.count < 100 || report.steady.count < 100
                  ? "  (under 100 calls in a window: its p99 is its max)"
                  : "");
  std::printf(
      "  3. memory, MiB (v1 MemoryBytes() %.1f; a version's vectors are "
      "%.1f, its ids, labels, norms and id hash map the rest):\n",
      MiB(report.v1_bytes), MiB(report.vector_bytes));
  std::printf("    %-7s %9s %9s %9s %9s %9s %9s %10s\n", "version", "bytes",
              "baseline", "peak", "index", "after", "released", "peak/bytes");
  std::printf("    %-7s %9s %9s %9s %9s %9s %9s %10s\n", "", "", "RSS", "RSS",
              "at peak", "RSS", "after ms", "");
  for (const RoundReport& r : report.rounds) {
    std::printf("    %-7s %9.1f %9.1f %9.1f %9.1f %9.1f %9.0f %10.2f\n",
                r.name.c_str(), MiB(r.bytes), MiB(r.baseline_rss),
                MiB(r.peak_rss),
                (static_cast<double>(r.peak_rss) - r.not_index()) / kMiB,
                MiB(r.after_rss), r.release_ms, r.rss_ratio());
    std::printf(
        "    %s: index at peak = peak - (baseline - previous version's "
        "bytes) = %.2fx its bytes (%zu RSS samples in the window)\n",
        r.name.c_str(),
        (static_cast<double>(r.peak_rss) - r.not_index()) /
            static_cast<double>(r.bytes),
        r.peak_samples);
  }
  const RoundReport& first = report.rounds.front();
  std::printf(
      "    peak/bytes counts the whole process: both versions resident at "
      "once (the served one and the one being built), the reader's "
      "temporaries, plus what is not index at all (code, libraries, "
      "OpenBLAS buffers, the load thread's query and result buffers: "
      "baseline - v1 bytes = %.1f MiB)\n",
      first.not_index() / kMiB);
  std::fflush(stdout);
  return report;
}

int Main() {
  double scale = absl::GetFlag(FLAGS_scale);
  if (scale <= 0) scale = absl::GetFlag(FLAGS_quick) ? 0.1 : 1.0;
  auto scaled = [scale](size_t n) {
    return std::max<size_t>(
        1000,
        static_cast<size_t>(std::llround(static_cast<double>(n) * scale)));
  };
  std::vector<Workload> workloads;
  for (absl::string_view name :
       absl::StrSplit(absl::GetFlag(FLAGS_workloads), ',')) {
    if (name == "A") {
      workloads.push_back({"W-A", scaled(1000000), 128});
    } else if (name == "B") {
      workloads.push_back({"W-B", scaled(200000), 768});
    } else {
      std::fprintf(stderr, "--workloads: unknown workload \"%.*s\" (A or B)\n",
                   static_cast<int>(name.size()), name.data());
      return 2;
    }
  }
  BenchOptions bench;
  bench.tmp_dir = absl::GetFlag(FLAGS_tmp_dir);
  if (bench.tmp_dir.empty()) bench.tmp_dir = DefaultTmpDir();
  bench.data_dir = absl::GetFlag(FLAGS_data_dir);
  bench.index = absl::GetFlag(FLAGS_index);
  bench.steady_window = absl::GetFlag(FLAGS_steady_window);
  bench.steady_calls =
      static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_steady_calls)));
  bench.rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  bench.blas_threads = std::max(1, absl::GetFlag(FLAGS_blas_threads));
  bench.seed = absl::GetFlag(FLAGS_seed);

  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  std::printf(
      "hardneg-refresh-bench: %d cores usable (%u online), "
      "OMP_WAIT_POLICY=%s, scale %g, checkpoints under %s, data_dir %s\n",
      CountCores(), std::thread::hardware_concurrency(),
      wait_policy != nullptr ? wait_policy : "(unset)", scale,
      bench.tmp_dir.c_str(),
      bench.data_dir.empty() ? "(none)" : bench.data_dir.c_str());
  std::fflush(stdout);

  std::vector<WorkloadReport> reports;
  for (const Workload& workload : workloads) {
    absl::StatusOr<WorkloadReport> report = RunWorkload(workload, bench);
    if (!report.ok()) {
      std::fprintf(stderr, "%s: %s\n", workload.name.c_str(),
                   report.status().ToString().c_str());
      return 1;
    }
    reports.push_back(*std::move(report));
  }

  std::printf("\n== Summary (%d cores, load average now %s) ==\n", CountCores(),
              LoadAverage().c_str());
  std::printf("%-5s %-11s %12s %14s %11s %10s %10s\n", "load", "n x dim",
              "LoadNewest s", "watcher v2 s", "index MiB", "peak MiB",
              "base MiB");
  for (const WorkloadReport& r : reports) {
    const std::string shape =
        std::to_string(r.workload.n) + "x" + std::to_string(r.workload.dim);
    const RoundReport& v2 = r.rounds.front();
    std::printf("%-5s %-11s %12.3f %14.3f %11.1f %10.1f %10.1f\n",
                r.workload.name.c_str(), shape.c_str(), r.load_newest_s,
                v2.watcher_s, MiB(v2.bytes), MiB(v2.peak_rss),
                MiB(v2.baseline_rss));
  }
  std::printf("\n%-5s %-46s %10s %7s\n", "load", "target (issue)", "measured",
              "result");
  for (const WorkloadReport& r : reports) {
    const bool p99_ok = r.building.count > 0 && r.p99_ratio() <= kMaxP99Ratio;
    std::printf("%-5s %-46s %9.2fx %7s\n", r.workload.name.c_str(),
                "p99 during a build at most 2x steady state", r.p99_ratio(),
                p99_ok ? "PASS" : "MISS");
    std::printf("%-5s %-46s %9.2fx %7s\n", r.workload.name.c_str(),
                "peak RSS at most 2.2x the index's bytes", r.rss_ratio(),
                r.rss_ratio() <= kMaxRssRatio ? "PASS" : "MISS");
  }
  std::printf(
      "(p99 ratio: p99 of the calls started between a checkpoint's drop and "
      "its swap over p99 of the steady window; RSS ratio: peak process "
      "VmRSS during a swap over the new version's "
      "IndexVersion::MemoryBytes(), worst round)\n");
  return 0;
}

}  // namespace
}  // namespace hardneg

int main(int argc, char** argv) {
  hardneg::EnsurePassiveOpenMp(argv);
  absl::SetProgramUsageMessage(
      "hardneg-refresh-bench [--quick | --scale X] [--workloads A,B] "
      "[--data_dir DIR]: refresh latency and memory, a benchmark");
  absl::ParseCommandLine(argc, argv);
  return hardneg::Main();
}

// MemorySampler: the process's resident memory and the machine's available
// memory and free disk, sampled on a thread of its own, with the peaks kept
// per phase of a benchmark (load, mining, swap...), and a progress line
// printed every few seconds while a long phase runs.
//
// RssAnon (heap and other private pages) is what a memory budget must hold:
// RssFile (pages of mapped files, such as memory-mapped vectors) is page
// cache that the kernel may evict and read back at will. MemAvailable is
// the kernel's estimate of what could still be allocated without swapping.
//
// Thread-safe: any thread may call any method. Header-only; benchmarks only.
#ifndef HARDNEG_BENCH_MEMORY_SAMPLER_H_
#define HARDNEG_BENCH_MEMORY_SAMPLER_H_

#include <sys/statvfs.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace hardneg::bench {

inline constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// One reading; fields that could not be read are 0.
struct MemoryReading {
  size_t rss_anon = 0;       // bytes, /proc/self/status RssAnon
  size_t rss_file = 0;       // bytes, /proc/self/status RssFile
  size_t mem_available = 0;  // bytes, /proc/meminfo MemAvailable
  size_t disk_free = 0;      // bytes available to us on the watched path
};

// The value of the "<key>:   <n> kB" line of a /proc file, in bytes.
inline size_t ReadProcKiB(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) == 0 && line.size() > key.size() &&
        line[key.size()] == ':') {
      return static_cast<size_t>(
                 std::strtoull(line.c_str() + key.size() + 1, nullptr, 10)) *
             1024;
    }
  }
  return 0;
}

// Bytes an unprivileged process may still write under `path` (0 when it
// cannot be stat'ed).
inline size_t DiskFreeBytes(const std::string& path) {
  struct statvfs fs;
  if (statvfs(path.c_str(), &fs) != 0) return 0;
  return static_cast<size_t>(fs.f_bavail) * fs.f_frsize;
}

inline MemoryReading ReadMemory(const std::string& disk_path) {
  MemoryReading r;
  r.rss_anon = ReadProcKiB("/proc/self/status", "RssAnon");
  r.rss_file = ReadProcKiB("/proc/self/status", "RssFile");
  r.mem_available = ReadProcKiB("/proc/meminfo", "MemAvailable");
  if (!disk_path.empty()) r.disk_free = DiskFreeBytes(disk_path);
  return r;
}

class MemorySampler {
 public:
  // The extremes of one phase.
  struct Extremes {
    size_t samples = 0;
    size_t max_rss_anon = 0;
    size_t max_rss_file = 0;
    size_t min_mem_available = std::numeric_limits<size_t>::max();
    size_t min_disk_free = std::numeric_limits<size_t>::max();
  };

  // Starts sampling every `period` into phase 0 of `phases` (their names);
  // the free disk is that of `disk_path`.
  MemorySampler(absl::Duration period, std::vector<std::string> phases,
                std::string disk_path)
      : period_(period),
        names_(std::move(phases)),
        disk_path_(std::move(disk_path)),
        extremes_(names_.size()),
        thread_([this] { Run(); }) {}

  // Stops the thread (after its current sample).
  ~MemorySampler() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  MemorySampler(const MemorySampler&) = delete;
  MemorySampler& operator=(const MemorySampler&) = delete;

  // Samples go to `phase` from now on (and one is taken at once). With
  // `report_every` > 0, a progress line "<name>: <s> s, RssAnon ..." is
  // printed that often, ended with what `describe` returns when set, until
  // the next SetPhase.
  void SetPhase(size_t phase,
                absl::Duration report_every = absl::ZeroDuration(),
                std::function<std::string()> describe = nullptr) {
    const MemoryReading now = ReadMemory(disk_path_);
    absl::MutexLock lock(&mu_);
    phase_ = std::min(phase, names_.size() - 1);
    phase_start_ = absl::Now();
    report_every_ = report_every;
    next_report_ = phase_start_ + report_every;
    describe_ = std::move(describe);
    Record(now);
  }

  Extremes extremes(size_t phase) const {
    absl::MutexLock lock(&mu_);
    return extremes_.at(phase);
  }

 private:
  void Run() {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (mu_.AwaitWithTimeout(absl::Condition(&stop_), period_)) return;
      }
      // /proc and statvfs are read without the lock.
      const MemoryReading now = ReadMemory(disk_path_);
      std::function<std::string()> describe;
      std::string name;
      absl::Duration elapsed;
      bool report = false;
      {
        absl::MutexLock lock(&mu_);
        Record(now);
        const absl::Time t = absl::Now();
        if (report_every_ > absl::ZeroDuration() && t >= next_report_) {
          next_report_ += report_every_;
          report = true;
          describe = describe_;
          name = names_[phase_];
          elapsed = t - phase_start_;
        }
      }
      if (!report) continue;
      const std::string extra = describe ? "; " + describe() : "";
      std::printf(
          "    %s: %.0f s, RssAnon %.2f GiB, RssFile %.2f GiB, MemAvailable "
          "%.2f GiB, disk free %.1f GiB%s\n",
          name.c_str(), absl::ToDoubleSeconds(elapsed),
          static_cast<double>(now.rss_anon) / kGiB,
          static_cast<double>(now.rss_file) / kGiB,
          static_cast<double>(now.mem_available) / kGiB,
          static_cast<double>(now.disk_free) / kGiB, extra.c_str());
      std::fflush(stdout);
    }
  }

  void Record(const MemoryReading& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Extremes& e = extremes_[phase_];
    ++e.samples;
    e.max_rss_anon = std::max(e.max_rss_anon, r.rss_anon);
    e.max_rss_file = std::max(e.max_rss_file, r.rss_file);
    if (r.mem_available > 0) {
      e.min_mem_available = std::min(e.min_mem_available, r.mem_available);
    }
    if (!disk_path_.empty()) {
      e.min_disk_free = std::min(e.min_disk_free, r.disk_free);
    }
  }

  const absl::Duration period_;
  const std::vector<std::string> names_;
  const std::string disk_path_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  size_t phase_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time phase_start_ ABSL_GUARDED_BY(mu_) = absl::Now();
  absl::Duration report_every_ ABSL_GUARDED_BY(mu_);
  absl::Time next_report_ ABSL_GUARDED_BY(mu_);
  std::function<std::string()> describe_ ABSL_GUARDED_BY(mu_);
  std::vector<Extremes> extremes_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace hardneg::bench

#endif  // HARDNEG_BENCH_MEMORY_SAMPLER_H_

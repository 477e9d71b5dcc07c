// Helpers shared by the benchmarks: seeded random vectors, the machine's
// cores and load, and a scratch directory. Header-only; benchmarks only.
#ifndef HARDNEG_BENCH_BENCH_UTIL_H_
#define HARDNEG_BENCH_BENCH_UTIL_H_

#include <sched.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace hardneg::bench {

// A fast, seeded generator; the vectors only need to be random, not good.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float NextSigned() {
    return static_cast<float>(Next() >> 40) * (2.0f / (1 << 24)) - 1.0f;
  }
  size_t NextBelow(size_t n) { return static_cast<size_t>(Next() % n); }

 private:
  uint64_t state_;
};

// `n` x `dim` row-major vectors, uniform in the cube, scaled to norm 1.
inline void FillUnitVectors(SplitMix64* rng, size_t n, size_t dim, float* out) {
  for (size_t row = 0; row < n; ++row) {
    float* v = out + row * dim;
    double sq = 0;
    for (size_t i = 0; i < dim; ++i) {
      v[i] = rng->NextSigned();
      sq += static_cast<double>(v[i]) * v[i];
    }
    const float inv = sq > 0 ? static_cast<float>(1 / std::sqrt(sq)) : 0;
    for (size_t i = 0; i < dim; ++i) v[i] *= inv;
    if (sq == 0) v[0] = 1;
  }
}

// `n` x `dim` row-major unit vectors drawn from a mixture of the
// `centers.size() / dim` unit vectors in `centers`: row r is centre
// (r mod clusters) plus uniform noise of norm about `spread`, scaled to
// norm 1. Real embeddings cluster like this; uniform ones do not.
inline void FillClusteredUnitVectors(SplitMix64* rng, size_t n, size_t dim,
                                     const float* centers, size_t clusters,
                                     float spread, float* out) {
  FillUnitVectors(rng, n, dim, out);
  for (size_t row = 0; row < n; ++row) {
    float* v = out + row * dim;
    const float* c = centers + (row % clusters) * dim;
    double sq = 0;
    for (size_t i = 0; i < dim; ++i) {
      v[i] = c[i] + spread * v[i];
      sq += static_cast<double>(v[i]) * v[i];
    }
    const float inv = sq > 0 ? static_cast<float>(1 / std::sqrt(sq)) : 0;
    for (size_t i = 0; i < dim; ++i) v[i] *= inv;
  }
}

// The 1, 5 and 15 minute load averages: other processes on the same cores
// skew every latency measured here.
inline std::string LoadAverage() {
  std::ifstream file("/proc/loadavg");
  std::string one, five, fifteen;
  file >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// The cores this process may run on (at least 1).
inline int CountCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

// Where scratch data goes when no flag says: $TMPDIR, else /tmp.
inline std::string DefaultTmpDir() {
  const char* env = std::getenv("TMPDIR");
  return env != nullptr && *env != '\0' ? env : "/tmp";
}

// A fresh directory under `parent` named `prefix`-XXXXXX, removed with its
// contents on destruction.
class TempDir {
 public:
  static absl::StatusOr<TempDir> Create(const std::string& parent,
                                        const std::string& prefix) {
    std::string pattern = parent + "/" + prefix + "-XXXXXX";
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

}  // namespace hardneg::bench

#endif  // HARDNEG_BENCH_BENCH_UTIL_H_

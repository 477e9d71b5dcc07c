// Helpers shared by the benchmarks: seeded random vectors and the machine's
// load. Header-only; benchmarks only.
#ifndef HARDNEG_BENCH_BENCH_UTIL_H_
#define HARDNEG_BENCH_BENCH_UTIL_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

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

}  // namespace hardneg::bench

#endif  // HARDNEG_BENCH_BENCH_UTIL_H_

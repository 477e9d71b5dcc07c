#include "instruction_peak.h"

#if defined(__x86_64__)
// g++ 12's AVX-512 intrinsics read _mm512_undefined_*(), which its own
// -Wuninitialized then reports at every use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define HARDNEG_PEAK_X86 1
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace hardneg::bench {
namespace {

constexpr int kAccumulators = kPeakAccumulators;
// Rounds (kAccumulators instructions each) between looks at the clock:
// about a million instructions, a fraction of a millisecond.
constexpr uint64_t kRoundsPerCheck = uint64_t{1} << 16;

#if defined(HARDNEG_PEAK_X86)
// `rounds` x kAccumulators vdpbf16ps; returns a sum of the accumulators so
// that the compiler keeps them. `bits` (two bfloat16 values) is an
// argument so that no operand is known when compiling.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) float Bf16Rounds(
    uint64_t rounds, int32_t bits) {
  const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(bits));
  const __m512bh b = reinterpret_cast<__m512bh>(_mm512_set1_epi32(bits ^ 1));
  __m512 acc[kAccumulators];
  for (__m512& x : acc) x = _mm512_setzero_ps();
  for (uint64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 16
    for (int j = 0; j < kAccumulators; ++j) {
      acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
    }
  }
  __m512 sum = acc[0];
  for (int j = 1; j < kAccumulators; ++j) sum = _mm512_add_ps(sum, acc[j]);
  return _mm512_reduce_add_ps(sum);
}

// The same with vpdpbusd (unsigned x signed bytes, summed into int32).
__attribute__((target("avx512f,avx512bw,avx512vnni"))) float Int8Rounds(
    uint64_t rounds, int32_t bits) {
  const __m512i a = _mm512_set1_epi32(bits);
  const __m512i b = _mm512_set1_epi32(bits ^ 0x01010101);
  __m512i acc[kAccumulators];
  for (__m512i& x : acc) x = _mm512_setzero_si512();
  for (uint64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 16
    for (int j = 0; j < kAccumulators; ++j) {
      acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
    }
  }
  __m512i sum = acc[0];
  for (int j = 1; j < kAccumulators; ++j) {
    sum = _mm512_add_epi32(sum, acc[j]);
  }
  return static_cast<float>(_mm512_reduce_add_epi32(sum));
}
#endif  // HARDNEG_PEAK_X86

using Rounds = float (*)(uint64_t rounds, int32_t bits);

// `threads` threads at once run `rounds` for `seconds`: total GOP/s.
double MeasureOnce(Rounds rounds, int ops, int threads, double seconds) {
  std::atomic<uint64_t> instructions{0};
  std::vector<std::thread> pool;
  const absl::Time start = absl::Now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      // 1.0 in bfloat16 twice; as bytes, 0x80 and 0x3f.
      const int32_t bits = 0x3f803f80 + t;
      float sink = rounds(kRoundsPerCheck / 16, bits);  // warm-up
      const absl::Time deadline = absl::Now() + absl::Seconds(seconds);
      uint64_t local = 0;
      while (absl::Now() < deadline) {
        sink += rounds(kRoundsPerCheck, bits);
        local += kRoundsPerCheck * kAccumulators;
      }
      instructions += local;
      // Keeps the sums, so that the compiler keeps the calls (as
      // benchmark::DoNotOptimize does).
      __asm__ volatile("" : : "r,m"(sink) : "memory");
    });
  }
  for (std::thread& t : pool) t.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  return static_cast<double>(instructions.load()) * ops / elapsed / 1e9;
}

}  // namespace

int OpsPerInstruction(ScanPrecision precision) {
  switch (precision) {
    case ScanPrecision::kBf16:
      return 16 * 2 * 2;
    case ScanPrecision::kInt8:
      return 16 * 4 * 2;
    default:
      return 0;
  }
}

std::optional<double> InstructionPeakGops(ScanPrecision precision, int threads,
                                          double seconds) {
  Rounds rounds = nullptr;
#if defined(HARDNEG_PEAK_X86)
  if (precision == ScanPrecision::kBf16) rounds = Bf16Rounds;
  if (precision == ScanPrecision::kInt8) rounds = Int8Rounds;
#endif
  if (rounds == nullptr || !CpuRunsScan(precision)) return std::nullopt;
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    best = std::max(best, MeasureOnce(rounds, OpsPerInstruction(precision),
                                      std::max(threads, 1), seconds));
  }
  return best;
}

}  // namespace hardneg::bench

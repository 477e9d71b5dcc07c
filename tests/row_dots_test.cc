// RowDots, RowDotsHalf and ToHalf against double-precision arithmetic and
// known binary16 encodings, on every dimension up to 70 (the SIMD blocks of
// 32 and 8 and the scalar tail).
#include "index/row_dots.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace hardneg {
namespace {

// The value of binary16 bits, computed independently of the code under test.
double HalfToDouble(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  double v =
      exponent == 0
          ? std::ldexp(mantissa, -24)
          : (exponent == 31 ? std::numeric_limits<double>::infinity()
                            : std::ldexp(mantissa | 0x400, exponent - 25));
  return (h & 0x8000) != 0 ? -v : v;
}

uint16_t Half(float x) {
  uint16_t h = 0;
  ToHalf(&x, 1, &h);
  return h;
}

TEST(ToHalfTest, KnownEncodings) {
  EXPECT_EQ(Half(0.0f), 0x0000);
  EXPECT_EQ(Half(-0.0f), 0x8000);
  EXPECT_EQ(Half(1.0f), 0x3c00);
  EXPECT_EQ(Half(-2.0f), 0xc000);
  EXPECT_EQ(Half(1.0f / 3), 0x3555);
  EXPECT_EQ(Half(65504.0f), 0x7bff);  // the largest finite value
  EXPECT_EQ(Half(65520.0f), 0x7c00);  // halfway up: to even, infinity
  EXPECT_EQ(Half(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(Half(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(Half(std::ldexp(1.0f, -26)), 0x0000);  // rounds to zero
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to even.
  EXPECT_EQ(Half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(Half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
}

// The SIMD blocks of 8 and the scalar tail round alike, to nearest: the
// error is at most half a binary16 spacing.
TEST(ToHalfTest, RoundsToNearestInBlocksAndTail) {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> exponent(-30.0f, 15.9f);
  for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{1001}}) {
    std::vector<float> in(n);
    for (float& x : in) {
      x = std::exp2(exponent(rng)) * (rng() % 2 == 0 ? 1.0f : -1.0f);
    }
    std::vector<uint16_t> out(n);
    ToHalf(in.data(), n, out.data());
    for (size_t i = 0; i < n; ++i) {
      const double x = in[i];
      const double h = HalfToDouble(out[i]);
      const double spacing =
          std::fabs(x) < std::ldexp(1.0, -14)
              ? std::ldexp(1.0, -24)
              : std::ldexp(1.0, std::ilogb(x) - 10);  // x's binade
      EXPECT_LE(std::fabs(h - x), spacing / 2)
          << "n " << n << " i " << i << " x " << x << " h " << h;
    }
  }
}

TEST(RowDotsTest, MatchesDoublePrecisionOnEveryShape) {
  std::mt19937_64 rng(2);
  std::normal_distribution<float> normal;
  const size_t n = 37;
  for (size_t dim = 1; dim <= 70; ++dim) {
    for (size_t nq = 1; nq <= kMaxRowDotQueries + 1; ++nq) {
      std::vector<float> rows(n * dim);
      std::vector<float> queries(nq * dim);
      for (float& x : rows) x = normal(rng);
      for (float& x : queries) x = normal(rng);
      std::vector<uint16_t> half(rows.size());
      ToHalf(rows.data(), rows.size(), half.data());
      std::vector<float> out(nq * n, std::numeric_limits<float>::quiet_NaN());
      std::vector<float> out_half(nq * n,
                                  std::numeric_limits<float>::quiet_NaN());
      RowDots(rows.data(), n, dim, queries.data(), nq, out.data());
      RowDotsHalf(half.data(), n, dim, queries.data(), nq, out_half.data());
      for (size_t q = 0; q < nq; ++q) {
        for (size_t r = 0; r < n; ++r) {
          double want = 0;
          double want_half = 0;
          double magnitude = 0;
          for (size_t i = 0; i < dim; ++i) {
            const double a = queries[q * dim + i];
            want += a * rows[r * dim + i];
            want_half += a * HalfToDouble(half[r * dim + i]);
            magnitude += std::fabs(a * rows[r * dim + i]);
          }
          // Float accumulation of dim products.
          const double bound = (dim + 2) * std::ldexp(1.0, -24) * magnitude;
          EXPECT_LE(std::fabs(out[q * n + r] - want), bound)
              << "dim " << dim << " nq " << nq << " q " << q << " r " << r;
          EXPECT_LE(std::fabs(out_half[q * n + r] - want_half), 1.01 * bound)
              << "dim " << dim << " nq " << nq << " q " << q << " r " << r;
        }
      }
      if (HasFailure()) return;
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
// RowDotsSimd reads CPUID itself; it must decide as g++'s
// __builtin_cpu_supports does (clang 14's cannot ask about F16C).
TEST(RowDotsSimdTest, AgreesWithTheCompilersCpuChecks) {
  const bool avx2_fma =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#if defined(__clang__)
  if (RowDotsSimd()) EXPECT_TRUE(avx2_fma);
#else
  EXPECT_EQ(RowDotsSimd(), avx2_fma && __builtin_cpu_supports("f16c"));
#endif
}
#endif

}  // namespace
}  // namespace hardneg

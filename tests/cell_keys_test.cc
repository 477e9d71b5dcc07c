// The cell-ranking loops (CellKeys, CellBins, CellsFrom): the SIMD and
// portable versions agree exactly, with NaN, infinite and tied scores, L2
// and inner product, and lengths that leave SIMD tails; and both agree
// with the definitions.
#include "index/cell_keys.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace hardneg {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// Scores with every special value and repeats, uniform otherwise.
std::vector<float> Scores(std::mt19937_64& rng, size_t n) {
  std::uniform_real_distribution<float> uniform(-3.0f, 3.0f);
  std::vector<float> v(n);
  for (float& x : v) x = uniform(rng);
  const float special[] = {kNan, kInf, -kInf, 0.0f, -0.0f, 1e30f, -1e30f};
  for (size_t j = 0; j < n; j += 5) v[j] = special[(j / 5) % 7];
  for (size_t j = 3; j + 1 < n; j += 11) v[j + 1] = v[j];
  return v;
}

// The same bits (so -0.0 is not 0.0).
bool SameBits(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, sizeof x);
  std::memcpy(&y, &b, sizeof y);
  return x == y;
}

TEST(CellKeysTest, SimdAndPortableAgreeWithTheDefinitions) {
  std::mt19937_64 rng(41);
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{15},
                   size_t{16}, size_t{17}, size_t{100}, size_t{4370}}) {
    for (bool l2 : {false, true}) {
      SCOPED_TRACE("n " + std::to_string(n) + (l2 ? " L2" : " IP"));
      const std::vector<float> raw = Scores(rng, n);
      std::vector<float> sq(n);
      std::uniform_real_distribution<float> positive(0.0f, 2.0f);
      for (float& x : sq) x = positive(rng);
      const float* cell_sq = l2 ? sq.data() : nullptr;
      std::vector<float> simd = raw;
      std::vector<float> portable = raw;
      float simd_lo, simd_hi, lo, hi;
      CellKeys(simd.data(), cell_sq, n, &simd_lo, &simd_hi);
      CellKeys(portable.data(), cell_sq, n, &lo, &hi, /*portable=*/true);
      float want_lo = kInf;
      float want_hi = -kInf;
      for (size_t c = 0; c < n; ++c) {
        float want = l2 ? 2 * raw[c] - sq[c] : raw[c];
        if (std::isnan(want)) want = -kInf;
        ASSERT_TRUE(SameBits(simd[c], want)) << c;
        ASSERT_TRUE(SameBits(portable[c], want)) << c;
        if (std::isfinite(want)) {
          want_lo = std::min(want_lo, want);
          want_hi = std::max(want_hi, want);
        }
      }
      EXPECT_EQ(simd_lo, want_lo);
      EXPECT_EQ(simd_hi, want_hi);
      EXPECT_EQ(lo, want_lo);
      EXPECT_EQ(hi, want_hi);
      if (!(lo <= hi)) continue;
      // Bins over the whole range (the +-1e30 scores squeeze the rest into
      // a few), over the uniform scores' range, and a scale that sends
      // keys past both ends.
      const std::pair<double, double> ranges[] = {
          {lo, 1023.0 / (static_cast<double>(hi) - lo)},
          {-3.0, 1023.0 / 6.0},
          {-1.0, 4000.0}};
      for (const auto& [bin_lo, scale] : ranges) {
        std::vector<uint16_t> simd_bins(n), bins(n);
        CellBins(portable.data(), n, bin_lo, scale, 1023, simd_bins.data());
        CellBins(portable.data(), n, bin_lo, scale, 1023, bins.data(),
                 /*portable=*/true);
        std::vector<size_t> per_bin(1024, 0);
        for (size_t c = 0; c < n; ++c) {
          ASSERT_EQ(bins[c], CellBin(portable[c], bin_lo, scale, 1023)) << c;
          ASSERT_EQ(simd_bins[c], bins[c]) << c;
          ++per_bin[bins[c]];
        }
        EXPECT_EQ(CellBin(-kInf, bin_lo, scale, 1023), 0);
        EXPECT_EQ(CellBin(kNan, bin_lo, scale, 1023), 0);
        EXPECT_EQ(CellBin(kInf, bin_lo, scale, 1023), 1023);
        // Over the uniform scores' range no bin holds half the cells (the
        // loops are not trivially equal).
        if (n >= 100 && bin_lo == -3.0) {
          EXPECT_LT(*std::max_element(per_bin.begin(), per_bin.end()), n / 2);
        }
        for (uint16_t cut : {uint16_t{0}, uint16_t{1}, uint16_t{512},
                             uint16_t{1023}, uint16_t{1024}}) {
          std::vector<uint32_t> simd_cells = {7};  // appended to
          std::vector<uint32_t> cells = {7};
          CellsFrom(bins.data(), n, cut, simd_cells);
          CellsFrom(bins.data(), n, cut, cells, /*portable=*/true);
          std::vector<uint32_t> want = {7};
          for (size_t c = 0; c < n; ++c) {
            if (bins[c] >= cut) want.push_back(static_cast<uint32_t>(c));
          }
          EXPECT_EQ(simd_cells, want) << "cut " << cut;
          EXPECT_EQ(cells, want) << "cut " << cut;
        }
      }
    }
  }
}

}  // namespace
}  // namespace hardneg

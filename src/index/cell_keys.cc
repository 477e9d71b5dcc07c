#include "index/cell_keys.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HARDNEG_CELL_KEYS_X86 1
#endif

#include <cmath>
#include <limits>

#include "index/cpu_state.h"

namespace hardneg {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// The portable loops, and the SIMD loops' tails. (Selects, not branches.)
void KeysFrom(size_t c, float* score, const float* sq, size_t n, float& lo,
              float& hi) {
  for (; c < n; ++c) {
    float v = sq == nullptr ? score[c] : 2 * score[c] - sq[c];
    v = std::isnan(v) ? -kInf : v;
    score[c] = v;
    const bool finite = std::abs(v) < kInf;
    lo = finite && v < lo ? v : lo;
    hi = finite && v > hi ? v : hi;
  }
}

void BinsFrom(size_t c, const float* key, size_t n, double lo, double scale,
              uint16_t top, uint16_t* bins) {
  for (; c < n; ++c) bins[c] = CellBin(key[c], lo, scale, top);
}

void CellsFromFrom(size_t c, const uint16_t* bins, size_t n, uint16_t cut,
                   std::vector<uint32_t>& out) {
  for (; c < n; ++c) {
    if (bins[c] >= cut) out.push_back(static_cast<uint32_t>(c));
  }
}

#if defined(HARDNEG_CELL_KEYS_X86)
#define HARDNEG_AVX2 __attribute__((target("avx2")))

bool Simd() { return CpuFeatures().avx2; }

// The same operations as KeysFrom, eight lanes at a time: v + v is 2 v
// exactly, and min/max of the finite keys do not depend on the order.
HARDNEG_AVX2 void KeysAvx2(float* score, const float* sq, size_t n, float& lo,
                           float& hi) {
  const __m256 inf = _mm256_set1_ps(kInf);
  const __m256 minus_inf = _mm256_set1_ps(-kInf);
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 low = inf;
  __m256 high = minus_inf;
  size_t c = 0;
  for (; c + 8 <= n; c += 8) {
    __m256 v = _mm256_loadu_ps(score + c);
    if (sq != nullptr) {
      v = _mm256_sub_ps(_mm256_add_ps(v, v), _mm256_loadu_ps(sq + c));
    }
    v = _mm256_blendv_ps(v, minus_inf, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    _mm256_storeu_ps(score + c, v);
    const __m256 finite =
        _mm256_cmp_ps(_mm256_and_ps(v, magnitude), inf, _CMP_LT_OQ);
    low = _mm256_min_ps(low, _mm256_blendv_ps(inf, v, finite));
    high = _mm256_max_ps(high, _mm256_blendv_ps(minus_inf, v, finite));
  }
  alignas(32) float lows[8];
  alignas(32) float highs[8];
  _mm256_store_ps(lows, low);
  _mm256_store_ps(highs, high);
  for (size_t j = 0; j < 8; ++j) {
    lo = lows[j] < lo ? lows[j] : lo;
    hi = highs[j] > hi ? highs[j] : hi;
  }
  KeysFrom(c, score, sq, n, lo, hi);
}

// CellBin's operations in double, four lanes at a time: max_pd and min_pd
// return their second operand for a NaN, as the selects do.
HARDNEG_AVX2 void BinsAvx2(const float* key, size_t n, double lo, double scale,
                           uint16_t top, uint16_t* bins) {
  const __m256d low = _mm256_set1_pd(lo);
  const __m256d times = _mm256_set1_pd(scale);
  const __m256d zero = _mm256_setzero_pd();
  const __m256d ceiling = _mm256_set1_pd(top);
  size_t c = 0;
  for (; c + 8 <= n; c += 8) {
    __m128i half[2];
    for (size_t h = 0; h < 2; ++h) {
      __m256d at = _mm256_mul_pd(
          _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(key + c + 4 * h)), low),
          times);
      at = _mm256_min_pd(_mm256_max_pd(at, zero), ceiling);
      half[h] = _mm256_cvttpd_epi32(at);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bins + c),
                     _mm_packus_epi32(half[0], half[1]));
  }
  BinsFrom(c, key, n, lo, scale, top, bins);
}

HARDNEG_AVX2 void CellsFromAvx2(const uint16_t* bins, size_t n, uint16_t cut,
                                std::vector<uint32_t>& out) {
  // bins[c] > cut - 1, as signed 16-bit values (cut <= 32767).
  const __m256i below = _mm256_set1_epi16(static_cast<int16_t>(cut - 1));
  size_t c = 0;
  for (; c + 16 <= n; c += 16) {
    const __m256i v =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bins + c));
    // Two mask bits a bin: keep the low one.
    auto mask = static_cast<uint32_t>(
                    _mm256_movemask_epi8(_mm256_cmpgt_epi16(v, below))) &
                0x55555555u;
    while (mask != 0) {
      out.push_back(static_cast<uint32_t>(c + __builtin_ctz(mask) / 2));
      mask &= mask - 1;
    }
  }
  CellsFromFrom(c, bins, n, cut, out);
}
#endif  // HARDNEG_CELL_KEYS_X86

}  // namespace

void CellKeys(float* score, const float* sq, size_t n, float* lo, float* hi,
              bool portable) {
  *lo = kInf;
  *hi = -kInf;
#if defined(HARDNEG_CELL_KEYS_X86)
  if (!portable && Simd()) return KeysAvx2(score, sq, n, *lo, *hi);
#endif
  (void)portable;
  KeysFrom(0, score, sq, n, *lo, *hi);
}

void CellBins(const float* key, size_t n, double lo, double scale, uint16_t top,
              uint16_t* bins, bool portable) {
#if defined(HARDNEG_CELL_KEYS_X86)
  if (!portable && Simd()) return BinsAvx2(key, n, lo, scale, top, bins);
#endif
  (void)portable;
  BinsFrom(0, key, n, lo, scale, top, bins);
}

void CellsFrom(const uint16_t* bins, size_t n, uint16_t cut,
               std::vector<uint32_t>& out, bool portable) {
#if defined(HARDNEG_CELL_KEYS_X86)
  if (!portable && Simd()) return CellsFromAvx2(bins, n, cut, out);
#endif
  (void)portable;
  CellsFromFrom(0, bins, n, cut, out);
}

}  // namespace hardneg

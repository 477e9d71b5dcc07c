#include "index/row_dots.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HARDNEG_ROW_DOTS_X86 1
#endif

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "index/cpu_state.h"

namespace hardneg {
namespace {

// Portable binary16 conversions, for CPUs without F16C and for the tails.
uint16_t HalfBits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // rounds to infinity
  if (x < 0x38800000u) {
    // Below 2^-14: a subnormal, m * 2^-24 (the product is exact).
    float a;
    std::memcpy(&a, &x, sizeof a);
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  // Normal: rebias the exponent, round 23 mantissa bits to 10, ties to even.
  uint32_t h = (x - 0x38000000u) >> 13;
  const uint32_t rest = x & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) != 0)) ++h;
  return sign | static_cast<uint16_t>(h);
}

float HalfValue(uint16_t h) {
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  float v;
  if (exponent == 0) {
    v = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    v = mantissa != 0 ? std::numeric_limits<float>::quiet_NaN()
                      : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(mantissa | 0x400u),
                   static_cast<int>(exponent) - 25);
  }
  return (h & 0x8000u) != 0 ? -v : v;
}

template <typename T>
float Value(T x) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    return HalfValue(x);
  } else {
    return x;
  }
}

template <typename T>
void PortableDots(const T* rows, size_t n, size_t dim, const float* queries,
                  size_t nq, float* out) {
  for (size_t r = 0; r < n; ++r) {
    for (size_t q = 0; q < nq; ++q) {
      float s = 0;
      for (size_t i = 0; i < dim; ++i) {
        s += Value(rows[r * dim + i]) * queries[q * dim + i];
      }
      out[q * n + r] = s;
    }
  }
}

#if defined(HARDNEG_ROW_DOTS_X86)
#define HARDNEG_SIMD __attribute__((target("avx2,fma,f16c")))

template <typename T>
HARDNEG_SIMD inline __m256 Load8(const T* p) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    return _mm256_loadu_ps(p);
  }
}

HARDNEG_SIMD inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// NQ queries against each row: four independent accumulators per query, so
// that the FMA latency is hidden and the row is the only stream from memory.
template <typename T, size_t NQ>
HARDNEG_SIMD void SimdDots(const T* rows, size_t n, size_t dim,
                           const float* queries, float* out) {
  const size_t d32 = dim / 32 * 32;
  const size_t d8 = dim / 8 * 8;
  for (size_t r = 0; r < n; ++r) {
    const T* x = rows + r * dim;
    __m256 acc[NQ][4];
    for (size_t q = 0; q < NQ; ++q) {
      for (size_t a = 0; a < 4; ++a) acc[q][a] = _mm256_setzero_ps();
    }
    size_t i = 0;
    for (; i < d32; i += 32) {
      for (size_t a = 0; a < 4; ++a) {
        const __m256 v = Load8(x + i + 8 * a);
        for (size_t q = 0; q < NQ; ++q) {
          acc[q][a] = _mm256_fmadd_ps(
              v, _mm256_loadu_ps(queries + q * dim + i + 8 * a), acc[q][a]);
        }
      }
    }
    for (; i < d8; i += 8) {
      const __m256 v = Load8(x + i);
      for (size_t q = 0; q < NQ; ++q) {
        acc[q][0] = _mm256_fmadd_ps(v, _mm256_loadu_ps(queries + q * dim + i),
                                    acc[q][0]);
      }
    }
    for (size_t q = 0; q < NQ; ++q) {
      float s = Sum8(_mm256_add_ps(_mm256_add_ps(acc[q][0], acc[q][1]),
                                   _mm256_add_ps(acc[q][2], acc[q][3])));
      for (size_t j = i; j < dim; ++j) {
        float v;
        if constexpr (std::is_same_v<T, uint16_t>) {
          v = _cvtsh_ss(x[j]);
        } else {
          v = x[j];
        }
        s += v * queries[q * dim + j];
      }
      out[q * n + r] = s;
    }
  }
}

template <typename T>
void Dispatch(const T* rows, size_t n, size_t dim, const float* queries,
              size_t nq, float* out) {
  switch (nq) {
    case 1:
      return SimdDots<T, 1>(rows, n, dim, queries, out);
    case 2:
      return SimdDots<T, 2>(rows, n, dim, queries, out);
    default:
      for (size_t q0 = 0; q0 < nq; q0 += 3) {
        if (nq - q0 >= 3) {
          SimdDots<T, 3>(rows, n, dim, queries + q0 * dim, out + q0 * n);
        } else {
          Dispatch(rows, n, dim, queries + q0 * dim, nq - q0, out + q0 * n);
        }
      }
  }
}

HARDNEG_SIMD void SimdToHalf(const float* in, size_t n, uint16_t* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(
        reinterpret_cast<__m128i*>(out + i),
        _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) out[i] = HalfBits(in[i]);
}

#endif  // HARDNEG_ROW_DOTS_X86

}  // namespace

bool RowDotsSimd() {
#if defined(HARDNEG_ROW_DOTS_X86)
  // AVX2, FMA and F16C (read from CPUID, index/cpu_state.h: clang 14's
  // __builtin_cpu_supports does not know "f16c").
  const CpuFeatureSet& cpu = CpuFeatures();
  return cpu.avx2 && cpu.fma && cpu.f16c;
#else
  return false;
#endif
}

void RowDots(const float* rows, size_t n, size_t dim, const float* queries,
             size_t nq, float* out) {
#if defined(HARDNEG_ROW_DOTS_X86)
  if (RowDotsSimd()) return Dispatch(rows, n, dim, queries, nq, out);
#endif
  PortableDots(rows, n, dim, queries, nq, out);
}

void RowDotsHalf(const uint16_t* rows, size_t n, size_t dim,
                 const float* queries, size_t nq, float* out) {
#if defined(HARDNEG_ROW_DOTS_X86)
  if (RowDotsSimd()) return Dispatch(rows, n, dim, queries, nq, out);
#endif
  PortableDots(rows, n, dim, queries, nq, out);
}

void ToHalf(const float* in, size_t n, uint16_t* out) {
#if defined(HARDNEG_ROW_DOTS_X86)
  if (RowDotsSimd()) return SimdToHalf(in, n, out);
#endif
  for (size_t i = 0; i < n; ++i) out[i] = HalfBits(in[i]);
}

}  // namespace hardneg

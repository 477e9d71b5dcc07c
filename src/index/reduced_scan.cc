#include "index/reduced_scan.h"

#if defined(__x86_64__) || defined(__i386__)
// g++ 12's AVX-512 intrinsics read _mm512_undefined_ps(), which its own
// -Wuninitialized then reports at every use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define HARDNEG_REDUCED_X86 1
#endif

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <utility>

#include "index/cpu_state.h"

namespace hardneg {

float FloatAbove(double bound) {
  // Room for the float arithmetic (two fused multiply-adds) that combines
  // the bound, then the next float up.
  const auto f = static_cast<float>(bound * (1 + 1.0 / (1 << 20)));
  return std::nextafter(f, std::numeric_limits<float>::infinity());
}

// The error bounds
// ================
// Let q be a query, x a row, and q', x' the vectors the kernels multiply
// (dequantised: int8 values times their scales, or the bfloat16 values).
// With e = x - x' and f = q - q':
//
//   q.x - q'.x' = q.e + f.x'   so   |q.x - q'.x'| <= |q| |e| + |f| |x'|
//
// (Cauchy-Schwarz). Packing measures |e| and |x'| of every row, in double,
// and keeps each, rounded up to a float (residuals, norms), and the largest;
// Prepare measures |q| and |f| of each query. Each row gets its own bound,
// so a few rows with a coarse scale widen only their own. The arithmetic
// adds:
//
// - int8: the kernel's sum of d products of 8-bit integers is exact in
//   int32 (|sum| <= 255 * 127 * d < 2^31 for d <= kMaxInt8Dim), and exact when
//   converted to float while |sum - offset| <= 127^2 d <= 2^24 (d <= 1040;
//   beyond, one more rounding). Scaling by fl(scale_x * scale_q) rounds
//   twice more: at most 3u |q'.x'| <= 3u |q'| |x'| in all (u = 2^-24),
//   with |q'| <= |q| + |f|.
// - bf16: each product of two bfloat16 values is exact in float; the d
//   float additions of a lane round at most d times: at most
//   gamma_d sum|q'_i x'_i| <= gamma_d |q'| |x'|, taken as (d + 8) u
//   (which, times 1.0625, covers gamma_d = d u / (1 - d u) to d ~ 10^6).
//   vdpbf16ps flushes subnormal inputs and results to zero: inputs are
//   flushed when packed (so e and f include it); each of the 2d results
//   that may flush loses less than 2^-126.
//
// The float32 rescoring of a candidate (FloatDot: at most d + 8 roundings
// on |q| |x_r| <= |q| (|e_r| + |x'_r|)) and the float arithmetic of keys
// and screens (a few roundings of |key| <= (|q| + |f|) |x'_r|) add
// (d + 16) u |q| |e_r| + (d + 16) u (|q| + |f|) |x'_r|: so a candidate that
// is certainly under a ceiling stays under it once rescored.
//
// Centred rows (m, the rows' mean rounded to float; x' then packs
// x - m, with e = x - m - x' measured in double):
//
//   q.x = q.m + q.(x - m)
//
// The kernels add o = fl(q.m) (summed in double: |o - q.m| <= u |q| |m|
// and a negligible double error) to the reduced dot, whose error is the
// above with x - m for x. The addition rounds once more on |key| <=
// (|q| + |f|) |x'_r| + |q| |m|; the rescoring (on |x_r| <= |m| + |e_r| +
// |x'_r|) and the screens' few roundings now also act on |q| |m|. All of
// it is within (d + 32) u |q| |m|, added to c (times 1.0625).
//
// A query along the rows' direction (n = m / |m| in float; each row keeps
// p_r = fl(n.(x_r - m)), summed in double) may be packed less its share
// l = fl(q.n): w = q - l n (in double, exact to 2^-53), q' its packing,
// f = w - q'. With y = x - m = x' + e:
//
//   q.y - (q'.x' + l p_r) = w.e + f.x' + l (n.y - p_r)
//
// so |error| <= |w| |e| + |f| |x'| + |l| u |p_r|, and |p_r| <= |n| (|e| +
// |x'|) (1 + u). The kernels' l p_r and its addition round twice more on
// |l| |n| (|e| + |x'|), and the addition once on |q'| |x'| <= (|w| + |f|)
// |x'|: a = |w| + 4u |l| |n| + (d + 16) u |q| and b = |f| + 4u |l| |n| +
// (arithmetic + u) (|w| + |f|) + (d + 16) u (|q| + |f|), each times
// 1.0625 (c as above). Prepare keeps whichever packing, whole or less the
// share, has the smaller bound over all rows.
//
// DotSlack(i, r) is the sum, times 1.0625 for the rounding of the bound's
// own arithmetic, written a |e_r| + b |x'_r| + c for the kernels. For L2
// keys (2 dot - |q|^2 - |x|^2) callers double it and add the rounding of
// the squares and of the keys' float arithmetic, a few u (|q|^2 + |x|^2).

namespace {

constexpr double kUnitRoundoff = 1.0 / (1 << 24);
constexpr size_t kLineBytes = 64;
// Rows a tile covers (4 groups) and the most queries a tile takes.
constexpr size_t kTileGroups = 4;
constexpr size_t kTileQueries = 6;

// float -> bfloat16 bits, rounded to nearest even, subnormals flushed to
// (signed) zero as vdpbf16ps reads them. Inputs are finite; a value that
// rounds past bfloat16's range becomes infinite, which the bound reports.
uint16_t Bf16Bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7f800000u) == 0) return static_cast<uint16_t>((x >> 16) & 0x8000u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float Bf16Value(uint16_t bits) {
  const uint32_t x = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

// Lines of at least this many bytes are read in long runs (a Flat index's
// packed rows, an IVF index's lists together): they are mapped on their
// own (never from malloc's heap, which would keep the advice for whatever
// reuses the range), on 2 MB boundaries, and advised as transparent huge
// pages, which the kernel grants under THP "madvise" or "always" (a hint
// only: without THP, or under "never", the pages stay 4 KB). Each 4 KB
// page of a long run otherwise costs the scan a TLB miss: on W2's lists,
// two single-thread IVF searches of 187 queries each (own class excluded,
// 40,000 candidates; the lists in one allocation with the advice against
// 1,024 allocations) were faster in 8 of 8 alternated rounds, by 4.7% on
// average (15,060 -> 15,564 q/s medians); with one positive excluded
// (2,000 candidates), 4 of 6, +1.1%.
constexpr size_t kHugePageBytes = size_t{2} << 20;
constexpr size_t kHugeLinesBytes = 2 * kHugePageBytes;

// `bytes` rounded up to a multiple of `unit`.
size_t RoundUp(size_t bytes, size_t unit) {
  return (bytes + unit - 1) / unit * unit;
}

// What AllocateLines(bytes) allocates.
size_t LinesAllocated(size_t bytes) {
  return bytes < kHugeLinesBytes ? bytes : RoundUp(bytes, kHugePageBytes);
}

// `bytes` (a multiple of a line, at least one) aligned to a line, and long
// ones as above; throws std::bad_alloc. Freed by PackedLinesDeleter{bytes}.
uint8_t* AllocateLines(size_t bytes) {
  if (bytes < kHugeLinesBytes) {
    void* lines = std::aligned_alloc(kLineBytes, bytes);
    if (lines == nullptr) throw std::bad_alloc();
    return static_cast<uint8_t*>(lines);
  }
  const size_t allocated = LinesAllocated(bytes);
  // A page-aligned mapping a huge page longer, trimmed to a huge page's
  // boundary at both ends.
  void* mapped =
      mmap(nullptr, allocated + kHugePageBytes, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) throw std::bad_alloc();
  const auto begin = reinterpret_cast<uintptr_t>(mapped);
  const uintptr_t aligned = RoundUp(begin, kHugePageBytes);
  if (aligned > begin) munmap(mapped, aligned - begin);
  const uintptr_t tail = begin + kHugePageBytes - aligned;
  // NOLINTNEXTLINE(performance-no-int-to-ptr): mmap's own range
  auto* lines = reinterpret_cast<uint8_t*>(aligned);
  if (tail > 0) munmap(lines + allocated, tail);
#if defined(MADV_HUGEPAGE)
  madvise(lines, allocated, MADV_HUGEPAGE);  // advice: the result is moot
#endif
  return lines;
}

// Rounds a bound up a little, so that its own rounding never shrinks it.
double Up(double bound) { return bound * (1 + 1e-9); }

// The int8 value of v at scale s (s > 0), and 0 when s == 0.
int32_t Quantise(float v, float s) {
  if (s == 0) return 0;
  const float r = std::nearbyint(v / s);
  // NaN from an infinite value over an infinite scale (a centred row, or a
  // query less its share, past float's range): 0, whose residual is then
  // infinite, so that the caller scans float32.
  if (std::isnan(r)) return 0;
  return static_cast<int32_t>(std::clamp(r, -127.0f, 127.0f));
}

// The scale of a vector whose largest |component| is `max_abs`.
float Int8Scale(float max_abs) { return max_abs / 127.0f; }

#if defined(HARDNEG_REDUCED_X86)
#define HARDNEG_AVX512 __attribute__((target("avx512f")))

// AVX-512 F and BW (what every kernel here uses) plus VNNI or BF16.
bool CpuHasVnni() {
  const CpuFeatureSet& cpu = CpuFeatures();
  return cpu.avx512f && cpu.avx512bw && cpu.avx512_vnni;
}

bool CpuHasBf16() {
  const CpuFeatureSet& cpu = CpuFeatures();
  return cpu.avx512f && cpu.avx512bw && cpu.avx512_bf16;
}

// What one tile call needs besides its position.
struct TileArgs {
  const ReducedRows* rows;
  const ReducedQueries* queries;
  const ReducedSink* sink;
  size_t end;  // rows at or past it are padding
  // The per-row floats a tile's end reads (int8 scales in Tile; residuals,
  // norms, projections and squared norms in Emit), those this scan uses,
  // which the first query tile asks for ahead (PrefetchRowFloats).
  static constexpr size_t kMaxRowFloats = 5;
  std::array<const float*, kMaxRowFloats> row_floats;
  size_t row_float_arrays;
};

// Screens the 16 keys of group g for query i and offers those that pass
// (or, for a sink with keys, writes them all, plus their slack when it
// has coefficients).
// Always inlined: a call would spill the tile's live accumulators.
HARDNEG_AVX512 __attribute__((always_inline)) inline void Emit(
    const TileArgs& t, size_t g, size_t i, __m512 dot) {
  const size_t row0 = g * kReducedGroupRows;
  const size_t live = std::min(kReducedGroupRows, t.end - row0);
  const auto valid = static_cast<__mmask16>((1u << live) - 1);
  // q.m for centred rows (0 otherwise): the same float addition as the
  // portable kernel's (this file is built without contraction into FMAs).
  __m512 full = _mm512_add_ps(dot, _mm512_set1_ps(t.queries->offset(i)));
  if (t.rows->projections() != nullptr) {
    // And the query's share along the rows' direction, times each row's
    // projection on it (0 for a query packed whole).
    full = _mm512_add_ps(
        full, _mm512_mul_ps(_mm512_set1_ps(t.queries->along(i)),
                            _mm512_loadu_ps(t.rows->projections() + row0)));
  }
  __m512 key = full;
  const ReducedSink& sink = *t.sink;
  if (sink.row_sq != nullptr) {
    const __m512 row_sq = _mm512_maskz_loadu_ps(valid, sink.row_sq + row0);
    key = _mm512_sub_ps(_mm512_sub_ps(_mm512_add_ps(full, full),
                                      _mm512_set1_ps(sink.query_sq[i])),
                        row_sq);
  }
  // The row's slack: a e_r + b n_r + c (+ d |x|^2 for L2; zero without
  // coefficients).
  __m512 slack = _mm512_setzero_ps();
  if (sink.slack_a != nullptr) {
    slack =
        _mm512_fmadd_ps(_mm512_set1_ps(sink.slack_a[i]),
                        _mm512_loadu_ps(t.rows->residuals() + row0),
                        _mm512_fmadd_ps(_mm512_set1_ps(sink.slack_b[i]),
                                        _mm512_loadu_ps(t.rows->norms() + row0),
                                        _mm512_set1_ps(sink.slack_c[i])));
    if (sink.row_sq != nullptr) {
      slack = _mm512_fmadd_ps(_mm512_set1_ps(sink.slack_d[i]),
                              _mm512_maskz_loadu_ps(valid, sink.row_sq + row0),
                              slack);
    }
  }
  if (sink.keys != nullptr) {
    const __m512 out =
        sink.slack_a != nullptr ? _mm512_add_ps(key, slack) : key;
    _mm512_mask_storeu_ps(
        sink.keys + i * sink.key_stride + (row0 - sink.key_first), valid, out);
    return;
  }
  __mmask16 mask =
      _mm512_mask_cmp_ps_mask(valid, _mm512_add_ps(key, slack),
                              _mm512_set1_ps(sink.screen[i]), _CMP_GE_OQ);
  if (mask == 0) return;
  alignas(64) float keys[kReducedGroupRows];
  alignas(64) float slacks[kReducedGroupRows];
  _mm512_store_ps(keys, key);
  _mm512_store_ps(slacks, slack);
  while (mask != 0) {
    const auto lane = static_cast<size_t>(__builtin_ctz(mask));
    mask = static_cast<__mmask16>(mask & (mask - 1));
    if (keys[lane] + slacks[lane] >= sink.screen[i]) {
      sink.offer(sink.context, i, row0 + lane, keys[lane], slacks[lane]);
    }
  }
}

// acc += the dot products of x's and b's int8 quadruples (x unsigned, b
// signed), in place: vpdpbusd (AVX512_VNNI, which the caller checked).
// Inline assembly because g++ 12 copies the accumulator before every
// intrinsic vpdpbusd (24 extra moves a step), and so that these functions
// need no target beyond AVX-512 F.
HARDNEG_AVX512 inline void Dpbusd(__m512i& acc, __m512i x, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(b));
}

// acc (16 floats) += the dot products of x's and b's bfloat16 pairs, in
// place: vdpbf16ps (AVX512_BF16, which the caller checked).
HARDNEG_AVX512 inline void Dpbf16(__m512i& acc, __m512i x, __m512i b) {
  __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(x), "v"(b));
}

// Asks for groups [g, g + groups)' entries of each of t.row_floats: every
// line that holds them (the arrays need not start on a line). Not
// base/prefetch.h's PrefetchLines, whose pointers must stay within the
// arrays: written on it, with the groups cut at the last row, the walk in
// Tile's comment showed no gain (9 to 18 of 20 walks faster a round,
// equal medians) where this form's was 16 to 20 of 20 at the same time.
HARDNEG_AVX512 __attribute__((always_inline)) inline void PrefetchRowFloats(
    const TileArgs& t, size_t g, size_t groups) {
  const size_t bytes = groups * kReducedGroupRows * sizeof(float);
  for (size_t a = 0; a < t.row_float_arrays; ++a) {
    // An address, not a pointer: it may lie past the array.
    const uintptr_t first = reinterpret_cast<uintptr_t>(t.row_floats[a]) +
                            g * kReducedGroupRows * sizeof(float);
    for (uintptr_t line = first / kLineBytes * kLineBytes; line < first + bytes;
         line += kLineBytes) {
      // NOLINTNEXTLINE(performance-no-int-to-ptr): an address only
      _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T0);
    }
  }
}

// Groups [g, g + R) against queries [i, i + Q) at precision P: R x Q
// accumulators held in registers over all steps, R row loads and Q
// broadcasts a step.
//
// The first query tile (i == 0) also prefetches the next R groups, a line
// of each a step. An IVF cell is scanned for a few query tiles only, so
// its rows come from memory, and each tile would otherwise wait for them
// (in-process on W2, 40,000 candidates a query: 13-18% less time). It
// asks for those groups' per-row floats too (PrefetchRowFloats), which
// the end of the next tile would otherwise wait for. A walk over 1,024
// lists of 977 int8 rows in cells of 226 (a temporary harness, with and
// without alternated 20 times a round) took 3-7% less time a row at 7
// queries a cell (W2's own-class service shape; faster in 15 to 20 of 20
// walks in each of five rounds), 3-9% at 3 and 2-3% at 14 (two rounds
// each, 15 to 20 of 20). On W2 itself, with a first form of it (a line
// an array a group), two single-thread Miners at 187 queries a batch (the
// service's shape under load) were faster in 4 of 6 alternated pairs, by
// 6% on average (-9% to +21%: the machine's noise).
// One query a scan showed no difference, so SimdScan leaves the floats
// out there. Past the last group the prefetches are wasted, not faults:
// prefetch instructions never fault.
template <ScanPrecision P, size_t R, size_t Q>
HARDNEG_AVX512 void Tile(const TileArgs& t, size_t g, size_t i) {
  const size_t steps = t.rows->steps();
  const uint8_t* base = t.rows->lines() + g * steps * kLineBytes;
  // An address, not a pointer: it may lie past the rows' allocation.
  const uintptr_t ahead =
      reinterpret_cast<uintptr_t>(base) + R * steps * kLineBytes;
  const bool fetch = i == 0;
  if (fetch) PrefetchRowFloats(t, g + R, R);
  __m512i acc[R][Q];
#pragma GCC unroll 8
  for (size_t r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (size_t j = 0; j < Q; ++j) acc[r][j] = _mm512_setzero_si512();
  }
  const uint32_t* q[Q];
#pragma GCC unroll 8
  for (size_t j = 0; j < Q; ++j) q[j] = t.queries->packed(i + j);
  for (size_t s = 0; s < steps; ++s) {
    if (fetch) {
#pragma GCC unroll 8
      for (size_t r = 0; r < R; ++r) {
        _mm_prefetch(
            // NOLINTNEXTLINE(performance-no-int-to-ptr): an address only
            reinterpret_cast<const char*>(ahead + (r * steps + s) * kLineBytes),
            _MM_HINT_T0);
      }
    }
    __m512i x[R];
#pragma GCC unroll 8
    for (size_t r = 0; r < R; ++r) {
      x[r] = _mm512_load_si512(base + (r * steps + s) * kLineBytes);
    }
#pragma GCC unroll 8
    for (size_t j = 0; j < Q; ++j) {
      const __m512i b = _mm512_set1_epi32(static_cast<int>(q[j][s]));
#pragma GCC unroll 8
      for (size_t r = 0; r < R; ++r) {
        if constexpr (P == ScanPrecision::kInt8) {
          Dpbusd(acc[r][j], x[r], b);
        } else {
          Dpbf16(acc[r][j], x[r], b);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (size_t r = 0; r < R; ++r) {
    if constexpr (P == ScanPrecision::kInt8) {
      const __m512 scales =
          _mm512_loadu_ps(t.rows->scales() + (g + r) * kReducedGroupRows);
#pragma GCC unroll 8
      for (size_t j = 0; j < Q; ++j) {
        const __m512i sum = _mm512_sub_epi32(
            acc[r][j], _mm512_set1_epi32(t.queries->correction(i + j)));
        const __m512 dot = _mm512_mul_ps(
            _mm512_cvtepi32_ps(sum),
            _mm512_mul_ps(scales, _mm512_set1_ps(t.queries->scale(i + j))));
        Emit(t, g + r, i + j, dot);
      }
    } else {
#pragma GCC unroll 8
      for (size_t j = 0; j < Q; ++j) {
        Emit(t, g + r, i + j, _mm512_castsi512_ps(acc[r][j]));
      }
    }
  }
}

using TileFn = void (*)(const TileArgs&, size_t, size_t);

template <template <size_t, size_t> class Kernel, size_t R, size_t... Q>
constexpr std::array<TileFn, sizeof...(Q)> TileRow(
    std::index_sequence<Q...> /*unused*/) {
  return {&Kernel<R, Q + 1>::Run...};
}

template <size_t R, size_t Q>
struct Int8Kernel {
  static void Run(const TileArgs& t, size_t g, size_t i) {
    Tile<ScanPrecision::kInt8, R, Q>(t, g, i);
  }
};
template <size_t R, size_t Q>
struct Bf16Kernel {
  static void Run(const TileArgs& t, size_t g, size_t i) {
    Tile<ScanPrecision::kBf16, R, Q>(t, g, i);
  }
};

// kTiles[r - 1][q - 1] runs r groups by q queries.
template <template <size_t, size_t> class Kernel>
struct TileTable {
  static constexpr std::array<std::array<TileFn, kTileQueries>, kTileGroups>
      kTiles = {TileRow<Kernel, 1>(std::make_index_sequence<kTileQueries>()),
                TileRow<Kernel, 2>(std::make_index_sequence<kTileQueries>()),
                TileRow<Kernel, 3>(std::make_index_sequence<kTileQueries>()),
                TileRow<Kernel, 4>(std::make_index_sequence<kTileQueries>())};
};

// The SIMD scan: 64-row tiles, each against every query tile while its
// rows are in the L1 cache.
void SimdScan(const ReducedRows& rows, const ReducedQueries& queries,
              size_t begin, size_t end, const ReducedSink& sink) {
  TileArgs t{&rows, &queries, &sink, end, {}, 0};
  if (queries.size() > 1) {
    auto add = [&t](const float* floats) {
      if (floats != nullptr) t.row_floats[t.row_float_arrays++] = floats;
    };
    if (rows.precision() == ScanPrecision::kInt8) add(rows.scales());
    if (sink.slack_a != nullptr) {
      add(rows.residuals());
      add(rows.norms());
    }
    add(rows.projections());
    add(sink.row_sq);
  }
  const auto& tiles = rows.precision() == ScanPrecision::kInt8
                          ? TileTable<Int8Kernel>::kTiles
                          : TileTable<Bf16Kernel>::kTiles;
  const size_t g_end = (end + kReducedGroupRows - 1) / kReducedGroupRows;
  const size_t nq = queries.size();
  if (nq == 0) return;
  // Query tiles of near-equal sizes (13 queries: 5, 4, 4; not 6, 6, 1):
  // a tile of one query costs nearly what a full one does.
  const size_t count = (nq + kTileQueries - 1) / kTileQueries;
  const size_t base = nq / count;
  const size_t extra = nq % count;
  for (size_t g = begin / kReducedGroupRows; g < g_end; g += kTileGroups) {
    const size_t r = std::min(kTileGroups, g_end - g);
    for (size_t i = 0, tile = 0; i < nq; ++tile) {
      const size_t q = base + (tile < extra ? 1 : 0);
      tiles[r - 1][q - 1](t, g, i);
      i += q;
    }
  }
}

// a . b with 4 x 16 float accumulators.
HARDNEG_AVX512 float Avx512Dot(const float* a, const float* b, size_t dim) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps(), _mm512_setzero_ps()};
  size_t i = 0;
  for (; i + 64 <= dim; i += 64) {
    for (size_t a4 = 0; a4 < 4; ++a4) {
      acc[a4] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16 * a4),
                                _mm512_loadu_ps(b + i + 16 * a4), acc[a4]);
    }
  }
  for (; i + 16 <= dim; i += 16) {
    acc[0] =
        _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc[0]);
  }
  if (i < dim) {
    const auto tail = static_cast<__mmask16>((1u << (dim - i)) - 1);
    acc[1] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, a + i),
                             _mm512_maskz_loadu_ps(tail, b + i), acc[1]);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]),
                                            _mm512_add_ps(acc[2], acc[3])));
}
#endif  // HARDNEG_REDUCED_X86

// The portable scan: the same sums, one row and query at a time.
void PortableScan(const ReducedRows& rows, const ReducedQueries& queries,
                  size_t begin, size_t end, const ReducedSink& sink) {
  const size_t steps = rows.steps();
  const bool int8 = rows.precision() == ScanPrecision::kInt8;
  for (size_t row = begin; row < end; ++row) {
    const size_t g = row / kReducedGroupRows;
    const size_t lane = row % kReducedGroupRows;
    const uint8_t* line = rows.lines() + g * steps * kLineBytes + lane * 4;
    for (size_t i = 0; i < queries.size(); ++i) {
      const uint32_t* q = queries.packed(i);
      float dot = 0;
      if (int8) {
        int64_t sum = 0;
        for (size_t s = 0; s < steps; ++s) {
          const uint8_t* x = line + s * kLineBytes;
          for (size_t b = 0; b < 4; ++b) {
            const auto qb = static_cast<int8_t>((q[s] >> (8 * b)) & 0xffu);
            sum += static_cast<int64_t>(x[b]) * qb;
          }
        }
        // Exact (kMaxInt8Dim keeps it within int32), as the SIMD lanes'.
        const auto exact = static_cast<int32_t>(sum - queries.correction(i));
        dot =
            static_cast<float>(exact) * (rows.scales()[row] * queries.scale(i));
      } else {
        for (size_t s = 0; s < steps; ++s) {
          uint16_t x[2];
          std::memcpy(x, line + s * kLineBytes, sizeof x);
          dot += Bf16Value(x[1]) * Bf16Value(static_cast<uint16_t>(q[s] >> 16));
          dot += Bf16Value(x[0]) * Bf16Value(static_cast<uint16_t>(q[s]));
        }
      }
      dot += queries.offset(i);
      if (rows.projections() != nullptr) {
        dot += queries.along(i) * rows.projections()[row];
      }
      float key = dot;
      if (sink.row_sq != nullptr) {
        key = 2 * dot - sink.query_sq[i] - sink.row_sq[row];
      }
      float slack = 0;
      if (sink.slack_a != nullptr) {
        slack = sink.slack_a[i] * rows.residuals()[row] +
                (sink.slack_b[i] * rows.norms()[row] + sink.slack_c[i]);
        if (sink.row_sq != nullptr) {
          slack += sink.slack_d[i] * sink.row_sq[row];
        }
      }
      if (sink.keys != nullptr) {
        sink.keys[i * sink.key_stride + (row - sink.key_first)] =
            sink.slack_a != nullptr ? key + slack : key;
        continue;
      }
      if (key + slack >= sink.screen[i]) {
        sink.offer(sink.context, i, row, key, slack);
      }
    }
  }
}

// One query packed (into `packed`, steps zeroed) from `target` (dim
// values), rounded to float first: its int8 scale and correction (int8),
// and |target - q'| in double, rounded up.
struct PackedQuery {
  float scale = 0;
  int32_t correction = 0;
  double residual = 0;
};

PackedQuery PackQuery(const double* target, size_t dim, bool int8,
                      uint32_t* packed) {
  PackedQuery out;
  double residual = 0;
  if (int8) {
    float max_abs = 0;
    for (size_t j = 0; j < dim; ++j) {
      max_abs = std::max(max_abs, std::abs(static_cast<float>(target[j])));
    }
    const float s = Int8Scale(max_abs);
    int32_t sum = 0;
    for (size_t j = 0; j < dim; ++j) {
      const int32_t v = Quantise(static_cast<float>(target[j]), s);
      sum += v;
      packed[j / 4] |= static_cast<uint32_t>(static_cast<uint8_t>(v))
                       << (8 * (j % 4));
      const double dequantised = static_cast<double>(s) * v;
      residual += (target[j] - dequantised) * (target[j] - dequantised);
    }
    out.scale = s;
    out.correction = 128 * sum;
  } else {
    for (size_t j = 0; j < dim; ++j) {
      const uint16_t bits = Bf16Bits(static_cast<float>(target[j]));
      packed[j / 2] |= static_cast<uint32_t>(bits) << (16 * (j % 2));
      const double v = Bf16Value(bits);
      residual += (target[j] - v) * (target[j] - v);
    }
  }
  out.residual = Up(std::sqrt(residual));
  return out;
}

// Query `q` (|q| <= qn) packed less its share l = q.n along `rows`'
// direction n (into `packed`, steps zeroed; `target`, dim doubles, is
// scratch), with its DotSlack coefficients a and b (see the derivation
// above; c is the whole query's).
struct AlongPacking {
  PackedQuery packed;
  float lambda = 0;
  double a = 0;
  double b = 0;
};

AlongPacking PackAlong(const ReducedRows& rows, const float* q, double qn,
                       double arithmetic, double rescoring, double* target,
                       uint32_t* packed) {
  const size_t dim = rows.dim();
  const std::vector<float>& direction = rows.direction();
  double along = 0;
  for (size_t j = 0; j < dim; ++j) {
    along += static_cast<double>(q[j]) * direction[j];
  }
  AlongPacking out;
  out.lambda = static_cast<float>(along);
  double rest = 0;
  for (size_t j = 0; j < dim; ++j) {
    // Exact in double to within 2^-53: a float less a product of floats.
    target[j] = q[j] - static_cast<double>(out.lambda) * direction[j];
    rest += target[j] * target[j];
  }
  out.packed =
      PackQuery(target, dim, rows.precision() == ScanPrecision::kInt8, packed);
  const double w = Up(std::sqrt(rest));
  const double f = out.packed.residual;
  const double shared =
      4 * kUnitRoundoff * std::fabs(out.lambda) * rows.direction_norm();
  out.a = 1.0625 * (w + shared + rescoring * qn);
  out.b = 1.0625 * (f + shared + (arithmetic + kUnitRoundoff) * (w + f) +
                    rescoring * (qn + f));
  return out;
}

}  // namespace

const char* ScanPrecisionName(ScanPrecision precision) {
  switch (precision) {
    case ScanPrecision::kAuto:
      return "auto";
    case ScanPrecision::kF32:
      return "f32";
    case ScanPrecision::kBf16:
      return "bf16";
    case ScanPrecision::kInt8:
      return "int8";
  }
  return "unknown";
}

std::optional<ScanPrecision> ParseScanPrecision(absl::string_view name) {
  for (ScanPrecision p : {ScanPrecision::kAuto, ScanPrecision::kF32,
                          ScanPrecision::kBf16, ScanPrecision::kInt8}) {
    if (name == ScanPrecisionName(p)) return p;
  }
  return std::nullopt;
}

bool CpuRunsScan(ScanPrecision precision) {
#if defined(HARDNEG_REDUCED_X86)
  if (precision == ScanPrecision::kInt8) return CpuHasVnni();
  if (precision == ScanPrecision::kBf16) return CpuHasBf16();
  return true;
#else
  return precision == ScanPrecision::kAuto || precision == ScanPrecision::kF32;
#endif
}

ScanPrecision EffectiveScan(ScanPrecision requested, size_t dim) {
  const ScanPrecision scan = ResolveScanPrecision(requested);
  if (scan != ScanPrecision::kInt8 || dim <= kMaxInt8Dim) return scan;
  return CpuRunsScan(ScanPrecision::kBf16) || requested != ScanPrecision::kAuto
             ? ScanPrecision::kBf16
             : ScanPrecision::kF32;
}

ScanPrecision ResolveScanPrecision(ScanPrecision requested) {
  if (requested != ScanPrecision::kAuto) return requested;
  if (CpuRunsScan(ScanPrecision::kInt8)) return ScanPrecision::kInt8;
  if (CpuRunsScan(ScanPrecision::kBf16)) return ScanPrecision::kBf16;
  return ScanPrecision::kF32;
}

size_t ReducedRows::LineBytes(size_t n, size_t dim, ScanPrecision precision) {
  const size_t groups = (n + kReducedGroupRows - 1) / kReducedGroupRows;
  const size_t per_step = precision == ScanPrecision::kInt8 ? 4 : 2;
  const size_t steps = (dim + per_step - 1) / per_step;
  // At least a line, so that no rows have null lines.
  return std::max<size_t>(kLineBytes, groups * steps * kLineBytes);
}

size_t ReducedRows::FloatBytes(size_t n, size_t dim, ScanPrecision precision,
                               bool centred) {
  const size_t groups = (n + kReducedGroupRows - 1) / kReducedGroupRows;
  // Each row's residual and norm (and int8's scale, and a centred row's
  // projection).
  const size_t per_row =
      (precision == ScanPrecision::kInt8 ? 3 : 2) + (centred ? 1 : 0);
  return groups * kReducedGroupRows * per_row * sizeof(float) +
         (centred ? 2 * dim * sizeof(float) : 0);  // the centre, direction
}

size_t ReducedRows::BytesFor(size_t n, size_t dim, ScanPrecision precision,
                             bool centred) {
  return LinesAllocated(LineBytes(n, dim, precision)) +
         FloatBytes(n, dim, precision, centred);
}

void PackedLinesDeleter::operator()(uint8_t* lines) const {
  if (bytes == 0) return;
  if (bytes < kHugeLinesBytes) {
    std::free(lines);
  } else {
    munmap(lines, LinesAllocated(bytes));
  }
}

// At least a line is allocated, for none asked for: AllocateLines takes
// no empty request.
ReducedLines::ReducedLines(size_t bytes) : size_(RoundUp(bytes, kLineBytes)) {
  const size_t asked = std::max(size_, kLineBytes);
  block_ = std::unique_ptr<uint8_t, PackedLinesDeleter>(
      AllocateLines(asked), PackedLinesDeleter(asked));
}

size_t ReducedLines::PaddingBytes() const {
  return LinesAllocated(block_.get_deleter().bytes) - used_;
}

uint8_t* ReducedLines::Take(size_t bytes) {
  bytes = RoundUp(bytes, kLineBytes);
  if (bytes > size_ - used_) {
    throw std::length_error("ReducedLines: more lines taken than asked for");
  }
  uint8_t* lines = block_.get() + used_;
  used_ += bytes;
  return lines;
}

ReducedRows::ReducedRows(const float* rows, size_t n, size_t dim,
                         ScanPrecision precision, bool centred)
    : ReducedRows(rows, n, dim, precision,
                  centred ? CentringOf(rows, n, dim) : Centring()) {}

ReducedRows::ReducedRows(const float* rows, size_t n, size_t dim,
                         ScanPrecision precision, const Centring& centring,
                         ReducedLines* lines)
    : precision_(precision), n_(n), dim_(dim) {
  const size_t per_step = precision == ScanPrecision::kInt8 ? 4 : 2;
  steps_ = (dim + per_step - 1) / per_step;
  const size_t groups = (n + kReducedGroupRows - 1) / kReducedGroupRows;
  const size_t bytes = LineBytes(n, dim, precision);
  if (lines != nullptr) {
    lines_ = std::unique_ptr<uint8_t, PackedLinesDeleter>(lines->Take(bytes),
                                                          PackedLinesDeleter());
    lines_bytes_ = bytes;
  } else {
    lines_ = std::unique_ptr<uint8_t, PackedLinesDeleter>(
        AllocateLines(bytes), PackedLinesDeleter(bytes));
    lines_bytes_ = LinesAllocated(bytes);
  }
  residuals_.assign(groups * kReducedGroupRows, 0.0f);
  norms_.assign(groups * kReducedGroupRows, 0.0f);
  if (precision == ScanPrecision::kInt8) {
    // Padding (rows past n, dims past dim) is value 0: byte 128.
    std::memset(lines_.get(), 128, bytes);
    scales_.assign(groups * kReducedGroupRows, 0.0f);
  } else {
    std::memset(lines_.get(), 0, bytes);
  }
  if (!centring.mean.empty()) {
    projections_.assign(groups * kReducedGroupRows, 0.0f);
    Centre(centring);
  }
  Pack(rows);
}

ReducedRows::Centring ReducedRows::CentringOf(const float* rows, size_t n,
                                              size_t dim) {
  // Sums of fixed blocks of rows (and of their squared norms), added in
  // order.
  constexpr size_t kBlockRows = 16384;
  const size_t blocks = (n + kBlockRows - 1) / kBlockRows;
  std::vector<double> sums(blocks * (dim + 1), 0.0);
  const auto block_count = static_cast<int64_t>(blocks);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < block_count; ++b) {
    const auto block = static_cast<size_t>(b);
    double* sum = sums.data() + block * (dim + 1);
    const size_t end = std::min(n, (block + 1) * kBlockRows);
    for (size_t r = block * kBlockRows; r < end; ++r) {
      const float* x = rows + r * dim;
      for (size_t d = 0; d < dim; ++d) {
        sum[d] += x[d];
        sum[dim] += static_cast<double>(x[d]) * x[d];
      }
    }
  }
  Centring centring;
  centring.mean.assign(dim, 0.0f);
  if (n == 0) return centring;
  std::vector<double> total(dim + 1, 0.0);
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t d = 0; d <= dim; ++d) total[d] += sums[b * (dim + 1) + d];
  }
  const auto count = static_cast<double>(n);
  double sq = 0;
  for (size_t d = 0; d < dim; ++d) {
    centring.mean[d] = static_cast<float>(total[d] / count);
    sq += static_cast<double>(centring.mean[d]) * centring.mean[d];
  }
  // E|x - m|^2 = E|x|^2 - |m|^2.
  const double spread = total[dim] / count - sq;
  centring.direction = sq > 0 && 3 * sq >= spread;
  return centring;
}

void ReducedRows::Centre(const Centring& centring) {
  centre_ = centring.mean;
  double sq = 0;
  for (float c : centre_) sq += static_cast<double>(c) * c;
  centre_norm_ = Up(std::sqrt(sq));
  // The direction the rows share, m / |m| in float (not exactly unit: the
  // bound uses its own norm).
  if (!centring.direction || !(sq > 0) || !std::isfinite(sq)) return;
  const double inverse = 1 / std::sqrt(sq);
  direction_.resize(dim_);
  double dsq = 0;
  for (size_t d = 0; d < dim_; ++d) {
    direction_[d] = static_cast<float>(centre_[d] * inverse);
    dsq += static_cast<double>(direction_[d]) * direction_[d];
  }
  direction_norm_ = Up(std::sqrt(dsq));
}

void ReducedRows::Pack(const float* rows) {
  const bool int8 = precision_ == ScanPrecision::kInt8;
  double max_residual = 0;
  double max_norm = 0;
  const auto n = static_cast<int64_t>(n_);
#pragma omp parallel for schedule(static) reduction(max \
                                                    : max_residual, max_norm)
  for (int64_t r = 0; r < n; ++r) {
    const auto row = static_cast<size_t>(r);
    const float* x = rows + row * dim_;
    // The row less the centre, in double (x - m, whose error the residual
    // measures), and as the float the packing rounds.
    auto value = [&](size_t d) {
      return centre_.empty() ? static_cast<double>(x[d])
                             : static_cast<double>(x[d]) - centre_[d];
    };
    float scale = 0;
    if (int8) {
      float max_abs = 0;
      for (size_t d = 0; d < dim_; ++d) {
        max_abs = std::max(max_abs, std::abs(static_cast<float>(value(d))));
      }
      scale = Int8Scale(max_abs);
      scales_[row] = scale;
    }
    uint8_t* line = lines_.get() +
                    (row / kReducedGroupRows) * steps_ * kLineBytes +
                    (row % kReducedGroupRows) * 4;
    double residual = 0;
    double norm = 0;
    for (size_t d = 0; d < dim_; ++d) {
      const double v = value(d);
      double packed = 0;  // the value the kernels multiply
      if (int8) {
        const int32_t q = Quantise(static_cast<float>(v), scale);
        line[(d / 4) * kLineBytes + d % 4] = static_cast<uint8_t>(q + 128);
        packed = static_cast<double>(scale) * q;
      } else {
        const uint16_t bits = Bf16Bits(static_cast<float>(v));
        std::memcpy(line + (d / 2) * kLineBytes + (d % 2) * 2, &bits,
                    sizeof bits);
        packed = Bf16Value(bits);
      }
      residual += (v - packed) * (v - packed);
      norm += packed * packed;
    }
    // Past float's range (an infinite scale makes NaN): no bound, which
    // the max below keeps (it would pass over a NaN).
    constexpr double kInf = std::numeric_limits<double>::infinity();
    if (std::isnan(residual)) residual = kInf;
    if (std::isnan(norm)) norm = kInf;
    residuals_[row] = FloatAbove(std::sqrt(residual));
    norms_[row] = FloatAbove(std::sqrt(norm));
    if (!direction_.empty()) {
      double along = 0;
      for (size_t d = 0; d < dim_; ++d) along += direction_[d] * value(d);
      projections_[row] = static_cast<float>(along);
    }
    max_residual = std::max(max_residual, residual);
    max_norm = std::max(max_norm, norm);
  }
  max_residual_ = FloatAbove(std::sqrt(max_residual));
  max_reduced_norm_ = FloatAbove(std::sqrt(max_norm));
}

void ReducedQueries::Prepare(const ReducedRows& rows, const float* queries,
                             size_t nq) {
  const size_t dim = rows.dim();
  const bool int8 = rows.precision() == ScanPrecision::kInt8;
  nq_ = nq;
  steps_ = rows.steps();
  packed_.assign(nq * steps_, 0);
  scale_.assign(nq, 0.0f);
  correction_.assign(nq, 0);
  offset_.assign(nq, 0.0f);
  along_.assign(nq, 0.0f);
  slack_.assign(nq, 0.0);
  a_.assign(nq, 0.0);
  b_.assign(nq, 0.0);
  c_.assign(nq, 0.0);
  const auto d = static_cast<double>(dim);
  // The arithmetic's relative error, on |q'| |x'|.
  const double arithmetic =
      (int8 ? (dim > 1040 ? 4 : 3) : d + 8) * kUnitRoundoff;
  // The float32 rescoring of a candidate (FloatDot: at most d + 8
  // roundings on |q| |x| <= |q| (|e| + |x'|)) and the float arithmetic
  // of keys and screens (a few roundings of |key| <= (|q| + |f|) |x'|).
  const double rescoring = (d + 16) * kUnitRoundoff;
  const std::vector<float>& centre = rows.centre();
  const bool has_direction = !rows.direction().empty();
  std::vector<double> target(dim);
  std::vector<uint32_t> other(steps_);
  for (size_t i = 0; i < nq; ++i) {
    const float* q = queries + i * dim;
    uint32_t* packed = packed_.data() + i * steps_;
    double norm = 0;
    for (size_t j = 0; j < dim; ++j) {
      target[j] = q[j];
      norm += static_cast<double>(q[j]) * q[j];
    }
    const double qn = Up(std::sqrt(norm));
    const PackedQuery plain = PackQuery(target.data(), dim, int8, packed);
    scale_[i] = plain.scale;
    correction_[i] = plain.correction;
    a_[i] = 1.0625 * qn * (1 + rescoring);
    b_[i] = 1.0625 *
            (plain.residual + (arithmetic + rescoring) * (qn + plain.residual));
    c_[i] = 1e-30 + (int8 ? 3 : 5) * d * std::ldexp(1.0, -126);
    if (!centre.empty()) {
      double offset = 0;
      for (size_t j = 0; j < dim; ++j) {
        offset += static_cast<double>(q[j]) * centre[j];
      }
      offset_[i] = static_cast<float>(offset);
      // The offset's rounding, its addition to the key, the rescoring's
      // and the screens' arithmetic on the |q| |m| the key now holds (see
      // the derivation above).
      c_[i] += 1.0625 * (d + 32) * kUnitRoundoff * qn * rows.centre_norm();
    }
    if (has_direction) {
      // The query less its share along the rows' direction n, which the
      // kernels add back from each row's projection: kept when its bound
      // is the smaller.
      std::fill(other.begin(), other.end(), 0);
      const AlongPacking along = PackAlong(rows, q, qn, arithmetic, rescoring,
                                           target.data(), other.data());
      if (along.a * rows.max_residual() + along.b * rows.max_reduced_norm() <
          a_[i] * rows.max_residual() + b_[i] * rows.max_reduced_norm()) {
        std::copy(other.begin(), other.end(), packed);
        scale_[i] = along.packed.scale;
        correction_[i] = along.packed.correction;
        along_[i] = along.lambda;
        a_[i] = along.a;
        b_[i] = along.b;
      }
    }
    slack_[i] =
        a_[i] * rows.max_residual() + b_[i] * rows.max_reduced_norm() + c_[i];
  }
}

void ReducedQueries::Select(const ReducedQueries& from, const uint32_t* which,
                            size_t m) {
  nq_ = m;
  steps_ = from.steps_;
  packed_.resize(m * steps_);
  scale_.resize(m);
  correction_.resize(m);
  offset_.resize(m);
  along_.resize(m);
  slack_.resize(m);
  a_.resize(m);
  b_.resize(m);
  c_.resize(m);
  for (size_t j = 0; j < m; ++j) {
    const size_t i = which[j];
    std::copy_n(from.packed(i), steps_, packed_.data() + j * steps_);
    scale_[j] = from.scale_[i];
    correction_[j] = from.correction_[i];
    offset_[j] = from.offset_[i];
    along_[j] = from.along_[i];
    slack_[j] = from.slack_[i];
    a_[j] = from.a_[i];
    b_[j] = from.b_[i];
    c_[j] = from.c_[i];
  }
}

void ReducedScan(const ReducedRows& rows, const ReducedQueries& queries,
                 size_t begin, size_t end, const ReducedSink& sink,
                 bool portable) {
  if (begin >= end || queries.size() == 0) return;
#if defined(HARDNEG_REDUCED_X86)
  if (!portable && CpuRunsScan(rows.precision())) {
    return SimdScan(rows, queries, begin, end, sink);
  }
#endif
  PortableScan(rows, queries, begin, end, sink);
}

float FloatDot(const float* a, const float* b, size_t dim) {
#if defined(HARDNEG_REDUCED_X86)
  const CpuFeatureSet& cpu = CpuFeatures();
  if (cpu.avx512f && cpu.avx512bw) return Avx512Dot(a, b, dim);
#endif
  float s = 0;
  for (size_t i = 0; i < dim; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace hardneg

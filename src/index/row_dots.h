// RowDots: dot products of one to three queries with a run of consecutive
// rows, each row read once. This is the Flat kernel for searches too small
// for sgemm, where the time is the memory traffic of the rows. Rows are
// float32, or IEEE binary16 (half the traffic) for a first pass whose
// closest candidates are rescored in float32.
//
// The kernels use AVX2, FMA and F16C, chosen at run time: RowDotsSimd()
// says whether this CPU has them. Without them the functions still give
// correct answers, slowly.
//
// Stateless functions; safe to call from any thread (RowDotsSimd's CPU check
// runs once, as a function-local static).
#ifndef HARDNEG_SRC_INDEX_ROW_DOTS_H_
#define HARDNEG_SRC_INDEX_ROW_DOTS_H_

#include <cstddef>
#include <cstdint>

namespace hardneg {

// The most queries one RowDots call takes.
inline constexpr size_t kMaxRowDotQueries = 3;

// True when this CPU runs the SIMD kernels (AVX2, FMA and F16C).
bool RowDotsSimd();

// out[q * n + r] = queries[q] . rows[r], for q < nq and r < n, where
// 1 <= nq <= kMaxRowDotQueries, `queries` is nq x dim and `rows` n x dim,
// both row-major. Accumulates in float32.
void RowDots(const float* rows, size_t n, size_t dim, const float* queries,
             size_t nq, float* out);
// The same over binary16 rows (the bits, as ToHalf writes them).
void RowDotsHalf(const uint16_t* rows, size_t n, size_t dim,
                 const float* queries, size_t nq, float* out);

// Rounds in[0, n) to binary16 bits, to nearest, ties to even. Values
// beyond the binary16 range (|x| > 65504) become infinities: callers
// check the range first.
void ToHalf(const float* in, size_t n, uint16_t* out);

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_ROW_DOTS_H_

// The throughput ceiling of the reduced-precision scan's dot-product
// instructions on this machine: vdpbf16ps (AVX512_BF16) and vpdpbusd
// (AVX512_VNNI) on zmm registers, back to back on many independent
// accumulators with every operand in a register, so that nothing but the
// instruction's own issue rate limits them. hardneg-bench divides the rate
// by a query's work (2 N d) for the q/s no scan at that precision can
// pass, as it does with the sgemm rate for float32.
//
// Stateless; safe to call from any thread (it starts its own).
#ifndef HARDNEG_BENCH_INSTRUCTION_PEAK_H_
#define HARDNEG_BENCH_INSTRUCTION_PEAK_H_

#include <optional>

#include "index/reduced_scan.h"

namespace hardneg::bench {

// Independent accumulators each thread keeps in zmm registers: more than
// latency x issue rate (5 cycles x 2 a cycle at most on current cores)
// keeps every port busy, and 16 of the 32 registers leave room for the
// operands.
inline constexpr int kPeakAccumulators = 16;

// Operations one instruction does: 16 lanes x 2 bf16 products, each a
// multiply and an add (kBf16: 64); 16 lanes x 4 int8 products (kInt8:
// 128). 0 for the other precisions.
int OpsPerInstruction(ScanPrecision precision);

// The instruction of `precision` (kBf16 or kInt8) run on `threads` threads
// at once for `seconds`, best of 3: total GOP/s (float32-equivalent
// GFLOP/s: one multiply-add is 2). nullopt when this CPU does not run the
// instruction natively (CpuRunsScan) or `precision` has none.
std::optional<double> InstructionPeakGops(ScanPrecision precision, int threads,
                                          double seconds);

}  // namespace hardneg::bench

#endif  // HARDNEG_BENCH_INSTRUCTION_PEAK_H_

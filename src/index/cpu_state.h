// What every run-time SIMD check in src/index reads: the instructions this
// x86 CPU reports (CPUID) that its OS also saves the registers for
// (OSXSAVE, then XCR0 holding the YMM, or ZMM and opmask, state). The one
// owner of CPUID here: the kernels' dispatch asks CpuFeatures().
//
// Read once, on first use (thread-safe); all false on other CPUs.
#ifndef HARDNEG_SRC_INDEX_CPU_STATE_H_
#define HARDNEG_SRC_INDEX_CPU_STATE_H_

namespace hardneg {

// Each true only when the CPU reports it and the OS saves its state.
struct CpuFeatureSet {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
};

const CpuFeatureSet& CpuFeatures();

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_CPU_STATE_H_

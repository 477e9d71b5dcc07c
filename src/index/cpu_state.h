// What every run-time SIMD check in src/index shares: whether this x86 CPU
// has CPUID leaf 7 and its OS saves the register state the instructions
// need (OSXSAVE, then XCR0 holding every bit of a mask).
//
// A stateless function; safe to call from any thread.
#ifndef HARDNEG_SRC_INDEX_CPU_STATE_H_
#define HARDNEG_SRC_INDEX_CPU_STATE_H_

namespace hardneg {

// XCR0 bits: SSE and AVX (YMM) state; plus opmask and ZMM state.
inline constexpr unsigned kYmmState = 0x6;
inline constexpr unsigned kZmmState = 0xe6;

// True on x86 when CPUID reports leaf 7 and the OS saves every state in
// `xcr0_mask`; false elsewhere.
bool CpuSavesState(unsigned xcr0_mask);

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_CPU_STATE_H_

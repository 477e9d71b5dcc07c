#include "index/cpu_state.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace hardneg {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// XCR0 bits: SSE and AVX (YMM) state; plus opmask and ZMM state.
constexpr unsigned kYmmState = 0x6;
constexpr unsigned kZmmState = 0xe6;

CpuFeatureSet ReadFeatures() {
  CpuFeatureSet set;
  unsigned eax, ebx, ecx, edx;
  if (__get_cpuid_max(0, nullptr) < 7) return set;
  __cpuid(1, eax, ebx, ecx, edx);
  if ((ecx & bit_OSXSAVE) == 0) return set;
  const bool fma = (ecx & bit_FMA) != 0;
  const bool f16c = (ecx & bit_F16C) != 0;
  unsigned xcr0_low, xcr0_high;
  __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  const bool ymm = (xcr0_low & kYmmState) == kYmmState;
  const bool zmm = (xcr0_low & kZmmState) == kZmmState;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const unsigned max_subleaf = eax;
  set.avx2 = ymm && (ebx & bit_AVX2) != 0;
  set.fma = ymm && fma;
  set.f16c = ymm && f16c;
  set.avx512f = zmm && (ebx & (1u << 16)) != 0;
  set.avx512bw = zmm && (ebx & (1u << 30)) != 0;
  set.avx512_vnni = zmm && (ecx & (1u << 11)) != 0;
  if (max_subleaf >= 1) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    set.avx512_bf16 = zmm && (eax & (1u << 5)) != 0;
  }
  return set;
}
#else
CpuFeatureSet ReadFeatures() { return {}; }
#endif

}  // namespace

const CpuFeatureSet& CpuFeatures() {
  static const CpuFeatureSet features = ReadFeatures();
  return features;
}

}  // namespace hardneg

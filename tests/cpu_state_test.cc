// CpuFeatures against what the Linux kernel reports in /proc/cpuinfo: the
// kernel lists an AVX-512 or AVX flag only when the CPU has it and the OS
// saves its registers, which is what CpuFeatures reads from CPUID and
// XCR0 itself.
#include "index/cpu_state.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "index/reduced_scan.h"
#include "index/row_dots.h"

namespace hardneg {
namespace {

// The first "flags" line of /proc/cpuinfo, split; empty when unreadable.
std::set<std::string> CpuinfoFlags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> flags;
    for (std::string w; words >> w;) flags.insert(w);
    return flags;
  }
  return {};
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__linux__)
TEST(CpuStateTest, FeaturesMatchTheKernelsFlags) {
  const std::set<std::string> flags = CpuinfoFlags();
  ASSERT_FALSE(flags.empty()) << "no flags line in /proc/cpuinfo";
  const CpuFeatureSet& cpu = CpuFeatures();
  EXPECT_EQ(cpu.avx2, flags.count("avx2") == 1);
  EXPECT_EQ(cpu.fma, flags.count("fma") == 1);
  EXPECT_EQ(cpu.f16c, flags.count("f16c") == 1);
  EXPECT_EQ(cpu.avx512f, flags.count("avx512f") == 1);
  EXPECT_EQ(cpu.avx512bw, flags.count("avx512bw") == 1);
  EXPECT_EQ(cpu.avx512_vnni, flags.count("avx512_vnni") == 1);
  EXPECT_EQ(cpu.avx512_bf16, flags.count("avx512_bf16") == 1);
}
#endif

// The kernels' dispatch reads the same set.
TEST(CpuStateTest, DispatchFollowsTheFeatures) {
  const CpuFeatureSet& cpu = CpuFeatures();
  EXPECT_EQ(RowDotsSimd(), cpu.avx2 && cpu.fma && cpu.f16c);
  EXPECT_EQ(CpuRunsScan(ScanPrecision::kInt8),
            cpu.avx512f && cpu.avx512bw && cpu.avx512_vnni);
  EXPECT_EQ(CpuRunsScan(ScanPrecision::kBf16),
            cpu.avx512f && cpu.avx512bw && cpu.avx512_bf16);
}

}  // namespace
}  // namespace hardneg

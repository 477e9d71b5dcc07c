// ShardOf against fixed values computed independently (Python, from the
// formula in src/corpus/shard.h), so that the documented rule and the code
// never drift apart.
#include "corpus/shard.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace hardneg {
namespace {

TEST(ShardTest, SplitMix64KnownValues) {
  EXPECT_EQ(SplitMix64Hash(0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(SplitMix64Hash(1), 0x910a2dec89025cc1ULL);
  // The reference generator's first output for seed 1234567.
  EXPECT_EQ(SplitMix64Hash(1234567), 6457827717110365317ULL);
  EXPECT_EQ(SplitMix64Hash(~uint64_t{0}), 0xe4d971771b652c20ULL);
}

TEST(ShardTest, ShardOfKnownValues) {
  struct Case {
    int64_t id;
    uint32_t shards[4];  // for 2, 3, 5 and 7 shards
  };
  const std::vector<Case> cases = {
      {0, {1, 1, 0, 2}},  {1, {1, 2, 0, 2}},  {1234567, {1, 0, 2, 1}},
      {-1, {0, 2, 1, 0}}, {42, {1, 1, 3, 5}}, {-1000000000000LL, {1, 2, 2, 6}},
  };
  const uint32_t counts[4] = {2, 3, 5, 7};
  for (const Case& c : cases) {
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(ShardOf(c.id, counts[i]), c.shards[i])
          << "id " << c.id << ", " << counts[i] << " shards";
    }
    EXPECT_EQ(ShardOf(c.id, 1), 0u);
  }
}

TEST(ShardTest, SpreadsIdsEvenly) {
  uint32_t counts[5] = {};
  for (int64_t id = 0; id < 50000; ++id) ++counts[ShardOf(id, 5)];
  for (uint32_t c : counts) {
    EXPECT_GT(c, 9500u);
    EXPECT_LT(c, 10500u);
  }
}

}  // namespace
}  // namespace hardneg

#include "base/progress_throttle.h"

#include "gtest/gtest.h"

namespace hardneg {
namespace {

TEST(ProgressThrottleTest, ShowsTheFirstTheLastAndOnePerInterval) {
  ProgressThrottle throttle(absl::Milliseconds(250));
  const absl::Time t0 = absl::UnixEpoch();
  auto at = [&](int ms) { return t0 + absl::Milliseconds(ms); };
  EXPECT_TRUE(throttle.Due(at(0), false));  // the first
  EXPECT_FALSE(throttle.Due(at(100), false));
  EXPECT_FALSE(throttle.Due(at(249), false));
  EXPECT_TRUE(throttle.Due(at(250), false));   // an interval on
  EXPECT_FALSE(throttle.Due(at(400), false));  // counted from 250, not 249
  EXPECT_TRUE(throttle.Due(at(410), true));    // the last, whenever
  EXPECT_FALSE(throttle.Due(at(500), false));
}

TEST(ProgressThrottleTest, AFrozenClockShowsOnlyTheFirstAndTheLast) {
  ProgressThrottle throttle(absl::Seconds(1));
  int shown = 0;
  for (int i = 0; i < 1000; ++i) {
    shown += throttle.Due(absl::UnixEpoch(), i == 999) ? 1 : 0;
  }
  EXPECT_EQ(shown, 2);
}

}  // namespace
}  // namespace hardneg

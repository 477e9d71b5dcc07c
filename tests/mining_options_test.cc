// The mining options' own rules (mining/options.h): sampling names and the
// checks the miner, the server and the CLI share.
#include <cmath>
#include <limits>
#include <string>

#include "gtest/gtest.h"
#include "mining/options.h"

namespace hardneg {
namespace {

TEST(MiningOptionsTest, SamplingNamesRoundTrip) {
  for (Sampling s : {Sampling::kTop, Sampling::kUniform, Sampling::kSoftmax}) {
    EXPECT_EQ(ParseSampling(SamplingName(s)), s);
  }
  EXPECT_EQ(SamplingName(Sampling::kSoftmax), "softmax");
  EXPECT_FALSE(ParseSampling("Softmax").has_value());
  EXPECT_FALSE(ParseSampling("").has_value());
}

MiningOptions Valid() {
  MiningOptions options;
  options.num_negatives = 5;
  return options;
}

void ExpectRefused(const MiningOptions& options, const std::string& field) {
  const absl::Status status = ValidateMiningOptions(options, MinerLimits());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_NE(std::string(status.message()).find(field), std::string::npos)
      << status;
}

TEST(MiningOptionsTest, ChecksNameTheField) {
  EXPECT_TRUE(ValidateMiningOptions(Valid(), MinerLimits()).ok());
  MiningOptions o = Valid();
  o.num_negatives = 0;
  ExpectRefused(o, "options.num_negatives");
  o = Valid();
  o.num_negatives = MinerLimits().max_negatives + 1;
  ExpectRefused(o, "options.num_negatives");
  o = Valid();
  o.range_min = 10;
  o.range_max = 12;
  ExpectRefused(o, "options.range_max");
  o = Valid();
  o.temperature = std::nanf("");
  ExpectRefused(o, "options.temperature");
  o = Valid();
  o.temperature = -1;
  ExpectRefused(o, "options.temperature");
  o = Valid();
  o.relative_margin = std::numeric_limits<float>::infinity();
  ExpectRefused(o, "options.relative_margin");
  o = Valid();
  o.nprobe = MinerLimits().max_nprobe + 1;
  ExpectRefused(o, "options.nprobe");
  o = Valid();
  o.ivf_min_candidates = MinerLimits().max_ivf_min_candidates;
  EXPECT_TRUE(ValidateMiningOptions(o, MinerLimits()).ok());
  o.ivf_min_candidates = MinerLimits().max_ivf_min_candidates + 1;
  ExpectRefused(o, "options.ivf_min_candidates");
}

TEST(MiningOptionsTest, RangeMaxDefaultsToTheWindowEnd) {
  MiningOptions o = Valid();
  o.range_min = 3;
  EXPECT_EQ(RangeMax(o), 8u);
  o.range_max = 20;
  EXPECT_EQ(RangeMax(o), 20u);
}

}  // namespace
}  // namespace hardneg

// The wire <-> domain conversion of MiningOptions: every field both ways,
// and a guard that no proto field is left out of it.
#include "proto/mining_options_convert.h"

#include <string>

#include "gtest/gtest.h"

namespace hardneg {
namespace {

// Options with every field off its default.
MiningOptions EveryFieldSet() {
  MiningOptions options;
  options.num_negatives = 7;
  options.range_min = 3;
  options.range_max = 40;
  options.max_score = 0.9f;
  options.min_score = -0.5f;
  options.absolute_margin = 0.05f;
  options.relative_margin = 0.1f;
  options.sampling = Sampling::kSoftmax;
  options.temperature = 0.25f;
  options.seed = 12345;
  options.nprobe = 16;
  options.ivf_min_candidates = 5000;
  options.return_embeddings = true;
  options.min_index_sequence = 9;
  options.allow_partial = true;
  options.index_version = "v7";
  return options;
}

TEST(MiningOptionsConvertTest, EveryFieldRoundTrips) {
  const MiningOptions options = EveryFieldSet();
  v1::MiningOptions wire;
  MiningOptionsToProto(options, &wire);
  MiningOptions back;
  ASSERT_TRUE(MiningOptionsFromProto(wire, &back).ok());
  EXPECT_EQ(back.num_negatives, 7u);
  EXPECT_EQ(back.range_min, 3u);
  EXPECT_EQ(back.range_max, 40u);
  EXPECT_EQ(back.max_score, 0.9f);
  EXPECT_EQ(back.min_score, -0.5f);
  EXPECT_EQ(back.absolute_margin, 0.05f);
  EXPECT_EQ(back.relative_margin, 0.1f);
  EXPECT_EQ(back.sampling, Sampling::kSoftmax);
  EXPECT_EQ(back.temperature, 0.25f);
  EXPECT_EQ(back.seed, 12345u);
  EXPECT_EQ(back.nprobe, 16u);
  EXPECT_EQ(back.ivf_min_candidates, 5000u);
  EXPECT_TRUE(back.return_embeddings);
  EXPECT_EQ(back.min_index_sequence, 9u);
  EXPECT_TRUE(back.allow_partial);
  EXPECT_EQ(back.index_version, "v7");
}

// A field added to the proto but not to the conversion fails here: with
// every domain field off its default, every proto field must be set.
TEST(MiningOptionsConvertTest, NoProtoFieldIsLeftOut) {
  v1::MiningOptions wire;
  MiningOptionsToProto(EveryFieldSet(), &wire);
  const google::protobuf::Descriptor* descriptor = wire.GetDescriptor();
  const google::protobuf::Reflection* reflection = wire.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    EXPECT_TRUE(reflection->HasField(wire, field))
        << "MiningOptionsToProto leaves out " << field->name();
  }
}

TEST(MiningOptionsConvertTest, UnsetOptionalsStayUnset) {
  v1::MiningOptions wire;
  MiningOptionsToProto(MiningOptions(), &wire);
  EXPECT_FALSE(wire.has_max_score());
  EXPECT_FALSE(wire.has_min_score());
  EXPECT_FALSE(wire.has_absolute_margin());
  EXPECT_FALSE(wire.has_relative_margin());
  MiningOptions back;
  ASSERT_TRUE(MiningOptionsFromProto(wire, &back).ok());
  EXPECT_FALSE(back.max_score.has_value());
  EXPECT_FALSE(back.min_score.has_value());
  EXPECT_FALSE(back.absolute_margin.has_value());
  EXPECT_FALSE(back.relative_margin.has_value());
}

TEST(MiningOptionsConvertTest, AnUnknownSamplingIsRefusedByName) {
  v1::MiningOptions wire;
  wire.set_sampling(static_cast<v1::Sampling>(7));
  MiningOptions back;
  const absl::Status status = MiningOptionsFromProto(wire, &back);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(status.message()).find("options.sampling"),
            std::string::npos)
      << status;
}

}  // namespace
}  // namespace hardneg

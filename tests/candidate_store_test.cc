#include "corpus/candidate_store.h"

#include <cmath>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hardneg {
namespace {

using ::testing::HasSubstr;

TEST(CandidateStoreTest, HoldsRowsAndFindsIds) {
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      2, {5, -3, 9}, {3, 4, 0, 1, 1, 0}, std::vector<int64_t>{0, 2, 0});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->size(), 3u);
  EXPECT_EQ(store->dim(), 2u);
  EXPECT_TRUE(store->has_labels());
  EXPECT_EQ(store->id(1), -3);
  EXPECT_EQ(store->label(1), 2);
  EXPECT_EQ(store->vector(0)[1], 4.0f);
  EXPECT_EQ(store->squared_norm(0), 25.0f);
  EXPECT_FLOAT_EQ(store->max_norm(), 5.0f);
  EXPECT_EQ(store->RowOf(9), 2u);
  EXPECT_EQ(store->RowOf(-3), 1u);
  EXPECT_FALSE(store->RowOf(4).has_value());
  EXPECT_GT(store->MemoryBytes(), 6 * sizeof(float));
}

TEST(CandidateStoreTest, WithoutLabelsReportsZero) {
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(1, {1, 2}, {0.5f, 1.5f}, std::nullopt);
  ASSERT_TRUE(store.ok());
  EXPECT_FALSE(store->has_labels());
  EXPECT_EQ(store->label(0), 0);
}

TEST(CandidateStoreTest, RejectsDuplicateIdsNamingThem) {
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(1, {4, 8, 4}, {1, 2, 3}, std::nullopt);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("duplicate id 4 at rows 0 and 2"));
}

TEST(CandidateStoreTest, RejectsNonFiniteValuesNamingTheRow) {
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      2, {1, 2}, {0, 1, std::numeric_limits<float>::infinity(), 0},
      std::nullopt);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("row 1 (id 2)"));
  store = CandidateStore::Create(1, {1}, {std::nanf("")}, std::nullopt);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CandidateStoreTest, RejectsMismatchedSizes) {
  EXPECT_FALSE(CandidateStore::Create(2, {1, 2}, {1, 2, 3}, std::nullopt).ok());
  EXPECT_FALSE(
      CandidateStore::Create(1, {1, 2}, {1, 2}, std::vector<int64_t>{1}).ok());
  EXPECT_FALSE(CandidateStore::Create(0, {}, {}, std::nullopt).ok());
}

}  // namespace
}  // namespace hardneg

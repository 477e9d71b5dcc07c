// A shard server's share of the corpus (corpus/shard.h ShardFilter): read
// from a checkpoint, assembled from a publish, snapshotted and restored;
// and the previous version a shard keeps servable for a router's move.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "corpus/shard.h"
#include "format/checkpoint.h"
#include "format/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mining/miner.h"
#include "versions/index_manager.h"
#include "versions/publish.h"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// One row as a test compares it.
struct Row {
  std::vector<float> vector;
  int64_t label = 0;
  bool operator==(const Row& other) const {
    return vector == other.vector && label == other.label;
  }
};

std::map<int64_t, Row> Rows(const CandidateStore& store) {
  std::map<int64_t, Row> rows;
  for (size_t r = 0; r < store.size(); ++r) {
    rows[store.id(r)] = {
        std::vector<float>(store.vector(r), store.vector(r) + store.dim()),
        store.label(r)};
  }
  return rows;
}

class ShardingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/hardneg_sharding_test_" +
            std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A checkpoint `name` of `files` .npy shards of `rows` rows each (ids
  // random, some negative), labelled; `duplicate` repeats the first id in
  // the last file.
  void WriteMultiFile(const std::string& name, size_t files, size_t rows,
                      bool duplicate = false) {
    const std::string dir = root_ + "/" + name;
    fs::create_directories(dir);
    std::mt19937_64 rng(7);
    std::normal_distribution<float> normal;
    std::uniform_int_distribution<int64_t> id(-1000000000, 1000000000);
    std::string shards;
    int64_t first_id = 0;
    for (size_t f = 0; f < files; ++f) {
      std::vector<float> embeddings(rows * kDim);
      for (float& v : embeddings) v = normal(rng);
      std::vector<int64_t> ids(rows), labels(rows);
      for (size_t r = 0; r < rows; ++r) {
        ids[r] = id(rng);
        labels[r] = static_cast<int64_t>(r % 4);
      }
      if (f == 0) first_id = ids[0];
      if (duplicate && f + 1 == files) ids[rows - 1] = first_id;
      const std::string suffix = std::to_string(f);
      ASSERT_TRUE(WriteNpyMatrix(dir + "/e" + suffix + ".npy",
                                 embeddings.data(), rows, kDim)
                      .ok());
      ASSERT_TRUE(WriteNpyInt64(dir + "/i" + suffix + ".npy", ids).ok());
      ASSERT_TRUE(WriteNpyInt64(dir + "/l" + suffix + ".npy", labels).ok());
      shards += std::string(f == 0 ? "" : ",") + "{\"embeddings\": \"e" +
                suffix + ".npy\", \"ids\": \"i" + suffix +
                ".npy\", \"labels\": \"l" + suffix + ".npy\"}";
    }
    std::ofstream(dir + "/manifest.json")
        << "{\"name\": \"" << name << "\", \"step\": 1, \"dim\": " << kDim
        << ", \"shards\": [" << shards << "]}";
  }

  static constexpr size_t kDim = 4;
  std::string root_;
};

TEST_F(ShardingTest, TheShardsOfACheckpointPartitionIt) {
  WriteMultiFile("ck", 3, 200);
  absl::StatusOr<Checkpoint> whole = ReadCheckpoint(root_ + "/ck");
  ASSERT_TRUE(whole.ok()) << whole.status();
  const std::map<int64_t, Row> all = Rows(whole->store);
  for (uint32_t count : {2u, 3u, 5u}) {
    std::map<int64_t, Row> joined;
    for (uint32_t index = 0; index < count; ++index) {
      size_t admitted = 0;
      absl::StatusOr<Checkpoint> part = ReadCheckpoint(
          root_ + "/ck",
          [&](const CheckpointShape& shape) {
            admitted = shape.rows;
            return absl::OkStatus();
          },
          ShardFilter{index, count});
      ASSERT_TRUE(part.ok()) << part.status();
      // The admission sees exactly the rows the shard keeps.
      EXPECT_EQ(admitted, part->store.size());
      EXPECT_TRUE(part->store.has_labels());
      for (const auto& [id, row] : Rows(part->store)) {
        EXPECT_EQ(ShardOf(id, count), index) << id;
        EXPECT_TRUE(joined.emplace(id, row).second) << "id twice: " << id;
      }
    }
    EXPECT_EQ(joined, all) << count << " shards";
  }
}

TEST_F(ShardingTest, EveryShardRejectsADuplicateIdWhereverItFalls) {
  WriteMultiFile("dup", 2, 50, /*duplicate=*/true);
  for (uint32_t index = 0; index < 3; ++index) {
    absl::StatusOr<Checkpoint> part =
        ReadCheckpoint(root_ + "/dup", nullptr, ShardFilter{index, 3});
    EXPECT_EQ(part.status().code(), absl::StatusCode::kInvalidArgument)
        << "shard " << index;
    EXPECT_THAT(part.status().message(), HasSubstr("duplicate id"));
  }
}

TEST_F(ShardingTest, AShardOverTheBudgetIsRefusedBeforeItsRowsAreRead) {
  WriteMultiFile("ck", 2, 100);
  absl::StatusOr<Checkpoint> part = ReadCheckpoint(
      root_ + "/ck",
      [](const CheckpointShape&) {
        return absl::ResourceExhaustedError("over the budget");
      },
      ShardFilter{1, 2});
  EXPECT_EQ(part.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(ShardingTest, APublishKeepsTheShardsRowsAndCountsWhatItCarried) {
  PublishHeader header;
  header.name = "p";
  header.step = 1;
  header.dim = 2;
  header.total_ids = 40;
  header.base_version = std::nullopt;
  absl::StatusOr<PublishAssembler> assembler =
      PublishAssembler::Start(header, 0, ShardFilter{1, 3});
  ASSERT_TRUE(assembler.ok());
  std::vector<int64_t> ids, labels;
  std::vector<float> embeddings;
  for (int64_t i = 0; i < 40; ++i) {
    ids.push_back(i * 1000003);
    labels.push_back(i % 3);
    embeddings.push_back(static_cast<float>(i));
    embeddings.push_back(-static_cast<float>(i));
  }
  ASSERT_TRUE(assembler->AddChunk(ids, labels, embeddings, {}).ok());
  EXPECT_TRUE(assembler->CheckComplete().ok());
  absl::StatusOr<CandidateStore> store = assembler->Finish(nullptr);
  ASSERT_TRUE(store.ok()) << store.status();
  size_t expected = 0;
  for (int64_t id : ids) expected += ShardOf(id, 3) == 1;
  EXPECT_EQ(store->size(), expected);
  for (size_t r = 0; r < store->size(); ++r) {
    EXPECT_EQ(ShardOf(store->id(r), 3), 1u);
    EXPECT_EQ(store->vector(r)[0], static_cast<float>(store->id(r) / 1000003));
    EXPECT_EQ(store->label(r), (store->id(r) / 1000003) % 3);
  }
}

TEST_F(ShardingTest, AnEmptyShareIsAVersionOnlyOnAShard) {
  PublishHeader header;
  header.name = "p";
  header.step = 1;
  header.dim = 2;
  absl::StatusOr<PublishAssembler> shard =
      PublishAssembler::Start(header, 0, ShardFilter{0, 4});
  ASSERT_TRUE(shard.ok());
  absl::StatusOr<CandidateStore> empty = shard->Finish(nullptr);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->size(), 0u);
  // It serves: every query is answered with a shortfall.
  IndexManager manager(IndexManagerOptions{});
  ASSERT_TRUE(
      manager.Install("p", 1, Metric::kInnerProduct, *std::move(empty)).ok());
  const std::vector<float> embedding = {1, 0};
  MiningQuery query;
  query.embedding = embedding;
  MiningOptions options;
  options.num_negatives = 3;
  absl::StatusOr<std::vector<MiningResult>> mined =
      Miner().Mine(*manager.Current(), {query}, options);
  ASSERT_TRUE(mined.ok()) << mined.status();
  EXPECT_TRUE((*mined)[0].negatives.empty());
  EXPECT_EQ((*mined)[0].shortfall, 3u);
  absl::StatusOr<PublishAssembler> whole = PublishAssembler::Start(header, 0);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->Finish(nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Installs a small version named `name`.
void InstallVersion(IndexManager& manager, const std::string& name,
                    uint64_t step) {
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(2, {1, 2, 3}, {1, 0, 0, 1, 1, 1}, std::nullopt);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(
      manager.Install(name, step, Metric::kInnerProduct, *std::move(store))
          .ok());
}

TEST_F(ShardingTest, TheReplacedVersionStaysFindableWhileItIsKept) {
  IndexManagerOptions options;
  options.keep_previous = absl::Hours(1);
  IndexManager manager(options);
  InstallVersion(manager, "a", 1);
  EXPECT_EQ(manager.Previous(), nullptr);
  InstallVersion(manager, "b", 2);
  ASSERT_NE(manager.Previous(), nullptr);
  EXPECT_EQ(manager.Previous()->info().name, "a");
  ASSERT_NE(manager.Find("a"), nullptr);
  EXPECT_EQ(manager.Find("a")->info().sequence, 1u);
  EXPECT_EQ(manager.Find("b")->info().sequence, 2u);
  EXPECT_EQ(manager.Find("c"), nullptr);
  // A third version: at most two are held, so "a" is gone.
  InstallVersion(manager, "c", 3);
  EXPECT_EQ(manager.Find("a"), nullptr);
  EXPECT_EQ(manager.Previous()->info().name, "b");
}

TEST_F(ShardingTest, WithoutKeepingTheReplacedVersionIsFreed) {
  IndexManager manager(IndexManagerOptions{});
  InstallVersion(manager, "a", 1);
  std::weak_ptr<const IndexVersion> first = manager.Current();
  InstallVersion(manager, "b", 2);
  EXPECT_EQ(manager.Previous(), nullptr);
  EXPECT_EQ(manager.Find("a"), nullptr);
  EXPECT_TRUE(first.expired());
}

TEST_F(ShardingTest, ASnapshotOfAnotherShardLayoutIsNotRestored) {
  IndexManagerOptions options;
  options.data_dir = root_ + "/data";
  options.shard = ShardFilter{0, 2};
  {
    IndexManager manager(options);
    InstallVersion(manager, "a", 1);
  }
  {
    IndexManager same(options);
    ASSERT_TRUE(same.RestoreSnapshot().ok());
    EXPECT_EQ(same.Current()->info().name, "a");
  }
  options.shard = ShardFilter{1, 2};
  IndexManager other(options);
  EXPECT_FALSE(other.RestoreSnapshot().ok());
  EXPECT_EQ(other.Current(), nullptr);
  options.shard = ShardFilter{};
  IndexManager unsharded(options);
  EXPECT_FALSE(unsharded.RestoreSnapshot().ok());
}

}  // namespace
}  // namespace hardneg

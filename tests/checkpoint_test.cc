#include "format/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "format/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

// Asserts the code and that the message holds every one of `parts`.
std::string Message(const absl::Status& status) {
  return std::string(status.message());
}

void ExpectError(const absl::Status& status, absl::StatusCode code,
                 std::initializer_list<std::string> parts) {
  EXPECT_EQ(status.code(), code) << status;
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(status.message()), HasSubstr(part));
  }
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(T));
}

// A version 1.0 .npy file with the given header dict and raw data.
std::string Npy(const std::string& descr, const std::string& shape,
                const std::string& data) {
  const std::string dict =
      absl::StrCat("{'descr': '", descr,
                   "', 'fortran_order': False, 'shape': ", shape, ", }");
  const size_t unpadded = 10 + dict.size() + 1;
  const size_t total = (unpadded + 63) / 64 * 64;
  const size_t header_len = total - 10;
  std::string out = "\x93NUMPY\x01";
  out.push_back('\0');
  out.push_back(static_cast<char>(header_len & 0xff));
  out.push_back(static_cast<char>(header_len >> 8));
  out += dict;
  out.append(total - unpadded, ' ');
  out.push_back('\n');
  return out + data;
}

// Shards are written as numpy would: row-major float32, int64 ids.
struct Shard {
  size_t rows;
  size_t dim;
  std::vector<float> embeddings;
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;
  bool has_labels;
};

// `rows` x `dim` embeddings with value id + column / 10 and ids from
// `first_id`, and labels id % 3 when `with_labels`.
Shard MakeShard(size_t rows, size_t dim, int64_t first_id, bool with_labels) {
  Shard shard{rows, dim, {}, {}, {}, with_labels};
  for (size_t r = 0; r < rows; ++r) {
    const int64_t id = first_id + static_cast<int64_t>(r);
    shard.ids.push_back(id);
    if (with_labels) shard.labels.push_back(id % 3);
    for (size_t c = 0; c < dim; ++c) {
      shard.embeddings.push_back(static_cast<float>(id) +
                                 static_cast<float>(c) / 10);
    }
  }
  return shard;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info =
        ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::path(::testing::TempDir()) /
            absl::StrCat("checkpoint_test_",
                         absl::StrReplaceAll(info->name(), {{"/", "_"}}), "_",
                         getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Creates <root>/<name> and returns its path.
  std::string Dir(const std::string& name) {
    std::string dir = root_ / name;
    fs::create_directories(dir);
    return dir;
  }

  static void WriteFile(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
  }

  // Writes shard i of `dir` as embeddings-0000i.npy etc.
  static void WriteShard(const std::string& dir, size_t i, const Shard& shard) {
    const std::string suffix = absl::StrCat("-0000", i, ".npy");
    ASSERT_TRUE(WriteNpyMatrix(dir + "/embeddings" + suffix,
                               shard.embeddings.data(), shard.rows, shard.dim)
                    .ok());
    ASSERT_TRUE(WriteNpyInt64(dir + "/ids" + suffix, shard.ids).ok());
    if (shard.has_labels) {
      ASSERT_TRUE(WriteNpyInt64(dir + "/labels" + suffix, shard.labels).ok());
    }
  }

  // The "shards" entry for shard i as WriteShard names its files.
  static std::string ShardJson(size_t i, bool with_labels) {
    const std::string suffix = absl::StrCat("-0000", i, ".npy");
    std::string json = absl::StrCat("{\"embeddings\": \"embeddings", suffix,
                                    "\", \"ids\": \"ids", suffix, "\"");
    if (with_labels) {
      absl::StrAppend(&json, ", \"labels\": \"labels", suffix, "\"");
    }
    return json + "}";
  }

  // A manifest for `num_shards` shards written by WriteShard.
  static std::string ManifestJson(const std::string& name, uint64_t step,
                                  size_t dim, size_t num_shards,
                                  bool with_labels) {
    std::string shards;
    for (size_t i = 0; i < num_shards; ++i) {
      if (i > 0) shards += ", ";
      shards += ShardJson(i, with_labels);
    }
    return absl::StrCat(
        "{\"name\": \"", name, "\", \"step\": ", step, ", \"dim\": ", dim,
        ", \"metric\": \"inner_product\", \"shards\": [", shards, "]}");
  }

  // A complete checkpoint of `shards` under <root>/<name>.
  std::string WriteShardedCheckpoint(const std::string& name, uint64_t step,
                                     const std::vector<Shard>& shards) {
    std::string dir = Dir(name);
    for (size_t i = 0; i < shards.size(); ++i) WriteShard(dir, i, shards[i]);
    WriteFile(dir + "/manifest.json",
              ManifestJson(name, step, shards[0].dim, shards.size(),
                           shards[0].has_labels));
    return dir;
  }

  // A one-shard checkpoint of 4 rows, dim 3, whose file `file` is then
  // replaced by `bytes`.
  std::string CheckpointWithFile(const std::string& file,
                                 const std::string& bytes) {
    std::string dir =
        WriteShardedCheckpoint("ckpt", 1, {MakeShard(4, 3, 0, true)});
    WriteFile(dir + "/" + file, bytes);
    return dir;
  }

  fs::path root_;
};

CheckpointManifest Manifest(const std::string& name, uint64_t step,
                            uint32_t dim,
                            std::optional<Metric> metric = std::nullopt) {
  CheckpointManifest manifest;
  manifest.name = name;
  manifest.step = step;
  manifest.dim = dim;
  manifest.metric = metric;
  return manifest;
}

TEST_F(CheckpointTest, WriteThenReadRoundTrip) {
  const Shard shard = MakeShard(5, 4, 100, /*with_labels=*/true);
  ASSERT_TRUE(WriteCheckpoint(root_, Manifest("v1", 12000, 4, Metric::kL2),
                              shard.embeddings, shard.ids, shard.labels)
                  .ok());
  const std::string dir = root_ / "v1";
  for (const char* file : {"manifest.json", "embeddings-00000.npy",
                           "ids-00000.npy", "labels-00000.npy"}) {
    EXPECT_TRUE(fs::is_regular_file(dir + "/" + file)) << file;
  }

  absl::StatusOr<Checkpoint> ckpt = ReadCheckpoint(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->dir, dir);
  EXPECT_EQ(ckpt->manifest.name, "v1");
  EXPECT_EQ(ckpt->manifest.step, 12000u);
  EXPECT_EQ(ckpt->manifest.dim, 4u);
  EXPECT_EQ(ckpt->manifest.metric, Metric::kL2);
  ASSERT_THAT(ckpt->manifest.shards, SizeIs(1));
  EXPECT_EQ(ckpt->manifest.shards[0].embeddings, "embeddings-00000.npy");
  EXPECT_EQ(ckpt->manifest.shards[0].ids, "ids-00000.npy");
  EXPECT_EQ(ckpt->manifest.shards[0].labels, "labels-00000.npy");

  const CandidateStore& store = ckpt->store;
  EXPECT_EQ(store.size(), 5u);
  EXPECT_EQ(store.dim(), 4u);
  EXPECT_TRUE(store.has_labels());
  EXPECT_EQ(store.ids(), shard.ids);
  EXPECT_EQ(store.labels(), shard.labels);
  EXPECT_EQ(std::vector<float>(store.data(), store.data() + 20),
            shard.embeddings);
  EXPECT_EQ(store.RowOf(103), 3u);
}

TEST_F(CheckpointTest, WriteWithoutLabelsOrMetric) {
  const Shard shard = MakeShard(3, 2, 0, /*with_labels=*/false);
  ASSERT_TRUE(WriteCheckpoint(root_, Manifest("plain", 0, 2), shard.embeddings,
                              shard.ids, {})
                  .ok());
  const std::string dir = root_ / "plain";
  EXPECT_FALSE(fs::exists(dir + "/labels-00000.npy"));
  absl::StatusOr<Checkpoint> ckpt = ReadCheckpoint(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->manifest.metric, std::nullopt);
  EXPECT_EQ(ckpt->manifest.step, 0u);
  EXPECT_TRUE(ckpt->manifest.shards[0].labels.empty());
  EXPECT_FALSE(ckpt->store.has_labels());
  EXPECT_EQ(ckpt->store.ids(), shard.ids);
}

TEST_F(CheckpointTest, RewriteReplacesContentAndLeavesNoTemporaryFiles) {
  const Shard first = MakeShard(3, 2, 0, true);
  const Shard second = MakeShard(2, 2, 50, false);
  ASSERT_TRUE(WriteCheckpoint(root_, Manifest("v", 1, 2), first.embeddings,
                              first.ids, first.labels)
                  .ok());
  // Not without being asked.
  EXPECT_EQ(WriteCheckpoint(root_, Manifest("v", 2, 2), second.embeddings,
                            second.ids, {})
                .code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(WriteCheckpoint(root_, Manifest("v", 2, 2), second.embeddings,
                              second.ids, {}, /*replace=*/true)
                  .ok());
  // The old labels file is gone with the old folder, and nothing staged is
  // left beside it.
  EXPECT_FALSE(fs::exists(root_ / "v" / "labels-00000.npy"));
  EXPECT_EQ(
      std::distance(fs::directory_iterator(root_), fs::directory_iterator()),
      1);
  absl::StatusOr<Checkpoint> ckpt = ReadCheckpoint(root_ / "v");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->manifest.step, 2u);
  EXPECT_EQ(ckpt->store.ids(), second.ids);
  EXPECT_FALSE(ckpt->store.has_labels());
  for (const auto& entry : fs::directory_iterator(root_ / "v")) {
    EXPECT_THAT(entry.path().filename().string(),
                ::testing::Not(HasSubstr("tmp")));
  }
}

TEST_F(CheckpointTest, WriteRejectsBadArguments) {
  const Shard shard = MakeShard(3, 2, 0, true);
  ExpectError(
      WriteCheckpoint(root_, Manifest("v", 1, 2), {1, 2, 3}, shard.ids, {}),
      absl::StatusCode::kInvalidArgument,
      {"expected 3 x 2 = 6 embedding floats, got 3"});
  ExpectError(WriteCheckpoint(root_, Manifest("v", 1, 2), shard.embeddings,
                              shard.ids, {1}),
              absl::StatusCode::kInvalidArgument, {"expected 3 labels"});
  ExpectError(WriteCheckpoint(root_, Manifest("v", 1, 0), {}, {}, {}),
              absl::StatusCode::kInvalidArgument, {"dim must be positive"});
  for (const char* name : {"", "..", "a/b"}) {
    ExpectError(WriteCheckpoint(root_, Manifest(name, 1, 2), shard.embeddings,
                                shard.ids, {}),
                absl::StatusCode::kInvalidArgument,
                {absl::StrCat("checkpoint name \"", name, "\"")});
  }
  EXPECT_TRUE(fs::is_empty(root_));
}

TEST_F(CheckpointTest, ReadsShardsInManifestOrder) {
  const std::vector<Shard> shards = {MakeShard(3, 4, 0, true),
                                     MakeShard(0, 4, 100, true),
                                     MakeShard(2, 4, 10, true)};
  const std::string dir = WriteShardedCheckpoint("multi", 7, shards);
  absl::StatusOr<Checkpoint> ckpt = ReadCheckpoint(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_THAT(ckpt->manifest.shards, SizeIs(3));
  EXPECT_THAT(ckpt->store.ids(), ElementsAre(0, 1, 2, 10, 11));
  EXPECT_THAT(ckpt->store.labels(), ElementsAre(0, 1, 2, 1, 2));
  std::vector<float> expected = shards[0].embeddings;
  expected.insert(expected.end(), shards[2].embeddings.begin(),
                  shards[2].embeddings.end());
  EXPECT_EQ(std::vector<float>(ckpt->store.data(),
                               ckpt->store.data() + expected.size()),
            expected);
}

// What a read told its observer, checked against the files: it starts at
// nothing, never goes back, and ends at every row and byte of the files.
void ExpectProgressCoversTheFiles(
    const std::vector<CheckpointReadProgress>& seen, const std::string& dir,
    size_t rows) {
  ASSERT_GE(seen.size(), 2u);
  size_t file_bytes = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".npy") file_bytes += entry.file_size();
  }
  EXPECT_EQ(seen.front().rows, 0u);
  EXPECT_EQ(seen.front().bytes, 0u);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].total_rows, rows);
    EXPECT_EQ(seen[i].total_bytes, file_bytes);
    if (i == 0) continue;
    EXPECT_GE(seen[i].rows, seen[i - 1].rows) << i;
    EXPECT_GE(seen[i].bytes, seen[i - 1].bytes) << i;
    EXPECT_TRUE(seen[i].rows > seen[i - 1].rows ||
                seen[i].bytes > seen[i - 1].bytes)
        << "a report repeats the one before it: " << i;
  }
  EXPECT_EQ(seen.back().rows, rows);
  EXPECT_EQ(seen.back().bytes, file_bytes);
}

TEST_F(CheckpointTest, ReadReportsRisingProgressEndingAtEveryRowAndByte) {
  // Three shards, one empty, the last over one 8 MiB read chunk.
  const std::vector<Shard> shards = {MakeShard(3, 4, 0, true),
                                     MakeShard(0, 4, 100, true),
                                     MakeShard(600000, 4, 1000, true)};
  const std::string dir = WriteShardedCheckpoint("multi", 7, shards);
  for (const ShardFilter filter : {ShardFilter{}, ShardFilter{1, 3}}) {
    std::vector<CheckpointReadProgress> seen;
    absl::StatusOr<Checkpoint> ckpt = ReadCheckpoint(
        dir, nullptr, filter, [&](const CheckpointReadProgress& progress) {
          seen.push_back(progress);
        });
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    ExpectProgressCoversTheFiles(seen, dir, 600003);
    // Some report falls inside the big embeddings file's read.
    EXPECT_TRUE(std::any_of(seen.begin(), seen.end(), [](const auto& p) {
      return p.rows > 3 && p.rows < 600003;
    })) << filter.count;
  }
}

TEST_F(CheckpointTest, WriteReportsRisingBytesEndingAtTheTotal) {
  const Shard shard = MakeShard(300000, 8, 0, /*with_labels=*/true);
  std::vector<std::pair<size_t, size_t>> seen;
  ASSERT_TRUE(WriteCheckpoint(root_, Manifest("w", 1, 8), shard.embeddings,
                              shard.ids, shard.labels, false,
                              [&](size_t bytes, size_t total) {
                                seen.emplace_back(bytes, total);
                              })
                  .ok());
  const size_t total = 300000 * (8 * sizeof(float) + 2 * sizeof(int64_t));
  ASSERT_GE(seen.size(), 3u);  // the embeddings take two 8 MiB chunks
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].second, total);
    if (i > 0) {
      EXPECT_GE(seen[i].first, seen[i - 1].first);
    }
  }
  EXPECT_EQ(seen.back().first, total);
}

TEST_F(CheckpointTest, ARejectedReadReportsNothing) {
  const std::string dir = WriteShardedCheckpoint(
      "big", 1, {MakeShard(10, 4, 0, /*with_labels=*/false)});
  int calls = 0;
  absl::StatusOr<Checkpoint> ckpt = ReadCheckpoint(
      dir,
      [](const CheckpointShape&) {
        return absl::ResourceExhaustedError("over budget");
      },
      {}, [&](const CheckpointReadProgress&) { ++calls; });
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(calls, 0);
}

TEST_F(CheckpointTest, ReadsFloat16AndInt32ShardsAndSubdirectories) {
  // What an encoder saving float16 embeddings and int32 ids produces, in a
  // subdirectory, mixed with an ordinary float32 shard.
  const std::string dir = Dir("half");
  fs::create_directories(dir + "/part1");
  const std::vector<uint16_t> half = {0x3c00, 0xc000, 0x3800, 0x0001};
  WriteFile(dir + "/part1/emb.npy", Npy("<f2", "(2, 2)", Bytes(half)));
  WriteFile(dir + "/part1/ids.npy",
            Npy("<i4", "(2,)", Bytes(std::vector<int32_t>{-7, 8})));
  const std::vector<float> f32 = {5, 6};
  ASSERT_TRUE(WriteNpyMatrix(dir + "/emb2.npy", f32.data(), 1, 2).ok());
  ASSERT_TRUE(WriteNpyInt64(dir + "/ids2.npy", {9}).ok());
  WriteFile(dir + "/manifest.json",
            R"({"name": "half", "step": 3, "dim": 2, "metric": "l2",
                "shards": [{"embeddings": "part1/emb.npy",
                            "ids": "part1/ids.npy"},
                           {"embeddings": "emb2.npy", "ids": "ids2.npy",
                            "labels": null}],
                "extra": "ignored"})");
  absl::StatusOr<Checkpoint> ckpt = ReadCheckpoint(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->manifest.metric, Metric::kL2);
  EXPECT_THAT(ckpt->store.ids(), ElementsAre(-7, 8, 9));
  EXPECT_THAT(std::vector<float>(ckpt->store.data(), ckpt->store.data() + 6),
              ElementsAre(1, -2, 0.5, std::ldexp(1.0f, -24), 5, 6));
}

TEST_F(CheckpointTest, ReadManifestParsesEveryField) {
  const std::string dir = Dir("m");
  WriteFile(dir + "/manifest.json",
            R"({"name": "enc-v3", "step": 18446744073709551615, "dim": 768,
                "metric": "ip", "shards": [
                  {"embeddings": "e0.npy", "ids": "i0.npy", "labels": "l0.npy"},
                  {"embeddings": "e1.npy", "ids": "i1.npy"}]})");
  absl::StatusOr<CheckpointManifest> manifest = ReadManifest(dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->name, "enc-v3");
  EXPECT_EQ(manifest->step, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(manifest->dim, 768u);
  EXPECT_EQ(manifest->metric, Metric::kInnerProduct);
  ASSERT_THAT(manifest->shards, SizeIs(2));
  EXPECT_EQ(manifest->shards[0].labels, "l0.npy");
  EXPECT_EQ(manifest->shards[1].embeddings, "e1.npy");
  EXPECT_EQ(manifest->shards[1].ids, "i1.npy");
  EXPECT_EQ(manifest->shards[1].labels, "");
}

TEST_F(CheckpointTest, ReadManifestNullMetricIsAbsent) {
  const std::string dir = Dir("m");
  WriteFile(dir + "/manifest.json",
            R"({"name": "n", "step": 1, "dim": 2, "metric": null,
                "shards": [{"embeddings": "e.npy", "ids": "i.npy"}]})");
  absl::StatusOr<CheckpointManifest> manifest = ReadManifest(dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->metric, std::nullopt);
}

TEST_F(CheckpointTest, MissingManifestIsNotFound) {
  const std::string dir = Dir("incomplete");
  ExpectError(ReadManifest(dir).status(), absl::StatusCode::kNotFound,
              {dir + "/manifest.json"});
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kNotFound,
              {dir + "/manifest.json"});
}

struct BadManifest {
  std::string label;  // names the case in test output
  std::string json;
  std::vector<std::string> message_parts;
};

class BadManifestTest : public CheckpointTest,
                        public ::testing::WithParamInterface<BadManifest> {};

// Valid apart from what each case changes.
const char kShards[] = R"("shards": [{"embeddings": "e.npy", "ids": "i.npy"}])";

std::string WithShards(const std::string& fields) {
  return absl::StrCat("{", fields, ", ", kShards, "}");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadManifestTest,
    ::testing::Values(
        BadManifest{"NotJson",
                    "{\"name\": \"x\", step: 1}",
                    {"not valid JSON", "parse error"}},
        BadManifest{
            "Truncated", R"({"name": "x", "step": 1,)", {"not valid JSON"}},
        BadManifest{"Empty", "", {"not valid JSON"}},
        // Found by tests/fuzz/manifest_fuzzer: json::parse threw
        // out_of_range, which escaped ReadManifest and aborted the server.
        BadManifest{"NumberOverflow",
                    WithShards(R"("name": "x", "step": 1e999, "dim": 2)"),
                    {"not valid JSON", "number overflow"}},
        BadManifest{
            "NotAnObject", "[1, 2]", {"expected a JSON object, found array"}},
        BadManifest{"MissingName",
                    WithShards(R"("step": 1, "dim": 2)"),
                    {"missing field \"name\""}},
        BadManifest{"NameNotString",
                    WithShards(R"("name": 5, "step": 1, "dim": 2)"),
                    {"field \"name\" must be a string, found number 5"}},
        BadManifest{"EmptyName",
                    WithShards(R"("name": "", "step": 1, "dim": 2)"),
                    {"field \"name\" must not be empty"}},
        BadManifest{"NameWithANewline",
                    WithShards(R"("name": "a\nb", "step": 1, "dim": 2)"),
                    {"field \"name\" has character 0x0a at position 1"}},
        BadManifest{"NameThatClimbs",
                    WithShards(R"("name": "../x", "step": 1, "dim": 2)"),
                    {"field \"name\" has character '/'"}},
        BadManifest{"MissingStep",
                    WithShards(R"("name": "x", "dim": 2)"),
                    {"missing field \"step\""}},
        BadManifest{"NegativeStep",
                    WithShards(R"("name": "x", "step": -5, "dim": 2)"),
                    {"field \"step\" must be non-negative, found -5"}},
        BadManifest{"FractionalStep",
                    WithShards(R"("name": "x", "step": 1.5, "dim": 2)"),
                    {"field \"step\" must be a non-negative integer",
                     "found number 1.5"}},
        BadManifest{"StepString",
                    WithShards(R"("name": "x", "step": "12000", "dim": 2)"),
                    {"field \"step\" must be a non-negative integer",
                     "found string \"12000\""}},
        BadManifest{"MissingDim",
                    WithShards(R"("name": "x", "step": 1)"),
                    {"missing field \"dim\""}},
        BadManifest{"ZeroDim",
                    WithShards(R"("name": "x", "step": 1, "dim": 0)"),
                    {"field \"dim\" must be positive, found 0"}},
        BadManifest{"NegativeDim",
                    WithShards(R"("name": "x", "step": 1, "dim": -3)"),
                    {"field \"dim\" must be non-negative, found -3"}},
        BadManifest{"HugeDim",
                    WithShards(R"("name": "x", "step": 1, "dim": 4294967296)"),
                    {"field \"dim\" is too large"}},
        BadManifest{"UnknownMetric",
                    WithShards(R"("name": "x", "step": 1, "dim": 2,
                                  "metric": "cosine")"),
                    {"field \"metric\"", "unknown metric \"cosine\""}},
        BadManifest{"MetricNotString",
                    WithShards(R"("name": "x", "step": 1, "dim": 2,
                                  "metric": 1)"),
                    {"field \"metric\" must be \"inner_product\" or \"l2\""}},
        BadManifest{"MissingShards",
                    R"({"name": "x", "step": 1, "dim": 2})",
                    {"missing field \"shards\""}},
        BadManifest{"EmptyShards",
                    R"({"name": "x", "step": 1, "dim": 2, "shards": []})",
                    {"field \"shards\" must list at least one shard"}},
        BadManifest{"ShardsNotList",
                    R"({"name": "x", "step": 1, "dim": 2, "shards": {}})",
                    {"field \"shards\" must be a list of shards"}},
        BadManifest{"ShardNotObject",
                    R"({"name": "x", "step": 1, "dim": 2,
                        "shards": ["e.npy"]})",
                    {"field \"shards[0]\" must be an object"}},
        BadManifest{"MissingIds",
                    R"({"name": "x", "step": 1, "dim": 2,
                        "shards": [{"embeddings": "e.npy"}]})",
                    {"missing field \"shards[0].ids\""}},
        BadManifest{"MissingEmbeddings",
                    R"({"name": "x", "step": 1, "dim": 2,
                        "shards": [{"embeddings": "e.npy", "ids": "i.npy"},
                                   {"ids": "i1.npy"}]})",
                    {"missing field \"shards[1].embeddings\""}},
        BadManifest{"IdsNotString",
                    R"({"name": "x", "step": 1, "dim": 2,
                        "shards": [{"embeddings": "e.npy", "ids": 3}]})",
                    {"field \"shards[0].ids\" must be a string"}},
        BadManifest{"LabelsNotString",
                    R"({"name": "x", "step": 1, "dim": 2,
                        "shards": [{"embeddings": "e.npy", "ids": "i.npy",
                                    "labels": ["l.npy"]}]})",
                    {"field \"shards[0].labels\" must be a string"}},
        BadManifest{"EmptyPath",
                    R"({"name": "x", "step": 1, "dim": 2,
                        "shards": [{"embeddings": "", "ids": "i.npy"}]})",
                    {"field \"shards[0].embeddings\" must name a file"}},
        BadManifest{
            "AbsolutePath",
            R"({"name": "x", "step": 1, "dim": 2,
                        "shards": [{"embeddings": "/etc/passwd",
                                    "ids": "i.npy"}]})",
            {"field \"shards[0].embeddings\"", "absolute path", "/etc/passwd"}},
        BadManifest{"DotDotPath",
                    R"({"name": "x", "step": 1, "dim": 2,
                        "shards": [{"embeddings": "e.npy",
                                    "ids": "sub/../../other/i.npy"}]})",
                    {"field \"shards[0].ids\"",
                     "must stay inside the checkpoint directory",
                     "sub/../../other/i.npy"}},
        BadManifest{"DotDotLabels",
                    R"({"name": "x", "step": 1, "dim": 2,
                        "shards": [{"embeddings": "e.npy", "ids": "i.npy",
                                    "labels": ".."}]})",
                    {"field \"shards[0].labels\"", "must stay inside"}},
        // Used to overflow the stack in the JSON dump of the error message:
        // the server crashed, and crash-looped at restart.
        BadManifest{"NestedHundredThousandDeep",
                    std::string(100000, '[') + std::string(100000, ']'),
                    {"nested deeper than 16 levels"}},
        BadManifest{"NestedInsideAField",
                    WithShards(absl::StrCat(
                        R"("name": "x", "step": 1, )", R"("dim": 2, "extra": )",
                        std::string(17, '['), std::string(17, ']'))),
                    {"nested deeper than 16 levels"}},
        BadManifest{"TooManyShards",
                    [] {
                      std::string shards;
                      for (int i = 0; i < 10001; ++i) {
                        absl::StrAppend(&shards, i == 0 ? "" : ",",
                                        R"({"embeddings": "e", "ids": "i"})");
                      }
                      return absl::StrCat(
                          R"({"name": "x", "step": 1, "dim": 2, "shards": [)",
                          shards, "]}");
                    }(),
                    {"lists 10001 shards; the limit is 10000"}}),
    [](const ::testing::TestParamInfo<BadManifest>& param_info) {
      return param_info.param.label;
    });

TEST_P(BadManifestTest, IsRejectedWithFileAndReason) {
  const std::string dir = Dir("bad");
  WriteFile(dir + "/manifest.json", GetParam().json);
  for (const absl::Status& status :
       {ReadManifest(dir).status(), ReadCheckpoint(dir).status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr(dir + "/manifest.json: "));
    for (const std::string& part : GetParam().message_parts) {
      EXPECT_THAT(std::string(status.message()), HasSubstr(part));
    }
  }
}

TEST_F(CheckpointTest, BracketsInsideStringsDoNotCountAsNesting) {
  const std::string dir = Dir("brackets");
  WriteFile(dir + "/manifest.json",
            absl::StrCat(R"({"name": "x", "step": 1, "dim": 2, "shards": [)",
                         R"({"embeddings": ")", std::string(40, '['),
                         R"(\"", "ids": "i.npy"}]})"));
  absl::StatusOr<CheckpointManifest> manifest = ReadManifest(dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->shards[0].embeddings, std::string(40, '[') + "\"");
}

TEST_F(CheckpointTest, ManifestOverFourMebibytesIsRejectedBeforeReading) {
  const std::string dir = Dir("huge");
  // Valid JSON, padded with spaces past the limit.
  WriteFile(dir + "/manifest.json",
            WithShards(R"("name": "x", "step": 1, "dim": 2)") +
                std::string(size_t{4} << 20, ' '));
  ExpectError(ReadManifest(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/manifest.json", "over the limit of 4194304"});
}

TEST_F(CheckpointTest, ManifestThatIsAFifoIsRejectedWithoutBlocking) {
  const std::string dir = Dir("fifo");
  ASSERT_EQ(::mkfifo((dir + "/manifest.json").c_str(), 0644), 0);
  ExpectError(ReadManifest(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/manifest.json", "not a regular file"});
  std::vector<RejectedManifest> rejected;
  ASSERT_TRUE(ListCheckpoints(root_, &rejected).ok());
  ASSERT_THAT(rejected, SizeIs(1));
  EXPECT_THAT(std::string(rejected[0].status.message()),
              HasSubstr("not a regular file"));
}

TEST_F(CheckpointTest, AdmissionSeesTheShapeBeforeAnyDataIsRead) {
  const std::string dir = WriteShardedCheckpoint(
      "ckpt", 1, {MakeShard(2, 3, 0, true), MakeShard(5, 3, 10, true)});
  // Shapes come from headers: a shard whose data is unreadable (here,
  // truncated) still gives its shape, and the admission refuses first.
  std::vector<CheckpointShape> seen;
  absl::Status status = ReadCheckpoint(dir, [&](const CheckpointShape& shape) {
                          seen.push_back(shape);
                          return absl::ResourceExhaustedError("over budget");
                        }).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  ASSERT_THAT(seen, SizeIs(1));
  EXPECT_EQ(seen[0].rows, 7u);
  EXPECT_EQ(seen[0].dim, 3u);
  EXPECT_TRUE(seen[0].has_labels);

  absl::StatusOr<Checkpoint> admitted = ReadCheckpoint(
      dir, [](const CheckpointShape&) { return absl::OkStatus(); });
  ASSERT_TRUE(admitted.ok()) << admitted.status();
  EXPECT_EQ(admitted->store.size(), 7u);
}

TEST_F(CheckpointTest, AHugeSparseShardIsRefusedFromItsHeader) {
  // 2^31 rows x 4 dims claimed by the header, a sparse file of that size:
  // the admission sees 32 GiB and nothing is allocated.
  const std::string dir = Dir("sparse");
  const size_t rows = size_t{1} << 31;
  const std::string header = Npy("<f4", absl::StrCat("(", rows, ", 4)"), "");
  WriteFile(dir + "/embeddings-00000.npy", header);
  ASSERT_EQ(::truncate((dir + "/embeddings-00000.npy").c_str(),
                       static_cast<off_t>(header.size() + rows * 16)),
            0);
  const std::string ids_header = Npy("<i8", absl::StrCat("(", rows, ",)"), "");
  WriteFile(dir + "/ids-00000.npy", ids_header);
  ASSERT_EQ(::truncate((dir + "/ids-00000.npy").c_str(),
                       static_cast<off_t>(ids_header.size() + rows * 8)),
            0);
  WriteFile(dir + "/manifest.json", ManifestJson("sparse", 1, 4, 1, false));
  size_t claimed = 0;
  absl::Status status = ReadCheckpoint(dir, [&](const CheckpointShape& shape) {
                          claimed = shape.rows;
                          return absl::ResourceExhaustedError("over budget");
                        }).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(claimed, rows);
}

// Symlinks used to be followed anywhere: last_rejected (readable by any
// client) then showed the first bytes of whatever file they named.
TEST_F(CheckpointTest, SymlinksMayNotLeadOutOfTheCheckpoint) {
  const std::string outside =
      (root_.parent_path() / absl::StrCat("outside_", ::getpid())).string();
  fs::create_directories(outside);
  std::ofstream(outside + "/secret.npy") << "root:x:0:0:secret";
  const Shard shard = MakeShard(3, 2, 0, false);
  ASSERT_TRUE(WriteCheckpoint(root_, Manifest("linked", 1, 2), shard.embeddings,
                              shard.ids, {})
                  .ok());
  const std::string dir = (root_ / "linked").string();
  fs::remove(dir + "/embeddings-00000.npy");
  fs::create_symlink(outside + "/secret.npy", dir + "/embeddings-00000.npy");
  absl::Status status = ReadCheckpoint(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("leads outside"));
  EXPECT_THAT(Message(status), Not(HasSubstr("root:x")));

  // A symlinked manifest, likewise.
  fs::remove(dir + "/manifest.json");
  fs::create_symlink(outside + "/secret.npy", dir + "/manifest.json");
  EXPECT_THAT(Message(ReadManifest(dir).status()), HasSubstr("leads outside"));

  // A symlinked checkpoint directory that leads out of the root is
  // reported, not read; one that stays inside is a checkpoint.
  fs::create_directory_symlink(outside, root_ / "escape");
  ASSERT_TRUE(WriteCheckpoint(root_, Manifest("real", 2, 2), shard.embeddings,
                              shard.ids, {})
                  .ok());
  fs::create_directory_symlink(root_ / "real", root_ / "alias");
  std::vector<RejectedManifest> rejected;
  absl::StatusOr<std::vector<CheckpointEntry>> entries =
      ListCheckpoints(root_.string(), &rejected);
  ASSERT_TRUE(entries.ok());
  std::vector<std::string> dirs;
  for (const CheckpointEntry& e : *entries) dirs.push_back(e.dir);
  EXPECT_THAT(dirs, ::testing::UnorderedElementsAre(
                        (root_ / "real").string(), (root_ / "alias").string()));
  bool escape_reported = false;
  for (const RejectedManifest& r : rejected) {
    if (r.dir == (root_ / "escape").string()) {
      escape_reported = true;
      EXPECT_THAT(Message(r.status), HasSubstr("leads outside"));
    }
  }
  EXPECT_TRUE(escape_reported);
  fs::remove_all(outside);
}

TEST_F(CheckpointTest, AcceptsDotsInsideFileNames) {
  // Only a ".." path component escapes the directory; "a..b" does not.
  const std::string dir = Dir("dots");
  const Shard shard = MakeShard(2, 2, 0, false);
  ASSERT_TRUE(
      WriteNpyMatrix(dir + "/e..0.npy", shard.embeddings.data(), 2, 2).ok());
  ASSERT_TRUE(WriteNpyInt64(dir + "/i.0.npy", shard.ids).ok());
  WriteFile(dir + "/manifest.json",
            R"({"name": "dots", "step": 1, "dim": 2,
                "shards": [{"embeddings": "./e..0.npy", "ids": "i.0.npy"}]})");
  absl::StatusOr<Checkpoint> ckpt = ReadCheckpoint(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->store.size(), 2u);
}

TEST_F(CheckpointTest, MissingShardFileIsNamed) {
  const std::string dir = WriteShardedCheckpoint(
      "ckpt", 1, {MakeShard(2, 3, 0, true), MakeShard(2, 3, 10, true)});
  fs::remove(dir + "/labels-00001.npy");
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kNotFound,
              {dir + "/labels-00001.npy", "no such file"});
  fs::remove(dir + "/embeddings-00000.npy");
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kNotFound,
              {dir + "/embeddings-00000.npy", "no such file"});
}

TEST_F(CheckpointTest, RejectsBadMagicInShard) {
  const std::string dir = CheckpointWithFile("ids-00000.npy", "not numpy");
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/ids-00000.npy", "bad magic"});
}

TEST_F(CheckpointTest, RejectsFloat64Embeddings) {
  const std::string dir = CheckpointWithFile(
      "embeddings-00000.npy",
      Npy("<f8", "(4, 3)", Bytes(std::vector<double>(12, 1.0))));
  ExpectError(
      ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
      {dir + "/embeddings-00000.npy", "unsupported dtype '<f8'", "float32"});
}

TEST_F(CheckpointTest, RejectsFloatIds) {
  const std::string dir = CheckpointWithFile(
      "ids-00000.npy", Npy("<f4", "(4,)", Bytes(std::vector<float>(4, 1.0f))));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/ids-00000.npy", "unsupported dtype '<f4'", "int64"});
}

TEST_F(CheckpointTest, RejectsFloatLabels) {
  const std::string dir = CheckpointWithFile(
      "labels-00000.npy",
      Npy("<f8", "(4,)", Bytes(std::vector<double>(4, 1.0))));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/labels-00000.npy", "unsupported dtype '<f8'"});
}

TEST_F(CheckpointTest, RejectsBigEndianEmbeddings) {
  const std::string dir = CheckpointWithFile(
      "embeddings-00000.npy", Npy(">f4", "(4, 3)", std::string(48, '\0')));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/embeddings-00000.npy", "big-endian"});
}

TEST_F(CheckpointTest, Rejects1DEmbeddings) {
  const std::string dir =
      CheckpointWithFile("embeddings-00000.npy",
                         Npy("<f4", "(12,)", Bytes(std::vector<float>(12))));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/embeddings-00000.npy", "wrong shape",
               "expected a 2-D array", "found shape (12,)"});
}

TEST_F(CheckpointTest, Rejects2DIds) {
  const std::string dir = CheckpointWithFile(
      "ids-00000.npy", Npy("<i8", "(4, 1)", Bytes(std::vector<int64_t>(4))));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/ids-00000.npy", "wrong shape", "expected a 1-D array",
               "found shape (4, 1)"});
}

TEST_F(CheckpointTest, RejectsTruncatedEmbeddings) {
  const std::string dir =
      CheckpointWithFile("embeddings-00000.npy",
                         Npy("<f4", "(4, 3)", Bytes(std::vector<float>(11))));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/embeddings-00000.npy", "truncated data"});
}

TEST_F(CheckpointTest, RejectsTrailingDataInIds) {
  const std::string dir = CheckpointWithFile(
      "ids-00000.npy",
      Npy("<i8", "(4,)", Bytes(std::vector<int64_t>{0, 1, 2, 3, 4})));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/ids-00000.npy", "trailing data"});
}

TEST_F(CheckpointTest, RejectsDimMismatchWithManifest) {
  const std::string dir = Dir("ckpt");
  WriteShard(dir, 0, MakeShard(2, 5, 0, false));
  WriteFile(dir + "/manifest.json", ManifestJson("ckpt", 1, 4, 1, false));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/embeddings-00000.npy", "dimension 5",
               "manifest.json says dim 4"});
}

TEST_F(CheckpointTest, RejectsIdCountMismatch) {
  const std::string dir = WriteShardedCheckpoint(
      "ckpt", 1, {MakeShard(2, 3, 0, false), MakeShard(3, 3, 10, false)});
  ASSERT_TRUE(WriteNpyInt64(dir + "/ids-00001.npy", {10, 11}).ok());
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/ids-00001.npy", "has 2 ids",
               dir + "/embeddings-00001.npy", "has 3 rows", "shard 1"});
}

TEST_F(CheckpointTest, RejectsLabelCountMismatch) {
  const std::string dir = CheckpointWithFile(
      "labels-00000.npy", Npy("<i8", "(5,)", Bytes(std::vector<int64_t>(5))));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/labels-00000.npy", "has 5 labels",
               dir + "/embeddings-00000.npy", "has 4 rows"});
}

TEST_F(CheckpointTest, RejectsLabelsInSomeShardsOnly) {
  const std::string dir = Dir("ckpt");
  WriteShard(dir, 0, MakeShard(2, 3, 0, true));
  WriteShard(dir, 1, MakeShard(2, 3, 10, false));
  WriteFile(dir + "/manifest.json",
            absl::StrCat(R"({"name": "ckpt", "step": 1, "dim": 3, "shards": [)",
                         ShardJson(0, true), ", ", ShardJson(1, false), "]}"));
  ExpectError(
      ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
      {dir + "/manifest.json", "shard 0 has labels", "shard 1 has none"});

  WriteFile(dir + "/manifest.json",
            absl::StrCat(R"({"name": "ckpt", "step": 1, "dim": 3, "shards": [)",
                         ShardJson(1, false), ", ", ShardJson(0, true), "]}"));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {"shard 1 has labels", "shard 0 has none"});
}

TEST_F(CheckpointTest, RejectsDuplicateIdWithinShard) {
  const std::string dir = CheckpointWithFile(
      "ids-00000.npy",
      Npy("<i8", "(4,)", Bytes(std::vector<int64_t>{5, 6, 7, 6})));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {"checkpoint " + dir, "duplicate id 6",
               dir + "/ids-00000.npy row 1", dir + "/ids-00000.npy row 3"});
}

TEST_F(CheckpointTest, RejectsDuplicateIdAcrossShards) {
  const std::string dir = WriteShardedCheckpoint(
      "ckpt", 1,
      {MakeShard(3, 2, 0, false), MakeShard(2, 2, 10, false),
       MakeShard(4, 2, 9, false)});  // ids 9..12 overlap shard 1's 10, 11
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {"checkpoint " + dir, "duplicate id 10",
               dir + "/ids-00001.npy row 0", dir + "/ids-00002.npy row 1"});
}

TEST_F(CheckpointTest, RejectsNonFiniteValuesNamingShardFileAndRow) {
  const float kBad[] = {std::numeric_limits<float>::quiet_NaN(),
                        std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()};
  for (float bad : kBad) {
    SCOPED_TRACE(bad);
    std::vector<Shard> shards = {MakeShard(3, 4, 0, false),
                                 MakeShard(3, 4, 10, false)};
    shards[1].embeddings[2 * 4 + 1] = bad;  // shard 1, row 2, column 1
    const std::string dir = WriteShardedCheckpoint("ckpt", 1, shards);
    ExpectError(ReadCheckpoint(dir).status(),
                absl::StatusCode::kInvalidArgument,
                {dir + "/embeddings-00001.npy", "non-finite value",
                 "at row 2 (id 12), column 1"});
    fs::remove_all(dir);
  }
}

TEST_F(CheckpointTest, RejectsNonFiniteFloat16) {
  const std::string dir = Dir("ckpt");
  // Row 1 of 2 holds float16 +inf.
  WriteFile(dir + "/embeddings-00000.npy",
            Npy("<f2", "(2, 2)",
                Bytes(std::vector<uint16_t>{0x3c00, 0x3c00, 0x3c00, 0x7c00})));
  ASSERT_TRUE(WriteNpyInt64(dir + "/ids-00000.npy", {1, 2}).ok());
  WriteFile(dir + "/manifest.json", ManifestJson("ckpt", 1, 2, 1, false));
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/embeddings-00000.npy", "non-finite value inf",
               "row 1 (id 2), column 1"});
}

TEST_F(CheckpointTest, RejectsCheckpointWithNoRows) {
  const std::string dir =
      WriteShardedCheckpoint("ckpt", 1, {MakeShard(0, 3, 0, false)});
  ExpectError(ReadCheckpoint(dir).status(), absl::StatusCode::kInvalidArgument,
              {"checkpoint " + dir, "has no rows"});
}

TEST_F(CheckpointTest, ListsHighestStepFirst) {
  const Shard shard = MakeShard(2, 2, 0, false);
  struct Version {
    std::string dir_name;
    std::string name;
    uint64_t step;
  };
  const std::vector<Version> versions = {{"d1", "a", 100},
                                         {"d2", "b", 12000},
                                         {"d3", "c", 5},
                                         {"d4", "a", 12000},
                                         {"d5", "z", 100}};
  for (const Version& v : versions) {
    const std::string dir = Dir(v.dir_name);
    WriteShard(dir, 0, shard);
    WriteFile(dir + "/manifest.json",
              ManifestJson(v.name, v.step, 2, 1, false));
  }
  std::vector<RejectedManifest> rejected;
  absl::StatusOr<std::vector<CheckpointEntry>> entries =
      ListCheckpoints(root_, &rejected);
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_THAT(rejected, IsEmpty());
  std::vector<std::string> order;
  for (const CheckpointEntry& entry : *entries) {
    order.push_back(absl::StrCat(entry.name, "@", entry.step));
    EXPECT_EQ(fs::path(entry.dir).parent_path(), root_);
  }
  // Ties on step: name descending.
  EXPECT_THAT(order,
              ElementsAre("b@12000", "a@12000", "z@100", "a@100", "c@5"));
  EXPECT_EQ((*entries)[0].dir, (root_ / "d2").string());
}

TEST_F(CheckpointTest, ListSkipsIncompleteAndReportsBrokenManifests) {
  const Shard shard = MakeShard(2, 2, 0, false);
  ASSERT_TRUE(WriteCheckpoint(root_, Manifest("good", 7, 2), shard.embeddings,
                              shard.ids, {})
                  .ok());
  // Shards written, manifest not yet: being written, skipped silently.
  WriteShard(Dir("incomplete"), 0, shard);
  // A staging directory, complete but not yet renamed into place.
  ASSERT_TRUE(WriteCheckpoint(root_, Manifest(".staging", 99, 2),
                              shard.embeddings, shard.ids, {})
                  .ok());
  const std::string not_json = Dir("not_json");
  WriteFile(not_json + "/manifest.json", "{\"name\": ");
  const std::string negative = Dir("negative");
  WriteFile(negative + "/manifest.json",
            R"({"name": "n", "step": -1, "dim": 2, "shards": []})");
  WriteFile(root_ / "stray-file.txt", "not a checkpoint");

  std::vector<RejectedManifest> found;
  absl::StatusOr<std::vector<CheckpointEntry>> entries =
      ListCheckpoints(root_, &found);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_THAT(*entries, SizeIs(1));
  EXPECT_EQ((*entries)[0].name, "good");
  EXPECT_EQ((*entries)[0].step, 7u);
  EXPECT_EQ((*entries)[0].dir, (root_ / "good").string());

  std::vector<std::string> rejected;
  for (const RejectedManifest& r : found) {
    EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
    rejected.push_back(absl::StrCat(r.dir, ": ", r.status.message()));
  }
  std::sort(rejected.begin(), rejected.end());
  ASSERT_THAT(rejected, SizeIs(2));
  EXPECT_THAT(rejected[0], HasSubstr(negative + ": manifest.json: "));
  EXPECT_THAT(rejected[0], HasSubstr("field \"step\" must be non-negative"));
  EXPECT_THAT(rejected[1], HasSubstr(not_json + ": manifest.json: "));
  EXPECT_THAT(rejected[1], HasSubstr("not valid JSON"));

  // Without a `rejected` list the broken ones are skipped all the same.
  entries = ListCheckpoints(root_);
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_THAT(*entries, SizeIs(1));
}

TEST_F(CheckpointTest, ListEmptyRoot) {
  absl::StatusOr<std::vector<CheckpointEntry>> entries = ListCheckpoints(root_);
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_THAT(*entries, IsEmpty());
}

TEST_F(CheckpointTest, ListMissingRootIsNotFound) {
  const std::string missing = root_ / "nope";
  ExpectError(ListCheckpoints(missing).status(), absl::StatusCode::kNotFound,
              {missing});
}

TEST_F(CheckpointTest, ListRootThatIsAFile) {
  const std::string file = root_ / "file";
  WriteFile(file, "x");
  ExpectError(ListCheckpoints(file).status(),
              absl::StatusCode::kFailedPrecondition, {file, "not a directory"});
}

}  // namespace
}  // namespace hardneg

// Snapshots: round trips of Flat and IVF versions (the IVF index is read
// back, not retrained, and answers identically), with and without labels,
// both metrics; the newest snapshot wins; pruning; corrupt snapshots are
// skipped for older ones; leftover temporaries are ignored and removed.
#include "versions/snapshot.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "index/vector_index.h"
#include "nlohmann/json.hpp"
#include "versions/index_version.h"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr size_t kDim = 16;
constexpr size_t kRows = 2000;
constexpr char kIvf[] = "IVF16,Flat";

// Every test's directories live under one root, removed at the end.
std::string TestRoot() {
  return absl::StrCat(::testing::TempDir(), "/snapshot_test_", getpid());
}

class RemoveTestRoot : public ::testing::Environment {
 public:
  void TearDown() override { fs::remove_all(TestRoot()); }
};

const ::testing::Environment* const kRemoveTestRoot =
    ::testing::AddGlobalTestEnvironment(new RemoveTestRoot);

std::string FreshDir(const std::string& name) {
  std::string dir = absl::StrCat(TestRoot(), "/", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string SnapshotDir(const std::string& data_dir, uint64_t sequence) {
  std::string digits = std::to_string(sequence);
  digits.insert(0, 20 - digits.size(), '0');
  return absl::StrCat(data_dir, "/snapshot-", digits);
}

// The names in `dir`, sorted.
std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct VersionSpec {
  uint64_t sequence = 1;
  std::string name = "v1";
  uint64_t step = 100;
  Metric metric = Metric::kInnerProduct;
  std::string factory = "Flat";
  ScanPrecision scan = ScanPrecision::kAuto;
  bool labels = true;
  uint32_t seed = 1;
};

VersionInfo InfoOf(const VersionSpec& spec) {
  VersionInfo info;
  info.name = spec.name;
  info.step = spec.step;
  info.sequence = spec.sequence;
  info.metric = spec.metric;
  // Sub-second, to check that created is not rounded to whole seconds.
  info.created = absl::FromUnixMicros(1700000000123456 +
                                      static_cast<int64_t>(spec.sequence));
  return info;
}

std::shared_ptr<const IndexVersion> MakeVersion(const VersionSpec& spec) {
  std::mt19937 rng(spec.seed);
  std::normal_distribution<float> normal;
  std::vector<float> vectors(kRows * kDim);
  for (float& v : vectors) v = normal(rng);
  std::vector<int64_t> ids(kRows);
  std::vector<int64_t> labels(kRows);
  for (size_t i = 0; i < kRows; ++i) {
    ids[i] = 1000 + static_cast<int64_t>(i) * 3;
    labels[i] = static_cast<int64_t>(i % 7);
  }
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      kDim, std::move(ids), std::move(vectors),
      spec.labels ? std::optional(std::move(labels)) : std::nullopt);
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return nullptr;
  IndexBuildOptions build;
  build.factory = spec.factory;
  build.scan = spec.scan;
  absl::StatusOr<std::shared_ptr<const IndexVersion>> version =
      IndexVersion::Build(InfoOf(spec), *std::move(store), build);
  EXPECT_TRUE(version.ok()) << version.status();
  return version.ok() ? *version : nullptr;
}

void Write(const std::string& data_dir, const VersionSpec& spec,
           size_t keep = 10) {
  std::shared_ptr<const IndexVersion> version = MakeVersion(spec);
  ASSERT_NE(version, nullptr);
  absl::Status written = WriteSnapshot({data_dir, keep, {}, {}}, *version);
  ASSERT_TRUE(written.ok()) << written;
}

struct SearchResult {
  std::vector<float> scores;
  std::vector<int64_t> rows;
};

SearchResult SearchAll(const IndexVersion& version, uint32_t seed) {
  constexpr size_t kQueries = 25;
  constexpr size_t kK = 10;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> queries(kQueries * version.dim());
  for (float& v : queries) v = normal(rng);
  SearchResult result{std::vector<float>(kQueries * kK),
                      std::vector<int64_t>(kQueries * kK)};
  absl::Status searched = version.index().Search(
      queries.data(), kQueries, kK, result.scores.data(), result.rows.data());
  EXPECT_TRUE(searched.ok()) << searched;
  return result;
}

class SnapshotRoundTripTest
    : public ::testing::TestWithParam<std::tuple<std::string, Metric, bool>> {};

TEST_P(SnapshotRoundTripTest, RestoresTheSameVersion) {
  const auto& [factory, metric, labels] = GetParam();
  const std::string dir = FreshDir("round_trip");
  VersionSpec spec;
  spec.sequence = 41;
  spec.name = "ckpt-round-trip";
  spec.step = 12000;
  spec.metric = metric;
  spec.factory = factory;
  spec.labels = labels;
  std::shared_ptr<const IndexVersion> original = MakeVersion(spec);
  ASSERT_NE(original, nullptr);
  ASSERT_TRUE(WriteSnapshot({dir, 3, {}, {}}, *original).ok());
  EXPECT_THAT(Entries(dir), ElementsAre("snapshot-00000000000000000041"));
  EXPECT_EQ(fs::exists(SnapshotDir(dir, 41) + "/index.faiss"),
            factory != "Flat");
  EXPECT_EQ(fs::exists(SnapshotDir(dir, 41) + "/labels.npy"), labels);

  absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
      ReadNewestSnapshot({dir, 3, {}, {}});
  ASSERT_TRUE(restored.ok()) << restored.status();
  const IndexVersion& copy = **restored;
  EXPECT_EQ(copy.info().name, "ckpt-round-trip");
  EXPECT_EQ(copy.info().step, 12000u);
  EXPECT_EQ(copy.info().sequence, 41u);
  EXPECT_EQ(copy.metric(), metric);
  EXPECT_LE(absl::AbsDuration(copy.info().created - original->info().created),
            absl::Microseconds(1));
  EXPECT_EQ(copy.index().type(), factory);
  EXPECT_EQ(copy.index().exact(), original->index().exact());

  ASSERT_EQ(copy.size(), original->size());
  ASSERT_EQ(copy.dim(), original->dim());
  EXPECT_EQ(copy.store().has_labels(), labels);
  EXPECT_EQ(copy.store().ids(), original->store().ids());
  EXPECT_EQ(copy.store().labels(), original->store().labels());
  EXPECT_TRUE(std::equal(original->store().data(),
                         original->store().data() + kRows * kDim,
                         copy.store().data()));

  // Identical answers, bit for bit: for IVF this is the saved quantizer and
  // lists (nprobe included), not a new training run.
  const SearchResult before = SearchAll(*original, 7);
  const SearchResult after = SearchAll(copy, 7);
  EXPECT_EQ(after.rows, before.rows);
  EXPECT_EQ(after.scores, before.scores);
}

INSTANTIATE_TEST_SUITE_P(
    FactoriesMetricsLabels, SnapshotRoundTripTest,
    ::testing::Combine(::testing::Values(std::string("Flat"),
                                         std::string(kIvf)),
                       ::testing::Values(Metric::kInnerProduct, Metric::kL2),
                       ::testing::Bool()),
    [](const auto& param_info) {
      return absl::StrCat(
          std::get<0>(param_info.param) == "Flat" ? "Flat" : "Ivf",
          std::get<1>(param_info.param) == Metric::kL2 ? "L2" : "InnerProduct",
          std::get<2>(param_info.param) ? "Labels" : "NoLabels");
    });

// The scan precision travels with the snapshot (meta.json's "scan"): a
// restored version scans as it was served, whatever the reader's own
// setting; a snapshot without it (written before scans existed) takes the
// reader's.
TEST(SnapshotTest, TheScanPrecisionIsKept) {
  for (ScanPrecision scan :
       {ScanPrecision::kF32, ScanPrecision::kBf16, ScanPrecision::kInt8}) {
    if (!CpuRunsScan(scan)) continue;  // restored as configured instead
    SCOPED_TRACE(ScanPrecisionName(scan));
    const std::string dir =
        FreshDir(absl::StrCat("scan-", ScanPrecisionName(scan)));
    VersionSpec spec;
    spec.scan = scan;
    Write(dir, spec);
    const nlohmann::json meta = nlohmann::json::parse(
        ReadText(SnapshotDir(dir, spec.sequence) + "/meta.json"));
    EXPECT_EQ(meta.value("scan", ""), ScanPrecisionName(scan));
    SnapshotOptions options{dir, 10, {}, {}};
    options.build.scan = scan == ScanPrecision::kF32 ? ScanPrecision::kBf16
                                                     : ScanPrecision::kF32;
    absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
        ReadNewestSnapshot(options);
    ASSERT_TRUE(restored.ok()) << restored.status();
    EXPECT_EQ((*restored)->index().scan(), scan);
  }
  // Without the field: the reader's setting.
  const std::string dir = FreshDir("scan-missing");
  Write(dir, VersionSpec{});
  const std::string meta_path = SnapshotDir(dir, 1) + "/meta.json";
  nlohmann::json meta = nlohmann::json::parse(ReadText(meta_path));
  ASSERT_EQ(meta.erase("scan"), 1u);
  std::ofstream(meta_path) << meta.dump();
  SnapshotOptions options{dir, 10, {}, {}};
  options.build.scan = ScanPrecision::kBf16;
  absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
      ReadNewestSnapshot(options);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->index().scan(), ScanPrecision::kBf16);
}

// SnapshotMetaJson, for writers that hold no IndexVersion (the bench's
// W4), writes what WriteSnapshot writes for the same version.
TEST(SnapshotTest, MetaJsonIsWhatWriteSnapshotWrites) {
  for (const bool labels : {false, true}) {
    const std::string dir = FreshDir(labels ? "meta-labels" : "meta");
    VersionSpec spec;
    spec.labels = labels;
    spec.scan = ScanPrecision::kF32;
    Write(dir, spec);
    SnapshotMeta meta;
    meta.info = InfoOf(spec);
    meta.dim = kDim;
    meta.size = kRows;
    meta.index = spec.factory;
    meta.scan = ScanPrecision::kF32;
    meta.has_labels = labels;
    EXPECT_EQ(SnapshotMetaJson(meta),
              ReadText(SnapshotDir(dir, spec.sequence) + "/meta.json"));
  }
}

TEST(SnapshotTest, NewestSequenceIsRestored) {
  const std::string dir = FreshDir("newest");
  for (uint64_t sequence : {3, 12, 5}) {
    VersionSpec spec;
    spec.sequence = sequence;
    spec.name = absl::StrCat("v", sequence);
    spec.seed = static_cast<uint32_t>(sequence);
    Write(dir, spec);
  }
  absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
      ReadNewestSnapshot({dir, 10, {}, {}});
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->info().sequence, 12u);
  EXPECT_EQ((*restored)->info().name, "v12");
}

TEST(SnapshotTest, PruningKeepsTheNewest) {
  const std::string dir = FreshDir("prune");
  for (uint64_t sequence = 1; sequence <= 5; ++sequence) {
    VersionSpec spec;
    spec.sequence = sequence;
    Write(dir, spec, /*keep=*/2);
  }
  EXPECT_THAT(Entries(dir), ElementsAre("snapshot-00000000000000000004",
                                        "snapshot-00000000000000000005"));
  VersionSpec last;
  last.sequence = 6;
  Write(dir, last, /*keep=*/1);
  EXPECT_THAT(Entries(dir), ElementsAre("snapshot-00000000000000000006"));
}

TEST(SnapshotTest, PruningNeverRemovesTheSnapshotJustWritten) {
  // A higher sequence left by an earlier run (e.g. skipped as corrupt at
  // the restart that reset the count) must not push out the new one.
  const std::string dir = FreshDir("prune_written");
  VersionSpec high;
  high.sequence = 9;
  Write(dir, high);
  VersionSpec low;
  low.sequence = 4;
  Write(dir, low, /*keep=*/1);
  EXPECT_THAT(Entries(dir), ElementsAre("snapshot-00000000000000000004",
                                        "snapshot-00000000000000000009"));
}

enum class Corruption {
  kTruncatedVectors,
  kGarbageMeta,
  kMissingMeta,
  kMissingIndex,
  kTruncatedIndex,
  kWrongSequenceInMeta,
};

void Corrupt(const std::string& snapshot, Corruption corruption) {
  switch (corruption) {
    case Corruption::kTruncatedVectors: {
      const std::string path = snapshot + "/vectors.npy";
      fs::resize_file(path, fs::file_size(path) - 100);
      break;
    }
    case Corruption::kGarbageMeta: {
      std::ofstream(snapshot + "/meta.json", std::ios::trunc)
          << "{\"name\": \"v2\", \"step\": 2, garbage";
      break;
    }
    case Corruption::kMissingMeta:
      fs::remove(snapshot + "/meta.json");
      break;
    case Corruption::kMissingIndex:
      fs::remove(snapshot + "/index.faiss");
      break;
    case Corruption::kTruncatedIndex: {
      const std::string path = snapshot + "/index.faiss";
      fs::resize_file(path, fs::file_size(path) / 2);
      break;
    }
    case Corruption::kWrongSequenceInMeta: {
      // A directory renamed by hand: the name and the content disagree.
      fs::rename(snapshot, snapshot.substr(0, snapshot.size() - 2) + "77");
      break;
    }
  }
}

std::string CorruptionName(Corruption corruption) {
  switch (corruption) {
    case Corruption::kTruncatedVectors:
      return "TruncatedVectors";
    case Corruption::kGarbageMeta:
      return "GarbageMeta";
    case Corruption::kMissingMeta:
      return "MissingMeta";
    case Corruption::kMissingIndex:
      return "MissingIndex";
    case Corruption::kTruncatedIndex:
      return "TruncatedIndex";
    case Corruption::kWrongSequenceInMeta:
      return "WrongSequenceInMeta";
  }
  return "Unknown";
}

// What the skip's log line must say.
std::string ExpectedReason(Corruption corruption) {
  switch (corruption) {
    case Corruption::kTruncatedVectors:
      return "vectors.npy: truncated data";
    case Corruption::kGarbageMeta:
      return "meta.json: not a JSON object";
    case Corruption::kMissingMeta:
      return "meta.json: no such file";
    case Corruption::kMissingIndex:
      return "index.faiss for reading: No such file";
    case Corruption::kTruncatedIndex:
      return "index.faiss failed";
    case Corruption::kWrongSequenceInMeta:
      return "sequence 2 differs from the directory name's 77";
  }
  return "";
}

class CorruptSnapshotTest : public ::testing::TestWithParam<Corruption> {};

TEST_P(CorruptSnapshotTest, IsSkippedForTheNextOlder) {
  const std::string dir = FreshDir("corrupt");
  VersionSpec older;
  older.sequence = 1;
  older.name = "v1";
  older.factory = kIvf;
  Write(dir, older);
  VersionSpec newer;
  newer.sequence = 2;
  newer.name = "v2";
  newer.factory = kIvf;
  newer.seed = 2;
  Write(dir, newer);
  Corrupt(SnapshotDir(dir, 2), GetParam());

  ::testing::internal::CaptureStderr();
  absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
      ReadNewestSnapshot({dir, 10, {}, {}});
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->info().name, "v1");
  EXPECT_EQ((*restored)->info().sequence, 1u);
  EXPECT_THAT(log, HasSubstr("event=snapshot_skipped"));
  EXPECT_THAT(log, HasSubstr("/snapshot-000000000000000000"));
  EXPECT_THAT(log, HasSubstr(ExpectedReason(GetParam())));
}

INSTANTIATE_TEST_SUITE_P(
    Corruptions, CorruptSnapshotTest,
    ::testing::Values(Corruption::kTruncatedVectors, Corruption::kGarbageMeta,
                      Corruption::kMissingMeta, Corruption::kMissingIndex,
                      Corruption::kTruncatedIndex,
                      Corruption::kWrongSequenceInMeta),
    [](const auto& param_info) { return CorruptionName(param_info.param); });

TEST(SnapshotTest, EverySnapshotCorruptIsNotFound) {
  const std::string dir = FreshDir("all_corrupt");
  VersionSpec spec;
  Write(dir, spec);
  Corrupt(SnapshotDir(dir, 1), Corruption::kGarbageMeta);
  ::testing::internal::CaptureStderr();
  absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
      ReadNewestSnapshot({dir, 10, {}, {}});
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(restored.status().code(), absl::StatusCode::kNotFound);
}

TEST(SnapshotTest, ASkippedSnapshotIsReplacedByTheNextWriteOfItsSequence) {
  const std::string dir = FreshDir("replace");
  VersionSpec older;
  older.sequence = 1;
  Write(dir, older);
  VersionSpec newer;
  newer.sequence = 2;
  newer.name = "broken";
  Write(dir, newer);
  Corrupt(SnapshotDir(dir, 2), Corruption::kTruncatedVectors);
  VersionSpec again;
  again.sequence = 2;
  again.name = "rebuilt";
  again.seed = 5;
  Write(dir, again);
  absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
      ReadNewestSnapshot({dir, 10, {}, {}});
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->info().name, "rebuilt");
  EXPECT_EQ((*restored)->info().sequence, 2u);
}

// What a kill -9 in the middle of a write leaves behind.
void MakeLeftovers(const std::string& dir) {
  fs::create_directories(dir + "/.tmp-snapshot-9-12345");
  std::ofstream(dir + "/.tmp-snapshot-9-12345/meta.json") << "{\"name\":";
  std::ofstream(dir + "/.tmp-snapshot-9-12345/ids.npy.tmp-AbCdEf") << "x";
  fs::create_directories(dir + "/.tmp-old-3-999");
}

TEST(SnapshotTest, LeftoverTemporariesAreIgnoredAndRemovedByARead) {
  const std::string dir = FreshDir("leftovers_read");
  VersionSpec spec;
  spec.sequence = 3;
  Write(dir, spec);
  MakeLeftovers(dir);
  absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
      ReadNewestSnapshot({dir, 10, {}, {}});
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->info().sequence, 3u);
  EXPECT_THAT(Entries(dir), ElementsAre("snapshot-00000000000000000003"));
}

TEST(SnapshotTest, LeftoverTemporariesAreRemovedByAWrite) {
  const std::string dir = FreshDir("leftovers_write");
  MakeLeftovers(dir);
  VersionSpec spec;
  spec.sequence = 4;
  Write(dir, spec);
  EXPECT_THAT(Entries(dir), ElementsAre("snapshot-00000000000000000004"));
}

TEST(SnapshotTest, OnlyTemporariesIsNotFound) {
  const std::string dir = FreshDir("only_leftovers");
  MakeLeftovers(dir);
  absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
      ReadNewestSnapshot({dir, 10, {}, {}});
  EXPECT_EQ(restored.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Entries(dir), IsEmpty());
}

TEST(SnapshotTest, EmptyOrMissingDirIsNotFound) {
  const std::string dir = FreshDir("empty");
  absl::StatusOr<std::shared_ptr<const IndexVersion>> restored =
      ReadNewestSnapshot({dir, 3, {}, {}});
  EXPECT_EQ(restored.status().code(), absl::StatusCode::kNotFound);
  restored = ReadNewestSnapshot({dir + "/missing", 3, {}, {}});
  EXPECT_EQ(restored.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(restored.status().message(), HasSubstr("missing"));
  restored = ReadNewestSnapshot({"", 3, {}, {}});
  EXPECT_EQ(restored.status().code(), absl::StatusCode::kNotFound);
  // Unrelated entries are not snapshots.
  fs::create_directories(dir + "/snapshot-12");
  fs::create_directories(dir + "/lost+found");
  restored = ReadNewestSnapshot({dir, 3, {}, {}});
  EXPECT_EQ(restored.status().code(), absl::StatusCode::kNotFound);
}

TEST(SnapshotTest, WriteCreatesTheDataDir) {
  const std::string dir = FreshDir("create") + "/a/b";
  VersionSpec spec;
  Write(dir, spec);
  EXPECT_THAT(Entries(dir), ElementsAre("snapshot-00000000000000000001"));
}

TEST(SnapshotTest, UnwritableDataDirIsInternalAndNamesThePath) {
  const std::string dir = FreshDir("unwritable");
  std::ofstream(dir + "/file") << "not a directory";
  std::shared_ptr<const IndexVersion> version = MakeVersion(VersionSpec());
  ASSERT_NE(version, nullptr);
  absl::Status written =
      WriteSnapshot({dir + "/file/data", 3, {}, {}}, *version);
  EXPECT_EQ(written.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(written.message(), HasSubstr(dir + "/file/data"));
}

// LoadVectorIndex checks a saved index against the store it is loaded over.
class LoadVectorIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir("load_index");
    VersionSpec spec;
    spec.factory = kIvf;
    version_ = MakeVersion(spec);
    ASSERT_NE(version_, nullptr);
    path_ = dir_ + "/index.faiss";
    ASSERT_TRUE(version_->index().Save(path_).ok());
  }

  CandidateStore Store(size_t rows, size_t dim) {
    std::vector<int64_t> ids(rows);
    for (size_t i = 0; i < rows; ++i) ids[i] = static_cast<int64_t>(i);
    absl::StatusOr<CandidateStore> store = CandidateStore::Create(
        dim, std::move(ids), std::vector<float>(rows * dim, 0.5f),
        std::nullopt);
    EXPECT_TRUE(store.ok()) << store.status();
    return *std::move(store);
  }

  static IndexBuildOptions Ivf() {
    IndexBuildOptions options;
    options.factory = kIvf;
    return options;
  }

  std::string dir_;
  std::string path_;
  std::shared_ptr<const IndexVersion> version_;
};

TEST_F(LoadVectorIndexTest, MatchingStoreLoads) {
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      LoadVectorIndex(path_, version_->store(), Metric::kInnerProduct, Ivf());
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ((*index)->type(), kIvf);
  EXPECT_FALSE((*index)->exact());
}

TEST_F(LoadVectorIndexTest, DimensionMismatchIsInvalidArgument) {
  CandidateStore store = Store(kRows, kDim + 1);
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      LoadVectorIndex(path_, store, Metric::kInnerProduct, Ivf());
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(index.status().message(), HasSubstr("dimension 16"));
  EXPECT_THAT(index.status().message(), HasSubstr("dimension 17"));
}

TEST_F(LoadVectorIndexTest, MetricMismatchIsInvalidArgument) {
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      LoadVectorIndex(path_, version_->store(), Metric::kL2, Ivf());
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(index.status().message(), HasSubstr("metric inner_product"));
  EXPECT_THAT(index.status().message(), HasSubstr("expected l2"));
}

TEST_F(LoadVectorIndexTest, SizeMismatchIsInvalidArgument) {
  CandidateStore store = Store(kRows - 1, kDim);
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      LoadVectorIndex(path_, store, Metric::kInnerProduct, Ivf());
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(index.status().message(), HasSubstr("2000 vectors"));
  EXPECT_THAT(index.status().message(), HasSubstr("1999"));
}

TEST_F(LoadVectorIndexTest, UnreadableFileIsInternalAndNamesIt) {
  absl::StatusOr<std::unique_ptr<VectorIndex>> index = LoadVectorIndex(
      dir_ + "/missing.faiss", version_->store(), Metric::kInnerProduct, Ivf());
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(index.status().message(), HasSubstr("missing.faiss"));
}

TEST_F(LoadVectorIndexTest, FlatReadsNothing) {
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      LoadVectorIndex(dir_ + "/missing.faiss", version_->store(), Metric::kL2,
                      IndexBuildOptions{});
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ((*index)->type(), "Flat");
  EXPECT_TRUE((*index)->exact());
  // Saving a Flat index writes no file: its data is the store's.
  ASSERT_TRUE((*index)->Save(dir_ + "/flat.faiss").ok());
  EXPECT_FALSE(fs::exists(dir_ + "/flat.faiss"));
}

}  // namespace
}  // namespace hardneg

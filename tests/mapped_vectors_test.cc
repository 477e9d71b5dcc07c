// Vectors memory-mapped instead of held: a store mapped from an .npy file
// equals the heap store row for row and answer for answer, counts none of
// its rows in MemoryBytes, and unmaps when dropped; files that cannot be
// mapped are refused by name; the IndexManager maps a checkpoint's copy
// (never the checkpoint itself, which a trainer may delete or rewrite) and
// a restored snapshot's own file, and frees the old mapping at a refresh.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "corpus/candidate_store.h"
#include "corpus/mapped_floats.h"
#include "format/checkpoint.h"
#include "format/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "index/vector_index.h"
#include "versions/index_manager.h"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr size_t kDim = 8;
constexpr size_t kRows = 300;
constexpr size_t kQueries = 5;
constexpr size_t kTopK = 10;

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> values(n);
  for (float& v : values) v = normal(rng);
  return values;
}

std::vector<int64_t> Ids(size_t n, int64_t base = 100) {
  std::vector<int64_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = base + static_cast<int64_t>(i) * 7;
  return ids;
}

// The `bytes` / 4 floats at `data`, as values (memcmp is no way to
// compare floats).
std::vector<float> RowsAt(const float* data, size_t bytes) {
  return std::vector<float>(data, data + bytes / sizeof(float));
}

// How many mappings of this process show the file with inode `inode`.
size_t MappingsOf(ino_t inode) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  size_t count = 0;
  while (std::getline(maps, line)) {
    std::istringstream fields(line);
    std::string address, perms, offset, device;
    uint64_t line_inode = 0;
    fields >> address >> perms >> offset >> device >> line_inode;
    if (line_inode == static_cast<uint64_t>(inode)) ++count;
  }
  return count;
}

ino_t InodeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

// The rows a Flat index over `store` returns for fixed queries.
std::vector<int64_t> Answers(const CandidateStore& store, Metric metric) {
  IndexBuildOptions options;
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(store, metric, options);
  EXPECT_TRUE(index.ok()) << index.status();
  if (!index.ok()) return {};
  const std::vector<float> queries = RandomFloats(kQueries * store.dim(), 99);
  std::vector<float> scores(kQueries * kTopK);
  std::vector<int64_t> rows(kQueries * kTopK);
  EXPECT_TRUE(
      (*index)
          ->Search(queries.data(), kQueries, kTopK, scores.data(), rows.data())
          .ok());
  // Single queries too: they take the other kernel (half_scan, rescore).
  for (size_t q = 0; q < kQueries; ++q) {
    std::vector<float> one_score(kTopK);
    std::vector<int64_t> one_row(kTopK);
    EXPECT_TRUE((*index)
                    ->Search(queries.data() + q * store.dim(), 1, kTopK,
                             one_score.data(), one_row.data())
                    .ok());
    rows.insert(rows.end(), one_row.begin(), one_row.end());
  }
  return rows;
}

// The answers of the version a manager serves, by candidate id.
std::vector<int64_t> ServedAnswers(const IndexManager& manager) {
  std::shared_ptr<const IndexVersion> version = manager.Current();
  EXPECT_NE(version, nullptr);
  if (version == nullptr) return {};
  std::vector<int64_t> ids;
  for (int64_t row : Answers(version->store(), version->metric())) {
    ids.push_back(row < 0 ? -1 : version->store().id(static_cast<size_t>(row)));
  }
  return ids;
}

// Writes a .npy file by hand, for dtypes and orders the writer refuses.
void WriteRawNpy(const std::string& path, const std::string& descr,
                 bool fortran, size_t rows, size_t cols, size_t item_size) {
  std::string dict = absl::StrCat(
      "{'descr': '", descr, "', 'fortran_order': ", fortran ? "True" : "False",
      ", 'shape': (", rows, ", ", cols, "), }");
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(dict.size() & 0xff));
  bytes.push_back(static_cast<char>(dict.size() >> 8));
  bytes += dict;
  bytes.append(rows * cols * item_size, '\0');
  std::ofstream(path, std::ios::binary) << bytes;
}

class MappedVectorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = absl::StrCat(
        ::testing::TempDir(), "/hardneg_mapped_test_", ::getpid(), "_",
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(ckpts());
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string ckpts() const { return root_ + "/ckpts"; }
  std::string data() const { return root_ + "/data"; }

  void WriteCkpt(const std::string& name, uint64_t step) {
    CheckpointManifest manifest;
    manifest.name = name;
    manifest.step = step;
    manifest.dim = kDim;
    manifest.metric = Metric::kInnerProduct;
    const std::vector<float> embeddings =
        RandomFloats(kRows * kDim, static_cast<uint32_t>(step));
    std::vector<int64_t> labels(kRows, 3);
    ASSERT_TRUE(WriteCheckpoint(ckpts(), manifest, embeddings, Ids(kRows),
                                labels, /*replace=*/true)
                    .ok());
  }

  IndexManagerOptions Options(bool mmap) const {
    IndexManagerOptions options;
    options.checkpoints_dir = ckpts();
    options.data_dir = data();
    options.mmap_vectors = mmap;
    return options;
  }

  std::string root_;
};

TEST_F(MappedVectorsTest, AMappedStoreEqualsTheHeapStore) {
  const std::vector<float> values = RandomFloats(kRows * kDim, 1);
  const std::string path = root_ + "/vectors.npy";
  ASSERT_TRUE(WriteNpyMatrix(path, values.data(), kRows, kDim).ok());
  absl::StatusOr<MappedNpyMatrix> mapped = MapNpyMatrix(path);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ(mapped->rows, kRows);
  EXPECT_EQ(mapped->cols, kDim);
  absl::StatusOr<CandidateStore> heap =
      CandidateStore::Create(kDim, Ids(kRows), values, std::nullopt);
  absl::StatusOr<CandidateStore> store = CandidateStore::CreateMapped(
      kDim, Ids(kRows), std::move(mapped->data), std::nullopt);
  ASSERT_TRUE(heap.ok() && store.ok()) << store.status();
  EXPECT_TRUE(store->mapped());
  EXPECT_FALSE(heap->mapped());
  EXPECT_EQ(store->vectors_file(), path);
  ASSERT_EQ(RowsAt(store->data(), values.size() * sizeof(float)),
            RowsAt(values.data(), values.size() * sizeof(float)));
  for (size_t row = 0; row < kRows; ++row) {
    EXPECT_EQ(store->vector(row)[kDim - 1], values[row * kDim + kDim - 1]);
    EXPECT_EQ(store->squared_norm(row), heap->squared_norm(row)) << row;
  }
  EXPECT_EQ(store->max_norm(), heap->max_norm());
  for (Metric metric : {Metric::kInnerProduct, Metric::kL2}) {
    EXPECT_EQ(Answers(*store, metric), Answers(*heap, metric));
  }
  // The mapped rows are not the process's memory: all else is counted.
  EXPECT_EQ(store->MemoryBytes(),
            heap->MemoryBytes() - kRows * kDim * sizeof(float));
  EXPECT_EQ(CandidateStore::MemoryBytesFor(kRows, kDim, false, true),
            CandidateStore::MemoryBytesFor(kRows, kDim, false) -
                kRows * kDim * sizeof(float));
}

TEST_F(MappedVectorsTest, AMappedStoreChecksItsValues) {
  std::vector<float> values = RandomFloats(kRows * kDim, 2);
  values[17 * kDim + 3] = std::numeric_limits<float>::infinity();
  const std::string path = root_ + "/vectors.npy";
  ASSERT_TRUE(WriteNpyMatrix(path, values.data(), kRows, kDim).ok());
  absl::StatusOr<MappedNpyMatrix> mapped = MapNpyMatrix(path);
  ASSERT_TRUE(mapped.ok());
  absl::StatusOr<CandidateStore> store = CandidateStore::CreateMapped(
      kDim, Ids(kRows), std::move(mapped->data), std::nullopt);
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr("row 17"));
}

TEST_F(MappedVectorsTest, TheMappingIsReleasedWithTheStore) {
  const std::vector<float> values = RandomFloats(kRows * kDim, 3);
  const std::string path = root_ + "/vectors.npy";
  ASSERT_TRUE(WriteNpyMatrix(path, values.data(), kRows, kDim).ok());
  const ino_t inode = InodeOf(path);
  ASSERT_EQ(MappingsOf(inode), 0u);
  {
    absl::StatusOr<MappedNpyMatrix> mapped = MapNpyMatrix(path);
    ASSERT_TRUE(mapped.ok());
    absl::StatusOr<CandidateStore> store = CandidateStore::CreateMapped(
        kDim, Ids(kRows), std::move(mapped->data), std::nullopt);
    ASSERT_TRUE(store.ok());
    CandidateStore moved = *std::move(store);  // a move keeps one mapping
    EXPECT_EQ(MappingsOf(inode), 1u);
    EXPECT_EQ(moved.vector(kRows - 1)[0], values[(kRows - 1) * kDim]);
  }
  EXPECT_EQ(MappingsOf(inode), 0u);
}

TEST_F(MappedVectorsTest, FilesThatCannotBeMappedAreRefusedByName) {
  struct Case {
    const char* descr;
    bool fortran;
    size_t item_size;
    const char* expected;
  };
  for (const Case& c : {Case{"<f2", false, 2, "cannot be mapped: dtype '<f2'"},
                        Case{"<f4", true, 4, "cannot be mapped: Fortran"},
                        Case{">f4", false, 4, "big-endian"},
                        Case{"<f8", false, 8, "unsupported dtype '<f8'"}}) {
    SCOPED_TRACE(c.descr);
    const std::string path = root_ + "/odd.npy";
    WriteRawNpy(path, c.descr, c.fortran, 3, 2, c.item_size);
    absl::StatusOr<MappedNpyMatrix> mapped = MapNpyMatrix(path);
    ASSERT_FALSE(mapped.ok());
    EXPECT_EQ(mapped.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(mapped.status().message(), HasSubstr(path));
    EXPECT_THAT(mapped.status().message(), HasSubstr(c.expected));
  }
}

TEST_F(MappedVectorsTest, ACheckpointReadIntoAMappedCopyEqualsTheHeapRead) {
  WriteCkpt("v1", 1);
  const std::string dir = ckpts() + "/v1";
  const std::string copy = root_ + "/copy.npy";
  absl::StatusOr<Checkpoint> heap = ReadCheckpoint(dir);
  absl::StatusOr<Checkpoint> mapped =
      ReadCheckpoint(dir, nullptr, {}, nullptr, copy);
  ASSERT_TRUE(heap.ok() && mapped.ok()) << mapped.status();
  EXPECT_FALSE(heap->store.mapped());
  ASSERT_TRUE(mapped->store.mapped());
  EXPECT_EQ(mapped->store.vectors_file(), copy);
  EXPECT_NE(InodeOf(copy), InodeOf(dir + "/embeddings-00000.npy"));
  EXPECT_EQ(RowsAt(mapped->store.data(), kRows * kDim * sizeof(float)),
            RowsAt(heap->store.data(), kRows * kDim * sizeof(float)));
  EXPECT_EQ(mapped->store.ids(), heap->store.ids());
  EXPECT_EQ(mapped->store.labels(), heap->store.labels());

  // One shard of two gathers its rows into the copy the same way.
  const ShardFilter shard{1, 2};
  absl::StatusOr<Checkpoint> heap_shard = ReadCheckpoint(dir, nullptr, shard);
  absl::StatusOr<Checkpoint> mapped_shard =
      ReadCheckpoint(dir, nullptr, shard, nullptr, root_ + "/shard.npy");
  ASSERT_TRUE(heap_shard.ok() && mapped_shard.ok()) << mapped_shard.status();
  ASSERT_TRUE(mapped_shard->store.mapped());
  ASSERT_GT(heap_shard->store.size(), 0u);
  ASSERT_LT(heap_shard->store.size(), kRows);
  EXPECT_EQ(mapped_shard->store.ids(), heap_shard->store.ids());
  EXPECT_EQ(RowsAt(mapped_shard->store.data(),
                   heap_shard->store.size() * kDim * sizeof(float)),
            RowsAt(heap_shard->store.data(),
                   heap_shard->store.size() * kDim * sizeof(float)));
}

TEST_F(MappedVectorsTest, ServesTheSameAnswersAsTheHeapAndAfterARestart) {
  WriteCkpt("v1", 1);
  IndexManagerOptions heap_options = Options(false);
  heap_options.data_dir = root_ + "/heap-data";
  IndexManager heap(heap_options);
  ASSERT_TRUE(heap.LoadNewest().ok());
  ASSERT_FALSE(heap.Current()->store().mapped());
  const std::vector<int64_t> expected = ServedAnswers(heap);

  {
    IndexManager manager(Options(true));
    ASSERT_TRUE(manager.LoadNewest().ok());
    ASSERT_TRUE(manager.Current()->store().mapped());
    EXPECT_EQ(ServedAnswers(manager), expected);
    // The heap counts what the mapped version holds, less its rows.
    EXPECT_EQ(manager.Current()->MemoryBytes(),
              heap.Current()->MemoryBytes() - kRows * kDim * sizeof(float));
  }
  // Nothing staged is left beside the snapshot.
  for (const auto& entry : fs::directory_iterator(data())) {
    EXPECT_NE(entry.path().filename().string().rfind(".tmp-", 0), 0u)
        << entry.path();
  }
  IndexManager restarted(Options(true));
  ASSERT_TRUE(restarted.RestoreSnapshot().ok());
  const CandidateStore& store = restarted.Current()->store();
  ASSERT_TRUE(store.mapped());
  EXPECT_THAT(store.vectors_file(), HasSubstr("/snapshot-"));
  EXPECT_EQ(ServedAnswers(restarted), expected);
}

TEST_F(MappedVectorsTest, ACheckpointDeletedOrRewrittenKeepsServing) {
  WriteCkpt("v1", 1);
  IndexManager manager(Options(true));
  ASSERT_TRUE(manager.LoadNewest().ok());
  const std::vector<int64_t> expected = ServedAnswers(manager);
  const std::shared_ptr<const IndexVersion> served = manager.Current();
  ASSERT_TRUE(served->store().mapped());
  EXPECT_THAT(served->store().vectors_file(), HasSubstr(data()));
  const std::vector<float> rows(served->store().data(),
                                served->store().data() + kRows * kDim);

  // A trainer rewrites the file in place (numpy's np.save truncates it):
  // were it mapped, reading its rows now would be SIGBUS.
  const std::string embeddings = ckpts() + "/v1/embeddings-00000.npy";
  {
    std::ofstream truncate(embeddings, std::ios::binary | std::ios::trunc);
    truncate << "short";
  }
  EXPECT_EQ(RowsAt(served->store().data(), rows.size() * sizeof(float)),
            RowsAt(rows.data(), rows.size() * sizeof(float)));
  EXPECT_EQ(ServedAnswers(manager), expected);
  // Then deletes the folder, and writes another under the same name.
  fs::remove_all(ckpts() + "/v1");
  EXPECT_EQ(ServedAnswers(manager), expected);
  WriteCkpt("v1", 1);
  EXPECT_EQ(ServedAnswers(manager), expected);
}

TEST_F(MappedVectorsTest, ARefreshUnmapsTheReplacedVersion) {
  WriteCkpt("v1", 1);
  IndexManager manager(Options(true));
  ASSERT_TRUE(manager.LoadNewest().ok());
  ASSERT_TRUE(manager.Current()->store().mapped());
  // The snapshot's vectors.npy is the mapped file itself (linked).
  const ino_t v1 =
      InodeOf(data() + "/snapshot-00000000000000000001/vectors.npy");
  EXPECT_EQ(MappingsOf(v1), 1u);

  WriteCkpt("v2", 2);
  ASSERT_TRUE(manager.LoadNewest().ok());
  EXPECT_EQ(manager.Current()->info().name, "v2");
  EXPECT_EQ(MappingsOf(v1), 0u);
  const ino_t v2 =
      InodeOf(data() + "/snapshot-00000000000000000002/vectors.npy");
  EXPECT_EQ(MappingsOf(v2), 1u);
}

TEST_F(MappedVectorsTest, TheBudgetCountsMappedRowsAsNothing) {
  WriteCkpt("v1", 1);
  // Room for everything but the float32 rows (and half of their size
  // again, for hash map slack).
  const size_t budget =
      CandidateStore::MemoryBytesFor(kRows, kDim, true, /*mapped=*/true) +
      IndexBytesBound(kRows, kDim, IndexBuildOptions{}) +
      kRows * kDim * sizeof(float) / 2;
  IndexManagerOptions heap_options = Options(false);
  heap_options.max_index_bytes = budget;
  IndexManager heap(heap_options);
  const absl::Status rejected = heap.LoadNewest();
  EXPECT_EQ(rejected.code(), absl::StatusCode::kResourceExhausted) << rejected;

  IndexManagerOptions options = Options(true);
  options.data_dir = root_ + "/data-mapped";
  options.max_index_bytes = budget;
  IndexManager manager(options);
  ASSERT_TRUE(manager.LoadNewest().ok());
  EXPECT_TRUE(manager.Current()->store().mapped());
  EXPECT_LE(manager.Current()->MemoryBytes(), budget);
}

TEST_F(MappedVectorsTest, WithoutADataDirTheRowsStayOnTheHeap) {
  WriteCkpt("v1", 1);
  IndexManagerOptions options = Options(true);
  options.data_dir.clear();
  IndexManager manager(options);
  ASSERT_TRUE(manager.LoadNewest().ok());
  EXPECT_FALSE(manager.Current()->store().mapped());
}

}  // namespace
}  // namespace hardneg

// PublishAssembler: full publishes equal the same data through
// CandidateStore::Create; incremental ones equal a full rebuild of the
// expected corpus; every malformed stream is rejected with the right code.
#include "versions/publish.h"

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "versions/index_manager.h"
#include "versions/index_version.h"

namespace hardneg {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint32_t kDim = 4;

// Rows of a corpus, as a publish or a checkpoint carries them.
struct Corpus {
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;  // empty or one per id
  std::vector<float> vectors;   // ids.size() x kDim

  void Add(int64_t id, int64_t label, const std::vector<float>& v,
           bool with_label = true) {
    ids.push_back(id);
    if (with_label) labels.push_back(label);
    vectors.insert(vectors.end(), v.begin(), v.end());
  }

  CandidateStore Store() const {
    absl::StatusOr<CandidateStore> store = CandidateStore::Create(
        kDim, ids, vectors,
        labels.empty() ? std::nullopt : std::make_optional(labels));
    EXPECT_TRUE(store.ok()) << store.status();
    return *std::move(store);
  }
};

// `n` rows with ids first_id, first_id + 1, ... and seeded random vectors.
Corpus RandomCorpus(size_t n, int64_t first_id, uint32_t seed,
                    bool with_labels = true) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Corpus corpus;
  for (size_t i = 0; i < n; ++i) {
    std::vector<float> v(kDim);
    for (float& x : v) x = normal(rng);
    corpus.Add(first_id + static_cast<int64_t>(i), static_cast<int64_t>(i % 3),
               v, with_labels);
  }
  return corpus;
}

std::vector<float> Vec(float x) { return {x, x + 1, x + 2, x + 3}; }

// Rows [begin, end) of `corpus` as AddChunk arguments.
absl::Status AddRows(PublishAssembler& assembler, const Corpus& corpus,
                     size_t begin, size_t end,
                     const std::vector<int64_t>& delete_ids = {}) {
  const auto ids = absl::MakeConstSpan(corpus.ids).subspan(begin, end - begin);
  const auto labels =
      corpus.labels.empty()
          ? absl::Span<const int64_t>()
          : absl::MakeConstSpan(corpus.labels).subspan(begin, end - begin);
  const auto vectors = absl::MakeConstSpan(corpus.vectors)
                           .subspan(begin * kDim, (end - begin) * kDim);
  return assembler.AddChunk(ids, labels, vectors, delete_ids);
}

void ExpectSameStore(const CandidateStore& actual,
                     const CandidateStore& expected) {
  ASSERT_EQ(actual.dim(), expected.dim());
  ASSERT_EQ(actual.size(), expected.size());
  EXPECT_EQ(actual.has_labels(), expected.has_labels());
  EXPECT_EQ(actual.ids(), expected.ids());
  EXPECT_EQ(actual.labels(), expected.labels());
  const std::vector<float> a(actual.data(),
                             actual.data() + actual.size() * actual.dim());
  const std::vector<float> e(
      expected.data(), expected.data() + expected.size() * expected.dim());
  EXPECT_EQ(a, e);
  for (size_t row = 0; row < actual.size(); ++row) {
    EXPECT_EQ(actual.RowOf(actual.id(row)), row);
    EXPECT_FLOAT_EQ(actual.squared_norm(row), expected.squared_norm(row));
  }
}

std::shared_ptr<const IndexVersion> Served(const Corpus& corpus,
                                           const std::string& name) {
  VersionInfo info;
  info.name = name;
  info.step = 1;
  info.sequence = 1;
  absl::StatusOr<std::shared_ptr<const IndexVersion>> version =
      IndexVersion::Build(info, corpus.Store(), IndexBuildOptions{});
  EXPECT_TRUE(version.ok()) << version.status();
  return *version;
}

PublishHeader Header(std::optional<std::string> base = std::nullopt) {
  PublishHeader header;
  header.name = "v2";
  header.step = 200;
  header.dim = kDim;
  header.base_version = std::move(base);
  return header;
}

PublishAssembler StartOrDie(PublishHeader header, size_t max_bytes = 0) {
  absl::StatusOr<PublishAssembler> assembler =
      PublishAssembler::Start(std::move(header), max_bytes);
  EXPECT_TRUE(assembler.ok()) << assembler.status();
  return *std::move(assembler);
}

std::string Message(const absl::Status& status) {
  return std::string(status.message());
}

TEST(PublishTest, FullPublishEqualsCreate) {
  for (const bool with_labels : {true, false}) {
    SCOPED_TRACE(with_labels ? "labels" : "no labels");
    const Corpus corpus = RandomCorpus(100, 1000, 1, with_labels);
    PublishAssembler assembler = StartOrDie(Header());
    ASSERT_TRUE(AddRows(assembler, corpus, 0, 40).ok());
    ASSERT_TRUE(AddRows(assembler, corpus, 40, 40).ok());  // an empty chunk
    ASSERT_TRUE(AddRows(assembler, corpus, 40, 100).ok());
    EXPECT_EQ(assembler.rows(), 100u);
    // A served version does not matter to a full publish.
    const auto served = Served(RandomCorpus(5, 0, 2), "v1");
    absl::StatusOr<CandidateStore> store = assembler.Finish(served.get());
    ASSERT_TRUE(store.ok()) << store.status();
    ExpectSameStore(*store, corpus.Store());
  }
}

TEST(PublishTest, IncrementalUpsertsInPlaceDeletesAndAppendsNewIds) {
  const Corpus base = RandomCorpus(10, 0, 3);  // ids 0..9
  const auto served = Served(base, "v1");
  PublishAssembler assembler = StartOrDie(Header("v1"));
  Corpus chunk1;
  chunk1.Add(3, 7, Vec(30));     // replaces id 3
  chunk1.Add(100, 8, Vec(100));  // new
  Corpus chunk2;
  chunk2.Add(7, 9, Vec(70));   // replaces id 7
  chunk2.Add(50, 1, Vec(50));  // new
  ASSERT_TRUE(AddRows(assembler, chunk1, 0, 2, {5}).ok());
  ASSERT_TRUE(AddRows(assembler, chunk2, 0, 2, {9, 12345}).ok());
  ASSERT_TRUE(AddRows(assembler, Corpus{}, 0, 0, {0}).ok());  // deletes only
  absl::StatusOr<CandidateStore> store = assembler.Finish(served.get());
  ASSERT_TRUE(store.ok()) << store.status();

  // The base's order minus deletes, replaced rows in place, then new ids in
  // publish order.
  Corpus expected;
  const CandidateStore& old = served->store();
  auto keep = [&](int64_t id) {
    const size_t row = *old.RowOf(id);
    expected.Add(id, old.label(row),
                 std::vector<float>(old.vector(row), old.vector(row) + kDim));
  };
  keep(1);
  keep(2);
  expected.Add(3, 7, Vec(30));
  keep(4);
  keep(6);
  expected.Add(7, 9, Vec(70));
  keep(8);
  expected.Add(100, 8, Vec(100));
  expected.Add(50, 1, Vec(50));
  ExpectSameStore(*store, expected.Store());
}

TEST(PublishTest, IncrementalWithoutChunksCopiesTheBase) {
  const Corpus base = RandomCorpus(20, 500, 4, /*with_labels=*/false);
  const auto served = Served(base, "v1");
  PublishAssembler assembler = StartOrDie(Header("v1"));
  absl::StatusOr<CandidateStore> store = assembler.Finish(served.get());
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectSameStore(*store, base.Store());
}

TEST(PublishTest, IncrementalNeedsTheServedBase) {
  const auto served = Served(RandomCorpus(10, 0, 5), "v1");
  PublishAssembler assembler = StartOrDie(Header("v0"));
  ASSERT_TRUE(AddRows(assembler, RandomCorpus(2, 100, 6), 0, 2).ok());
  absl::StatusOr<CandidateStore> store = assembler.Finish(served.get());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(store.status()),
              AllOf(HasSubstr("'v0'"), HasSubstr("'v1'")));

  PublishAssembler nothing_served = StartOrDie(Header("v1"));
  EXPECT_EQ(nothing_served.Finish(nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PublishTest, RejectsEmbeddingsOfTheWrongDimension) {
  PublishAssembler assembler = StartOrDie(Header());
  ASSERT_TRUE(AddRows(assembler, RandomCorpus(3, 0, 7), 0, 3).ok());
  const std::vector<int64_t> ids = {10, 11};
  const std::vector<float> short_rows(2 * kDim - 1, 0.5f);
  const absl::Status status = assembler.AddChunk(ids, {}, short_rows, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), AllOf(HasSubstr("chunk 1"),
                                     HasSubstr("embeddings has 7 floats")));

  // An incremental publish's dim must be the base's.
  const auto served = Served(RandomCorpus(10, 0, 8), "v1");
  PublishHeader header = Header("v1");
  header.dim = kDim + 1;
  PublishAssembler wider = StartOrDie(header);
  const std::vector<float> row(kDim + 1, 1.0f);
  ASSERT_TRUE(
      wider.AddChunk(std::vector<int64_t>{42}, std::vector<int64_t>{0}, row, {})
          .ok());
  const absl::Status finished = wider.Finish(served.get()).status();
  EXPECT_EQ(finished.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(finished), HasSubstr("dim"));
}

TEST(PublishTest, RejectsIdsRepeatedAcrossChunks) {
  PublishAssembler full = StartOrDie(Header());
  Corpus a, b;
  a.Add(1, 0, Vec(1));
  a.Add(7, 0, Vec(2));
  b.Add(8, 0, Vec(3));
  b.Add(7, 0, Vec(4));
  ASSERT_TRUE(AddRows(full, a, 0, 2).ok());
  ASSERT_TRUE(AddRows(full, b, 0, 2).ok());
  const absl::Status status = full.Finish(nullptr).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("duplicate id 7 at rows 1 and 3"));

  // Incremental: a repeated new id, and a repeated replacement.
  const auto served = Served(RandomCorpus(10, 0, 9), "v1");
  for (const int64_t id : {int64_t{77}, int64_t{4}}) {
    PublishAssembler incremental = StartOrDie(Header("v1"));
    Corpus c, d;
    c.Add(id, 0, Vec(5));
    d.Add(id, 1, Vec(6));
    ASSERT_TRUE(AddRows(incremental, c, 0, 1).ok());
    ASSERT_TRUE(AddRows(incremental, d, 0, 1).ok());
    const absl::Status repeated = incremental.Finish(served.get()).status();
    EXPECT_EQ(repeated.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(repeated),
                HasSubstr(absl::StrCat("id ", id, " is repeated")));
  }
}

TEST(PublishTest, RejectsAnIdBothUpsertedAndDeleted) {
  const auto served = Served(RandomCorpus(10, 0, 10), "v1");
  for (const int64_t id : {int64_t{3}, int64_t{300}}) {
    PublishAssembler assembler = StartOrDie(Header("v1"));
    Corpus c;
    c.Add(id, 0, Vec(1));
    ASSERT_TRUE(AddRows(assembler, c, 0, 1, {id}).ok());
    const absl::Status status = assembler.Finish(served.get()).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(status),
                HasSubstr(absl::StrCat("id ", id, " is both upserted")));
  }
}

TEST(PublishTest, RejectsNonFiniteValuesNamingTheId) {
  PublishAssembler assembler = StartOrDie(Header());
  ASSERT_TRUE(AddRows(assembler, RandomCorpus(2, 0, 11), 0, 2).ok());
  Corpus bad;
  bad.Add(61, 0, Vec(1));
  bad.Add(62, 0, {1, std::nanf(""), 0, 0});
  const absl::Status status = AddRows(assembler, bad, 0, 2);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), AllOf(HasSubstr("chunk 1"), HasSubstr("id 62"),
                                     HasSubstr("column 1")));
  bad.vectors[2] = INFINITY;
  PublishAssembler inf = StartOrDie(Header());
  EXPECT_EQ(AddRows(inf, bad, 0, 1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PublishTest, RejectsLabelsInSomeChunksOnly) {
  PublishAssembler assembler = StartOrDie(Header());
  ASSERT_TRUE(AddRows(assembler, RandomCorpus(3, 0, 12), 0, 3).ok());
  const absl::Status status =
      AddRows(assembler, RandomCorpus(3, 10, 13, /*with_labels=*/false), 0, 3);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status),
              AllOf(HasSubstr("chunk 1 has no labels"), HasSubstr("earlier")));

  // A chunk of deletes only carries no labels and says nothing about them.
  const auto served = Served(RandomCorpus(10, 0, 14), "v1");
  PublishAssembler incremental = StartOrDie(Header("v1"));
  ASSERT_TRUE(AddRows(incremental, Corpus{}, 0, 0, {1}).ok());
  ASSERT_TRUE(AddRows(incremental, RandomCorpus(1, 20, 15), 0, 1).ok());
  EXPECT_TRUE(incremental.Finish(served.get()).ok());

  // One label per id.
  PublishAssembler short_labels = StartOrDie(Header());
  const std::vector<float> rows(2 * kDim, 1.0f);
  EXPECT_EQ(short_labels
                .AddChunk(std::vector<int64_t>{1, 2}, std::vector<int64_t>{0},
                          rows, {})
                .code(),
            absl::StatusCode::kInvalidArgument);

  // Upserts carry labels exactly when the base has them.
  PublishAssembler unlabelled = StartOrDie(Header("v1"));
  ASSERT_TRUE(AddRows(unlabelled, RandomCorpus(1, 30, 16, false), 0, 1).ok());
  EXPECT_EQ(unlabelled.Finish(served.get()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PublishTest, RejectsDeleteIdsInAFullPublish) {
  PublishAssembler assembler = StartOrDie(Header());
  const absl::Status status =
      AddRows(assembler, RandomCorpus(2, 0, 17), 0, 2, {5});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("delete_ids in a full publish"));
}

TEST(PublishTest, RejectsAFullPublishWithoutCandidates) {
  PublishAssembler assembler = StartOrDie(Header());
  EXPECT_EQ(assembler.Finish(nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PublishTest, RejectsABadHeader) {
  PublishHeader unnamed = Header();
  unnamed.name.clear();
  EXPECT_THAT(Message(PublishAssembler::Start(unnamed, 0).status()),
              HasSubstr("header.name"));
  PublishHeader no_dim = Header();
  no_dim.dim = 0;
  EXPECT_THAT(Message(PublishAssembler::Start(no_dim, 0).status()),
              HasSubstr("header.dim"));
  EXPECT_EQ(PublishAssembler::Start(Header(""), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Names reach logs, GetIndexInfo and metrics: a hostile publisher used to
// forge log lines with a newline, move a terminal's cursor, or name a
// version "../../x".
TEST(PublishTest, RefusesVersionNamesOutsideTheSafeSet) {
  for (const std::string& bad :
       {std::string("../../x"), std::string("/abs"), std::string(".."),
        std::string("v1\nts=0 level=info event=version_swap"),
        std::string("\x1b[2Jclear"), std::string("nul\0byte", 8),
        std::string("with space"), std::string(129, 'a')}) {
    PublishHeader header = Header();
    header.name = bad;
    const absl::Status status = PublishAssembler::Start(header, 0).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(Message(status), HasSubstr("header.name"));
    EXPECT_THAT(Message(status), HasSubstr("A-Z a-z 0-9 . _ -"));
    // The refused name itself is never echoed.
    EXPECT_THAT(Message(status), Not(HasSubstr("\n")));
    EXPECT_THAT(Message(status), Not(HasSubstr("\x1b")));
  }
  for (const std::string& bad :
       {std::string("../../x"), std::string("a\nb"), std::string(10000, 'b')}) {
    PublishHeader header = Header(bad);
    const absl::Status status = PublishAssembler::Start(header, 0).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(status), HasSubstr("header.base_version"));
    EXPECT_LT(Message(status).size(), 200u);
  }
  for (const std::string& good :
       {std::string("v1"), std::string("epoch-3_step.12000"),
        std::string(128, 'z')}) {
    PublishHeader header = Header();
    header.name = good;
    EXPECT_TRUE(PublishAssembler::Start(header, 0).ok()) << good;
  }
}

TEST(PublishTest, BoundsMemoryByMaxBytes) {
  // Per row: 4 * dim floats, an id and a label.
  constexpr size_t kRowBytes = 4 * kDim + 8 + 8;
  const Corpus corpus = RandomCorpus(4, 0, 18);
  PublishAssembler full = StartOrDie(Header(), 3 * kRowBytes);
  ASSERT_TRUE(AddRows(full, corpus, 0, 3).ok());
  const absl::Status status = AddRows(full, corpus, 3, 4);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(Message(status), HasSubstr(kIndexByteBudgetTerm));

  // Incremental: the new version (the base plus new rows) counts too.
  const auto served = Served(RandomCorpus(10, 0, 19), "v1");
  const Corpus one_new = RandomCorpus(1, 100, 20);
  const size_t needed = 1 * kRowBytes + 11 * kRowBytes;
  PublishAssembler tight = StartOrDie(Header("v1"), needed - 1);
  ASSERT_TRUE(AddRows(tight, one_new, 0, 1).ok());
  EXPECT_EQ(tight.Finish(served.get()).status().code(),
            absl::StatusCode::kResourceExhausted);
  PublishAssembler enough = StartOrDie(Header("v1"), needed);
  ASSERT_TRUE(AddRows(enough, one_new, 0, 1).ok());
  absl::StatusOr<CandidateStore> store = enough.Finish(served.get());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->size(), 11u);
}

}  // namespace
}  // namespace hardneg

// Tests of IvfProbe (index/ivf_probe.h): exclusion-aware probing of an
// IVF-Flat index, against FAISS and against exact (Flat) mining.
#include "index/ivf_probe.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "index/reduced_scan.h"
#include "index/vector_index.h"
#include "mining/miner.h"
#include "random_corpus.h"
#include "reference_miner.h"

namespace hardneg {
namespace {

using testing_corpus::BuildVersion;
using testing_corpus::Normalize;
using testing_corpus::Rng;
using testing_corpus::StoreData;

constexpr size_t kDim = 16;
constexpr size_t kClasses = 40;
constexpr size_t kPerClass = 200;
// About four lists a class: the nearest lists of a query hold only its class.
constexpr char kFactory[] = "IVF160,Flat";
constexpr size_t kLists = 160;

// `classes` x `per_class` unit vectors in `dim` dimensions, each class a
// cluster (normal noise of `noise` a coordinate around a unit centre),
// row r in class r % classes; ids = rows.
StoreData ClusterData(size_t dim, size_t classes, size_t per_class, float noise,
                      bool labelled, uint64_t seed) {
  Rng rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centers(classes * dim);
  for (float& x : centers) x = normal(rng);
  for (size_t c = 0; c < classes; ++c) Normalize(&centers[c * dim], dim);
  StoreData data;
  data.dim = dim;
  std::vector<int64_t> labels;
  for (size_t r = 0; r < classes * per_class; ++r) {
    const size_t c = r % classes;
    std::vector<float> v(dim);
    for (size_t i = 0; i < dim; ++i) {
      v[i] = centers[c * dim + i] + noise * normal(rng);
    }
    Normalize(v.data(), dim);
    data.vectors.insert(data.vectors.end(), v.begin(), v.end());
    data.ids.push_back(static_cast<int64_t>(r));
    labels.push_back(static_cast<int64_t>(c));
  }
  if (labelled) data.labels = labels;
  return data;
}

// Tight clusters, about four lists a class.
StoreData ClusteredData(bool labelled, uint64_t seed) {
  return ClusterData(kDim, kClasses, kPerClass, 0.15f, labelled, seed);
}

int64_t ClassOf(size_t row) { return static_cast<int64_t>(row % kClasses); }

// A query near row `row`'s class centre: a slightly moved copy of the row.
std::vector<float> QueryNear(const StoreData& data, size_t row, Rng& rng) {
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> q = data.Row(row);
  for (float& x : q) x += normal(rng);
  Normalize(q.data(), kDim);
  return q;
}

struct Fixture {
  StoreData data;
  std::unique_ptr<CandidateStore> store;
  std::unique_ptr<faiss::Index> ivf;
  std::unique_ptr<IvfProbe> probe;
};

// List mode unless told: these lists hold about one class each.
Fixture MakeFixture(faiss::MetricType metric, size_t min_candidates = 0,
                    IvfProbeUnit unit = IvfProbeUnit::kList) {
  Fixture f;
  f.data = ClusteredData(true, 11);
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(kDim, f.data.ids, f.data.vectors, f.data.labels);
  EXPECT_TRUE(store.ok()) << store.status();
  f.store = std::make_unique<CandidateStore>(*std::move(store));
  f.ivf.reset(faiss::index_factory(static_cast<int>(kDim), kFactory, metric));
  const auto n = static_cast<faiss::Index::idx_t>(f.store->size());
  f.ivf->train(n, f.store->data());
  f.ivf->add(n, f.store->data());
  f.probe = IvfProbe::Create(*f.ivf, *f.store, min_candidates, unit);
  return f;
}

struct Result {
  std::vector<float> scores;
  std::vector<int64_t> rows;
  IvfProbeStats stats;
};

Result Probe(const Fixture& f, const std::vector<float>& queries, size_t k,
             const SearchOptions& options) {
  const size_t nq = queries.size() / kDim;
  Result r;
  r.scores.resize(nq * k);
  r.rows.resize(nq * k);
  f.probe->Search(queries.data(), nq, k, options, r.scores.data(),
                  r.rows.data(), &r.stats);
  return r;
}

TEST(IvfProbeTest, AppliesOnlyToIvfFlatOverLabelledStores) {
  Fixture f = MakeFixture(faiss::METRIC_INNER_PRODUCT);
  ASSERT_NE(f.probe, nullptr);
  EXPECT_GT(f.probe->MemoryBytes(), 0u);
  // The label counts of each list add up to its size, and no more pairs
  // than entries are kept.
  const auto& ivf = dynamic_cast<const faiss::IndexIVF&>(*f.ivf);
  size_t total = 0;
  for (size_t l = 0; l < kLists; ++l) {
    size_t counted = 0;
    for (size_t c = 0; c < kClasses; ++c) {
      counted += f.probe->LabelCount(l, static_cast<int64_t>(c));
    }
    EXPECT_EQ(counted, ivf.invlists->list_size(l)) << "list " << l;
    total += counted;
  }
  EXPECT_EQ(total, f.store->size());

  StoreData unlabelled = ClusteredData(false, 11);
  absl::StatusOr<CandidateStore> plain =
      CandidateStore::Create(kDim, unlabelled.ids, unlabelled.vectors, {});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(IvfProbe::Create(*f.ivf, *plain, 0), nullptr);
  faiss::IndexFlatIP flat(static_cast<int>(kDim));
  EXPECT_EQ(IvfProbe::Create(flat, *f.store, 0), nullptr);
}

// Probing every list without exclusions is an exhaustive search: FAISS's
// own scores and rows, for both metrics.
TEST(IvfProbeTest, AllListsGiveFaissExhaustiveAnswer) {
  for (faiss::MetricType metric :
       {faiss::METRIC_INNER_PRODUCT, faiss::METRIC_L2}) {
    Fixture f = MakeFixture(metric);
    Rng rng(3);
    std::vector<float> queries;
    for (size_t i = 0; i < 20; ++i) {
      std::vector<float> q = QueryNear(f.data, i * 37, rng);
      queries.insert(queries.end(), q.begin(), q.end());
    }
    const size_t k = 15;
    SearchOptions options;
    options.nprobe = kLists;
    const Result got = Probe(f, queries, k, options);
    faiss::IndexFlat flat(static_cast<int>(kDim), metric);
    flat.add(static_cast<faiss::Index::idx_t>(f.store->size()),
             f.store->data());
    std::vector<float> scores(20 * k);
    std::vector<faiss::Index::idx_t> rows(20 * k);
    flat.search(20, queries.data(), k, scores.data(), rows.data());
    for (size_t j = 0; j < 20 * k; ++j) {
      EXPECT_EQ(got.rows[j], rows[j]) << "entry " << j << " metric " << metric;
      EXPECT_NEAR(got.scores[j], scores[j], 1e-5);
    }
    EXPECT_EQ(got.stats.probes_scanned, 20 * kLists);
  }
}

// The nearest lists of a query hold only its class: with its label
// excluded they are passed over unscanned, and no row of the class is
// returned.
TEST(IvfProbeTest, SkipsListsHoldingOnlyTheExcludedLabel) {
  Fixture f = MakeFixture(faiss::METRIC_INNER_PRODUCT);
  Rng rng(4);
  const size_t row = 123;
  const std::vector<float> query = QueryNear(f.data, row, rng);
  const std::optional<int64_t> label = ClassOf(row);
  const auto skip = [&](size_t, int64_t r) {
    return ClassOf(static_cast<size_t>(r)) == *label;
  };
  SearchOptions options;
  options.nprobe = 2;
  options.ivf_min_candidates = 1;
  options.skip_row = skip;
  options.excluded_label = absl::MakeConstSpan(&label, 1);
  const size_t k = 10;
  const Result got = Probe(f, query, k, options);
  EXPECT_GE(got.stats.probes_skipped, 2u);
  // Two lists at least (nprobe); more only while the top-k is not full.
  EXPECT_GE(got.stats.probes_scanned, 2u);
  for (size_t j = 0; j < k; ++j) {
    ASSERT_GE(got.rows[j], 0);
    EXPECT_NE(ClassOf(static_cast<size_t>(got.rows[j])), *label);
  }

  // skip_row alone filters the same rows, but cannot tell a list holds
  // nothing else: every list the label fills is scanned.
  SearchOptions blind = options;
  blind.excluded_label = {};
  const Result scanned = Probe(f, query, k, blind);
  EXPECT_EQ(scanned.stats.probes_skipped, 0u);
  EXPECT_EQ(scanned.stats.probes_scanned,
            got.stats.probes_scanned + got.stats.probes_skipped);
  EXPECT_EQ(scanned.rows, got.rows);
}

// nprobe is a floor of lists holding survivors; ivf_min_candidates keeps
// probing past it until that many survivors were scanned.
TEST(IvfProbeTest, NprobeFloorAndMinCandidates) {
  Fixture f = MakeFixture(faiss::METRIC_L2);
  Rng rng(5);
  const std::vector<float> query = QueryNear(f.data, 77, rng);
  const size_t k = 5;
  for (size_t nprobe : {size_t{1}, size_t{3}, size_t{9}}) {
    SearchOptions options;
    options.nprobe = nprobe;
    options.ivf_min_candidates = 1;
    EXPECT_EQ(Probe(f, query, k, options).stats.probes_scanned, nprobe);
  }
  SearchOptions deep;
  deep.nprobe = 1;
  deep.ivf_min_candidates = 500;  // about ten lists of ~50
  const Result got = Probe(f, query, k, deep);
  EXPECT_GE(got.stats.survivors_scanned, 500u);
  EXPECT_GT(got.stats.probes_scanned, 5u);
  // It stopped at the list that reached 500, not later.
  SearchOptions one_less = deep;
  one_less.nprobe = got.stats.probes_scanned - 1;
  one_less.ivf_min_candidates = 1;
  EXPECT_LT(Probe(f, query, k, one_less).stats.survivors_scanned, 500u);
}

// When the lists ranked first (a prefix of the ranking) hold no survivor,
// probing goes on through the rest of the ranking: a query that may keep
// only one far class still fills its k, from that class alone, with no
// list scanned twice.
TEST(IvfProbeTest, ProbesPastTheFirstRankedLists) {
  Fixture f = MakeFixture(faiss::METRIC_INNER_PRODUCT);
  Rng rng(8);
  const size_t row = 5;
  const std::vector<float> query = QueryNear(f.data, row, rng);
  // The class whose centre is farthest from the query's.
  int64_t far = 0;
  float farthest = 2;
  for (size_t c = 0; c < kClasses; ++c) {
    const std::vector<float> v = f.data.Row(c);
    float dot = 0;
    for (size_t i = 0; i < kDim; ++i) dot += v[i] * query[i];
    if (dot < farthest) {
      farthest = dot;
      far = static_cast<int64_t>(c);
    }
  }
  SearchOptions options;
  options.nprobe = 1;
  options.ivf_min_candidates = 1;
  options.skip_row = [&](size_t, int64_t r) {
    return ClassOf(static_cast<size_t>(r)) != far;
  };
  const size_t k = 50;
  const Result got = Probe(f, query, k, options);
  EXPECT_GT(got.stats.probes_scanned, 64u);  // past the first 64 ranked
  EXPECT_LE(got.stats.probes_scanned, kLists);
  std::set<int64_t> seen;
  for (size_t j = 0; j < k; ++j) {
    ASSERT_GE(got.rows[j], 0) << "entry " << j;
    EXPECT_EQ(ClassOf(static_cast<size_t>(got.rows[j])), far);
    EXPECT_TRUE(seen.insert(got.rows[j]).second) << "row twice";
  }
}

// A batch (scanned list by list, sharing each list's read) answers as its
// queries do one at a time (each scanning its own lists), exclusions and
// all.
TEST(IvfProbeTest, BatchesAnswerAsSingleQueries) {
  Fixture f = MakeFixture(faiss::METRIC_INNER_PRODUCT);
  Rng rng(9);
  const size_t nq = 24;
  const size_t k = 10;
  std::vector<float> queries;
  std::vector<std::optional<int64_t>> labels;
  for (size_t i = 0; i < nq; ++i) {
    const size_t row = i * 91 % f.store->size();
    std::vector<float> q = QueryNear(f.data, row, rng);
    queries.insert(queries.end(), q.begin(), q.end());
    // Every other query excludes its class.
    labels.push_back(i % 2 == 0 ? std::optional<int64_t>(ClassOf(row))
                                : std::nullopt);
  }
  SearchOptions options;
  options.nprobe = 2;
  options.ivf_min_candidates = 120;
  options.excluded_label = labels;
  options.skip_row = [&](size_t i, int64_t r) {
    return labels[i].has_value() &&
           ClassOf(static_cast<size_t>(r)) == *labels[i];
  };
  const Result batch = Probe(f, queries, k, options);
  IvfProbeStats single_stats;
  for (size_t i = 0; i < nq; ++i) {
    const std::vector<float> q(queries.begin() + i * kDim,
                               queries.begin() + (i + 1) * kDim);
    SearchOptions one = options;
    one.excluded_label = absl::MakeConstSpan(&labels[i], 1);
    one.skip_row = [&](size_t, int64_t r) { return options.skip_row(i, r); };
    const Result got = Probe(f, q, k, one);
    for (size_t j = 0; j < k; ++j) {
      EXPECT_EQ(batch.rows[i * k + j], got.rows[j])
          << "query " << i << " rank " << j;
      EXPECT_NEAR(batch.scores[i * k + j], got.scores[j], 1e-5);
    }
    single_stats.probes_scanned += got.stats.probes_scanned;
    single_stats.probes_skipped += got.stats.probes_skipped;
  }
  EXPECT_EQ(batch.stats.probes_scanned, single_stats.probes_scanned);
  EXPECT_EQ(batch.stats.probes_skipped, single_stats.probes_skipped);
}

// Mining with the query's class excluded, on IVF with a small nprobe:
// exclusion-aware probing finds the exact (Flat) negatives; the same
// exclusion through FAISS's fixed nprobe (the class given as positives over
// an unlabelled store, which keeps FAISS's own search) does not.
TEST(IvfProbeTest, MinerFindsExactNegativesWhenTheClassIsExcluded) {
  const StoreData labelled = ClusteredData(true, 11);
  const StoreData unlabelled = ClusteredData(false, 11);
  std::shared_ptr<const IndexVersion> flat =
      BuildVersion(labelled, Metric::kInnerProduct);
  std::shared_ptr<const IndexVersion> ivf =
      BuildVersion(labelled, Metric::kInnerProduct, kFactory);
  std::shared_ptr<const IndexVersion> plain_ivf =
      BuildVersion(unlabelled, Metric::kInnerProduct, kFactory);
  ASSERT_NE(flat, nullptr);
  ASSERT_NE(ivf, nullptr);
  ASSERT_NE(plain_ivf, nullptr);
  EXPECT_TRUE(ivf->index().skips());
  EXPECT_FALSE(plain_ivf->index().skips());
  EXPECT_FALSE(flat->index().excludes_labels());
  EXPECT_FALSE(plain_ivf->index().excludes_labels());

  Rng rng(6);
  const size_t nq = 60;
  std::vector<std::vector<float>> embeddings;
  std::vector<std::vector<int64_t>> classes;
  std::vector<MiningQuery> by_label(nq), by_positives(nq);
  for (size_t i = 0; i < nq; ++i) {
    const size_t row = (i * 131) % labelled.size();
    embeddings.push_back(QueryNear(labelled, row, rng));
    std::vector<int64_t>& members = classes.emplace_back();
    for (size_t r = static_cast<size_t>(ClassOf(row)); r < labelled.size();
         r += kClasses) {
      members.push_back(static_cast<int64_t>(r));
    }
  }
  for (size_t i = 0; i < nq; ++i) {
    by_label[i].embedding = embeddings[i];
    by_label[i].label = ClassOf((i * 131) % labelled.size());
    by_positives[i].embedding = embeddings[i];
    by_positives[i].positive_ids = classes[i];
  }
  MiningOptions options;
  options.num_negatives = 10;
  options.nprobe = 4;
  const Miner miner;
  auto mine = [&](const IndexVersion& v, const std::vector<MiningQuery>& q) {
    absl::StatusOr<std::vector<MiningResult>> r = miner.Mine(v, q, options);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<MiningResult>(q.size());
  };
  const std::vector<MiningResult> truth = mine(*flat, by_label);
  auto recall = [&](const std::vector<MiningResult>& got) {
    size_t hits = 0;
    for (size_t i = 0; i < nq; ++i) {
      std::set<int64_t> want;
      for (const MinedNegative& n : truth[i].negatives) want.insert(n.id);
      for (const MinedNegative& n : got[i].negatives) hits += want.count(n.id);
    }
    return static_cast<double>(hits) / static_cast<double>(nq * 10);
  };
  const double probed = recall(mine(*ivf, by_label));
  const double fixed = recall(mine(*plain_ivf, by_positives));
  EXPECT_GE(probed, 0.95);
  EXPECT_LT(fixed, 0.5);
}

// Without labels in the store the index is FAISS's, unchanged: the same
// answer as the saved FAISS index searched with the same nprobe.
TEST(IvfProbeTest, UnlabelledStoreKeepsFaissSearch) {
  const StoreData data = ClusteredData(false, 11);
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(kDim, data.ids, data.vectors, {});
  ASSERT_TRUE(store.ok());
  IndexBuildOptions build;
  build.factory = kFactory;
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(*store, Metric::kL2, build);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_FALSE((*index)->skips());
  const std::string path = ::testing::TempDir() + "/ivf_probe_test_" +
                           std::to_string(getpid()) + ".faiss";
  ASSERT_TRUE((*index)->Save(path).ok());
  std::unique_ptr<faiss::Index> saved(faiss::read_index(path.c_str()));
  std::remove(path.c_str());
  dynamic_cast<faiss::IndexIVF&>(*saved).nprobe = 3;

  Rng rng(7);
  std::vector<float> queries;
  for (size_t i = 0; i < 30; ++i) {
    std::vector<float> q = QueryNear(data, i * 53, rng);
    queries.insert(queries.end(), q.begin(), q.end());
  }
  const size_t k = 12;
  std::vector<float> got_scores(30 * k), want_scores(30 * k);
  std::vector<int64_t> got_rows(30 * k);
  std::vector<faiss::Index::idx_t> want_rows(30 * k);
  SearchOptions options;
  options.nprobe = 3;
  options.ivf_min_candidates = 100000;  // ignored without labels
  ASSERT_TRUE((*index)
                  ->Search(queries.data(), 30, k, options, got_scores.data(),
                           got_rows.data())
                  .ok());
  saved->search(30, queries.data(), k, want_scores.data(), want_rows.data());
  for (size_t j = 0; j < 30 * k; ++j) {
    EXPECT_EQ(got_rows[j], want_rows[j]) << "entry " << j;
  }
}

// Built and loaded indexes over a labelled store both count labels.
TEST(IvfProbeTest, LoadedIndexProbesToo) {
  const StoreData data = ClusteredData(true, 11);
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(kDim, data.ids, data.vectors, data.labels);
  ASSERT_TRUE(store.ok());
  IndexBuildOptions build;
  build.factory = kFactory;
  absl::StatusOr<std::unique_ptr<VectorIndex>> built =
      BuildVectorIndex(*store, Metric::kInnerProduct, build);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_TRUE((*built)->skips());
  const std::string path = ::testing::TempDir() + "/ivf_probe_load_" +
                           std::to_string(getpid()) + ".faiss";
  ASSERT_TRUE((*built)->Save(path).ok());
  absl::StatusOr<std::unique_ptr<VectorIndex>> loaded =
      LoadVectorIndex(path, *store, Metric::kInnerProduct, build);
  std::remove(path.c_str());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE((*loaded)->skips());
  EXPECT_EQ((*loaded)->MemoryBytes(), (*built)->MemoryBytes());
  EXPECT_GT((*loaded)->MemoryBytes(),
            store->size() * kDim * sizeof(float));  // codes + label counts
}

// Cells (classes smaller than lists): kCellClasses classes of
// kCellPerClass unit vectors in kCellDim dimensions, each class a cluster
// around its own centre, and kCellLists lists, so that a list mixes about
// a dozen classes. ids = rows; label = row % kCellClasses.
constexpr size_t kCellDim = 32;
constexpr size_t kCellClasses = 200;
constexpr size_t kCellPerClass = 60;
constexpr size_t kCellLists = 16;
constexpr char kCellFactory[] = "IVF16,Flat";

StoreData MixedData(uint64_t seed) {
  return ClusterData(kCellDim, kCellClasses, kCellPerClass, 0.12f, true, seed);
}

int64_t CellClassOf(size_t row) {
  return static_cast<int64_t>(row % kCellClasses);
}

struct CellFixture {
  StoreData data;
  std::unique_ptr<CandidateStore> store;
  std::unique_ptr<faiss::Index> ivf;
};

// Moves unit vectors (rows of kCellDim) along u = (1, ..., 1) / sqrt(d):
// v = (a u + v) / |a u + v|, so that two share a mean cosine of about
// a^2 / (1 + a^2).
void ShareDirection(std::vector<float>& v, float a) {
  const float along = a / std::sqrt(static_cast<float>(kCellDim));
  for (size_t r = 0; r * kCellDim < v.size(); ++r) {
    for (size_t j = 0; j < kCellDim; ++j) v[r * kCellDim + j] += along;
    Normalize(v.data() + r * kCellDim, kCellDim);
  }
}

// `shared`: the rows moved by ShareDirection(4), a mean cosine of 0.94.
CellFixture MakeCellFixture(faiss::MetricType metric, bool shared = false) {
  CellFixture f;
  f.data = MixedData(21);
  if (shared) ShareDirection(f.data.vectors, 4.0f);
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      kCellDim, f.data.ids, f.data.vectors, f.data.labels);
  EXPECT_TRUE(store.ok()) << store.status();
  f.store = std::make_unique<CandidateStore>(*std::move(store));
  f.ivf.reset(
      faiss::index_factory(static_cast<int>(kCellDim), kCellFactory, metric));
  const auto n = static_cast<faiss::Index::idx_t>(f.store->size());
  f.ivf->train(n, f.store->data());
  f.ivf->add(n, f.store->data());
  return f;
}

// nq queries near rows i * 97, every one excluding its class (labels and
// skip_row), into `queries`, `labels` and `options`.
void ClassExcludedQueries(const StoreData& data, size_t nq, Rng& rng,
                          std::vector<float>* queries,
                          std::vector<std::optional<int64_t>>* labels,
                          SearchOptions* options) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (size_t i = 0; i < nq; ++i) {
    const size_t row = i * 97 % data.size();
    std::vector<float> q = data.Row(row);
    for (float& x : q) x += normal(rng);
    Normalize(q.data(), kCellDim);
    queries->insert(queries->end(), q.begin(), q.end());
    labels->push_back(CellClassOf(row));
  }
  options->excluded_label = *labels;
  options->skip_row = [labels](size_t i, int64_t r) {
    return CellClassOf(static_cast<size_t>(r)) == *(*labels)[i];
  };
}

// nq class-excluded queries of the cell fixture, from Rng(seed). Not
// copied: options.skip_row points at labels.
struct CellQueries {
  CellQueries(const CellFixture& f, uint64_t seed, size_t nq) {
    Rng rng(seed);
    ClassExcludedQueries(f.data, nq, rng, &queries, &labels, &options);
  }
  CellQueries(const CellQueries&) = delete;
  CellQueries& operator=(const CellQueries&) = delete;
  std::vector<float> queries;
  std::vector<std::optional<int64_t>> labels;
  SearchOptions options;
};

// Whether this CPU runs a reduced precision natively (else the reduced
// scans and rankings are float32's).
bool NativeReduced() {
  return CpuRunsScan(ScanPrecision::kInt8) || CpuRunsScan(ScanPrecision::kBf16);
}

Result ProbeWith(const IvfProbe& probe, const std::vector<float>& queries,
                 size_t k, const SearchOptions& options,
                 size_t dim = kCellDim) {
  const size_t nq = queries.size() / dim;
  Result r;
  r.scores.resize(nq * k);
  r.rows.resize(nq * k);
  probe.Search(queries.data(), nq, k, options, r.scores.data(), r.rows.data(),
               &r.stats);
  return r;
}

double RecallOf(const std::vector<int64_t>& got,
                const std::vector<int64_t>& want, size_t k) {
  size_t hits = 0;
  for (size_t q = 0; q * k < want.size(); ++q) {
    const std::set<int64_t> truth(want.begin() + q * k,
                                  want.begin() + (q + 1) * k);
    for (size_t j = 0; j < k; ++j) hits += truth.count(got[q * k + j]);
  }
  return static_cast<double>(hits) / static_cast<double>(want.size());
}

// The exact answer with the same exclusions: every cell probed.
Result Exhaustive(const IvfProbe& probe, const std::vector<float>& queries,
                  size_t k, SearchOptions options) {
  options.ivf_min_candidates = kCellClasses * kCellPerClass;
  return ProbeWith(probe, queries, k, options);
}

// Cell-mode probes of one index at the CPU's reduced precision and at
// float32, both ranking the cells in float32, so that both scan the same
// cells.
struct ReducedAndF32 {
  ReducedAndF32(faiss::Index& ivf, const CandidateStore& store)
      : reduced(IvfProbe::Create(ivf, store, 0, IvfProbeUnit::kCell,
                                 ScanPrecision::kAuto,
                                 /*reduced_ranking=*/false)),
        f32(IvfProbe::Create(ivf, store, 0, IvfProbeUnit::kCell,
                             ScanPrecision::kF32)) {}
  std::unique_ptr<IvfProbe> reduced;
  std::unique_ptr<IvfProbe> f32;
};

// The inner-product cell fixture, its ReducedAndF32 probes, and nq
// class-excluded queries from Rng(seed).
struct ReducedCase {
  ReducedCase(size_t nq, uint64_t seed)
      : probes(*f.ivf, *f.store), cell_queries(f, seed, nq) {}
  CellFixture f = MakeCellFixture(faiss::METRIC_INNER_PRODUCT);
  ReducedAndF32 probes;
  CellQueries cell_queries;
};

// A window for `queries`: each query's `too_close` best exact negatives
// are too close, the limit halfway to the next (clear of the float
// kernels' last-bit differences).
std::vector<float> ClosestLimits(const IvfProbe& f32,
                                 const std::vector<float>& queries, size_t k,
                                 const SearchOptions& options,
                                 size_t too_close) {
  const Result exact = Exhaustive(f32, queries, k, options);
  std::vector<float> closest(queries.size() / kCellDim);
  for (size_t i = 0; i < closest.size(); ++i) {
    closest[i] = (exact.scores[i * k + too_close - 1] +
                  exact.scores[i * k + too_close]) /
                 2;
  }
  return closest;
}

// Cell mode sorts each list by label in place: the labels with a cell of
// their own first, each contiguous, then the mixed cell's; and FAISS's own
// search of the sorted index answers as before.
TEST(IvfProbeCellsTest, SortsListsByLabelAndKeepsFaissAnswers) {
  CellFixture f = MakeCellFixture(faiss::METRIC_INNER_PRODUCT);
  Rng rng(31);
  std::vector<float> queries;
  std::vector<std::optional<int64_t>> labels;
  SearchOptions unused;
  ClassExcludedQueries(f.data, 20, rng, &queries, &labels, &unused);
  const size_t k = 12;
  auto faiss_search = [&] {
    std::vector<float> scores(20 * k);
    std::vector<faiss::Index::idx_t> rows(20 * k);
    faiss::SearchParametersIVF params;
    params.nprobe = 4;
    f.ivf->search(20, queries.data(), k, scores.data(), rows.data(), &params);
    return rows;
  };
  const std::vector<faiss::Index::idx_t> before = faiss_search();
  std::unique_ptr<IvfProbe> probe =
      IvfProbe::Create(*f.ivf, *f.store, 0, IvfProbeUnit::kCell);
  ASSERT_NE(probe, nullptr);
  ASSERT_TRUE(probe->cells());
  EXPECT_GT(probe->probes(), kCellLists);
  EXPECT_EQ(faiss_search(), before);

  const auto& ivf = dynamic_cast<const faiss::IndexIVF&>(*f.ivf);
  size_t own_cells = 0;
  for (size_t l = 0; l < kCellLists; ++l) {
    faiss::InvertedLists::ScopedIds ids(ivf.invlists, l);
    const size_t n = ivf.invlists->list_size(l);
    std::vector<std::pair<bool, int64_t>> keys;
    for (size_t j = 0; j < n; ++j) {
      const int64_t label = CellClassOf(static_cast<size_t>(ids[j]));
      keys.emplace_back(probe->LabelCount(l, label) < IvfProbe::kMinCellSize,
                        label);
    }
    EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end())) << "list " << l;
    std::set<int64_t> own;
    for (const auto& [mixed, label] : keys) {
      if (!mixed) own.insert(label);
    }
    own_cells += own.size();
  }
  EXPECT_GT(own_cells, kCellLists);
  // Each list has at most one mixed cell.
  EXPECT_LE(probe->probes(), own_cells + kCellLists);
}

// Probing every cell is an exhaustive search, for both metrics and at
// every scan precision the CPU runs: the exact answer (FAISS's flat
// index).
TEST(IvfProbeCellsTest, AllCellsGiveTheExhaustiveAnswer) {
  for (faiss::MetricType metric :
       {faiss::METRIC_INNER_PRODUCT, faiss::METRIC_L2}) {
    for (ScanPrecision scan : {ScanPrecision::kF32, ScanPrecision::kAuto}) {
      CellFixture f = MakeCellFixture(metric);
      std::unique_ptr<IvfProbe> probe =
          IvfProbe::Create(*f.ivf, *f.store, 0, IvfProbeUnit::kCell, scan);
      ASSERT_NE(probe, nullptr);
      Rng rng(32);
      std::vector<float> queries;
      std::vector<std::optional<int64_t>> labels;
      SearchOptions unused;
      const size_t nq = 24;
      ClassExcludedQueries(f.data, nq, rng, &queries, &labels, &unused);
      const size_t k = 15;
      const Result got = Exhaustive(*probe, queries, k, SearchOptions());
      faiss::IndexFlat flat(static_cast<int>(kCellDim), metric);
      flat.add(static_cast<faiss::Index::idx_t>(f.store->size()),
               f.store->data());
      std::vector<float> scores(nq * k);
      std::vector<faiss::Index::idx_t> rows(nq * k);
      flat.search(nq, queries.data(), k, scores.data(), rows.data());
      for (size_t j = 0; j < nq * k; ++j) {
        EXPECT_EQ(got.rows[j], rows[j])
            << "entry " << j << " metric " << metric << " scan "
            << ScanPrecisionName(probe->scan());
        EXPECT_NEAR(got.scores[j], scores[j], 1e-5);
      }
      EXPECT_EQ(got.stats.probes_scanned, nq * probe->probes());

      // With each query's class excluded: its own cells are skipped, its
      // entries in mixed cells scanned but not counted as survivors.
      SearchOptions excluded;
      std::vector<float> same;
      std::vector<std::optional<int64_t>> classes;
      Rng again(32);
      ClassExcludedQueries(f.data, nq, again, &same, &classes, &excluded);
      const Result skipped = Exhaustive(*probe, same, k, excluded);
      const size_t n = f.store->size();
      EXPECT_EQ(skipped.stats.survivors_scanned, nq * (n - kCellPerClass));
      EXPECT_GT(skipped.stats.probes_skipped, 0u);
      EXPECT_EQ(skipped.stats.probes_scanned + skipped.stats.probes_skipped,
                nq * probe->probes());
      EXPECT_GT(skipped.stats.candidates_scanned, nq * (n - kCellPerClass));
      EXPECT_LT(skipped.stats.candidates_scanned, nq * n);

      // The index passes over the class's entries itself (its cells
      // unscanned, its entries in mixed cells by their span): skip_row is
      // never asked about them, and the answers are the same.
      std::atomic<size_t> asked_own{0};
      SearchOptions counted = excluded;
      counted.skip_row = [&](size_t i, int64_t r) {
        if (CellClassOf(static_cast<size_t>(r)) == *classes[i]) ++asked_own;
        return excluded.skip_row(i, r);
      };
      const Result counted_result = Exhaustive(*probe, same, k, counted);
      EXPECT_EQ(asked_own.load(), 0u);
      EXPECT_EQ(counted_result.rows, skipped.rows);
    }
  }
}

// With the query's class excluded, ranking cells finds more of the exact
// negatives than ranking lists for the same candidates scanned: a list's
// centroid averages a dozen classes.
TEST(IvfProbeCellsTest, CellsFindMoreNegativesThanListsForTheSameBudget) {
  CellFixture f = MakeCellFixture(faiss::METRIC_INNER_PRODUCT);
  std::unique_ptr<IvfProbe> lists =
      IvfProbe::Create(*f.ivf, *f.store, 0, IvfProbeUnit::kList);
  std::unique_ptr<IvfProbe> cells = IvfProbe::Create(
      *f.ivf, *f.store, 0, IvfProbeUnit::kCell, ScanPrecision::kF32);
  ASSERT_FALSE(lists->cells());
  ASSERT_TRUE(cells->cells());
  Rng rng(33);
  std::vector<float> queries;
  std::vector<std::optional<int64_t>> labels;
  SearchOptions options;
  ClassExcludedQueries(f.data, 64, rng, &queries, &labels, &options);
  const size_t k = 10;
  const Result truth = Exhaustive(*cells, queries, k, options);
  options.nprobe = 1;
  options.ivf_min_candidates = 600;  // 5% of the entries
  const Result by_list = ProbeWith(*lists, queries, k, options);
  const Result by_cell = ProbeWith(*cells, queries, k, options);
  const double list_recall = RecallOf(by_list.rows, truth.rows, k);
  const double cell_recall = RecallOf(by_cell.rows, truth.rows, k);
  // (Measured: 0.39 by list, 0.80 by cell.)
  EXPECT_GE(cell_recall, 0.7);
  EXPECT_GE(cell_recall, list_recall + 0.25);
  // Both stopped near the budget (cells are smaller than lists).
  EXPECT_LE(by_cell.stats.candidates_scanned, by_list.stats.candidates_scanned);
  for (size_t j = 0; j < by_cell.rows.size(); ++j) {
    ASSERT_GE(by_cell.rows[j], 0);
    EXPECT_NE(CellClassOf(static_cast<size_t>(by_cell.rows[j])),
              *labels[j / k]);
  }
}

// A reduced scan ranks cells by reduced scores of their centroids: for
// the same budget it finds about as many of the exact negatives as
// float32's ranking, and not all the same cells (the ranking is used).
TEST(IvfProbeCellsTest, ReducedRankingFindsWhatFloat32RankingFinds) {
  // (On a CPU without a native reduced precision both rank in float32.)
  const bool native = NativeReduced();
  CellFixture f = MakeCellFixture(faiss::METRIC_INNER_PRODUCT);
  std::unique_ptr<IvfProbe> reduced = IvfProbe::Create(
      *f.ivf, *f.store, 0, IvfProbeUnit::kCell, ScanPrecision::kAuto);
  std::unique_ptr<IvfProbe> f32 =
      IvfProbe::Create(*f.ivf, *f.store, 0, IvfProbeUnit::kCell,
                       ScanPrecision::kAuto, /*reduced_ranking=*/false);
  if (native) {
    EXPECT_GT(reduced->MemoryBytes(), f32->MemoryBytes());
  }
  CellQueries cell_queries(f, 35, 64);
  const std::vector<float>& queries = cell_queries.queries;
  SearchOptions& options = cell_queries.options;
  const size_t k = 10;
  const Result truth = Exhaustive(*f32, queries, k, options);
  options.nprobe = 1;
  bool differ = false;
  for (uint32_t budget : {300u, 600u, 1200u}) {
    options.ivf_min_candidates = budget;
    const Result by_reduced = ProbeWith(*reduced, queries, k, options);
    const Result by_f32 = ProbeWith(*f32, queries, k, options);
    const double reduced_recall = RecallOf(by_reduced.rows, truth.rows, k);
    const double f32_recall = RecallOf(by_f32.rows, truth.rows, k);
    // (Measured: 0.736 and 0.734 at 300, 0.820 and 0.822 at 600, 0.938 and
    // 0.936 at 1,200.)
    EXPECT_GE(reduced_recall, f32_recall - 0.03) << "budget " << budget;
    differ = differ || by_reduced.stats.candidates_scanned !=
                           by_f32.stats.candidates_scanned;
  }
  EXPECT_EQ(differ, native);
}

// A label's entries too few in a list for a cell of their own sit in the
// list's mixed cell, whose centroid (the mean of unrelated labels) ranks
// far below them. The mixed cell ranks beside its labels' own cells
// instead: queries next to such entries, excluding nothing, find their
// nearest neighbours there within a budget of four classes' entries.
TEST(IvfProbeCellsTest, MixedCellsRankBesideTheirLabelsCells) {
  CellFixture f = MakeCellFixture(faiss::METRIC_INNER_PRODUCT);
  std::unique_ptr<IvfProbe> probe = IvfProbe::Create(
      *f.ivf, *f.store, 0, IvfProbeUnit::kCell, ScanPrecision::kF32);
  ASSERT_TRUE(probe->cells());
  const auto& ivf = dynamic_cast<const faiss::IndexIVF&>(*f.ivf);
  // Queries next to the entries of mixed cells (a label with fewer than
  // kMinCellSize entries in the list).
  Rng rng(35);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  std::vector<float> queries;
  for (size_t l = 0; l < ivf.nlist && queries.size() < 64 * kCellDim; ++l) {
    faiss::InvertedLists::ScopedIds ids(ivf.invlists, l);
    for (size_t j = 0; j < ivf.invlists->list_size(l); j += 3) {
      const auto row = static_cast<size_t>(ids[j]);
      if (!IvfProbe::InMixedCell(probe->LabelCount(l, CellClassOf(row)))) {
        continue;
      }
      std::vector<float> q = f.data.Row(row);
      for (float& x : q) x += normal(rng);
      Normalize(q.data(), kCellDim);
      queries.insert(queries.end(), q.begin(), q.end());
    }
  }
  ASSERT_GE(queries.size(), 32 * kCellDim);
  const size_t k = 5;
  SearchOptions options;
  const Result truth = Exhaustive(*probe, queries, k, options);
  options.nprobe = 1;
  options.ivf_min_candidates = 4 * kCellPerClass;  // 2% of the entries
  const Result got = ProbeWith(*probe, queries, k, options);
  const double recall = RecallOf(got.rows, truth.rows, k);
  // (Measured: 0.87; 0.54 when mixed cells ranked by their centroids
  // alone.)
  EXPECT_GE(recall, 0.8);
}

// A batch at a reduced precision (int8 or bf16, screened by each query's
// k-th best score plus the error bound, survivors rescored in float32)
// answers as the float32 scan of the same cells does, rescoring a small
// share of what it scans; single queries scan float32 and agree too.
TEST(IvfProbeCellsTest, ReducedScanAnswersAsFloat32) {
  // (On a CPU without a native reduced precision both scan float32.)
  const bool native = NativeReduced();
  CellFixture f = MakeCellFixture(faiss::METRIC_INNER_PRODUCT);
  const ReducedAndF32 probes(*f.ivf, *f.store);
  const std::unique_ptr<IvfProbe>& reduced = probes.reduced;
  const std::unique_ptr<IvfProbe>& f32 = probes.f32;
  ASSERT_EQ(reduced->scan() != ScanPrecision::kF32, native);
  ASSERT_EQ(f32->scan(), ScanPrecision::kF32);
  if (native) {
    EXPECT_GT(reduced->MemoryBytes(), f32->MemoryBytes());
  }
  const size_t nq = 64;
  CellQueries cell_queries(f, 34, nq);
  const std::vector<float>& queries = cell_queries.queries;
  const std::vector<std::optional<int64_t>>& labels = cell_queries.labels;
  SearchOptions& options = cell_queries.options;
  const size_t k = 10;
  // Half the budgets with a window: the 4 best exact negatives of each
  // query are too close.
  const std::vector<float> closest =
      ClosestLimits(*f32, queries, k, options, 4);
  for (uint32_t budget : {200u, 1200u, 5000u}) {
    for (bool window : {false, true}) {
      options.nprobe = 2;
      options.ivf_min_candidates = budget;
      options.closest =
          window ? absl::MakeConstSpan(closest) : absl::Span<const float>();
      const Result got = ProbeWith(*reduced, queries, k, options);
      const Result want = ProbeWith(*f32, queries, k, options);
      EXPECT_EQ(got.stats.candidates_scanned, want.stats.candidates_scanned);
      EXPECT_EQ(got.stats.survivors_scanned, want.stats.survivors_scanned);
      EXPECT_EQ(want.stats.candidates_rescored, 0u);
      if (native) {
        EXPECT_GT(got.stats.candidates_rescored, 0u);
        EXPECT_LT(got.stats.candidates_rescored * 4,
                  got.stats.candidates_scanned)
            << "budget " << budget;
      }
      for (size_t j = 0; j < nq * k; ++j) {
        EXPECT_EQ(got.rows[j], want.rows[j]) << "budget " << budget << " " << j;
        EXPECT_NEAR(got.scores[j], want.scores[j], 1e-5);
      }
      if (window) {
        for (size_t i = 0; i < nq; ++i) {
          EXPECT_LE(got.scores[i * k], closest[i]) << "query " << i;
        }
      }
      // One query at a time (float32 scans): the same answers.
      for (size_t i = 0; i < nq; i += 9) {
        const std::vector<float> q(queries.begin() + i * kCellDim,
                                   queries.begin() + (i + 1) * kCellDim);
        SearchOptions one = options;
        one.excluded_label = absl::MakeConstSpan(&labels[i], 1);
        one.skip_row = [&, i](size_t, int64_t r) {
          return options.skip_row(i, r);
        };
        if (window) one.closest = absl::MakeConstSpan(&closest[i], 1);
        const Result single = ProbeWith(*reduced, q, k, one);
        for (size_t j = 0; j < k; ++j) {
          EXPECT_EQ(single.rows[j], want.rows[i * k + j]) << "query " << i;
        }
      }
    }
  }
}

// A reduced batch's first pass rescores the entries of each seed cell's
// highest bounds first, a few more than k, and then those that reach the
// k-th best score so found. When skip_row turns away most of those first
// (here each query's 40 best negatives), the heap is not full after them,
// and the pass rescores on until it is: the answers stay float32's.
TEST(IvfProbeCellsTest, FirstPassRescoresOnPastSkippedEntries) {
  const bool native = NativeReduced();
  const size_t nq = 32;
  ReducedCase c(nq, 35);
  const ReducedAndF32& probes = c.probes;
  const CellQueries& cell_queries = c.cell_queries;
  const std::vector<float>& queries = cell_queries.queries;
  const size_t k = 10;
  const size_t skipped = 40;
  const Result best =
      Exhaustive(*probes.f32, queries, skipped, cell_queries.options);
  std::vector<std::set<int64_t>> skip(nq);
  for (size_t i = 0; i < nq; ++i) {
    skip[i].insert(
        best.rows.begin() + static_cast<std::ptrdiff_t>(i * skipped),
        best.rows.begin() + static_cast<std::ptrdiff_t>((i + 1) * skipped));
  }
  SearchOptions options = cell_queries.options;
  const auto class_skip = cell_queries.options.skip_row;
  options.skip_row = [&](size_t i, int64_t r) {
    return class_skip(i, r) || skip[i].count(r) > 0;
  };
  for (uint32_t budget : {400u, 1200u, 5000u}) {
    options.nprobe = 1;
    options.ivf_min_candidates = budget;
    const Result got = ProbeWith(*probes.reduced, queries, k, options);
    const Result want = ProbeWith(*probes.f32, queries, k, options);
    EXPECT_EQ(got.stats.candidates_scanned, want.stats.candidates_scanned);
    EXPECT_EQ(got.stats.survivors_scanned, want.stats.survivors_scanned);
    EXPECT_EQ(got.stats.lists_reached, want.stats.lists_reached);
    if (native) {
      // More than each seed cell's first k + 4.
      EXPECT_GT(got.stats.candidates_rescored, nq * (k + 4));
      EXPECT_LT(got.stats.candidates_rescored * 4, got.stats.candidates_scanned)
          << "budget " << budget;
    }
    for (size_t j = 0; j < nq * k; ++j) {
      EXPECT_EQ(got.rows[j], want.rows[j]) << "budget " << budget << " " << j;
      EXPECT_NEAR(got.scores[j], want.scores[j], 1e-5);
      EXPECT_EQ(skip[j / k].count(got.rows[j]), 0u);
    }
  }
}

// A batch's threads take the cells as they come free and share their
// heaps (a thread drops what another's pushes rule out): one, two or
// three threads, run after run, scan the same entries, rescore about as
// many and give the float32 scan's answers, with and without a window
// (entries too close pass every screen and are then rejected).
TEST(IvfProbeCellsTest, BatchAnswersAlikeOnAnyNumberOfThreads) {
  const bool native = NativeReduced();
  const size_t nq = 96;
  ReducedCase c(nq, 35);
  const ReducedAndF32& probes = c.probes;
  const std::vector<float>& queries = c.cell_queries.queries;
  SearchOptions& options = c.cell_queries.options;
  const size_t k = 10;
  // The window: each query's 3 best exact negatives too close.
  const std::vector<float> closest =
      ClosestLimits(*probes.f32, queries, k, options, 3);
  options.nprobe = 2;
  options.ivf_min_candidates = 5000;
  const int saved = omp_get_max_threads();
  for (bool window : {false, true}) {
    options.closest =
        window ? absl::MakeConstSpan(closest) : absl::Span<const float>();
    omp_set_num_threads(1);
    const Result want = ProbeWith(*probes.f32, queries, k, options);
    size_t one_thread_rescored = 0;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      size_t fewest_rescored = std::numeric_limits<size_t>::max();
      for (int run = 0; run < (threads == 1 ? 1 : 3); ++run) {
        const Result got = ProbeWith(*probes.reduced, queries, k, options);
        const std::string where = std::to_string(threads) + " threads, run " +
                                  std::to_string(run) +
                                  (window ? ", window" : "");
        EXPECT_EQ(got.stats.candidates_scanned, want.stats.candidates_scanned)
            << where;
        EXPECT_EQ(got.stats.survivors_scanned, want.stats.survivors_scanned)
            << where;
        EXPECT_EQ(got.stats.lists_reached, want.stats.lists_reached) << where;
        EXPECT_EQ(got.stats.probes_scanned, want.stats.probes_scanned) << where;
        if (native) {
          EXPECT_GT(got.stats.candidates_rescored, 0u) << where;
        }
        if (threads == 1) one_thread_rescored = got.stats.candidates_rescored;
        fewest_rescored =
            std::min(fewest_rescored, got.stats.candidates_rescored);
        for (size_t j = 0; j < nq * k; ++j) {
          ASSERT_EQ(got.rows[j], want.rows[j]) << where << ", entry " << j;
          EXPECT_NEAR(got.scores[j], want.scores[j], 1e-5) << where;
        }
      }
      // One heap a query for all the threads: the screens rise with every
      // thread's pushes, so more threads rescore about what one does
      // (about 12% more on two with a heap a thread, in every run). A run
      // whose thread the scheduler stopped with the best offers pending
      // may rescore more: the fewest of the three is compared.
      EXPECT_LE(fewest_rescored, one_thread_rescored + one_thread_rescored / 20)
          << threads << " threads" << (window ? ", window" : "");
    }
  }
  omp_set_num_threads(saved);
}

// Rows and queries sharing a direction (a mean cosine of 0.94): every
// list is packed less the store's mean and the queries less their share
// along it, so the reduced scan still rules out most entries unrescored,
// and answers as float32 does.
TEST(IvfProbeCellsTest, ReducedScanOfRowsSharingADirection) {
  const bool native = NativeReduced();
  CellFixture f = MakeCellFixture(faiss::METRIC_INNER_PRODUCT, true);
  const ReducedAndF32 probes(*f.ivf, *f.store);
  const std::unique_ptr<IvfProbe>& reduced = probes.reduced;
  const std::unique_ptr<IvfProbe>& f32 = probes.f32;
  const size_t nq = 64;
  CellQueries cell_queries(f, 35, nq);
  ShareDirection(cell_queries.queries, 4.0f);
  SearchOptions& options = cell_queries.options;
  const size_t k = 10;
  options.nprobe = 2;
  options.ivf_min_candidates = 1200;
  const Result got = ProbeWith(*reduced, cell_queries.queries, k, options);
  const Result want = ProbeWith(*f32, cell_queries.queries, k, options);
  EXPECT_EQ(got.stats.candidates_scanned, want.stats.candidates_scanned);
  if (native) {
    // 2.5% here (2.7% on the rows before they were moved); with the lists
    // packed as they are, 25% (and 96% at a mean cosine of 0.985).
    EXPECT_LT(got.stats.candidates_rescored * 20, got.stats.candidates_scanned);
  }
  for (size_t j = 0; j < nq * k; ++j) {
    EXPECT_EQ(got.rows[j], want.rows[j]) << j;
    EXPECT_NEAR(got.scores[j], want.scores[j], 1e-5);
  }
}

// Rows the reduced pass cannot order: near duplicates (1e-5 apart, 1024
// dims), whose keys' slack (about 6e-5, mostly the rounding of q.m, the
// rows' mean) covers all their differences, so that the screens rule out
// nothing and every entry of a query's reduced cell is rescored. The
// answers are float32's up to float32's own near-ties (its dot products
// of 1024 terms round by up to about 1e-6 here).
TEST(IvfProbeCellsTest, ReducedScanOfRowsItCannotOrder) {
  const size_t dim = 1024;
  const size_t per_label = 4607;
  const size_t n = 3 * per_label;  // labels 0 (excluded), 1 and 2
  Rng rng(41);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> base(dim);
  for (float& x : base) x = normal(rng);
  Normalize(base.data(), dim);
  std::vector<float> rows(n * dim);
  std::vector<int64_t> ids(n);
  std::vector<int64_t> labels(n);
  for (size_t r = 0; r < n; ++r) {
    for (size_t j = 0; j < dim; ++j) {
      rows[r * dim + j] = base[j] + 1e-5f * normal(rng);
    }
    ids[r] = static_cast<int64_t>(r);
    labels[r] = static_cast<int64_t>(r % 3);
  }
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(dim, ids, rows, labels);
  ASSERT_TRUE(store.ok()) << store.status();
  std::unique_ptr<faiss::Index> ivf(faiss::index_factory(
      static_cast<int>(dim), "IVF1,Flat", faiss::METRIC_INNER_PRODUCT));
  ivf->train(static_cast<faiss::Index::idx_t>(n), rows.data());
  ivf->add(static_cast<faiss::Index::idx_t>(n), rows.data());
  const ReducedAndF32 probes(*ivf, *store);
  const std::unique_ptr<IvfProbe>& reduced = probes.reduced;
  const std::unique_ptr<IvfProbe>& f32 = probes.f32;
  ASSERT_NE(reduced, nullptr);
  ASSERT_NE(f32, nullptr);
  // A batch (IvfProbe::kMinBatchQueries or more): the first cell as the
  // first pass reads it (each entry's key, then the float32 rows its
  // bound cannot rule out), the other screened.
  const size_t nq = 8;
  const size_t k = 10;
  std::vector<float> queries(nq * dim);
  for (size_t i = 0; i < nq; ++i) {
    for (size_t j = 0; j < dim; ++j) {
      queries[i * dim + j] = base[j] + 0.1f * normal(rng);
    }
    Normalize(queries.data() + i * dim, dim);
  }
  const std::vector<std::optional<int64_t>> excluded(nq, int64_t{0});
  SearchOptions options;
  options.excluded_label = excluded;
  options.skip_row = [&labels](size_t, int64_t r) {
    return labels[static_cast<size_t>(r)] == 0;
  };
  options.ivf_min_candidates = n;
  const Result got = ProbeWith(*reduced, queries, k, options, dim);
  const Result want = ProbeWith(*f32, queries, k, options, dim);
  EXPECT_EQ(got.stats.candidates_scanned, want.stats.candidates_scanned);
  EXPECT_EQ(got.stats.candidates_scanned, nq * 2 * per_label);
  if (NativeReduced()) {
    // Nearly every entry of the reduced cell rescored.
    EXPECT_GT(got.stats.candidates_rescored, nq * per_label * 8 / 10);
  }
  const double tolerance = 3e-6;
  for (size_t i = 0; i < nq; ++i) {
    std::vector<double> exact(n, -1e30);
    for (size_t r = 0; r < n; ++r) {
      if (labels[r] == 0) continue;
      exact[r] = reference::ExactScoreDouble(Metric::kInnerProduct,
                                             queries.data() + i * dim,
                                             rows.data() + r * dim, dim);
    }
    std::vector<double> sorted = exact;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const double kth = sorted[k - 1];
    std::set<int64_t> seen;
    for (size_t j = 0; j < k; ++j) {
      const int64_t row = got.rows[i * k + j];
      ASSERT_GE(row, 0) << "query " << i;
      EXPECT_NE(labels[static_cast<size_t>(row)], 0);
      EXPECT_TRUE(seen.insert(row).second) << "row " << row << " twice";
      EXPECT_GE(exact[static_cast<size_t>(row)], kth - tolerance)
          << "query " << i << " row " << row;
      EXPECT_NEAR(got.scores[i * k + j], exact[static_cast<size_t>(row)],
                  tolerance);
    }
    // As near the exact best as float32's own answer.
    const auto weakest = [&](const Result& r) {
      double w = 1e30;
      for (size_t j = 0; j < k; ++j) {
        w = std::min(w, exact[static_cast<size_t>(r.rows[i * k + j])]);
      }
      return w;
    };
    EXPECT_GE(weakest(got), weakest(want) - tolerance / 2) << "query " << i;
  }
  // A window below every score: every entry is offered, rescored and too
  // close. The reduced pass may leave a few offers of a cell pending into
  // the next cell's scan, but not when they could be the cell's last
  // survivors, as here: so, as in float32, no list counts as reached.
  // (Nine queries, and cells of an odd size, so that some offers are
  // still pending when a cell's scan ends.)
  std::vector<float> nine = queries;
  nine.insert(nine.end(), queries.begin(), queries.begin() + dim);
  const std::vector<std::optional<int64_t>> excluded_nine(nq + 1, int64_t{0});
  const std::vector<float> nothing_allowed(nq + 1, -1.0f);
  options.excluded_label = excluded_nine;
  options.closest = nothing_allowed;
  const Result got_none = ProbeWith(*reduced, nine, k, options, dim);
  const Result want_none = ProbeWith(*f32, nine, k, options, dim);
  EXPECT_EQ(got_none.stats.survivors_scanned, 0u);
  EXPECT_EQ(want_none.stats.lists_reached, 0u);
  EXPECT_EQ(got_none.stats.lists_reached, want_none.stats.lists_reached);
  for (int64_t row : got_none.rows) EXPECT_EQ(row, -1);
}

// When the cells ranked first hold no survivor (skip_row keeps only the
// class farthest from the query), probing goes on in rounds that rank
// ever more cells, for a batch and for a single query, with no cell
// scanned twice.
TEST(IvfProbeCellsTest, ProbesPastTheFirstRankedCells) {
  CellFixture f = MakeCellFixture(faiss::METRIC_INNER_PRODUCT);
  for (ScanPrecision scan : {ScanPrecision::kF32, ScanPrecision::kAuto}) {
    std::unique_ptr<IvfProbe> probe =
        IvfProbe::Create(*f.ivf, *f.store, 0, IvfProbeUnit::kCell, scan);
    Rng rng(37);
    std::vector<float> queries;
    std::vector<std::optional<int64_t>> labels;
    SearchOptions unused;
    for (size_t nq : {size_t{1}, size_t{16}}) {
      queries.clear();
      labels.clear();
      ClassExcludedQueries(f.data, nq, rng, &queries, &labels, &unused);
      // Each query's farthest class (by its centre's first member).
      std::vector<int64_t> far(nq);
      for (size_t i = 0; i < nq; ++i) {
        float farthest = 2;
        for (size_t c = 0; c < kCellClasses; ++c) {
          const std::vector<float> v = f.data.Row(c);
          float dot = 0;
          for (size_t t = 0; t < kCellDim; ++t) {
            dot += v[t] * queries[i * kCellDim + t];
          }
          if (dot < farthest) {
            farthest = dot;
            far[i] = static_cast<int64_t>(c);
          }
        }
      }
      SearchOptions options;
      options.nprobe = 1;
      options.ivf_min_candidates = 1;
      options.skip_row = [&](size_t i, int64_t r) {
        return CellClassOf(static_cast<size_t>(r)) != far[i];
      };
      const size_t k = 30;
      const Result got = ProbeWith(*probe, queries, k, options);
      for (size_t i = 0; i < nq; ++i) {
        std::set<int64_t> seen;
        for (size_t j = 0; j < k; ++j) {
          const int64_t row = got.rows[i * k + j];
          ASSERT_GE(row, 0) << "query " << i << " entry " << j;
          EXPECT_EQ(CellClassOf(static_cast<size_t>(row)), far[i]);
          EXPECT_TRUE(seen.insert(row).second)
              << "row twice, nq " << nq << " scan " << ScanPrecisionName(scan);
        }
      }
      EXPECT_LE(got.stats.probes_scanned, nq * probe->probes());
      EXPECT_GT(got.stats.probes_scanned, nq * 8);
    }
  }
}

// nprobe counts distinct lists in cell mode: with nprobe at every list,
// probing goes on until cells of every list were scanned (more cells than
// lists: the best cells share lists); with nprobe 1 the budget decides.
TEST(IvfProbeCellsTest, NprobeFloorCountsLists) {
  CellFixture f = MakeCellFixture(faiss::METRIC_L2);
  std::unique_ptr<IvfProbe> probe = IvfProbe::Create(
      *f.ivf, *f.store, 0, IvfProbeUnit::kCell, ScanPrecision::kF32);
  Rng rng(35);
  std::vector<float> queries;
  std::vector<std::optional<int64_t>> labels;
  SearchOptions unused;
  ClassExcludedQueries(f.data, 8, rng, &queries, &labels, &unused);
  SearchOptions options;
  options.ivf_min_candidates = 1;
  options.nprobe = 1;
  const Result one = ProbeWith(*probe, queries, 5, options);
  options.nprobe = 6;
  const Result six = ProbeWith(*probe, queries, 5, options);
  options.nprobe = kCellLists;
  const Result all = ProbeWith(*probe, queries, 5, options);
  EXPECT_LE(one.stats.probes_scanned, 2u * 8);
  EXPECT_EQ(six.stats.lists_reached, 6u * 8);
  EXPECT_EQ(all.stats.lists_reached, kCellLists * 8);
  EXPECT_GT(all.stats.probes_scanned, kCellLists * 8);
  EXPECT_LT(all.stats.probes_scanned, probe->probes() * 8);
}

// BuildVectorIndex picks cells by itself where they pay (and reports the
// precision it scans them at); a saved and loaded index (its lists sorted
// already) answers the same.
TEST(IvfProbeCellsTest, ChosenAutomaticallyAndKeptThroughSaveAndLoad) {
  const StoreData data = MixedData(22);
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(kCellDim, data.ids, data.vectors, data.labels);
  ASSERT_TRUE(store.ok());
  IndexBuildOptions build;
  build.factory = kCellFactory;
  build.scan = ScanPrecision::kAuto;
  absl::StatusOr<std::unique_ptr<VectorIndex>> built =
      BuildVectorIndex(*store, Metric::kInnerProduct, build);
  ASSERT_TRUE(built.ok()) << built.status();
  const ScanPrecision native = ResolveScanPrecision(ScanPrecision::kAuto);
  EXPECT_EQ((*built)->scan(), native);
  const std::string path = ::testing::TempDir() + "/ivf_cells_load_" +
                           std::to_string(getpid()) + ".faiss";
  ASSERT_TRUE((*built)->Save(path).ok());
  absl::StatusOr<std::unique_ptr<VectorIndex>> loaded =
      LoadVectorIndex(path, *store, Metric::kInnerProduct, build);
  std::remove(path.c_str());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->scan(), native);
  EXPECT_EQ((*loaded)->MemoryBytes(), (*built)->MemoryBytes());
  // Cells pass over the excluded label themselves (the miner's skip_row
  // then tests no labels).
  EXPECT_TRUE((*built)->excludes_labels());
  EXPECT_TRUE((*loaded)->excludes_labels());

  Rng rng(36);
  std::vector<float> queries;
  std::vector<std::optional<int64_t>> labels;
  SearchOptions options;
  const size_t nq = 32;
  ClassExcludedQueries(data, nq, rng, &queries, &labels, &options);
  options.ivf_min_candidates = 800;
  const size_t k = 10;
  std::vector<float> a_scores(nq * k), b_scores(nq * k);
  std::vector<int64_t> a_rows(nq * k), b_rows(nq * k);
  ASSERT_TRUE((*built)
                  ->Search(queries.data(), nq, k, options, a_scores.data(),
                           a_rows.data())
                  .ok());
  ASSERT_TRUE((*loaded)
                  ->Search(queries.data(), nq, k, options, b_scores.data(),
                           b_rows.data())
                  .ok());
  EXPECT_EQ(a_rows, b_rows);

  // What the budget checks count covers what the index holds.
  EXPECT_LE((*built)->MemoryBytes(), IndexBytesEstimate(*store, build));
  EXPECT_LE((*built)->MemoryBytes(),
            IndexBytesBound(store->size(), kCellDim, build));

  // At --scan f32 the cells are scanned in float32.
  build.scan = ScanPrecision::kF32;
  absl::StatusOr<std::unique_ptr<VectorIndex>> f32 =
      BuildVectorIndex(*store, Metric::kInnerProduct, build);
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ((*f32)->scan(), ScanPrecision::kF32);
}

// Through the miner, cells exclude a query's class, its own id and its
// positives (ids that are not rows, the nearest rows of other classes) as
// the exact miner does: probing every cell, the same negatives.
TEST(IvfProbeCellsTest, MinerExcludesTheClassOwnIdAndPositives) {
  StoreData data = MixedData(24);
  for (size_t r = 0; r < data.size(); ++r) {
    data.ids[r] = static_cast<int64_t>(1000000 + 7 * r);
  }
  std::shared_ptr<const IndexVersion> flat =
      BuildVersion(data, Metric::kInnerProduct);
  std::shared_ptr<const IndexVersion> cells =
      BuildVersion(data, Metric::kInnerProduct, kCellFactory);
  ASSERT_NE(flat, nullptr);
  ASSERT_NE(cells, nullptr);
  ASSERT_TRUE(cells->index().excludes_labels());

  Rng rng(37);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const size_t nq = 24;
  std::vector<std::vector<float>> embeddings(nq);
  std::vector<std::vector<int64_t>> positives(nq);
  std::vector<MiningQuery> queries(nq);
  for (size_t i = 0; i < nq; ++i) {
    const size_t row = i * 389 % data.size();
    std::vector<float>& q = embeddings[i];
    q = data.Row(row);
    for (float& x : q) x += normal(rng);
    Normalize(q.data(), kCellDim);
    // The nearest rows of other classes: the first is the query's own id,
    // the next three its positives (with an id the store lacks).
    std::vector<std::pair<float, size_t>> others;
    for (size_t r = 0; r < data.size(); ++r) {
      if (CellClassOf(r) == CellClassOf(row)) continue;
      float dot = 0;
      for (size_t j = 0; j < kCellDim; ++j) {
        dot += q[j] * data.vectors[r * kCellDim + j];
      }
      others.emplace_back(-dot, r);
    }
    std::partial_sort(others.begin(), others.begin() + 4, others.end());
    for (size_t j = 1; j < 4; ++j) {
      positives[i].push_back(data.ids[others[j].second]);
    }
    positives[i].push_back(5);  // not in the store
    queries[i].embedding = q;
    queries[i].label = CellClassOf(row);
    queries[i].query_id = data.ids[others[0].second];
    queries[i].positive_ids = positives[i];
  }
  MiningOptions options;
  options.num_negatives = 10;
  options.ivf_min_candidates = data.size();  // every cell
  const Miner miner;
  absl::StatusOr<std::vector<MiningResult>> want =
      miner.Mine(*flat, queries, options);
  absl::StatusOr<std::vector<MiningResult>> got =
      miner.Mine(*cells, queries, options);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < nq; ++i) {
    ASSERT_EQ((*got)[i].negatives.size(), 10u) << "query " << i;
    ASSERT_EQ((*want)[i].negatives.size(), 10u) << "query " << i;
    for (size_t j = 0; j < 10; ++j) {
      const int64_t id = (*got)[i].negatives[j].id;
      EXPECT_EQ(id, (*want)[i].negatives[j].id) << "query " << i;
      EXPECT_NE(id, *queries[i].query_id);
      EXPECT_EQ(std::count(positives[i].begin(), positives[i].end(), id), 0);
      EXPECT_NE(CellClassOf(static_cast<size_t>((id - 1000000) / 7)),
                *queries[i].label);
    }
  }
}

// A FAISS index saved before cells existed (lists in insertion order)
// loads into cells, sorted at load, answering as the index sorted in
// memory does.
TEST(IvfProbeCellsTest, LoadsAnUnsortedIndex) {
  CellFixture f = MakeCellFixture(faiss::METRIC_INNER_PRODUCT);
  const std::string path = ::testing::TempDir() + "/ivf_cells_unsorted_" +
                           std::to_string(getpid()) + ".faiss";
  faiss::write_index(f.ivf.get(), path.c_str());
  IndexBuildOptions build;
  build.factory = kCellFactory;
  build.scan = ScanPrecision::kAuto;
  absl::StatusOr<std::unique_ptr<VectorIndex>> loaded =
      LoadVectorIndex(path, *f.store, Metric::kInnerProduct, build);
  std::remove(path.c_str());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::unique_ptr<IvfProbe> probe = IvfProbe::Create(
      *f.ivf, *f.store, 0, IvfProbeUnit::kAuto, ScanPrecision::kAuto);
  ASSERT_TRUE(probe->cells());
  EXPECT_EQ((*loaded)->scan(), probe->scan());
  Rng rng(38);
  std::vector<float> queries;
  std::vector<std::optional<int64_t>> labels;
  SearchOptions options;
  const size_t nq = 32;
  ClassExcludedQueries(f.data, nq, rng, &queries, &labels, &options);
  options.ivf_min_candidates = 700;
  const size_t k = 10;
  std::vector<float> scores(nq * k);
  std::vector<int64_t> rows(nq * k);
  ASSERT_TRUE(
      (*loaded)
          ->Search(queries.data(), nq, k, options, scores.data(), rows.data())
          .ok());
  EXPECT_EQ(rows, ProbeWith(*probe, queries, k, options).rows);
}

}  // namespace
}  // namespace hardneg

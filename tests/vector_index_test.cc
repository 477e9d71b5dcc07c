// VectorIndex: the exact "Flat" kernel against exact double-precision scores
// and against faiss::IndexFlatIP / IndexFlatL2; an "IVF64,Flat" build for
// valid output and recall against brute force.
#include "index/vector_index.h"

#include <faiss/IndexFlat.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "index/row_dots.h"
#include "reference_miner.h"

namespace hardneg {
namespace {

using Rng = std::mt19937_64;

std::unique_ptr<CandidateStore> MakeStore(size_t dim,
                                          std::vector<float> vectors) {
  const size_t n = vectors.size() / dim;
  std::vector<int64_t> ids;
  for (size_t i = 0; i < n; ++i) ids.push_back(static_cast<int64_t>(i) * 3 + 1);
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      dim, std::move(ids), std::move(vectors), std::nullopt);
  if (!store.ok()) {
    ADD_FAILURE() << store.status();
    return nullptr;
  }
  return std::make_unique<CandidateStore>(*std::move(store));
}

std::vector<float> Gaussian(Rng& rng, size_t count, float mean = 0.0f,
                            float sd = 1.0f) {
  std::normal_distribution<float> normal(mean, sd);
  std::vector<float> v(count);
  for (float& x : v) x = normal(rng);
  return v;
}

// The float32 scan, where the binary16 half pass lives (the reduced
// precisions have their own tests in reduced_scan_test.cc).
IndexBuildOptions F32Options() {
  IndexBuildOptions options;
  options.scan = ScanPrecision::kF32;
  return options;
}

// The true score, in double: the reference the kernel is checked against.
using reference::ExactScoreDouble;

double Norm(const float* v, size_t dim) {
  double sq = 0;
  for (size_t i = 0; i < dim; ++i) sq += static_cast<double>(v[i]) * v[i];
  return std::sqrt(sq);
}

// True when `a` is strictly closer than `b`.
bool Better(Metric metric, double a, double b) {
  return metric == Metric::kInnerProduct ? a > b : a < b;
}

// Slack for rounding the exact score to float once.
double Ulp(double x) { return std::fabs(x) * std::ldexp(1.0, -23); }

// Search results of `nq` queries, k each.
struct SearchResult {
  std::vector<float> scores;
  std::vector<int64_t> rows;
};

SearchResult RunSearch(const VectorIndex& index, const std::vector<float>& q,
                       size_t dim, size_t k,
                       const SearchOptions& options = SearchOptions{}) {
  const size_t nq = q.size() / dim;
  SearchResult r;
  r.scores.assign(nq * k, std::numeric_limits<float>::quiet_NaN());
  r.rows.assign(nq * k, -7);
  const absl::Status status =
      index.Search(q.data(), nq, k, options, r.scores.data(), r.rows.data());
  EXPECT_TRUE(status.ok()) << status;
  return r;
}

// The share of `truth`'s rows (k per query) that `got` also returns.
double Recall(const SearchResult& got, const SearchResult& truth, size_t k) {
  const size_t nq = truth.rows.size() / k;
  size_t hits = 0;
  for (size_t i = 0; i < nq; ++i) {
    std::set<int64_t> found(got.rows.begin() + i * k,
                            got.rows.begin() + (i + 1) * k);
    for (size_t j = 0; j < k; ++j) hits += found.count(truth.rows[i * k + j]);
  }
  return static_cast<double>(hits) / static_cast<double>(nq * k);
}

SearchResult RunFaiss(Metric metric, const CandidateStore& store,
                      const std::vector<float>& q, size_t k) {
  const size_t dim = store.dim();
  const size_t nq = q.size() / dim;
  std::unique_ptr<faiss::IndexFlat> index;
  if (metric == Metric::kInnerProduct) {
    index = std::make_unique<faiss::IndexFlatIP>(dim);
  } else {
    index = std::make_unique<faiss::IndexFlatL2>(dim);
  }
  index->add(static_cast<faiss::Index::idx_t>(store.size()), store.data());
  SearchResult r;
  r.scores.resize(nq * k);
  std::vector<faiss::Index::idx_t> labels(nq * k);
  index->search(static_cast<faiss::Index::idx_t>(nq), q.data(),
                static_cast<faiss::Index::idx_t>(k), r.scores.data(),
                labels.data());
  r.rows.assign(labels.begin(), labels.end());
  return r;
}

// Checks one query's exact-kernel answer against the contract of exact():
// valid distinct rows best first, -1 padding only past the store's end,
// every score within ErrorBound of the true score, the j-th returned score
// within ErrorBound of the j-th best true score, and no row left out that
// beats the worst returned one by more than the bound.
void CheckExactAnswer(Metric metric, const CandidateStore& store,
                      const VectorIndex& index, const float* q, size_t k,
                      const float* scores, const int64_t* rows,
                      const std::string& where) {
  SCOPED_TRACE(where);
  const size_t dim = store.dim();
  const size_t n = store.size();
  const double bound = index.ErrorBound(Norm(q, dim));
  ASSERT_TRUE(std::isfinite(bound));
  ASSERT_GE(bound, 0.0);
  std::vector<double> exact(n);
  for (size_t r = 0; r < n; ++r) {
    exact[r] = ExactScoreDouble(metric, q, store.vector(r), dim);
  }
  std::vector<double> sorted = exact;
  std::sort(sorted.begin(), sorted.end(),
            [metric](double a, double b) { return Better(metric, a, b); });
  const size_t found = std::min(k, n);
  std::set<int64_t> seen;
  for (size_t j = 0; j < k; ++j) {
    if (j >= found) {
      ASSERT_EQ(rows[j], -1) << "position " << j << " past the store's end";
      continue;
    }
    ASSERT_GE(rows[j], 0) << "position " << j;
    ASSERT_LT(rows[j], static_cast<int64_t>(n)) << "position " << j;
    ASSERT_TRUE(seen.insert(rows[j]).second)
        << "row " << rows[j] << " returned twice";
    const double truth = exact[static_cast<size_t>(rows[j])];
    EXPECT_LE(std::fabs(scores[j] - truth), bound + Ulp(truth))
        << "position " << j << " row " << rows[j] << ": score " << scores[j]
        << ", exact " << truth << ", bound " << bound;
    EXPECT_LE(std::fabs(scores[j] - sorted[j]), bound + Ulp(sorted[j]))
        << "position " << j << ": score " << scores[j] << ", the " << j
        << "-th best exact score is " << sorted[j] << ", bound " << bound;
    if (j > 0) {
      EXPECT_FALSE(Better(metric, scores[j], scores[j - 1]))
          << "not best first at position " << j;
    }
  }
  if (found == 0 || found == n) return;
  const double worst = scores[found - 1];
  for (size_t r = 0; r < n; ++r) {
    if (seen.count(static_cast<int64_t>(r)) != 0) continue;
    const double slack = bound + Ulp(exact[r]);
    EXPECT_FALSE(
        Better(metric, exact[r],
               metric == Metric::kInnerProduct ? worst + slack : worst - slack))
        << "row " << r << " (exact " << exact[r]
        << ") was left out, worst returned " << worst << ", bound " << bound;
  }
}

// A Flat index over `store` (which must outlive it); null, with a test
// failure, when the build fails.
std::unique_ptr<VectorIndex> BuildFlat(const CandidateStore& store,
                                       Metric metric,
                                       const IndexBuildOptions& options) {
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(store, metric, options);
  EXPECT_TRUE(index.ok()) << index.status();
  return index.ok() ? *std::move(index) : nullptr;
}

std::string MetricLabel(Metric metric) {
  return metric == Metric::kInnerProduct ? "Ip" : "L2";
}

// ---------------------------------------------------------------------------
// Flat.

class FlatKernelTest
    : public ::testing::TestWithParam<std::tuple<Metric, size_t, size_t>> {};

TEST_P(FlatKernelTest, MatchesFaissFlat) {
  const Metric metric = std::get<0>(GetParam());
  const size_t nq = std::get<1>(GetParam());
  const size_t k = std::get<2>(GetParam());
  Rng rng(1000 + nq * 7 + k);
  const size_t dim = 24;
  const size_t n = 2000;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim));
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(*store, metric, IndexBuildOptions{});
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_TRUE((*index)->exact());
  EXPECT_EQ((*index)->type(), "Flat");
  const std::vector<float> queries = Gaussian(rng, nq * dim);
  const SearchResult got = RunSearch(**index, queries, dim, k);
  const SearchResult want = RunFaiss(metric, *store, queries, k);
  for (size_t i = 0; i < nq; ++i) {
    const float* q = queries.data() + i * dim;
    CheckExactAnswer(metric, *store, **index, q, k, got.scores.data() + i * k,
                     got.rows.data() + i * k, "query " + std::to_string(i));
    const double bound = (*index)->ErrorBound(Norm(q, dim));
    // Same rows as FAISS, position by position, except swaps among scores
    // within the error bound.
    for (size_t j = 0; j < k; ++j) {
      const int64_t a = got.rows[i * k + j];
      const int64_t b = want.rows[i * k + j];
      if (a == b) continue;
      ASSERT_GE(a, 0);
      ASSERT_GE(b, 0);
      const double sa = ExactScoreDouble(metric, q, store->vector(a), dim);
      const double sb = ExactScoreDouble(metric, q, store->vector(b), dim);
      EXPECT_LE(std::fabs(sa - sb), 2 * bound + Ulp(sa) + Ulp(sb))
          << "query " << i << " position " << j << ": row " << a << " (" << sa
          << ") vs FAISS row " << b << " (" << sb << ")";
    }
    if (HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FlatKernelTest,
    ::testing::Combine(::testing::Values(Metric::kInnerProduct, Metric::kL2),
                       ::testing::Values(size_t{1}, size_t{3}, size_t{7},
                                         size_t{300}),
                       ::testing::Values(size_t{1}, size_t{10}, size_t{1000})),
    [](const ::testing::TestParamInfo<std::tuple<Metric, size_t, size_t>>& p) {
      return MetricLabel(std::get<0>(p.param)) + "_nq" +
             std::to_string(std::get<1>(p.param)) + "_k" +
             std::to_string(std::get<2>(p.param));
    });

class FlatMetricTest : public ::testing::TestWithParam<Metric> {};

INSTANTIATE_TEST_SUITE_P(Metrics, FlatMetricTest,
                         ::testing::Values(Metric::kInnerProduct, Metric::kL2),
                         [](const ::testing::TestParamInfo<Metric>& p) {
                           return MetricLabel(p.param);
                         });

// k larger than the store: every row, then -1.
TEST_P(FlatMetricTest, KLargerThanTheStorePadsWithMinusOne) {
  const Metric metric = GetParam();
  Rng rng(2);
  const size_t dim = 8;
  for (size_t n : {size_t{1}, size_t{50}}) {
    std::unique_ptr<CandidateStore> store =
        MakeStore(dim, Gaussian(rng, n * dim));
    ASSERT_NE(store, nullptr);
    absl::StatusOr<std::unique_ptr<VectorIndex>> index =
        BuildVectorIndex(*store, metric, IndexBuildOptions{});
    ASSERT_TRUE(index.ok()) << index.status();
    for (size_t nq : {size_t{1}, size_t{7}, size_t{300}}) {
      for (size_t k : {n + 1, size_t{100}, size_t{1000}}) {
        const std::vector<float> queries = Gaussian(rng, nq * dim);
        const SearchResult got = RunSearch(**index, queries, dim, k);
        const SearchResult want = RunFaiss(metric, *store, queries, k);
        for (size_t i = 0; i < nq; ++i) {
          CheckExactAnswer(metric, *store, **index, queries.data() + i * dim, k,
                           got.scores.data() + i * k, got.rows.data() + i * k,
                           "n " + std::to_string(n) + " k " +
                               std::to_string(k) + " query " +
                               std::to_string(i));
          std::set<int64_t> a(got.rows.begin() + i * k,
                              got.rows.begin() + (i + 1) * k);
          std::set<int64_t> b(want.rows.begin() + i * k,
                              want.rows.begin() + (i + 1) * k);
          EXPECT_EQ(a, b);  // all rows and -1, like FAISS
        }
        if (HasFailure()) return;
      }
    }
  }
}

// Identical vectors score identically; the bound covers the kernel's
// rounding even where the norm expansion of L2 cancels badly (vectors far
// from the origin, close to each other).
TEST_P(FlatMetricTest, ErrorBoundHoldsFarFromTheOrigin) {
  const Metric metric = GetParam();
  Rng rng(3);
  const size_t dim = 32;
  const size_t n = 1500;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim, 10.0f, 0.01f));
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(*store, metric, IndexBuildOptions{});
  ASSERT_TRUE(index.ok()) << index.status();
  const size_t nq = 20;
  const std::vector<float> queries = Gaussian(rng, nq * dim, 10.0f, 0.01f);
  for (size_t k : {size_t{10}, size_t{500}}) {
    const SearchResult got = RunSearch(**index, queries, dim, k);
    for (size_t i = 0; i < nq; ++i) {
      CheckExactAnswer(
          metric, *store, **index, queries.data() + i * dim, k,
          got.scores.data() + i * k, got.rows.data() + i * k,
          "k " + std::to_string(k) + " query " + std::to_string(i));
    }
    // One query at a time: binary16 cannot rank vectors this close, so the
    // half pass must notice and search again in float32.
    for (size_t i = 0; i < 4; ++i) {
      const std::vector<float> one(queries.begin() + i * dim,
                                   queries.begin() + (i + 1) * dim);
      const SearchResult alone = RunSearch(**index, one, dim, k);
      CheckExactAnswer(
          metric, *store, **index, one.data(), k, alone.scores.data(),
          alone.rows.data(),
          "alone, k " + std::to_string(k) + " query " + std::to_string(i));
    }
  }
}

// The bound is an error bound, not a shrug: far smaller than the scores'
// own scale, so the exactness promise means something.
TEST_P(FlatMetricTest, ErrorBoundIsTight) {
  const Metric metric = GetParam();
  Rng rng(4);
  const size_t dim = 64;
  const size_t n = 1000;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim));
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(*store, metric, IndexBuildOptions{});
  ASSERT_TRUE(index.ok()) << index.status();
  for (double query_norm : {0.0, 1.0, 8.0, 100.0}) {
    const double bound = (*index)->ErrorBound(query_norm);
    const double max_norm = store->max_norm();
    const double scale =
        metric == Metric::kInnerProduct
            ? query_norm * max_norm
            : (query_norm + max_norm) * (query_norm + max_norm);
    EXPECT_GE(bound, 0.0);
    EXPECT_LE(bound, 1e-3 * scale + 1e-6) << "query norm " << query_norm;
  }
}

// No float32 copy: the kernel reads the store in place, plus a binary16
// copy unless half_scan is off (or the CPU lacks F16C).
TEST_P(FlatMetricTest, KeepsOnlyAHalfCopy) {
  const Metric metric = GetParam();
  Rng rng(5);
  const size_t dim = 32;
  const size_t n = 5000;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim));
  ASSERT_NE(store, nullptr);
  IndexBuildOptions options = F32Options();
  std::unique_ptr<VectorIndex> index = BuildFlat(*store, metric, options);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->MemoryBytes(),
            RowDotsSimd() ? n * dim * sizeof(uint16_t) : 0);
  EXPECT_EQ(IndexBytesEstimate(*store, options), index->MemoryBytes());
  options.half_scan = false;
  index = BuildFlat(*store, metric, options);
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->MemoryBytes(), 0u);
  EXPECT_EQ(IndexBytesEstimate(*store, options), 0u);
}

// Searches of one to three queries read the binary16 copy first, then
// rescore: exact answers, the same as without the copy up to ties within
// the error bound, on a dimension with a SIMD tail, with several threads.
TEST_P(FlatMetricTest, HalfScanAnswersAsFloat32Does) {
  const Metric metric = GetParam();
  Rng rng(25);
  const size_t dim = 45;
  const size_t n = 3 * 4096 + 5;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim, 0.3f, 1.0f));
  ASSERT_NE(store, nullptr);
  IndexBuildOptions options = F32Options();
  const std::unique_ptr<VectorIndex> half = BuildFlat(*store, metric, options);
  options.half_scan = false;
  const std::unique_ptr<VectorIndex> full = BuildFlat(*store, metric, options);
  ASSERT_NE(half, nullptr);
  ASSERT_NE(full, nullptr);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(2);
  for (size_t nq : {size_t{1}, size_t{2}, size_t{3}}) {
    // k = 2000 is past kMaxHalfKept: float32 rows only.
    for (size_t k : {size_t{1}, size_t{10}, size_t{300}, size_t{2000}}) {
      const std::vector<float> queries = Gaussian(rng, nq * dim);
      const SearchResult got = RunSearch(*half, queries, dim, k);
      const SearchResult want = RunSearch(*full, queries, dim, k);
      for (size_t i = 0; i < nq; ++i) {
        const float* q = queries.data() + i * dim;
        const std::string what = "nq " + std::to_string(nq) + " k " +
                                 std::to_string(k) + " query " +
                                 std::to_string(i);
        CheckExactAnswer(metric, *store, *half, q, k, got.scores.data() + i * k,
                         got.rows.data() + i * k, what);
        const double bound = half->ErrorBound(Norm(q, dim));
        for (size_t j = 0; j < k; ++j) {
          const int64_t a = got.rows[i * k + j];
          const int64_t b = want.rows[i * k + j];
          if (a == b) continue;
          const double sa = ExactScoreDouble(metric, q, store->vector(a), dim);
          const double sb = ExactScoreDouble(metric, q, store->vector(b), dim);
          EXPECT_LE(std::fabs(sa - sb), 2 * bound + Ulp(sa) + Ulp(sb))
              << what << " position " << j;
        }
      }
      if (HasFailure()) break;
    }
  }
  omp_set_num_threads(threads);
}

// Vectors that differ by less than binary16's spacing: the half pass
// cannot rank them, must notice, and search again in float32.
TEST_P(FlatMetricTest, HalfScanFallsBackWhereBinary16CannotRank) {
  const Metric metric = GetParam();
  Rng rng(27);
  const size_t dim = 32;
  const size_t n = 3000;
  // Components 0.2 +- 1e-4, where binary16's spacing is 1.2e-4; the
  // scores still spread far wider than the float32 bound, for both metrics.
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim, 0.2f, 0.0001f));
  ASSERT_NE(store, nullptr);
  const std::unique_ptr<VectorIndex> index =
      BuildFlat(*store, metric, F32Options());
  ASSERT_NE(index, nullptr);
  for (size_t nq : {size_t{1}, size_t{3}}) {
    for (size_t k : {size_t{1}, size_t{10}}) {
      const std::vector<float> queries = Gaussian(rng, nq * dim, 0.0f, 0.2f);
      const SearchResult got = RunSearch(*index, queries, dim, k);
      for (size_t i = 0; i < nq; ++i) {
        CheckExactAnswer(metric, *store, *index, queries.data() + i * dim, k,
                         got.scores.data() + i * k, got.rows.data() + i * k,
                         "nq " + std::to_string(nq) + " k " +
                             std::to_string(k) + " query " + std::to_string(i));
      }
    }
  }
}

// Vectors too long for binary16 keep no half copy, and stay exact.
TEST_P(FlatMetricTest, NoHalfCopyBeyondTheBinary16Range) {
  const Metric metric = GetParam();
  Rng rng(26);
  const size_t dim = 16;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, 2000 * dim, 0.0f, 30000.0f));
  ASSERT_NE(store, nullptr);
  const std::unique_ptr<VectorIndex> index =
      BuildFlat(*store, metric, F32Options());
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->MemoryBytes(), 0u);
  const std::vector<float> query = Gaussian(rng, dim);
  const SearchResult got = RunSearch(*index, query, dim, 10);
  CheckExactAnswer(metric, *store, *index, query.data(), 10, got.scores.data(),
                   got.rows.data(), "one query");
}

// The reduced precisions this test runs (both, everywhere: without the
// instructions they run the portable kernels).
constexpr ScanPrecision kReduced[] = {ScanPrecision::kInt8,
                                      ScanPrecision::kBf16};

IndexBuildOptions ScanOptions(ScanPrecision scan) {
  IndexBuildOptions options;
  options.scan = scan;
  return options;
}

// Every batch size reads the packed rows first, then rescores: exact
// answers, the float32 path's up to ties within the error bound; k past
// kMaxReducedKept goes straight to float32. Several threads split the rows.
TEST_P(FlatMetricTest, ReducedScanAnswersAsFloat32Does) {
  const Metric metric = GetParam();
  Rng rng(31);
  const size_t dim = 45;
  const size_t n = 3 * 4096 + 5;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim, 0.3f, 1.0f));
  ASSERT_NE(store, nullptr);
  const std::unique_ptr<VectorIndex> full =
      BuildFlat(*store, metric, F32Options());
  ASSERT_NE(full, nullptr);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(2);
  for (ScanPrecision scan : kReduced) {
    const std::unique_ptr<VectorIndex> reduced =
        BuildFlat(*store, metric, ScanOptions(scan));
    ASSERT_NE(reduced, nullptr);
    EXPECT_EQ(reduced->scan(), scan);
    for (size_t nq : {size_t{1}, size_t{3}, size_t{17}, size_t{300}}) {
      for (size_t k : {size_t{1}, size_t{10}, size_t{300}, size_t{5000}}) {
        if (nq * k > 300 * 300) continue;
        const std::vector<float> queries = Gaussian(rng, nq * dim);
        const SearchResult got = RunSearch(*reduced, queries, dim, k);
        const SearchResult want = RunSearch(*full, queries, dim, k);
        for (size_t i = 0; i < nq; ++i) {
          const float* q = queries.data() + i * dim;
          const std::string what = std::string(ScanPrecisionName(scan)) +
                                   " nq " + std::to_string(nq) + " k " +
                                   std::to_string(k) + " query " +
                                   std::to_string(i);
          if (i < 3) {
            CheckExactAnswer(metric, *store, *reduced, q, k,
                             got.scores.data() + i * k, got.rows.data() + i * k,
                             what);
          }
          const double bound = reduced->ErrorBound(Norm(q, dim));
          for (size_t j = 0; j < k; ++j) {
            const int64_t a = got.rows[i * k + j];
            const int64_t b = want.rows[i * k + j];
            if (a == b) continue;
            const double sa =
                ExactScoreDouble(metric, q, store->vector(a), dim);
            const double sb =
                ExactScoreDouble(metric, q, store->vector(b), dim);
            ASSERT_LE(std::fabs(sa - sb), 2 * bound + Ulp(sa) + Ulp(sb))
                << what << " position " << j;
          }
        }
      }
    }
    EXPECT_EQ(reduced->scan_stats().fallbacks, 0u);
    EXPECT_GT(reduced->scan_stats().reduced_queries, 0u);
  }
  omp_set_num_threads(threads);
}

// Rows nearer each other than the reduced precision can tell apart (all
// within its error of one another): the reduced pass keeps too many
// candidates, notices, and searches those queries again in float32, which
// orders them. The answers stay exact, and after enough such queries the
// index stops trying.
TEST_P(FlatMetricTest, ReducedScanFallsBackWhereItCannotOrder) {
  const Metric metric = GetParam();
  Rng rng(32);
  const size_t dim = 32;
  const size_t n = 20000;
  // Two clumps, components +0.2 and -0.2 (+- 1e-4), row by row: their mean
  // is near the origin, so centring the rows leaves them as they are, and
  // the int8 step here is ~1.6e-3, bf16's ~1e-3.
  std::vector<float> clumps = Gaussian(rng, n * dim, 0.2f, 0.0001f);
  for (size_t r = 1; r < n; r += 2) {
    for (size_t j = 0; j < dim; ++j) clumps[r * dim + j] *= -1;
  }
  std::unique_ptr<CandidateStore> store = MakeStore(dim, clumps);
  ASSERT_NE(store, nullptr);
  for (ScanPrecision scan : kReduced) {
    const std::unique_ptr<VectorIndex> index =
        BuildFlat(*store, metric, ScanOptions(scan));
    ASSERT_NE(index, nullptr);
    const size_t nq = 3;
    const size_t k = 10;
    const std::vector<float> queries = Gaussian(rng, nq * dim, 0.0f, 0.2f);
    const SearchResult got = RunSearch(*index, queries, dim, k);
    for (size_t i = 0; i < nq; ++i) {
      CheckExactAnswer(
          metric, *store, *index, queries.data() + i * dim, k,
          got.scores.data() + i * k, got.rows.data() + i * k,
          std::string(ScanPrecisionName(scan)) + " query " + std::to_string(i));
    }
    EXPECT_EQ(index->scan_stats().reduced_queries, nq);
    EXPECT_EQ(index->scan_stats().fallbacks, nq)
        << ScanPrecisionName(scan) << ": the reduced pass claimed to order "
        << "rows closer than its own error";
    const uint64_t tried = index->scan_stats().reduced_queries;
    for (int round = 0; round < 120; ++round) {
      RunSearch(*index, queries, dim, k);
    }
    EXPECT_LE(index->scan_stats().reduced_queries, tried + 300)
        << ScanPrecisionName(scan) << ": never stopped trying";
  }
}

// The closest limit (SearchOptions::closest) and skipped rows with a
// reduced pass: a row is skipped only when certainly past the limit, and
// skipped rows take no place among the k.
TEST_P(FlatMetricTest, ReducedScanHonoursTheClosestLimitAndSkips) {
  const Metric metric = GetParam();
  Rng rng(33);
  const size_t dim = 24;
  const size_t n = 9000;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim, 0.0f, 1.0f));
  ASSERT_NE(store, nullptr);
  const std::unique_ptr<VectorIndex> full =
      BuildFlat(*store, metric, F32Options());
  const size_t nq = 20;
  const size_t k = 15;
  const std::vector<float> queries = Gaussian(rng, nq * dim);
  // Each query's limit: between its 5th and 6th best scores, far closer
  // to them than any reduced error (and, on these vectors, farther than
  // the float32 one: no row is on the edge).
  std::vector<float> closest(nq);
  const SearchResult top = RunSearch(*full, queries, dim, 6);
  for (size_t i = 0; i < nq; ++i) {
    closest[i] = (top.scores[i * 6 + 4] + top.scores[i * 6 + 5]) / 2;
  }
  SearchOptions options;
  options.closest = closest;
  options.skip_row = [](size_t i, int64_t row) {
    return static_cast<size_t>(row) % 7 == i % 7;
  };
  const SearchResult want = RunSearch(*full, queries, dim, k, options);
  for (ScanPrecision scan : kReduced) {
    const std::unique_ptr<VectorIndex> index =
        BuildFlat(*store, metric, ScanOptions(scan));
    ASSERT_NE(index, nullptr);
    const SearchResult got = RunSearch(*index, queries, dim, k, options);
    for (size_t i = 0; i < nq; ++i) {
      const float* q = queries.data() + i * dim;
      const double bound = index->ErrorBound(Norm(q, dim));
      for (size_t j = 0; j < k; ++j) {
        const int64_t row = got.rows[i * k + j];
        ASSERT_GE(row, 0);
        EXPECT_NE(static_cast<size_t>(row) % 7, i % 7) << "a skipped row";
        const double exact =
            ExactScoreDouble(metric, q, store->vector(row), dim);
        EXPECT_FALSE(Better(metric, exact,
                            metric == Metric::kInnerProduct
                                ? closest[i] + bound + Ulp(exact)
                                : closest[i] - bound - Ulp(exact)))
            << "row " << row << " past the closest limit";
        if (row == want.rows[i * k + j]) continue;
        const double other = ExactScoreDouble(
            metric, q, store->vector(want.rows[i * k + j]), dim);
        EXPECT_LE(std::fabs(exact - other), 2 * bound + Ulp(exact) + Ulp(other))
            << ScanPrecisionName(scan) << " query " << i << " position " << j;
      }
    }
  }
}

// Few dimensions and many rows: scores crowd together far closer than the
// reduced error, the screen must keep every row that could still be in
// the answer, and the rows are split between two threads. Every answer is
// checked against the double-precision brute force.
TEST_P(FlatMetricTest, ReducedScanIsExactOnDenseLowDimensionalRows) {
  const Metric metric = GetParam();
  Rng rng(35);
  const int threads = omp_get_max_threads();
  for (size_t dim : {size_t{1}, size_t{2}, size_t{3}}) {
    const size_t n = 8200;
    std::unique_ptr<CandidateStore> store =
        MakeStore(dim, Gaussian(rng, n * dim));
    ASSERT_NE(store, nullptr);
    for (ScanPrecision scan : kReduced) {
      const std::unique_ptr<VectorIndex> index =
          BuildFlat(*store, metric, ScanOptions(scan));
      ASSERT_NE(index, nullptr);
      for (int t : {1, 2}) {
        omp_set_num_threads(t);
        for (size_t k : {size_t{1}, size_t{10}, size_t{100}}) {
          const size_t nq = 8;
          const std::vector<float> queries = Gaussian(rng, nq * dim);
          const SearchResult got = RunSearch(*index, queries, dim, k);
          for (size_t i = 0; i < nq; ++i) {
            CheckExactAnswer(
                metric, *store, *index, queries.data() + i * dim, k,
                got.scores.data() + i * k, got.rows.data() + i * k,
                std::string(ScanPrecisionName(scan)) + " dim " +
                    std::to_string(dim) + " threads " + std::to_string(t) +
                    " k " + std::to_string(k) + " query " + std::to_string(i));
          }
        }
      }
    }
  }
  omp_set_num_threads(threads);
}

// The bound is each row's own: one row 1000 times longer than the rest
// must not widen every other row's slack until every query falls back.
// Rows far from the origin are packed less their mean (their common
// offset would take the packed values' precision): with inner product no
// query falls back. L2 keys (2 q.x - |q|^2 - |x|^2) round on |x|^2 in
// float32 itself, so there every query falls back, exactly.
TEST_P(FlatMetricTest, ReducedScanBoundsAreEachRowsOwn) {
  const Metric metric = GetParam();
  Rng rng(36);
  const size_t dim = 32;
  const size_t n = 20000;
  std::vector<float> outlier = Gaussian(rng, n * dim);
  for (size_t j = 0; j < dim; ++j) outlier[j] *= 1000;
  std::vector<float> far = Gaussian(rng, n * dim, 1000.0f, 1.0f);
  for (const std::vector<float>* rows : {&outlier, &far}) {
    std::unique_ptr<CandidateStore> store = MakeStore(dim, *rows);
    ASSERT_NE(store, nullptr);
    const float mean = rows == &far ? 1000.0f : 0.0f;
    for (ScanPrecision scan : kReduced) {
      const std::unique_ptr<VectorIndex> index =
          BuildFlat(*store, metric, ScanOptions(scan));
      ASSERT_NE(index, nullptr);
      const size_t nq = 16;
      const size_t k = 10;
      const std::vector<float> queries = Gaussian(rng, nq * dim, mean, 1.0f);
      const SearchResult got = RunSearch(*index, queries, dim, k);
      for (size_t i = 0; i < nq; ++i) {
        CheckExactAnswer(metric, *store, *index, queries.data() + i * dim, k,
                         got.scores.data() + i * k, got.rows.data() + i * k,
                         std::string(ScanPrecisionName(scan)) + " query " +
                             std::to_string(i));
      }
      if (rows == &outlier) {
        EXPECT_EQ(index->scan_stats().fallbacks, 0u)
            << ScanPrecisionName(scan) << " with an outlier";
      }
      if (rows == &far) {
        EXPECT_EQ(index->scan_stats().reduced_queries, nq);
        if (metric == Metric::kInnerProduct) {
          EXPECT_EQ(index->scan_stats().fallbacks, 0u)
              << ScanPrecisionName(scan) << " far from the origin";
        } else {
          EXPECT_EQ(index->scan_stats().fallbacks, nq)
              << ScanPrecisionName(scan) << " far from the origin";
        }
      }
    }
  }
}

// The packed copy is the index's only memory, and the estimate says so.
TEST_P(FlatMetricTest, ReducedScanKeepsOnlyThePackedCopy) {
  const Metric metric = GetParam();
  Rng rng(34);
  const size_t dim = 40;
  const size_t n = 3000;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim));
  ASSERT_NE(store, nullptr);
  for (ScanPrecision scan : kReduced) {
    const IndexBuildOptions options = ScanOptions(scan);
    const std::unique_ptr<VectorIndex> index =
        BuildFlat(*store, metric, options);
    ASSERT_NE(index, nullptr);
    EXPECT_EQ(index->MemoryBytes(),
              ReducedRows::BytesFor(n, dim, scan, /*centred=*/true));
    EXPECT_EQ(IndexBytesEstimate(*store, options), index->MemoryBytes());
    EXPECT_GE(IndexBytesBound(n, dim, options), index->MemoryBytes());
  }
  const std::unique_ptr<VectorIndex> automatic =
      BuildFlat(*store, metric, IndexBuildOptions{});
  ASSERT_NE(automatic, nullptr);
  EXPECT_EQ(automatic->scan(), ResolveScanPrecision(ScanPrecision::kAuto));
}

// Concurrent searches on one index give the single-threaded answers.
TEST_P(FlatMetricTest, ConcurrentSearchesAgree) {
  const Metric metric = GetParam();
  Rng rng(6);
  const size_t dim = 16;
  const size_t n = 3000;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim));
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(*store, metric, IndexBuildOptions{});
  ASSERT_TRUE(index.ok()) << index.status();
  const size_t nq = 40;
  const size_t k = 20;
  std::vector<std::vector<float>> queries;
  std::vector<SearchResult> expected;
  for (int t = 0; t < 4; ++t) {
    queries.push_back(Gaussian(rng, nq * dim));
    expected.push_back(RunSearch(**index, queries.back(), dim, k));
  }
  std::vector<SearchResult> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        got[t].scores.assign(nq * k, 0);
        got[t].rows.assign(nq * k, 0);
        (void)(*index)->Search(queries[t].data(), nq, k, got[t].scores.data(),
                               got[t].rows.data());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(got[t].rows, expected[t].rows) << "thread " << t;
    EXPECT_EQ(got[t].scores, expected[t].scores) << "thread " << t;
  }
}

TEST(VectorIndexTest, UnknownFactoryIsInvalidArgument) {
  Rng rng(7);
  std::unique_ptr<CandidateStore> store = MakeStore(8, Gaussian(rng, 100 * 8));
  ASSERT_NE(store, nullptr);
  IndexBuildOptions options;
  options.factory = "NoSuchIndex42";
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(*store, Metric::kInnerProduct, options);
  ASSERT_FALSE(index.ok());
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument)
      << index.status();
}

// ---------------------------------------------------------------------------
// IVF64,Flat.

// Well-separated clusters, so that one probe (the default nprobe, which the
// API does not expose) finds most true neighbours.
TEST_P(FlatMetricTest, IvfFlatIsValidWithRecall) {
  const Metric metric = GetParam();
  Rng rng(8);
  const size_t dim = 16;
  const size_t clusters = 64;
  const size_t per_cluster = 80;
  const size_t n = clusters * per_cluster;
  std::vector<float> centers = Gaussian(rng, clusters * dim, 0.0f, 3.0f);
  if (metric == Metric::kInnerProduct) {
    // Unit directions: inner product search is then cosine-like.
    for (size_t c = 0; c < clusters; ++c) {
      const double norm = Norm(centers.data() + c * dim, dim);
      for (size_t i = 0; i < dim; ++i) {
        centers[c * dim + i] = static_cast<float>(centers[c * dim + i] / norm);
      }
    }
  }
  const float spread = metric == Metric::kInnerProduct ? 0.05f : 0.3f;
  std::normal_distribution<float> noise(0.0f, spread);
  std::vector<float> vectors;
  for (size_t r = 0; r < n; ++r) {
    const size_t c = r % clusters;
    for (size_t i = 0; i < dim; ++i) {
      vectors.push_back(centers[c * dim + i] + noise(rng));
    }
  }
  std::unique_ptr<CandidateStore> store = MakeStore(dim, vectors);
  ASSERT_NE(store, nullptr);
  IndexBuildOptions options;
  options.factory = "IVF64,Flat";
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(*store, metric, options);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_FALSE((*index)->exact());
  EXPECT_EQ((*index)->type(), "IVF64,Flat");

  const size_t nq = 200;
  const size_t k = 10;
  std::uniform_int_distribution<size_t> any_row(0, n - 1);
  std::vector<float> queries;
  for (size_t i = 0; i < nq; ++i) {
    const size_t r = any_row(rng);
    for (size_t j = 0; j < dim; ++j) {
      queries.push_back(store->vector(r)[j] + noise(rng));
    }
  }
  const SearchResult got = RunSearch(**index, queries, dim, k);
  const SearchResult truth = RunFaiss(metric, *store, queries, k);
  size_t hits = 0;
  for (size_t i = 0; i < nq; ++i) {
    const float* q = queries.data() + i * dim;
    std::set<int64_t> seen;
    bool padding = false;
    for (size_t j = 0; j < k; ++j) {
      const int64_t row = got.rows[i * k + j];
      if (row == -1) {
        padding = true;
        continue;
      }
      ASSERT_FALSE(padding) << "query " << i << ": a row after -1 padding";
      ASSERT_GE(row, 0);
      ASSERT_LT(row, static_cast<int64_t>(n));
      ASSERT_TRUE(seen.insert(row).second) << "row " << row << " twice";
      // IVF-Flat scores are computed from the full vectors, in float.
      const double exact = ExactScoreDouble(metric, q, store->vector(row), dim);
      EXPECT_NEAR(got.scores[i * k + j], exact, 1e-4 * (1 + std::fabs(exact)))
          << "query " << i << " position " << j;
      if (j > 0 && got.rows[i * k + j - 1] != -1) {
        EXPECT_FALSE(
            Better(metric, got.scores[i * k + j], got.scores[i * k + j - 1]));
      }
    }
    for (size_t j = 0; j < k; ++j) {
      hits += seen.count(truth.rows[i * k + j]);
    }
  }
  const double recall = static_cast<double>(hits) / (nq * k);
  RecordProperty("recall_at_10", std::to_string(recall));
  EXPECT_GE(recall, 0.8) << "recall@10 with the default nprobe";
}

// Probing every list of an IVF index is an exhaustive search: with
// --nprobe equal to the list count, it finds exactly FAISS Flat's top-k,
// where one probe on unclustered data misses many.
TEST_P(FlatMetricTest, IvfNprobeTradesSpeedForRecall) {
  const Metric metric = GetParam();
  Rng rng(21);
  const size_t dim = 16;
  const size_t n = 4000;
  std::vector<float> vectors = Gaussian(rng, n * dim, 0.0f, 1.0f);
  std::unique_ptr<CandidateStore> store = MakeStore(dim, vectors);
  ASSERT_NE(store, nullptr);
  const std::vector<float> queries = Gaussian(rng, 50 * dim, 0.0f, 1.0f);
  const size_t k = 10;
  const SearchResult truth = RunFaiss(metric, *store, queries, k);
  auto recall = [&](size_t nprobe) {
    IndexBuildOptions options;
    options.factory = "IVF16,Flat";
    options.nprobe = nprobe;
    absl::StatusOr<std::unique_ptr<VectorIndex>> index =
        BuildVectorIndex(*store, metric, options);
    EXPECT_TRUE(index.ok()) << index.status();
    if (!index.ok()) return 0.0;
    return Recall(RunSearch(**index, queries, dim, k), truth, k);
  };
  EXPECT_EQ(recall(16), 1.0);
  EXPECT_LT(recall(1), 0.9);
}

// The same recall through SearchOptions::nprobe on one index built with
// FAISS's default of 1: per-call nprobe without touching the shared index.
TEST_P(FlatMetricTest, IvfNprobePerCallOverridesTheBuildSetting) {
  const Metric metric = GetParam();
  Rng rng(22);
  const size_t dim = 16;
  const size_t n = 4000;
  const size_t nq = 50;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim, 0.0f, 1.0f));
  ASSERT_NE(store, nullptr);
  const std::vector<float> queries = Gaussian(rng, nq * dim, 0.0f, 1.0f);
  const size_t k = 10;
  const SearchResult truth = RunFaiss(metric, *store, queries, k);
  IndexBuildOptions build;
  build.factory = "IVF16,Flat";
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(*store, metric, build);
  ASSERT_TRUE(index.ok()) << index.status();
  auto recall = [&](size_t nprobe) {
    SearchOptions options;
    options.nprobe = nprobe;
    return Recall(RunSearch(**index, queries, dim, k, options), truth, k);
  };
  const double all_lists = recall(16);
  const double one_list = recall(0);  // the build's nprobe: 1
  EXPECT_EQ(all_lists, 1.0);
  EXPECT_LT(one_list, 0.9);
  EXPECT_EQ(recall(1), one_list);
  EXPECT_FALSE((*index)->skips());
}

// Several blocks, a ragged last block, and rows split over two OpenMP
// threads (each with its own top-k, merged): the same exact answer as one
// thread, and as FAISS up to ties within the error bound.
TEST_P(FlatMetricTest, RowsSplitOverThreadsGiveTheExactAnswer) {
  const Metric metric = GetParam();
  Rng rng(23);
  const size_t dim = 12;
  const size_t n = 3 * 4096 + 77;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, n * dim, 0.0f, 1.0f));
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::unique_ptr<VectorIndex>> index =
      BuildVectorIndex(*store, metric, IndexBuildOptions{});
  ASSERT_TRUE(index.ok()) << index.status();
  const int threads = omp_get_max_threads();
  for (size_t nq : {size_t{1}, size_t{3}, size_t{40}}) {
    for (size_t k : {size_t{1}, size_t{25}}) {
      const std::vector<float> queries = Gaussian(rng, nq * dim);
      omp_set_num_threads(1);
      const SearchResult one = RunSearch(**index, queries, dim, k);
      omp_set_num_threads(2);
      const SearchResult two = RunSearch(**index, queries, dim, k);
      omp_set_num_threads(threads);
      for (size_t i = 0; i < nq; ++i) {
        const std::string what = "nq " + std::to_string(nq) + " k " +
                                 std::to_string(k) + " query " +
                                 std::to_string(i);
        CheckExactAnswer(metric, *store, **index, queries.data() + i * dim, k,
                         two.scores.data() + i * k, two.rows.data() + i * k,
                         what + " (2 threads)");
        CheckExactAnswer(metric, *store, **index, queries.data() + i * dim, k,
                         one.scores.data() + i * k, one.rows.data() + i * k,
                         what + " (1 thread)");
      }
      if (HasFailure()) return;
    }
  }
}

// Searches `queries` with every third row skipped and, per query, a
// `closest` limit midway in a gap of `gap` times the error bound between
// two exact scores past the `from`-th best (so that no score sits within
// the bound of it), and checks that the answer is the exact top k of the
// rest.
void CheckSkippedSearch(Metric metric, const CandidateStore& store,
                        const VectorIndex& index,
                        const std::vector<float>& queries, size_t k,
                        size_t from, double gap) {
  const size_t dim = store.dim();
  const size_t n = store.size();
  const size_t nq = queries.size() / dim;
  std::vector<float> closest(nq);
  std::vector<std::vector<double>> allowed(nq);
  for (size_t i = 0; i < nq; ++i) {
    const float* q = queries.data() + i * dim;
    const double bound = index.ErrorBound(Norm(q, dim));
    std::vector<double> exact(n);
    for (size_t r = 0; r < n; ++r) {
      exact[r] = ExactScoreDouble(metric, q, store.vector(r), dim);
    }
    std::vector<double> sorted = exact;
    std::sort(sorted.begin(), sorted.end(),
              [&](double a, double b) { return Better(metric, a, b); });
    size_t cut = from;
    while (cut + 1 < n &&
           std::fabs(sorted[cut] - sorted[cut + 1]) < gap * bound) {
      ++cut;
    }
    ASSERT_LT(cut, from + 500)
        << "no gap of " << gap << "x the bound soon after the " << from
        << "-th best score";
    closest[i] = static_cast<float>((sorted[cut] + sorted[cut + 1]) / 2);
    for (size_t r = 0; r < n; ++r) {
      if (r % 3 != 0 && !Better(metric, exact[r], closest[i])) {
        allowed[i].push_back(exact[r]);
      }
    }
    std::sort(allowed[i].begin(), allowed[i].end(),
              [&](double a, double b) { return Better(metric, a, b); });
  }
  SearchOptions options;
  options.closest = closest;
  options.skip_row = [](size_t, int64_t row) { return row % 3 == 0; };
  const SearchResult got = RunSearch(index, queries, dim, k, options);
  for (size_t i = 0; i < nq; ++i) {
    const float* q = queries.data() + i * dim;
    const double bound = index.ErrorBound(Norm(q, dim));
    for (size_t j = 0; j < k; ++j) {
      const int64_t row = got.rows[i * k + j];
      ASSERT_GE(row, 0) << "query " << i << " position " << j;
      EXPECT_NE(row % 3, 0) << "query " << i << ": skipped row " << row;
      const double exact = ExactScoreDouble(metric, q, store.vector(row), dim);
      EXPECT_FALSE(Better(metric, exact, closest[i]))
          << "query " << i << ": row " << row << " (" << exact
          << ") is closer than " << closest[i];
      EXPECT_LE(std::fabs(exact - allowed[i][j]), 2 * bound + Ulp(exact))
          << "query " << i << " position " << j;
    }
  }
}

// SearchOptions: rows skip_row names and scores closer than `closest` take
// no place in the top k; what is returned is the exact top k of the rest.
TEST_P(FlatMetricTest, SkippedCandidatesTakeNoPlace) {
  const Metric metric = GetParam();
  Rng rng(24);
  const size_t dim = 10;
  std::unique_ptr<CandidateStore> store =
      MakeStore(dim, Gaussian(rng, 5000 * dim, 0.0f, 1.0f));
  ASSERT_NE(store, nullptr);
  const std::unique_ptr<VectorIndex> index =
      BuildFlat(*store, metric, IndexBuildOptions{});
  ASSERT_NE(index, nullptr);
  EXPECT_TRUE(index->skips());
  // Two queries take the half pass; six take sgemm.
  for (size_t nq : {size_t{2}, size_t{6}}) {
    CheckSkippedSearch(metric, *store, *index, Gaussian(rng, nq * dim), 15, 40,
                       8);
  }
}

// The half pass at the `closest` limit, on scores built around binary16's
// rounding (the query is the first axis, so a row's score is its first
// component). Rows scoring 0.99985-0.99989 are allowed but round up to 1.0,
// past the limit 0.9999: the half pass must widen the limit by its error or
// it loses them. Thirty rows scoring 0.99991-1.0002 also round to 1.0 and
// come first by row, so all the candidates it keeps are past the limit once
// rescored: it must search again in float32.
TEST(FlatHalfScanTest, AllowsForItsErrorAtTheClosestLimit) {
  const size_t dim = 8;
  std::vector<float> first;
  for (int i = 0; i < 30; ++i) first.push_back(0.99991f + 1e-5f * i);  // past
  for (int i = 0; i < 5; ++i) first.push_back(0.99989f - 1e-5f * i);   // in
  for (int i = 0; i < 2000; ++i) first.push_back(0.9f - 2e-4f * i);    // far
  std::vector<float> vectors(first.size() * dim, 0.0f);
  for (size_t r = 0; r < first.size(); ++r) vectors[r * dim] = first[r];
  std::unique_ptr<CandidateStore> store = MakeStore(dim, std::move(vectors));
  ASSERT_NE(store, nullptr);
  const std::unique_ptr<VectorIndex> index =
      BuildFlat(*store, Metric::kInnerProduct, F32Options());
  ASSERT_NE(index, nullptr);
  std::vector<float> query(dim, 0.0f);
  query[0] = 1.0f;
  const std::vector<float> closest = {0.9999f};
  SearchOptions options;
  options.closest = closest;
  const size_t k = 10;
  const SearchResult got = RunSearch(*index, query, dim, k, options);
  // The five allowed rows near the limit, best first, then the far ones.
  for (size_t j = 0; j < k; ++j) {
    EXPECT_EQ(got.rows[j], static_cast<int64_t>(30 + j)) << "position " << j;
  }
}

}  // namespace
}  // namespace hardneg

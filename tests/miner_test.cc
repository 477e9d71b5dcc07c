// Miner against an independent brute-force reference of the mining
// semantics (reference_miner.h, written from README.md): SAMPLING_TOP must
// match it exactly; UNIFORM and SOFTMAX must sample from its window, and are
// checked for determinism and, over many seeds, for their distribution.
#include "mining/miner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "random_corpus.h"
#include "reference_miner.h"
#include "versions/index_version.h"

namespace hardneg {
namespace {

using reference::ReferenceMine;
using reference::ReferenceNegative;
using reference::ReferenceResult;
using ::testing::HasSubstr;
using testing_corpus::AbsentId;
using testing_corpus::BuildVersion;
using testing_corpus::GaussianVector;
using testing_corpus::Normalize;
using testing_corpus::OwnedQuery;
using testing_corpus::RandomIds;
using testing_corpus::RandomStore;
using testing_corpus::Rng;
using testing_corpus::StoreData;
using testing_corpus::StoreSpec;

// ---------------------------------------------------------------------------
// Test data.

std::vector<MiningQuery> Views(const std::vector<OwnedQuery>& queries) {
  std::vector<MiningQuery> views;
  views.reserve(queries.size());
  for (const OwnedQuery& q : queries) views.push_back(q.View());
  return views;
}

// A mix of queries: random directions, perturbed store rows, exact store
// rows (often with their query_id), with stored positives (some not in the
// store), client positive_scores, and labels (often 0).
OwnedQuery RandomQuery(Rng& rng, const StoreData& data, Metric metric,
                       bool normalize, int64_t num_labels) {
  std::uniform_int_distribution<size_t> any_row(0, data.size() - 1);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  OwnedQuery q;
  const double kind = coin(rng);
  if (kind < 0.3) {
    q.embedding = GaussianVector(rng, data.dim, normalize);
  } else {
    const size_t row = any_row(rng);
    q.embedding = data.Row(row);
    if (kind < 0.7) {
      for (float& x : q.embedding) x += noise(rng);
      if (normalize) Normalize(q.embedding.data(), data.dim);
    } else if (coin(rng) < 0.7) {
      q.query_id = data.ids[row];
    }
  }
  if (coin(rng) < 0.15) q.query_id = AbsentId(7);  // not in the store
  const int num_positives = std::uniform_int_distribution<int>(0, 4)(rng);
  for (int i = 0; i < num_positives; ++i) {
    q.positive_ids.push_back(data.ids[any_row(rng)]);
  }
  if (coin(rng) < 0.3) {
    q.positive_ids.push_back(
        AbsentId(std::uniform_int_distribution<size_t>(0, 1000)(rng)));
  }
  if (coin(rng) < 0.3) {
    const int num_scores = std::uniform_int_distribution<int>(1, 2)(rng);
    for (int i = 0; i < num_scores; ++i) {
      // A realistic score: that of some stored row, jittered.
      const size_t row = any_row(rng);
      q.positive_scores.push_back(
          reference::ExactScore(metric, q.embedding.data(), data.vector(row),
                                data.dim) +
          noise(rng));
    }
  }
  if (num_labels > 0 && coin(rng) < 0.6) {
    q.label = std::uniform_int_distribution<int64_t>(0, num_labels - 1)(rng);
  } else if (coin(rng) < 0.2) {
    q.label = 0;  // label 0 matches label 0, and nothing in unlabeled stores
  }
  return q;
}

std::vector<OwnedQuery> RandomQueries(Rng& rng, const StoreData& data,
                                      Metric metric, bool normalize,
                                      int64_t num_labels, size_t count) {
  std::vector<OwnedQuery> queries;
  for (size_t i = 0; i < count; ++i) {
    queries.push_back(RandomQuery(rng, data, metric, normalize, num_labels));
  }
  return queries;
}

// ---------------------------------------------------------------------------
// Comparisons.

std::string Describe(const MiningOptions& o) {
  std::ostringstream s;
  s << "num_negatives=" << o.num_negatives << " range=[" << o.range_min << ","
    << o.range_max << ")";
  if (o.max_score) s << " max_score=" << *o.max_score;
  if (o.min_score) s << " min_score=" << *o.min_score;
  if (o.absolute_margin) s << " absolute_margin=" << *o.absolute_margin;
  if (o.relative_margin) s << " relative_margin=" << *o.relative_margin;
  s << " sampling="
    << (o.sampling == Sampling::kTop       ? "TOP"
        : o.sampling == Sampling::kUniform ? "UNIFORM"
                                           : "SOFTMAX")
    << " temperature=" << o.temperature << " seed=" << o.seed;
  return s.str();
}

std::string Describe(const MiningQuery& q) {
  std::ostringstream s;
  s << "positive_ids={";
  for (int64_t id : q.positive_ids) s << id << ",";
  s << "} positive_scores={";
  for (float p : q.positive_scores) s << p << ",";
  s << "}";
  if (q.label) s << " label=" << *q.label;
  if (q.query_id) s << " query_id=" << *q.query_id;
  return s.str();
}

std::string Describe(const MinedNegative& n) {
  std::ostringstream s;
  s.precision(9);
  s << "{id=" << n.id << " score=" << n.score << " label=" << n.label
    << " rank=" << n.rank << " row=" << n.row << "}";
  return s.str();
}

std::string Describe(const ReferenceNegative& n) {
  std::ostringstream s;
  s.precision(9);
  s << "{id=" << n.id << " score=" << n.score << " label=" << n.label
    << " rank=" << n.rank << " row=" << n.row << "}";
  return s.str();
}

bool ScoresEqual(float got, float want) {
  const double tol = 1e-5 * std::max(std::fabs(static_cast<double>(want)),
                                     std::fabs(static_cast<double>(got))) +
                     1e-30;
  return std::fabs(static_cast<double>(got) - want) <= tol;
}

::testing::AssertionResult SameNegative(const MinedNegative& got,
                                        const ReferenceNegative& want) {
  if (got.id != want.id || got.rank != want.rank || got.label != want.label ||
      got.row != want.row || !ScoresEqual(got.score, want.score)) {
    return ::testing::AssertionFailure()
           << "got " << Describe(got) << ", want " << Describe(want);
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult SameHeader(const MiningResult& got,
                                      const ReferenceResult& want) {
  if (got.shortfall != want.shortfall) {
    return ::testing::AssertionFailure()
           << "shortfall: got " << got.shortfall << ", want " << want.shortfall;
  }
  if (got.positive_score.has_value() != want.positive_score.has_value()) {
    return ::testing::AssertionFailure()
           << "positive_score presence: got " << got.positive_score.has_value()
           << ", want " << want.positive_score.has_value();
  }
  if (want.positive_score.has_value() &&
      !ScoresEqual(*got.positive_score, *want.positive_score)) {
    return ::testing::AssertionFailure()
           << "positive_score: got " << *got.positive_score << ", want "
           << *want.positive_score;
  }
  return ::testing::AssertionSuccess();
}

// SAMPLING_TOP: exactly the reference's first num_negatives of the window.
::testing::AssertionResult MatchesTop(const MiningResult& got,
                                      const ReferenceResult& want) {
  ::testing::AssertionResult header = SameHeader(got, want);
  if (!header) return header;
  const size_t common = std::min(got.negatives.size(), want.top.size());
  for (size_t i = 0; i < common; ++i) {
    ::testing::AssertionResult same =
        SameNegative(got.negatives[i], want.top[i]);
    if (!same) {
      return ::testing::AssertionFailure()
             << "negatives[" << i << "]: " << same.message();
    }
  }
  if (got.negatives.size() != want.top.size()) {
    ::testing::AssertionResult r = ::testing::AssertionFailure();
    r << "got " << got.negatives.size() << " negatives, want "
      << want.top.size() << " (window " << want.window.size() << ", survivors "
      << want.num_survivors << ")";
    if (got.negatives.size() > common) {
      r << "; first extra " << Describe(got.negatives[common]);
    } else {
      r << "; first missing " << Describe(want.top[common]);
    }
    return r;
  }
  return ::testing::AssertionSuccess();
}

// UNIFORM / SOFTMAX: min(num_negatives, window) distinct members of the
// reference window, each with its rank, score, label and row, best first.
// When the window is no larger than num_negatives, that is the whole window.
::testing::AssertionResult IsSampleOfWindow(const MiningResult& got,
                                            const ReferenceResult& want,
                                            const MiningOptions& options) {
  ::testing::AssertionResult header = SameHeader(got, want);
  if (!header) return header;
  if (got.negatives.size() != want.top.size()) {
    return ::testing::AssertionFailure()
           << "got " << got.negatives.size() << " negatives, want "
           << want.top.size() << " (window " << want.window.size() << ")";
  }
  for (size_t i = 0; i < got.negatives.size(); ++i) {
    const MinedNegative& n = got.negatives[i];
    if (n.rank < options.range_min ||
        n.rank >= options.range_min + want.window.size()) {
      return ::testing::AssertionFailure()
             << "negatives[" << i << "] " << Describe(n)
             << " is outside the window [" << options.range_min << ","
             << options.range_min + want.window.size() << ")";
    }
    if (i > 0 && n.rank <= got.negatives[i - 1].rank) {
      return ::testing::AssertionFailure()
             << "negatives[" << i << "] " << Describe(n)
             << " not strictly after " << Describe(got.negatives[i - 1])
             << " (best first, no duplicates)";
    }
    ::testing::AssertionResult same =
        SameNegative(n, want.window[n.rank - options.range_min]);
    if (!same) {
      return ::testing::AssertionFailure()
             << "negatives[" << i << "]: " << same.message();
    }
  }
  return ::testing::AssertionSuccess();
}

bool SameResults(const std::vector<MiningResult>& a,
                 const std::vector<MiningResult>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].shortfall != b[i].shortfall ||
        a[i].positive_score != b[i].positive_score ||
        a[i].negatives.size() != b[i].negatives.size()) {
      return false;
    }
    for (size_t j = 0; j < a[i].negatives.size(); ++j) {
      const MinedNegative& x = a[i].negatives[j];
      const MinedNegative& y = b[i].negatives[j];
      if (x.id != y.id || x.rank != y.rank || x.score != y.score ||
          x.label != y.label || x.row != y.row) {
        return false;
      }
    }
  }
  return true;
}

constexpr int kMaxReportedQueries = 5;

// Mines `queries` in one call and checks every result against the
// reference: exactly for TOP, as a sample of the window otherwise. Returns
// the results (empty on a failed call).
std::vector<MiningResult> MineAndCheck(const IndexVersion& version,
                                       const std::vector<OwnedQuery>& queries,
                                       const MiningOptions& options,
                                       const Miner& miner = Miner()) {
  SCOPED_TRACE(Describe(options) + " metric=" + MetricName(version.metric()));
  const std::vector<MiningQuery> views = Views(queries);
  absl::StatusOr<std::vector<MiningResult>> got =
      miner.Mine(version, views, options);
  if (!got.ok()) {
    ADD_FAILURE() << "Mine: " << got.status();
    return {};
  }
  if (got->size() != queries.size()) {
    ADD_FAILURE() << "got " << got->size() << " results for " << queries.size()
                  << " queries";
    return {};
  }
  int reported = 0;
  for (size_t i = 0; i < views.size(); ++i) {
    const ReferenceResult want =
        ReferenceMine(version.store(), version.metric(), views[i], options,
                      /*ranked_only=*/true);
    ::testing::AssertionResult ok =
        options.sampling == Sampling::kTop
            ? MatchesTop((*got)[i], want)
            : IsSampleOfWindow((*got)[i], want, options);
    // A window no larger than num_negatives leaves nothing to sample.
    if (ok && options.sampling != Sampling::kTop &&
        want.window.size() <= options.num_negatives) {
      ok = MatchesTop((*got)[i], want);
    }
    if (!ok) {
      ADD_FAILURE() << "queries[" << i << "] (" << Describe(views[i])
                    << "): " << ok.message();
      if (++reported >= kMaxReportedQueries) {
        ADD_FAILURE() << "more failures not reported";
        break;
      }
    }
  }
  return *std::move(got);
}

MiningOptions Top(uint32_t num_negatives) {
  MiningOptions o;
  o.num_negatives = num_negatives;
  return o;
}

// A spread of option sets for one metric, in the units of scores between
// vectors of norm about 1 (inner product in [-1, 1]; L2 in [0, 4]).
std::vector<MiningOptions> OptionSweep(Metric metric) {
  const bool ip = metric == Metric::kInnerProduct;
  std::vector<MiningOptions> sweep;
  auto add = [&sweep](MiningOptions o) { sweep.push_back(o); };
  add(Top(10));
  add(Top(1));
  {
    MiningOptions o = Top(10);
    o.range_min = 7;
    add(o);
  }
  {
    MiningOptions o = Top(5);
    o.range_min = 3;
    o.range_max = 40;  // a window larger than num_negatives: TOP is its head
    add(o);
  }
  {
    MiningOptions o = Top(30);
    o.range_min = 100;
    o.range_max = 200;
    add(o);
  }
  for (float m : {0.0f, 0.1f, -0.05f}) {
    MiningOptions o = Top(20);
    o.absolute_margin = m;
    add(o);
  }
  for (float r : {0.0f, 0.2f, 1.5f, -0.1f}) {
    MiningOptions o = Top(20);
    o.relative_margin = r;
    add(o);
  }
  {
    MiningOptions o = Top(15);
    o.max_score = ip ? 0.3f : 2.2f;
    add(o);
  }
  {
    MiningOptions o = Top(15);
    o.min_score = ip ? -0.1f : 1.2f;  // L2: drops the suspiciously close
    add(o);
  }
  {
    MiningOptions o = Top(15);
    o.max_score = 0.0f;  // a bound of 0 is a bound
    add(o);
  }
  {
    MiningOptions o = Top(15);
    o.min_score = 0.0f;
    add(o);
  }
  {
    MiningOptions o = Top(15);
    o.min_score = ip ? 0.1f : 1.0f;
    o.max_score = ip ? 0.4f : 1.8f;
    add(o);
  }
  {
    MiningOptions o = Top(12);
    o.range_min = 4;
    o.absolute_margin = 0.05f;
    o.relative_margin = 0.1f;
    o.max_score = ip ? 0.6f : 3.0f;
    o.min_score = ip ? -0.5f : 0.5f;
    add(o);
  }
  {
    MiningOptions o = Top(8);
    o.range_min = 2;
    o.range_max = 25;
    o.absolute_margin = 0.0f;
    o.relative_margin = 0.0f;
    o.max_score = ip ? 0.9f : 3.5f;
    o.min_score = ip ? -0.9f : 0.2f;
    add(o);
  }
  return sweep;
}

// ---------------------------------------------------------------------------
// SAMPLING_TOP against the reference.

struct SweepCase {
  Metric metric;
  StoreSpec spec;
  size_t num_queries;  // in one Mine call
  const char* name;
};

class TopSweepTest : public ::testing::TestWithParam<SweepCase> {};

// Many queries per call (300 for the labeled stores), every option set of
// the sweep.
TEST_P(TopSweepTest, MatchesReference) {
  const SweepCase& c = GetParam();
  Rng rng(20240601 + static_cast<int>(c.metric) * 7 + c.spec.num_labels);
  const StoreData data = RandomStore(rng, c.spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, c.metric);
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries = RandomQueries(
      rng, data, c.metric, c.spec.normalize, c.spec.num_labels, c.num_queries);
  for (const MiningOptions& options : OptionSweep(c.metric)) {
    MineAndCheck(*version, queries, options);
    if (HasFailure()) return;
  }
}

std::vector<SweepCase> SweepCases() {
  std::vector<SweepCase> cases;
  for (Metric metric : {Metric::kInnerProduct, Metric::kL2}) {
    StoreSpec labeled;
    labeled.n = 3000;
    labeled.num_labels = 5;
    StoreSpec unlabeled;
    unlabeled.n = 2000;
    StoreSpec cosine;
    cosine.n = 2000;
    cosine.normalize = true;
    cosine.num_labels = 3;
    StoreSpec ties;  // 100 distinct vectors, ~20 rows each
    ties.n = 1500;
    ties.num_base = 75;
    ties.num_labels = 4;
    const bool ip = metric == Metric::kInnerProduct;
    cases.push_back({metric, labeled, 300, ip ? "IpLabeled" : "L2Labeled"});
    cases.push_back(
        {metric, unlabeled, 100, ip ? "IpUnlabeled" : "L2Unlabeled"});
    cases.push_back({metric, cosine, 100, ip ? "IpCosine" : "L2Unit"});
    cases.push_back({metric, ties, 150, ip ? "IpTies" : "L2Ties"});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Stores, TopSweepTest,
                         ::testing::ValuesIn(SweepCases()),
                         [](const ::testing::TestParamInfo<SweepCase>& p) {
                           return std::string(p.param.name);
                         });

class MinerMetricTest : public ::testing::TestWithParam<Metric> {};

INSTANTIATE_TEST_SUITE_P(Metrics, MinerMetricTest,
                         ::testing::Values(Metric::kInnerProduct, Metric::kL2),
                         [](const ::testing::TestParamInfo<Metric>& p) {
                           return p.param == Metric::kInnerProduct
                                      ? std::string("InnerProduct")
                                      : std::string("L2");
                         });

// Hand-made data: known order, ties broken by id, labels including 0.
TEST_P(MinerMetricTest, SmallHandMadeStore) {
  const Metric metric = GetParam();
  StoreData data;
  data.dim = 2;
  // Rows: ids deliberately not sorted. Rows 1, 3 and 4 are the same vector.
  data.ids = {50, 40, 30, 20, 10, 0, -1};
  data.vectors = {1.0f, 0.0f, 0.5f, 0.5f, 0.9f, 0.1f,  0.5f,
                  0.5f, 0.5f, 0.5f, 0.0f, 1.0f, -1.0f, 0.0f};
  data.labels = std::vector<int64_t>{1, 0, 2, 0, 3, 4, 0};
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  OwnedQuery q;
  q.embedding = {1.0f, 0.0f};
  const Miner miner;
  {
    const std::vector<MiningQuery> views = {q.View()};
    absl::StatusOr<std::vector<MiningResult>> got =
        miner.Mine(*version, views, Top(7));
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), 1u);
    std::vector<int64_t> ids;
    for (const MinedNegative& n : (*got)[0].negatives) ids.push_back(n.id);
    // IP: 1, .9, .5 x3 (ids 10, 20, 40), 0, -1. L2: 0, .02, .5 x3, 2, 4.
    EXPECT_THAT(ids, ::testing::ElementsAre(50, 30, 10, 20, 40, 0, -1));
    EXPECT_EQ((*got)[0].shortfall, 0u);
    EXPECT_FALSE((*got)[0].positive_score.has_value());
  }
  // Label 0 is a label: ids 40, 20 and -1 go.
  q.label = 0;
  {
    const std::vector<MiningQuery> views = {q.View()};
    absl::StatusOr<std::vector<MiningResult>> got =
        miner.Mine(*version, views, Top(7));
    ASSERT_TRUE(got.ok()) << got.status();
    std::vector<int64_t> ids;
    for (const MinedNegative& n : (*got)[0].negatives) {
      ids.push_back(n.id);
      EXPECT_NE(n.label, 0);
    }
    EXPECT_THAT(ids, ::testing::ElementsAre(50, 30, 10, 0));
    EXPECT_EQ((*got)[0].shortfall, 3u);
  }
  MineAndCheck(*version, {q}, Top(7));
}

// Duplicated vectors in tie groups that straddle the window edges: the
// window must cut each group by id, whatever order the index returns.
TEST_P(MinerMetricTest, TieGroupsStraddleTheWindow) {
  const Metric metric = GetParam();
  Rng rng(77);
  StoreSpec spec;
  spec.n = 1200;
  spec.num_base = 12;  // ~100 copies of each vector
  spec.dim = 8;
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 0, 50);
  for (uint32_t range_min : {0u, 1u, 37u, 150u}) {
    for (uint32_t num : {1u, 7u, 64u}) {
      MiningOptions o = Top(num);
      o.range_min = range_min;
      MineAndCheck(*version, queries, o);
    }
  }
}

// The query equals hundreds of stored positives (the nearest candidates):
// all of them are excluded, p is the query's own score, and the window
// starts behind them.
TEST_P(MinerMetricTest, QueryEqualToManyPositives) {
  const Metric metric = GetParam();
  Rng rng(11);
  StoreSpec spec;
  spec.n = 3000;
  StoreData data = RandomStore(rng, spec);
  const std::vector<float> v = GaussianVector(rng, spec.dim, false);
  OwnedQuery q;
  q.embedding = v;
  // 400 copies of the query, with fresh ids, every one a positive.
  for (size_t i = 0; i < 400; ++i) {
    const int64_t id = AbsentId(1000 + i) + 1000000;
    data.ids.push_back(id);
    data.vectors.insert(data.vectors.end(), v.begin(), v.end());
    q.positive_ids.push_back(id);
  }
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  OwnedQuery with_scores = q;
  with_scores.positive_scores = {metric == Metric::kInnerProduct ? 0.2f : 1.5f};
  OwnedQuery fewer = q;  // 100 copies are not positives: they are negatives
  fewer.positive_ids.resize(300);
  for (const MiningOptions& o : OptionSweep(metric)) {
    MineAndCheck(*version, {q, with_scores, fewer}, o);
  }
}

// max_score (inner product) / min_score (L2) set per query so that the
// nearest 300 or 1000 candidates are dropped.
TEST_P(MinerMetricTest, BoundExcludesTheNearestHundreds) {
  const Metric metric = GetParam();
  Rng rng(12);
  StoreSpec spec;
  spec.n = 4000;
  spec.num_labels = 3;
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 3, 12);
  for (const OwnedQuery& q : queries) {
    const ReferenceResult unfiltered =
        ReferenceMine(version->store(), metric, q.View(), Top(1));
    for (size_t skip : {300u, 1000u}) {
      ASSERT_GT(unfiltered.survivors.size(), skip + 100);
      const float bound = unfiltered.survivors[skip].score;
      MiningOptions o = Top(25);
      if (metric == Metric::kInnerProduct) {
        o.max_score = bound;
      } else {
        o.min_score = bound;
      }
      MineAndCheck(*version, {q}, o);
      o.range_min = 10;
      o.absolute_margin = 0.0f;
      MineAndCheck(*version, {q}, o);
    }
  }
}

// 95% of the store shares the query's label.
TEST_P(MinerMetricTest, LabelExcludesMostOfTheStore) {
  const Metric metric = GetParam();
  Rng rng(13);
  StoreSpec spec;
  spec.n = 4000;
  StoreData data = RandomStore(rng, spec);
  data.labels.emplace();
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  for (size_t i = 0; i < spec.n; ++i) {
    data.labels->push_back(coin(rng) < 0.95 ? 0
                                            : 1 + static_cast<int64_t>(i % 3));
  }
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 0, 40);
  for (OwnedQuery& q : queries) q.label = 0;
  MineAndCheck(*version, queries, Top(50));
  MiningOptions o = Top(100);
  o.range_min = 60;
  MineAndCheck(*version, queries, o);
  o = Top(300);  // more than survive: shortfall
  MineAndCheck(*version, queries, o);
}

// A store without labels never matches a label, 0 included; Negative.label
// is then 0.
TEST_P(MinerMetricTest, UnlabeledStoreNeverMatchesALabel) {
  const Metric metric = GetParam();
  Rng rng(14);
  StoreSpec spec;
  spec.n = 500;
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 0, 20);
  for (size_t i = 0; i < queries.size(); ++i) {
    queries[i].label = static_cast<int64_t>(i % 2);  // 0 or 1
  }
  const std::vector<MiningResult> got =
      MineAndCheck(*version, queries, Top(40));
  for (const MiningResult& r : got) {
    EXPECT_EQ(r.negatives.size(), 40u);
    for (const MinedNegative& n : r.negatives) EXPECT_EQ(n.label, 0);
  }
}

// query_id excludes that candidate (and nothing else); positive ids not in
// the store count for nothing, and are no error.
TEST_P(MinerMetricTest, QueryIdAndAbsentPositives) {
  const Metric metric = GetParam();
  Rng rng(15);
  StoreSpec spec;
  spec.n = 800;
  spec.num_labels = 2;
  spec.normalize = true;  // so that a row is its own nearest, for both metrics
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  std::vector<OwnedQuery> queries;
  for (size_t row = 0; row < 30; ++row) {
    OwnedQuery q;
    q.embedding = data.Row(row);
    q.query_id = data.ids[row];
    queries.push_back(q);
    OwnedQuery absent = q;
    absent.query_id = AbsentId(row);
    absent.positive_ids = {AbsentId(row + 100), AbsentId(row + 200)};
    queries.push_back(absent);
  }
  const std::vector<MiningResult> got = MineAndCheck(*version, queries, Top(5));
  ASSERT_EQ(got.size(), queries.size());
  for (size_t i = 0; i < got.size(); i += 2) {
    // The query's own row would be first; it is excluded.
    ASSERT_FALSE(got[i].negatives.empty());
    EXPECT_NE(got[i].negatives[0].id, *queries[i].query_id);
    // Absent query_id and positives: the own row is first; no p.
    ASSERT_FALSE(got[i + 1].negatives.empty());
    EXPECT_EQ(got[i + 1].negatives[0].id, *queries[i].query_id);
    EXPECT_FALSE(got[i + 1].positive_score.has_value());
  }
  MiningOptions o = Top(5);
  o.absolute_margin = 0.0f;  // no positive: the margin does nothing
  o.relative_margin = 0.5f;
  MineAndCheck(*version, queries, o);
}

// Positives from positive_scores alone, from stored ids alone, and both;
// p is the weakest of all of them.
TEST_P(MinerMetricTest, WeakestPositive) {
  const Metric metric = GetParam();
  const bool ip = metric == Metric::kInnerProduct;
  Rng rng(16);
  StoreSpec spec;
  spec.n = 1500;
  spec.num_labels = 4;
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 4, 60);
  for (size_t i = 0; i < queries.size(); ++i) {
    OwnedQuery& q = queries[i];
    switch (i % 4) {
      case 0:  // positive_scores only
        q.positive_ids.clear();
        q.positive_scores = {ip ? 0.4f : 1.0f};
        break;
      case 1:  // stored positives only
        q.positive_scores.clear();
        q.positive_ids = {data.ids[i], data.ids[i + 1], AbsentId(i)};
        break;
      case 2:  // both; the client's score is the weakest
        q.positive_ids = {data.ids[i]};
        q.positive_scores = {ip ? -3.0f : 9.0f, ip ? 0.5f : 0.5f};
        break;
      default:  // both; scores that the stored positive is weaker than
        q.positive_ids = {data.ids[i]};
        q.positive_scores = {ip ? 5.0f : 0.0f};
        break;
    }
  }
  for (const MiningOptions& o : OptionSweep(metric)) {
    const std::vector<MiningResult> got = MineAndCheck(*version, queries, o);
    ASSERT_EQ(got.size(), queries.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_TRUE(got[i].positive_score.has_value()) << "queries[" << i << "]";
    }
  }
}

// Negative p (inner product, or a client's negative score for L2): the
// relative margin is sign-safe, p -/+ |p| r.
TEST_P(MinerMetricTest, NegativePositiveScore) {
  const Metric metric = GetParam();
  const bool ip = metric == Metric::kInnerProduct;
  Rng rng(17);
  StoreSpec spec;
  spec.n = 1500;
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 0, 40);
  for (size_t i = 0; i < queries.size(); ++i) {
    queries[i].positive_ids.clear();
    queries[i].positive_scores = {ip ? -0.1f - 0.01f * i : -0.5f - 0.1f * i};
  }
  for (float r : {0.0f, 0.5f, 1.0f, 2.0f, 5.0f}) {
    MiningOptions o = Top(10);
    o.relative_margin = r;
    const std::vector<MiningResult> got = MineAndCheck(*version, queries, o);
    if (ip) {
      for (size_t i = 0; i < got.size(); ++i) {
        // Sign-safe: every survivor is at most p - |p| r (< p).
        const double p = queries[i].positive_scores[0];
        for (const MinedNegative& n : got[i].negatives) {
          EXPECT_LE(n.score, p - std::fabs(p) * r);
        }
      }
    }
    o.absolute_margin = 0.05f;
    MineAndCheck(*version, queries, o);
  }
  // Stored positives far away give an inner-product p that is negative.
  if (ip) {
    for (size_t i = 0; i < queries.size(); ++i) {
      OwnedQuery& q = queries[i];
      q.positive_scores.clear();
      // The stored row least similar to the query.
      const ReferenceResult all =
          ReferenceMine(version->store(), metric, q.View(), Top(1));
      q.positive_ids = {all.survivors.back().id};
    }
    for (float r : {0.0f, 0.3f, 3.0f}) {
      MiningOptions o = Top(10);
      o.relative_margin = r;
      o.range_min = 5;
      MineAndCheck(*version, queries, o);
    }
  }
}

// Candidates that equal a positive score exactly: the margins drop strictly
// (s + m > p, not >=), and the bounds are inclusive.
TEST_P(MinerMetricTest, EdgesOfMarginsAndBounds) {
  const Metric metric = GetParam();
  Rng rng(18);
  StoreSpec spec;
  spec.n = 600;
  spec.num_base = 60;  // duplicates: candidates equal to the positive
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 0, 40);
  for (size_t i = 0; i < queries.size(); ++i) {
    queries[i].positive_scores.clear();
    queries[i].positive_ids = {data.ids[i * 7]};
  }
  for (int which = 0; which < 4; ++which) {
    MiningOptions o = Top(30);
    if (which == 0) o.absolute_margin = 0.0f;
    if (which == 1) o.relative_margin = 0.0f;
    MineAndCheck(*version, queries, o);
    if (which >= 2) {
      // Bounds equal to each query's p, one query per call.
      for (size_t i = 0; i < queries.size(); ++i) {
        const std::vector<MiningQuery> one = {queries[i].View()};
        const ReferenceResult r =
            ReferenceMine(version->store(), metric, one[0], Top(1));
        ASSERT_TRUE(r.positive_score.has_value());
        MiningOptions b = Top(30);
        if (which == 2) b.max_score = *r.positive_score;
        if (which == 3) b.min_score = *r.positive_score;
        MineAndCheck(*version, {queries[i]}, b);
      }
    }
  }
}

// Fewer candidates survive than asked: everything that survives, and the
// rest as shortfall. Never filled with excluded items.
TEST_P(MinerMetricTest, ShortfallWhenTheIndexIsExhausted) {
  const Metric metric = GetParam();
  Rng rng(19);
  StoreSpec spec;
  spec.n = 30;
  spec.num_labels = 3;
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 3, 40);
  for (const MiningOptions& base : OptionSweep(metric)) {
    MiningOptions o = base;
    o.num_negatives = 50;
    if (o.range_max != 0) o.range_max = std::max(o.range_max, o.range_min + 50);
    MineAndCheck(*version, queries, o);
  }
  MiningOptions far = Top(5);
  far.range_min = 40;  // past the end: an empty window
  const std::vector<MiningResult> got = MineAndCheck(*version, queries, far);
  for (const MiningResult& r : got) {
    EXPECT_TRUE(r.negatives.empty());
    EXPECT_EQ(r.shortfall, 5u);
  }
  MiningOptions all = Top(30);  // exactly the store size, nothing excluded
  OwnedQuery plain;
  plain.embedding = queries[0].embedding;
  const std::vector<MiningResult> everything =
      MineAndCheck(*version, {plain}, all);
  ASSERT_EQ(everything.size(), 1u);
  EXPECT_EQ(everything[0].negatives.size(), 30u);
  EXPECT_EQ(everything[0].shortfall, 0u);
}

// A window far past a small store, at the range limit, for a large batch:
// empty windows, all shortfall (and no k sized by the window rather than by
// the store).
TEST_P(MinerMetricTest, WindowFarPastASmallStore) {
  const Metric metric = GetParam();
  Rng rng(22);
  StoreSpec spec;
  spec.n = 40;
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 0, 300);
  MiningOptions o = Top(1000);
  o.range_min = MinerLimits().max_range - 1000;  // range_max: the limit
  const std::vector<MiningResult> got = MineAndCheck(*version, queries, o);
  ASSERT_EQ(got.size(), queries.size());
  for (const MiningResult& r : got) {
    EXPECT_TRUE(r.negatives.empty());
    EXPECT_EQ(r.shortfall, 1000u);
  }
}

// L2 on vectors far from the origin: a norm-expansion kernel loses most of
// the distance to cancellation, so the window is exact only if the miner
// rescoring and deepening honour the kernel's error bound.
TEST(MinerTest, L2FarFromTheOriginIsStillExact) {
  Rng rng(20);
  StoreData data;
  data.dim = 32;
  data.ids = RandomIds(rng, 2000);
  std::normal_distribution<float> noise(0.0f, 0.01f);
  for (size_t i = 0; i < data.ids.size() * data.dim; ++i) {
    data.vectors.push_back(10.0f + noise(rng));
  }
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, Metric::kL2);
  ASSERT_NE(version, nullptr);
  std::vector<OwnedQuery> queries;
  for (size_t i = 0; i < 50; ++i) {
    OwnedQuery q;
    for (size_t j = 0; j < data.dim; ++j)
      q.embedding.push_back(10.0f + noise(rng));
    queries.push_back(q);
  }
  MineAndCheck(*version, queries, Top(10));
  MiningOptions o = Top(20);
  o.range_min = 30;
  MineAndCheck(*version, queries, o);
}

// Inner product with a wide spread of norms (not cosine).
TEST(MinerTest, InnerProductWithMixedNorms) {
  Rng rng(21);
  StoreSpec spec;
  spec.n = 2000;
  spec.num_labels = 2;
  StoreData data = RandomStore(rng, spec);
  std::uniform_real_distribution<float> scale(0.01f, 20.0f);
  for (size_t row = 0; row < data.size(); ++row) {
    const float s = scale(rng);
    for (size_t j = 0; j < data.dim; ++j) data.vectors[row * data.dim + j] *= s;
  }
  std::shared_ptr<const IndexVersion> version =
      BuildVersion(data, Metric::kInnerProduct);
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, Metric::kInnerProduct, false, 2, 100);
  MineAndCheck(*version, queries, Top(20));
  MiningOptions o = Top(20);
  o.max_score = 1.0f;
  o.min_score = -1.0f;
  MineAndCheck(*version, queries, o);
}

// ---------------------------------------------------------------------------
// UNIFORM and SOFTMAX: samples of the reference window.

TEST_P(MinerMetricTest, SamplesComeFromTheWindow) {
  const Metric metric = GetParam();
  Rng rng(30);
  StoreSpec spec;
  spec.n = 2000;
  spec.num_labels = 4;
  spec.num_base = 500;  // some ties
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 4, 40);
  for (Sampling sampling : {Sampling::kUniform, Sampling::kSoftmax}) {
    for (float temperature : {0.0f, 0.05f, 1.0f, 20.0f}) {
      if (sampling == Sampling::kUniform && temperature != 0.0f) continue;
      for (const MiningOptions& base : OptionSweep(metric)) {
        MiningOptions o = base;
        o.sampling = sampling;
        o.temperature = temperature;
        o.seed = 12345;
        if (o.range_max == 0) o.range_max = o.range_min + 3 * o.num_negatives;
        MineAndCheck(*version, queries, o);
        // A window no larger than num_negatives: the whole window.
        o.range_max = o.range_min + o.num_negatives;
        MineAndCheck(*version, queries, o);
        if (HasFailure()) return;
      }
    }
  }
}

// Same request, same seed, same version: same answer, from any Miner.
// Different seeds: different answers (not always, but often).
TEST_P(MinerMetricTest, SamplingIsDeterministicPerSeed) {
  const Metric metric = GetParam();
  Rng rng(31);
  StoreSpec spec;
  spec.n = 1000;
  spec.num_labels = 3;
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 3, 20);
  const std::vector<MiningQuery> views = Views(queries);
  for (Sampling sampling : {Sampling::kUniform, Sampling::kSoftmax}) {
    MiningOptions o = Top(5);
    o.range_max = 40;
    o.sampling = sampling;
    o.temperature = 0.5f;
    std::set<std::vector<int64_t>> distinct;
    for (uint64_t seed :
         {uint64_t{0}, uint64_t{1}, uint64_t{2}, uint64_t{3}, uint64_t{42},
          uint64_t{1} << 40, std::numeric_limits<uint64_t>::max()}) {
      o.seed = seed;
      absl::StatusOr<std::vector<MiningResult>> a =
          Miner().Mine(*version, views, o);
      absl::StatusOr<std::vector<MiningResult>> b =
          Miner().Mine(*version, views, o);
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE(b.ok()) << b.status();
      EXPECT_TRUE(SameResults(*a, *b)) << Describe(o);
      std::vector<int64_t> ids;
      for (const MiningResult& r : *a) {
        for (const MinedNegative& n : r.negatives) ids.push_back(n.id);
      }
      distinct.insert(ids);
    }
    // 7 seeds, 20 queries, C(40,5) choices each: all distinct in practice.
    EXPECT_GE(distinct.size(), 6u) << Describe(o);
  }
}

// temperature 0 means 1.0: the same answers, seed for seed.
TEST_P(MinerMetricTest, TemperatureZeroMeansOne) {
  const Metric metric = GetParam();
  Rng rng(32);
  StoreSpec spec;
  spec.n = 500;
  const StoreData data = RandomStore(rng, spec);
  std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 0, 10);
  const std::vector<MiningQuery> views = Views(queries);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    MiningOptions zero = Top(4);
    zero.range_max = 30;
    zero.sampling = Sampling::kSoftmax;
    zero.seed = seed;
    MiningOptions one = zero;
    one.temperature = 1.0f;
    absl::StatusOr<std::vector<MiningResult>> a =
        Miner().Mine(*version, views, zero);
    absl::StatusOr<std::vector<MiningResult>> b =
        Miner().Mine(*version, views, one);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_TRUE(SameResults(*a, *b)) << "seed " << seed;
  }
}

// ---------------------------------------------------------------------------
// Sampling distributions, over many seeds (fixed, so not flaky).

// A store whose scores against Query() are `values` exactly (inner
// product: x = (v, 0), q = (1, 0)) or about `values` (L2: x = (sqrt v, 0),
// q = 0). Ids 1000 + i, unlabeled.
struct DesignedStore {
  std::shared_ptr<const IndexVersion> version;
  OwnedQuery query;
};

DesignedStore MakeDesignedStore(Metric metric,
                                const std::vector<double>& values) {
  StoreData data;
  data.dim = 2;
  for (size_t i = 0; i < values.size(); ++i) {
    data.ids.push_back(1000 + static_cast<int64_t>(i));
    if (metric == Metric::kInnerProduct) {
      data.vectors.push_back(static_cast<float>(values[i]));
    } else {
      data.vectors.push_back(static_cast<float>(std::sqrt(values[i])));
    }
    data.vectors.push_back(0.0f);
  }
  DesignedStore d;
  d.version = BuildVersion(data, metric);
  d.query.embedding = {metric == Metric::kInnerProduct ? 1.0f : 0.0f, 0.0f};
  return d;
}

// Scores of the window, in rank order, from the reference.
std::vector<double> WindowScores(const DesignedStore& d,
                                 const MiningOptions& o) {
  const ReferenceResult r =
      ReferenceMine(d.version->store(), d.version->metric(), d.query.View(), o);
  std::vector<double> scores;
  for (const ReferenceNegative& n : r.window) scores.push_back(n.score);
  return scores;
}

// Depth-first over the ordered draws of `left` more items: adds each
// complete sequence's probability to the inclusion of its members.
void AddDrawSequences(const std::vector<double>& weights, size_t left,
                      double prob, std::vector<bool>& taken,
                      std::vector<double>& inclusion) {
  if (left == 0) {
    for (size_t i = 0; i < weights.size(); ++i) {
      if (taken[i]) inclusion[i] += prob;
    }
    return;
  }
  double total = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!taken[i]) total += weights[i];
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    if (taken[i]) continue;
    taken[i] = true;
    AddDrawSequences(weights, left - 1, prob * weights[i] / total, taken,
                     inclusion);
    taken[i] = false;
  }
}

// Inclusion probability of each window position when `k` are drawn
// without replacement, each draw proportional to `weights` among those not
// yet drawn (successive sampling; Gumbel-top-k and Efraimidis-Spirakis are
// the same distribution). Exact, by enumerating draw sequences.
std::vector<double> InclusionProbabilities(const std::vector<double>& weights,
                                           size_t k) {
  std::vector<double> inclusion(weights.size(), 0.0);
  std::vector<bool> taken(weights.size(), false);
  AddDrawSequences(weights, k, 1.0, taken, inclusion);
  return inclusion;
}

// Counts, over `calls` seeds, how often each window position is returned;
// checks each result is a valid sample on the way.
std::vector<int> CountPicks(const DesignedStore& d, MiningOptions o, int calls,
                            size_t window_size) {
  std::vector<int> counts(window_size, 0);
  const std::vector<MiningQuery> views = {d.query.View()};
  const ReferenceResult want =
      ReferenceMine(d.version->store(), d.version->metric(), views[0], o);
  const Miner miner;
  int reported = 0;
  for (int call = 0; call < calls; ++call) {
    o.seed = 1000003ull * static_cast<uint64_t>(call) + 17;
    absl::StatusOr<std::vector<MiningResult>> got =
        miner.Mine(*d.version, views, o);
    if (!got.ok()) {
      ADD_FAILURE() << got.status();
      return counts;
    }
    ::testing::AssertionResult ok = IsSampleOfWindow((*got)[0], want, o);
    if (!ok) {
      if (++reported <= kMaxReportedQueries) {
        ADD_FAILURE() << Describe(o) << ": " << ok.message();
      }
      continue;
    }
    for (const MinedNegative& n : (*got)[0].negatives) {
      ++counts[n.rank - o.range_min];
    }
  }
  int total = 0;
  for (int c : counts) total += c;
  EXPECT_EQ(total, calls * static_cast<int>(want.top.size()));
  return counts;
}

// |count - expected| within 5 standard deviations (+3), for every position.
void ExpectFrequencies(const std::vector<int>& counts,
                       const std::vector<double>& probabilities, int calls) {
  ASSERT_EQ(counts.size(), probabilities.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    const double p = probabilities[i];
    const double expected = calls * p;
    const double sd = std::sqrt(calls * p * (1 - p));
    EXPECT_LE(std::fabs(counts[i] - expected), 5 * sd + 3)
        << "window position " << i << ": picked " << counts[i] << " times in "
        << calls << " calls, expected " << expected << " (p=" << p << ")";
  }
}

std::vector<double> SpreadScores(Metric metric, size_t n, double offset) {
  std::vector<double> values;
  for (size_t i = 0; i < n; ++i) {
    // Inner product: best is highest; L2: best is lowest.
    values.push_back(metric == Metric::kInnerProduct ? offset + 2.0 - 0.35 * i
                                                     : offset + 0.5 + 0.35 * i);
  }
  return values;
}

TEST_P(MinerMetricTest, UniformPicksEveryPositionEqually) {
  const Metric metric = GetParam();
  const DesignedStore d =
      MakeDesignedStore(metric, SpreadScores(metric, 40, 0));
  ASSERT_NE(d.version, nullptr);
  MiningOptions o = Top(5);
  o.range_min = 5;
  o.range_max = 25;
  o.sampling = Sampling::kUniform;
  const int kCalls = 2000;
  const std::vector<int> counts = CountPicks(d, o, kCalls, 20);
  ExpectFrequencies(counts, std::vector<double>(20, 5.0 / 20), kCalls);
}

struct SoftmaxCase {
  float temperature;
  uint32_t num_negatives;
  uint32_t range_min;
  uint32_t range_max;
  double offset;  // added to every score: large offsets overflow naive exp
};

class SoftmaxDistributionTest
    : public ::testing::TestWithParam<std::tuple<Metric, SoftmaxCase>> {};

// Inclusion frequencies match successive sampling with weights exp(s / T)
// (inner product) or exp(-s / T) (L2) over the window.
TEST_P(SoftmaxDistributionTest, MatchesWeights) {
  const Metric metric = std::get<0>(GetParam());
  const SoftmaxCase c = std::get<1>(GetParam());
  const DesignedStore d =
      MakeDesignedStore(metric, SpreadScores(metric, 12, c.offset));
  ASSERT_NE(d.version, nullptr);
  MiningOptions o = Top(c.num_negatives);
  o.range_min = c.range_min;
  o.range_max = c.range_max;
  o.sampling = Sampling::kSoftmax;
  o.temperature = c.temperature;
  const std::vector<double> scores = WindowScores(d, o);
  ASSERT_EQ(scores.size(), c.range_max - c.range_min);
  // Weights relative to the best score, so that they do not overflow here.
  const double t = c.temperature == 0 ? 1.0 : c.temperature;
  const double sign = metric == Metric::kInnerProduct ? 1.0 : -1.0;
  std::vector<double> weights;
  for (double s : scores)
    weights.push_back(std::exp(sign * (s - scores[0]) / t));
  const std::vector<double> inclusion =
      InclusionProbabilities(weights, c.num_negatives);
  const int kCalls = 3000;
  ExpectFrequencies(CountPicks(d, o, kCalls, scores.size()), inclusion, kCalls);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SoftmaxDistributionTest,
    ::testing::Combine(::testing::Values(Metric::kInnerProduct, Metric::kL2),
                       ::testing::Values(SoftmaxCase{1.0f, 1, 0, 8, 0.0},
                                         SoftmaxCase{0.0f, 3, 0, 8,
                                                     0.0},  // T 0 means 1
                                         SoftmaxCase{0.3f, 3, 2, 10, 0.0},
                                         SoftmaxCase{3.0f, 2, 1, 9, 0.0},
                                         SoftmaxCase{1.0f, 3, 0, 8, 1000.0},
                                         SoftmaxCase{0.01f, 2, 0, 8, 0.0})),
    [](const ::testing::TestParamInfo<std::tuple<Metric, SoftmaxCase>>& p) {
      return std::string(std::get<0>(p.param) == Metric::kInnerProduct ? "Ip"
                                                                       : "L2") +
             "_case" + std::to_string(p.index % 6);
    });

// Low temperature: the best ranks of the window, nearly always. High
// temperature: close to uniform.
TEST_P(MinerMetricTest, SoftmaxTemperatureExtremes) {
  const Metric metric = GetParam();
  const DesignedStore d =
      MakeDesignedStore(metric, SpreadScores(metric, 30, 0));
  ASSERT_NE(d.version, nullptr);
  MiningOptions o = Top(4);
  o.range_min = 3;
  o.range_max = 19;
  o.sampling = Sampling::kSoftmax;
  {
    o.temperature = 0.02f;  // neighbours' weights differ by e^17.5
    const int kCalls = 500;
    const std::vector<int> counts = CountPicks(d, o, kCalls, 16);
    for (size_t i = 0; i < 4; ++i)
      EXPECT_GE(counts[i], 495) << "position " << i;
  }
  {
    o.temperature = 0.001f;  // exp(s / T) overflows unless shifted
    const int kCalls = 200;
    const std::vector<int> counts = CountPicks(d, o, kCalls, 16);
    for (size_t i = 0; i < 4; ++i)
      EXPECT_EQ(counts[i], kCalls) << "position " << i;
  }
  {
    o.temperature = 1000.0f;
    const int kCalls = 2000;
    ExpectFrequencies(CountPicks(d, o, kCalls, 16),
                      std::vector<double>(16, 4.0 / 16), kCalls);
  }
}

// ---------------------------------------------------------------------------
// Validation.

class MinerValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Rng rng(40);
    StoreSpec spec;
    spec.n = 100;
    spec.dim = 8;
    data_ = RandomStore(rng, spec);
    version_ = BuildVersion(data_, Metric::kInnerProduct);
    ASSERT_NE(version_, nullptr);
    queries_ = RandomQueries(rng, data_, Metric::kInnerProduct, false, 0, 4);
  }

  absl::Status MineStatus(const std::vector<OwnedQuery>& queries,
                          const MiningOptions& options,
                          const Miner& miner = Miner()) {
    const std::vector<MiningQuery> views = Views(queries);
    return miner.Mine(*version_, views, options).status();
  }

  void ExpectInvalid(const absl::Status& status,
                     const std::vector<std::string>& substrings) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    for (const std::string& s : substrings) {
      EXPECT_THAT(std::string(status.message()), HasSubstr(s));
    }
  }

  StoreData data_;
  std::shared_ptr<const IndexVersion> version_;
  std::vector<OwnedQuery> queries_;
};

TEST_F(MinerValidationTest, ValidRequestIsAccepted) {
  EXPECT_TRUE(MineStatus(queries_, Top(10)).ok());
  MiningOptions o = Top(10);
  o.range_min = 5;
  o.range_max = 15;  // exactly range_min + num_negatives
  EXPECT_TRUE(MineStatus(queries_, o).ok());
  EXPECT_TRUE(Miner().ValidateOptions(o).ok());
}

TEST_F(MinerValidationTest, NoQueries) {
  ExpectInvalid(MineStatus({}, Top(10)), {"queries"});
}

TEST_F(MinerValidationTest, WrongDimension) {
  for (size_t dim : {size_t{0}, size_t{7}, size_t{9}, size_t{16}}) {
    std::vector<OwnedQuery> queries = queries_;
    queries[2].embedding.assign(dim, 0.5f);
    ExpectInvalid(MineStatus(queries, Top(10)), {"queries[2]", "embedding"});
  }
}

TEST_F(MinerValidationTest, NonFiniteEmbedding) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<OwnedQuery> queries = queries_;
    queries[1].embedding[3] = bad;
    ExpectInvalid(MineStatus(queries, Top(10)), {"queries[1]", "embedding"});
  }
}

TEST_F(MinerValidationTest, NonFinitePositiveScore) {
  std::vector<OwnedQuery> queries = queries_;
  queries[3].positive_scores = {0.5f, std::numeric_limits<float>::quiet_NaN()};
  ExpectInvalid(MineStatus(queries, Top(10)),
                {"queries[3]", "positive_scores"});
}

TEST_F(MinerValidationTest, NumNegatives) {
  ExpectInvalid(MineStatus(queries_, Top(0)), {"num_negatives"});
  MinerLimits limits;
  limits.max_negatives = 100;
  const Miner limited(limits);
  EXPECT_TRUE(MineStatus(queries_, Top(100), limited).ok());
  ExpectInvalid(MineStatus(queries_, Top(101), limited), {"num_negatives"});
}

TEST_F(MinerValidationTest, WindowTooSmall) {
  MiningOptions o = Top(10);
  o.range_min = 5;
  o.range_max = 14;
  ExpectInvalid(MineStatus(queries_, o), {"range_max"});
  o.range_min = 0;
  o.range_max = 9;
  ExpectInvalid(MineStatus(queries_, o), {"range_max"});
  EXPECT_EQ(Miner().ValidateOptions(o).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(MinerValidationTest, RangeOverTheLimit) {
  MinerLimits limits;
  limits.max_range = 1000;
  const Miner limited(limits);
  MiningOptions o = Top(10);
  o.range_max = 1000;
  EXPECT_TRUE(MineStatus(queries_, o, limited).ok());
  o.range_max = 1001;
  EXPECT_EQ(MineStatus(queries_, o, limited).code(),
            absl::StatusCode::kInvalidArgument);
  o.range_max = 0;  // defaults to range_min + num_negatives = 1005
  o.range_min = 995;
  EXPECT_EQ(MineStatus(queries_, o, limited).code(),
            absl::StatusCode::kInvalidArgument);
}

// Request size limits: each one is named when hit, and a request at the
// limit is accepted.
TEST_F(MinerValidationTest, RequestSizeLimits) {
  const size_t n = queries_.size();
  ASSERT_GE(n, 2u);
  MinerLimits limits;
  limits.max_queries = static_cast<uint32_t>(n);
  limits.max_request_negatives = 10 * n;
  limits.max_request_fetch = 20 * n;
  const Miner limited(limits);
  EXPECT_TRUE(MineStatus(queries_, Top(10), limited).ok());
  ExpectInvalid(MineStatus(queries_, Top(11), limited),
                {"max_request_negatives", "num_negatives 11"});
  MiningOptions deep = Top(5);
  deep.range_max = 20;
  EXPECT_TRUE(MineStatus(queries_, deep, limited).ok());
  deep.range_max = 21;
  ExpectInvalid(MineStatus(queries_, deep, limited),
                {"max_request_fetch", "range_max 21"});
  // No query ranks more candidates than the index holds.
  deep.range_max = static_cast<uint32_t>(version_->size() + 1000);
  limits.max_request_fetch = version_->size() * n;
  EXPECT_TRUE(MineStatus(queries_, deep, Miner(limits)).ok());
  limits.max_queries = static_cast<uint32_t>(n - 1);
  ExpectInvalid(MineStatus(queries_, Top(1), Miner(limits)),
                {"max_queries", absl::StrCat(n, " queries")});
}

TEST_F(MinerValidationTest, PositivesOverTheLimit) {
  MinerLimits limits;
  limits.max_positives = 3;
  const Miner limited(limits);
  std::vector<OwnedQuery> queries(queries_.begin(), queries_.begin() + 1);
  queries[0].positive_ids = {1, 2, 3};
  EXPECT_TRUE(MineStatus(queries, Top(1), limited).ok());
  queries[0].positive_ids = {1, 2, 3, 4};
  ExpectInvalid(MineStatus(queries, Top(1), limited),
                {"queries[0].positive_ids", "max_positives"});
}

// A cancelled item stops deepening and is answered CANCELLED; the others
// of its batch are answered as if alone.
TEST_F(MinerValidationTest,
       ACancelledItemIsAnsweredCancelledAndStopsDeepening) {
  const std::vector<MiningQuery> views = Views(queries_);
  const MiningOptions options = Top(10);
  int asked = 0;
  const std::function<bool()> cancelled = [&asked] {
    ++asked;
    return true;
  };
  const std::vector<MiningBatchItem> items = {{views, &options, nullptr},
                                              {views, &options, &cancelled}};
  std::vector<absl::StatusOr<std::vector<MiningResult>>> out =
      Miner().MineBatch(*version_, items);
  ASSERT_EQ(out.size(), 2u);
  absl::StatusOr<std::vector<MiningResult>> alone =
      Miner().Mine(*version_, views, options);
  ASSERT_TRUE(out[0].ok() && alone.ok());
  ASSERT_EQ(out[0]->size(), alone->size());
  for (size_t q = 0; q < alone->size(); ++q) {
    ASSERT_EQ((*out[0])[q].negatives.size(), (*alone)[q].negatives.size());
    for (size_t k = 0; k < (*alone)[q].negatives.size(); ++k) {
      EXPECT_EQ((*out[0])[q].negatives[k].id, (*alone)[q].negatives[k].id);
    }
  }
  EXPECT_EQ(out[1].status().code(), absl::StatusCode::kCancelled);
  EXPECT_GT(asked, 0);
}

TEST_F(MinerValidationTest, NprobeOverTheLimit) {
  MinerLimits limits;
  limits.max_nprobe = 64;
  const Miner limited(limits);
  MiningOptions o = Top(10);
  o.nprobe = 64;  // accepted, and ignored by the exact index
  EXPECT_TRUE(MineStatus(queries_, o, limited).ok());
  o.nprobe = 65;
  ExpectInvalid(MineStatus(queries_, o, limited), {"nprobe", "64"});
}

TEST_F(MinerValidationTest, Temperature) {
  for (Sampling sampling :
       {Sampling::kSoftmax, Sampling::kUniform, Sampling::kTop}) {
    for (float bad : {-0.5f, -std::numeric_limits<float>::min(),
                      std::numeric_limits<float>::quiet_NaN(),
                      std::numeric_limits<float>::infinity()}) {
      MiningOptions o = Top(10);
      o.sampling = sampling;
      o.temperature = bad;
      ExpectInvalid(MineStatus(queries_, o), {"temperature"});
      EXPECT_EQ(Miner().ValidateOptions(o).code(),
                absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST_F(MinerValidationTest, NonFiniteBoundsAndMargins) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float bad : {nan, inf, -inf}) {
    SCOPED_TRACE("value " + std::to_string(bad));
    MiningOptions o = Top(10);
    o.max_score = bad;
    ExpectInvalid(MineStatus(queries_, o), {"max_score"});
    o = Top(10);
    o.min_score = bad;
    ExpectInvalid(MineStatus(queries_, o), {"min_score"});
    o = Top(10);
    o.absolute_margin = bad;
    ExpectInvalid(MineStatus(queries_, o), {"absolute_margin"});
    o = Top(10);
    o.relative_margin = bad;
    ExpectInvalid(MineStatus(queries_, o), {"relative_margin"});
  }
}

// One bad query fails the call, and the message names that query.
TEST_F(MinerValidationTest, NamesTheBadQueryInALargeBatch) {
  std::vector<OwnedQuery> queries;
  for (int i = 0; i < 300; ++i) queries.push_back(queries_[i % 4]);
  queries[217].embedding.pop_back();
  ExpectInvalid(MineStatus(queries, Top(10)), {"queries[217]", "embedding"});
}

// An empty store: nothing to return, everything is shortfall.
TEST(MinerTest, EmptyStore) {
  StoreData data;
  data.dim = 4;
  std::shared_ptr<const IndexVersion> version =
      BuildVersion(data, Metric::kInnerProduct);
  ASSERT_NE(version, nullptr);
  OwnedQuery q;
  q.embedding = {1, 0, 0, 0};
  q.positive_ids = {5};
  OwnedQuery with_score = q;
  with_score.positive_scores = {0.5f};
  MineAndCheck(*version, {q, with_score}, Top(3));
}

// A non-exact index: whatever it finds, every negative is a real survivor
// with its exact score, ranks ascend, and nothing excluded leaks in.
TEST(MinerTest, ApproximateIndexReturnsOnlyValidNegatives) {
  Rng rng(50);
  StoreSpec spec;
  spec.n = 4000;
  spec.num_labels = 3;
  const StoreData data = RandomStore(rng, spec);
  for (Metric metric : {Metric::kInnerProduct, Metric::kL2}) {
    std::shared_ptr<const IndexVersion> version =
        BuildVersion(data, metric, "IVF64,Flat");
    ASSERT_NE(version, nullptr);
    EXPECT_FALSE(version->index().exact());
    const std::vector<OwnedQuery> queries =
        RandomQueries(rng, data, metric, false, 3, 100);
    const std::vector<MiningQuery> views = Views(queries);
    MiningOptions o = Top(10);
    o.absolute_margin = 0.0f;
    absl::StatusOr<std::vector<MiningResult>> got =
        Miner().Mine(*version, views, o);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), views.size());
    for (size_t i = 0; i < views.size(); ++i) {
      SCOPED_TRACE("queries[" + std::to_string(i) + "]");
      MiningOptions everything = o;
      everything.num_negatives = static_cast<uint32_t>(data.size());
      const ReferenceResult want =
          ReferenceMine(version->store(), metric, views[i], everything);
      std::map<int64_t, ReferenceNegative> survivors;
      for (const ReferenceNegative& n : want.survivors) survivors[n.id] = n;
      const MiningResult& r = (*got)[i];
      EXPECT_EQ(r.negatives.size() + r.shortfall, 10u);
      ASSERT_EQ(r.positive_score.has_value(), want.positive_score.has_value());
      if (want.positive_score.has_value()) {
        EXPECT_TRUE(ScoresEqual(*r.positive_score, *want.positive_score));
      }
      for (size_t j = 0; j < r.negatives.size(); ++j) {
        const MinedNegative& n = r.negatives[j];
        auto it = survivors.find(n.id);
        ASSERT_NE(it, survivors.end()) << Describe(n) << " is not a survivor";
        EXPECT_TRUE(ScoresEqual(n.score, it->second.score))
            << Describe(n) << " vs " << Describe(it->second);
        EXPECT_EQ(n.label, it->second.label);
        EXPECT_EQ(n.row, it->second.row);
        if (j > 0) {
          EXPECT_GT(n.rank, r.negatives[j - 1].rank);
          EXPECT_FALSE(reference::RanksBefore(metric, n.score, n.id,
                                              r.negatives[j - 1].score,
                                              r.negatives[j - 1].id));
        }
      }
    }
  }
}

// IVF fetches the window plus two: when more of those fall past a near
// filter's limit by the exact score, another round fills the window.
// Twelve rows score one float step above the limit of a relative margin,
// which IVF's float32 screen lets through (it rounds the limit up) and
// the miner's exact check refuses; they are the twelve best after the
// positive, so the first round's fetch holds nothing else.
TEST(MinerTest, IvfRefillsTheWindowWhenTheNearFilterRefusesFetchedRows) {
  Rng rng(52);
  StoreData data;
  data.dim = 4;
  data.labels.emplace();
  auto add = [&](const std::vector<float>& row) {
    data.ids.push_back(static_cast<int64_t>(data.ids.size()) * 7 + 3);
    data.vectors.insert(data.vectors.end(), row.begin(), row.end());
    data.labels->push_back(static_cast<int64_t>(data.ids.size() % 3));
  };
  add({1, 0, 0, 0});  // the positive
  // p = 1; the limit is 1 - 0.1f (in double), between two floats.
  const float margin = 0.1f;
  const double limit = 1.0 - static_cast<double>(margin);
  float above = static_cast<float>(limit);
  while (static_cast<double>(above) <= limit) {
    above = std::nextafter(above, 2.0f);
  }
  const size_t first_refused = data.ids.size();
  for (int i = 0; i < 12; ++i) {
    const float side = std::sqrt(1.0f - above * above);
    add({above, i % 2 == 0 ? side : 0.0f, i % 2 == 0 ? 0.0f : side, 0});
  }
  while (data.ids.size() < 600) {
    const std::vector<float> row = GaussianVector(rng, data.dim, true);
    if (row[0] < 0.8f) add(row);
  }
  std::shared_ptr<const IndexVersion> version =
      BuildVersion(data, Metric::kInnerProduct, "IVF4,Flat");
  ASSERT_NE(version, nullptr);
  ASSERT_FALSE(version->index().exact());
  ASSERT_TRUE(version->index().skips());
  OwnedQuery q;
  q.embedding = {1, 0, 0, 0};
  q.positive_ids = {data.ids[0]};
  const std::vector<OwnedQuery> queries = {q};
  const std::vector<MiningQuery> views = Views(queries);
  MiningOptions o = Top(10);
  o.relative_margin = margin;
  o.nprobe = 4;  // every list: the answer is the exact one
  absl::StatusOr<std::vector<MiningResult>> got =
      Miner().Mine(*version, views, o);
  ASSERT_TRUE(got.ok()) << got.status();
  const ReferenceResult want =
      ReferenceMine(version->store(), Metric::kInnerProduct, views[0], o);
  ASSERT_EQ(want.top.size(), 10u);
  const MiningResult& r = (*got)[0];
  EXPECT_EQ(r.shortfall, 0u);
  ASSERT_EQ(r.negatives.size(), 10u);
  for (size_t j = 0; j < 10; ++j) {
    EXPECT_EQ(r.negatives[j].id, want.top[j].id) << "negatives[" << j << "]";
    EXPECT_FALSE(r.negatives[j].row >= first_refused &&
                 r.negatives[j].row < first_refused + 12)
        << "row " << r.negatives[j].row << " scores past the limit";
  }
}

// Per-request nprobe on one IVF version: probing every list gives the
// exact answer, and requests with different nprobe in one batch each get
// what they get alone.
TEST(MinerTest, PerRequestNprobeOnOneIvfVersion) {
  Rng rng(51);
  StoreSpec spec;
  spec.n = 3000;
  spec.num_labels = 3;
  const StoreData data = RandomStore(rng, spec);
  const Metric metric = Metric::kInnerProduct;
  std::shared_ptr<const IndexVersion> version =
      BuildVersion(data, metric, "IVF64,Flat");
  ASSERT_NE(version, nullptr);
  const std::vector<OwnedQuery> queries =
      RandomQueries(rng, data, metric, false, 3, 30);
  const std::vector<MiningQuery> views = Views(queries);
  MiningOptions all = Top(10);
  all.nprobe = 64;
  MiningOptions one = Top(10);
  one.nprobe = 1;
  auto ids = [](const MiningResult& r) {
    std::vector<int64_t> out;
    for (const MinedNegative& n : r.negatives) out.push_back(n.id);
    return out;
  };
  absl::StatusOr<std::vector<MiningResult>> got_all =
      Miner().Mine(*version, views, all);
  absl::StatusOr<std::vector<MiningResult>> got_one =
      Miner().Mine(*version, views, one);
  ASSERT_TRUE(got_all.ok()) << got_all.status();
  ASSERT_TRUE(got_one.ok()) << got_one.status();
  size_t differ = 0;
  for (size_t i = 0; i < views.size(); ++i) {
    const ReferenceResult want =
        ReferenceMine(version->store(), metric, views[i], all);
    std::vector<int64_t> want_ids;
    for (const ReferenceNegative& n : want.top) want_ids.push_back(n.id);
    EXPECT_EQ(ids((*got_all)[i]), want_ids) << "queries[" << i << "]";
    if (ids((*got_one)[i]) != want_ids) ++differ;
  }
  EXPECT_GT(differ, 0u) << "nprobe=1 found the exact answer for every query";
  const MiningBatchItem items[] = {{views, &one}, {views, &all}};
  std::vector<absl::StatusOr<std::vector<MiningResult>>> batch =
      Miner().MineBatch(*version, items);
  ASSERT_EQ(batch.size(), 2u);
  ASSERT_TRUE(batch[0].ok() && batch[1].ok());
  for (size_t i = 0; i < views.size(); ++i) {
    EXPECT_EQ(ids((*batch[0])[i]), ids((*got_one)[i]))
        << "queries[" << i << "]";
    EXPECT_EQ(ids((*batch[1])[i]), ids((*got_all)[i]))
        << "queries[" << i << "]";
  }
}

}  // namespace
}  // namespace hardneg

namespace hardneg {
namespace {

// Requests with different options mined as one batch answer exactly as
// each does alone, and an invalid request fails alone.
TEST(MinerBatchTest, BatchedAnswersEqualUnbatchedOnes) {
  for (Metric metric : {Metric::kInnerProduct, Metric::kL2}) {
    SCOPED_TRACE(MetricName(metric));
    Rng rng(2024);
    StoreSpec spec;
    spec.n = 3000;
    spec.dim = 24;
    spec.num_labels = 5;
    StoreData data = RandomStore(rng, spec);
    std::shared_ptr<const IndexVersion> version = BuildVersion(data, metric);
    ASSERT_NE(version, nullptr);

    constexpr size_t kItems = 7;
    std::vector<std::vector<std::vector<float>>> embeddings(kItems);
    std::vector<std::vector<int64_t>> positives(kItems);
    std::vector<std::vector<MiningQuery>> queries(kItems);
    std::vector<MiningOptions> options(kItems);
    for (size_t i = 0; i < kItems; ++i) {
      const size_t nq = 1 + i % 4;
      const bool invalid = i == 3;
      for (size_t q = 0; q < nq; ++q) {
        embeddings[i].push_back(GaussianVector(
            rng, invalid && q == 1 ? spec.dim + 1 : spec.dim, false));
      }
      positives[i] = {data.ids[i * 11], data.ids[i * 13 + 1]};
      for (size_t q = 0; q < nq; ++q) {
        MiningQuery query;
        query.embedding = embeddings[i][q];
        query.positive_ids = positives[i];
        if (q % 2 == 0) query.label = static_cast<int64_t>(q % 5);
        queries[i].push_back(query);
      }
      MiningOptions& o = options[i];
      o.num_negatives = 3 + static_cast<uint32_t>(i);
      o.range_min = static_cast<uint32_t>(i % 3) * 4;
      o.range_max = i % 2 == 0 ? 0 : o.range_min + o.num_negatives + 20;
      o.sampling = static_cast<Sampling>(i % 3);
      o.temperature = i % 3 == 2 ? 0.05f : 0.0f;
      o.seed = 100 + i;
      if (i == 5) o.max_score = metric == Metric::kL2 ? 50.0f : 0.2f;
      if (i == 6) o.relative_margin = 0.1f;
    }
    std::vector<MiningBatchItem> items;
    for (size_t i = 0; i < kItems; ++i) {
      items.push_back({queries[i], &options[i]});
    }
    const Miner miner;
    auto batched = miner.MineBatch(*version, items);
    ASSERT_EQ(batched.size(), kItems);
    for (size_t i = 0; i < kItems; ++i) {
      SCOPED_TRACE(i);
      auto alone = miner.Mine(*version, queries[i], options[i]);
      ASSERT_EQ(batched[i].ok(), alone.ok());
      if (!alone.ok()) {
        EXPECT_EQ(i, 3u);
        EXPECT_EQ(batched[i].status(), alone.status());
        EXPECT_THAT(std::string(alone.status().message()),
                    HasSubstr("queries[1].embedding"));
        continue;
      }
      ASSERT_EQ(batched[i]->size(), alone->size());
      for (size_t q = 0; q < alone->size(); ++q) {
        const MiningResult& a = (*alone)[q];
        const MiningResult& b = (*batched[i])[q];
        EXPECT_EQ(a.shortfall, b.shortfall);
        EXPECT_EQ(a.positive_score, b.positive_score);
        ASSERT_EQ(a.negatives.size(), b.negatives.size());
        for (size_t j = 0; j < a.negatives.size(); ++j) {
          EXPECT_EQ(a.negatives[j].id, b.negatives[j].id);
          EXPECT_EQ(a.negatives[j].rank, b.negatives[j].rank);
          EXPECT_EQ(a.negatives[j].score, b.negatives[j].score);
        }
      }
    }
  }
}

}  // namespace
}  // namespace hardneg

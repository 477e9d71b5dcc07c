// The shard merge (mining/shard_merge.h) against one Miner over the whole
// corpus: random stores (labels, exact duplicate vectors, both metrics,
// 0 to 3000 rows) split by ShardOf into 1, 2, 3 and 5 Flat versions, and
// hundreds of random requests across every option. The merged answer must
// EQUAL the single miner's: ids, ranks, labels, shortfall, bit-identical
// scores and positive_score. A deliberately wrong merge (each shard with
// only its own p) must differ somewhere, and the random set must hold the
// hard cases (margins with positives on other shards, deep windows,
// shortfall, real sampling): each is counted and asserted present.
#include "mining/shard_merge.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "corpus/shard.h"
#include "mining/miner.h"
#include "mining/options.h"
#include "random_corpus.h"
#include "versions/index_version.h"

namespace hardneg {
namespace {

using testing_corpus::AbsentId;
using testing_corpus::BuildVersion;
using testing_corpus::GaussianVector;
using testing_corpus::OwnedQuery;
using testing_corpus::RandomStore;
using testing_corpus::Rng;
using testing_corpus::ShardData;
using testing_corpus::StoreData;
using testing_corpus::StoreSpec;

// Random directions, perturbed rows, exact rows (often with their
// query_id); stored positives (the query's own row, random rows, absent
// ids), client positive_scores, labels.
OwnedQuery RandomQuery(Rng& rng, const StoreData& data, Metric metric,
                       int64_t num_labels) {
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  OwnedQuery q;
  const size_t n = data.size();
  const size_t row =
      n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng);
  auto any_row = [&] {
    return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
  };
  const double kind = coin(rng);
  if (n == 0 || kind < 0.3) {
    q.embedding = GaussianVector(rng, data.dim, false);
  } else {
    q.embedding = data.Row(row);
    if (kind < 0.7) {
      for (float& x : q.embedding) x += noise(rng);
    } else if (coin(rng) < 0.7) {
      q.query_id = data.ids[row];
    }
  }
  if (n > 0) {
    if (coin(rng) < 0.4) q.positive_ids.push_back(data.ids[row]);
    const int extra = std::uniform_int_distribution<int>(0, 3)(rng);
    for (int i = 0; i < extra; ++i)
      q.positive_ids.push_back(data.ids[any_row()]);
  }
  if (coin(rng) < 0.2) q.positive_ids.push_back(AbsentId(0));
  if (coin(rng) < 0.3) {
    std::vector<float> other = GaussianVector(rng, data.dim, false);
    q.positive_scores.push_back(
        ExactScore(metric, q.embedding.data(), other.data(), data.dim) +
        noise(rng));
  }
  if (num_labels > 0 && coin(rng) < 0.5) {
    q.label = std::uniform_int_distribution<int64_t>(0, num_labels - 1)(rng);
  } else if (coin(rng) < 0.15) {
    q.label = 0;
  }
  if (coin(rng) < 0.1) q.query_id = AbsentId(1);
  return q;
}

// A score near those the query sees: the query against a random row (or a
// random vector), jittered. Bounds drawn from it cut somewhere useful.
float NearbyScore(Rng& rng, const StoreData& data, Metric metric,
                  const OwnedQuery& q) {
  std::vector<float> other =
      data.size() == 0 || std::bernoulli_distribution(0.3)(rng)
          ? GaussianVector(rng, data.dim, false)
          : data.Row(
                std::uniform_int_distribution<size_t>(0, data.size() - 1)(rng));
  std::normal_distribution<float> noise(0.0f, 0.05f);
  return ExactScore(metric, q.embedding.data(), other.data(), data.dim) +
         noise(rng);
}

MiningOptions RandomOptions(Rng& rng, const StoreData& data, Metric metric,
                            const OwnedQuery& first) {
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  MiningOptions o;
  o.num_negatives = std::uniform_int_distribution<uint32_t>(1, 40)(rng);
  if (coin(rng) < 0.2) o.num_negatives = 300;  // more than survive
  const auto n = static_cast<uint32_t>(data.size());
  if (coin(rng) < 0.35) {  // deep into the ranking, even past its end
    o.range_min = std::uniform_int_distribution<uint32_t>(0, n + 20)(rng);
  }
  if (coin(rng) < 0.5) {
    o.range_max = o.range_min + o.num_negatives +
                  std::uniform_int_distribution<uint32_t>(0, 400)(rng);
  }
  if (coin(rng) < 0.25) o.max_score = NearbyScore(rng, data, metric, first);
  if (coin(rng) < 0.25) o.min_score = NearbyScore(rng, data, metric, first);
  if (coin(rng) < 0.45) {
    o.absolute_margin =
        coin(rng) < 0.2 ? 0.0f : static_cast<float>(coin(rng) * 0.3 - 0.05);
  }
  if (coin(rng) < 0.35) {
    o.relative_margin = static_cast<float>(coin(rng) * 0.5);
  }
  const double sampling = coin(rng);
  o.sampling = sampling < 0.4   ? Sampling::kTop
               : sampling < 0.7 ? Sampling::kUniform
                                : Sampling::kSoftmax;
  const float temperatures[] = {0.0f, 0.05f, 0.5f, 2.0f};
  o.temperature = temperatures[std::uniform_int_distribution<int>(0, 3)(rng)];
  o.seed = rng();
  return o;
}

// What one sharded request exercised, for the counts.
struct Exercised {
  bool remote_positive_margin = false;  // a shard lacked the global p
};

// The router's path over `shards`: the global stored p when needed (unless
// `local_p_only`, the deliberately wrong variant), every shard mined under
// ShardOptions, and each query's answers merged.
std::vector<MiningResult> MineSharded(
    const std::vector<std::shared_ptr<const IndexVersion>>& shards,
    Metric metric, const std::vector<OwnedQuery>& queries,
    const MiningOptions& options, bool local_p_only, Exercised& exercised) {
  std::vector<std::vector<float>> positive_scores;
  std::vector<MiningQuery> shard_queries;
  positive_scores.reserve(queries.size());
  for (const OwnedQuery& owned : queries) {
    const MiningQuery query = owned.View();
    std::optional<float> global;
    if (!local_p_only && NeedsGlobalWeakestPositive(options, query)) {
      std::vector<std::optional<float>> local;
      for (const auto& shard : shards) {
        local.push_back(WeakestStoredPositive(*shard, query));
      }
      global = WeakestScore(metric, local);
      for (const std::optional<float>& p : local) {
        if (global.has_value() && p != global) {
          exercised.remote_positive_margin = true;
        }
      }
    }
    positive_scores.push_back(WithGlobalPositive(query, global));
    shard_queries.push_back(query);
    shard_queries.back().positive_scores = positive_scores.back();
  }
  const Miner miner;
  std::vector<std::vector<MiningResult>> per_shard;
  for (const auto& shard : shards) {
    absl::StatusOr<std::vector<MiningResult>> got =
        miner.Mine(*shard, shard_queries, ShardOptions(options));
    if (!got.ok()) {
      ADD_FAILURE() << "shard Mine: " << got.status();
      return {};
    }
    per_shard.push_back(*std::move(got));
  }
  std::vector<MiningResult> merged;
  for (size_t i = 0; i < queries.size(); ++i) {
    std::vector<MiningResult> answers;
    for (const auto& shard_results : per_shard) {
      answers.push_back(shard_results[i]);
    }
    merged.push_back(MergeShardResults(metric, options, i, answers));
  }
  return merged;
}

std::string Describe(const MinedNegative& n) {
  std::ostringstream s;
  s.precision(9);
  s << "{id=" << n.id << " score=" << n.score << " label=" << n.label
    << " rank=" << n.rank << "}";
  return s.str();
}

// Exact equality of everything but `row` (a shard's own row).
::testing::AssertionResult SameResult(const MiningResult& got,
                                      const MiningResult& want) {
  if (got.shortfall != want.shortfall) {
    return ::testing::AssertionFailure()
           << "shortfall " << got.shortfall << ", want " << want.shortfall;
  }
  if (got.positive_score != want.positive_score) {
    return ::testing::AssertionFailure()
           << "positive_score " << got.positive_score.value_or(NAN) << ", want "
           << want.positive_score.value_or(NAN);
  }
  if (got.negatives.size() != want.negatives.size()) {
    return ::testing::AssertionFailure()
           << got.negatives.size() << " negatives, want "
           << want.negatives.size();
  }
  for (size_t j = 0; j < got.negatives.size(); ++j) {
    const MinedNegative& a = got.negatives[j];
    const MinedNegative& b = want.negatives[j];
    if (a.id != b.id || a.rank != b.rank || a.label != b.label ||
        a.score != b.score) {
      return ::testing::AssertionFailure()
             << "negatives[" << j << "] " << Describe(a) << ", want "
             << Describe(b);
    }
  }
  return ::testing::AssertionSuccess();
}

struct Counts {
  int requests = 0;
  int queries = 0;
  int remote_positive_margins = 0;
  int deep_windows = 0;
  int shortfalls = 0;
  int sampled = 0;  // UNIFORM or SOFTMAX choosing among a larger window
  int with_labels = 0;
  int full = 0;  // num_negatives returned, no shortfall
  int ties = 0;  // equal scores returned side by side (ordered by id)
  int wrong_variant_differs = 0;
};

void CountQueries(const MiningOptions& o, const std::vector<OwnedQuery>& qs,
                  const std::vector<MiningResult>& want, Counts& counts) {
  counts.queries += static_cast<int>(want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (o.range_min >= 50 && !want[i].negatives.empty()) ++counts.deep_windows;
    if (want[i].shortfall > 0) ++counts.shortfalls;
    if (qs[i].label.has_value()) ++counts.with_labels;
    if (want[i].shortfall == 0) ++counts.full;
    for (size_t j = 1; j < want[i].negatives.size(); ++j) {
      if (want[i].negatives[j].score == want[i].negatives[j - 1].score) {
        ++counts.ties;
        break;
      }
    }
    const uint64_t window = RangeMax(o) - o.range_min;
    if (o.sampling != Sampling::kTop && want[i].shortfall == 0 &&
        window > o.num_negatives) {
      ++counts.sampled;
    }
  }
}

struct Corpus {
  size_t n;
  size_t num_base;
  int64_t num_labels;
};

// One corpus and metric: its shard splits, and `requests` random requests
// each compared at every split.
void CheckCorpus(Rng& rng, const Corpus& corpus, Metric metric, int requests,
                 Counts& counts) {
  const StoreData data = RandomStore(
      rng, StoreSpec{corpus.n, 8, false, corpus.num_base, corpus.num_labels});
  const std::shared_ptr<const IndexVersion> whole = BuildVersion(data, metric);
  ASSERT_NE(whole, nullptr);
  std::vector<std::vector<std::shared_ptr<const IndexVersion>>> splits;
  for (uint32_t num_shards : {1u, 2u, 3u, 5u}) {
    splits.emplace_back();
    for (uint32_t s = 0; s < num_shards; ++s) {
      splits.back().push_back(
          BuildVersion(ShardData(data, s, num_shards), metric));
      ASSERT_NE(splits.back().back(), nullptr);
    }
  }
  const Miner miner;
  int failures = 0;
  for (int r = 0; r < requests; ++r) {
    std::vector<OwnedQuery> queries;
    const int count = std::uniform_int_distribution<int>(1, 4)(rng);
    for (int i = 0; i < count; ++i) {
      queries.push_back(RandomQuery(rng, data, metric, corpus.num_labels));
    }
    const MiningOptions options = RandomOptions(rng, data, metric, queries[0]);
    std::vector<MiningQuery> views;
    for (const OwnedQuery& q : queries) views.push_back(q.View());
    absl::StatusOr<std::vector<MiningResult>> want =
        miner.Mine(*whole, views, options);
    ASSERT_TRUE(want.ok()) << want.status();
    for (const auto& shards : splits) {
      Exercised exercised;
      const std::vector<MiningResult> got =
          MineSharded(shards, metric, queries, options, false, exercised);
      ASSERT_EQ(got.size(), want->size());
      ++counts.requests;
      CountQueries(options, queries, *want, counts);
      if (exercised.remote_positive_margin) ++counts.remote_positive_margins;
      for (size_t i = 0; i < got.size(); ++i) {
        ::testing::AssertionResult same = SameResult(got[i], (*want)[i]);
        if (!same && ++failures <= 5) {
          ADD_FAILURE() << MetricName(metric) << " n=" << corpus.n << " "
                        << shards.size() << " shards, request " << r
                        << " query " << i << ": " << same.message();
        }
      }
      Exercised ignored;
      const std::vector<MiningResult> wrong =
          MineSharded(shards, metric, queries, options, true, ignored);
      for (size_t i = 0; i < wrong.size(); ++i) {
        if (!SameResult(wrong[i], (*want)[i])) ++counts.wrong_variant_differs;
      }
    }
  }
}

TEST(ShardMergeTest, MergedAnswersEqualOneMiner) {
  Rng rng(20240610);
  const Corpus corpora[] = {
      {0, 0, 0},   {1, 0, 3},     {7, 0, 0},    {60, 10, 4},
      {400, 0, 0}, {800, 100, 5}, {1500, 0, 7}, {3000, 400, 6},
  };
  Counts counts;
  for (const Corpus& corpus : corpora) {
    for (Metric metric : {Metric::kInnerProduct, Metric::kL2}) {
      CheckCorpus(rng, corpus, metric, corpus.n < 10 ? 10 : 40, counts);
      if (HasFatalFailure()) return;
    }
  }
  std::printf(
      "compared %d sharded requests (%d queries): %d with margins and "
      "positives on other shards, %d deep windows, %d shortfalls, %d "
      "sampled, %d with labels, %d full, %d with ties; the local-p-only "
      "merge differed on %d\n",
      counts.requests, counts.queries, counts.remote_positive_margins,
      counts.deep_windows, counts.shortfalls, counts.sampled,
      counts.with_labels, counts.full, counts.ties,
      counts.wrong_variant_differs);
  EXPECT_GE(counts.requests, 500);
  EXPECT_GT(counts.remote_positive_margins, 20);
  EXPECT_GT(counts.deep_windows, 20);
  EXPECT_GT(counts.shortfalls, 20);
  EXPECT_GT(counts.sampled, 20);
  EXPECT_GT(counts.with_labels, 20);
  EXPECT_GT(counts.full, 200);
  EXPECT_GT(counts.ties, 20);
  EXPECT_GT(counts.wrong_variant_differs, 0);
}

TEST(ShardMergeTest, ShardOptionsAskForTheTopOfTheWholeWindow) {
  MiningOptions o;
  o.num_negatives = 5;
  o.range_min = 20;
  o.max_score = 0.5f;
  o.absolute_margin = 0.1f;
  o.sampling = Sampling::kSoftmax;
  o.seed = 9;
  o.nprobe = 3;
  const MiningOptions s = ShardOptions(o);
  EXPECT_EQ(s.range_min, 0u);
  EXPECT_EQ(s.range_max, 25u);
  EXPECT_EQ(s.num_negatives, 25u);
  EXPECT_EQ(s.sampling, Sampling::kTop);
  EXPECT_EQ(s.max_score, o.max_score);
  EXPECT_EQ(s.absolute_margin, o.absolute_margin);
  EXPECT_EQ(s.seed, o.seed);
  EXPECT_EQ(s.nprobe, o.nprobe);
}

TEST(ShardMergeTest, GlobalWeakestPositiveOnlyWithMarginAndPositiveIds) {
  const int64_t ids[] = {1};
  MiningQuery with_ids;
  with_ids.positive_ids = ids;
  MiningOptions o;
  EXPECT_FALSE(NeedsGlobalWeakestPositive(o, with_ids));
  o.relative_margin = 0.0f;
  EXPECT_TRUE(NeedsGlobalWeakestPositive(o, with_ids));
  EXPECT_FALSE(NeedsGlobalWeakestPositive(o, MiningQuery()));
  const std::optional<float> scores[] = {std::nullopt, 0.5f, 0.2f, 0.7f};
  EXPECT_EQ(WeakestScore(Metric::kInnerProduct, scores), 0.2f);
  EXPECT_EQ(WeakestScore(Metric::kL2, scores), 0.7f);
  EXPECT_EQ(WeakestScore(Metric::kL2, {}), std::nullopt);
}

}  // namespace
}  // namespace hardneg

// Random candidate stores and queries for tests of the miner and of what
// is built on it (the shard merge): the columns a test keeps after the
// store is handed to an IndexVersion, an exact (Flat) version over them,
// and queries that own their storage. Fixed seeds are the caller's.
//
// Plain values and free functions; no shared state.
#ifndef HARDNEG_TESTS_RANDOM_CORPUS_H_
#define HARDNEG_TESTS_RANDOM_CORPUS_H_

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "corpus/shard.h"
#include "mining/miner.h"
#include "versions/index_version.h"

namespace hardneg::testing_corpus {

using Rng = std::mt19937_64;

// The columns of a candidate store, kept by the test after the store (which
// is move-only) is handed to the IndexVersion.
struct StoreData {
  size_t dim = 0;
  std::vector<int64_t> ids;
  std::vector<float> vectors;
  std::optional<std::vector<int64_t>> labels;

  size_t size() const { return ids.size(); }
  const float* vector(size_t row) const { return vectors.data() + row * dim; }
  // A copy of one row. (Copying through vector() makes g++ 12 at -O3 warn
  // that the pointer may be null, under -Werror=nonnull.)
  std::vector<float> Row(size_t row) const {
    const auto first = vectors.begin() + static_cast<std::ptrdiff_t>(row * dim);
    return std::vector<float>(first, first + static_cast<std::ptrdiff_t>(dim));
  }
};

inline std::shared_ptr<const IndexVersion> BuildVersion(
    const StoreData& data, Metric metric, const std::string& factory = "Flat") {
  absl::StatusOr<CandidateStore> store =
      CandidateStore::Create(data.dim, data.ids, data.vectors, data.labels);
  if (!store.ok()) {
    ADD_FAILURE() << "CandidateStore::Create: " << store.status();
    return nullptr;
  }
  VersionInfo info;
  info.name = "miner-test";
  info.step = 1;
  info.sequence = 1;
  info.metric = metric;
  IndexBuildOptions options;
  options.factory = factory;
  absl::StatusOr<std::shared_ptr<const IndexVersion>> version =
      IndexVersion::Build(std::move(info), std::move(*store), options);
  if (!version.ok()) {
    ADD_FAILURE() << "IndexVersion::Build: " << version.status();
    return nullptr;
  }
  return *std::move(version);
}

// `n` distinct ids, random and unordered (so row order, id order and score
// order all differ), some negative.
inline std::vector<int64_t> RandomIds(Rng& rng, size_t n) {
  std::uniform_int_distribution<int64_t> dist(-1000000000000LL,
                                              1000000000000LL);
  std::set<int64_t> seen;
  std::vector<int64_t> ids;
  while (ids.size() < n) {
    const int64_t id = dist(rng);
    if (seen.insert(id).second) ids.push_back(id);
  }
  return ids;
}

// An id that no store built here holds (RandomIds stays within +-1e12).
inline int64_t AbsentId(size_t i) {
  return 4000000000000LL + static_cast<int64_t>(i);
}

inline void Normalize(float* v, size_t dim) {
  double sq = 0;
  for (size_t i = 0; i < dim; ++i) sq += static_cast<double>(v[i]) * v[i];
  const double norm = std::sqrt(sq);
  if (norm == 0) return;
  for (size_t i = 0; i < dim; ++i) v[i] = static_cast<float>(v[i] / norm);
}

inline std::vector<float> GaussianVector(Rng& rng, size_t dim, bool normalize) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  for (float& x : v) x = normal(rng) * scale;
  if (normalize) Normalize(v.data(), dim);
  return v;
}

struct StoreSpec {
  size_t n = 2000;
  size_t dim = 16;
  bool normalize = false;  // unit vectors (cosine)
  size_t num_base = 0;     // > 0: rows are copies of this many base vectors
  int64_t num_labels = 0;  // 0: a store without labels
};

inline StoreData RandomStore(Rng& rng, const StoreSpec& spec) {
  StoreData data;
  data.dim = spec.dim;
  data.ids = RandomIds(rng, spec.n);
  std::vector<std::vector<float>> base;
  for (size_t b = 0; b < spec.num_base; ++b) {
    base.push_back(GaussianVector(rng, spec.dim, spec.normalize));
  }
  std::uniform_int_distribution<size_t> pick_base(
      0, spec.num_base == 0 ? 0 : spec.num_base - 1);
  for (size_t row = 0; row < spec.n; ++row) {
    std::vector<float> v = spec.num_base == 0
                               ? GaussianVector(rng, spec.dim, spec.normalize)
                               : base[pick_base(rng)];
    data.vectors.insert(data.vectors.end(), v.begin(), v.end());
  }
  if (spec.num_labels > 0) {
    std::uniform_int_distribution<int64_t> label(0, spec.num_labels - 1);
    data.labels.emplace();
    for (size_t row = 0; row < spec.n; ++row)
      data.labels->push_back(label(rng));
  }
  return data;
}

// The rows of `data` that ShardOf gives to `shard` of `num_shards`, in
// their order.
inline StoreData ShardData(const StoreData& data, uint32_t shard,
                           uint32_t num_shards) {
  StoreData out;
  out.dim = data.dim;
  if (data.labels.has_value()) out.labels.emplace();
  for (size_t row = 0; row < data.size(); ++row) {
    if (ShardOf(data.ids[row], num_shards) != shard) continue;
    out.ids.push_back(data.ids[row]);
    const std::vector<float> v = data.Row(row);
    out.vectors.insert(out.vectors.end(), v.begin(), v.end());
    if (data.labels.has_value()) out.labels->push_back((*data.labels)[row]);
  }
  return out;
}

// One query with its own storage; View() is valid while it lives.
struct OwnedQuery {
  std::vector<float> embedding;
  std::vector<int64_t> positive_ids;
  std::vector<float> positive_scores;
  std::optional<int64_t> label;
  std::optional<int64_t> query_id;

  MiningQuery View() const {
    MiningQuery q;
    q.embedding = embedding;
    q.positive_ids = positive_ids;
    q.positive_scores = positive_scores;
    q.label = label;
    q.query_id = query_id;
    return q;
  }
};

}  // namespace hardneg::testing_corpus

#endif  // HARDNEG_TESTS_RANDOM_CORPUS_H_

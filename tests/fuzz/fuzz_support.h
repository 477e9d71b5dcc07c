// What the libFuzzer targets in tests/fuzz share: small fixed versions to
// mine against (built once per process), the mining contract checked on
// every answer, and a scratch directory for readers that take a path.
//
// A violated check prints what broke and aborts, which libFuzzer records
// as a crash with the input that caused it. Single-threaded, like libFuzzer.
#ifndef HARDNEG_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define HARDNEG_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <stdlib.h>  // mkdtemp

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "index/vector_index.h"
#include "mining/miner.h"
#include "versions/index_version.h"

namespace hardneg {
namespace fuzz {

inline constexpr size_t kDim = 4;
inline constexpr size_t kRows = 160;  // enough to train IVF4 without warnings
inline constexpr char kVersionName[] = "tiny";

// Small limits keep each input fast; the checks are the same as with the
// server's.
inline MinerLimits FuzzLimits() {
  MinerLimits limits;
  limits.max_negatives = 64;
  limits.max_range = 512;
  limits.max_nprobe = 8;
  return limits;
}

[[noreturn]] inline void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz check failed: %s\n", what.c_str());
  std::abort();
}

// The candidates of every tiny version: ids -300 + 7 * row (some negative),
// labels row % 5, vectors on a fixed seed.
inline CandidateStore TinyStore() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<int64_t> ids(kRows);
  std::vector<int64_t> labels(kRows);
  std::vector<float> vectors(kRows * kDim);
  for (size_t row = 0; row < kRows; ++row) {
    ids[row] = -300 + 7 * static_cast<int64_t>(row);
    labels[row] = static_cast<int64_t>(row % 5);
  }
  for (float& x : vectors) x = normal(rng);
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      kDim, std::move(ids), std::move(vectors), std::move(labels));
  if (!store.ok()) Fail(store.status().ToString());
  return *std::move(store);
}

// The version "tiny" for `metric`, exact (Flat) or approximate (IVF4,Flat).
inline const IndexVersion& TinyVersion(Metric metric, bool ivf) {
  static std::shared_ptr<const IndexVersion>* versions = [] {
    auto* built = new std::shared_ptr<const IndexVersion>[4];
    for (int i = 0; i < 4; ++i) {
      VersionInfo info;
      info.name = kVersionName;
      info.step = 1;
      info.sequence = 1;
      info.metric = (i & 1) != 0 ? Metric::kL2 : Metric::kInnerProduct;
      IndexBuildOptions options;
      options.factory = (i & 2) != 0 ? "IVF4,Flat" : "Flat";
      absl::StatusOr<std::shared_ptr<const IndexVersion>> version =
          IndexVersion::Build(std::move(info), TinyStore(), options);
      if (!version.ok()) Fail(version.status().ToString());
      built[i] = *std::move(version);
    }
    return built;
  }();
  return *versions[(metric == Metric::kL2 ? 1 : 0) + (ivf ? 2 : 0)];
}

// Mine's contract for an OK answer to `queries` (README, "Mining
// semantics"): one result per query; negatives plus shortfall make
// num_negatives; ranks rise inside [range_min, range_max); best first; no
// excluded candidate (a positive, the query itself, its label).
inline void CheckMiningResults(const IndexVersion& version,
                               absl::Span<const MiningQuery> queries,
                               const MiningOptions& options,
                               const std::vector<MiningResult>& results) {
  if (results.size() != queries.size()) Fail("one result per query");
  const uint64_t range_max =
      options.range_max != 0
          ? options.range_max
          : uint64_t{options.range_min} + options.num_negatives;
  for (size_t q = 0; q < queries.size(); ++q) {
    const MiningQuery& query = queries[q];
    const MiningResult& result = results[q];
    if (result.negatives.size() + result.shortfall != options.num_negatives) {
      Fail("negatives + shortfall != num_negatives");
    }
    for (size_t i = 0; i < result.negatives.size(); ++i) {
      const MinedNegative& n = result.negatives[i];
      if (n.rank < options.range_min || n.rank >= range_max) {
        Fail("a rank outside [range_min, range_max)");
      }
      if (n.row >= version.size() || version.store().id(n.row) != n.id) {
        Fail("a negative whose row does not hold its id");
      }
      if (absl::c_linear_search(query.positive_ids, n.id)) {
        Fail("a positive returned as a negative");
      }
      if (query.query_id.has_value() && *query.query_id == n.id) {
        Fail("the query returned as its own negative");
      }
      if (query.label.has_value() && version.store().has_labels() &&
          *query.label == n.label) {
        Fail("a negative with the query's label");
      }
      if (i > 0) {
        const MinedNegative& prev = result.negatives[i - 1];
        if (n.rank <= prev.rank) Fail("ranks not rising");
        if (Closer(version.metric(), n.score, prev.score)) {
          Fail("negatives not best first");
        }
      }
    }
  }
}

// Every answer of two results lists, field by field.
inline bool SameResults(const std::vector<MiningResult>& a,
                        const std::vector<MiningResult>& b) {
  if (a.size() != b.size()) return false;
  for (size_t q = 0; q < a.size(); ++q) {
    if (a[q].shortfall != b[q].shortfall ||
        a[q].positive_score != b[q].positive_score ||
        a[q].negatives.size() != b[q].negatives.size()) {
      return false;
    }
    for (size_t i = 0; i < a[q].negatives.size(); ++i) {
      const MinedNegative& x = a[q].negatives[i];
      const MinedNegative& y = b[q].negatives[i];
      if (x.id != y.id || x.score != y.score || x.rank != y.rank) return false;
    }
  }
  return true;
}

// A directory of this process's own under $TMPDIR (or /tmp), for the
// files the targets read; scripts/fuzz.sh points TMPDIR into its build
// tree, which holds what is left.
inline const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ =
        std::string(tmp != nullptr ? tmp : "/tmp") + "/hardneg_fuzz_XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) Fail("mkdtemp");
    return new std::string(templ);
  }();
  return *dir;
}

// Replaces `path` with `data`.
inline void WriteFile(const std::string& path, const uint8_t* data,
                      size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) Fail("cannot write " + path);
  if (size > 0 && std::fwrite(data, 1, size, f) != size) Fail("short write");
  if (std::fclose(f) != 0) Fail("cannot close " + path);
}

}  // namespace fuzz
}  // namespace hardneg

#endif  // HARDNEG_TESTS_FUZZ_FUZZ_SUPPORT_H_

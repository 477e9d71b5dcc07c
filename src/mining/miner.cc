#include "mining/miner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/prefetch.h"
#include "base/status_macros.h"
#include "mining/sampling.h"

namespace hardneg {
namespace {

// Candidates fetched per search round across its queries (~12 bytes each),
// so that deep searches of big batches stay within a few hundred MB.
constexpr size_t kMaxFetch = size_t{16} << 20;
// Batches of at least this many queries run their per-query steps on the
// OpenMP threads. (Read only by OpenMP pragmas, which clang compiles only
// for libomp: unused there.)
[[maybe_unused]] constexpr size_t kParallelQueries = 32;

struct Scored {
  float score;
  uint32_t row;
};

// Per-query state across deepening rounds.
struct QueryState {
  size_t k = 0;  // candidates to fetch in the next round
  bool done = false;
  std::optional<double> p;  // the weakest positive's score
  double norm = 0;
  // The index's error bound for this query (0 for approximate indexes).
  double eps = 0;
  // Search may skip candidates whose approximate score is past this.
  float skip_beyond = 0;
  // The rows of the query's own id and its stored positives, sorted: ids
  // are unique in a store, so Matches tests a row against these rather
  // than reading its id.
  std::vector<uint32_t> excluded_rows;
  std::vector<Scored> survivors;
};

std::string QueryField(size_t i, const char* field) {
  return absl::StrCat("queries[", i, "].", field);
}

absl::Status ValidateQuery(const MiningQuery& query, size_t i, size_t dim) {
  if (query.embedding.size() != dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        QueryField(i, "embedding"), " has ", query.embedding.size(),
        " values; the index dimension is ", dim));
  }
  for (size_t j = 0; j < dim; ++j) {
    if (!std::isfinite(query.embedding[j])) {
      return absl::InvalidArgumentError(
          absl::StrCat(QueryField(i, "embedding"), "[", j, "] is ",
                       std::isnan(query.embedding[j]) ? "NaN" : "infinite",
                       "; embeddings must be finite"));
    }
  }
  for (size_t j = 0; j < query.positive_scores.size(); ++j) {
    if (!std::isfinite(query.positive_scores[j])) {
      return absl::InvalidArgumentError(absl::StrCat(
          QueryField(i, "positive_scores"), "[", j, "] is not finite"));
    }
  }
  return absl::OkStatus();
}

// Step 2: true when the candidate matches the query (and is excluded).
// Needs no score, so it runs before the exact rescoring, and during Search
// as the index's skip_row, for each candidate that enters a top-k: there
// `test_label` is false where the index passes over the query's label
// itself (VectorIndex::excludes_labels), so that the check reads nothing
// from the store (a row's label is a random read).
bool Matches(const MiningQuery& query, const QueryState& state,
             const CandidateStore& store, uint32_t row,
             bool test_label = true) {
  if (std::binary_search(state.excluded_rows.begin(), state.excluded_rows.end(),
                         row)) {
    return true;
  }
  return test_label && query.label.has_value() && store.has_labels() &&
         store.label(row) == *query.label;
}

// Step 3: true when the score passes the bounds and the margins against p.
bool PassesFilters(const QueryState& state, const MiningOptions& options,
                   Metric metric, float score) {
  const double s = score;
  if (options.max_score.has_value() && s > *options.max_score) return false;
  if (options.min_score.has_value() && s < *options.min_score) return false;
  if (!state.p.has_value()) return true;
  const double p = *state.p;
  if (metric == Metric::kInnerProduct) {
    if (options.absolute_margin.has_value() &&
        s + *options.absolute_margin > p) {
      return false;
    }
    if (options.relative_margin.has_value() &&
        s > p - std::abs(p) * *options.relative_margin) {
      return false;
    }
  } else {
    if (options.absolute_margin.has_value() &&
        s < p + *options.absolute_margin) {
      return false;
    }
    if (options.relative_margin.has_value() &&
        s < p + std::abs(p) * *options.relative_margin) {
      return false;
    }
  }
  return true;
}

// The weakest of the stored positives' scores, or nullopt; their rows
// appended to `*rows` when given.
std::optional<float> WeakestStored(const MiningQuery& query, Metric metric,
                                   const CandidateStore& store,
                                   std::vector<uint32_t>* rows = nullptr) {
  std::optional<float> p;
  for (int64_t id : query.positive_ids) {
    std::optional<size_t> row = store.RowOf(id);
    if (!row.has_value()) continue;
    if (rows != nullptr) rows->push_back(static_cast<uint32_t>(*row));
    const float s = ExactScore(metric, query.embedding.data(),
                               store.vector(*row), store.dim());
    if (!p.has_value() || Closer(metric, *p, s)) p = s;
  }
  return p;
}

// p: the weakest of the stored positives' scores and the client's scores
// (the stored positives' rows appended to `*rows`).
std::optional<double> WeakestPositive(const MiningQuery& query, Metric metric,
                                      const CandidateStore& store,
                                      std::vector<uint32_t>* rows) {
  std::optional<float> p = WeakestStored(query, metric, store, rows);
  for (float s : query.positive_scores) {
    if (!p.has_value() || Closer(metric, *p, s)) p = s;
  }
  if (!p.has_value()) return std::nullopt;
  return static_cast<double>(*p);
}

// The nearest score step 3 lets through, when it has one: candidates closer
// than this are filtered out (by max_score or the margins for inner
// products, by min_score or the margins for L2).
std::optional<double> NearLimit(const QueryState& state,
                                const MiningOptions& options, Metric metric) {
  const bool ip = metric == Metric::kInnerProduct;
  std::optional<double> limit;
  auto take = [&](double v) {
    if (!limit.has_value() || (ip ? v < *limit : v > *limit)) limit = v;
  };
  const std::optional<float>& bound =
      ip ? options.max_score : options.min_score;
  if (bound.has_value()) take(*bound);
  if (state.p.has_value()) {
    const double p = *state.p;
    const double sign = ip ? -1.0 : 1.0;
    if (options.absolute_margin.has_value()) {
      take(p + sign * *options.absolute_margin);
    }
    if (options.relative_margin.has_value()) {
      take(p + sign * std::abs(p) * *options.relative_margin);
    }
  }
  return limit;
}

// The farthest score step 3 lets through, when it has one (min_score for
// inner products, max_score for L2).
std::optional<double> FarLimit(const MiningOptions& options, Metric metric) {
  const std::optional<float>& bound =
      metric == Metric::kInnerProduct ? options.min_score : options.max_score;
  if (!bound.has_value()) return std::nullopt;
  return static_cast<double>(*bound);
}

// The approximate score past which a candidate is certainly closer than
// `limit` (so certainly filtered) when approximate scores are within `eps`
// of the exact ones: limit + eps for inner products, limit - eps for L2,
// rounded outwards to float with an ulp to spare.
float SkipBeyond(double limit, double eps, Metric metric) {
  const bool ip = metric == Metric::kInnerProduct;
  const double edge = ip ? limit + eps : limit - eps;
  const float toward = ip ? std::numeric_limits<float>::infinity()
                          : -std::numeric_limits<float>::infinity();
  float f = static_cast<float>(edge);
  if (ip ? f < edge : f > edge) f = std::nextafter(f, toward);
  return std::nextafter(f, toward);
}

// Takes one query's `k` fetched candidates (best first by approximate
// score, rows padded with -1) into its survivors, then marks it done or
// sets how many to fetch next round.
void Collect(const MiningQuery& query, const MiningOptions& options,
             const IndexVersion& version, QueryState& state, size_t range_max,
             size_t k, const float* approx, const int64_t* rows) {
  const CandidateStore& store = version.store();
  const VectorIndex& index = version.index();
  const Metric metric = version.metric();
  const bool ip = metric == Metric::kInnerProduct;
  const size_t n = store.size();
  size_t count = 0;
  while (count < k && rows[count] >= 0) ++count;
  // The candidates' ids, labels and vectors are random reads: ask for
  // them all before the first is needed.
  for (size_t c = 0; c < count; ++c) {
    store.PrefetchRow(static_cast<size_t>(rows[c]));
    PrefetchLines(store.vector(static_cast<size_t>(rows[c])),
                  store.dim() * sizeof(float));
  }
  const bool exhausted = count < k || k >= n;
  // A fetched candidate is certain when no unfetched one can be closer;
  // for exact indexes, that needs a margin of the kernel's error bound
  // past the worst fetched approximate score.
  const bool exact = index.exact();
  const double eps = state.eps;
  const bool bounded = exact && !exhausted && count > 0;
  const double worst = bounded ? approx[count - 1] : 0;
  double weakest = 0;  // the weakest survivor's exact score so far
  state.survivors.clear();
  for (size_t c = 0; c < count; ++c) {
    // Candidates come best first by approximate score: once the window is
    // full, stop at the first one that cannot beat its weakest survivor
    // even with the kernel's error, rather than rescoring a deep tail.
    if (exact && state.survivors.size() >= range_max) {
      const double a = approx[c];
      if (ip ? a + eps < weakest : a - eps > weakest) break;
    }
    const auto row = static_cast<uint32_t>(rows[c]);
    if (Matches(query, state, store, row)) continue;
    const float s = ExactScore(metric, query.embedding.data(),
                               store.vector(row), store.dim());
    if (bounded && !(ip ? s > worst + eps : s < worst - eps)) {
      continue;  // an unfetched candidate might be closer
    }
    if (PassesFilters(state, options, metric, s)) {
      if (state.survivors.empty() || (ip ? s < weakest : s > weakest)) {
        weakest = s;
      }
      state.survivors.push_back({s, row});
    }
  }
  if (state.survivors.size() >= range_max || exhausted) {
    state.done = true;
    return;
  }
  // Every unfetched candidate already fails the far bound: deeper
  // searches would find nothing.
  const std::optional<double> far = FarLimit(options, metric);
  if (bounded && far.has_value() &&
      (ip ? worst + eps < *far : worst - eps > *far)) {
    state.done = true;
    return;
  }
  // Grow by the observed survival rate (x8 when nothing survived), at
  // least doubling; past half the index, scan it all.
  const double wanted = state.survivors.empty()
                            ? 8.0 * static_cast<double>(k)
                            : 2.0 * static_cast<double>(k) *
                                  static_cast<double>(range_max) /
                                  static_cast<double>(state.survivors.size());
  size_t next =
      static_cast<size_t>(std::min<double>(static_cast<double>(n), wanted));
  next = std::max(next, 2 * k);
  state.k = next * 2 > n ? n : next;
}

// The state of one query before its first round: p, the norm and error
// bound, the skip limit, and how many candidates to fetch first.
QueryState StartQuery(const MiningQuery& query, const MiningOptions& options,
                      const IndexVersion& version) {
  const CandidateStore& store = version.store();
  const VectorIndex& index = version.index();
  const Metric metric = version.metric();
  const size_t n = store.size();
  const size_t range_max = RangeMax(options);
  QueryState state;
  state.p = WeakestPositive(query, metric, store, &state.excluded_rows);
  if (query.query_id.has_value()) {
    const std::optional<size_t> own = store.RowOf(*query.query_id);
    if (own.has_value()) state.excluded_rows.push_back(*own);
  }
  std::sort(state.excluded_rows.begin(), state.excluded_rows.end());
  double squared_norm = 0;
  for (float v : query.embedding) squared_norm += static_cast<double>(v) * v;
  state.norm = std::sqrt(squared_norm);
  state.eps = index.exact() ? index.ErrorBound(state.norm) : 0;
  const std::optional<double> near = NearLimit(state, options, metric);
  const float nothing_skipped = metric == Metric::kInnerProduct
                                    ? std::numeric_limits<float>::infinity()
                                    : -std::numeric_limits<float>::infinity();
  state.skip_beyond =
      near.has_value() ? SkipBeyond(*near, state.eps, metric) : nothing_skipped;
  if (index.skips()) {
    // Matches and near filters never take a place among the k fetched,
    // so a little over the window leaves room for the scores too close
    // to the k-th to be certain. An approximate index (IVF) has no
    // such margin: it returns its k best by float32 score, so two spare
    // places cover a near filter's exact score falling on the other side
    // of its limit; each extra place lowers its screens (on W2 with the
    // own class excluded, 40,000 candidates: 103 rows offered for float32
    // rescoring a query with 8 spare, 65 with 2).
    const size_t spare = index.exact() ? std::max<size_t>(8, range_max / 8) : 2;
    state.k = std::min(n, range_max + spare);
  } else {
    // An approximate scan costs about the same for any k, so start
    // generously: label exclusion alone can remove most of the nearest
    // candidates.
    state.k = std::min(
        n,
        std::max<size_t>(256, 4 * (range_max + query.positive_ids.size() + 1)));
  }
  state.done = n == 0;
  return state;
}

// The queries to search this round: those not done, as many as fit the
// round's fetch bound (the rest go next round). A query nobody waits for
// any more is marked done instead.
std::vector<size_t> NextRound(absl::Span<const BatchQuery> queries,
                              std::vector<QueryState>& states) {
  std::vector<size_t> pending;
  size_t max_k = 0;
  for (size_t i = 0; i < states.size(); ++i) {
    if (states[i].done) continue;
    const std::function<bool()>* cancelled = queries[i].cancelled;
    if (cancelled != nullptr && (*cancelled)()) {
      states[i].done = true;
      continue;
    }
    const size_t round_k = std::max(max_k, states[i].k);
    if (!pending.empty() && (pending.size() + 1) * round_k > kMaxFetch) {
      break;
    }
    pending.push_back(i);
    max_k = round_k;
  }
  return pending;
}

// Buffers of one search round, reused across rounds.
struct RoundBuffers {
  std::vector<float> embeddings;   // the group's queries, row-major
  std::vector<float> skip_beyond;  // per query of the group
  // Per query of the group: the label it excludes, when the store has
  // labels (an IVF-Flat index skips lists holding only that label).
  std::vector<std::optional<int64_t>> excluded_label;
  std::vector<float> approx;  // k approximate scores per query
  std::vector<int64_t> rows;  // k rows per query, -1 padded
};

// One batched search of `group` (indexes into `queries`, all with the
// options' nprobe and ivf_min_candidates), each query's candidates collected
// into its state.
absl::Status SearchGroup(const IndexVersion& version,
                         absl::Span<const BatchQuery> queries,
                         absl::Span<const size_t> group,
                         std::vector<QueryState>& states,
                         RoundBuffers& buffers) {
  const size_t dim = version.store().dim();
  const bool labelled = version.store().has_labels();
  size_t k = 0;
  buffers.embeddings.resize(group.size() * dim);
  buffers.skip_beyond.resize(group.size());
  buffers.excluded_label.resize(group.size());
  for (size_t j = 0; j < group.size(); ++j) {
    const QueryState& state = states[group[j]];
    const MiningQuery& query = *queries[group[j]].query;
    k = std::max(k, state.k);
    std::copy(query.embedding.begin(), query.embedding.end(),
              buffers.embeddings.begin() + j * dim);
    buffers.skip_beyond[j] = state.skip_beyond;
    buffers.excluded_label[j] = labelled ? query.label : std::nullopt;
  }
  buffers.approx.resize(group.size() * k);
  buffers.rows.resize(group.size() * k);
  const MiningOptions& options = *queries[group[0]].options;
  SearchOptions search;
  search.closest = buffers.skip_beyond;
  search.nprobe = options.nprobe;
  search.ivf_min_candidates = options.ivf_min_candidates;
  search.excluded_label = buffers.excluded_label;
  const bool test_label = !version.index().excludes_labels();
  search.skip_row = [&](size_t j, int64_t row) {
    return Matches(*queries[group[j]].query, states[group[j]], version.store(),
                   static_cast<uint32_t>(row), test_label);
  };
  HARDNEG_RETURN_IF_ERROR(
      version.index().Search(buffers.embeddings.data(), group.size(), k, search,
                             buffers.approx.data(), buffers.rows.data()));
#pragma omp parallel for if (group.size() >= kParallelQueries) \
    schedule(dynamic, 16)
  for (size_t j = 0; j < group.size(); ++j) {
    const BatchQuery& query = queries[group[j]];
    Collect(*query.query, *query.options, version, states[group[j]],
            RangeMax(*query.options), k, buffers.approx.data() + j * k,
            buffers.rows.data() + j * k);
  }
  return absl::OkStatus();
}

// Steps 4 and 5 for one query: order its survivors best first (ties by
// id), cut the window, and sample from it.
MiningResult FinishQuery(const MiningOptions& options,
                         const IndexVersion& version, QueryState& state,
                         size_t index_in_request) {
  const CandidateStore& store = version.store();
  const Metric metric = version.metric();
  MiningResult result;
  if (state.p.has_value()) result.positive_score = static_cast<float>(*state.p);
  std::vector<Scored>& survivors = state.survivors;
  const size_t end = std::min<size_t>(RangeMax(options), survivors.size());
  auto better = [&](const Scored& a, const Scored& b) {
    if (a.score != b.score) return Closer(metric, a.score, b.score);
    return store.id(a.row) < store.id(b.row);
  };
  std::partial_sort(survivors.begin(), survivors.begin() + end, survivors.end(),
                    better);
  const size_t begin = std::min<size_t>(options.range_min, end);
  std::vector<float> window_scores;
  window_scores.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) {
    window_scores.push_back(survivors[i].score);
  }
  const size_t picks =
      std::min<size_t>(options.num_negatives, window_scores.size());
  result.shortfall = static_cast<uint32_t>(options.num_negatives - picks);
  for (size_t w : Sample(options, metric, window_scores, picks,
                         QuerySeed(options.seed, index_in_request))) {
    const Scored& c = survivors[begin + w];
    result.negatives.push_back({store.id(c.row), c.score, store.label(c.row),
                                static_cast<uint32_t>(begin + w), c.row});
  }
  return result;
}

}  // namespace

std::optional<float> WeakestStoredPositive(const IndexVersion& version,
                                           const MiningQuery& query) {
  return WeakestStored(query, version.metric(), version.store());
}

absl::Status Miner::ValidateRequestSize(size_t queries,
                                        const MiningOptions& options,
                                        size_t candidates) const {
  if (queries > limits_.max_queries) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request has ", queries, " queries; the limit is ",
                     limits_.max_queries, " (max_queries): split it"));
  }
  const uint64_t per_query =
      limits_.negatives_bounded_by_candidates
          ? std::min<uint64_t>(options.num_negatives, candidates)
          : options.num_negatives;
  const uint64_t negatives = per_query * queries;
  if (negatives > limits_.max_request_negatives) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request asks for ", negatives, " negatives (num_negatives ",
        options.num_negatives, " x ", queries, " queries); the limit is ",
        limits_.max_request_negatives,
        " (max_request_negatives): split it or ask for fewer"));
  }
  const uint64_t ranked = std::min<uint64_t>(RangeMax(options), candidates);
  const uint64_t fetch = ranked * queries;
  if (fetch > limits_.max_request_fetch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request ranks up to ", fetch, " candidates (", ranked,
        " a query, from range_max ", RangeMax(options), ", x ", queries,
        " queries); the limit is ", limits_.max_request_fetch,
        " (max_request_fetch): split it or lower range_max"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<MiningResult>> Miner::Mine(
    const IndexVersion& version, absl::Span<const MiningQuery> queries,
    const MiningOptions& options) const {
  const MiningBatchItem item{queries, &options};
  std::vector<absl::StatusOr<std::vector<MiningResult>>> results =
      MineBatch(version, absl::MakeConstSpan(&item, 1));
  return std::move(results[0]);
}

absl::Status Miner::Validate(const IndexVersion& version,
                             absl::Span<const MiningQuery> queries,
                             const MiningOptions& options) const {
  return ValidateRequest(queries, options, version.dim(), version.size());
}

absl::Status Miner::ValidateRequest(absl::Span<const MiningQuery> queries,
                                    const MiningOptions& options, size_t dim,
                                    size_t candidates) const {
  if (queries.empty()) {
    return absl::InvalidArgumentError("queries is empty: send at least one");
  }
  HARDNEG_RETURN_IF_ERROR(ValidateOptions(options));
  HARDNEG_RETURN_IF_ERROR(
      ValidateRequestSize(queries.size(), options, candidates));
  for (size_t i = 0; i < queries.size(); ++i) {
    HARDNEG_RETURN_IF_ERROR(ValidateQuery(queries[i], i, dim));
    const size_t positives = std::max(queries[i].positive_ids.size(),
                                      queries[i].positive_scores.size());
    if (positives > limits_.max_positives) {
      return absl::InvalidArgumentError(absl::StrCat(
          QueryField(i, "positive_ids"), " and positive_scores hold ",
          positives, " values; the limit is ", limits_.max_positives,
          " (max_positives)"));
    }
  }
  return absl::OkStatus();
}

std::vector<absl::StatusOr<std::vector<MiningResult>>> Miner::MineBatch(
    const IndexVersion& version,
    absl::Span<const MiningBatchItem> items) const {
  std::vector<absl::StatusOr<std::vector<MiningResult>>> out;
  out.reserve(items.size());
  // Every valid item's queries are mined together; an invalid item fails
  // alone.
  std::vector<BatchQuery> queries;
  for (const MiningBatchItem& item : items) {
    absl::Status status = Validate(version, item.queries, *item.options);
    if (!status.ok()) {
      out.emplace_back(std::move(status));
      continue;
    }
    out.emplace_back(std::vector<MiningResult>());
    for (size_t i = 0; i < item.queries.size(); ++i) {
      queries.push_back({&item.queries[i], item.options, i, item.cancelled});
    }
  }
  std::vector<MiningResult> results(queries.size());
  absl::Status mined = MineQueries(version, queries, results);
  size_t next = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!out[i].ok()) continue;
    if (!mined.ok()) {
      out[i] = mined;
      continue;
    }
    if (items[i].cancelled != nullptr && (*items[i].cancelled)()) {
      out[i] =
          absl::CancelledError("the request was cancelled while it was mined");
      next += items[i].queries.size();
      continue;
    }
    std::vector<MiningResult> item_results(
        std::make_move_iterator(results.begin() + next),
        std::make_move_iterator(results.begin() + next +
                                items[i].queries.size()));
    next += items[i].queries.size();
    out[i] = std::move(item_results);
  }
  return out;
}

absl::Status Miner::MineQueries(const IndexVersion& version,
                                absl::Span<const BatchQuery> queries,
                                std::vector<MiningResult>& results) const {
  // Steps 1 to 5 are per query, each reading a few random rows of the
  // store (positives, candidates): in parallel, and prefetched.
  std::vector<QueryState> states(queries.size());
#pragma omp parallel for if (queries.size() >= kParallelQueries) \
    schedule(dynamic, 16)
  for (size_t i = 0; i < queries.size(); ++i) {
    states[i] = StartQuery(*queries[i].query, *queries[i].options, version);
  }
  // Step 6: fetch, filter, and deepen the queries that came up short, all
  // pending queries with the same search settings (nprobe,
  // ivf_min_candidates) in one batched search per round.
  RoundBuffers buffers;
  auto settings = [&](size_t i) {
    return std::make_pair(queries[i].options->nprobe,
                          queries[i].options->ivf_min_candidates);
  };
  while (true) {
    std::vector<size_t> pending = NextRound(queries, states);
    if (pending.empty()) break;
    std::stable_sort(pending.begin(), pending.end(), [&](size_t a, size_t b) {
      return settings(a) < settings(b);
    });
    for (size_t group_begin = 0; group_begin < pending.size();) {
      size_t group_end = group_begin + 1;
      while (group_end < pending.size() &&
             settings(pending[group_end]) == settings(pending[group_begin])) {
        ++group_end;
      }
      HARDNEG_RETURN_IF_ERROR(
          SearchGroup(version, queries,
                      absl::MakeConstSpan(pending).subspan(
                          group_begin, group_end - group_begin),
                      states, buffers));
      group_begin = group_end;
    }
  }
#pragma omp parallel for if (queries.size() >= kParallelQueries) \
    schedule(dynamic, 16)
  for (size_t i = 0; i < queries.size(); ++i) {
    results[i] = FinishQuery(*queries[i].options, version, states[i],
                             queries[i].index_in_request);
  }
  return absl::OkStatus();
}

}  // namespace hardneg

#include "index/ivf_probe.h"

#include <cblas.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/utils/Heap.h>
#include <omp.h>

#include <algorithm>
#include <utility>

#include "index/ivf_flat_scan.h"
#include "index/row_dots.h"

namespace hardneg {
namespace {

using IdxT = faiss::Index::idx_t;

// Coarse scores ranked per quantizer call, at most (about 12 bytes each):
// queries are ranked in chunks of kRankEntries / nlist.
constexpr size_t kRankEntries = size_t{1} << 20;

// Scores of one list's `n` entries against `query` into `out`.
void ScoreList(const float* codes, size_t n, size_t d, const float* query,
               bool inner_product, float* out) {
  if (inner_product) {
    RowDots(codes, n, d, query, 1, out);
    return;
  }
  for (size_t j = 0; j < n; ++j) out[j] = SquaredL2(query, codes + j * d, d);
}

// out[a * n + r] = queries[a] . rows[r] for `nq` queries: sgemm for four
// or more, RowDots (each row read once per three queries) below that.
void BatchDots(const float* rows, size_t n, size_t d, const float* queries,
               size_t nq, float* out) {
  if (nq >= 4) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nq),
                static_cast<int>(n), static_cast<int>(d), 1.0f, queries,
                static_cast<int>(d), rows, static_cast<int>(d), 0.0f, out,
                static_cast<int>(n));
    return;
  }
  for (size_t a = 0; a < nq; a += kMaxRowDotQueries) {
    const size_t group = std::min(kMaxRowDotQueries, nq - a);
    RowDots(rows, n, d, queries + a * d, group, out + a * n);
  }
}

}  // namespace

std::unique_ptr<IvfProbe> IvfProbe::Create(const faiss::Index& index,
                                           const CandidateStore& store,
                                           size_t default_min_candidates) {
  if (!IsIvfFlat(index) || !store.has_labels()) return nullptr;
  const auto& ivf = dynamic_cast<const faiss::IndexIVF&>(index);
  if (ivf.metric_type != faiss::METRIC_INNER_PRODUCT &&
      ivf.metric_type != faiss::METRIC_L2) {
    return nullptr;
  }
  std::unique_ptr<IvfProbe> probe(new IvfProbe(ivf, default_min_candidates));
  const faiss::InvertedLists& lists = *ivf.invlists;
  probe->offsets_.reserve(lists.nlist + 1);
  probe->offsets_.push_back(0);
  std::vector<int64_t> list_labels;
  for (size_t l = 0; l < lists.nlist; ++l) {
    const size_t n = lists.list_size(l);
    faiss::InvertedLists::ScopedIds ids(&lists, l);
    list_labels.resize(n);
    for (size_t j = 0; j < n; ++j) {
      const IdxT row = ids[j];
      if (row < 0 || static_cast<size_t>(row) >= store.size()) return nullptr;
      list_labels[j] = store.label(static_cast<size_t>(row));
    }
    std::sort(list_labels.begin(), list_labels.end());
    for (size_t j = 0; j < n;) {
      size_t end = j + 1;
      while (end < n && list_labels[end] == list_labels[j]) ++end;
      probe->labels_.push_back(list_labels[j]);
      probe->counts_.push_back(static_cast<uint32_t>(end - j));
      j = end;
    }
    probe->offsets_.push_back(static_cast<uint32_t>(probe->labels_.size()));
  }
  probe->labels_.shrink_to_fit();
  probe->counts_.shrink_to_fit();
  return probe;
}

IvfProbe::IvfProbe(const faiss::IndexIVF& ivf, size_t default_min_candidates)
    : ivf_(ivf), default_min_candidates_(default_min_candidates) {}

size_t IvfProbe::MemoryBytes() const {
  return offsets_.capacity() * sizeof(uint32_t) +
         labels_.capacity() * sizeof(int64_t) +
         counts_.capacity() * sizeof(uint32_t);
}

size_t IvfProbe::LabelCount(size_t list, int64_t label) const {
  const auto begin = labels_.begin() + offsets_[list];
  const auto end = labels_.begin() + offsets_[list + 1];
  const auto it = std::lower_bound(begin, end, label);
  if (it == end || *it != label) return 0;
  return counts_[static_cast<size_t>(it - labels_.begin())];
}

IvfProbe::Plan IvfProbe::PlanFor(size_t k, const SearchOptions& options) const {
  Plan plan;
  plan.k = k;
  plan.min_lists = options.nprobe > 0 ? options.nprobe : ivf_.nprobe;
  plan.min_lists = std::max<size_t>(plan.min_lists, 1);
  plan.min_candidates = options.ivf_min_candidates > 0
                            ? options.ivf_min_candidates
                            : default_min_candidates_;
  if (plan.min_candidates == 0) {
    const size_t nlist = std::max<size_t>(ivf_.nlist, 1);
    const size_t average_list = static_cast<size_t>(ivf_.ntotal) / nlist;
    plan.min_candidates =
        std::max(kAutoCandidatesPerResult * k, kAutoLists * average_list);
  }
  return plan;
}

size_t IvfProbe::PrefixRanks(const Plan& plan) const {
  const size_t nlist = std::max<size_t>(ivf_.nlist, 1);
  const size_t average_list =
      std::max<size_t>(1, static_cast<size_t>(ivf_.ntotal) / nlist);
  const size_t wanted = std::max(plan.min_candidates, plan.k);
  const size_t lists =
      plan.min_lists + (wanted + average_list - 1) / average_list;
  return std::min(nlist,
                  std::max(kMinPrefixRanks, kPrefixRanksPerList * lists));
}

template <class C>
size_t IvfProbe::ScanList(size_t list, const float* query, size_t i,
                          const SearchOptions& options, size_t k, float* scores,
                          int64_t* rows, ProbeState& state) const {
  const size_t n = ivf_.invlists->list_size(list);
  const size_t d = static_cast<size_t>(ivf_.d);
  faiss::InvertedLists::ScopedCodes codes(ivf_.invlists, list);
  faiss::InvertedLists::ScopedIds ids(ivf_.invlists, list);
  thread_local std::vector<float> list_scores;
  if (list_scores.size() < n) list_scores.resize(n);
  ScoreList(reinterpret_cast<const float*>(codes.get()), n, d, query,
            ivf_.metric_type == faiss::METRIC_INNER_PRODUCT,
            list_scores.data());
  return PushList<C>(list_scores.data(), n, ids.get(), i, options, k, scores,
                     rows, state);
}

template <class C>
size_t IvfProbe::PushList(const float* list_scores, size_t n,
                          const int64_t* ids, size_t i,
                          const SearchOptions& options, size_t k, float* scores,
                          int64_t* rows, ProbeState& state) const {
  const bool has_closest = !options.closest.empty();
  const float closest = has_closest ? options.closest[i] : 0;
  size_t too_close = 0;
  for (size_t j = 0; j < n; ++j) {
    const float s = list_scores[j];
    if (has_closest && C::cmp(closest, s)) {
      ++too_close;
      continue;
    }
    if (!C::cmp(scores[0], s)) continue;  // the sentinel until full
    const IdxT row = ids[j];
    if (options.skip_row && options.skip_row(i, row)) continue;
    faiss::heap_replace_top<C>(k, scores, rows, s, row);
    ++state.filled;
  }
  ++state.stats.lists_scanned;
  state.stats.candidates_scanned += n;
  return too_close;
}

template <class C>
void IvfProbe::Continue(const float* query, size_t i, const Plan& plan,
                        const SearchOptions& options, const int64_t* order,
                        size_t first, size_t ranked,
                        absl::Span<const int64_t> probed, float* scores,
                        int64_t* rows, ProbeState& state) const {
  // (A plain pair, not the optional: GCC 12 warns it may be uninitialised.)
  const bool has_excluded =
      !options.excluded_label.empty() && options.excluded_label[i].has_value();
  const int64_t excluded = has_excluded ? *options.excluded_label[i] : 0;
  for (size_t r = first; r < ranked && order[r] >= 0; ++r) {
    if (!probed.empty() &&
        std::binary_search(probed.begin(), probed.end(), order[r])) {
      continue;  // visited in the prefix ranking
    }
    state.prefix_end = r + 1;
    const auto list = static_cast<size_t>(order[r]);
    const size_t n = ivf_.invlists->list_size(list);
    const size_t labelled = has_excluded ? LabelCount(list, excluded) : 0;
    if (n == labelled) {
      if (n > 0) ++state.stats.lists_skipped;
      continue;
    }
    const size_t too_close =
        ScanList<C>(list, query, i, options, plan.k, scores, rows, state);
    Account(n, labelled, too_close, state);
    if (PlanMet(plan, state)) {
      state.done = true;
      return;
    }
  }
  // Every list was ranked and visited: nothing is left.
  if (ranked >= ivf_.nlist) state.done = true;
}

void IvfProbe::ContinueAny(const float* query, size_t i, const Plan& plan,
                           const SearchOptions& options, const int64_t* order,
                           size_t first, size_t ranked,
                           absl::Span<const int64_t> probed, float* scores,
                           int64_t* rows, ProbeState& state) const {
  if (ivf_.metric_type == faiss::METRIC_INNER_PRODUCT) {
    Continue<faiss::CMin<float, IdxT>>(query, i, plan, options, order, first,
                                       ranked, probed, scores, rows, state);
  } else {
    Continue<faiss::CMax<float, IdxT>>(query, i, plan, options, order, first,
                                       ranked, probed, scores, rows, state);
  }
}

void IvfProbe::Account(size_t n, size_t labelled, size_t too_close,
                       ProbeState& state) {
  // too_close may include labelled entries: clamp rather than subtract
  // them twice.
  const size_t gone = std::min(n, labelled + too_close);
  state.stats.survivors_scanned += n - gone;
  if (n > gone) ++state.lists;
}

bool IvfProbe::PlanMet(const Plan& plan, const ProbeState& state) {
  return state.lists >= plan.min_lists &&
         state.stats.survivors_scanned >= plan.min_candidates &&
         state.filled >= plan.k;
}

std::vector<uint32_t> IvfProbe::PlanLists(size_t i, const Plan& plan,
                                          const SearchOptions& options,
                                          const int64_t* order, size_t prefix,
                                          ProbeState& state) const {
  const bool has_excluded =
      !options.excluded_label.empty() && options.excluded_label[i].has_value();
  const int64_t excluded = has_excluded ? *options.excluded_label[i] : 0;
  std::vector<uint32_t> lists;
  size_t survivors = 0;
  size_t r = 0;
  while (r < prefix && order[r] >= 0) {
    const auto list = static_cast<size_t>(order[r++]);
    const size_t n = ivf_.invlists->list_size(list);
    const size_t labelled = has_excluded ? LabelCount(list, excluded) : 0;
    if (n == labelled) {
      if (n > 0) ++state.stats.lists_skipped;
      continue;
    }
    lists.push_back(static_cast<uint32_t>(list));
    survivors += n - labelled;
    if (lists.size() >= plan.min_lists && survivors >= plan.min_candidates &&
        survivors >= plan.k) {
      break;
    }
  }
  state.prefix_end = r;
  return lists;
}

void IvfProbe::BatchScan(const float* queries, size_t q0, size_t m,
                         const Plan& plan, const SearchOptions& options,
                         const int64_t* order, size_t prefix, float* scores,
                         int64_t* rows, std::vector<ProbeState>& states) const {
  using C = faiss::CMin<float, IdxT>;
  const size_t d = static_cast<size_t>(ivf_.d);
  const size_t k = plan.k;
  // Which queries probe each list (the plan from label counts alone).
  std::vector<std::vector<uint32_t>> probers(ivf_.nlist);
  for (size_t j = 0; j < m; ++j) {
    faiss::heap_heapify<C>(k, scores + (q0 + j) * k, rows + (q0 + j) * k);
    for (uint32_t list : PlanLists(q0 + j, plan, options, order + j * prefix,
                                   prefix, states[j])) {
      probers[list].push_back(static_cast<uint32_t>(j));
    }
  }
#pragma omp parallel
  {
    // Each thread owns the queries j with j % threads == t, so that each
    // heap has one writer; it reads each list its queries probe once.
    const auto threads = static_cast<size_t>(omp_get_num_threads());
    const auto t = static_cast<size_t>(omp_get_thread_num());
    std::vector<uint32_t> mine;
    std::vector<float> batch, dots;
    for (size_t list = 0; list < ivf_.nlist; ++list) {
      mine.clear();
      for (uint32_t j : probers[list]) {
        if (j % threads == t) mine.push_back(j);
      }
      if (mine.empty()) continue;
      const size_t n = ivf_.invlists->list_size(list);
      faiss::InvertedLists::ScopedCodes codes(ivf_.invlists, list);
      faiss::InvertedLists::ScopedIds ids(ivf_.invlists, list);
      const auto* x = reinterpret_cast<const float*>(codes.get());
      batch.resize(mine.size() * d);
      for (size_t a = 0; a < mine.size(); ++a) {
        std::copy_n(queries + (q0 + mine[a]) * d, d, batch.data() + a * d);
      }
      dots.resize(mine.size() * n);
      BatchDots(x, n, d, batch.data(), mine.size(), dots.data());
      for (size_t a = 0; a < mine.size(); ++a) {
        const size_t i = q0 + mine[a];
        ProbeState& state = states[mine[a]];
        const size_t too_close =
            PushList<C>(dots.data() + a * n, n, ids.get(), i, options, k,
                        scores + i * k, rows + i * k, state);
        const size_t labelled =
            options.excluded_label.empty() ||
                    !options.excluded_label[i].has_value()
                ? 0
                : LabelCount(list, *options.excluded_label[i]);
        Account(n, labelled, too_close, state);
      }
    }
  }
}

void IvfProbe::Resume(const float* queries, size_t q0, const Plan& plan,
                      const SearchOptions& options, size_t prefix,
                      const std::vector<IdxT>& prefix_order, float* scores,
                      int64_t* rows, std::vector<ProbeState>& states) const {
  const size_t nlist = ivf_.nlist;
  const size_t d = static_cast<size_t>(ivf_.d);
  std::vector<size_t> rest;
  for (size_t j = 0; j < states.size(); ++j) {
    if (!states[j].done) rest.push_back(j);
  }
  const size_t chunk = std::max<size_t>(1, kRankEntries / nlist);
  std::vector<float> batch, coarse;
  std::vector<IdxT> order;
  for (size_t b0 = 0; b0 < rest.size(); b0 += chunk) {
    const size_t m = std::min(chunk, rest.size() - b0);
    batch.resize(m * d);
    for (size_t j = 0; j < m; ++j) {
      std::copy_n(queries + (q0 + rest[b0 + j]) * d, d, batch.data() + j * d);
    }
    coarse.resize(m * nlist);
    order.resize(m * nlist);
    ivf_.quantizer->search(static_cast<IdxT>(m), batch.data(),
                           static_cast<IdxT>(nlist), coarse.data(),
                           order.data());
#pragma omp parallel for if (m > 1) schedule(dynamic)
    for (size_t j = 0; j < m; ++j) {
      const size_t local = rest[b0 + j];
      const size_t i = q0 + local;
      ProbeState& state = states[local];
      std::vector<IdxT> probed(
          prefix_order.begin() + static_cast<std::ptrdiff_t>(local * prefix),
          prefix_order.begin() +
              static_cast<std::ptrdiff_t>(local * prefix + state.prefix_end));
      std::sort(probed.begin(), probed.end());
      ContinueAny(batch.data() + j * d, i, plan, options,
                  order.data() + j * nlist, 0, nlist, probed,
                  scores + i * plan.k, rows + i * plan.k, state);
    }
  }
}

void IvfProbe::Search(const float* queries, size_t nq, size_t k,
                      const SearchOptions& options, float* scores,
                      int64_t* rows, IvfProbeStats* stats) const {
  if (nq == 0 || k == 0) return;
  const Plan plan = PlanFor(k, options);
  const size_t d = static_cast<size_t>(ivf_.d);
  // Most queries stop within a short prefix of the ranking: rank that
  // many lists first (a smaller heap per query), and all of them only for
  // the queries that get past it.
  const size_t prefix = PrefixRanks(plan);
  const size_t chunk = std::max<size_t>(1, kRankEntries / prefix);
  std::vector<float> coarse;
  std::vector<IdxT> order;
  std::vector<ProbeState> states;
  IvfProbeStats total;
  for (size_t q0 = 0; q0 < nq; q0 += chunk) {
    const size_t m = std::min(chunk, nq - q0);
    coarse.resize(m * prefix);
    order.resize(m * prefix);
    ivf_.quantizer->search(static_cast<IdxT>(m), queries + q0 * d,
                           static_cast<IdxT>(prefix), coarse.data(),
                           order.data());
    states.assign(m, ProbeState());
    if (ivf_.metric_type == faiss::METRIC_INNER_PRODUCT &&
        m >= kMinBatchQueries) {
      // Queries share list reads (and sgemm) list by list; those the
      // plan from label counts left short probe on one by one.
      BatchScan(queries, q0, m, plan, options, order.data(), prefix, scores,
                rows, states);
#pragma omp parallel for schedule(dynamic)
      for (size_t j = 0; j < m; ++j) {
        const size_t i = q0 + j;
        if (PlanMet(plan, states[j])) {
          states[j].done = true;
          continue;
        }
        ContinueAny(queries + i * d, i, plan, options,
                    order.data() + j * prefix, states[j].prefix_end, prefix, {},
                    scores + i * k, rows + i * k, states[j]);
      }
    } else {
#pragma omp parallel for if (m > 1) schedule(dynamic)
      for (size_t j = 0; j < m; ++j) {
        const size_t i = q0 + j;
        if (ivf_.metric_type == faiss::METRIC_INNER_PRODUCT) {
          faiss::heap_heapify<faiss::CMin<float, IdxT>>(k, scores + i * k,
                                                        rows + i * k);
        } else {
          faiss::heap_heapify<faiss::CMax<float, IdxT>>(k, scores + i * k,
                                                        rows + i * k);
        }
        ContinueAny(queries + i * d, i, plan, options,
                    order.data() + j * prefix, 0, prefix, {}, scores + i * k,
                    rows + i * k, states[j]);
      }
    }
    Resume(queries, q0, plan, options, prefix, order, scores, rows, states);
    for (size_t j = 0; j < m; ++j) {
      const size_t i = q0 + j;
      if (ivf_.metric_type == faiss::METRIC_INNER_PRODUCT) {
        faiss::heap_reorder<faiss::CMin<float, IdxT>>(k, scores + i * k,
                                                      rows + i * k);
      } else {
        faiss::heap_reorder<faiss::CMax<float, IdxT>>(k, scores + i * k,
                                                      rows + i * k);
      }
      total.lists_scanned += states[j].stats.lists_scanned;
      total.lists_skipped += states[j].stats.lists_skipped;
      total.candidates_scanned += states[j].stats.candidates_scanned;
      total.survivors_scanned += states[j].stats.survivors_scanned;
    }
  }
  if (stats != nullptr) {
    stats->lists_scanned += total.lists_scanned;
    stats->lists_skipped += total.lists_skipped;
    stats->candidates_scanned += total.candidates_scanned;
    stats->survivors_scanned += total.survivors_scanned;
  }
}

}  // namespace hardneg

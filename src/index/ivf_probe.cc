#include "index/ivf_probe.h"

#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/utils/Heap.h>

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

template <class C>
void IvfProbe::SearchOne(const float* query, size_t i, const Plan& plan,
                         const SearchOptions& options, const int64_t* order,
                         float* scores, int64_t* rows,
                         IvfProbeStats& stats) const {
  const size_t k = plan.k;
  const size_t d = static_cast<size_t>(ivf_.d);
  const bool inner_product = ivf_.metric_type == faiss::METRIC_INNER_PRODUCT;
  faiss::heap_heapify<C>(k, scores, rows);
  // (A plain pair, not the optional: GCC 12 warns it may be uninitialised.)
  const bool has_excluded =
      !options.excluded_label.empty() && options.excluded_label[i].has_value();
  const int64_t excluded = has_excluded ? *options.excluded_label[i] : 0;
  const bool has_closest = !options.closest.empty();
  const float closest = has_closest ? options.closest[i] : 0;
  thread_local std::vector<float> list_scores;
  size_t filled = 0;
  size_t lists = 0;
  size_t survivors = 0;
  for (size_t r = 0; r < ivf_.nlist && order[r] >= 0; ++r) {
    const auto list = static_cast<size_t>(order[r]);
    const size_t n = ivf_.invlists->list_size(list);
    const size_t labelled = has_excluded ? LabelCount(list, excluded) : 0;
    if (n == labelled) {
      if (n > 0) ++stats.lists_skipped;
      continue;
    }
    faiss::InvertedLists::ScopedCodes codes(ivf_.invlists, list);
    faiss::InvertedLists::ScopedIds ids(ivf_.invlists, list);
    if (list_scores.size() < n) list_scores.resize(n);
    ScoreList(reinterpret_cast<const float*>(codes.get()), n, d, query,
              inner_product, list_scores.data());
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
      ++filled;
    }
    ++stats.lists_scanned;
    stats.candidates_scanned += n;
    // Entries with the label but closer than `closest` are not subtracted
    // twice: too_close may count some labelled ones, so clamp at 0.
    const size_t excluded_here = std::min(n, labelled + too_close);
    survivors += n - excluded_here;
    if (n > excluded_here) ++lists;
    if (lists >= plan.min_lists && survivors >= plan.min_candidates &&
        filled >= k) {
      break;
    }
  }
  stats.survivors_scanned += survivors;
  faiss::heap_reorder<C>(k, scores, rows);
}

void IvfProbe::Search(const float* queries, size_t nq, size_t k,
                      const SearchOptions& options, float* scores,
                      int64_t* rows, IvfProbeStats* stats) const {
  if (nq == 0 || k == 0) return;
  const Plan plan = PlanFor(k, options);
  const size_t nlist = ivf_.nlist;
  const size_t d = static_cast<size_t>(ivf_.d);
  const size_t chunk = std::max<size_t>(1, kRankEntries / nlist);
  thread_local std::vector<float> coarse;
  thread_local std::vector<IdxT> order;
  IvfProbeStats total;
  for (size_t q0 = 0; q0 < nq; q0 += chunk) {
    const size_t m = std::min(chunk, nq - q0);
    coarse.resize(m * nlist);
    order.resize(m * nlist);
    ivf_.quantizer->search(static_cast<IdxT>(m), queries + q0 * d,
                           static_cast<IdxT>(nlist), coarse.data(),
                           order.data());
    size_t lists_scanned = 0, lists_skipped = 0, scanned = 0, survived = 0;
    const IdxT* order_data = order.data();
#pragma omp parallel for if (m > 1) schedule(dynamic) \
    reduction(+ : lists_scanned, lists_skipped, scanned, survived)
    for (size_t j = 0; j < m; ++j) {
      const size_t i = q0 + j;
      IvfProbeStats one;
      if (ivf_.metric_type == faiss::METRIC_INNER_PRODUCT) {
        SearchOne<faiss::CMin<float, IdxT>>(queries + i * d, i, plan, options,
                                            order_data + j * nlist,
                                            scores + i * k, rows + i * k, one);
      } else {
        SearchOne<faiss::CMax<float, IdxT>>(queries + i * d, i, plan, options,
                                            order_data + j * nlist,
                                            scores + i * k, rows + i * k, one);
      }
      lists_scanned += one.lists_scanned;
      lists_skipped += one.lists_skipped;
      scanned += one.candidates_scanned;
      survived += one.survivors_scanned;
    }
    total.lists_scanned += lists_scanned;
    total.lists_skipped += lists_skipped;
    total.candidates_scanned += scanned;
    total.survivors_scanned += survived;
  }
  if (stats != nullptr) {
    stats->lists_scanned += total.lists_scanned;
    stats->lists_skipped += total.lists_skipped;
    stats->candidates_scanned += total.candidates_scanned;
    stats->survivors_scanned += total.survivors_scanned;
  }
}

}  // namespace hardneg

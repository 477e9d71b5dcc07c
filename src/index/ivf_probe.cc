#include "index/ivf_probe.h"

#include <cblas.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/utils/Heap.h>
#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HARDNEG_IVF_PROBE_X86 1
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>
#include <thread>
#include <utility>

#include "base/prefetch.h"
#include "index/cell_keys.h"
#include "index/ivf_flat_scan.h"
#include "index/row_dots.h"

namespace hardneg {
namespace {

using IdxT = faiss::Index::idx_t;

// Holds one query's heap in a batch's second pass (IvfProbe::PushLocked):
// a spin lock, since two threads seldom push into one query's heap at
// once and each holds it for one push. A holder the scheduler took off
// its core would keep the waiter spinning, so past kSpinsBeforeYield it
// yields.
class HeapLock {
 public:
  explicit HeapLock(std::atomic<bool>& held) : held_(held) {
    size_t spins = 0;
    while (held_.exchange(true, std::memory_order_acquire)) {
      while (held_.load(std::memory_order_relaxed)) {
        if (++spins < kSpinsBeforeYield) {
#ifdef HARDNEG_IVF_PROBE_X86
          _mm_pause();
#endif
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  ~HeapLock() { held_.store(false, std::memory_order_release); }
  HeapLock(const HeapLock&) = delete;
  HeapLock& operator=(const HeapLock&) = delete;

 private:
  static constexpr size_t kSpinsBeforeYield = 1024;
  std::atomic<bool>& held_;
};

// Whether query i's heap, whose k-th best score is `kth`, takes `score`
// at `row`: too close (closer than options.closest[i]), not (no better
// than `kth`, or skip_row skips it), or yes. The one order of these
// checks for every push (PushOne, PushLocked): skip_row, the costly one,
// is asked last.
enum class Admission { kTooClose, kNo, kYes };
template <class C>
Admission Admit(float score, int64_t row, size_t i,
                const SearchOptions& options, float kth) {
  if (!options.closest.empty() && C::cmp(options.closest[i], score)) {
    return Admission::kTooClose;
  }
  if (!C::cmp(kth, score)) return Admission::kNo;  // the sentinel until full
  if (options.skip_row && options.skip_row(i, row)) return Admission::kNo;
  return Admission::kYes;
}

// Coarse scores ranked per quantizer call, at most (about 12 bytes each):
// queries are ranked in chunks of kRankEntries / nlist.
constexpr size_t kRankEntries = size_t{1} << 20;
// Cell mode: a chunk of queries holds at most this many cell ranks (8
// bytes each), so that a chunk can be kCellChunkQueries large on an index
// of a few thousand cells.
constexpr size_t kCellRankEntries = size_t{1} << 22;

// Scores of one list's `n` entries against `query` into `out`.
void ScoreList(const float* codes, size_t n, size_t d, const float* query,
               bool inner_product, float* out) {
  if (inner_product) {
    RowDots(codes, n, d, query, 1, out);
    return;
  }
  for (size_t j = 0; j < n; ++j) out[j] = SquaredL2(query, codes + j * d, d);
}

// Rows first + which[0], ..., first + which[n - 1] of `rows` (d floats
// each) into `out`, one after another: the queries of one BatchDots, sgemm
// or quantizer call.
template <typename Row>
void GatherRows(const float* rows, size_t d, size_t first, const Row* which,
                size_t n, std::vector<float>& out) {
  out.resize(n * d);
  for (size_t j = 0; j < n; ++j) {
    std::copy_n(rows + (first + static_cast<size_t>(which[j])) * d, d,
                out.data() + j * d);
  }
}

// Below this many rows sgemm's packing costs more than it saves: the rows
// stay in cache across RowDots' passes.
constexpr size_t kMinSgemmRows = 512;

// out[a * n + r] = queries[a] . rows[r] for `nq` queries: sgemm for four
// or more over kMinSgemmRows rows or more, else RowDots (each row read
// once per three queries).
void BatchDots(const float* rows, size_t n, size_t d, const float* queries,
               size_t nq, float* out) {
  if (nq >= 4 && n >= kMinSgemmRows) {
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

// Cell mode ranks cells through a histogram of their scores: this many
// bins between a query's lowest and highest cell score.
constexpr size_t kRankBins = 1024;
// RankCells' groups on packed centroids: at most this many queries, whose
// scores (floats) fit in a core's L2 cache.
constexpr size_t kRankGroupQueries = 16;
constexpr size_t kRankGroupScores = size_t{1} << 16;

// The reduced pass's keys and bounds must stay far inside float's range.
constexpr double kMaxReducedKey = 1e36;

// SeedReduced rescores the entries of the k + kSeedSpare highest bounds
// first: a few spare, for those that skip_row or `closest` turns away.
// (With none spare, no different on W2, where neither does.)
constexpr size_t kSeedSpare = 4;

}  // namespace

std::unique_ptr<IvfProbe> IvfProbe::Create(faiss::Index& index,
                                           const CandidateStore& store,
                                           size_t default_min_candidates,
                                           IvfProbeUnit unit,
                                           ScanPrecision scan,
                                           bool reduced_ranking) {
  if (!IsIvfFlat(index) || !store.has_labels()) return nullptr;
  auto& ivf = dynamic_cast<faiss::IndexIVF&>(index);
  if (ivf.metric_type != faiss::METRIC_INNER_PRODUCT &&
      ivf.metric_type != faiss::METRIC_L2) {
    return nullptr;
  }
  std::unique_ptr<IvfProbe> probe(
      new IvfProbe(ivf, store, default_min_candidates));
  const faiss::InvertedLists& lists = *ivf.invlists;
  probe->offsets_.reserve(lists.nlist + 1);
  probe->offsets_.push_back(0);
  std::vector<int64_t> sorted;
  for (size_t l = 0; l < lists.nlist; ++l) {
    const size_t n = lists.list_size(l);
    faiss::InvertedLists::ScopedIds ids(&lists, l);
    sorted.resize(n);
    for (size_t j = 0; j < n; ++j) {
      const IdxT row = ids[j];
      if (row < 0 || static_cast<size_t>(row) >= store.size()) return nullptr;
      sorted[j] = store.label(static_cast<size_t>(row));
    }
    std::sort(sorted.begin(), sorted.end());
    for (size_t j = 0; j < n;) {
      size_t end = j + 1;
      while (end < n && sorted[end] == sorted[j]) ++end;
      probe->labels_.push_back(sorted[j]);
      probe->counts_.push_back(static_cast<uint32_t>(end - j));
      j = end;
    }
    probe->offsets_.push_back(static_cast<uint32_t>(probe->labels_.size()));
  }
  probe->labels_.shrink_to_fit();
  probe->counts_.shrink_to_fit();
  const size_t cells = probe->CellCount(lists.nlist);
  // Sorting in place needs FAISS's own lists and no direct map (whose
  // offsets the sort would invalidate); cells index entries in 32 bits.
  const bool sortable =
      dynamic_cast<faiss::ArrayInvertedLists*>(ivf.invlists) != nullptr &&
      ivf.direct_map.type == faiss::DirectMap::NoMap &&
      static_cast<size_t>(ivf.ntotal) <= std::numeric_limits<uint32_t>::max();
  const bool pays = cells > lists.nlist &&
                    cells * kMinCellEntries <= static_cast<size_t>(ivf.ntotal);
  if (sortable && cells > 0 &&
      (unit == IvfProbeUnit::kCell || (unit == IvfProbeUnit::kAuto && pays))) {
    // Reduced copies serve inner-product batches only.
    probe->MakeCells(ivf, store,
                     ivf.metric_type == faiss::METRIC_INNER_PRODUCT
                         ? PackedScan(scan, static_cast<size_t>(ivf.d))
                         : ScanPrecision::kF32,
                     reduced_ranking);
  }
  return probe;
}

size_t IvfProbe::CellsOf(size_t list) const {
  bool mixed = false;
  size_t cells = 0;
  for (size_t c = offsets_[list]; c < offsets_[list + 1]; ++c) {
    if (!InMixedCell(counts_[c])) {
      ++cells;
    } else {
      mixed = true;
    }
  }
  return cells + (mixed ? 1 : 0);
}

size_t IvfProbe::CellCount(size_t nlist) const {
  size_t cells = 0;
  for (size_t l = 0; l < nlist; ++l) cells += CellsOf(l);
  return cells;
}

void IvfProbe::SortByCell(faiss::InvertedLists& lists, size_t list,
                          const CandidateStore& store, size_t code_size) const {
  const size_t n = lists.list_size(list);
  std::vector<std::pair<bool, int64_t>> keys(n);
  {
    faiss::InvertedLists::ScopedIds ids(&lists, list);
    for (size_t j = 0; j < n; ++j) {
      const int64_t label = store.label(static_cast<size_t>(ids[j]));
      // The labels with a cell of their own by label, then the mixed
      // cell's entries by label.
      keys[j] = {InMixedCell(LabelCount(list, label)), label};
    }
  }
  if (!std::is_sorted(keys.begin(), keys.end())) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return keys[a] < keys[b]; });
    std::vector<IdxT> new_ids(n);
    std::vector<uint8_t> new_codes(n * code_size);
    {
      faiss::InvertedLists::ScopedIds ids(&lists, list);
      faiss::InvertedLists::ScopedCodes codes(&lists, list);
      for (size_t j = 0; j < n; ++j) {
        new_ids[j] = ids[order[j]];
        std::copy_n(codes.get() + order[j] * code_size, code_size,
                    new_codes.data() + j * code_size);
      }
    }
    lists.update_entries(list, 0, n, new_ids.data(), new_codes.data());
  }
}

void IvfProbe::MakeCells(faiss::IndexIVF& ivf, const CandidateStore& store,
                         ScanPrecision scan, bool reduced_ranking) {
  const size_t nlist = ivf.invlists->nlist;
  const size_t d = static_cast<size_t>(ivf.d);
  const size_t code_size = ivf.code_size;
  faiss::InvertedLists& lists = *ivf.invlists;
  // Each list's first cell.
  std::vector<size_t> first(nlist + 1, 0);
  for (size_t l = 0; l < nlist; ++l) {
    first[l + 1] = first[l] + CellsOf(l);
  }
  const size_t cells = first[nlist];
  cell_list_.resize(cells);
  cell_begin_.resize(cells);
  cell_size_.resize(cells);
  cell_label_.resize(cells);
  cell_mixed_.resize(cells);
  cell_centroids_.resize(cells * d);
  cell_sq_.resize(cells);
  mixed_begin_.assign(counts_.size(), 0);
  // Lists are independent: each thread sorts and measures its own.
#pragma omp parallel for schedule(dynamic)
  for (size_t l = 0; l < nlist; ++l) {
    const size_t n = lists.list_size(l);
    SortByCell(lists, l, store, code_size);
    faiss::InvertedLists::ScopedCodes codes(&lists, l);
    const auto* x = reinterpret_cast<const float*>(codes.get());
    std::vector<double> sum(d);
    size_t cell = first[l];
    auto add_cell = [&](size_t begin, size_t size, int64_t label, bool mixed) {
      cell_list_[cell] = static_cast<uint32_t>(l);
      cell_begin_[cell] = static_cast<uint32_t>(begin);
      cell_size_[cell] = static_cast<uint32_t>(size);
      cell_label_[cell] = label;
      cell_mixed_[cell] = mixed ? 1 : 0;
      // The mean in double: a cell may hold millions of entries.
      std::fill(sum.begin(), sum.end(), 0.0);
      for (size_t j = begin; j < begin + size; ++j) {
        for (size_t t = 0; t < d; ++t) sum[t] += x[j * d + t];
      }
      double sq = 0;
      float* mean = cell_centroids_.data() + cell * d;
      for (size_t t = 0; t < d; ++t) {
        mean[t] = static_cast<float>(sum[t] / static_cast<double>(size));
        sq += static_cast<double>(mean[t]) * mean[t];
      }
      cell_sq_[cell] = static_cast<float>(sq);
      ++cell;
    };
    size_t begin = 0;
    for (size_t c = offsets_[l]; c < offsets_[l + 1]; ++c) {
      if (InMixedCell(counts_[c])) continue;
      add_cell(begin, counts_[c], labels_[c], false);
      begin += counts_[c];
    }
    if (begin < n) add_cell(begin, n - begin, 0, true);
    // The mixed cell's labels, in order (SortByCell's).
    for (size_t c = offsets_[l]; c < offsets_[l + 1]; ++c) {
      if (!InMixedCell(counts_[c])) continue;
      mixed_begin_[c] = static_cast<uint32_t>(begin);
      begin += counts_[c];
    }
  }
  label_cells_.clear();
  for (size_t c = 0; c < cells; ++c) {
    if (cell_mixed_[c] == 0) {
      label_cells_.emplace_back(cell_label_[c], static_cast<uint32_t>(c));
    }
  }
  std::sort(label_cells_.begin(), label_cells_.end());
  label_cells_.shrink_to_fit();
  MakeSlots();
  if (scan != ScanPrecision::kF32) PackLists(lists, d, scan, reduced_ranking);
}

void IvfProbe::MakeSlots() {
  std::vector<int64_t> distinct(labels_);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  auto slot = [&](int64_t label) {
    return static_cast<uint32_t>(
        std::lower_bound(distinct.begin(), distinct.end(), label) -
        distinct.begin());
  };
  const size_t cells = cell_list_.size();
  cell_slot_.assign(cells, 0);  // (a mixed cell's is unused)
  // The mixed cells of each slot, CSR by slot (sorted, then counted).
  const size_t slots = distinct.size();
  slot_mixed_begin_.assign(slots + 1, 0);
  std::vector<std::pair<uint32_t, uint32_t>> pairs;  // (slot, mixed cell)
  for (size_t c = 0; c < cells; ++c) {
    if (cell_mixed_[c] == 0) {
      cell_slot_[c] = slot(cell_label_[c]);
      continue;
    }
    const size_t l = cell_list_[c];
    for (size_t e = offsets_[l]; e < offsets_[l + 1]; ++e) {
      if (InMixedCell(counts_[e])) {
        pairs.emplace_back(slot(labels_[e]), static_cast<uint32_t>(c));
      }
    }
  }
  std::sort(pairs.begin(), pairs.end());
  slot_mixed_cells_.resize(pairs.size());
  for (size_t p = 0; p < pairs.size(); ++p) {
    ++slot_mixed_begin_[pairs[p].first + 1];
    slot_mixed_cells_[p] = pairs[p].second;
  }
  for (size_t t = 0; t < slots; ++t) {
    slot_mixed_begin_[t + 1] += slot_mixed_begin_[t];
  }
}

void IvfProbe::PackLists(const faiss::InvertedLists& lists, size_t d,
                         ScanPrecision scan, bool reduced_ranking) {
  // Every list, and the centroids, centred on the store's mean
  // (index/reduced_scan.h): rows that share a direction keep the packed
  // values' precision for what differs, and one packing of a batch's
  // queries serves every list.
  const ReducedRows::Centring centre =
      ReducedRows::CentringOf(store_.data(), store_.size(), d);
  if (reduced_ranking) {
    centroid_rows_ = std::make_unique<ReducedRows>(
        cell_centroids_.data(), cell_list_.size(), d, scan, centre);
  }
  scan_ = scan;
  // Every list's lines in one allocation (ReducedLines: huge pages).
  size_t line_bytes = 0;
  for (size_t l = 0; l < lists.nlist; ++l) {
    const size_t n = lists.list_size(l);
    if (n != 0) line_bytes += ReducedRows::LineBytes(n, d, scan);
  }
  packed_lines_ = std::make_unique<ReducedLines>(line_bytes);
  reduced_.resize(lists.nlist);
  for (size_t l = 0; l < lists.nlist; ++l) {
    const size_t n = lists.list_size(l);
    if (n == 0) continue;
    faiss::InvertedLists::ScopedCodes codes(&lists, l);
    reduced_[l] = std::make_unique<ReducedRows>(
        reinterpret_cast<const float*>(codes.get()), n, d, scan, centre,
        packed_lines_.get());
    packed_max_residual_ =
        std::max(packed_max_residual_, reduced_[l]->max_residual());
    packed_max_norm_ =
        std::max(packed_max_norm_, reduced_[l]->max_reduced_norm());
    packed_centre_norm_ = reduced_[l]->centre_norm();
  }
}

IvfProbe::IvfProbe(const faiss::IndexIVF& ivf, const CandidateStore& store,
                   size_t default_min_candidates)
    : ivf_(ivf),
      store_(store),
      default_min_candidates_(default_min_candidates) {}

size_t IvfProbe::MemoryBytes() const {
  return offsets_.capacity() * sizeof(uint32_t) +
         labels_.capacity() * sizeof(int64_t) +
         counts_.capacity() * sizeof(uint32_t) +
         mixed_begin_.capacity() * sizeof(uint32_t) +
         label_cells_.capacity() * sizeof(label_cells_[0]) +
         cell_list_.capacity() * sizeof(uint32_t) +
         cell_begin_.capacity() * sizeof(uint32_t) +
         cell_size_.capacity() * sizeof(uint32_t) +
         cell_label_.capacity() * sizeof(int64_t) + cell_mixed_.capacity() +
         cell_centroids_.capacity() * sizeof(float) +
         cell_sq_.capacity() * sizeof(float) +
         (cell_slot_.capacity() + slot_mixed_begin_.capacity() +
          slot_mixed_cells_.capacity()) *
             sizeof(uint32_t) +
         PackedBytes() +
         (centroid_rows_ != nullptr ? centroid_rows_->MemoryBytes() : 0);
}

ScanPrecision IvfProbe::PackedScan(ScanPrecision scan, size_t dim) {
  // Only where the CPU runs it natively: the portable kernels are slower
  // than float32.
  const ScanPrecision packed = EffectiveScan(scan, dim);
  return CpuRunsScan(packed) ? packed : ScanPrecision::kF32;
}

size_t IvfProbe::BytesBound(size_t rows, size_t dim, size_t nlist,
                            ScanPrecision scan) {
  // Label counts (and cell mode's mixed_begin_, label slots and their
  // mixed cells): at most one (label, count, begin, slot, mixed cell) an
  // entry.
  size_t bytes = (nlist + 2) * sizeof(uint32_t) +
                 rows * (sizeof(int64_t) + 4 * sizeof(uint32_t));
  // kAuto makes cells only when they average kMinCellEntries entries.
  const size_t cells = rows / kMinCellEntries;
  bytes += cells * (dim * sizeof(float) + sizeof(float) + 4 * sizeof(uint32_t) +
                    sizeof(int64_t) + sizeof(uint8_t) +
                    sizeof(std::pair<int64_t, uint32_t>));
  // Each list packed on its own: up to a group's padding a list.
  const ScanPrecision packed = PackedScan(scan, dim);
  if (packed != ScanPrecision::kF32) {
    // The lists' lines share one allocation (ReducedLines), rounded up as
    // BytesFor rounds the lines of that many rows. Each list also keeps
    // its own copy of the shared centre: BytesFor of no rows (one copy
    // counted twice, a bound).
    bytes += ReducedRows::BytesFor(rows + nlist * (kReducedGroupRows - 1), dim,
                                   packed, /*centred=*/true) +
             nlist * ReducedRows::BytesFor(0, dim, packed, /*centred=*/true);
    // And the cells' centroids, packed for ranking.
    bytes += ReducedRows::BytesFor(cells + kReducedGroupRows, dim, packed,
                                   /*centred=*/true);
  }
  return bytes;
}

size_t IvfProbe::PackedBytes() const {
  size_t bytes = packed_lines_ != nullptr ? packed_lines_->PaddingBytes() : 0;
  for (const std::unique_ptr<ReducedRows>& rows : reduced_) {
    if (rows != nullptr) bytes += rows->MemoryBytes();
  }
  return bytes;
}

size_t IvfProbe::probes() const {
  return cells() ? cell_list_.size() : ivf_.nlist;
}

IvfProbe::Span IvfProbe::SpanOf(size_t probe) const {
  if (cells()) {
    return {cell_list_[probe], cell_begin_[probe], cell_size_[probe]};
  }
  return {probe, 0, ivf_.invlists->list_size(probe)};
}

size_t IvfProbe::Excluded(size_t probe, size_t i,
                          const SearchOptions& options) const {
  // (A plain pair, not the optional: GCC 12 warns it may be uninitialised.)
  const bool has_excluded =
      !options.excluded_label.empty() && options.excluded_label[i].has_value();
  if (!has_excluded) return 0;
  const int64_t excluded = *options.excluded_label[i];
  if (cells() && cell_mixed_[probe] == 0) {
    return cell_label_[probe] == excluded ? cell_size_[probe] : 0;
  }
  if (cells()) return ExcludedSpan(probe, i, options).n;
  return LabelCount(probe, excluded);
}

IvfProbe::Span IvfProbe::ExcludedSpan(size_t probe, size_t i,
                                      const SearchOptions& options) const {
  if (!cells() || cell_mixed_[probe] == 0 || options.excluded_label.empty() ||
      !options.excluded_label[i].has_value()) {
    return {};
  }
  // A mixed cell holds the label's entries when they are too few for a
  // cell of their own.
  const size_t list = cell_list_[probe];
  const size_t c = LabelEntry(list, *options.excluded_label[i]);
  if (c == kNoEntry || !InMixedCell(counts_[c])) return {};
  return {list, mixed_begin_[c], counts_[c]};
}

size_t IvfProbe::LabelEntry(size_t list, int64_t label) const {
  const auto begin = labels_.begin() + offsets_[list];
  const auto end = labels_.begin() + offsets_[list + 1];
  const auto it = std::lower_bound(begin, end, label);
  if (it == end || *it != label) return kNoEntry;
  return static_cast<size_t>(it - labels_.begin());
}

size_t IvfProbe::LabelCount(size_t list, int64_t label) const {
  const size_t c = LabelEntry(list, label);
  return c == kNoEntry ? 0 : counts_[c];
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
    plan.min_candidates =
        std::max(kAutoCandidatesPerResult * k, kAutoLists * AverageList());
  }
  return plan;
}

size_t IvfProbe::AverageList() const {
  return static_cast<size_t>(ivf_.ntotal) / std::max<size_t>(ivf_.nlist, 1);
}

size_t IvfProbe::PrefixRanks(const Plan& plan) const {
  const size_t nlist = std::max<size_t>(ivf_.nlist, 1);
  const size_t average_list = std::max<size_t>(1, AverageList());
  const size_t wanted = std::max(plan.min_candidates, plan.k);
  const size_t lists =
      plan.min_lists + (wanted + average_list - 1) / average_list;
  return std::min(nlist,
                  std::max(kMinPrefixRanks, kPrefixRanksPerList * lists));
}

size_t IvfProbe::PrefixEntries(const Plan& plan) const {
  // The plan's candidates, a quarter more for the cells that `closest`
  // thins, and the nprobe floor's lists at their average size.
  const size_t wanted = std::max(plan.min_candidates, plan.k);
  return wanted + wanted / 4 + plan.min_lists * AverageList();
}

void IvfProbe::SelectCells(float* score, size_t i, const SearchOptions& options,
                           size_t entries, std::vector<uint32_t>& out) const {
  const size_t cells = cell_list_.size();
  const bool inner_product = ivf_.metric_type == faiss::METRIC_INNER_PRODUCT;
  // Higher is nearer: q.c, or 2 q.c - |c|^2 (= |q|^2 - |q - c|^2). A
  // NaN (a query with one) ranks last. (CellKeys, CellBins and CellsFrom:
  // the loops over every cell, for every query.)
  float lo = 0;
  float hi = 0;
  CellKeys(score, inner_product ? nullptr : cell_sq_.data(), cells, &lo, &hi);
  if (!(lo <= hi)) lo = hi = 0;  // no finite score
  // A histogram of the scores (kRankBins between the lowest and the
  // highest finite one; -inf in the lowest bin, +inf in the highest)
  // finds the best bins whose cells hold `entries` without scanning
  // them twice; those cells are then sorted by score.
  const double range = static_cast<double>(hi) - lo;
  const RankBins binner{lo, range > 0 ? (kRankBins - 1) / range : 1};
  thread_local std::vector<uint16_t> bins;
  thread_local std::vector<size_t> mass;
  bins.resize(cells);
  mass.assign(kRankBins, 0);
  CellBins(score, cells, binner.lo, binner.scale, kRankBins - 1, bins.data());
  for (size_t c = 0; c < cells; ++c) mass[bins[c]] += cell_size_[c];
  // The query's own label's cells hold nothing it could take. (A mixed
  // cell's entries of the label count: finding how many would cost a
  // search per cell, for a prefix that is a guess.)
  uint32_t excluded_slot = kNoSlot;
  if (!options.excluded_label.empty() && options.excluded_label[i]) {
    const auto own = std::equal_range(
        label_cells_.begin(), label_cells_.end(),
        std::make_pair(*options.excluded_label[i], uint32_t{0}),
        [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto it = own.first; it != own.second; ++it) {
      mass[bins[it->second]] -= cell_size_[it->second];
      excluded_slot = cell_slot_[it->second];
    }
  }
  size_t cut = CutFor(mass, entries);
  // Raising scores only raises the cut: the selection is among the cells
  // at or above this one, and the mixed cells raised to it.
  out.clear();
  CellsFrom(bins.data(), cells, static_cast<uint16_t>(cut), out);
  if (RaiseMixedCells(kMixedRankShift * (hi - lo), excluded_slot, binner, cut,
                      score, bins, mass, out)) {
    cut = CutFor(mass, entries);
    out.erase(std::remove_if(out.begin(), out.end(),
                             [&](uint32_t c) { return bins[c] < cut; }),
              out.end());
  }
  OrderCells(score, bins.data(), cut, out);
}

uint16_t IvfProbe::RankBins::operator()(float v) const {
  return CellBin(v, lo, scale, kRankBins - 1);
}

size_t IvfProbe::CutFor(const std::vector<size_t>& mass, size_t entries) {
  size_t cut = kRankBins;
  size_t held = 0;
  while (cut > 0 && held < entries) held += mass[--cut];
  return cut;
}

bool IvfProbe::RaiseMixedCells(float shift, uint32_t excluded_slot,
                               const RankBins& binner, size_t cut, float* score,
                               std::vector<uint16_t>& bins,
                               std::vector<size_t>& mass,
                               std::vector<uint32_t>& selected) const {
  // Raising scores only raises the cut, so a mixed cell raised to a bin
  // below `cut` would still not be selected: only the cells whose score
  // less `shift` is at or above it raise their labels' mixed cells.
  // (Scores only rise: a mixed cell crosses the cut at most once.)
  bool raised = false;
  const size_t n = selected.size();
  for (size_t s = 0; s < n; ++s) {
    const uint32_t c = selected[s];
    if (cell_mixed_[c] != 0) continue;
    const uint32_t slot = cell_slot_[c];
    const float v = score[c] - shift;
    const uint16_t bin = binner(v);
    if (bin < cut || slot == excluded_slot) continue;
    for (uint32_t e = slot_mixed_begin_[slot]; e < slot_mixed_begin_[slot + 1];
         ++e) {
      const uint32_t m = slot_mixed_cells_[e];
      if (!(v > score[m])) continue;
      if (bins[m] < cut) selected.push_back(m);
      score[m] = v;
      mass[bins[m]] -= cell_size_[m];
      mass[bin] += cell_size_[m];
      bins[m] = bin;
      raised = true;
    }
  }
  return raised;
}

void IvfProbe::OrderCells(const float* score, const uint16_t* bins, size_t cut,
                          std::vector<uint32_t>& cells) {
  // Best first; ties by cell, so that every ranking of the same query
  // orders them alike. The bins are in score order: a counting sort puts
  // the cells in order of bin, highest first (and by index within one),
  // then each bin's few are sorted by score.
  const size_t keys = kRankBins - cut;  // key: kRankBins - 1 - bin
  thread_local std::vector<size_t> start;
  thread_local std::vector<uint32_t> sorted;
  start.assign(keys + 1, 0);
  for (uint32_t c : cells) ++start[kRankBins - bins[c]];
  for (size_t key = 0; key < keys; ++key) start[key + 1] += start[key];
  sorted.resize(cells.size());
  for (uint32_t c : cells) sorted[start[kRankBins - 1 - bins[c]]++] = c;
  // (start[key] is now the key's end, the next key's start.)
  size_t first = 0;
  for (size_t key = 0; key < keys; ++key) {
    std::sort(sorted.begin() + static_cast<std::ptrdiff_t>(first),
              sorted.begin() + static_cast<std::ptrdiff_t>(start[key]),
              [score](uint32_t a, uint32_t b) {
                return score[a] > score[b] || (score[a] == score[b] && a < b);
              });
    first = start[key];
  }
  cells.swap(sorted);
}

size_t IvfProbe::RankCells(const float* queries,
                           const std::vector<size_t>& which,
                           const SearchOptions& options, size_t entries,
                           std::vector<IdxT>& order,
                           std::vector<size_t>& counts) const {
  const size_t cells = cell_list_.size();
  const size_t d = static_cast<size_t>(ivf_.d);
  const size_t m = which.size();
  std::vector<std::vector<uint32_t>> ranked(m);
  if (centroid_rows_ != nullptr) {
    // Reduced scores (a ranking needs no exact ones): each thread scores a
    // group of queries against the packed centroids, and ranks them while
    // the scores are in its cache.
    const size_t group =
        std::clamp<size_t>(kRankGroupScores / cells, 1, kRankGroupQueries);
    const size_t groups = (m + group - 1) / group;
#pragma omp parallel if (groups > 1)
    {
      std::vector<float> batch, keys;
      ReducedQueries packed;
#pragma omp for schedule(dynamic)
      for (size_t g = 0; g < groups; ++g) {
        const size_t g0 = g * group;
        const size_t gm = std::min(group, m - g0);
        GatherRows(queries, d, 0, which.data() + g0, gm, batch);
        packed.Prepare(*centroid_rows_, batch.data(), gm);
        keys.resize(gm * cells);
        ReducedSink sink;
        sink.keys = keys.data();
        sink.key_stride = cells;
        ReducedScan(*centroid_rows_, packed, 0, cells, sink);
        for (size_t j = 0; j < gm; ++j) {
          SelectCells(keys.data() + j * cells, which[g0 + j], options, entries,
                      ranked[g0 + j]);
        }
      }
    }
  } else {
    const size_t group = std::max<size_t>(1, kRankEntries / cells);
    std::vector<float> batch, dots;
    for (size_t g0 = 0; g0 < m; g0 += group) {
      const size_t gm = std::min(group, m - g0);
      GatherRows(queries, d, 0, which.data() + g0, gm, batch);
      dots.resize(gm * cells);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(gm),
                  static_cast<int>(cells), static_cast<int>(d), 1.0f,
                  batch.data(), static_cast<int>(d), cell_centroids_.data(),
                  static_cast<int>(d), 0.0f, dots.data(),
                  static_cast<int>(cells));
#pragma omp parallel for if (gm > 1) schedule(dynamic)
      for (size_t j = 0; j < gm; ++j) {
        SelectCells(dots.data() + j * cells, which[g0 + j], options, entries,
                    ranked[g0 + j]);
      }
    }
  }
  size_t width = 0;
  for (const std::vector<uint32_t>& r : ranked) {
    width = std::max(width, r.size());
  }
  order.assign(m * width, -1);
  counts.resize(m);
  for (size_t j = 0; j < m; ++j) {
    std::copy(ranked[j].begin(), ranked[j].end(), order.begin() + j * width);
    counts[j] = ranked[j].size();
  }
  return width;
}

template <class C>
size_t IvfProbe::Scan(size_t probe, const float* query, size_t i,
                      const SearchOptions& options, size_t k, float* scores,
                      int64_t* rows, ProbeState& state) const {
  const Span span = SpanOf(probe);
  const size_t d = static_cast<size_t>(ivf_.d);
  faiss::InvertedLists::ScopedCodes codes(ivf_.invlists, span.list);
  faiss::InvertedLists::ScopedIds ids(ivf_.invlists, span.list);
  thread_local std::vector<float> probe_scores;
  if (probe_scores.size() < span.n) probe_scores.resize(span.n);
  ScoreList(reinterpret_cast<const float*>(codes.get()) + span.begin * d,
            span.n, d, query, ivf_.metric_type == faiss::METRIC_INNER_PRODUCT,
            probe_scores.data());
  Span skip = ExcludedSpan(probe, i, options);
  skip.begin -= span.begin;  // relative to the probe's entries
  return Push<C>(probe_scores.data(), span.n, ids.get() + span.begin, i,
                 options, k, scores, rows, state, skip);
}

template <class C>
bool IvfProbe::PushOne(float score, int64_t row, size_t i,
                       const SearchOptions& options, size_t k, float* scores,
                       int64_t* rows, ProbeState& state) const {
  const Admission admission = Admit<C>(score, row, i, options, scores[0]);
  if (admission != Admission::kYes) return admission == Admission::kNo;
  faiss::heap_replace_top<C>(k, scores, rows, score, row);
  ++state.filled;
  return true;
}

template <class C>
size_t IvfProbe::Push(const float* probe_scores, size_t n, const int64_t* ids,
                      size_t i, const SearchOptions& options, size_t k,
                      float* scores, int64_t* rows, ProbeState& state,
                      Span skip) const {
  size_t too_close = 0;
  for (size_t j = 0; j < n; ++j) {
    if (j - skip.begin < skip.n) continue;  // (unsigned: j >= skip.begin)
    if (!PushOne<C>(probe_scores[j], ids[j], i, options, k, scores, rows,
                    state)) {
      ++too_close;
    }
  }
  ++state.stats.probes_scanned;
  state.stats.candidates_scanned += n;
  return too_close;
}

template <class C>
void IvfProbe::Continue(const float* query, size_t i, const Plan& plan,
                        const SearchOptions& options, const int64_t* order,
                        size_t first, size_t ranked,
                        absl::Span<const int64_t> probed, float* scores,
                        int64_t* rows, ProbeState& state) const {
  for (size_t r = first; r < ranked && order[r] >= 0; ++r) {
    if (!probed.empty() &&
        std::binary_search(probed.begin(), probed.end(), order[r])) {
      continue;  // visited in an earlier ranking
    }
    state.prefix_end = r + 1;
    const auto probe = static_cast<size_t>(order[r]);
    const size_t n = SpanOf(probe).n;
    const size_t labelled = Excluded(probe, i, options);
    if (n == labelled) {
      if (n > 0) ++state.stats.probes_skipped;
      continue;
    }
    const size_t too_close =
        Scan<C>(probe, query, i, options, plan.k, scores, rows, state);
    Account(probe, n, labelled, too_close, state);
    if (PlanMet(plan, state)) {
      state.done = true;
      return;
    }
  }
  // Every probe was ranked and visited: nothing is left.
  if (ranked >= probes()) state.done = true;
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

void IvfProbe::Account(size_t probe, size_t n, size_t labelled,
                       size_t too_close, ProbeState& state) const {
  // too_close may include labelled entries: clamp rather than subtract
  // them twice.
  const size_t gone = std::min(n, labelled + too_close);
  state.stats.survivors_scanned += n - gone;
  if (n == gone) return;
  if (!cells()) {
    ++state.lists;
    return;
  }
  // A list counts once, however many of its cells held survivors.
  if (state.lists_seen.empty()) state.lists_seen.assign(ivf_.nlist, false);
  const uint32_t list = cell_list_[probe];
  if (!state.lists_seen[list]) {
    state.lists_seen[list] = true;
    state.seen_order.push_back(list);
    ++state.lists;
  }
}

bool IvfProbe::PlanMet(const Plan& plan, const ProbeState& state) {
  return state.lists >= plan.min_lists &&
         state.stats.survivors_scanned >= plan.min_candidates &&
         state.filled >= plan.k;
}

std::vector<uint32_t> IvfProbe::PlanProbes(size_t i, const Plan& plan,
                                           const SearchOptions& options,
                                           const int64_t* order, size_t prefix,
                                           ProbeState& state) const {
  std::vector<uint32_t> planned;
  // Distinct lists planned (cell mode: marked in `seen`).
  size_t lists = 0;
  std::vector<bool> seen(cells() ? ivf_.nlist : 0, false);
  size_t survivors = 0;
  size_t r = 0;
  while (r < prefix && order[r] >= 0) {
    const auto probe = static_cast<size_t>(order[r++]);
    const Span span = SpanOf(probe);
    const size_t labelled = Excluded(probe, i, options);
    if (span.n == labelled) {
      if (span.n > 0) ++state.stats.probes_skipped;
      continue;
    }
    planned.push_back(static_cast<uint32_t>(probe));
    survivors += span.n - labelled;
    if (!cells()) {
      ++lists;
    } else if (!seen[span.list]) {
      seen[span.list] = true;
      ++lists;
    }
    if (lists >= plan.min_lists && survivors >= plan.min_candidates &&
        survivors >= plan.k) {
      break;
    }
  }
  state.prefix_end = r;
  return planned;
}

// What BatchScan's threads share.
struct IvfProbe::Batch {
  const float* queries = nullptr;  // the Search call's
  size_t q0 = 0;                   // the batch's first query
  size_t m = 0;
  size_t k = 0;
  const SearchOptions* options = nullptr;
  float* scores = nullptr;  // the Search call's heaps
  int64_t* rows = nullptr;
  std::vector<ProbeState>* states = nullptr;  // relative to q0
  // The reduced pass: the batch packed, and each query's slack
  // coefficients (false: float32).
  bool reduced = false;
  ReducedQueries packed;
  std::vector<float> slack_a, slack_b, slack_c;
  // The second pass's, when reduced (null in the first pass, and in
  // float32): its threads push into the batch's heaps (scores, rows), query
  // j's behind heap_locks[j] (PushLocked), whose k-th best score is
  // screens[j].
  std::atomic<float>* screens = nullptr;
  std::atomic<bool>* heap_locks = nullptr;
};

// One ScanProbes thread's heaps and states for the batch's queries
// (relative to q0), and its buffers.
struct IvfProbe::CellScratch {
  std::vector<float> scores;
  std::vector<int64_t> rows;
  std::vector<ProbeState> states;
  ReducedQueries some;
  std::vector<float> a, b, c, screen;
  // Per query of a scan: its ExcludedSpan's entries.
  std::vector<size_t> skip_begin, skip_n;
  std::vector<float> batch, dots;
  // Offers waiting to be rescored, from this thread's current and earlier
  // reduced scans of the pass: the query (relative to q0), its index among
  // the scan's queries, the entry's float32 row and id, key + slack, and
  // which of the thread's scans offered it. The row and id point into
  // the lists past their Scoped* holders: reduced scans run only over
  // ArrayInvertedLists (Create), whose pointers stay valid while the
  // index is unchanged.
  struct Pending {
    uint32_t j;
    uint32_t query;
    const float* row;
    const IdxT* id;
    float bound;
    size_t scan;
  };
  std::vector<Pending> pending;
  size_t scans = 0;  // reduced scans this thread has begun
};

// One reduced scan of a cell by some of a batch's queries.
struct IvfProbe::CellScan {
  const IvfProbe* probe;
  const Batch* batch;
  CellScratch* part;     // the scanning thread's
  const uint32_t* mine;  // the scan's queries, relative to q0
  const float* x;        // the list's entries, float32
  const IdxT* ids;       // and their rows
  size_t begin;          // the cell's first entry in the list
  size_t* too_close;     // per query of the scan
  float* screen;         // per query of the scan
  size_t n;              // queries of the scan
};

float IvfProbe::Screen(const Batch& batch, size_t j) {
  return batch.screens[j].load(std::memory_order_relaxed);
}

bool IvfProbe::PushLocked(const Batch& batch, size_t j, float score,
                          int64_t row, ProbeState& state) const {
  using C = faiss::CMin<float, IdxT>;
  const size_t k = batch.k;
  const size_t i = batch.q0 + j;
  // The screen only rises, and never past the heap's k-th best: a score
  // that does not beat it now never enters. skip_row (a label read from
  // memory, in the Miner) is asked before the lock, which then guards only
  // the heap.
  const Admission admission =
      Admit<C>(score, row, i, *batch.options, Screen(batch, j));
  if (admission != Admission::kYes) return admission == Admission::kNo;
  HeapLock lock(batch.heap_locks[j]);
  float* scores = batch.scores + i * k;
  if (C::cmp(scores[0], score)) {
    faiss::heap_replace_top<C>(k, scores, batch.rows + i * k, score, row);
    ++state.filled;
    batch.screens[j].store(scores[0], std::memory_order_relaxed);
  }
  return true;
}

void IvfProbe::Offer(void* context, size_t query, size_t row, float key,
                     float slack) {
  auto& scan = *static_cast<CellScan*>(context);
  // The scan starts at a whole group, which may begin before the cell; the
  // entries of the query's excluded label are not rescored.
  if (row < scan.begin ||
      row - scan.part->skip_begin[query] < scan.part->skip_n[query]) {
    return;
  }
  CellScratch& part = *scan.part;
  const size_t d = static_cast<size_t>(scan.probe->ivf_.d);
  part.pending.push_back({scan.mine[query], static_cast<uint32_t>(query),
                          scan.x + row * d, scan.ids + row, key + slack,
                          part.scans});
  if (part.pending.size() == kPendingRescores) {
    scan.probe->Rescore(*scan.batch, part, &scan);
  }
}

void IvfProbe::Rescore(const Batch& batch, CellScratch& part,
                       CellScan* scan) const {
  const size_t d = static_cast<size_t>(ivf_.d);
  // The rows of the offers still above their screens, all asked for
  // before the first is read, so that their misses overlap (see the class
  // comment).
  for (const CellScratch::Pending& offer : part.pending) {
    if (offer.bound >= Screen(batch, offer.j)) {
      PrefetchLines(offer.row, d * sizeof(float));
      __builtin_prefetch(offer.id);
    }
  }
  for (const CellScratch::Pending& offer : part.pending) {
    const size_t j = offer.j;
    // The screen may have risen since the offer.
    if (offer.bound < Screen(batch, j)) continue;
    const size_t i = batch.q0 + j;
    ProbeState& state = part.states[j];
    ++state.stats.candidates_rescored;
    const float score = FloatDot(batch.queries + i * d, offer.row, d);
    const bool current = scan != nullptr && offer.scan == part.scans;
    if (!PushLocked(batch, j, score, *offer.id, state)) {
      if (current) {
        ++scan->too_close[offer.query];
      } else {
        // An earlier scan's cell was counted already, with this entry
        // among its survivors (ScanReduced made sure others stay).
        --state.stats.survivors_scanned;
      }
    }
    // The k-th best score so far (whichever thread pushed it): the rest
    // of the scan offers only what could still beat it.
    if (current) scan->screen[offer.query] = Screen(batch, j);
  }
  part.pending.clear();
  if (scan == nullptr) return;
  for (size_t q = 0; q < scan->n; ++q) {
    scan->screen[q] = std::max(scan->screen[q], Screen(batch, scan->mine[q]));
  }
}

void IvfProbe::PackBatch(Batch& batch) const {
  const ReducedRows* prototype = nullptr;
  for (const std::unique_ptr<ReducedRows>& list_rows : reduced_) {
    if (list_rows != nullptr) {
      prototype = list_rows.get();
      break;
    }
  }
  batch.reduced = prototype != nullptr;
  if (!batch.reduced) return;
  const size_t d = static_cast<size_t>(ivf_.d);
  const size_t m = batch.m;
  // Prepare depends on the rows' dim, precision and centre only (every
  // list's).
  batch.packed.Prepare(*prototype, batch.queries + batch.q0 * d, m);
  batch.slack_a.resize(m);
  batch.slack_b.resize(m);
  batch.slack_c.resize(m);
  const ReducedQueries& packed = batch.packed;
  for (size_t j = 0; j < m && batch.reduced; ++j) {
    batch.slack_a[j] = FloatAbove(packed.a(j));
    batch.slack_b[j] = FloatAbove(packed.b(j));
    batch.slack_c[j] = FloatAbove(packed.c(j));
    // Float32 for a batch whose keys could leave float's range.
    const float* q = batch.queries + (batch.q0 + j) * d;
    const double norm = std::sqrt(static_cast<double>(FloatDot(q, q, d)));
    const double row = packed_centre_norm_ + packed_max_residual_ +
                       packed_max_norm_;  // |x| at most
    const double largest = packed.a(j) * packed_max_residual_ +
                           packed.b(j) * packed_max_norm_ + packed.c(j) +
                           (norm + row) * (norm + row);
    batch.reduced = largest < kMaxReducedKey;
  }
}

ReducedSink IvfProbe::SlackSink(const Batch& batch,
                                absl::Span<const uint32_t> mine,
                                CellScratch& part) {
  const size_t n = mine.size();
  part.some.Select(batch.packed, mine.data(), n);
  part.a.resize(n);
  part.b.resize(n);
  part.c.resize(n);
  for (size_t j = 0; j < n; ++j) {
    part.a[j] = batch.slack_a[mine[j]];
    part.b[j] = batch.slack_b[mine[j]];
    part.c[j] = batch.slack_c[mine[j]];
  }
  ReducedSink sink;
  sink.slack_a = part.a.data();
  sink.slack_b = part.b.data();
  sink.slack_c = part.c.data();
  return sink;
}

void IvfProbe::ScanReduced(const Batch& batch, size_t probe, const Span& span,
                           absl::Span<const uint32_t> mine, const float* x,
                           const IdxT* ids, CellScratch& part,
                           size_t* too_close) const {
  // The cell's packed entries, screened by each query's k-th best score
  // so far; what passes is rescored in float32 (Rescore).
  const size_t n = mine.size();
  ReducedSink sink = SlackSink(batch, mine, part);
  part.screen.resize(n);
  part.skip_begin.resize(n);
  part.skip_n.resize(n);
  for (size_t j = 0; j < n; ++j) {
    part.screen[j] = Screen(batch, mine[j]);
    const Span skip = ExcludedSpan(probe, batch.q0 + mine[j], *batch.options);
    part.skip_begin[j] = skip.begin;
    part.skip_n[j] = skip.n;
  }
  ++part.scans;
  CellScan scan{this, &batch,     &part,     mine.data(),        x,
                ids,  span.begin, too_close, part.screen.data(), n};
  sink.screen = part.screen.data();
  sink.offer = &IvfProbe::Offer;
  sink.context = &scan;
  const size_t group_begin = span.begin / kReducedGroupRows * kReducedGroupRows;
  ReducedScan(*reduced_[span.list], part.some, group_begin, span.begin + span.n,
              sink);
  // The offers still pending wait for the next scans' (a few a cell, each
  // a random read: eight at a time overlap their misses better), unless
  // one of them could leave this cell's query without a survivor: then
  // ScanProbes' Account must see their fate.
  bool settle = false;
  for (size_t j = 0; j < n && !settle; ++j) {
    settle = span.n - std::min(span.n, part.skip_n[j] + too_close[j]) <=
             part.pending.size();
  }
  if (settle) Rescore(batch, part, &scan);
  for (uint32_t j : mine) {
    ProbeState& state = part.states[j];
    ++state.stats.probes_scanned;
    state.stats.candidates_scanned += span.n;
  }
}

void IvfProbe::SeedReduced(const Batch& batch, size_t probe, const Span& span,
                           absl::Span<const uint32_t> mine, const float* x,
                           const IdxT* ids, CellScratch& part,
                           size_t* too_close) const {
  // Every entry's key plus its slack (the kernel's, as its screen would
  // compare them) bounds its float32 score from above. The entries of the k +
  // kSeedSpare highest bounds are rescored first, which fills the heap
  // with about the cell's best: then every other entry whose bound
  // reaches the heap's k-th best score (the screen, rising) is rescored,
  // as ScanReduced offers them. An entry left out has a bound, so a
  // score, below a k-th best score of entries rescored: it could not
  // have entered the top k, and the heap ends as the float32 scan's would.
  using C = faiss::CMin<float, IdxT>;
  const size_t d = static_cast<size_t>(ivf_.d);
  const size_t k = batch.k;
  const size_t n = mine.size();
  const ReducedRows& packed = *reduced_[span.list];
  if (span.n == 0) return;  // (PlanProbes plans no empty probe)
  const size_t group_begin = span.begin / kReducedGroupRows * kReducedGroupRows;
  const size_t end = span.begin + span.n;
  // Bounds, by entry of the cell's groups (from group_begin).
  const size_t stride = end - group_begin;
  part.dots.resize(n * stride);
  ReducedSink sink = SlackSink(batch, mine, part);
  sink.keys = part.dots.data();
  sink.key_stride = stride;
  sink.key_first = group_begin;
  ReducedScan(packed, part.some, group_begin, end, sink);
  const size_t first = std::min(span.n, k + kSeedSpare);
  for (size_t j = 0; j < n; ++j) {
    const size_t local = mine[j];
    const size_t i = batch.q0 + local;
    const Span skip = ExcludedSpan(probe, i, *batch.options);
    const auto skipped = [&skip](size_t r) { return r - skip.begin < skip.n; };
    // Entries of the excluded label are never rescored.
    float* const bounds = part.dots.data() + j * stride;
    const auto bound = [&](size_t r) -> float& {
      return bounds[r - group_begin];
    };
    for (size_t r = skip.begin; r < skip.begin + skip.n; ++r) {
      bound(r) = -std::numeric_limits<float>::infinity();
    }
    part.batch.assign(&bound(span.begin), bounds + stride);
    const auto nth =
        part.batch.begin() + static_cast<std::ptrdiff_t>(first - 1);
    std::nth_element(part.batch.begin(), nth, part.batch.end(),
                     std::greater<float>());
    const float top = *nth;
    const auto best = [&](size_t r) { return !skipped(r) && bound(r) >= top; };
    float* heap_scores = part.scores.data() + local * k;
    int64_t* heap_rows = part.rows.data() + local * k;
    ProbeState& state = part.states[local];
    const float* query = batch.queries + i * d;
    const auto rescore = [&](size_t r) {
      ++state.stats.candidates_rescored;
      if (!PushOne<C>(FloatDot(query, x + r * d, d), ids[r], i, *batch.options,
                      k, heap_scores, heap_rows, state)) {
        ++too_close[j];
      }
    };
    for (size_t r = span.begin; r < end; ++r) {
      if (best(r)) PrefetchLines(x + r * d, d * sizeof(float));
    }
    for (size_t r = span.begin; r < end; ++r) {
      if (best(r)) rescore(r);
    }
    for (size_t r = span.begin; r < end; ++r) {
      if (!skipped(r) && !best(r) && bound(r) >= heap_scores[0]) rescore(r);
    }
    ++state.stats.probes_scanned;
    state.stats.candidates_scanned += span.n;
  }
}

void IvfProbe::ScanFloat(const Batch& batch, size_t probe, const Span& span,
                         absl::Span<const uint32_t> mine, const float* x,
                         const IdxT* ids, CellScratch& part,
                         size_t* too_close) const {
  using C = faiss::CMin<float, IdxT>;
  const size_t d = static_cast<size_t>(ivf_.d);
  const size_t k = batch.k;
  GatherRows(batch.queries, d, batch.q0, mine.data(), mine.size(), part.batch);
  part.dots.resize(mine.size() * span.n);
  BatchDots(x + span.begin * d, span.n, d, part.batch.data(), mine.size(),
            part.dots.data());
  for (size_t j = 0; j < mine.size(); ++j) {
    const size_t local = mine[j];
    const size_t i = batch.q0 + local;
    Span skip = ExcludedSpan(probe, i, *batch.options);
    skip.begin -= span.begin;  // relative to the probe's entries
    too_close[j] =
        Push<C>(part.dots.data() + j * span.n, span.n, ids + span.begin, i,
                *batch.options, k, part.scores.data() + local * k,
                part.rows.data() + local * k, part.states[local], skip);
  }
}

void IvfProbe::BatchScan(const float* queries, size_t q0, size_t m,
                         const Plan& plan, const SearchOptions& options,
                         const int64_t* order, size_t prefix, float* scores,
                         int64_t* rows, std::vector<ProbeState>& states) const {
  using C = faiss::CMin<float, IdxT>;
  const size_t k = plan.k;
  // Each query's plan from label counts alone (in parallel: a plan walks
  // a few hundred ranks); then which queries scan each probe: each
  // query's first kSeedProbes probes in a first pass (SeedReduced when
  // the batch is reduced, else float32), the rest in a second, reduced
  // when the batch is, whose screens then start at the k-th best score of
  // the first.
  std::vector<std::vector<uint32_t>> planned(m);
#pragma omp parallel for if (m > 1) schedule(dynamic, 8)
  for (size_t j = 0; j < m; ++j) {
    faiss::heap_heapify<C>(k, scores + (q0 + j) * k, rows + (q0 + j) * k);
    planned[j] = PlanProbes(q0 + j, plan, options, order + j * prefix, prefix,
                            states[j]);
  }
  const Probers seed = MakeProbers(planned, 0, kSeedProbes);
  const Probers rest = MakeProbers(planned, kSeedProbes, probes());
  Batch batch;
  batch.queries = queries;
  batch.q0 = q0;
  batch.m = m;
  batch.k = k;
  batch.options = &options;
  batch.scores = scores;
  batch.rows = rows;
  batch.states = &states;
  PackBatch(batch);
  ScanProbes(batch, seed, batch.reduced ? Pass::kSeed : Pass::kFloat);
  // The screens start at the first pass's k-th best scores.
  std::vector<std::atomic<float>> screens(batch.reduced ? m : 0);
  std::vector<std::atomic<bool>> heap_locks(screens.size());
  for (size_t j = 0; j < screens.size(); ++j) {
    screens[j].store(scores[(q0 + j) * k], std::memory_order_relaxed);
  }
  if (batch.reduced) {
    batch.screens = screens.data();
    batch.heap_locks = heap_locks.data();
  }
  ScanProbes(batch, rest, batch.reduced ? Pass::kReduced : Pass::kFloat);
}

IvfProbe::Probers IvfProbe::MakeProbers(
    const std::vector<std::vector<uint32_t>>& planned, size_t from,
    size_t to) const {
  Probers probers;
  probers.begin.assign(probes() + 1, 0);
  for (const std::vector<uint32_t>& plan : planned) {
    for (size_t r = from; r < std::min(to, plan.size()); ++r) {
      ++probers.begin[plan[r] + 1];
    }
  }
  for (size_t p = 0; p < probes(); ++p) {
    probers.begin[p + 1] += probers.begin[p];
  }
  probers.queries.resize(probers.begin[probes()]);
  std::vector<uint32_t> next(probers.begin.begin(), probers.begin.end() - 1);
  for (size_t j = 0; j < planned.size(); ++j) {
    const std::vector<uint32_t>& plan = planned[j];
    for (size_t r = from; r < std::min(to, plan.size()); ++r) {
      probers.queries[next[plan[r]]++] = static_cast<uint32_t>(j);
    }
  }
  return probers;
}

void IvfProbe::ScanProbes(const Batch& batch, const Probers& probers,
                          Pass pass) const {
  const size_t m = batch.m;
  const size_t k = batch.k;
  std::vector<CellScratch> parts(static_cast<size_t>(omp_get_max_threads()));
#pragma omp parallel
  {
    // Each thread scans whole probes, for all their queries: the reduced
    // pass into the batch's heaps (PushLocked), the others into heaps of
    // the thread's own that start at k copies of the query's k-th best
    // score so far (rows -1): they take only what beats it, and are
    // merged at the end. Its states are its own either way.
    CellScratch& part = parts[static_cast<size_t>(omp_get_thread_num())];
    if (pass != Pass::kReduced) {
      part.scores.resize(m * k);
      part.rows.assign(m * k, -1);
      for (size_t j = 0; j < m; ++j) {
        std::fill_n(part.scores.data() + j * k, k,
                    batch.scores[(batch.q0 + j) * k]);
      }
    }
    part.states.assign(m, ProbeState());
    std::vector<size_t> too_close;
    // Dynamic: a probe's cost is its entries times its queries, which
    // vary widely; a static split left the threads idle 12% of the reduced
    // pass (W2, own class excluded, 256 queries on two threads).
#pragma omp for schedule(dynamic, 8)
    for (size_t probe = 0; probe < probes(); ++probe) {
      const absl::Span<const uint32_t> mine = probers.of(probe);
      if (mine.empty()) continue;
      const Span span = SpanOf(probe);
      faiss::InvertedLists::ScopedCodes codes(ivf_.invlists, span.list);
      faiss::InvertedLists::ScopedIds ids(ivf_.invlists, span.list);
      const auto* x = reinterpret_cast<const float*>(codes.get());
      too_close.assign(mine.size(), 0);
      if (pass == Pass::kReduced) {
        ScanReduced(batch, probe, span, mine, x, ids.get(), part,
                    too_close.data());
      } else if (pass == Pass::kSeed) {
        SeedReduced(batch, probe, span, mine, x, ids.get(), part,
                    too_close.data());
      } else {
        ScanFloat(batch, probe, span, mine, x, ids.get(), part,
                  too_close.data());
      }
      for (size_t j = 0; j < mine.size(); ++j) {
        Account(probe, span.n,
                Excluded(probe, batch.q0 + mine[j], *batch.options),
                too_close[j], part.states[mine[j]]);
      }
    }
    // The offers the last scans left pending.
    Rescore(batch, part, nullptr);
  }
  for (const CellScratch& part : parts) {
    if (!part.states.empty()) MergePart(batch, part);
  }
}

void IvfProbe::MergePart(const Batch& batch, const CellScratch& part) const {
  using C = faiss::CMin<float, IdxT>;
  const size_t k = batch.k;
  for (size_t j = 0; j < batch.m; ++j) {
    float* scores = batch.scores + (batch.q0 + j) * k;
    int64_t* rows = batch.rows + (batch.q0 + j) * k;
    // (No heaps of its own after the reduced pass.)
    for (size_t e = j * k; e < std::min((j + 1) * k, part.rows.size()); ++e) {
      if (part.rows[e] >= 0 && C::cmp(scores[0], part.scores[e])) {
        faiss::heap_replace_top<C>(k, scores, rows, part.scores[e],
                                   part.rows[e]);
      }
    }
    const ProbeState& from = part.states[j];
    ProbeState& to = (*batch.states)[j];
    to.filled += from.filled;
    to.stats += from.stats;
    if (!cells()) {
      to.lists += from.lists;
      continue;
    }
    // A list counts once, whichever threads' probes held survivors in it.
    for (uint32_t list : from.seen_order) {
      if (to.lists_seen.empty()) to.lists_seen.assign(ivf_.nlist, false);
      if (!to.lists_seen[list]) {
        to.lists_seen[list] = true;
        to.seen_order.push_back(list);
        ++to.lists;
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
    GatherRows(queries, d, q0, rest.data() + b0, m, batch);
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

void IvfProbe::ResumeCells(const float* queries, size_t q0, const Plan& plan,
                           const SearchOptions& options, size_t entries,
                           size_t prefix, const std::vector<IdxT>& prefix_order,
                           float* scores, int64_t* rows,
                           std::vector<ProbeState>& states) const {
  const size_t d = static_cast<size_t>(ivf_.d);
  // The queries not done, and the cells each has visited (sorted).
  std::vector<size_t> rest;
  std::vector<std::vector<IdxT>> probed;
  for (size_t j = 0; j < states.size(); ++j) {
    if (states[j].done) continue;
    rest.push_back(j);
    const auto begin =
        prefix_order.begin() + static_cast<std::ptrdiff_t>(j * prefix);
    std::vector<IdxT>& seen = probed.emplace_back(
        begin, begin + static_cast<std::ptrdiff_t>(states[j].prefix_end));
    std::sort(seen.begin(), seen.end());
  }
  // Rankings of every cell for a chunk of queries stay within
  // kRankEntries.
  const size_t chunk = std::max<size_t>(1, kRankEntries / probes());
  std::vector<size_t> which;
  std::vector<IdxT> order;
  std::vector<size_t> counts;
  // Each round ranks cells for four times the entries; the last ranks all
  // of them, after which every query is done.
  while (!rest.empty()) {
    entries = entries > std::numeric_limits<size_t>::max() / 4
                  ? std::numeric_limits<size_t>::max()
                  : entries * 4;
    for (size_t a0 = 0; a0 < rest.size(); a0 += chunk) {
      const size_t m = std::min(chunk, rest.size() - a0);
      which.resize(m);
      for (size_t a = 0; a < m; ++a) which[a] = q0 + rest[a0 + a];
      const size_t width =
          RankCells(queries, which, options, entries, order, counts);
#pragma omp parallel for if (m > 1) schedule(dynamic)
      for (size_t a = 0; a < m; ++a) {
        const size_t i = which[a];
        ProbeState& state = states[rest[a0 + a]];
        ContinueAny(queries + i * d, i, plan, options, order.data() + a * width,
                    0, counts[a], probed[a0 + a], scores + i * plan.k,
                    rows + i * plan.k, state);
        if (state.done) continue;
        // Not done: it visited every cell of this ranking.
        std::vector<IdxT>& seen = probed[a0 + a];
        const auto begin =
            order.begin() + static_cast<std::ptrdiff_t>(a * width);
        seen.insert(seen.end(), begin,
                    begin + static_cast<std::ptrdiff_t>(counts[a]));
        std::sort(seen.begin(), seen.end());
        seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
      }
    }
    size_t kept = 0;
    for (size_t a = 0; a < rest.size(); ++a) {
      if (states[rest[a]].done) continue;
      if (kept != a) {  // (a vector moved onto itself would be emptied)
        rest[kept] = rest[a];
        probed[kept] = std::move(probed[a]);
      }
      ++kept;
    }
    rest.resize(kept);
    probed.resize(kept);
  }
}

size_t IvfProbe::ChunkSize(size_t nq, const Plan& plan) const {
  // (Cell mode: a query whose cells all score alike ranks every cell, so
  // a chunk's rankings are bounded too, by kCellRankEntries.) Chunks of
  // equal size: a small last chunk would read nearly every cell for a few
  // queries.
  const size_t most =
      cells() ? std::clamp(kCellRankEntries / probes(), kMinBatchQueries,
                           kCellChunkQueries)
              : std::max<size_t>(1, kRankEntries / PrefixRanks(plan));
  // (Not below kMinBatchQueries where the whole would not be.)
  const size_t pieces = std::min((nq + most - 1) / most,
                                 std::max<size_t>(1, nq / kMinBatchQueries));
  return (nq + pieces - 1) / pieces;
}

void IvfProbe::Search(const float* queries, size_t nq, size_t k,
                      const SearchOptions& options, float* scores,
                      int64_t* rows, IvfProbeStats* stats) const {
  if (nq == 0 || k == 0) return;
  const Plan plan = PlanFor(k, options);
  const size_t d = static_cast<size_t>(ivf_.d);
  // Most queries stop within a short prefix of the ranking: rank that
  // many lists (or cells holding that many entries) first, and the rest
  // only for the queries that get past it.
  const size_t entries = PrefixEntries(plan);
  const size_t chunk = ChunkSize(nq, plan);
  std::vector<float> coarse;
  std::vector<IdxT> order;
  std::vector<size_t> counts, which;
  std::vector<ProbeState> states;
  for (size_t q0 = 0; q0 < nq; q0 += chunk) {
    const size_t m = std::min(chunk, nq - q0);
    size_t prefix = 0;
    if (cells()) {
      which.resize(m);
      std::iota(which.begin(), which.end(), q0);
      prefix = RankCells(queries, which, options, entries, order, counts);
    } else {
      prefix = PrefixRanks(plan);
      coarse.resize(m * prefix);
      order.resize(m * prefix);
      ivf_.quantizer->search(static_cast<IdxT>(m), queries + q0 * d,
                             static_cast<IdxT>(prefix), coarse.data(),
                             order.data());
      counts.assign(m, prefix);
    }
    states.assign(m, ProbeState());
    if (ivf_.metric_type == faiss::METRIC_INNER_PRODUCT &&
        m >= kMinBatchQueries) {
      // Queries share probe reads (and sgemm) probe by probe; those the
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
                    order.data() + j * prefix, states[j].prefix_end, counts[j],
                    {}, scores + i * k, rows + i * k, states[j]);
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
                    order.data() + j * prefix, 0, counts[j], {}, scores + i * k,
                    rows + i * k, states[j]);
      }
    }
    if (cells()) {
      ResumeCells(queries, q0, plan, options, entries, prefix, order, scores,
                  rows, states);
    } else {
      Resume(queries, q0, plan, options, prefix, order, scores, rows, states);
    }
    Finish(q0, k, states, scores, rows, stats);
  }
}

void IvfProbe::Finish(size_t q0, size_t k,
                      const std::vector<ProbeState>& states, float* scores,
                      int64_t* rows, IvfProbeStats* stats) const {
  for (size_t j = 0; j < states.size(); ++j) {
    const size_t i = q0 + j;
    if (ivf_.metric_type == faiss::METRIC_INNER_PRODUCT) {
      faiss::heap_reorder<faiss::CMin<float, IdxT>>(k, scores + i * k,
                                                    rows + i * k);
    } else {
      faiss::heap_reorder<faiss::CMax<float, IdxT>>(k, scores + i * k,
                                                    rows + i * k);
    }
    if (stats == nullptr) continue;
    *stats += states[j].stats;
    stats->lists_reached += states[j].lists;
  }
}

}  // namespace hardneg

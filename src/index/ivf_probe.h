// IvfProbe: hardneg's own search over a FAISS IVF-Flat index's quantizer
// and inverted lists, for queries that exclude candidates (their class
// label, their own id, their positives).
//
// FAISS probes a fixed nprobe lists. When a query excludes its own class,
// the nearest lists hold mostly that class, and the negatives live in lists
// a fixed nprobe never reaches. IvfProbe instead ranks the lists by their
// centroids' scores (a prefix of the ranking first, all lists for the
// queries that get past it) and probes them in that order:
//   - a list whose entries all carry the excluded label is skipped without
//     being scanned (per-list label counts, built from the store's labels
//     when the probe is created, at build and at load time);
//   - a scanned list's candidates that SearchOptions allows to skip
//     (skip_row, closest) never take a place in the top-k;
//   - probing stops once the query has scanned `min_candidates` surviving
//     candidates (entries without the excluded label and not skipped by
//     `closest`), at least `nprobe` lists that held survivors (skipped
//     lists do not count towards that floor), and k results; or when no
//     list is left.
// Scores are those of FAISS's IVF-Flat (inner product, or squared L2),
// computed with SIMD. A batch of kMinBatchQueries or more inner-product
// queries plans each query's lists from the label counts, then scans list
// by list, each list read once for all the queries probing it (sgemm);
// queries the plan left short probe on alone.
//
// Immutable after Create: Search may be called from any number of threads.
// The FAISS index and the store must outlive the probe, unchanged.
#ifndef HARDNEG_SRC_INDEX_IVF_PROBE_H_
#define HARDNEG_SRC_INDEX_IVF_PROBE_H_

#include <faiss/IndexIVF.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/types/span.h"
#include "corpus/candidate_store.h"
#include "index/vector_index.h"

namespace hardneg {

// What one IvfProbe::Search did, summed over its queries.
struct IvfProbeStats {
  size_t lists_scanned = 0;
  // Lists passed over unscanned: every entry carried the excluded label.
  size_t lists_skipped = 0;
  size_t candidates_scanned = 0;  // entries scored
  size_t survivors_scanned = 0;   // of those, not excluded by label/closest
};

class IvfProbe {
 public:
  // When min_candidates is 0 everywhere: kAutoCandidatesPerResult x k, and
  // at least kAutoLists average lists' worth of entries. Eight lists cost
  // what FAISS's nprobe 8 does, which on the bench's W2 (README, "IVF")
  // finds 0.97 of the exact negatives at over 5x the exact miner; a deep
  // window (k in the hundreds) scans proportionally more.
  static constexpr size_t kAutoCandidatesPerResult = 64;
  static constexpr size_t kAutoLists = 8;

  // A probe over `index` (which must stay unchanged) for `store`'s rows,
  // or null when it does not apply: `index` is not IVF-Flat (IsIvfFlat),
  // the store has no labels, or a list entry's id is not a store row.
  // `default_min_candidates` is used by searches that set none (0: auto).
  static std::unique_ptr<IvfProbe> Create(const faiss::Index& index,
                                          const CandidateStore& store,
                                          size_t default_min_candidates);

  // FAISS's IndexIVF::search contract: for each of `nq` queries, the `k`
  // best rows best first, -1 padded (scores then FAISS's sentinel), with
  // options.skip_row / closest / excluded_label / nprobe /
  // ivf_min_candidates applied as the file comment says. Adds what it did
  // to `*stats` when given. Throws faiss::FaissException when FAISS does.
  void Search(const float* queries, size_t nq, size_t k,
              const SearchOptions& options, float* scores, int64_t* rows,
              IvfProbeStats* stats = nullptr) const;

  // Bytes of the per-list label counts.
  size_t MemoryBytes() const;

  // Entries of `list` with `label` (0 when none).
  size_t LabelCount(size_t list, int64_t label) const;

  IvfProbe(const IvfProbe&) = delete;
  IvfProbe& operator=(const IvfProbe&) = delete;

 private:
  IvfProbe(const faiss::IndexIVF& ivf, size_t default_min_candidates);

  // The probe settings of one search (after defaulting).
  struct Plan {
    size_t k = 0;
    size_t min_lists = 1;
    size_t min_candidates = 0;
  };
  // Where one query's probing stands.
  struct ProbeState {
    size_t filled = 0;      // heap insertions (full once >= k)
    size_t lists = 0;       // scanned lists that held survivors
    size_t prefix_end = 0;  // ranks of the prefix ranking visited
    bool done = false;
    IvfProbeStats stats;
  };
  // Lists ranked first, per query: enough for the plan with room to spare
  // (kPrefixRanksPerList times the lists it needs on average).
  static constexpr size_t kMinPrefixRanks = 64;
  static constexpr size_t kPrefixRanksPerList = 4;

  // Batches of at least this many inner-product queries scan list by
  // list (BatchScan), sharing each list's read.
  static constexpr size_t kMinBatchQueries = 8;

  Plan PlanFor(size_t k, const SearchOptions& options) const;
  static void Account(size_t n, size_t labelled, size_t too_close,
                      ProbeState& state);
  static bool PlanMet(const Plan& plan, const ProbeState& state);
  // Query i's lists to probe in `order`'s first `prefix` ranks, from the
  // label counts alone (closest and skip_row unknown until scanned).
  std::vector<uint32_t> PlanLists(size_t i, const Plan& plan,
                                  const SearchOptions& options,
                                  const int64_t* order, size_t prefix,
                                  ProbeState& state) const;
  // Inner product: queries q0 .. q0 + m - 1 (their prefix rankings in
  // `order`) scan their planned lists list by list.
  void BatchScan(const float* queries, size_t q0, size_t m, const Plan& plan,
                 const SearchOptions& options, const int64_t* order,
                 size_t prefix, float* scores, int64_t* rows,
                 std::vector<ProbeState>& states) const;
  // Pushes one list's scores into query i's heap; returns how many
  // entries `closest` skipped.
  template <class C>
  size_t PushList(const float* list_scores, size_t n, const int64_t* ids,
                  size_t i, const SearchOptions& options, size_t k,
                  float* scores, int64_t* rows, ProbeState& state) const;
  size_t PrefixRanks(const Plan& plan) const;
  // Scores list `list` into query i's heap; returns how many entries
  // `closest` skipped.
  template <class C>
  size_t ScanList(size_t list, const float* query, size_t i,
                  const SearchOptions& options, size_t k, float* scores,
                  int64_t* rows, ProbeState& state) const;
  // Probes query i's lists in `order` from rank `first` to `ranked`,
  // passing over those in sorted `probed`, until the plan is met.
  template <class C>
  void Continue(const float* query, size_t i, const Plan& plan,
                const SearchOptions& options, const int64_t* order,
                size_t first, size_t ranked, absl::Span<const int64_t> probed,
                float* scores, int64_t* rows, ProbeState& state) const;
  void ContinueAny(const float* query, size_t i, const Plan& plan,
                   const SearchOptions& options, const int64_t* order,
                   size_t first, size_t ranked,
                   absl::Span<const int64_t> probed, float* scores,
                   int64_t* rows, ProbeState& state) const;
  // The queries q0 + j whose states[j] is not done after the prefix
  // ranking: ranks every list for them and probes on.
  void Resume(const float* queries, size_t q0, const Plan& plan,
              const SearchOptions& options, size_t prefix,
              const std::vector<int64_t>& prefix_order, float* scores,
              int64_t* rows, std::vector<ProbeState>& states) const;

  const faiss::IndexIVF& ivf_;
  const size_t default_min_candidates_;
  // Per-list label counts, CSR: list l's distinct labels (ascending) are
  // labels_[offsets_[l] .. offsets_[l + 1]), with their counts in counts_.
  std::vector<uint32_t> offsets_;
  std::vector<int64_t> labels_;
  std::vector<uint32_t> counts_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_IVF_PROBE_H_

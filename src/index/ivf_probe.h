// IvfProbe: hardneg's own search over a FAISS IVF-Flat index's quantizer
// and inverted lists, for queries that exclude candidates (their class
// label, their own id, their positives).
//
// FAISS probes a fixed nprobe lists. When a query excludes its own class,
// the nearest lists hold mostly that class, and the negatives live in lists
// a fixed nprobe never reaches. IvfProbe instead ranks every list by its
// centroid's score and probes them in that order:
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
// computed with SIMD.
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
  // at least kAutoLists average lists' worth of entries.
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
  Plan PlanFor(size_t k, const SearchOptions& options) const;

  template <class C>
  void SearchOne(const float* query, size_t i, const Plan& plan,
                 const SearchOptions& options, const int64_t* order,
                 float* scores, int64_t* rows, IvfProbeStats& stats) const;

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

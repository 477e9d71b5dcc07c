// IvfProbe: hardneg's own search over a FAISS IVF-Flat index's quantizer
// and inverted lists, for queries that exclude candidates (their class
// label, their own id, their positives).
//
// FAISS probes a fixed nprobe lists. When a query excludes its own class,
// the nearest lists hold mostly that class, and the negatives live in lists
// a fixed nprobe never reaches. IvfProbe instead ranks the lists by their
// centroids' scores (a prefix of the ranking first, all of it for the
// queries that get past it) and probes them in that order.
//
// Cells. Where the labels split each list into several groups (classes
// smaller than lists, so that a list mixes several), a list's centroid is
// the mean of unrelated classes and ranks it poorly. In cell mode the
// probe sorts each list's entries by label once, in place, when it is
// created (FAISS's own search does not depend on the order within a
// list), and keeps the centroid of each cell: a list's entries of one
// label (kMinCellSize of them or more), or the list's mixed cell of the
// labels it holds fewer of. It then ranks cells by their centroids (a
// mixed cell also beside the cells of the labels it holds, see
// kMixedRankShift) and probes them instead of lists: a query that excludes its
// class passes over that class's cells unscanned, and the cells of the nearest
// other classes come first. Below, a "probe" is a list, or a cell in cell mode:
//   - a probe whose entries all carry the excluded label is skipped
//     without being scanned (per-list label counts, built from the store's
//     labels when the probe is created, at build and at load time);
//   - a scanned probe's candidates that SearchOptions allows to skip
//     (skip_row, closest) never take a place in the top-k;
//   - probing stops once the query has scanned `min_candidates` surviving
//     candidates (entries without the excluded label and not skipped by
//     `closest`), at least `nprobe` distinct lists that held survivors
//     (skipped probes do not count towards that floor; in cell mode a list
//     counts once one of its cells held some), and k results; or when no
//     probe is left.
// Scores are those of FAISS's IVF-Flat (inner product, or squared L2),
// computed with SIMD. A batch of kMinBatchQueries or more inner-product
// queries plans each query's probes from the label counts, then scans
// probe by probe, each thread whole probes for all the queries probing
// them (each query's first probe in a first pass, which sets the second
// pass's screens; the rest in a second), into heaps of its own merged
// after (a reduced second pass: into the batch's one heap a query, behind
// a lock); queries the plan left short probe on alone.
// Answers do not depend on the split, but which of two exactly tied
// entries is kept may depend on it: on the number of threads, and on
// which thread took which probe, which varies from run to run. In cell
// mode at a reduced `scan` precision (int8 or bf16,
// index/reduced_scan.h), the batch's second pass scans each cell's packed
// copy, screened by each query's current k-th best score (of the heap
// every thread pushes into) plus the reduced dot product's proven error bound,
// and rescores what passes in float32: an entry is dropped only when it
// could not have entered the query's top k, so recall is limited by the
// probing alone. The first pass reads the packed copy too: it rescores
// the entries of each seed cell's highest bounds (key plus error bound)
// first, then the others that reach the k-th best score so found (else
// float32 throughout).
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
#include "index/reduced_scan.h"
#include "index/vector_index.h"

namespace hardneg {

// What one IvfProbe::Search did, summed over its queries. A probe is a
// list, or a cell in cell mode.
struct IvfProbeStats {
  size_t probes_scanned = 0;
  // Probes passed over unscanned: every entry carried the excluded label.
  size_t probes_skipped = 0;
  size_t candidates_scanned = 0;  // entries of the probes scanned
  size_t survivors_scanned = 0;   // of those, not excluded by label/closest
  // Entries a reduced-precision scan could not rule out, rescored in
  // float32 (0 at kF32, which scores every entry in float32).
  size_t candidates_rescored = 0;
  // Distinct lists of which a scanned probe held survivors (what nprobe
  // counts).
  size_t lists_reached = 0;

  IvfProbeStats& operator+=(const IvfProbeStats& other) {
    probes_scanned += other.probes_scanned;
    probes_skipped += other.probes_skipped;
    candidates_scanned += other.candidates_scanned;
    survivors_scanned += other.survivors_scanned;
    candidates_rescored += other.candidates_rescored;
    lists_reached += other.lists_reached;
    return *this;
  }
};

// What an IvfProbe ranks and scans (see the file comment).
enum class IvfProbeUnit {
  kAuto,  // cells where they pay (IvfProbe::kMinCellEntries), else lists
  kList,
  kCell,  // cells whenever the lists can be sorted in place
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
  // kAuto uses cells when there are more cells than lists (some list holds
  // two cells or more) and at least this many entries a cell on average:
  // ranking the cells then costs at most 1/32 of an exhaustive scan.
  static constexpr size_t kMinCellEntries = 32;
  // A label with fewer entries than this in a list has no cell of its
  // own: such labels share the list's one mixed cell. The split hardly
  // matters: on the bench's W2 data with the own class excluded, 32,000
  // candidates found 0.9418 of the exact negatives at 16, 0.9434 at 8 and
  // 0.9404 at 32. Nor does a cell's centroid: ranking a label's cells by
  // the mean of all their entries (near the class's centroid: the mixed
  // cells held under a tenth of W2's) found 0.9410, and by the average of
  // that and the cell's own 0.9412. The cells need just over 36,000 for
  // 0.95 (0.9498 there). A simulation of W2's clusters
  // (bench/ivf_cluster_floor.py) ranked whole by their means needs about
  // 32,000, and about 29,000 on average when each query stops once the
  // next cluster's mean score plus a margin falls below its k-th best: a
  // fifth fewer candidates than the cells', some 10% of a search's time.
  static constexpr size_t kMinCellSize = 16;
  // True when a label with `count` entries in a list sits in its mixed
  // cell (the one owner of that rule).
  static bool InMixedCell(size_t count) { return count < kMinCellSize; }
  // A mixed cell's centroid is the mean of unrelated labels and ranks it
  // far below where its entries lie; but each label's few entries there
  // lie near that label's cells (labels are classes, which cluster). So a
  // mixed cell ranks at least as high as the best cell of any label it
  // holds (not the query's excluded label), less this share of the
  // query's range of cell scores: just behind that label's own cells. On
  // the bench's W2 data, searched in-process (k = 10, 512 queries),
  // queries excluding one positive find 0.999 of their exact neighbours
  // at 2,000 candidates with it, 0.986 without (all the misses in mixed
  // cells); excluding their class, 0.946 at 32,000, 0.939 without. (0.06
  // and 0.1 did as well; 0.03 and 0 less.) The bench's line (f), through
  // the miner: 0.994 and 0.942 (README, "IVF").
  static constexpr float kMixedRankShift = 0.1f;

  // A probe over `index` for `store`'s rows, or null when it does not
  // apply: `index` is not IVF-Flat (IsIvfFlat), the store has no labels,
  // or a list entry's id is not a store row. In cell mode it first sorts
  // each list's entries by label, in place (only where the lists are
  // FAISS's ArrayInvertedLists and the index keeps no direct map; else it
  // probes lists). `index` must stay unchanged afterwards.
  // `default_min_candidates` is used by searches that set none (0: auto).
  // `scan` (kAuto: the fastest the CPU runs natively) applies in cell mode
  // to inner-product batches; kF32, or a precision the CPU does not run
  // natively, scans float32. A reduced scan ranks the cells by reduced
  // scores of their centroids too (a ranking's error only reorders near
  // ties), unless `reduced_ranking` is false: then they are ranked in
  // float32, as for a float32 scan (for tests of the scan alone).
  static std::unique_ptr<IvfProbe> Create(
      faiss::Index& index, const CandidateStore& store,
      size_t default_min_candidates, IvfProbeUnit unit = IvfProbeUnit::kAuto,
      ScanPrecision scan = ScanPrecision::kF32, bool reduced_ranking = true);

  // FAISS's IndexIVF::search contract: for each of `nq` queries, the `k`
  // best rows best first, -1 padded (scores then FAISS's sentinel), with
  // options.skip_row / closest / excluded_label / nprobe /
  // ivf_min_candidates applied as the file comment says. Adds what it did
  // to `*stats` when given. Throws faiss::FaissException when FAISS does.
  void Search(const float* queries, size_t nq, size_t k,
              const SearchOptions& options, float* scores, int64_t* rows,
              IvfProbeStats* stats = nullptr) const;

  // Bytes of the per-list label counts, the cells (centroids and their
  // bookkeeping) and the packed copies.
  size_t MemoryBytes() const;

  // At least MemoryBytes() of a probe over `rows` entries of `dim` floats
  // in `nlist` lists, created with IvfProbeUnit::kAuto at `scan`
  // (packing counted when the CPU runs it natively).
  static size_t BytesBound(size_t rows, size_t dim, size_t nlist,
                           ScanPrecision scan);

  // True when the probe ranks and scans cells; probes() is then the number
  // of cells, else of lists. In cell mode Search never scores an entry of
  // query i's excluded label: it returns none, and asks skip_row about
  // none (the label's own cells are passed over, and in a mixed cell the
  // label's span).
  bool cells() const { return !cell_list_.empty(); }
  size_t probes() const;
  // The precision batches scan cells at (kF32 unless packed copies exist).
  ScanPrecision scan() const { return scan_; }

  // Entries of `list` with `label` (0 when none).
  size_t LabelCount(size_t list, int64_t label) const;

  IvfProbe(const IvfProbe&) = delete;
  IvfProbe& operator=(const IvfProbe&) = delete;

 private:
  IvfProbe(const faiss::IndexIVF& ivf, const CandidateStore& store,
           size_t default_min_candidates);

  // The precision lists are packed at for `scan` and `dim`: kF32 unless
  // the CPU runs it natively.
  static ScanPrecision PackedScan(ScanPrecision scan, size_t dim);
  // Sorts each list's entries by label (stable; `store` gives the labels)
  // and computes the cells' centroids, in parallel over lists. Packs each
  // list at `scan` unless it is kF32.
  void MakeCells(faiss::IndexIVF& ivf, const CandidateStore& store,
                 ScanPrecision scan, bool reduced_ranking);
  // Sorts list `list`'s entries into its cells' order, in place.
  void SortByCell(faiss::InvertedLists& lists, size_t list,
                  const CandidateStore& store, size_t code_size) const;
  // Numbers the distinct labels (slots) and fills cell_slot_ and each
  // slot's mixed cells (slot_mixed_begin_, slot_mixed_cells_).
  void MakeSlots();
  // Packs every list at `scan` (int8 or bf16), and the cells' centroids
  // when `reduced_ranking`, centred on the store's mean.
  void PackLists(const faiss::InvertedLists& lists, size_t d,
                 ScanPrecision scan, bool reduced_ranking);
  // Ranks the `cells` scores of query i (`score`, changed in place) into
  // `out`, as RankCells says.
  void SelectCells(float* score, size_t i, const SearchOptions& options,
                   size_t entries, std::vector<uint32_t>& out) const;
  // A score's bin in SelectCells' histogram: kRankBins between `lo` and
  // the highest finite score, `scale` bins a unit; -inf (and NaN) in the
  // lowest, +inf in the highest. Never lower for a higher score.
  struct RankBins {
    float lo;
    double scale;
    uint16_t operator()(float v) const;
  };
  // The lowest bin from which the bins' `mass` (entries) holds `entries`
  // (0 when all of it falls short).
  static size_t CutFor(const std::vector<size_t>& mass, size_t entries);
  // Raises mixed cells' scores to the score of a cell of a label they
  // hold less `shift` (kMixedRankShift), where that is higher, moving them
  // between `bins` and their `mass`; passes over the label in
  // `excluded_slot` (kNoSlot: none). Only raises into bins at or above
  // `cut`, from cells there (`selected`: every cell at or above it; the
  // mixed cells raised to it are appended): the cells at or above the cut
  // that `mass` then gives get the bins and scores raising every mixed
  // cell from every cell would give them (see the body). True when it
  // raised one.
  bool RaiseMixedCells(float shift, uint32_t excluded_slot,
                       const RankBins& binner, size_t cut, float* score,
                       std::vector<uint16_t>& bins, std::vector<size_t>& mass,
                       std::vector<uint32_t>& selected) const;
  static constexpr uint32_t kNoSlot = ~uint32_t{0};
  // SelectCells' last step: `cells` (whose bins are at or above `cut`)
  // in RankCells' order.
  static void OrderCells(const float* score, const uint16_t* bins, size_t cut,
                         std::vector<uint32_t>& cells);
  // Cells list `list` would have, and all `nlist` lists.
  size_t CellsOf(size_t list) const;
  size_t CellCount(size_t nlist) const;

  // The probe settings of one search (after defaulting).
  struct Plan {
    size_t k = 0;
    size_t min_lists = 1;
    size_t min_candidates = 0;
  };
  // Where one query's probing stands.
  struct ProbeState {
    size_t filled = 0;      // heap insertions (full once >= k)
    size_t lists = 0;       // distinct lists that held survivors
    size_t prefix_end = 0;  // ranks of the prefix ranking visited
    bool done = false;
    IvfProbeStats stats;
    // Cell mode: the lists counted in `lists` (sized on first use), and
    // the same lists in the order they were first seen.
    std::vector<bool> lists_seen;
    std::vector<uint32_t> seen_order;
  };
  // A probe's entries: list `list`'s entries [begin, begin + n).
  struct Span {
    size_t list = 0;
    size_t begin = 0;
    size_t n = 0;
  };
  // Probes ranked first, per query: enough for the plan with room to
  // spare (kPrefixRanksPerList times the probes it needs on average).
  static constexpr size_t kMinPrefixRanks = 64;
  static constexpr size_t kPrefixRanksPerList = 4;

  // Batches of at least this many inner-product queries scan probe by
  // probe (BatchScan), sharing each probe's read.
  static constexpr size_t kMinBatchQueries = 8;
  // Cell mode ranks and scans at most this many queries of a search at a
  // time (a search splits into chunks of equal size). The more queries a
  // chunk, the more share each cell's read: on W2, searches of 512
  // queries took 19% less time a query than two chunks of 256 (own class
  // excluded, 40,000 candidates; 11% less for one positive at 2,000).
  static constexpr size_t kCellChunkQueries = 512;

  Span SpanOf(size_t probe) const;
  // Bytes of the packed copies.
  size_t PackedBytes() const;
  // Cell mode: ranks the cells for the queries `which` (indexes into
  // `queries` and options), best first by their centroids' scores
  // (reduced ones, from centroid_rows_, when it is set; a mixed cell's
  // raised as kMixedRankShift says; ties by index), until their entries
  // add up to `entries` (not counting the query's own cells of its label;
  // mixed cells count whole), or every cell once they cannot. A histogram
  // of the scores (kRankBins between the query's lowest and highest) finds
  // the cut, the cells above it are sorted. which[j]'s ranks are in
  // order[j * width ...], -1 padded to the returned width; counts[j] is how
  // many it has (probes() when complete).
  size_t RankCells(const float* queries, const std::vector<size_t>& which,
                   const SearchOptions& options, size_t entries,
                   std::vector<int64_t>& order,
                   std::vector<size_t>& counts) const;
  // Cell mode's Resume: the queries not done rank cells for ever more
  // entries (from `entries` up), passing over the probes visited in
  // `prefix_order` (width `prefix`), until each is done.
  void ResumeCells(const float* queries, size_t q0, const Plan& plan,
                   const SearchOptions& options, size_t entries, size_t prefix,
                   const std::vector<int64_t>& prefix_order, float* scores,
                   int64_t* rows, std::vector<ProbeState>& states) const;
  // Entries of `probe` that carry query i's excluded label.
  size_t Excluded(size_t probe, size_t i, const SearchOptions& options) const;
  // Cell mode, a mixed cell: where in its list the entries of query i's
  // excluded label lie (the mixed cell keeps its labels in order), so that
  // scans pass over them unscored; else empty (n == 0).
  Span ExcludedSpan(size_t probe, size_t i, const SearchOptions& options) const;
  // The index of `label` in list `list`'s label counts (labels_, counts_,
  // mixed_begin_), or kNoEntry.
  static constexpr size_t kNoEntry = static_cast<size_t>(-1);
  size_t LabelEntry(size_t list, int64_t label) const;
  Plan PlanFor(size_t k, const SearchOptions& options) const;
  // Counts a scanned probe's survivors, and its list towards the floor.
  void Account(size_t probe, size_t n, size_t labelled, size_t too_close,
               ProbeState& state) const;
  static bool PlanMet(const Plan& plan, const ProbeState& state);
  // Query i's probes in `order`'s first `prefix` ranks, from the label
  // counts alone (closest and skip_row unknown until scanned).
  std::vector<uint32_t> PlanProbes(size_t i, const Plan& plan,
                                   const SearchOptions& options,
                                   const int64_t* order, size_t prefix,
                                   ProbeState& state) const;
  // Inner product: queries q0 .. q0 + m - 1 (their prefix rankings in
  // `order`) scan their planned probes probe by probe: each query's first
  // kSeedProbes in a first pass, then the rest. One: on W2 at 2,000
  // candidates a query, two took 20% longer when the first pass scanned
  // float32 rows (4x int8's bytes) to save one rescore a query; at 40,000
  // with the own class excluded they saved 29 of 79 rescores, in the same
  // time. Packed (SeedReduced), two were 3% slower there (two
  // single-thread Miners at 187 queries, six alternated rounds).
  static constexpr size_t kSeedProbes = 1;
  void BatchScan(const float* queries, size_t q0, size_t m, const Plan& plan,
                 const SearchOptions& options, const int64_t* order,
                 size_t prefix, float* scores, int64_t* rows,
                 std::vector<ProbeState>& states) const;
  // BatchScan's shared state, a thread's heaps and buffers, and one reduced
  // scan of a cell. Its ReducedSink::offer, Offer, queues the offered entry;
  // Rescore, every kPendingRescores offers (a thread's, across its cells) and
  // once the pass's scans are over, rescores those still above their screens
  // in float32, pushes them into their queries' heaps and raises the screens
  // to the heaps' k-th best scores (PushLocked). One heap a query for all
  // the batch's threads. When each thread kept heaps of its own (merged
  // after the pass, starting at k copies of the first pass's k-th best),
  // a screen rose only once k entries had beaten that score on one
  // thread, and was the highest of the threads' k-th best scores, each of
  // the entries one thread had scanned (about the 2k-th best of the
  // batch's on two). The test BatchAnswersAlikeOnAnyNumberOfThreads
  // rescored 4,019 entries on one thread and 4,488 on two then, 3,194 and
  // 3,197 now. In-process on W2 (own class excluded, 37,000 candidates), a
  // Miner of two threads at 512 queries a batch had taken 21% more perf
  // samples a query than two single-thread Miners at 512; with the one
  // heap it served 8% more q/s (6 of 6 alternated rounds); two
  // single-thread Miners at 256, 1% more (4 of 6), and 2% more for one
  // positive excluded (2,000 candidates, 6 of 6). absl::Mutex for the lock
  // cost about 6% of the samples (its bookkeeping for deadlock detection):
  // a spin lock held for one push is cheap, as two threads seldom push
  // into one query's heap at once. Rescore also ran at
  // the end of each cell, for the 3 or so offers a cell has on W2 (own class
  // excluded, 40,000 candidates): each run's misses wait about as long for
  // three rows as for eight. Now a cell's offers wait for the next cells'
  // unless they could be its last survivors for a query (Account must know
  // which entries were too close); two single-thread Miners at 187 queries
  // were faster so in 8 of 8 alternated rounds, by 3% on average (a first
  // version: 8 of 8, 3%). Offer prefetches nothing: the lines of a scattered
  // row (float32 row, the store's id and label) are TLB misses, and a prefetch
  // that misses the TLB held up the tile loop around it. On W2 with the own
  // class excluded (40,000 candidates, in-process, skip_row reading the store
  // as the Miner's does), 64-73 us a query without them, 78-84 with; through
  // the Miner (k = 12), no difference showed above the machine's noise. Rescore
  // instead asks for the rows of the offers still above their screens before it
  // reads the first, where its dot products had waited for one row at a time
  // (15% of the time): through the Miner on the same data, faster in 9 of 9
  // interleaved pairs (by 1-18%), then 8 of 9; in the bench, old and new
  // binaries alternated, the own class's service ratio went from 3.79x
  // and 3.84x to 4.18x and 4.50x. Prefetching at the offer and rescoring a
  // batch later (the misses then overlap the next tiles) was no faster, and 16
  // offers a batch no different from 8. Rescore asks for each such offer's id
  // (skip_row's row, which PushLocked reads) with its row: PushOne had waited
  // on the ids, a third of Rescore's samples. Asking for the whole cell's ids
  // (one run of 8 bytes an entry) before the kernel ran was faster than nothing
  // (two single-thread Miners at 187 queries, the service's shape; W2, own
  // class excluded: 5 of 6 alternated pairs, 5% on average), but its 28 or so
  // prefetches a cell stalled on the core's outstanding misses (3% of the
  // time, for about 3 ids a cell read): asking for the offers' ids alone was
  // faster again in 8 of 8 rounds, by 3% on average. Rescoring nothing until
  // the pass ends (screens from the offers' lower bounds, key - slack) cut the
  // rescores from 65 to 37 a query there, but was no faster, and 4-11% slower
  // on a two-thread batch.
  struct Batch;
  struct CellScratch;
  struct CellScan;
  static constexpr size_t kPendingRescores = 8;
  static void Offer(void* context, size_t query, size_t row, float key,
                    float slack);
  // Rescores the thread's pending offers (part.pending); `scan` is the
  // reduced scan under way (its screens and too_close updated), or null
  // once the pass's scans are over.
  void Rescore(const Batch& batch, CellScratch& part, CellScan* scan) const;
  // Query j's screen (relative to batch.q0) in a reduced second pass: the
  // k-th best score of its heap so far.
  static float Screen(const Batch& batch, size_t j);
  // Pushes a rescored entry into query j's heap in a reduced second pass,
  // as PushOne does (false: too close), and publishes the heap's k-th best
  // score as the query's screen. Only the push holds batch.heap_locks[j]:
  // closest, the screen and skip_row are checked before it.
  bool PushLocked(const Batch& batch, size_t j, float score, int64_t row,
                  ProbeState& state) const;
  // Which queries (relative to a batch's q0) scan each probe: probe p's
  // are queries[begin[p] .. begin[p + 1]), in order.
  struct Probers {
    std::vector<uint32_t> begin;
    std::vector<uint32_t> queries;
    absl::Span<const uint32_t> of(size_t probe) const {
      return absl::MakeConstSpan(queries).subspan(
          begin[probe], begin[probe + 1] - begin[probe]);
    }
  };
  // The probers of ranks [from, to) of each query's plan (planned[j]:
  // query j's probes in order).
  Probers MakeProbers(const std::vector<std::vector<uint32_t>>& planned,
                      size_t from, size_t to) const;
  // How ScanProbes scans a probe: float32 (ScanFloat), the first pass of a
  // reduced batch (SeedReduced: no screen yet), or the second (ScanReduced).
  enum class Pass { kFloat, kSeed, kReduced };
  // The probes with queries in `probers` (relative to batch.q0), split
  // between the threads probe by probe, each scanning as `pass` says
  // (kSeed and kReduced need batch.reduced) into heaps of its own (kReduced:
  // the batch's, PushLocked) and states of its own; then merged into the
  // batch's heaps and states (MergePart).
  void ScanProbes(const Batch& batch, const Probers& probers, Pass pass) const;
  void MergePart(const Batch& batch, const CellScratch& part) const;
  // Packs the batch for the reduced copies (batch.reduced false when
  // there are none, or a query's keys could leave float's range).
  void PackBatch(Batch& batch) const;
  // Selects the packed queries `mine` (relative to the batch) into
  // part.some, and their slack coefficients into a sink for them.
  static ReducedSink SlackSink(const Batch& batch,
                               absl::Span<const uint32_t> mine,
                               CellScratch& part);
  // Queries `mine` (relative to the batch) scan `probe` (entries `span`),
  // whose list's entries are `x` and `ids`: reduced, screened; reduced, as
  // a first pass; or in float32. SeedReduced reads every entry's packed
  // key, so that a seed cell's float32 rows are read only for the few
  // entries its keys cannot rule out (about k + 5 a query on W2, own
  // class excluded, where ScanFloat read all of a cell's 226 or so): two
  // single-thread Miners at 187 queries there were faster with it in 8 of
  // 8 alternated rounds (7% on average), then 6 of 6 (5%).
  void ScanReduced(const Batch& batch, size_t probe, const Span& span,
                   absl::Span<const uint32_t> mine, const float* x,
                   const int64_t* ids, CellScratch& part,
                   size_t* too_close) const;
  void SeedReduced(const Batch& batch, size_t probe, const Span& span,
                   absl::Span<const uint32_t> mine, const float* x,
                   const int64_t* ids, CellScratch& part,
                   size_t* too_close) const;
  void ScanFloat(const Batch& batch, size_t probe, const Span& span,
                 absl::Span<const uint32_t> mine, const float* x,
                 const int64_t* ids, CellScratch& part,
                 size_t* too_close) const;
  // One scored entry into query i's heap (unless skip_row skips it or it
  // is not better than the k-th); false when `closest` skips it.
  template <class C>
  bool PushOne(float score, int64_t row, size_t i, const SearchOptions& options,
               size_t k, float* scores, int64_t* rows, ProbeState& state) const;
  // Pushes one probe's scores into query i's heap, but for entries
  // [skip.begin, skip.begin + skip.n) of the n (relative to probe_scores;
  // ExcludedSpan's); returns how many entries `closest` skipped.
  template <class C>
  size_t Push(const float* probe_scores, size_t n, const int64_t* ids, size_t i,
              const SearchOptions& options, size_t k, float* scores,
              int64_t* rows, ProbeState& state, Span skip) const;
  // Queries of an nq-query search ranked and scanned at a time.
  size_t ChunkSize(size_t nq, const Plan& plan) const;
  // Entries an average list holds.
  size_t AverageList() const;
  // List mode: the lists ranked first.
  size_t PrefixRanks(const Plan& plan) const;
  // Cell mode: entries the cells ranked first hold.
  size_t PrefixEntries(const Plan& plan) const;
  // Scores probe `probe` into query i's heap; returns how many entries
  // `closest` skipped.
  template <class C>
  size_t Scan(size_t probe, const float* query, size_t i,
              const SearchOptions& options, size_t k, float* scores,
              int64_t* rows, ProbeState& state) const;
  // Probes query i's probes in `order` from rank `first` to `ranked`,
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
  // Sorts queries q0 + j's heaps (j < states.size()) best first and adds
  // their states to `*stats` when given.
  void Finish(size_t q0, size_t k, const std::vector<ProbeState>& states,
              float* scores, int64_t* rows, IvfProbeStats* stats) const;
  // The queries q0 + j whose states[j] is not done after the prefix
  // ranking: ranks every probe for them and probes on.
  void Resume(const float* queries, size_t q0, const Plan& plan,
              const SearchOptions& options, size_t prefix,
              const std::vector<int64_t>& prefix_order, float* scores,
              int64_t* rows, std::vector<ProbeState>& states) const;

  const faiss::IndexIVF& ivf_;
  // The entries' rows (which outlive the index).
  const CandidateStore& store_;
  const size_t default_min_candidates_;
  // Per-list label counts, CSR: list l's distinct labels (ascending) are
  // labels_[offsets_[l] .. offsets_[l + 1]), with their counts in counts_.
  std::vector<uint32_t> offsets_;
  std::vector<int64_t> labels_;
  std::vector<uint32_t> counts_;
  // Cell mode, beside counts_: for a label too small for a cell of its own,
  // its first entry in the list (in the list's mixed cell); else 0.
  std::vector<uint32_t> mixed_begin_;
  // Cell mode, per cell: its list, first entry in it, size, label and
  // whether it is the list's mixed cell (its label then unused), its
  // centroid (row-major) and its squared norm; else empty.
  std::vector<uint32_t> cell_list_;
  std::vector<uint32_t> cell_begin_;
  std::vector<uint32_t> cell_size_;
  std::vector<int64_t> cell_label_;
  std::vector<uint8_t> cell_mixed_;
  // Cell mode: (label, cell) of every cell not mixed, in order.
  std::vector<std::pair<int64_t, uint32_t>> label_cells_;
  std::vector<float> cell_centroids_;
  std::vector<float> cell_sq_;
  // Cell mode: per cell, its label's index among the distinct labels (a
  // slot; unused for mixed cells); and the mixed cells holding each slot's
  // label (CSR by slot: slot_mixed_cells_[slot_mixed_begin_[t] .. [t + 1])).
  std::vector<uint32_t> cell_slot_;
  std::vector<uint32_t> slot_mixed_begin_;
  std::vector<uint32_t> slot_mixed_cells_;
  // The lists' packed lines, in one allocation (declared before reduced_:
  // it outlives the rows that point into it).
  std::unique_ptr<ReducedLines> packed_lines_;
  // Cell mode at a reduced precision: each list's entries packed (null for
  // an empty list); else empty and scan_ kF32.
  ScanPrecision scan_ = ScanPrecision::kF32;
  std::vector<std::unique_ptr<ReducedRows>> reduced_;
  // And the cells' centroids packed, for RankCells (null in float32).
  std::unique_ptr<ReducedRows> centroid_rows_;
  // Over all lists' packed rows: the largest |x - m - x'| and |x'|, and
  // the norm of the centre m they share (rounded up).
  double packed_max_residual_ = 0;
  double packed_max_norm_ = 0;
  double packed_centre_norm_ = 0;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_IVF_PROBE_H_

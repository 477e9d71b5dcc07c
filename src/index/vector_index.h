// VectorIndex: finds the candidate rows closest to a batch of queries.
//
// "Flat" is served by an exact blocked-sgemm kernel that reads the
// CandidateStore's vectors in place (plus, by default, a binary16 copy for
// searches of a few queries: IndexBuildOptions::half_scan). Any other FAISS
// factory string ("IVF1024,Flat", "HNSW32", ...) builds a FAISS index,
// trained on the store at build time.
//
// Immutable after Build: Search may be called from any number of threads.
#ifndef HARDNEG_SRC_INDEX_VECTOR_INDEX_H_
#define HARDNEG_SRC_INDEX_VECTOR_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "index/reduced_scan.h"

namespace hardneg {

// The factory string of the exact kernel.
inline constexpr char kFlatFactory[] = "Flat";

// How errors name IndexBuildOptions::factory, so that an edge that sets it
// can say which of its own settings is meant.
inline constexpr char kIndexFactoryTerm[] = "the index factory";

// Which implementation a factory string gets.
enum class IndexKind {
  kFlat,   // "Flat": the exact kernel over the store's vectors
  kFaiss,  // any other string: a FAISS index holding its own codes
};

// kFlat for exactly "Flat", kFaiss for anything else.
IndexKind IndexKindOf(absl::string_view factory);

// What one Search call may skip, and how hard an approximate index looks.
// Skipping is a hint: the Flat kernel, and IVF-Flat over a labelled store
// (index/ivf_probe.h), drop such candidates before they reach their top-k
// (so they take no place in it); other FAISS indexes return them anyway.
// Callers filter again.
struct SearchOptions {
  // Per query (empty: none): a candidate whose approximate score is closer
  // than closest[i] may be skipped for query i.
  absl::Span<const float> closest;
  // Rows that may be skipped for query i (empty function: none). Called
  // only for candidates that would enter a top-k (IVF-Flat's batches ask
  // before another thread's push may have ruled one out, or into a
  // thread's own heap, so also for some that the final top-k leaves out),
  // from the calling thread or, for a batch, from OpenMP threads at once,
  // holding no lock.
  std::function<bool(size_t i, int64_t row)> skip_row;
  // Inverted lists probed per query by IVF indexes; 0 keeps the index's
  // own setting. Ignored by other indexes.
  size_t nprobe = 0;
  // Per query (empty: none): the label query i excludes. IVF-Flat over a
  // labelled store skips lists (and cells) holding only that label
  // unscanned, passes over that label's entries in a mixed cell without
  // asking skip_row, and counts the candidates without it. Other indexes
  // ignore it, so skip_row must reject the label's rows as well.
  absl::Span<const std::optional<int64_t>> excluded_label;
  // IVF-Flat over a labelled store: probing stops once a query has scanned
  // this many candidates that survive its label (and `closest`), and at
  // least `nprobe` lists holding some; 0 keeps the index's own setting.
  size_t ivf_min_candidates = 0;
};

class VectorIndex {
 public:
  virtual ~VectorIndex() = default;

  // For each of `nq` queries (row-major nq x dim), writes the `k` best rows
  // to rows[i * k + j], best first, with their approximate scores; -1 pads
  // when fewer than k candidates are found. INTERNAL if FAISS fails.
  absl::Status Search(const float* queries, size_t nq, size_t k, float* scores,
                      int64_t* rows) const {
    return Search(queries, nq, k, SearchOptions{}, scores, rows);
  }
  // The same, with candidates that `options` allows skipped.
  virtual absl::Status Search(const float* queries, size_t nq, size_t k,
                              const SearchOptions& options, float* scores,
                              int64_t* rows) const = 0;

  // True when Search ranks every candidate, up to float32 rounding error of
  // at most ErrorBound(): then a row it did not return is never closer
  // than the worst returned score by more than that bound.
  virtual bool exact() const = 0;

  // Bound on |approximate score - true score| for a query of norm
  // `query_norm`. Meaningful only when exact().
  virtual double ErrorBound(double query_norm) const = 0;

  // True when Search leaves out the candidates SearchOptions allows it to
  // skip, so that they take no place among the k returned.
  virtual bool skips() const = 0;

  // True when Search, given SearchOptions::excluded_label, never returns a
  // row of query i's excluded label nor asks skip_row about one (IVF-Flat
  // over a labelled store in cell mode, index/ivf_probe.h): skip_row then
  // need not test the label.
  virtual bool excludes_labels() const { return false; }

  // The factory string, e.g. "Flat".
  virtual std::string type() const = 0;
  IndexKind kind() const { return IndexKindOf(type()); }

  // Writes what Load needs to restore this index without rebuilding it to
  // `path` (a FAISS index file). Flat writes nothing: its data is the
  // store's. INTERNAL when writing fails.
  virtual absl::Status Save(const std::string& path) const = 0;

  // Heap bytes held beyond the CandidateStore.
  virtual size_t MemoryBytes() const = 0;

  // The precision of the first pass over the rows: kF32, kBf16 or kInt8
  // (never kAuto). kF32 for FAISS indexes, except IVF-Flat over labelled
  // candidates when its cells are scanned at a reduced precision
  // (index/ivf_probe.h).
  virtual ScanPrecision scan() const { return ScanPrecision::kF32; }

  // Since the index was built: queries searched by a reduced-precision
  // pass, and how many of them were searched again in float32 because the
  // reduced pass could not order their candidates.
  struct ScanStats {
    uint64_t reduced_queries = 0;
    uint64_t fallbacks = 0;
  };
  virtual ScanStats scan_stats() const { return {}; }

  VectorIndex() = default;
  VectorIndex(const VectorIndex&) = delete;
  VectorIndex& operator=(const VectorIndex&) = delete;
};

struct IndexBuildOptions {
  std::string factory = kFlatFactory;
  // Training sample size for indexes that need training; 0 means all.
  size_t max_train_rows = 262144;
  // Inverted lists probed per query by IVF indexes (0: FAISS's default, 1).
  // More lists: better recall, slower search.
  size_t nprobe = 0;
  // Flat: also keep the vectors rounded to binary16 (half the store's
  // vector bytes again), which searches of one to three queries read first;
  // they rescore what they find from the float32 vectors, so answers stay
  // within ErrorBound. Used only on CPUs with AVX2, FMA and F16C, and only
  // when every vector's norm is below 60000, and only at scan kF32.
  bool half_scan = true;
  // Flat: the precision of the first pass. Reduced precisions (kBf16,
  // kInt8) keep a packed copy of the vectors (a half or a quarter of the
  // store's vector bytes) that every search reads, rescoring only the
  // candidates within the reduced pass's error bound from the float32
  // vectors: answers stay within ErrorBound. kAuto: the fastest this CPU
  // runs natively (see ResolveScanPrecision). Kept in snapshots.
  ScanPrecision scan = ScanPrecision::kAuto;
  // IVF-Flat over a labelled store: SearchOptions::ivf_min_candidates for
  // searches that leave it 0 (0 here: the automatic default of
  // index/ivf_probe.h).
  size_t ivf_min_candidates = 0;
};

// Told how far a build has got, 0..1, rising, on the building thread.
// FAISS reports nothing while it trains or adds, so a build steps at its
// phases: trained (when the index needs training), then done.
using IndexBuildObserver = std::function<void(double fraction)>;

// Builds an index over `store`, which must outlive it. INVALID_ARGUMENT for
// a factory string FAISS does not know; INTERNAL when FAISS fails.
// `observer`, when set, is told of progress, last with 1 on success.
absl::StatusOr<std::unique_ptr<VectorIndex>> BuildVectorIndex(
    const CandidateStore& store, Metric metric,
    const IndexBuildOptions& options,
    const IndexBuildObserver& observer = nullptr);

// About the bytes BuildVectorIndex(store, ..., options)->MemoryBytes() will
// be, for budgets checked before building.
size_t IndexBytesEstimate(const CandidateStore& store,
                          const IndexBuildOptions& options);

// At least IndexBytesEstimate for any store of `rows` x `dim`, for budgets
// checked before the store is read.
size_t IndexBytesBound(size_t rows, size_t dim,
                       const IndexBuildOptions& options);

// Restores an index saved by VectorIndex::Save over `store` (which must
// outlive it): options.factory names its type, and options.half_scan
// applies as in BuildVectorIndex. For "Flat", `path` is not read.
// INVALID_ARGUMENT / INTERNAL when the file is unreadable, or its dimension,
// metric or size does not match the store.
absl::StatusOr<std::unique_ptr<VectorIndex>> LoadVectorIndex(
    const std::string& path, const CandidateStore& store, Metric metric,
    const IndexBuildOptions& options);

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_VECTOR_INDEX_H_

// CandidateStore: the items a query can be answered with. Row r holds an
// external id, an optional label and a `dim`-float vector; ids are unique.
// The vectors live either on the heap or in a read-only mapping of a file
// (MappedFloats), whose pages the kernel may evict and read back: every
// accessor is the same for both, and MemoryBytes counts only the heap.
//
// Immutable after Create, so any number of threads may read one
// concurrently. Movable, not copyable (it can hold gigabytes).
#ifndef HARDNEG_SRC_CORPUS_CANDIDATE_STORE_H_
#define HARDNEG_SRC_CORPUS_CANDIDATE_STORE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "corpus/mapped_floats.h"

namespace hardneg {

class CandidateStore {
 public:
  // Takes ownership of row-major `vectors` (ids.size() x dim). `labels`, when
  // present, has one entry per id. Returns INVALID_ARGUMENT for a zero dim,
  // mismatched sizes, a duplicate id (naming it and both rows) or a
  // non-finite value (naming the row).
  static absl::StatusOr<CandidateStore> Create(
      size_t dim, std::vector<int64_t> ids, std::vector<float> vectors,
      std::optional<std::vector<int64_t>> labels);

  // Create over mapped vectors (vectors.size() == ids.size() x dim),
  // which the store keeps mapped while it lives; the squared norms, the
  // largest norm and the finite check come from one sequential pass over
  // the mapping (read-ahead hinted), after which the default access hint
  // is restored. The errors of the heap Create.
  static absl::StatusOr<CandidateStore> CreateMapped(
      size_t dim, std::vector<int64_t> ids, MappedFloats vectors,
      std::optional<std::vector<int64_t>> labels);

  CandidateStore(CandidateStore&&) = default;
  CandidateStore& operator=(CandidateStore&&) = default;
  CandidateStore(const CandidateStore&) = delete;
  CandidateStore& operator=(const CandidateStore&) = delete;

  size_t size() const { return ids_.size(); }
  size_t dim() const { return dim_; }
  bool has_labels() const { return has_labels_; }

  int64_t id(size_t row) const { return ids_[row]; }
  // The stored label, or 0 when the store has no labels.
  int64_t label(size_t row) const { return has_labels_ ? labels_[row] : 0; }
  // Starts loading the row's id and label into the cache: for a scan that
  // will soon ask about a scattered row (the exclusions read both).
  void PrefetchRow(size_t row) const {
    __builtin_prefetch(ids_.data() + row);
    if (has_labels_) __builtin_prefetch(labels_.data() + row);
  }
  const float* vector(size_t row) const { return rows_ + row * dim_; }
  // Row-major size() x dim() floats, on the heap or mapped.
  const float* data() const { return rows_; }
  // True when the vectors are mapped from vectors_file() rather than held.
  bool mapped() const { return mapped_.mapped(); }
  // The mapped file ("" on the heap). It may have been unlinked since.
  const std::string& vectors_file() const { return mapped_.path(); }
  // For an index that reads only a few rows of data() per query (rescoring
  // after a scan of its own reduced copy): turns off read-ahead on mapped
  // vectors, so that a fault after eviction reads one page, not a run.
  // Nothing for heap vectors.
  void AdviseRandomAccess() const { mapped_.AdviseRandom(); }
  // |x|^2 of each row, for L2 search kernels.
  float squared_norm(size_t row) const { return squared_norms_[row]; }
  // All size() squared norms, by row.
  const float* squared_norms() const { return squared_norms_.data(); }
  // The largest |x| over all rows.
  float max_norm() const { return max_norm_; }

  const std::vector<int64_t>& ids() const { return ids_; }
  const std::vector<int64_t>& labels() const { return labels_; }

  // The row holding `id`, or nullopt.
  std::optional<size_t> RowOf(int64_t id) const;

  // Approximate heap bytes held. Mapped vectors are not counted: their
  // pages belong to the page cache, which the kernel evicts under pressure.
  size_t MemoryBytes() const;

  // About what MemoryBytes() will be for a store of `rows` x `dim`, for
  // budgets checked before anything is read; `mapped`: its vectors will be
  // mapped, so not counted.
  static size_t MemoryBytesFor(size_t rows, size_t dim, bool has_labels,
                               bool mapped = false);

 private:
  CandidateStore() = default;

  // Indexes the ids, takes the labels, and checks and measures the
  // `floats` values at `rows` (which the store already owns).
  absl::Status Assemble(size_t dim, std::vector<int64_t> ids, const float* rows,
                        size_t floats,
                        std::optional<std::vector<int64_t>> labels);

  size_t dim_ = 0;
  bool has_labels_ = false;
  float max_norm_ = 0;
  std::vector<int64_t> ids_;
  std::vector<int64_t> labels_;
  std::vector<float> vectors_;  // empty when mapped
  MappedFloats mapped_;
  const float* rows_ = nullptr;  // vectors_.data() or mapped_.data()
  std::vector<float> squared_norms_;
  absl::flat_hash_map<int64_t, uint32_t> row_of_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_CORPUS_CANDIDATE_STORE_H_

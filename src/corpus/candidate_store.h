// CandidateStore: the items a query can be answered with. Row r holds an
// external id, an optional label and a `dim`-float vector; ids are unique.
//
// Immutable after Create, so any number of threads may read one
// concurrently. Movable, not copyable (it can hold gigabytes).
#ifndef HARDNEG_SRC_CORPUS_CANDIDATE_STORE_H_
#define HARDNEG_SRC_CORPUS_CANDIDATE_STORE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

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
  const float* vector(size_t row) const { return vectors_.data() + row * dim_; }
  // Row-major size() x dim() floats.
  const float* data() const { return vectors_.data(); }
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

  // Approximate heap bytes held.
  size_t MemoryBytes() const;

  // About what MemoryBytes() will be for a store of `rows` x `dim`, for
  // budgets checked before anything is read.
  static size_t MemoryBytesFor(size_t rows, size_t dim, bool has_labels);

 private:
  CandidateStore() = default;

  size_t dim_ = 0;
  bool has_labels_ = false;
  float max_norm_ = 0;
  std::vector<int64_t> ids_;
  std::vector<int64_t> labels_;
  std::vector<float> vectors_;
  std::vector<float> squared_norms_;
  absl::flat_hash_map<int64_t, uint32_t> row_of_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_CORPUS_CANDIDATE_STORE_H_

#include "corpus/candidate_store.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace hardneg {

absl::StatusOr<CandidateStore> CandidateStore::Create(
    size_t dim, std::vector<int64_t> ids, std::vector<float> vectors,
    std::optional<std::vector<int64_t>> labels) {
  CandidateStore store;
  const size_t floats = vectors.size();
  store.vectors_ = std::move(vectors);
  HARDNEG_RETURN_IF_ERROR(store.Assemble(
      dim, std::move(ids), store.vectors_.data(), floats, std::move(labels)));
  return store;
}

absl::StatusOr<CandidateStore> CandidateStore::CreateMapped(
    size_t dim, std::vector<int64_t> ids, MappedFloats vectors,
    std::optional<std::vector<int64_t>> labels) {
  CandidateStore store;
  store.mapped_ = std::move(vectors);
  store.mapped_.AdviseSequential();
  const absl::Status assembled =
      store.Assemble(dim, std::move(ids), store.mapped_.data(),
                     store.mapped_.size(), std::move(labels));
  store.mapped_.AdviseNormal();
  if (!assembled.ok()) return assembled;
  return store;
}

absl::Status CandidateStore::Assemble(
    size_t dim, std::vector<int64_t> ids, const float* rows, size_t floats,
    std::optional<std::vector<int64_t>> labels) {
  if (dim == 0) return absl::InvalidArgumentError("dim must be positive");
  if (floats != ids.size() * dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", ids.size(), " x ", dim, " = ",
                     ids.size() * dim, " floats, got ", floats));
  }
  if (labels.has_value() && labels->size() != ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", ids.size(), " labels, got ", labels->size()));
  }
  if (ids.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError("more than 2^32-1 candidates");
  }
  dim_ = dim;
  rows_ = rows;
  row_of_.reserve(ids.size());
  for (size_t row = 0; row < ids.size(); ++row) {
    auto [it, inserted] = row_of_.emplace(ids[row], static_cast<uint32_t>(row));
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "duplicate id ", ids[row], " at rows ", it->second, " and ", row));
    }
  }
  squared_norms_.resize(ids.size());
  double max_sq = 0;
  for (size_t row = 0; row < ids.size(); ++row) {
    const float* v = rows + row * dim;
    double sq = 0;
    for (size_t i = 0; i < dim; ++i) {
      if (!std::isfinite(v[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("non-finite value at row ", row, " (id ", ids[row],
                         "), column ", i));
      }
      sq += static_cast<double>(v[i]) * v[i];
    }
    squared_norms_[row] = static_cast<float>(sq);
    max_sq = std::max(max_sq, sq);
  }
  max_norm_ = static_cast<float>(std::sqrt(max_sq));
  ids_ = std::move(ids);
  if (labels.has_value()) {
    has_labels_ = true;
    labels_ = std::move(*labels);
  }
  return absl::OkStatus();
}

std::optional<size_t> CandidateStore::RowOf(int64_t id) const {
  auto it = row_of_.find(id);
  if (it == row_of_.end()) return std::nullopt;
  return it->second;
}

size_t CandidateStore::MemoryBytes() const {
  return vectors_.capacity() * sizeof(float) +
         ids_.capacity() * sizeof(int64_t) +
         labels_.capacity() * sizeof(int64_t) +
         squared_norms_.capacity() * sizeof(float) +
         row_of_.capacity() * (sizeof(int64_t) + sizeof(uint32_t) + 1);
}

size_t CandidateStore::MemoryBytesFor(size_t rows, size_t dim, bool has_labels,
                                      bool mapped) {
  // Vectors (unless mapped), ids, labels, squared norms, and the id -> row
  // map (whose capacity is at least the row count).
  return rows * ((mapped ? 0 : dim * sizeof(float)) + sizeof(int64_t) +
                 (has_labels ? sizeof(int64_t) : 0) + sizeof(float) +
                 sizeof(int64_t) + sizeof(uint32_t) + 1);
}

}  // namespace hardneg

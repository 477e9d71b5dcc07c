// IndexVersion: one immutable, servable version of the candidates: the
// store, the index over it, and where it came from.
//
// Immutable after construction and shared as shared_ptr<const IndexVersion>:
// readers never lock; a new version replaces the pointer, and requests in
// flight finish on the version they started with.
#ifndef HARDNEG_SRC_VERSIONS_INDEX_VERSION_H_
#define HARDNEG_SRC_VERSIONS_INDEX_VERSION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "format/version_name.h"
#include "index/vector_index.h"

namespace hardneg {

struct VersionInfo {
  std::string name;       // the manifest's name
  uint64_t step = 0;      // the checkpoint's training step
  uint64_t sequence = 0;  // rises by one with every swap
  Metric metric = Metric::kInnerProduct;
  absl::Time created;
};

class IndexVersion {
 public:
  // Builds the index over `store` (slow for large stores), telling
  // `observer` (when set) how far it has got, as BuildVectorIndex does.
  static absl::StatusOr<std::shared_ptr<const IndexVersion>> Build(
      VersionInfo info, CandidateStore store, const IndexBuildOptions& options,
      const IndexBuildObserver& observer = nullptr);

  // Assembles a version from parts; `index` must have been built or loaded
  // over `*store` (which stays at the same address).
  static std::shared_ptr<const IndexVersion> FromParts(
      VersionInfo info, std::unique_ptr<CandidateStore> store,
      std::unique_ptr<VectorIndex> index);

  // Heap bytes held by the store and the index.
  size_t MemoryBytes() const {
    return store_->MemoryBytes() + index_->MemoryBytes();
  }

  // FAILED_PRECONDITION (naming this version) when its sequence is below
  // `min_sequence`, the oldest a caller accepts: the caller should retry
  // once a newer version is live.
  absl::Status CheckSequenceAtLeast(uint64_t min_sequence) const;

  const VersionInfo& info() const { return info_; }
  const CandidateStore& store() const { return *store_; }
  const VectorIndex& index() const { return *index_; }
  Metric metric() const { return info_.metric; }
  size_t size() const { return store_->size(); }
  size_t dim() const { return store_->dim(); }

  IndexVersion(const IndexVersion&) = delete;
  IndexVersion& operator=(const IndexVersion&) = delete;

 private:
  IndexVersion(VersionInfo info, std::unique_ptr<CandidateStore> store,
               std::unique_ptr<VectorIndex> index)
      : info_(std::move(info)),
        store_(std::move(store)),
        index_(std::move(index)) {}

  VersionInfo info_;
  std::unique_ptr<CandidateStore> store_;  // outlives index_
  std::unique_ptr<VectorIndex> index_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_VERSIONS_INDEX_VERSION_H_

#include "versions/index_version.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace hardneg {

absl::StatusOr<std::shared_ptr<const IndexVersion>> IndexVersion::Build(
    VersionInfo info, CandidateStore store, const IndexBuildOptions& options,
    const IndexBuildObserver& observer) {
  auto owned_store = std::make_unique<CandidateStore>(std::move(store));
  HARDNEG_ASSIGN_OR_RETURN(
      std::unique_ptr<VectorIndex> index,
      BuildVectorIndex(*owned_store, info.metric, options, observer));
  return std::shared_ptr<const IndexVersion>(new IndexVersion(
      std::move(info), std::move(owned_store), std::move(index)));
}

absl::Status IndexVersion::CheckSequenceAtLeast(uint64_t min_sequence) const {
  if (info_.sequence >= min_sequence) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the served index is ", info_.name, " at sequence ", info_.sequence,
      ", older than the minimum sequence ", min_sequence,
      " asked for; retry once a newer version is live"));
}

std::shared_ptr<const IndexVersion> IndexVersion::FromParts(
    VersionInfo info, std::unique_ptr<CandidateStore> store,
    std::unique_ptr<VectorIndex> index) {
  return std::shared_ptr<const IndexVersion>(
      new IndexVersion(std::move(info), std::move(store), std::move(index)));
}

}  // namespace hardneg

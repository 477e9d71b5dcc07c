#include "versions/publish.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"
#include "versions/index_manager.h"

namespace hardneg {
namespace {

// Sentinels of the per-base-row plan in an incremental Finish; any other
// value is the upsert row that replaces the base row.
constexpr uint32_t kKeep = std::numeric_limits<uint32_t>::max();
constexpr uint32_t kDelete = kKeep - 1;

// The accounting of max_bytes: the vector, the id and the label of a row.
size_t BytesPerRow(size_t dim, bool labels) {
  return dim * sizeof(float) + sizeof(int64_t) + (labels ? sizeof(int64_t) : 0);
}

absl::Status OverBudget(size_t needed, size_t max_bytes,
                        absl::string_view what) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the publish needs ", needed, " bytes for ", what, " but the server may ",
      "take only ", max_bytes, " more (", kIndexByteBudgetTerm,
      " less the served version); publish fewer or smaller embeddings, or "
      "raise ",
      kIndexByteBudgetTerm));
}

}  // namespace

absl::StatusOr<PublishAssembler> PublishAssembler::Start(PublishHeader header,
                                                         size_t max_bytes,
                                                         ShardFilter shard) {
  if (header.name.empty()) {
    return absl::InvalidArgumentError(
        "header.name is empty: name the version being published");
  }
  HARDNEG_RETURN_IF_ERROR(CheckVersionName(header.name, "header.name"));
  if (header.dim == 0) {
    return absl::InvalidArgumentError(
        "header.dim is 0: give the embeddings' dimension");
  }
  if (header.base_version.has_value() && header.base_version->empty()) {
    return absl::InvalidArgumentError(
        "header.base_version is set but empty: name the served version the "
        "incremental publish applies to, or leave it unset for a full "
        "publish");
  }
  if (header.base_version.has_value()) {
    // Checked like any name, so that a hostile one is never echoed back.
    HARDNEG_RETURN_IF_ERROR(
        CheckVersionName(*header.base_version, "header.base_version"));
  }
  return PublishAssembler(std::move(header), max_bytes, shard);
}

absl::Status CheckPublishChunk(const PublishHeader& header, size_t chunk,
                               absl::Span<const int64_t> ids,
                               absl::Span<const int64_t> labels,
                               absl::Span<const float> embeddings,
                               absl::Span<const int64_t> delete_ids,
                               std::optional<bool>* has_labels) {
  const size_t dim = header.dim;
  if (embeddings.size() != ids.size() * dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", chunk, ": embeddings has ", embeddings.size(),
                     " floats, expected ", ids.size(), " ids x dim ", dim,
                     " = ", ids.size() * dim));
  }
  if (!labels.empty() && labels.size() != ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", chunk, ": labels has ", labels.size(),
                     " values for ", ids.size(), " ids; send one per id"));
  }
  if (!delete_ids.empty() && !header.base_version.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", chunk,
                     ": delete_ids in a full publish (no header.base_version); "
                     "a full publish replaces the whole corpus"));
  }
  if (!ids.empty()) {
    const bool chunk_has_labels = !labels.empty();
    if (!has_labels->has_value()) {
      *has_labels = chunk_has_labels;
    } else if (**has_labels != chunk_has_labels) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk ", chunk, (chunk_has_labels ? " has" : " has no"),
          " labels but earlier chunks ", (**has_labels ? "do" : "do not"),
          "; every chunk with ids must agree on having labels"));
    }
  }
  for (size_t row = 0; row < ids.size(); ++row) {
    const float* v = embeddings.data() + row * dim;
    for (size_t i = 0; i < dim; ++i) {
      if (!std::isfinite(v[i])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "chunk ", chunk, ": non-finite value ", v[i], " in embeddings row ",
            row, " (id ", ids[row], "), column ", i));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status PublishAssembler::AddChunk(absl::Span<const int64_t> ids,
                                        absl::Span<const int64_t> labels,
                                        absl::Span<const float> embeddings,
                                        absl::Span<const int64_t> delete_ids) {
  const size_t chunk = chunks_++;
  HARDNEG_RETURN_IF_ERROR(CheckPublishChunk(
      header_, chunk, ids, labels, embeddings, delete_ids, &has_labels_));
  const size_t dim = header_.dim;
  if (max_bytes_ != 0) {
    const size_t needed =
        (ids_.size() + ids.size()) *
            BytesPerRow(dim, has_labels_.value_or(false)) +
        (delete_ids_.size() + delete_ids.size()) * sizeof(int64_t);
    if (needed > max_bytes_) {
      return OverBudget(needed, max_bytes_,
                        absl::StrCat(ids_.size() + ids.size(), " rows of dim ",
                                     dim, " received so far"));
    }
  }
  received_ids_ += ids.size();
  received_delete_ids_ += delete_ids.size();
  Keep(ids, labels, embeddings, delete_ids);
  return absl::OkStatus();
}

void PublishAssembler::Keep(absl::Span<const int64_t> ids,
                            absl::Span<const int64_t> labels,
                            absl::Span<const float> embeddings,
                            absl::Span<const int64_t> delete_ids) {
  if (!shard_.sharded()) {
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    labels_.insert(labels_.end(), labels.begin(), labels.end());
    embeddings_.insert(embeddings_.end(), embeddings.begin(), embeddings.end());
    delete_ids_.insert(delete_ids_.end(), delete_ids.begin(), delete_ids.end());
    return;
  }
  const size_t dim = header_.dim;
  for (size_t row = 0; row < ids.size(); ++row) {
    if (!shard_.Keeps(ids[row])) continue;
    ids_.push_back(ids[row]);
    if (!labels.empty()) labels_.push_back(labels[row]);
    const float* v = embeddings.data() + row * dim;
    embeddings_.insert(embeddings_.end(), v, v + dim);
  }
  for (const int64_t id : delete_ids) {
    if (shard_.Keeps(id)) delete_ids_.push_back(id);
  }
}

absl::Status PublishAssembler::CheckComplete() const {
  if (header_.total_ids.has_value() && *header_.total_ids != received_ids_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.total_ids is ", *header_.total_ids, " but the stream carried ",
        received_ids_, " ids: the publish was cut short"));
  }
  if (header_.total_delete_ids.has_value() &&
      *header_.total_delete_ids != received_delete_ids_) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.total_delete_ids is ", *header_.total_delete_ids,
                     " but the stream carried ", received_delete_ids_,
                     " delete_ids: the publish was cut short"));
  }
  return absl::OkStatus();
}

std::optional<uint64_t> PublishAssembler::RequiredSequence(
    const IndexVersion* base) const {
  if (!header_.base_version.has_value()) return std::nullopt;
  return base != nullptr ? base->info().sequence : 0;
}

absl::StatusOr<CandidateStore> PublishAssembler::Finish(
    const IndexVersion* base) {
  HARDNEG_RETURN_IF_ERROR(CheckComplete());
  if (!header_.base_version.has_value()) return FinishFull();
  HARDNEG_RETURN_IF_ERROR(CheckBase(base));
  const CandidateStore& old = base->store();
  HARDNEG_ASSIGN_OR_RETURN(Plan plan, PlanRows(old));
  const size_t result_rows = plan.kept + plan.appended.size();
  if (max_bytes_ != 0) {
    const size_t needed = (ids_.size() + result_rows) *
                              BytesPerRow(header_.dim, old.has_labels()) +
                          delete_ids_.size() * sizeof(int64_t);
    if (needed > max_bytes_) {
      return OverBudget(
          needed, max_bytes_,
          absl::StrCat("the new version of ", result_rows, " rows of dim ",
                       header_.dim, " and the upserts"));
    }
  }
  return Merge(old, plan);
}

absl::StatusOr<CandidateStore> PublishAssembler::FinishFull() {
  // A shard's share of a publish split by a router may be empty.
  if (received_ids_ == 0 && !shard_.sharded()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the publish of '", header_.name,
        "' carried no candidates: send at least one chunk with ids and "
        "embeddings after the header"));
  }
  // Create names a duplicate id with both rows of the publish.
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      header_.dim, std::move(ids_), std::move(embeddings_),
      has_labels_.value_or(false) ? std::make_optional(std::move(labels_))
                                  : std::nullopt);
  if (!store.ok()) {
    return Annotate(store.status(),
                    absl::StrCat("publish of '", header_.name, "': "));
  }
  return store;
}

absl::Status PublishAssembler::CheckBase(const IndexVersion* base) const {
  const std::string& base_name = *header_.base_version;
  if (base == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "header.base_version is '", base_name,
        "' but the server serves no version yet; send a full publish"));
  }
  if (base->info().name != base_name) {
    return absl::FailedPreconditionError(absl::StrCat(
        "header.base_version is '", base_name, "' but the server serves '",
        base->info().name, "'; publish against '", base->info().name,
        "' or send a full publish"));
  }
  const CandidateStore& old = base->store();
  if (old.dim() != header_.dim) {
    return absl::FailedPreconditionError(
        absl::StrCat("header.dim is ", header_.dim, " but the base version '",
                     base_name, "' has dim ", old.dim()));
  }
  if (!ids_.empty() && has_labels_.value_or(false) != old.has_labels()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the base version '", base_name, "' ",
        old.has_labels() ? "has labels but the upserts carry none"
                         : "has no labels but the upserts carry them",
        "; send labels exactly when the base has them"));
  }
  if (ids_.size() >= kDelete || old.size() >= kDelete) {
    return absl::InvalidArgumentError("more than 2^32-2 candidates");
  }
  return absl::OkStatus();
}

absl::StatusOr<PublishAssembler::Plan> PublishAssembler::PlanRows(
    const CandidateStore& old) const {
  Plan plan;
  plan.rows.assign(old.size(), kKeep);
  absl::flat_hash_map<int64_t, uint32_t> new_ids;  // id -> upsert row
  for (size_t row = 0; row < ids_.size(); ++row) {
    const int64_t id = ids_[row];
    const std::optional<size_t> base_row = old.RowOf(id);
    uint32_t earlier = kKeep;
    if (base_row.has_value()) {
      earlier = plan.rows[*base_row];
      if (earlier == kKeep) plan.rows[*base_row] = static_cast<uint32_t>(row);
    } else {
      const auto [it, inserted] =
          new_ids.emplace(id, static_cast<uint32_t>(row));
      if (inserted) plan.appended.push_back(static_cast<uint32_t>(row));
      if (!inserted) earlier = it->second;
    }
    if (earlier != kKeep) {
      return absl::InvalidArgumentError(
          absl::StrCat("id ", id, " is repeated within the publish (rows ",
                       earlier, " and ", row, " of its ids)"));
    }
  }
  for (const int64_t id : delete_ids_) {
    const std::optional<size_t> base_row = old.RowOf(id);
    if (new_ids.contains(id) ||
        (base_row.has_value() && plan.rows[*base_row] != kKeep &&
         plan.rows[*base_row] != kDelete)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "id ", id, " is both upserted (ids) and deleted (delete_ids)"));
    }
    // Deleting a missing id is not an error.
    if (base_row.has_value()) plan.rows[*base_row] = kDelete;
  }
  for (const uint32_t p : plan.rows) plan.kept += p != kDelete;
  return plan;
}

absl::StatusOr<CandidateStore> PublishAssembler::Merge(
    const CandidateStore& old, const Plan& plan) {
  const size_t dim = header_.dim;
  const bool result_labels = old.has_labels();
  const size_t result_rows = plan.kept + plan.appended.size();
  std::vector<int64_t> ids;
  std::vector<float> vectors(result_rows * dim);
  std::vector<int64_t> labels;
  ids.reserve(result_rows);
  if (result_labels) labels.reserve(result_rows);
  float* out = vectors.data();
  auto append = [&](int64_t id, int64_t label, const float* vector) {
    ids.push_back(id);
    if (result_labels) labels.push_back(label);
    std::memcpy(out, vector, dim * sizeof(float));
    out += dim;
  };
  auto append_upsert = [&](uint32_t row) {
    append(ids_[row], result_labels ? labels_[row] : 0,
           embeddings_.data() + size_t{row} * dim);
  };
  for (size_t row = 0; row < plan.rows.size(); ++row) {
    const uint32_t p = plan.rows[row];
    if (p == kDelete) continue;
    if (p != kKeep) {
      append_upsert(p);
    } else {
      append(old.id(row), result_labels ? old.label(row) : 0, old.vector(row));
    }
  }
  for (const uint32_t row : plan.appended) append_upsert(row);

  // The upserts are in the result now; free them before Create validates.
  ids_ = {};
  labels_ = {};
  embeddings_ = {};
  delete_ids_ = {};
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      dim, std::move(ids), std::move(vectors),
      result_labels ? std::make_optional(std::move(labels)) : std::nullopt);
  if (!store.ok()) {
    return Annotate(store.status(),
                    absl::StrCat("publish of '", header_.name, "' onto '",
                                 *header_.base_version, "': "));
  }
  return store;
}

}  // namespace hardneg

// PublishAssembler: turns the chunks of a Publish stream into the
// candidates of a new version, validating as the checkpoint reader does.
//
//   Full publish: the chunks are the whole corpus.
//   Incremental publish (header.base_version set): the chunks carry upserts
//   (ids new or changed, with their embeddings and labels) and delete_ids,
//   applied to the served version named base_version.
//
// The rows are gathered on the heap as they arrive, and the version built
// from them keeps them there even when IndexManagerOptions::mmap_vectors
// maps checkpoints' rows (an incremental publish also copies the base's
// rows, mapped or not): a publish costs its rows in heap bytes, counted in
// the byte budget. Corpora near the machine's memory should arrive as
// checkpoints.
//
// Not thread-safe: one assembler per stream, used by one thread at a time.
#ifndef HARDNEG_SRC_VERSIONS_PUBLISH_H_
#define HARDNEG_SRC_VERSIONS_PUBLISH_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "corpus/shard.h"
#include "versions/index_version.h"

namespace hardneg {

struct PublishHeader {
  std::string name;
  uint64_t step = 0;
  uint32_t dim = 0;
  std::optional<Metric> metric;             // absent: the served version's
  std::optional<std::string> base_version;  // set: incremental
  // Set: how many ids (delete_ids) the chunks carry in all, so that a
  // stream cut short is not installed.
  std::optional<uint64_t> total_ids;
  std::optional<uint64_t> total_delete_ids;
};

// The checks of one chunk (the `chunk`-th) of a publish with `header`,
// before anything is kept: INVALID_ARGUMENT naming the chunk and field for
// a size mismatch, delete_ids in a full publish, labels in some chunks with
// ids but not others (`*has_labels`, unset before the first chunk with
// ids, records which), or a non-finite value (with the id). The one owner
// of these rules: PublishAssembler::AddChunk calls it on a server's rows,
// and a router on every row before it splits them among shards.
absl::Status CheckPublishChunk(const PublishHeader& header, size_t chunk,
                               absl::Span<const int64_t> ids,
                               absl::Span<const int64_t> labels,
                               absl::Span<const float> embeddings,
                               absl::Span<const int64_t> delete_ids,
                               std::optional<bool>* has_labels);

class PublishAssembler {
 public:
  // INVALID_ARGUMENT (naming the header field) for an empty name or dim 0.
  // `max_bytes` bounds the candidates' memory (0: no bound). With a `shard`
  // of several, every chunk is checked whole but only the rows (and
  // delete_ids) the filter keeps are kept, and a full publish may leave
  // this shard none; total_ids counts what the stream carried.
  static absl::StatusOr<PublishAssembler> Start(PublishHeader header,
                                                size_t max_bytes,
                                                ShardFilter shard = {});

  // Appends one chunk: `ids`, `labels` (empty, or one per id; every chunk
  // must agree on having labels), `embeddings` (row-major, ids.size() x dim)
  // and, for incremental publishes only, `delete_ids`. INVALID_ARGUMENT
  // naming the chunk number and field for a size mismatch, a non-finite
  // value (with the id), an id repeated within the publish, or delete_ids
  // in a full publish. RESOURCE_EXHAUSTED when the data would exceed
  // max_bytes.
  absl::Status AddChunk(absl::Span<const int64_t> ids,
                        absl::Span<const int64_t> labels,
                        absl::Span<const float> embeddings,
                        absl::Span<const int64_t> delete_ids);

  // INVALID_ARGUMENT when header.total_ids or total_delete_ids is set and
  // differs from what the chunks carried (the publish was cut short).
  absl::Status CheckComplete() const;

  // The sequence the publish must be installed onto (for
  // IndexManager::Install): for an incremental publish, that of `base`,
  // the version it is assembled onto (0 when none serves); nullopt for a
  // full publish.
  std::optional<uint64_t> RequiredSequence(const IndexVersion* base) const;

  // The new version's candidates (CheckComplete first). Incremental: `base`
  // must be the served version named header.base_version (FAILED_PRECONDITION
  // otherwise, with both names); its dim must equal header.dim and, when the
  // base has labels, upserts must carry labels. The result keeps the base's
  // rows in order (minus deletes, with upserted rows replaced in place) and
  // appends new ids in publish order. Full: `base` is ignored; no chunks is
  // INVALID_ARGUMENT. Deleting an id that does not exist is not an error.
  absl::StatusOr<CandidateStore> Finish(const IndexVersion* base);

  const PublishHeader& header() const { return header_; }
  size_t rows() const { return ids_.size(); }
  size_t delete_rows() const { return delete_ids_.size(); }

 private:
  // What becomes of the base's rows in an incremental publish.
  struct Plan {
    // Per base row: kept, deleted, or the upsert row that replaces it.
    std::vector<uint32_t> rows;
    std::vector<uint32_t> appended;  // upsert rows of new ids, in order
    size_t kept = 0;                 // base rows not deleted
  };

  absl::StatusOr<CandidateStore> FinishFull();
  // FAILED_PRECONDITION unless `base` is the version named base_version,
  // of the header's dim, with labels exactly when the upserts have them.
  absl::Status CheckBase(const IndexVersion* base) const;
  // INVALID_ARGUMENT for an id upserted twice, or upserted and deleted.
  absl::StatusOr<Plan> PlanRows(const CandidateStore& old) const;
  // The base's rows as planned, then the new ids; frees the upserts.
  absl::StatusOr<CandidateStore> Merge(const CandidateStore& old,
                                       const Plan& plan);

  PublishAssembler(PublishHeader header, size_t max_bytes, ShardFilter shard)
      : header_(std::move(header)), max_bytes_(max_bytes), shard_(shard) {}
  // Appends the rows and delete_ids of a checked chunk that shard_ keeps.
  void Keep(absl::Span<const int64_t> ids, absl::Span<const int64_t> labels,
            absl::Span<const float> embeddings,
            absl::Span<const int64_t> delete_ids);

  PublishHeader header_;
  size_t max_bytes_;
  ShardFilter shard_;
  size_t chunks_ = 0;
  // What the stream carried (ids_ and delete_ids_ hold what shard_ keeps).
  uint64_t received_ids_ = 0;
  uint64_t received_delete_ids_ = 0;
  std::optional<bool> has_labels_;
  std::vector<int64_t> ids_;
  std::vector<int64_t> labels_;
  std::vector<float> embeddings_;
  std::vector<int64_t> delete_ids_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_VERSIONS_PUBLISH_H_

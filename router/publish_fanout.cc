#include "router/publish_fanout.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "corpus/shard.h"
#include "grpcpp/client_context.h"
#include "server/convert.h"
#include "versions/publish.h"

namespace hardneg {
namespace {

// One shard's forwarded stream.
struct ShardStream {
  grpc::ClientContext context;
  v1::PublishResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::PublishRequest>> writer;
  bool broken = false;  // a write failed: the shard ended the call
};

// What the router checks over the whole stream.
struct PublishTally {
  absl::flat_hash_set<int64_t> ids;
  uint64_t delete_ids = 0;
  // Whether the chunks with ids carry labels (set by the first of them).
  std::optional<bool> has_labels;
};

// Splits one chunk (the `index`-th) by shard into `out` (one per shard).
absl::Status SplitChunk(const v1::PublishChunk& chunk, size_t index,
                        const PublishHeader& header, PublishTally& tally,
                        std::vector<v1::PublishRequest>& out) {
  std::vector<float> buffer;
  HARDNEG_ASSIGN_OR_RETURN(absl::Span<const float> embeddings,
                           DecodeChunkEmbeddings(chunk, index, &buffer));
  // Every check a shard would make on its own rows, made here on all of
  // them, so that the shards accept or refuse the same publish.
  HARDNEG_RETURN_IF_ERROR(
      CheckPublishChunk(header, index, chunk.ids(), chunk.labels(), embeddings,
                        chunk.delete_ids(), &tally.has_labels));
  const size_t rows = static_cast<size_t>(chunk.ids_size());
  const size_t dim = header.dim;
  const auto shards = static_cast<uint32_t>(out.size());
  for (size_t row = 0; row < rows; ++row) {
    const int64_t id = chunk.ids(static_cast<int>(row));
    if (!tally.ids.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk ", index, ": id ", id, " is repeated within the publish"));
    }
    v1::PublishChunk* part = out[ShardOf(id, shards)].mutable_chunk();
    part->add_ids(id);
    if (chunk.labels_size() != 0) {
      part->add_labels(chunk.labels(static_cast<int>(row)));
    }
    part->mutable_embeddings()->Add(embeddings.begin() + row * dim,
                                    embeddings.begin() + (row + 1) * dim);
  }
  for (const int64_t id : chunk.delete_ids()) {
    out[ShardOf(id, shards)].mutable_chunk()->add_delete_ids(id);
  }
  tally.delete_ids += static_cast<uint64_t>(chunk.delete_ids_size());
  return absl::OkStatus();
}

// header.total_ids and total_delete_ids against what the stream carried,
// and a full publish's ids, as a server checks them.
absl::Status CheckTally(const v1::PublishHeader& header,
                        const PublishTally& tally) {
  if (header.has_total_ids() && header.total_ids() != tally.ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.total_ids is ", header.total_ids(), " but the stream carried ",
        tally.ids.size(), " ids: the publish was cut short"));
  }
  if (header.has_total_delete_ids() &&
      header.total_delete_ids() != tally.delete_ids) {
    return absl::InvalidArgumentError(
        absl::StrCat("header.total_delete_ids is ", header.total_delete_ids(),
                     " but the stream carried ", tally.delete_ids,
                     " delete_ids: the publish was cut short"));
  }
  if (!header.has_base_version() && tally.ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the publish of '", header.name(),
        "' carried no candidates: send at least one chunk with ids and "
        "embeddings after the header"));
  }
  return absl::OkStatus();
}

// Reads the client's chunks and forwards each shard its part.
absl::Status ForwardChunks(grpc::ServerReader<v1::PublishRequest>& reader,
                           const v1::PublishHeader& header,
                           const PublishHeader& decoded,
                           std::vector<std::unique_ptr<ShardStream>>& streams,
                           PublishTally& tally) {
  v1::PublishRequest message;
  for (size_t index = 0; reader.Read(&message); ++index) {
    if (message.has_header()) {
      return absl::InvalidArgumentError(
          absl::StrCat("message ", index + 1,
                       " is a second header; send one header, "
                       "then chunks"));
    }
    std::vector<v1::PublishRequest> parts(streams.size());
    HARDNEG_RETURN_IF_ERROR(
        SplitChunk(message.chunk(), index, decoded, tally, parts));
    for (size_t i = 0; i < streams.size(); ++i) {
      if (!parts[i].has_chunk() || streams[i]->broken) continue;
      streams[i]->broken = !streams[i]->writer->Write(parts[i]);
    }
  }
  return CheckTally(header, tally);
}

// Ends every shard's stream: cancelled (nothing installs), or sent its end;
// every shard gets the end before any is waited for, so they build at once
// and move to the new version together.
void EndStreams(std::vector<std::unique_ptr<ShardStream>>& streams,
                bool cancel) {
  for (auto& stream : streams) {
    if (cancel) {
      stream->context.TryCancel();
    } else {
      stream->writer->WritesDone();
    }
  }
}

// A shard's failed publish as the router answers it: a shard gone or slow
// is UNAVAILABLE; a refusal keeps its code (a server gives the same one).
absl::StatusCode FailureCode(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::CANCELLED:
      return absl::StatusCode::kUnavailable;
    default:
      return static_cast<absl::StatusCode>(status.error_code());
  }
}

// Reads the stream's first message, the header, into `*header`; returns it
// in domain terms.
absl::StatusOr<PublishHeader> ReadHeader(
    grpc::ServerReader<v1::PublishRequest>& reader, v1::PublishHeader* header) {
  v1::PublishRequest first;
  if (!reader.Read(&first) || !first.has_header()) {
    return absl::InvalidArgumentError(
        "the first message of a Publish must be its header");
  }
  *header = first.header();
  HARDNEG_ASSIGN_OR_RETURN(PublishHeader decoded, DecodePublishHeader(*header));
  if (decoded.dim == 0) {
    return absl::InvalidArgumentError(
        "header.dim is 0: give the embeddings' dimension");
  }
  return decoded;
}

}  // namespace

absl::StatusOr<ForwardedPublish> ForwardPublish(
    ShardSet& shards, grpc::ServerContext& context,
    grpc::ServerReader<v1::PublishRequest>& reader, RouterMetrics* metrics) {
  ForwardedPublish forwarded;
  // Rows go to the shard at the position ShardOf names: a shard out of
  // its place would drop them (it keeps only its own).
  for (const ShardState& shard : shards.Refresh().shards) {
    if (shard.misplaced) {
      return absl::FailedPreconditionError(
          absl::StrCat("shard ", shard.target, " ", shard.error));
    }
  }
  HARDNEG_ASSIGN_OR_RETURN(const PublishHeader decoded,
                           ReadHeader(reader, &forwarded.header));
  v1::PublishRequest shard_header;
  *shard_header.mutable_header() = forwarded.header;
  shard_header.mutable_header()->clear_total_ids();
  shard_header.mutable_header()->clear_total_delete_ids();
  const absl::Time start = absl::Now();
  std::vector<std::unique_ptr<ShardStream>> streams;
  for (size_t i = 0; i < shards.size(); ++i) {
    auto stream = std::make_unique<ShardStream>();
    stream->context.set_deadline(context.deadline());
    shards.Prepare(stream->context);
    stream->writer =
        shards.miner(i)->Publish(&stream->context, &stream->response);
    stream->broken = !stream->writer->Write(shard_header);
    streams.push_back(std::move(stream));
  }
  PublishTally tally;
  absl::Status read =
      ForwardChunks(reader, forwarded.header, decoded, streams, tally);
  if (read.ok() && context.IsCancelled()) {
    read = absl::CancelledError(
        "the Publish call was cancelled before its end; nothing was "
        "installed");
  }
  // A shard that ended its stream early refused the publish: nothing may
  // install anywhere then.
  bool refused = false;
  for (const auto& stream : streams) refused = refused || stream->broken;
  EndStreams(streams, /*cancel=*/!read.ok() || refused);
  std::string failures;
  // The first shard's code when it refused the publish itself (the same
  // refusal a server gives), else UNAVAILABLE.
  absl::StatusCode code = absl::StatusCode::kOk;
  for (size_t i = 0; i < streams.size(); ++i) {
    const grpc::Status status = streams[i]->writer->Finish();
    if (metrics != nullptr) {
      metrics->RecordShardCall(i, ShardCall::kPublish, status,
                               absl::Now() - start);
    }
    if (read.ok() && !status.ok() &&
        (!refused || status.error_code() != grpc::StatusCode::CANCELLED)) {
      if (code == absl::StatusCode::kOk) code = FailureCode(status);
      absl::StrAppend(&failures, failures.empty() ? "" : "; ", "shard ", i,
                      " (", shards.target(i), ") ", DescribeStatus(status));
    }
    forwarded.responses.push_back(streams[i]->response);
  }
  HARDNEG_RETURN_IF_ERROR(read);
  if (refused) {
    return absl::Status(
        code == absl::StatusCode::kOk ? absl::StatusCode::kUnavailable : code,
        absl::StrCat("the publish was refused by ",
                     failures.empty() ? "a shard" : failures,
                     "; every shard's stream was cancelled: nothing was "
                     "installed"));
  }
  if (!failures.empty()) {
    return absl::Status(
        code,
        absl::StrCat(
            "the publish failed on ", failures,
            "; shards that accepted it may serve it, but the router answers "
            "only from a version every shard holds: publish again"));
  }
  return forwarded;
}

}  // namespace hardneg

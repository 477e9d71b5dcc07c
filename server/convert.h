// The one place where protos meet the domain: hardneg.v1 messages to and
// from Miner types, and absl::Status to grpc::Status.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SERVER_CONVERT_H_
#define HARDNEG_SERVER_CONVERT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"
#include "hardneg/v1/miner.pb.h"
#include "mining/miner.h"
#include "versions/index_manager.h"
#include "versions/index_version.h"
#include "versions/publish.h"

namespace hardneg {

// A MineRequest in domain terms. The queries are views into the request
// (and into `decoded_embeddings` for embedding_bytes), so the request must
// outlive this struct, and the struct must not be copied.
struct DecodedMineRequest {
  std::vector<MiningQuery> queries;
  MiningOptions options;
  bool return_embeddings = false;
  // Every query's embedding_bytes, decoded, back to back.
  std::vector<float> decoded_embeddings;
};

// Fills `out` from `request`. INVALID_ARGUMENT, naming the field and query
// index, for embedding_bytes whose size is not a multiple of 4, a query
// with both embedding and embedding_bytes, or an unknown sampling value.
// Semantic checks (dimension, NaN, options) are the Miner's.
absl::Status DecodeMineRequest(const v1::MineRequest& request,
                               DecodedMineRequest* out);

// At least the encoded size of an answer to `queries` queries of
// `num_negatives` each (with embeddings of `dim` floats when asked for).
uint64_t ReplyBytesBound(uint64_t queries, uint32_t num_negatives,
                         bool return_embeddings, size_t dim);

// A Publish header in domain terms. INVALID_ARGUMENT ("header.metric: ...")
// for an unknown metric; the other checks are PublishAssembler::Start's.
absl::StatusOr<PublishHeader> DecodePublishHeader(
    const v1::PublishHeader& header);

// The embeddings of the `index`-th chunk of a publish: its packed floats,
// viewed in place, or its little-endian embeddings_bytes, copied into
// `*buffer` (they need not be aligned for float), which must then outlive
// the view. INVALID_ARGUMENT, naming the chunk, when both are set, when the
// bytes are not a multiple of 4, or when the chunk has ids but neither.
absl::StatusOr<absl::Span<const float>> DecodeChunkEmbeddings(
    const v1::PublishChunk& chunk, size_t index, std::vector<float>* buffer);

// RESOURCE_EXHAUSTED when the answer to `request` could exceed `max_bytes`
// once encoded (num_negatives for every query, at most `candidates`, with
// embeddings of `dim` floats when asked for), so that an answer too large
// to send is refused before any work.
absl::Status CheckReplySize(const DecodedMineRequest& request, size_t dim,
                            size_t max_bytes, size_t candidates = SIZE_MAX);

// The candidates a request may rank: range_max (after defaulting) x
// queries, straight from the proto (no decoding), for batching.
uint64_t RequestFetch(const v1::MineRequest& request);

// Appends one QueryResult per result; copies stored vectors when
// `return_embeddings`.
void EncodeResults(const std::vector<MiningResult>& results,
                   const IndexVersion& version, bool return_embeddings,
                   v1::MineResponse* response);

void EncodeVersion(const VersionInfo& info, v1::IndexVersion* out);

// IndexInfo for `version` (may be null: nothing served yet).
v1::IndexInfo EncodeIndexInfo(const IndexVersion* version,
                              const BuildStatus& status);

// `message` with the server flag that sets each domain setting it names
// beside the setting ("the index byte budget (--max_index_bytes)"), so
// that an operator knows what to change. Applied to every status message
// and to last_rejected on the wire.
std::string WithFlagNames(absl::string_view message);

// Same code; the message WithFlagNames.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Sets response.error from a non-OK status (the message WithFlagNames).
void EncodeError(const absl::Status& status, v1::MineResponse* response);

}  // namespace hardneg

#endif  // HARDNEG_SERVER_CONVERT_H_

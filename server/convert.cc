#include "server/convert.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "index/vector_index.h"
#include "proto/mining_options_convert.h"

namespace hardneg {
namespace {

// OK when `bytes` bytes hold whole float32 values; else INVALID_ARGUMENT
// naming `field`. Both bytes fields of the API (a query's embedding_bytes,
// a publish chunk's embeddings_bytes) are checked by this one rule.
absl::Status CheckFloat32Bytes(absl::string_view field, size_t bytes) {
  if (bytes % sizeof(float) == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " has ", bytes,
                   " bytes, not a multiple of 4 (little-endian float32)"));
}

// `decoded` has room for this query's embedding_bytes (if any).
absl::Status DecodeQuery(const v1::Query& query, size_t i, float* decoded,
                         MiningQuery* q) {
  if (!query.embedding_bytes().empty()) {
    if (query.embedding_size() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("queries[", i,
                       "] sets both embedding and embedding_bytes; send one"));
    }
    const std::string& bytes = query.embedding_bytes();
    // Copied once: the bytes need not be aligned for float.
    std::memcpy(decoded, bytes.data(), bytes.size());
    q->embedding = absl::MakeConstSpan(decoded, bytes.size() / sizeof(float));
  } else {
    q->embedding =
        absl::MakeConstSpan(query.embedding().data(), query.embedding_size());
  }
  q->positive_ids = absl::MakeConstSpan(query.positive_ids().data(),
                                        query.positive_ids_size());
  q->positive_scores = absl::MakeConstSpan(query.positive_scores().data(),
                                           query.positive_scores_size());
  if (query.has_label()) q->label = query.label();
  if (query.has_query_id()) q->query_id = query.query_id();
  return absl::OkStatus();
}

}  // namespace

absl::Status DecodeMineRequest(const v1::MineRequest& request,
                               DecodedMineRequest* out) {
  HARDNEG_RETURN_IF_ERROR(
      MiningOptionsFromProto(request.options(), &out->options));
  out->return_embeddings = out->options.return_embeddings;

  // One buffer for every query's embedding_bytes, sized before any span
  // points into it.
  size_t floats = 0;
  for (int i = 0; i < request.queries_size(); ++i) {
    HARDNEG_RETURN_IF_ERROR(
        CheckFloat32Bytes(absl::StrCat("queries[", i, "].embedding_bytes"),
                          request.queries(i).embedding_bytes().size()));
    floats += request.queries(i).embedding_bytes().size() / sizeof(float);
  }
  out->decoded_embeddings.resize(floats);
  out->queries.resize(request.queries_size());
  size_t next = 0;
  for (int i = 0; i < request.queries_size(); ++i) {
    const v1::Query& query = request.queries(i);
    absl::Status status = DecodeQuery(
        query, i, out->decoded_embeddings.data() + next, &out->queries[i]);
    if (!status.ok()) return status;
    next += query.embedding_bytes().size() / sizeof(float);
  }
  return absl::OkStatus();
}

absl::StatusOr<PublishHeader> DecodePublishHeader(const v1::PublishHeader& h) {
  PublishHeader header;
  header.name = h.name();
  header.step = h.step();
  header.dim = h.dim();
  if (!h.metric().empty()) {
    absl::StatusOr<Metric> metric = ParseMetric(h.metric());
    if (!metric.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("header.metric: ", metric.status().message()));
    }
    header.metric = *metric;
  }
  if (h.has_base_version()) header.base_version = h.base_version();
  if (h.has_total_ids()) header.total_ids = h.total_ids();
  if (h.has_total_delete_ids()) header.total_delete_ids = h.total_delete_ids();
  return header;
}

absl::StatusOr<absl::Span<const float>> DecodeChunkEmbeddings(
    const v1::PublishChunk& c, size_t index, std::vector<float>* buffer) {
  const std::string& bytes = c.embeddings_bytes();
  absl::Span<const float> embeddings =
      absl::MakeConstSpan(c.embeddings().data(), c.embeddings_size());
  if (!bytes.empty()) {
    if (!embeddings.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", index,
                       " sets both embeddings and embeddings_bytes; send "
                       "one of them"));
    }
    HARDNEG_RETURN_IF_ERROR(CheckFloat32Bytes(
        absl::StrCat("chunk ", index, ": embeddings_bytes"), bytes.size()));
    buffer->resize(bytes.size() / sizeof(float));
    std::memcpy(buffer->data(), bytes.data(), bytes.size());
    return absl::MakeConstSpan(*buffer);
  }
  if (c.ids_size() > 0 && embeddings.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk ", index, " has ", c.ids_size(),
                     " ids but no embeddings; set embeddings or "
                     "embeddings_bytes"));
  }
  return embeddings;
}

uint64_t ReplyBytesBound(uint64_t queries, uint32_t num_negatives,
                         bool return_embeddings, size_t dim) {
  // Upper bounds of the encoded sizes: a Negative's id, label (varints of
  // up to 10 bytes), score, rank and framing take at most 39 bytes, its
  // packed embedding 4 x dim plus 6; a QueryResult's own fields and
  // framing 17.
  const uint64_t per_negative =
      39 + (return_embeddings ? 6 + 4 * uint64_t{dim} : 0);
  return 1024 + queries * (17 + num_negatives * per_negative);
}

absl::Status CheckReplySize(const DecodedMineRequest& request, size_t dim,
                            size_t max_bytes, size_t candidates) {
  const uint64_t queries = request.queries.size();
  const auto per_query = static_cast<uint32_t>(
      std::min<uint64_t>(request.options.num_negatives, candidates));
  const uint64_t bytes =
      ReplyBytesBound(queries, per_query, request.return_embeddings, dim);
  if (bytes <= max_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the answer could take ", bytes, " bytes (", queries, " queries x ",
      per_query, " negatives",
      request.return_embeddings
          ? absl::StrCat(" with embeddings of ", dim, " floats")
          : "",
      "), over the message limit of ", max_bytes,
      " bytes; split the request, ask for fewer negatives",
      request.return_embeddings ? ", or leave out return_embeddings" : ""));
}

uint64_t RequestFetch(const v1::MineRequest& request) {
  const v1::MiningOptions& o = request.options();
  const uint64_t range_max = o.range_max() != 0
                                 ? o.range_max()
                                 : uint64_t{o.range_min()} + o.num_negatives();
  return range_max * static_cast<uint64_t>(request.queries_size());
}

void EncodeResults(const std::vector<MiningResult>& results,
                   const IndexVersion& version, bool return_embeddings,
                   v1::MineResponse* response) {
  const CandidateStore& store = version.store();
  response->mutable_results()->Reserve(static_cast<int>(results.size()));
  for (const MiningResult& result : results) {
    v1::QueryResult* out = response->add_results();
    out->set_shortfall(result.shortfall);
    if (result.positive_score.has_value()) {
      out->set_positive_score(*result.positive_score);
    }
    out->mutable_negatives()->Reserve(
        static_cast<int>(result.negatives.size()));
    for (const MinedNegative& negative : result.negatives) {
      v1::Negative* n = out->add_negatives();
      n->set_id(negative.id);
      n->set_score(negative.score);
      n->set_label(negative.label);
      n->set_rank(negative.rank);
      if (return_embeddings) {
        const float* v = store.vector(negative.row);
        n->mutable_embedding()->Add(v, v + store.dim());
      }
    }
  }
}

void EncodeVersion(const VersionInfo& info, v1::IndexVersion* out) {
  out->set_name(info.name);
  out->set_sequence(info.sequence);
}

v1::IndexInfo EncodeIndexInfo(const IndexVersion* version,
                              const BuildStatus& status) {
  v1::IndexInfo info;
  info.set_build_state(std::string(BuildStateName(status.state)));
  info.set_building(status.building);
  info.set_build_progress(status.progress);
  info.set_last_rejected(WithFlagNames(status.last_rejected));
  info.set_rejected_total(status.rejected_total);
  if (version == nullptr) return info;
  info.set_age_seconds(
      absl::ToDoubleSeconds(absl::Now() - version->info().created));
  EncodeVersion(version->info(), info.mutable_version());
  info.set_size(version->size());
  info.set_dim(static_cast<uint32_t>(version->dim()));
  info.set_metric(MetricName(version->metric()));
  info.set_index_type(version->index().type());
  info.set_scan(ScanPrecisionName(version->index().scan()));
  info.set_step(version->info().step);
  info.set_has_labels(version->store().has_labels());
  return info;
}

std::string WithFlagNames(absl::string_view message) {
  // The domain's terms for what these flags set (server_flags.cc).
  static const auto* const kFlags =
      new std::vector<std::pair<absl::string_view, std::string>>{
          {kIndexByteBudgetTerm,
           absl::StrCat(kIndexByteBudgetTerm, " (--max_index_bytes)")},
          {kServedMetricTerm, absl::StrCat(kServedMetricTerm, " (--metric)")},
          {kSchemaChangesTerm,
           absl::StrCat(kSchemaChangesTerm, " (--allow_schema_change)")},
          {kSnapshotDirTerm, absl::StrCat(kSnapshotDirTerm, " (--data_dir)")},
          {kIndexFactoryTerm, absl::StrCat(kIndexFactoryTerm, " (--index)")},
      };
  return absl::StrReplaceAll(message, *kFlags);
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      WithFlagNames(status.message()));
}

void EncodeError(const absl::Status& status, v1::MineResponse* response) {
  response->mutable_error()->set_code(static_cast<uint32_t>(status.code()));
  response->mutable_error()->set_message(WithFlagNames(status.message()));
}

}  // namespace hardneg

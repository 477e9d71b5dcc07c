// Fuzzes the Publish assembler (src/versions/publish.h PublishAssembler): the
// input is a Publish stream, a sequence of length-delimited
// hardneg.v1.PublishRequest messages (varint size, then the message). The
// first must carry the header; the rest are chunks, handed to the
// assembler as the Publish reactor hands them (server/publish_reactor.cc),
// then Finish runs against the tiny version "tiny" (fuzz_support.h), so
// that incremental publishes naming it can succeed. An accepted publish
// must hold exactly what the stream said: for an incremental one, the
// base's rows minus deletes, upserted rows replaced, new ids added.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "fuzz_support.h"
#include "hardneg/v1/miner.pb.h"
#include "server/convert.h"
#include "versions/publish.h"

namespace hardneg {
namespace {

constexpr int kMaxMessages = 16;
constexpr size_t kMaxBytes = 1 << 20;  // the assembler's memory budget

// Every chunk's upserts and deletes, to check the result against.
struct Sent {
  absl::flat_hash_map<int64_t, std::vector<float>> upserts;
  absl::flat_hash_set<int64_t> deletes;
};

void ExpectRejection(const absl::Status& status, const char* what) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
      return;
    default:
      fuzz::Fail(std::string(what) + " gave " + status.ToString());
  }
}

// One chunk, decoded as the reactor decodes it (DecodeChunkEmbeddings).
absl::Status AddChunk(const v1::PublishChunk& c, size_t index,
                      PublishAssembler& assembler, Sent& sent) {
  std::vector<float> from_bytes;
  absl::StatusOr<absl::Span<const float>> decoded =
      DecodeChunkEmbeddings(c, index, &from_bytes);
  if (!decoded.ok()) return decoded.status();
  const absl::Span<const float> embeddings = *decoded;
  const absl::Span<const int64_t> ids(c.ids().data(), c.ids_size());
  absl::Status status = assembler.AddChunk(
      ids, absl::MakeConstSpan(c.labels().data(), c.labels_size()), embeddings,
      absl::MakeConstSpan(c.delete_ids().data(), c.delete_ids_size()));
  if (!status.ok()) return status;
  const size_t dim = assembler.header().dim;
  for (size_t i = 0; i < ids.size(); ++i) {
    sent.upserts[ids[i]].assign(embeddings.begin() + i * dim,
                                embeddings.begin() + (i + 1) * dim);
  }
  sent.deletes.insert(c.delete_ids().begin(), c.delete_ids().end());
  return absl::OkStatus();
}

bool RowHolds(const CandidateStore& store, int64_t id, const float* vector) {
  const std::optional<size_t> row = store.RowOf(id);
  return row.has_value() && std::memcmp(store.vector(*row), vector,
                                        store.dim() * sizeof(float)) == 0;
}

void CheckResult(const CandidateStore& store, const PublishHeader& header,
                 const IndexVersion& base, const Sent& sent) {
  if (store.dim() != header.dim) fuzz::Fail("the result has another dim");
  for (const auto& [id, vector] : sent.upserts) {
    if (!RowHolds(store, id, vector.data())) {
      fuzz::Fail("an upserted row is missing or differs");
    }
  }
  if (!header.base_version.has_value()) {
    if (store.size() != sent.upserts.size()) fuzz::Fail("extra rows");
    return;
  }
  size_t expected = sent.upserts.size();
  for (size_t row = 0; row < base.size(); ++row) {
    const int64_t id = base.store().id(row);
    if (sent.upserts.contains(id)) continue;
    if (sent.deletes.contains(id)) {
      if (store.RowOf(id).has_value()) fuzz::Fail("a deleted id survived");
      continue;
    }
    ++expected;
    if (!RowHolds(store, id, base.store().vector(row))) {
      fuzz::Fail("a kept base row is missing or differs");
    }
  }
  if (store.size() != expected) fuzz::Fail("the result has extra rows");
}

int TestOneInput(const uint8_t* data, size_t size) {
  google::protobuf::io::CodedInputStream stream(data, static_cast<int>(size));
  std::vector<v1::PublishRequest> requests;
  uint32_t length = 0;
  while (requests.size() < kMaxMessages && stream.ReadVarint32(&length)) {
    const auto limit = stream.PushLimit(static_cast<int>(length));
    v1::PublishRequest request;
    if (!request.ParseFromCodedStream(&stream) ||
        !stream.ConsumedEntireMessage()) {
      return 0;
    }
    stream.PopLimit(limit);
    requests.push_back(std::move(request));
  }
  if (requests.empty() || !requests[0].has_header()) return 0;
  absl::StatusOr<PublishHeader> header =
      DecodePublishHeader(requests[0].header());
  if (!header.ok() || header->dim > 64) return 0;

  absl::StatusOr<PublishAssembler> assembler =
      PublishAssembler::Start(*header, kMaxBytes);
  if (!assembler.ok()) {
    ExpectRejection(assembler.status(), "Start");
    return 0;
  }
  Sent sent;
  for (size_t i = 1; i < requests.size(); ++i) {
    if (!requests[i].has_chunk()) return 0;
    const absl::Status status =
        AddChunk(requests[i].chunk(), i - 1, *assembler, sent);
    if (!status.ok()) {
      ExpectRejection(status, "AddChunk");
      return 0;
    }
  }
  const IndexVersion& base =
      fuzz::TinyVersion(header->metric.value_or(Metric::kInnerProduct), false);
  absl::StatusOr<CandidateStore> store = assembler->Finish(&base);
  if (!store.ok()) {
    ExpectRejection(store.status(), "Finish");
    return 0;
  }
  CheckResult(*store, *header, base, sent);
  return 0;
}

}  // namespace
}  // namespace hardneg

// Parsing fuzzed bytes logs every string field that is not UTF-8.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return hardneg::TestOneInput(data, size);
}

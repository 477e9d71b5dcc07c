// Fuzzes the proto->domain conversion and the miner behind it: the input is
// a serialized hardneg.v1.MineRequest, decoded as the service decodes it
// (server/convert.h DecodeMineRequest), mined against a tiny fixed version
// (request_id's low bits pick inner product or L2, Flat or IVF) and encoded
// back. Bad requests must be INVALID_ARGUMENT; answers must keep the mining
// contract (fuzz_support.h).
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fuzz_support.h"
#include "hardneg/v1/miner.pb.h"
#include "mining/miner.h"
#include "server/convert.h"

namespace hardneg {
namespace {

// Small requests only, so that every input runs in well under a
// millisecond; the limits themselves are the miner's to check.
bool SmallEnough(const v1::MineRequest& request) {
  if (request.queries_size() > 8) return false;
  for (const v1::Query& q : request.queries()) {
    if (q.embedding_size() > 64 || q.embedding_bytes().size() > 256 ||
        q.positive_ids_size() > 64 || q.positive_scores_size() > 64) {
      return false;
    }
  }
  return true;
}

void ExpectInvalidArgument(const absl::Status& status, const char* what) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    fuzz::Fail(std::string(what) + " gave " + status.ToString() +
               ", not INVALID_ARGUMENT");
  }
}

int TestOneInput(const uint8_t* data, size_t size) {
  v1::MineRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (!SmallEnough(request)) return 0;

  DecodedMineRequest decoded;
  const absl::Status status = DecodeMineRequest(request, &decoded);
  if (!status.ok()) {
    ExpectInvalidArgument(status, "DecodeMineRequest");
    return 0;
  }
  if (decoded.queries.size() != static_cast<size_t>(request.queries_size())) {
    fuzz::Fail("one decoded query per request query");
  }

  const Metric metric =
      (request.request_id() & 1) != 0 ? Metric::kL2 : Metric::kInnerProduct;
  const IndexVersion& version =
      fuzz::TinyVersion(metric, (request.request_id() & 2) != 0);
  const Miner miner(fuzz::FuzzLimits());
  absl::StatusOr<std::vector<MiningResult>> results =
      miner.Mine(version, decoded.queries, decoded.options);
  if (!results.ok()) {
    ExpectInvalidArgument(results.status(), "Mine");
    return 0;
  }
  fuzz::CheckMiningResults(version, decoded.queries, decoded.options, *results);

  v1::MineResponse response;
  EncodeResults(*results, version, decoded.return_embeddings, &response);
  if (response.results_size() != request.queries_size()) {
    fuzz::Fail("one encoded result per query");
  }
  for (const v1::QueryResult& result : response.results()) {
    for (const v1::Negative& negative : result.negatives()) {
      const size_t floats = decoded.return_embeddings ? version.dim() : 0;
      if (static_cast<size_t>(negative.embedding_size()) != floats) {
        fuzz::Fail("return_embeddings not honoured");
      }
    }
  }
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

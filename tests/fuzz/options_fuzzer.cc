// Fuzzes the miner's options (src/mining/miner.h MiningOptions): every field is
// drawn from the input, including NaN, infinities and extremes, and so are
// one to three finite queries with their positives, label and query id.
// Checked: Mine fails exactly when ValidateOptions does (the queries are
// valid), an answer keeps the mining contract (fuzz_support.h), and the
// same request gives the same answer twice.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fuzz_support.h"
#include "mining/miner.h"

namespace hardneg {
namespace {

// A float that is often special: NaN, an infinity, zero, or a value near
// the tiny version's scores.
float SomeFloat(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0:
      return std::numeric_limits<float>::quiet_NaN();
    case 1:
      return in.ConsumeBool() ? std::numeric_limits<float>::infinity()
                              : -std::numeric_limits<float>::infinity();
    case 2:
      return 0;
    case 3:
      return in.ConsumeFloatingPointInRange<float>(-8, 8);
    default:
      return in.ConsumeFloatingPoint<float>();
  }
}

std::optional<float> SomeBound(FuzzedDataProvider& in) {
  if (!in.ConsumeBool()) return std::nullopt;
  return SomeFloat(in);
}

MiningOptions SomeOptions(FuzzedDataProvider& in) {
  MiningOptions o;
  // Mostly near the limits (FuzzLimits), sometimes anywhere.
  o.num_negatives = in.ConsumeBool()
                        ? in.ConsumeIntegralInRange<uint32_t>(0, 80)
                        : in.ConsumeIntegral<uint32_t>();
  o.range_min = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint32_t>(0, 200)
                                 : in.ConsumeIntegral<uint32_t>();
  o.range_max = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint32_t>(0, 600)
                                 : in.ConsumeIntegral<uint32_t>();
  o.max_score = SomeBound(in);
  o.min_score = SomeBound(in);
  o.absolute_margin = SomeBound(in);
  o.relative_margin = SomeBound(in);
  o.sampling = in.PickValueInArray(
      {Sampling::kTop, Sampling::kUniform, Sampling::kSoftmax});
  o.temperature = in.ConsumeBool()
                      ? SomeFloat(in)
                      : in.ConsumeFloatingPointInRange<float>(0, 4);
  o.seed = in.ConsumeIntegral<uint64_t>();
  o.nprobe = in.ConsumeIntegralInRange<uint32_t>(0, 10);
  return o;
}

// A query's data; MiningQuery holds views into it.
struct QueryData {
  std::vector<float> embedding;
  std::vector<int64_t> positive_ids;
  std::vector<float> positive_scores;
  std::optional<int64_t> label;
  std::optional<int64_t> query_id;
};

// The ids of the tiny version (fuzz_support.h), or near them.
int64_t SomeId(FuzzedDataProvider& in) {
  return -300 + 7 * in.ConsumeIntegralInRange<int64_t>(-2, fuzz::kRows + 2);
}

QueryData SomeQuery(FuzzedDataProvider& in) {
  QueryData q;
  for (size_t i = 0; i < fuzz::kDim; ++i) {
    q.embedding.push_back(in.ConsumeFloatingPointInRange<float>(-4, 4));
  }
  const size_t positives = in.ConsumeIntegralInRange<size_t>(0, 4);
  for (size_t i = 0; i < positives; ++i) q.positive_ids.push_back(SomeId(in));
  const size_t scores = in.ConsumeIntegralInRange<size_t>(0, 2);
  for (size_t i = 0; i < scores; ++i) {
    q.positive_scores.push_back(in.ConsumeFloatingPointInRange<float>(-8, 8));
  }
  if (in.ConsumeBool()) q.label = in.ConsumeIntegralInRange<int64_t>(-1, 5);
  if (in.ConsumeBool()) q.query_id = SomeId(in);
  return q;
}

int TestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const MiningOptions options = SomeOptions(in);
  const Metric metric = in.ConsumeBool() ? Metric::kL2 : Metric::kInnerProduct;
  const bool ivf = in.ConsumeBool();
  std::vector<QueryData> query_data(in.ConsumeIntegralInRange<size_t>(1, 3));
  for (QueryData& q : query_data) q = SomeQuery(in);
  std::vector<MiningQuery> queries;
  queries.reserve(query_data.size());
  for (const QueryData& q : query_data) {
    queries.push_back(
        {q.embedding, q.positive_ids, q.positive_scores, q.label, q.query_id});
  }

  const Miner miner(fuzz::FuzzLimits());
  const absl::Status valid = miner.ValidateOptions(options);
  if (!valid.ok() && valid.code() != absl::StatusCode::kInvalidArgument) {
    fuzz::Fail("ValidateOptions gave " + valid.ToString());
  }
  const IndexVersion& version = fuzz::TinyVersion(metric, ivf);
  absl::StatusOr<std::vector<MiningResult>> results =
      miner.Mine(version, queries, options);
  if (results.ok() != valid.ok()) {
    fuzz::Fail("Mine and ValidateOptions disagree: " +
               results.status().ToString() + " vs " + valid.ToString());
  }
  if (!results.ok()) {
    if (results.status() != valid) {
      fuzz::Fail("Mine's error is not ValidateOptions': " +
                 results.status().ToString());
    }
    return 0;
  }
  fuzz::CheckMiningResults(version, queries, options, *results);
  absl::StatusOr<std::vector<MiningResult>> again =
      miner.Mine(version, queries, options);
  if (!again.ok() || !fuzz::SameResults(*results, *again)) {
    fuzz::Fail("the same request gave another answer");
  }
  return 0;
}

}  // namespace
}  // namespace hardneg

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return hardneg::TestOneInput(data, size);
}

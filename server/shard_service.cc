#include "server/shard_service.h"

#include <cmath>
#include <cstddef>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "mining/miner.h"
#include "server/auth.h"
#include "server/convert.h"

namespace hardneg {

grpc::ServerUnaryReactor* ShardService::WeakestPositives(
    grpc::CallbackServerContext* context, const v1::MineRequest* request,
    v1::MineResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status = miner_service_->Authorize(context, Role::kMine);
  if (status.ok()) status = Answer(*request, response);
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

absl::Status ShardService::Answer(const v1::MineRequest& request,
                                  v1::MineResponse* response) const {
  response->set_request_id(request.request_id());
  HARDNEG_ASSIGN_OR_RETURN(
      std::shared_ptr<const IndexVersion> version,
      miner_service_->VersionFor(request.options(), manager_->Current()));
  EncodeVersion(version->info(), response->mutable_index());
  absl::Status fresh =
      version->CheckSequenceAtLeast(request.options().min_index_sequence());
  if (!fresh.ok()) return Annotate(fresh, "options.min_index_sequence: ");
  DecodedMineRequest decoded;
  HARDNEG_RETURN_IF_ERROR(DecodeMineRequest(request, &decoded));
  const MinerLimits& limits = miner_service_->miner().limits();
  if (decoded.queries.size() > limits.max_queries) {
    return absl::InvalidArgumentError(
        absl::StrCat("queries: ", decoded.queries.size(),
                     " queries, over the limit of ", limits.max_queries));
  }
  for (size_t i = 0; i < decoded.queries.size(); ++i) {
    const MiningQuery& query = decoded.queries[i];
    if (query.embedding.size() != version->dim()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "queries[", i, "].embedding has dimension ", query.embedding.size(),
          ", the index has ", version->dim()));
    }
    for (const float x : query.embedding) {
      if (!std::isfinite(x)) {
        return absl::InvalidArgumentError(
            absl::StrCat("queries[", i, "].embedding has NaN or Inf"));
      }
    }
    if (query.positive_ids.size() > limits.max_positives) {
      return absl::InvalidArgumentError(absl::StrCat(
          "queries[", i, "].positive_ids: ", query.positive_ids.size(),
          " ids, over the limit of ", limits.max_positives));
    }
    v1::QueryResult* result = response->add_results();
    const std::optional<float> weakest = WeakestStoredPositive(*version, query);
    if (weakest.has_value()) result->set_positive_score(*weakest);
  }
  return absl::OkStatus();
}

}  // namespace hardneg

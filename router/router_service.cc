#include "router/router_service.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "router/publish_fanout.h"
#include "server/convert.h"

namespace hardneg {

v1::IndexInfo RouterIndexInfo(const ShardSetView& view) {
  v1::IndexInfo info;
  info.set_build_state(view.version.has_value() ? "serving" : "empty");
  double progress = 1;
  for (size_t i = 0; i < view.shards.size(); ++i) {
    const ShardState& shard = view.shards[i];
    v1::ShardInfo* out = info.add_shards();
    out->set_target(shard.target);
    out->set_error(shard.error);
    if (!shard.info.has_value()) continue;
    const v1::IndexInfo& own = *shard.info;
    *out->mutable_info() = own;
    info.set_size(info.size() + own.size());
    info.set_rejected_total(info.rejected_total() + own.rejected_total());
    info.set_age_seconds(std::max(info.age_seconds(), own.age_seconds()));
    if (!own.building().empty()) {
      info.set_building(own.building());
      progress = std::min(progress, own.build_progress());
    }
    if (!own.last_rejected().empty()) {
      info.set_last_rejected(
          absl::StrCat("shard ", i, ": ", own.last_rejected()));
    }
  }
  if (!info.building().empty()) info.set_build_progress(progress);
  if (!view.version.has_value()) return info;
  const RouterVersion& version = *view.version;
  info.mutable_version()->set_name(version.name);
  info.mutable_version()->set_sequence(version.sequence);
  info.set_step(version.step);
  info.set_dim(version.dim);
  info.set_metric(version.metric);
  info.set_index_type(version.index_type);
  info.set_scan(version.scan);
  info.set_has_labels(version.has_labels);
  info.set_num_shards(static_cast<uint32_t>(view.shards.size()));
  return info;
}

grpc::Status RouterService::Authorize(const grpc::ServerContext& context,
                                      Role role) const {
  if (options_.auth == nullptr) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  const absl::string_view value =
      it == metadata.end()
          ? absl::string_view()
          : absl::string_view(it->second.data(), it->second.size());
  return ToGrpcStatus(options_.auth->Check(value, role));
}

void RouterService::Record(const char* rpc, const grpc::Status& status,
                           absl::Time start) {
  if (metrics_ != nullptr) {
    metrics_->RecordRequest(rpc, status.error_code(), absl::Now() - start);
  }
}

grpc::Status RouterService::MineOnce(grpc::ServerContext* context,
                                     const v1::MineRequest* request,
                                     v1::MineResponse* response) {
  const absl::Time start = absl::Now();
  grpc::Status status = Authorize(*context, Role::kMine);
  if (status.ok()) {
    status =
        ToGrpcStatus(miner_->Mine(*request, context->deadline(), response));
  }
  Record("MineOnce", status, start);
  return status;
}

grpc::Status RouterService::Mine(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::MineResponse, v1::MineRequest>* stream) {
  if (grpc::Status allowed = Authorize(*context, Role::kMine); !allowed.ok()) {
    Record("Mine", allowed, absl::Now());
    return allowed;
  }
  v1::MineRequest request;
  while (stream->Read(&request)) {
    const absl::Time start = absl::Now();
    v1::MineResponse response;
    const absl::Status status =
        miner_->Mine(request, context->deadline(), &response);
    if (!status.ok()) {
      response.clear_results();
      EncodeError(status, &response);
    }
    Record("Mine", ToGrpcStatus(status), start);
    if (!stream->Write(response)) break;
  }
  return grpc::Status::OK;
}

grpc::Status RouterService::GetIndexInfo(grpc::ServerContext* context,
                                         const v1::GetIndexInfoRequest*,
                                         v1::IndexInfo* response) {
  const absl::Time start = absl::Now();
  if (grpc::Status allowed = Authorize(*context, Role::kMine); !allowed.ok()) {
    Record("GetIndexInfo", allowed, start);
    return allowed;
  }
  *response = RouterIndexInfo(shards_->View());
  Record("GetIndexInfo", grpc::Status::OK, start);
  return grpc::Status::OK;
}

grpc::Status RouterService::Publish(
    grpc::ServerContext* context,
    grpc::ServerReader<v1::PublishRequest>* reader,
    v1::PublishResponse* response) {
  const absl::Time start = absl::Now();
  if (grpc::Status allowed = Authorize(*context, Role::kPublish);
      !allowed.ok()) {
    Record("Publish", allowed, start);
    return allowed;
  }
  absl::StatusOr<ForwardedPublish> forwarded =
      ForwardPublish(*shards_, *context, *reader, metrics_);
  if (!forwarded.ok()) {
    grpc::Status status = ToGrpcStatus(forwarded.status());
    Record("Publish", status, start);
    return status;
  }
  const v1::PublishHeader& header = forwarded->header;
  const std::string& name = header.name();
  uint64_t sequence = 0;
  for (const v1::PublishResponse& shard : forwarded->responses) {
    sequence = std::max(sequence, shard.version().sequence());
  }
  response->mutable_version()->set_name(name);
  response->mutable_version()->set_sequence(sequence);
  const bool wait = !header.has_wait() || header.wait();
  // Every shard serves it: the router does once its view says so, at once
  // after a poll, so that min_index_sequence works as soon as this returns.
  const absl::Time give_up = absl::Now() + options_.publish_wait;
  grpc::Status status = grpc::Status::OK;
  while (wait) {
    const ShardSetView view = shards_->Refresh();
    if (view.all_serving && view.version->name == name) {
      response->mutable_version()->set_sequence(view.version->sequence);
      break;
    }
    if (absl::Now() > give_up || context->IsCancelled()) {
      status =
          grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                       absl::StrCat("every shard took the publish of '", name,
                                    "' but they do not all serve it yet; see "
                                    "GetIndexInfo's shards"));
      break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  Record("Publish", status, start);
  return status;
}

}  // namespace hardneg

#include "client/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "hardneg/v1/miner.grpc.pb.h"
#include "proto/mining_options_convert.h"

namespace hardneg::client {
namespace {

// Status payload marking an in-band MineResponse.error; the value is the
// failed request's id in decimal.
constexpr char kRequestIdPayload[] = "type.hardneg.dev/hardneg.v1.request_id";

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

std::chrono::system_clock::time_point DeadlineAfter(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

void ToProto(const Query& query, v1::Query* out) {
  out->mutable_embedding()->Add(query.embedding.begin(), query.embedding.end());
  out->mutable_positive_ids()->Add(query.positive_ids.begin(),
                                   query.positive_ids.end());
  out->mutable_positive_scores()->Add(query.positive_scores.begin(),
                                      query.positive_scores.end());
  if (query.label) out->set_label(*query.label);
  if (query.query_id) out->set_query_id(*query.query_id);
}

void ToProto(uint64_t request_id, const std::vector<Query>& queries,
             const MiningOptions& options, v1::MineRequest* out) {
  out->set_request_id(request_id);
  out->mutable_queries()->Reserve(static_cast<int>(queries.size()));
  for (const Query& query : queries) ToProto(query, out->add_queries());
  MiningOptionsToProto(options, out->mutable_options());
}

ServedVersion FromProto(const v1::IndexVersion& version) {
  ServedVersion out;
  out.name = version.name();
  out.sequence = version.sequence();
  return out;
}

// The reply, or the in-band error it carries as a status tagged with the
// request id.
absl::StatusOr<MineReply> FromProto(const v1::MineResponse& response) {
  if (response.has_error() &&
      (response.error().code() != 0 || !response.error().message().empty())) {
    const uint32_t code = response.error().code();
    absl::Status status(code >= 1 && code <= 16
                            ? static_cast<absl::StatusCode>(code)
                            : absl::StatusCode::kUnknown,
                        response.error().message());
    status.SetPayload(kRequestIdPayload,
                      absl::Cord(absl::StrCat(response.request_id())));
    return status;
  }
  MineReply reply;
  reply.request_id = response.request_id();
  reply.index = FromProto(response.index());
  reply.missing_shards.assign(response.missing_shards().begin(),
                              response.missing_shards().end());
  reply.results.reserve(response.results_size());
  for (const v1::QueryResult& result : response.results()) {
    QueryResult& out = reply.results.emplace_back();
    out.shortfall = result.shortfall();
    if (result.has_positive_score()) {
      out.positive_score = result.positive_score();
    }
    out.negatives.reserve(result.negatives_size());
    for (const v1::Negative& negative : result.negatives()) {
      Negative& n = out.negatives.emplace_back();
      n.id = negative.id();
      n.score = negative.score();
      n.label = negative.label();
      n.rank = negative.rank();
      n.embedding.assign(negative.embedding().begin(),
                         negative.embedding().end());
    }
  }
  return reply;
}

}  // namespace

std::optional<uint64_t> FailedRequestId(const absl::Status& status) {
  auto payload = status.GetPayload(kRequestIdPayload);  // absl::optional
  uint64_t id = 0;
  if (!payload || !absl::SimpleAtoi(payload->Flatten(), &id)) {
    return std::nullopt;
  }
  return id;
}

// ---------------------------------------------------------------------------
// Client

struct Client::Rpc {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Miner::Stub> stub;
};

Client::Client(std::unique_ptr<Rpc> rpc, const ClientOptions& options)
    : rpc_(std::move(rpc)), options_(options) {}

Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    const std::string& target, const ClientOptions& options) {
  if (target.empty()) {
    return absl::InvalidArgumentError(
        "server address is empty; expected host:port");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.load_balancing_policy.empty()) {
    args.SetLoadBalancingPolicyName(options.load_balancing_policy);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      options.credentials != nullptr ? options.credentials
                                     : grpc::InsecureChannelCredentials();
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, credentials, args);
  if (options.connect_timeout &&
      !channel->WaitForConnected(DeadlineAfter(*options.connect_timeout))) {
    return absl::UnavailableError(
        absl::StrCat("could not connect to ", target, " within ",
                     absl::FormatDuration(*options.connect_timeout)));
  }
  return FromChannel(std::move(channel), options);
}

std::unique_ptr<Client> Client::FromChannel(
    std::shared_ptr<grpc::Channel> channel, const ClientOptions& options) {
  auto rpc = std::make_unique<Rpc>();
  rpc->stub = v1::Miner::NewStub(channel);
  rpc->channel = std::move(channel);
  return std::unique_ptr<Client>(new Client(std::move(rpc), options));
}

void Client::Prepare(grpc::ClientContext& context,
                     const std::optional<absl::Duration>& timeout) const {
  context.set_wait_for_ready(options_.wait_for_ready);
  if (timeout) context.set_deadline(DeadlineAfter(*timeout));
  if (!options_.bearer_token.empty()) {
    context.AddMetadata("authorization",
                        absl::StrCat("Bearer ", options_.bearer_token));
  }
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
TlsCredentialsFromFiles(const std::string& ca, const std::string& cert,
                        const std::string& key) {
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate and its key go together (mutual TLS)");
  }
  auto read = [](const std::string& path) -> absl::StatusOr<std::string> {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  };
  grpc::SslCredentialsOptions options;
  if (!ca.empty()) {
    absl::StatusOr<std::string> pem = read(ca);
    if (!pem.ok()) return pem.status();
    options.pem_root_certs = *std::move(pem);
  }
  if (!cert.empty()) {
    absl::StatusOr<std::string> cert_pem = read(cert);
    if (!cert_pem.ok()) return cert_pem.status();
    absl::StatusOr<std::string> key_pem = read(key);
    if (!key_pem.ok()) return key_pem.status();
    options.pem_cert_chain = *std::move(cert_pem);
    options.pem_private_key = *std::move(key_pem);
  }
  return grpc::SslCredentials(options);
}

absl::StatusOr<MineReply> Client::MineOnce(const std::vector<Query>& queries,
                                           const MiningOptions& options,
                                           uint64_t request_id) {
  v1::MineRequest request;
  ToProto(request_id, queries, options, &request);
  grpc::ClientContext context;
  Prepare(context, options_.rpc_timeout);
  v1::MineResponse response;
  grpc::Status status = rpc_->stub->MineOnce(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return FromProto(response);
}

absl::StatusOr<IndexInfo> Client::GetIndexInfo() {
  grpc::ClientContext context;
  Prepare(context, options_.rpc_timeout);
  v1::IndexInfo response;
  grpc::Status status =
      rpc_->stub->GetIndexInfo(&context, v1::GetIndexInfoRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  IndexInfo info;
  info.version = FromProto(response.version());
  info.size = response.size();
  info.dim = response.dim();
  info.metric = response.metric();
  info.index_type = response.index_type();
  info.scan = response.scan();
  info.build_state = response.build_state();
  info.step = response.step();
  info.has_labels = response.has_labels();
  info.age_seconds = response.age_seconds();
  info.building = response.building();
  info.build_progress = response.build_progress();
  info.last_rejected = response.last_rejected();
  info.rejected_total = response.rejected_total();
  return info;
}

namespace {

// The client-side checks of a PublishSpec, before any byte is sent.
absl::Status CheckPublishSpec(const PublishSpec& spec) {
  if (spec.name.empty()) {
    return absl::InvalidArgumentError("PublishSpec.name is empty");
  }
  if (spec.dim == 0) return absl::InvalidArgumentError("PublishSpec.dim is 0");
  if (spec.embeddings.size() != spec.ids.size() * spec.dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PublishSpec.embeddings has ", spec.embeddings.size(),
        " floats, expected ", spec.ids.size(), " ids x dim ", spec.dim));
  }
  if (!spec.labels.empty() && spec.labels.size() != spec.ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("PublishSpec.labels has ", spec.labels.size(),
                     " values for ", spec.ids.size(), " ids"));
  }
  if (!spec.delete_ids.empty() && !spec.base_version) {
    return absl::InvalidArgumentError(
        "PublishSpec.delete_ids needs base_version (an incremental publish)");
  }
  return absl::OkStatus();
}

void SetPublishHeader(const PublishSpec& spec, v1::PublishHeader* header) {
  header->set_name(spec.name);
  header->set_step(spec.step);
  header->set_dim(spec.dim);
  header->set_metric(spec.metric);
  if (spec.base_version) header->set_base_version(*spec.base_version);
  header->set_wait(spec.wait);
  header->set_total_ids(spec.ids.size());
  header->set_total_delete_ids(spec.delete_ids.size());
}

// Rows [begin, begin + rows) of the upserts into `chunk`.
void FillUpsertChunk(const PublishSpec& spec, size_t begin, size_t rows,
                     v1::PublishChunk* chunk) {
  chunk->mutable_ids()->Add(spec.ids.begin() + begin,
                            spec.ids.begin() + begin + rows);
  if (!spec.labels.empty()) {
    chunk->mutable_labels()->Add(spec.labels.begin() + begin,
                                 spec.labels.begin() + begin + rows);
  }
  const float* first = spec.embeddings.data() + begin * spec.dim;
  const size_t floats = rows * spec.dim;
  if (spec.send_bytes) {
    // float32 in host order: little-endian on the platforms we build for.
    chunk->set_embeddings_bytes(reinterpret_cast<const char*>(first),
                                floats * sizeof(float));
  } else {
    chunk->mutable_embeddings()->Add(first, first + floats);
  }
}

// How often a waiting Publish asks how the server's build is going.
constexpr absl::Duration kBuildPollInterval = absl::Milliseconds(250);

// Finishes the Publish call of `writer` (every request written); until the
// server answers, reports `sent` with the build's progress, as `poll`
// gives it (nullopt: unknown), to `progress` on this thread every
// kBuildPollInterval.
grpc::Status FinishFollowingBuild(
    grpc::ClientWriter<v1::PublishRequest>& writer, PublishProgress sent,
    const std::function<void(const PublishProgress&)>& progress,
    const std::function<std::optional<double>()>& poll) {
  std::future<grpc::Status> finished =
      std::async(std::launch::async, [&writer] { return writer.Finish(); });
  const absl::Time start = absl::Now() - sent.elapsed;
  sent.building = true;
  const auto interval = absl::ToChronoMilliseconds(kBuildPollInterval);
  while (finished.wait_for(interval) != std::future_status::ready) {
    if (std::optional<double> built = poll()) {
      sent.build_progress = std::max(sent.build_progress, *built);
    }
    sent.elapsed = absl::Now() - start;
    progress(sent);
  }
  return finished.get();
}

}  // namespace

absl::StatusOr<ServedVersion> Client::Publish(
    const PublishSpec& spec,
    const std::function<void(const PublishProgress&)>& progress) {
  HARDNEG_RETURN_IF_ERROR(CheckPublishSpec(spec));
  // A row costs its floats plus at most 10 bytes per varint id and label;
  // keep each message to half the limit.
  const size_t message_budget =
      static_cast<size_t>(std::max(options_.max_message_bytes, 2)) / 2;
  const size_t row_bytes = size_t{spec.dim} * sizeof(float) + 20;
  const size_t chunk_rows = std::max<size_t>(
      1, std::min(spec.chunk_rows, message_budget / row_bytes));
  const size_t delete_chunk = std::max<size_t>(1, message_budget / 10);

  grpc::ClientContext context;
  Prepare(context, options_.publish_timeout);
  v1::PublishResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::PublishRequest>> writer =
      rpc_->stub->Publish(&context, &response);

  const absl::Time start = absl::Now();
  PublishProgress sent;
  sent.total_rows = spec.ids.size() + spec.delete_ids.size();
  v1::PublishRequest request;
  SetPublishHeader(spec, request.mutable_header());
  // Write fails only when the call is over; Finish then says why.
  bool writing = writer->Write(request);
  sent.bytes_sent += request.ByteSizeLong();

  // One request, reused: its fields keep their capacity between chunks.
  v1::PublishChunk* chunk = request.mutable_chunk();
  auto send = [&](size_t rows) {
    writing = writer->Write(request);
    sent.bytes_sent += request.ByteSizeLong();
    sent.rows_sent += rows;
    sent.elapsed = absl::Now() - start;
    if (progress) progress(sent);
    chunk->Clear();
  };
  for (size_t begin = 0; writing && begin < spec.ids.size();
       begin += chunk_rows) {
    const size_t rows = std::min(chunk_rows, spec.ids.size() - begin);
    FillUpsertChunk(spec, begin, rows, chunk);
    send(rows);
  }
  for (size_t begin = 0; writing && begin < spec.delete_ids.size();
       begin += delete_chunk) {
    const size_t rows = std::min(delete_chunk, spec.delete_ids.size() - begin);
    chunk->mutable_delete_ids()->Add(spec.delete_ids.begin() + begin,
                                     spec.delete_ids.begin() + begin + rows);
    send(rows);
  }
  if (writing) writer->WritesDone();
  grpc::Status status;
  if (spec.wait && progress) {
    BuildPoll poll;
    status = FinishFollowingBuild(*writer, sent, progress,
                                  [&]() -> std::optional<double> {
                                    return BuildProgressOf(spec.name, &poll);
                                  });
  } else {
    status = writer->Finish();
  }
  if (!status.ok()) return FromGrpcStatus(status);
  return FromProto(response.version());
}

std::optional<double> Client::BuildProgressOf(const std::string& name,
                                              BuildPoll* poll) {
  if (poll->refused) return std::nullopt;
  grpc::ClientContext context;
  // A poll only informs: it never waits longer than one poll's interval.
  Prepare(context, kBuildPollInterval);
  context.set_wait_for_ready(false);
  v1::IndexInfo response;
  const grpc::Status status =
      rpc_->stub->GetIndexInfo(&context, v1::GetIndexInfoRequest(), &response);
  if (!status.ok()) {
    // A token with only the publish role may not ask; nor may an old
    // server: neither changes while the call lasts.
    const grpc::StatusCode code = status.error_code();
    poll->refused = code == grpc::StatusCode::PERMISSION_DENIED ||
                    code == grpc::StatusCode::UNAUTHENTICATED ||
                    code == grpc::StatusCode::UNIMPLEMENTED;
    return std::nullopt;
  }
  if (response.building() == name) {
    poll->seen_building = true;
    return response.build_progress();
  }
  if (poll->seen_building && response.building().empty() &&
      response.version().name() == name) {
    return 1.0;  // built; the answer to the Publish is on its way
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// MineStream

struct MineStream::Call {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<v1::MineRequest, v1::MineResponse>>
      stream;
};

std::unique_ptr<MineStream> Client::OpenStream() {
  auto call = std::make_unique<MineStream::Call>();
  Prepare(call->context, options_.stream_timeout);
  call->stream = rpc_->stub->Mine(&call->context);
  return std::unique_ptr<MineStream>(new MineStream(std::move(call)));
}

MineStream::MineStream(std::unique_ptr<Call> call) : call_(std::move(call)) {}

MineStream::~MineStream() {
  if (final_status_) return;
  // gRPC wants Finish after the last read; cancel so that both are quick.
  Cancel();
  CloseAndFinish().IgnoreError();
}

absl::Status MineStream::Send(uint64_t request_id,
                              const std::vector<Query>& queries,
                              const MiningOptions& options) {
  if (send_closed_) {
    return absl::FailedPreconditionError(
        "Send after CloseSend on a Mine stream");
  }
  v1::MineRequest request;
  ToProto(request_id, queries, options, &request);
  if (!call_->stream->Write(request)) {
    return absl::AbortedError(
        "the Mine stream is closed; CloseAndFinish() returns why");
  }
  return absl::OkStatus();
}

absl::Status MineStream::CloseSend() {
  if (send_closed_) return absl::OkStatus();
  send_closed_ = true;
  if (!call_->stream->WritesDone()) {
    return absl::AbortedError(
        "the Mine stream is closed; CloseAndFinish() returns why");
  }
  return absl::OkStatus();
}

absl::StatusOr<MineReply> MineStream::Receive() {
  if (!receive_ended_) {
    v1::MineResponse response;
    if (call_->stream->Read(&response)) return FromProto(response);
    receive_ended_ = true;
  }
  return absl::OutOfRangeError(
      "the Mine stream has ended; CloseAndFinish() returns its final status");
}

void MineStream::Cancel() { call_->context.TryCancel(); }

absl::Status MineStream::CloseAndFinish() {
  if (final_status_) return *final_status_;
  // A failed WritesDone means the stream is broken; Finish says why.
  CloseSend().IgnoreError();
  v1::MineResponse unread;
  while (!receive_ended_ && call_->stream->Read(&unread)) {
  }
  receive_ended_ = true;
  final_status_ = FromGrpcStatus(call_->stream->Finish());
  return *final_status_;
}

}  // namespace hardneg::client

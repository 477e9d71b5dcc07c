#include "server/publish_reactor.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/log.h"
#include "corpus/metric.h"
#include "grpcpp/server_context.h"
#include "server/convert.h"
#include "server/wire.h"
#include "versions/publish.h"

namespace hardneg {
namespace {

// One Publish call. Reads run one at a time, and each chunk goes to the
// assembler in OnReadDone (a copy and a finiteness check, proportional to
// the message gRPC just parsed). At the end of the stream Build runs on a
// PublishBuilds thread; it owns the reactor's state until it calls Finish,
// and touches nothing of the reactor after (OnDone may have deleted it).
class PublishReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  PublishReactor(grpc::CallbackServerContext* context,
                 grpc::ByteBuffer* response, IndexManager* manager,
                 PublishBuilds* builds)
      : context_(context),
        response_(response),
        manager_(manager),
        builds_(builds),
        start_(absl::Now()) {
    StartRead(&bytes_in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      EndOfStream();
      return;
    }
    ++messages_;
    absl::Status status = ParseMessage(
        bytes_in_, absl::StrCat("PublishRequest ", messages_, " of the stream"),
        &request_);
    if (!status.ok()) {
      status = absl::InvalidArgumentError(
          absl::StrCat(status.message(), "; nothing was installed"));
    } else {
      status = assembler_.has_value() ? AddChunk() : StartPublish();
    }
    if (!status.ok()) {
      Reject(status);
      return;
    }
    StartRead(&bytes_in_);
  }

  void OnDone() override { delete this; }

 private:
  // The header: validates it and starts the assembler under the budget the
  // manager has left.
  absl::Status StartPublish() {
    if (!request_.has_header()) {
      return absl::InvalidArgumentError(
          "the first PublishRequest must carry a header (name, step, dim, "
          "metric), then chunks");
    }
    const v1::PublishHeader& h = request_.header();
    absl::StatusOr<PublishHeader> header = DecodePublishHeader(h);
    if (!header.ok()) return header.status();
    wait_ = !h.has_wait() || h.wait();

    const size_t remaining = manager_->RemainingBytes();
    if (remaining == 0) {
      return absl::ResourceExhaustedError(
          "the served version leaves no room under --max_index_bytes for a "
          "new one; raise --max_index_bytes");
    }
    absl::StatusOr<PublishAssembler> assembler = PublishAssembler::Start(
        *std::move(header), remaining == SIZE_MAX ? 0 : remaining,
        manager_->shard());
    if (!assembler.ok()) return assembler.status();
    assembler_.emplace(*std::move(assembler));
    return absl::OkStatus();
  }

  absl::Status AddChunk() {
    const size_t chunk = chunks_++;
    if (request_.has_header()) {
      return absl::InvalidArgumentError(
          absl::StrCat("PublishRequest ", chunk + 1,
                       " carries a second header; only the first request "
                       "carries one, the others carry chunks"));
    }
    if (!request_.has_chunk()) {
      return absl::InvalidArgumentError(
          absl::StrCat("PublishRequest ", chunk + 1,
                       " carries neither a header nor a chunk"));
    }
    const v1::PublishChunk& c = request_.chunk();
    absl::StatusOr<absl::Span<const float>> embeddings =
        DecodeChunkEmbeddings(c, chunk, &buffer_);
    if (!embeddings.ok()) return embeddings.status();
    bytes_ += static_cast<uint64_t>(c.ByteSizeLong());
    return assembler_->AddChunk(
        absl::MakeConstSpan(c.ids().data(), c.ids_size()),
        absl::MakeConstSpan(c.labels().data(), c.labels_size()), *embeddings,
        absl::MakeConstSpan(c.delete_ids().data(), c.delete_ids_size()));
  }

  // The client half-closed, or the call broke.
  void EndOfStream() {
    if (context_->IsCancelled()) {
      Reject(absl::CancelledError(
          "the Publish call was cancelled before its end; nothing was "
          "installed"));
      return;
    }
    if (!assembler_.has_value()) {
      Reject(absl::InvalidArgumentError(
          "the Publish stream ended without a header; send a header, then "
          "chunks"));
      return;
    }
    if (absl::Status complete = assembler_->CheckComplete(); !complete.ok()) {
      Reject(complete);
      return;
    }
    // The reads are over: release their buffers before the build.
    request_ = v1::PublishRequest();
    buffer_ = std::vector<float>();
    Log(LogLevel::kInfo, "publish_received",
        {{"name", assembler_->header().name},
         {"rows", absl::StrCat(assembler_->rows())},
         {"delete_ids", absl::StrCat(assembler_->delete_rows())},
         {"chunks", absl::StrCat(chunks_)},
         {"mb_per_s",
          absl::StrFormat(
              "%.1f",
              static_cast<double>(bytes_) / 1e6 /
                  std::max(1e-9, absl::ToDoubleSeconds(absl::Now() - start_)))},
         {"wait", wait_ ? "true" : "false"}});
    builds_->Run([this] { Build(); });
  }

  // On a PublishBuilds thread: assembles, answers (now when !wait_), and
  // installs.
  void Build() {
    const std::shared_ptr<const IndexVersion> served = manager_->Current();
    absl::StatusOr<CandidateStore> store = assembler_->Finish(served.get());
    if (!store.ok()) {
      Reject(store.status());
      return;
    }
    if (context_->IsCancelled()) {
      Reject(absl::CancelledError(
          "the Publish call was cancelled before the build; nothing was "
          "installed"));
      return;
    }
    // Everything the build needs past an early answer, out of the reactor.
    const PublishHeader& header = assembler_->header();
    const std::string name = header.name;
    const uint64_t step = header.step;
    const std::optional<Metric> metric = header.metric;
    const std::optional<uint64_t> expected_sequence =
        assembler_->RequiredSequence(served.get());
    IndexManager* const manager = manager_;
    const bool wait = wait_;
    if (!wait) {
      v1::PublishResponse early;
      early.mutable_version()->set_name(name);
      early.mutable_version()->set_sequence(0);
      FinishWith(early);  // `this` may be deleted from here on
    }
    const absl::Time build_start = absl::Now();
    // A publisher that waits and went away meanwhile (cancelled, past its
    // deadline) gets nothing installed: it could not learn the outcome.
    // Without wait it already has its answer, and the version installs.
    std::function<absl::Status()> still_wanted;
    if (wait) {
      still_wanted = [context = context_] {
        return context->IsCancelled()
                   ? absl::CancelledError(
                         "the Publish call was cancelled (or passed its "
                         "deadline) during the build; nothing was installed")
                   : absl::OkStatus();
      };
    }
    absl::StatusOr<VersionInfo> installed = manager->Install(
        name, step, metric, *std::move(store), expected_sequence, still_wanted);
    if (installed.ok()) {
      Log(LogLevel::kInfo, "publish_installed",
          {{"name", name},
           {"sequence", absl::StrCat(installed->sequence)},
           {"build_seconds",
            absl::StrFormat(
                "%.3f", absl::ToDoubleSeconds(absl::Now() - build_start))}});
    } else {
      Log(LogLevel::kError, "publish_install_failed",
          {{"name", name},
           {"code", absl::StatusCodeToString(installed.status().code())},
           {"reason", std::string(installed.status().message())}});
    }
    if (!wait) return;
    if (!installed.ok()) {
      Finish(ToGrpcStatus(installed.status()));
      return;
    }
    v1::PublishResponse answer;
    EncodeVersion(*installed, answer.mutable_version());
    FinishWith(answer);
  }

  // Ends the call with OK and `answer`.
  void FinishWith(const v1::PublishResponse& answer) {
    Finish(ToGrpcStatus(SerializeMessage(answer, response_)));
  }

  // Ends the call with `status`; the served version is untouched.
  void Reject(const absl::Status& status) {
    Log(LogLevel::kWarning, "publish_rejected",
        {{"name", assembler_.has_value() ? assembler_->header().name : ""},
         {"code", absl::StatusCodeToString(status.code())},
         {"reason", std::string(status.message())}});
    Finish(ToGrpcStatus(status));
  }

  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const response_;
  IndexManager* const manager_;
  PublishBuilds* const builds_;
  const absl::Time start_;

  grpc::ByteBuffer bytes_in_;                  // owned by the read in flight
  v1::PublishRequest request_;                 // the last message parsed
  size_t messages_ = 0;                        // messages read
  std::vector<float> buffer_;                  // embeddings_bytes, decoded
  std::optional<PublishAssembler> assembler_;  // set by the header
  bool wait_ = true;
  size_t chunks_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace

PublishBuilds::~PublishBuilds() {
  std::list<Build> builds;
  {
    absl::MutexLock lock(&mu_);
    builds.splice(builds.end(), builds_);
  }
  for (Build& build : builds) build.thread.join();
}

void PublishBuilds::Run(std::function<void()> build) {
  std::list<Build> finished;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = builds_.begin(); it != builds_.end();) {
      const auto next = std::next(it);
      if (it->done) finished.splice(finished.end(), builds_, it);
      it = next;
    }
    const auto it = builds_.emplace(builds_.end());
    // The thread sets `done` under mu_, so only after this assignment.
    it->thread = std::thread([this, it, build = std::move(build)] {
      build();
      absl::MutexLock done_lock(&mu_);
      it->done = true;
    });
  }
  // These threads have returned from their build: joining is immediate.
  for (Build& done : finished) done.thread.join();
}

grpc::ServerReadReactor<grpc::ByteBuffer>* NewPublishReactor(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response,
    IndexManager* manager, PublishBuilds* builds) {
  return new PublishReactor(context, response, manager, builds);
}

}  // namespace hardneg

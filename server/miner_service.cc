#include "server/miner_service.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "format/version_name.h"
#include "google/protobuf/arena.h"
#include "server/convert.h"
#include "server/wire.h"

namespace hardneg {
namespace {

// One Mine stream. Reads run one at a time; each request is mined on the
// pool; responses are written in request order, one write at a time.
// gRPC operations are started outside mu_, since their reactions may run
// on another thread at once.
class MineReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit MineReactor(const MinerService* service)
      : service_(service), reading_(std::make_shared<Slot>()) {
    StartRead(&reading_->in);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Actions actions;
      {
        absl::MutexLock lock(&mu_);
        read_in_flight_ = false;
        reads_done_ = true;
        actions = Advance();
      }
      Run(actions);
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    std::shared_ptr<Slot> slot = std::move(reading_);
    reading_ = std::make_shared<Slot>();  // for the next read
    const absl::Status parsed = ParseMessage(
        slot->in, absl::StrCat("MineRequest ", ++read_count_, " of the stream"),
        slot->request);
    if (!parsed.ok()) {
      // The stream fails: the requests before this one are still answered,
      // none after it is read.
      Actions actions;
      {
        absl::MutexLock lock(&mu_);
        read_in_flight_ = false;
        reads_done_ = true;
        end_status_ = ToGrpcStatus(parsed);
        actions = Advance();
      }
      Run(actions);
      return;
    }
    slot->reserved = service_->ReplyBytesBound(*slot->request);
    {
      absl::MutexLock lock(&mu_);
      read_in_flight_ = false;
      slots_.push_back(slot);
      reserved_bytes_ += slot->reserved;
      ++outstanding_;  // keeps the reactor alive until the task is done
    }
    const absl::Status refused = service_->Enqueue(
        {slot->request, slot->response,
         [this, slot, start](const absl::Status& st) {
           Done(*slot, st, start);
         },
         [this] { return cancelled_.load(std::memory_order_relaxed); }});
    if (!refused.ok()) {
      // Answered in-band and in order, like any failed request.
      slot->response->set_request_id(slot->request->request_id());
      Done(*slot, refused, start);  // advances
      return;
    }
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      actions = Advance();
    }
    Run(actions);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    std::shared_ptr<Slot> written;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      reserved_bytes_ -= writing_->reserved;
      written = std::move(writing_);  // its answer is freed below, unlocked
      if (!ok) broken_ = true;
      actions = Advance();
    }
    Run(actions);
  }

  void OnCancel() override {
    cancelled_.store(true, std::memory_order_relaxed);
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      actions = Advance();
    }
    Run(actions);
  }

  void OnDone() override {
    service_->StreamEnded();
    delete this;
  }

 private:
  // One request and its response, on one arena: the queries, results and
  // negatives of a request cost a few block allocations, not one each.
  struct Slot {
    Slot()
        : request(
              google::protobuf::Arena::CreateMessage<v1::MineRequest>(&arena)),
          response(google::protobuf::Arena::CreateMessage<v1::MineResponse>(
              &arena)) {}
    google::protobuf::Arena arena;
    v1::MineRequest* const request;
    v1::MineResponse* const response;
    grpc::ByteBuffer in;    // the request as read
    grpc::ByteBuffer out;   // the response as written
    uint64_t reserved = 0;  // bound on out's size, counted in reserved_bytes_
    bool ready = false;     // guarded by the reactor's mu_
  };

  // gRPC operations to start once mu_ is released. Each one holds a flag
  // (write or read in flight, finished) that stops any other thread from
  // finishing the call, so the reactor outlives the starts.
  struct Actions {
    grpc::ByteBuffer* write = nullptr;  // the response to send
    grpc::ByteBuffer* read = nullptr;   // where the next request goes
    bool finish = false;
    grpc::Status status;
  };

  // Queues the response of a request read at `start`, once mined.
  void Done(Slot& slot, const absl::Status& status,
            std::chrono::steady_clock::time_point start) {
    absl::Status answered = status;
    if (answered.ok()) {
      answered = SerializeMessage(*slot.response, &slot.out);
    }
    if (!answered.ok()) {
      slot.response->clear_results();
      EncodeError(answered, slot.response);
      // A response with an error and no results is a few bytes.
      SerializeMessage(*slot.response, &slot.out).IgnoreError();
    }
    service_->RecordRequest(MineRpc::kMine, start, answered, *slot.response);
    // Only the serialized answer is needed from here on: free the messages
    // (the request and the response, a second copy of the answer).
    slot.arena.Reset();
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      slot.ready = true;
      --outstanding_;
      actions = Advance();
    }
    // Done runs on a worker thread, not in a reaction: once mu_ is released
    // with nothing started here, a reaction on another thread may finish
    // the call and OnDone delete this reactor, so `this` must not be
    // touched again. An action holds a flag (a write or read in flight, or
    // finished) that keeps every other thread from finishing, so only a
    // non-empty one may be run. (UBSan saw the call on a deleted reactor.)
    if (actions.write == nullptr && actions.read == nullptr &&
        !actions.finish) {
      return;
    }
    Run(actions);
  }

  // Decides what the state allows: the next in-order write, the next read,
  // or Finish once everything is answered (or the stream broke and no task
  // is left that could touch this reactor).
  Actions Advance() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions actions;
    if (finished_) return actions;
    if (!broken_ && !write_in_flight_ && !slots_.empty() &&
        slots_.front()->ready) {
      writing_ = std::move(slots_.front());
      slots_.pop_front();
      write_in_flight_ = true;
      actions.write = &writing_->out;
    }
    if (!broken_ && !reads_done_ && !read_in_flight_ &&
        slots_.size() < service_->options().max_in_flight_per_stream &&
        (reserved_bytes_ == 0 ||
         reserved_bytes_ < service_->options().max_stream_reply_bytes)) {
      read_in_flight_ = true;
      actions.read = &reading_->in;
    }
    if (broken_ && outstanding_ == 0 && !write_in_flight_ && !read_in_flight_) {
      actions.finish = true;
      actions.status = grpc::Status(grpc::StatusCode::CANCELLED,
                                    "stream cancelled or broken");
    } else if (reads_done_ && slots_.empty() && outstanding_ == 0 &&
               !write_in_flight_) {
      actions.finish = true;
      actions.status = end_status_;
    }
    finished_ = actions.finish;
    return actions;
  }

  void Run(const Actions& actions) {
    if (actions.write != nullptr) StartWrite(actions.write);
    if (actions.read != nullptr) StartRead(actions.read);
    if (actions.finish) Finish(actions.status);
  }

  const MinerService* const service_;
  // The slot the next or current read fills: replaced in OnReadDone before
  // mu_ is taken, read by Advance under it (one read runs at a time).
  std::shared_ptr<Slot> reading_;
  // The slot whose response the write in flight sends.
  std::shared_ptr<Slot> writing_ ABSL_GUARDED_BY(mu_);
  absl::Mutex mu_;
  std::deque<std::shared_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
  size_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  // Bounds on the answers read and not yet written (see Slot::reserved).
  uint64_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool read_in_flight_ ABSL_GUARDED_BY(mu_) = true;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // How the stream ends once every request read is answered: OK, or
  // INVALID_ARGUMENT after a request that did not parse.
  grpc::Status end_status_ ABSL_GUARDED_BY(mu_);
  // Requests read, for messages (reads run one at a time).
  uint64_t read_count_ = 0;
  // Set by OnCancel: queued requests of this stream need no answer.
  std::atomic<bool> cancelled_{false};
};

// A Mine stream refused at once (too many streams).
class RefusedStream final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// A Publish call refused at once (not authorized).
class RefusedPublish final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  explicit RefusedPublish(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// MineOnce's request and response on one arena, like a Mine slot's, alive
// until the call is answered.
struct UnaryMessages {
  UnaryMessages()
      : request(
            google::protobuf::Arena::CreateMessage<v1::MineRequest>(&arena)),
        response(
            google::protobuf::Arena::CreateMessage<v1::MineResponse>(&arena)) {}
  google::protobuf::Arena arena;
  v1::MineRequest* const request;
  v1::MineResponse* const response;
};

}  // namespace

MinerService::MinerService(IndexManager* manager, const Miner* miner,
                           WorkerPool* pool, MinerServiceOptions options,
                           ServerMetrics* metrics)
    : manager_(manager),
      miner_(miner),
      pool_(pool),
      options_(std::move(options)),
      metrics_(metrics) {}

absl::Status MinerService::Enqueue(MineJob job) const {
  const size_t queries = static_cast<size_t>(job.request->queries_size());
  {
    absl::MutexLock lock(&queue_mu_);
    // An empty queue always takes a request: its own size is the Miner's
    // to judge.
    if (!queue_.empty() &&
        queued_queries_ + queries > options_.max_queued_queries) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the server is busy: ", queued_queries_,
                       " queries are waiting, and this request's ", queries,
                       " would pass the limit of ", options_.max_queued_queries,
                       " (max_queued_queries); retry with backoff"));
    }
    queued_queries_ += queries;
    queue_.push_back(std::move(job));
  }
  // One drain per job: a drain that finds the queue emptied by another
  // (which took this job into its batch) returns at once.
  pool_->Submit([this] { DrainQueue(); });
  return absl::OkStatus();
}

void MinerService::AwaitQueuedQueriesForTesting(size_t queries) const {
  absl::MutexLock lock(&queue_mu_);
  auto reached = [this, queries]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return queued_queries_ == queries;
  };
  queue_mu_.Await(absl::Condition(&reached));
}

bool MinerService::AwaitBusyWaitForTesting(absl::Duration timeout) const {
  absl::MutexLock lock(&queue_mu_);
  auto waiting = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return busy_waits_ > 0;
  };
  return queue_mu_.AwaitWithTimeout(absl::Condition(&waiting), timeout);
}

size_t MinerService::CancelledQueuedForTesting() const {
  absl::MutexLock lock(&queue_mu_);
  size_t cancelled = 0;
  for (const MineJob& job : queue_) {
    if (job.cancelled && job.cancelled()) ++cancelled;
  }
  return cancelled;
}

void MinerService::DrainQueue() const {
  std::vector<MineJob> jobs;
  size_t queries = 0;
  uint64_t fetch = 0;
  bool alone = false;  // no other batch runs or waits
  bool stopped = false;
  {
    absl::MutexLock lock(&queue_mu_);
    const absl::Time now = absl::Now();
    const absl::Time deadline = now + options_.max_batch_delay;
    const absl::Time busy_deadline =
        now + std::max(options_.max_batch_delay, options_.busy_batch_delay);
    while (true) {
      while (!queue_.empty()) {
        const v1::MineRequest& request = *queue_.front().request;
        const size_t next = static_cast<size_t>(request.queries_size());
        const uint64_t next_fetch = RequestFetch(request);
        if (!jobs.empty() && (queries + next > options_.max_batch_queries ||
                              fetch + next_fetch > options_.max_batch_fetch)) {
          break;
        }
        queries += next;
        fetch += next_fetch;
        queued_queries_ -= next;
        jobs.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      if (jobs.empty() || queries >= options_.max_batch_queries ||
          !queue_.empty() || stopped_) {
        break;
      }
      // Not full: wait a little for more requests to join; longer while
      // another batch runs (busy_batch_delay), but only until it ends.
      const bool busy = running_batches_ > 0;
      const absl::Time until = busy ? busy_deadline : deadline;
      if (until <= absl::Now()) break;
      auto more = [this, busy]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return !queue_.empty() || stopped_ || (busy && running_batches_ == 0);
      };
      if (busy) ++busy_waits_;
      const bool woken =
          queue_mu_.AwaitWithDeadline(absl::Condition(&more), until);
      if (busy) --busy_waits_;
      if (!woken) break;
    }
    if (jobs.empty()) return;
    alone = ++running_batches_ == 1 && queue_.empty();
    stopped = stopped_;
  }
  if (stopped) {
    for (MineJob& job : jobs) {
      job.done(absl::UnavailableError(
          "the server is shutting down; retry on another replica"));
    }
    absl::MutexLock lock(&queue_mu_);
    --running_batches_;
    return;
  }
  if (options_.batch_started_for_testing) {
    options_.batch_started_for_testing(queries);
  }
  const int threads = omp_get_max_threads();
  if (alone && options_.lone_batch_threads > 0) {
    omp_set_num_threads(options_.lone_batch_threads);
  }
  HandleBatch(jobs);
  omp_set_num_threads(threads);
  absl::MutexLock lock(&queue_mu_);
  --running_batches_;
}

absl::Status MinerService::Authorize(grpc::CallbackServerContext* context,
                                     Role role) const {
  if (options_.auth == nullptr) return absl::OkStatus();
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find("authorization");
  const absl::string_view value =
      it == metadata.end()
          ? absl::string_view()
          : absl::string_view(it->second.data(), it->second.size());
  return options_.auth->Check(value, role);
}

uint64_t MinerService::ReplyBytesBound(const v1::MineRequest& request) const {
  std::shared_ptr<const IndexVersion> version = manager_->Current();
  return hardneg::ReplyBytesBound(static_cast<uint64_t>(request.queries_size()),
                                  request.options().num_negatives(),
                                  request.options().return_embeddings(),
                                  version != nullptr ? version->dim() : 0);
}

void MinerService::StopMining() {
  absl::MutexLock lock(&queue_mu_);
  stopped_ = true;
}

absl::StatusOr<std::shared_ptr<const IndexVersion>> MinerService::VersionFor(
    const v1::MiningOptions& options,
    const std::shared_ptr<const IndexVersion>& current) const {
  const std::string& pinned = options.index_version();
  if (!pinned.empty()) {
    HARDNEG_RETURN_IF_ERROR(CheckVersionName(pinned, "options.index_version"));
    std::shared_ptr<const IndexVersion> found = manager_->Find(pinned);
    if (found != nullptr) return found;
    return absl::FailedPreconditionError(absl::StrCat(
        "options.index_version: version '", pinned,
        "' is neither served here nor kept as the previous one (serving '",
        current != nullptr ? current->info().name : "", "')"));
  }
  if (current == nullptr) {
    return absl::UnavailableError(
        "no index is loaded yet: the server is waiting for a complete "
        "checkpoint (a directory with manifest.json) under --checkpoints");
  }
  return current;
}

absl::Status MinerService::PrepareJob(
    const MineJob& job, const std::shared_ptr<const IndexVersion>& current,
    std::shared_ptr<const IndexVersion>* version,
    std::unique_ptr<DecodedMineRequest>* decoded) const {
  const v1::MineRequest& request = *job.request;
  if (job.cancelled && job.cancelled()) {
    return absl::CancelledError("the call was cancelled before it was mined");
  }
  HARDNEG_ASSIGN_OR_RETURN(*version, VersionFor(request.options(), current));
  EncodeVersion((*version)->info(), job.response->mutable_index());
  absl::Status fresh =
      (*version)->CheckSequenceAtLeast(request.options().min_index_sequence());
  if (!fresh.ok()) {
    return Annotate(fresh, "options.min_index_sequence: ");
  }
  *decoded = std::make_unique<DecodedMineRequest>();
  HARDNEG_RETURN_IF_ERROR(DecodeMineRequest(request, decoded->get()));
  return CheckReplySize(**decoded, (*version)->dim(), options_.max_reply_bytes,
                        miner_->limits().negatives_bounded_by_candidates
                            ? (*version)->size()
                            : SIZE_MAX);
}

void MinerService::HandleBatch(std::vector<MineJob>& jobs) const {
  // One version for every job that does not pin one: each answer is exact
  // for the version it reports.
  const std::shared_ptr<const IndexVersion> current = manager_->Current();
  std::vector<absl::Status> status(jobs.size());
  std::vector<std::unique_ptr<DecodedMineRequest>> decoded(jobs.size());
  std::vector<std::shared_ptr<const IndexVersion>> versions(jobs.size());
  std::vector<size_t> ready;  // jobs to mine
  for (size_t j = 0; j < jobs.size(); ++j) {
    jobs[j].response->set_request_id(jobs[j].request->request_id());
    status[j] = PrepareJob(jobs[j], current, &versions[j], &decoded[j]);
    if (status[j].ok()) ready.push_back(j);
  }
  // One search per version the jobs ask for (almost always one).
  while (!ready.empty()) {
    const std::shared_ptr<const IndexVersion> version = versions[ready[0]];
    std::vector<MiningBatchItem> items;
    std::vector<size_t> item_job;
    std::vector<size_t> later;
    for (const size_t j : ready) {
      if (versions[j] != version) {
        later.push_back(j);
        continue;
      }
      items.push_back({decoded[j]->queries, &decoded[j]->options,
                       jobs[j].cancelled ? &jobs[j].cancelled : nullptr});
      item_job.push_back(j);
    }
    std::vector<absl::StatusOr<std::vector<MiningResult>>> results =
        miner_->MineBatch(*version, items);
    size_t searched = 0;  // queries of the requests that passed validation
    for (size_t i = 0; i < items.size(); ++i) {
      const size_t j = item_job[i];
      if (!results[i].ok()) {
        status[j] = results[i].status();
        continue;
      }
      searched += results[i]->size();
      EncodeResults(*results[i], *version, decoded[j]->return_embeddings,
                    jobs[j].response);
    }
    if (metrics_ != nullptr && searched > 0) metrics_->RecordBatch(searched);
    ready = std::move(later);
  }
  for (size_t j = 0; j < jobs.size(); ++j) jobs[j].done(status[j]);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* MinerService::Mine(
    grpc::CallbackServerContext* context) {
  if (absl::Status allowed = Authorize(context, Role::kMine); !allowed.ok()) {
    return new RefusedStream(ToGrpcStatus(allowed));
  }
  const size_t open = streams_.fetch_add(1);
  if (open >= options_.max_streams) {
    streams_.fetch_sub(1);
    return new RefusedStream(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("the server has ", open,
                     " Mine streams open, the limit (max_streams); retry "
                     "with backoff, or use another replica")));
  }
  return new MineReactor(this);
}

grpc::ServerUnaryReactor* MinerService::MineOnce(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  const auto start = std::chrono::steady_clock::now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status allowed = Authorize(context, Role::kMine); !allowed.ok()) {
    reactor->Finish(ToGrpcStatus(allowed));
    return reactor;
  }
  auto messages = std::make_shared<UnaryMessages>();
  grpc::ByteBuffer bytes = *request;  // shares the slices
  const absl::Status parsed =
      ParseMessage(bytes, "the MineOnce request", messages->request);
  if (!parsed.ok()) {
    RecordRequest(MineRpc::kMineOnce, start, parsed, *messages->response);
    reactor->Finish(ToGrpcStatus(parsed));
    return reactor;
  }
  auto answer = [this, reactor, response, messages,
                 start](const absl::Status& status) {
    absl::Status answered = status;
    if (answered.ok()) {
      answered = SerializeMessage(*messages->response, response);
    }
    RecordRequest(MineRpc::kMineOnce, start, answered, *messages->response);
    reactor->Finish(ToGrpcStatus(answered));
  };
  const absl::Status refused =
      Enqueue({messages->request, messages->response, answer,
               [context] { return context->IsCancelled(); }});
  if (!refused.ok()) answer(refused);
  return reactor;
}

void MinerService::RecordRequest(MineRpc rpc,
                                 std::chrono::steady_clock::time_point start,
                                 const absl::Status& status,
                                 const v1::MineResponse& response) const {
  if (metrics_ == nullptr) return;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  if (!status.ok()) {
    metrics_->RecordFailed(rpc, seconds, status.code());
    return;
  }
  uint64_t negatives = 0;
  uint64_t shortfall = 0;
  for (const v1::QueryResult& result : response.results()) {
    negatives += static_cast<uint64_t>(result.negatives_size());
    shortfall += result.shortfall();
  }
  metrics_->RecordMined(rpc, seconds,
                        static_cast<uint64_t>(response.results_size()),
                        negatives, shortfall);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* MinerService::Publish(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  if (absl::Status allowed = Authorize(context, Role::kPublish);
      !allowed.ok()) {
    return new RefusedPublish(ToGrpcStatus(allowed));
  }
  return NewPublishReactor(context, response, manager_, &publish_builds_);
}

grpc::ServerUnaryReactor* MinerService::GetIndexInfo(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  grpc::ByteBuffer bytes = *request;
  v1::GetIndexInfoRequest parsed_request;
  absl::Status status = Authorize(context, Role::kMine);
  if (status.ok()) {
    status = ParseMessage(bytes, "the GetIndexInfo request", &parsed_request);
  }
  if (status.ok()) {
    std::shared_ptr<const IndexVersion> version = manager_->Current();
    v1::IndexInfo info =
        EncodeIndexInfo(version.get(), manager_->build_status());
    if (std::shared_ptr<const IndexVersion> previous = manager_->Previous()) {
      EncodeVersion(previous->info(), info.mutable_previous_version());
    }
    if (manager_->shard().sharded()) {
      info.set_shard_index(manager_->shard().index);
      info.set_num_shards(manager_->shard().count);
    }
    status = SerializeMessage(info, response);
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace hardneg

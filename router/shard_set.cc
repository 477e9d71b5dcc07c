#include "router/shard_set.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace hardneg {
namespace {

// Fills what a version's IndexInfo says about it.
void Describe(const v1::IndexInfo& info, RouterVersion* version) {
  version->step = info.step();
  version->dim = info.dim();
  version->metric = info.metric();
  version->index_type = info.index_type();
  version->scan = info.scan();
  version->has_labels = info.has_labels();
}

// `name` as every one of `live` holds it, or nullopt when one does not;
// `*serving` counts the shards that serve it (rather than keep it).
std::optional<RouterVersion> HeldByAll(
    const std::vector<const v1::IndexInfo*>& live, const std::string& name,
    int* serving) {
  RouterVersion version;
  version.name = name;
  *serving = 0;
  Describe(*live[0], &version);
  bool described = false;
  for (const v1::IndexInfo* info : live) {
    if (info->version().name() == name) {
      ++*serving;
      version.sequence = std::max(version.sequence, info->version().sequence());
      if (!described) Describe(*info, &version);
      described = true;
    } else if (info->previous_version().name() == name) {
      version.sequence =
          std::max(version.sequence, info->previous_version().sequence());
    } else {
      return std::nullopt;
    }
  }
  return version;
}

bool SameServing(const ShardSetView& a, const ShardSetView& b) {
  if (a.all_serving != b.all_serving) return false;
  if (a.version.has_value() != b.version.has_value()) return false;
  return !a.version.has_value() || (a.version->name == b.version->name &&
                                    a.version->sequence == b.version->sequence);
}

}  // namespace

std::string DescribeStatus(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(
                          static_cast<absl::StatusCode>(status.error_code())),
                      ": ", status.error_message());
}

std::string CheckLayout(const v1::IndexInfo& info, size_t index, size_t count) {
  const bool unsharded = info.num_shards() <= 1;
  if (unsharded ? count == 1
                : info.num_shards() == count && info.shard_index() == index) {
    return "";
  }
  return absl::StrCat(
      unsharded ? std::string("holds the whole corpus (no --num_shards)")
                : absl::StrCat("holds shard ", info.shard_index(), " of ",
                               info.num_shards()),
      " but is shard ", index, " of ", count,
      " in the router's --shards; list the shards in --shard_index order, "
      "all with --num_shards ",
      count);
}

std::optional<RouterVersion> CommonVersion(
    const std::vector<ShardState>& shards) {
  std::vector<const v1::IndexInfo*> live;
  for (const ShardState& shard : shards) {
    if (shard.misplaced) continue;
    if (shard.info.has_value() && !shard.info->version().name().empty()) {
      live.push_back(&*shard.info);
    }
  }
  if (live.empty()) return std::nullopt;
  // Every common version is held by the first live shard.
  std::vector<std::string> candidates = {live[0]->version().name()};
  if (!live[0]->previous_version().name().empty()) {
    candidates.push_back(live[0]->previous_version().name());
  }
  std::optional<RouterVersion> best;
  int best_serving = -1;
  for (const std::string& name : candidates) {
    int serving = 0;
    std::optional<RouterVersion> held = HeldByAll(live, name, &serving);
    if (held.has_value() && serving > best_serving) {
      best = std::move(held);
      best_serving = serving;
    }
  }
  return best;
}

ShardSet::ShardSet(std::vector<std::string> targets, ShardSetOptions options)
    : targets_(std::move(targets)), options_(std::move(options)) {
  for (const std::string& target : targets_) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(options_.max_receive_bytes);
    args.SetMaxSendMessageSize(options_.max_receive_bytes);
    // A dns:/// target with several pods: replicas of one shard.
    args.SetLoadBalancingPolicyName("round_robin");
    channels_.push_back(grpc::CreateCustomChannel(
        target,
        options_.credentials != nullptr ? options_.credentials
                                        : grpc::InsecureChannelCredentials(),
        args));
    miners_.push_back(v1::Miner::NewStub(channels_.back()));
    shards_.push_back(v1::Shard::NewStub(channels_.back()));
  }
  absl::MutexLock lock(&mu_);
  for (const std::string& target : targets_) {
    view_.shards.push_back({target, std::nullopt, "not polled yet"});
  }
}

void ShardSet::Prepare(grpc::ClientContext& context) const {
  if (!options_.bearer_token.empty()) {
    context.AddMetadata("authorization",
                        absl::StrCat("Bearer ", options_.bearer_token));
  }
}

ShardSet::~ShardSet() {
  stop_.Notify();
  if (poller_.joinable()) poller_.join();
}

void ShardSet::Start(absl::Duration interval,
                     std::function<void(const ShardSetView&)> changed) {
  changed_ = std::move(changed);
  interval_ = interval;
  poller_ = std::thread([this] { Poll(); });
}

void ShardSet::Poll() {
  ShardSetView last;
  bool first = true;
  do {
    ShardSetView view = Refresh();
    if (changed_ && (first || !SameServing(view, last))) changed_(view);
    last = std::move(view);
    first = false;
  } while (!stop_.WaitForNotificationWithTimeout(interval_));
}

ShardSetView ShardSet::View() const {
  absl::MutexLock lock(&mu_);
  return view_;
}

ShardSetView ShardSet::Refresh() {
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    ticket = ++next_ticket_;
  }
  const size_t n = targets_.size();
  std::vector<grpc::ClientContext> contexts(n);
  std::vector<v1::GetIndexInfoRequest> requests(n);
  std::vector<v1::IndexInfo> infos(n);
  std::vector<grpc::Status> statuses(n);
  PendingCalls pending(n);
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::microseconds(
                            absl::ToInt64Microseconds(options_.poll_timeout));
  for (size_t i = 0; i < n; ++i) {
    contexts[i].set_deadline(deadline);
    Prepare(contexts[i]);
    miners_[i]->async()->GetIndexInfo(&contexts[i], &requests[i], &infos[i],
                                      [&, i](grpc::Status status) {
                                        statuses[i] = std::move(status);
                                        pending.Done();
                                      });
  }
  pending.Wait();
  ShardSetView view;
  view.all_serving = true;
  for (size_t i = 0; i < n; ++i) {
    ShardState state{targets_[i], std::nullopt, ""};
    if (statuses[i].ok()) {
      state.error = CheckLayout(infos[i], i, n);
      state.misplaced = !state.error.empty();
      state.info = std::move(infos[i]);
    } else {
      state.error = DescribeStatus(statuses[i]);
    }
    view.shards.push_back(std::move(state));
  }
  view.version = CommonVersion(view.shards);
  for (const ShardState& shard : view.shards) {
    if (!view.version.has_value() || !shard.info.has_value() ||
        shard.misplaced || shard.info->version().name() != view.version->name) {
      view.all_serving = false;
    }
  }
  absl::MutexLock lock(&mu_);
  if (ticket > view_ticket_) {
    view_ = view;
    view_ticket_ = ticket;
  }
  return view;
}

}  // namespace hardneg

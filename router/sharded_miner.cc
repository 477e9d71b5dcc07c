#include "router/sharded_miner.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "corpus/metric.h"
#include "format/version_name.h"
#include "grpcpp/client_context.h"
#include "mining/shard_merge.h"
#include "proto/mining_options_convert.h"

namespace hardneg {
namespace {

std::string ShardName(const ShardSet& shards, size_t i) {
  return absl::StrCat("shard ", i, " (", shards.target(i), ")");
}

// A shard's refusal that is the request's own fault: the same request
// fails the same way on a single server, so it is the answer. (A shard
// that refuses the router's own token is a shard the router cannot use:
// missing, not the client's fault.)
bool IsRequestError(grpc::StatusCode code) {
  return code == grpc::StatusCode::INVALID_ARGUMENT ||
         code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
         code == grpc::StatusCode::OUT_OF_RANGE;
}

// The shard no longer holds the version the request was pinned to (it
// moved on): the router retries on a fresh view.
bool IsPinMiss(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
         absl::StartsWith(status.error_message(), "options.index_version");
}

// The candidates of every reachable shard, for the request size checks.
size_t Candidates(const ShardSetView& view) {
  size_t candidates = 0;
  for (const ShardState& shard : view.shards) {
    if (shard.info.has_value()) candidates += shard.info->size();
  }
  return candidates;
}

}  // namespace

std::string DescribeNoCommonVersion(const ShardSetView& view) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < view.shards.size(); ++i) {
    const ShardState& shard = view.shards[i];
    std::string what =
        !shard.info.has_value() ? shard.error
        : shard.info->version().name().empty()
            ? "serves nothing yet"
            : absl::StrCat("serves '", shard.info->version().name(), "'");
    parts.push_back(absl::StrCat("shard ", i, " (", shard.target, ") ", what));
  }
  return absl::StrCat("no version is held by every shard: ",
                      absl::StrJoin(parts, "; "));
}

absl::Status ShardedMiner::Mine(const v1::MineRequest& request,
                                std::chrono::system_clock::time_point deadline,
                                v1::MineResponse* response) const {
  response->set_request_id(request.request_id());
  DecodedMineRequest decoded;
  HARDNEG_RETURN_IF_ERROR(DecodeMineRequest(request, &decoded));
  ShardSetView view = shards_->View();
  for (int attempt = 0;; ++attempt) {
    if (!view.version.has_value()) {
      return absl::UnavailableError(DescribeNoCommonVersion(view));
    }
    const RouterVersion& version = *view.version;
    const std::string& wanted = decoded.options.index_version;
    if (!wanted.empty() && wanted != version.name) {
      HARDNEG_RETURN_IF_ERROR(
          CheckVersionName(wanted, "options.index_version"));
      return absl::FailedPreconditionError(absl::StrCat(
          "options.index_version: version '", wanted,
          "' is not the one every shard holds (the router serves '",
          version.name, "')"));
    }
    response->mutable_index()->set_name(version.name);
    response->mutable_index()->set_sequence(version.sequence);
    const uint64_t min_sequence = decoded.options.min_index_sequence;
    if (version.sequence < min_sequence) {
      return absl::FailedPreconditionError(
          absl::StrCat("options.min_index_sequence: the served index is ",
                       version.name, " at sequence ", version.sequence,
                       ", older than the minimum sequence ", min_sequence,
                       " asked for; retry once a newer version is live"));
    }
    HARDNEG_RETURN_IF_ERROR(miner_.ValidateRequest(
        decoded.queries, decoded.options, version.dim, Candidates(view)));
    HARDNEG_RETURN_IF_ERROR(
        CheckReplySize(decoded, version.dim, options_.max_reply_bytes));
    bool pin_missed = false;
    absl::Status status =
        MinePinned(request, decoded, view, deadline, response, &pin_missed);
    if (!pin_missed || attempt > 0) return status;
    // A shard moved on between the poll and the request: once more, on
    // what the shards hold now.
    view = shards_->Refresh();
    response->Clear();
    response->set_request_id(request.request_id());
  }
}

absl::Status ShardedMiner::MinePinned(
    const v1::MineRequest& request, const DecodedMineRequest& decoded,
    const ShardSetView& view, std::chrono::system_clock::time_point deadline,
    v1::MineResponse* response, bool* pin_missed) const {
  const RouterVersion& version = *view.version;
  const MiningOptions& options = decoded.options;
  v1::MineRequest pinned = request;
  MiningOptions shard_options = ShardOptions(options);
  shard_options.index_version = version.name;
  shard_options.min_index_sequence = 0;
  shard_options.allow_partial = false;
  MiningOptionsToProto(shard_options, pinned.mutable_options());

  Round round;
  round.live.assign(shards_->size(), true);
  for (size_t i = 0; i < view.shards.size() && i < round.live.size(); ++i) {
    if (!view.shards[i].misplaced) continue;
    round.live[i] = false;
    round.missing.push_back(
        absl::StrCat(ShardName(*shards_, i), " ", view.shards[i].error));
    round.missing_targets.push_back(shards_->target(i));
  }
  std::vector<v1::MineResponse> answers;
  bool needs_p = false;
  for (const MiningQuery& query : decoded.queries) {
    needs_p = needs_p || NeedsGlobalWeakestPositive(options, query);
  }
  const Metric metric =
      ParseMetric(version.metric).value_or(Metric::kInnerProduct);
  if (needs_p) {
    HARDNEG_RETURN_IF_ERROR(
        CallShards(pinned, /*weakest=*/true, deadline, &round, &answers));
    for (size_t q = 0; q < decoded.queries.size(); ++q) {
      if (!NeedsGlobalWeakestPositive(options, decoded.queries[q])) continue;
      std::vector<std::optional<float>> scores;
      for (size_t i = 0; i < answers.size(); ++i) {
        if (!round.live[i] ||
            answers[i].results_size() <= static_cast<int>(q)) {
          continue;
        }
        const v1::QueryResult& result = answers[i].results(static_cast<int>(q));
        if (result.has_positive_score()) {
          scores.push_back(result.positive_score());
        }
      }
      const std::optional<float> p = WeakestScore(metric, scores);
      if (p.has_value()) {
        pinned.mutable_queries(static_cast<int>(q))->add_positive_scores(*p);
      }
    }
  }
  if (!round.pin_missed) {
    HARDNEG_RETURN_IF_ERROR(
        CallShards(pinned, /*weakest=*/false, deadline, &round, &answers));
  }
  *pin_missed = round.pin_missed;
  const bool any_live =
      std::find(round.live.begin(), round.live.end(), true) != round.live.end();
  if (round.pin_missed || !round.missing.empty()) {
    if (!options.allow_partial || !any_live || round.pin_missed) {
      return absl::UnavailableError(absl::StrCat(
          absl::StrJoin(round.missing, "; "),
          options.allow_partial
              ? ""
              : "; set options.allow_partial to accept an answer from the "
                "live shards"));
    }
  }
  for (const std::string& target : round.missing_targets) {
    response->add_missing_shards(target);
  }
  return Merge(decoded, version, round, answers, response);
}

absl::Status ShardedMiner::CallShards(
    const v1::MineRequest& request, bool weakest,
    std::chrono::system_clock::time_point deadline, Round* round,
    std::vector<v1::MineResponse>* answers) const {
  const size_t n = shards_->size();
  std::vector<grpc::ClientContext> contexts(n);
  std::vector<grpc::Status> statuses(n);
  answers->assign(n, v1::MineResponse());
  // At most a day: an infinite --shard_timeout leaves the request's own
  // deadline (or a day) without overflowing the clock.
  const auto timeout = std::chrono::system_clock::now() +
                       std::chrono::microseconds(absl::ToInt64Microseconds(
                           std::min(options_.shard_timeout, absl::Hours(24))));
  const auto shard_deadline = std::min(deadline, timeout);
  size_t asked = 0;
  for (size_t i = 0; i < n; ++i) asked += round->live[i] ? 1 : 0;
  PendingCalls pending(asked);
  const ShardCall call =
      weakest ? ShardCall::kWeakestPositives : ShardCall::kMineOnce;
  for (size_t i = 0; i < n; ++i) {
    if (!round->live[i]) continue;
    contexts[i].set_deadline(shard_deadline);
    shards_->Prepare(contexts[i]);
    const absl::Time start = absl::Now();
    auto done = [&, i, start](grpc::Status status) {
      if (metrics_ != nullptr) {
        metrics_->RecordShardCall(i, call, status, absl::Now() - start);
      }
      statuses[i] = std::move(status);
      pending.Done();
    };
    if (weakest) {
      shards_->shard(i)->async()->WeakestPositives(
          &contexts[i], &request, &(*answers)[i], std::move(done));
    } else {
      shards_->miner(i)->async()->MineOnce(&contexts[i], &request,
                                           &(*answers)[i], std::move(done));
    }
  }
  pending.Wait();
  for (size_t i = 0; i < n; ++i) {
    if (!round->live[i] || statuses[i].ok()) continue;
    if (IsRequestError(statuses[i].error_code())) {
      return absl::Status(
          static_cast<absl::StatusCode>(statuses[i].error_code()),
          absl::StrCat(ShardName(*shards_, i), ": ",
                       statuses[i].error_message()));
    }
    round->pin_missed = round->pin_missed || IsPinMiss(statuses[i]);
    round->live[i] = false;
    round->missing.push_back(absl::StrCat(
        ShardName(*shards_, i), " failed: ", DescribeStatus(statuses[i])));
    round->missing_targets.push_back(shards_->target(i));
  }
  return absl::OkStatus();
}

absl::Status ShardedMiner::Merge(const DecodedMineRequest& decoded,
                                 const RouterVersion& version,
                                 const Round& round,
                                 const std::vector<v1::MineResponse>& answers,
                                 v1::MineResponse* response) const {
  const Metric metric =
      ParseMetric(version.metric).value_or(Metric::kInnerProduct);
  const int queries = static_cast<int>(decoded.queries.size());
  for (size_t i = 0; i < answers.size(); ++i) {
    if (round.live[i] && answers[i].results_size() != queries) {
      return absl::InternalError(absl::StrCat(
          ShardName(*shards_, i), " answered ", answers[i].results_size(),
          " results for ", queries, " queries"));
    }
  }
  std::vector<const v1::Negative*> table;  // MinedNegative::row -> negative
  std::vector<MiningResult> parts;
  for (int q = 0; q < queries; ++q) {
    table.clear();
    parts.clear();
    for (size_t i = 0; i < answers.size(); ++i) {
      if (!round.live[i]) continue;
      const v1::QueryResult& result = answers[i].results(q);
      MiningResult part;
      part.shortfall = result.shortfall();
      if (result.has_positive_score()) {
        part.positive_score = result.positive_score();
      }
      for (const v1::Negative& negative : result.negatives()) {
        part.negatives.push_back({negative.id(), negative.score(),
                                  negative.label(), negative.rank(),
                                  static_cast<uint32_t>(table.size())});
        table.push_back(&negative);
      }
      parts.push_back(std::move(part));
    }
    const MiningResult merged = MergeShardResults(
        metric, decoded.options, static_cast<size_t>(q), parts);
    v1::QueryResult* out = response->add_results();
    out->set_shortfall(merged.shortfall);
    if (merged.positive_score.has_value()) {
      out->set_positive_score(*merged.positive_score);
    }
    for (const MinedNegative& negative : merged.negatives) {
      v1::Negative* copy = out->add_negatives();
      *copy = *table[negative.row];
      copy->set_rank(negative.rank);
    }
  }
  return absl::OkStatus();
}

}  // namespace hardneg

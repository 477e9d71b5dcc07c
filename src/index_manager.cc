#include "index_manager.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "checkpoint.h"
#include "log.h"
#include "status_macros.h"

namespace hardneg {

IndexManager::IndexManager(IndexManagerOptions options)
    : options_(std::move(options)) {}

IndexManager::~IndexManager() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
}

std::shared_ptr<const IndexVersion> IndexManager::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

BuildStatus IndexManager::build_status() const {
  absl::MutexLock lock(&mu_);
  return {state_, last_rejected_};
}

absl::StatusOr<std::shared_ptr<const IndexVersion>> IndexManager::Load(
    const std::string& dir, uint64_t sequence) const {
  HARDNEG_ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(dir));
  const CheckpointManifest& manifest = checkpoint.manifest;
  Metric metric =
      manifest.metric.value_or(options_.metric.value_or(Metric::kInnerProduct));
  if (options_.metric.has_value() && metric != *options_.metric) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the manifest's metric is ", MetricName(metric),
        " but the server runs with --metric ", MetricName(*options_.metric)));
  }
  VersionInfo info;
  info.name = manifest.name;
  info.step = manifest.step;
  info.sequence = sequence;
  info.metric = metric;
  info.created = absl::Now();
  return IndexVersion::Build(std::move(info), std::move(checkpoint.store),
                             options_.build);
}

absl::Status IndexManager::LoadNewest() {
  absl::MutexLock build_lock(&load_mu_);
  std::vector<std::string> unparsable;
  HARDNEG_ASSIGN_OR_RETURN(
      std::vector<CheckpointEntry> entries,
      ListCheckpoints(options_.checkpoints_dir, &unparsable));
  std::shared_ptr<const IndexVersion> served = Current();
  absl::Status last_error = absl::OkStatus();
  for (const CheckpointEntry& entry : entries) {
    if (served != nullptr && entry.step <= served->info().step) break;
    {
      absl::MutexLock lock(&mu_);
      if (state_ == "empty") state_ = "loading";
      if (last_rejected_.rfind(entry.dir + ":", 0) == 0) continue;
    }
    const absl::Time start = absl::Now();
    const uint64_t sequence = served ? served->info().sequence + 1 : 1;
    absl::StatusOr<std::shared_ptr<const IndexVersion>> loaded =
        Load(entry.dir, sequence);
    if (!loaded.ok()) {
      Log(LogLevel::kError, "checkpoint_rejected",
          {{"dir", entry.dir},
           {"reason", std::string(loaded.status().message())}});
      absl::MutexLock lock(&mu_);
      last_rejected_ = absl::StrCat(entry.dir, ": ", loaded.status().message());
      last_error = loaded.status();
      continue;
    }
    const VersionInfo& info = (*loaded)->info();
    Log(LogLevel::kInfo, "version_swap",
        {{"name", info.name},
         {"step", absl::StrCat(info.step)},
         {"sequence", absl::StrCat(info.sequence)},
         {"candidates", absl::StrCat((*loaded)->size())},
         {"dim", absl::StrCat((*loaded)->dim())},
         {"metric", MetricName(info.metric)},
         {"index", (*loaded)->index().type()},
         {"load_seconds",
          absl::StrCat(absl::ToDoubleSeconds(absl::Now() - start))}});
    std::function<void(const IndexVersion&)> listener;
    {
      absl::MutexLock lock(&mu_);
      current_ = *loaded;
      state_ = "serving";
      listener = listener_;
    }
    if (listener) listener(**loaded);
    return absl::OkStatus();
  }
  return last_error;
}

void IndexManager::SetSwapListener(
    std::function<void(const IndexVersion&)> listener) {
  absl::MutexLock lock(&mu_);
  listener_ = std::move(listener);
}

void IndexManager::StartWatching(absl::Duration interval) {
  watcher_ = std::thread([this, interval] { WatchLoop(interval); });
}

void IndexManager::WatchLoop(absl::Duration interval) {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_;
      };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), interval)) return;
    }
    // Errors are logged by LoadNewest; the served version keeps serving.
    LoadNewest().IgnoreError();
  }
}

}  // namespace hardneg

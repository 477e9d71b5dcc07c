// `hardneg publish`: streams a new index version to a server's Publish RPC,
// from a checkpoint directory or from .npy files, with a progress report on
// stderr, and prints the version that now serves.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli_commands.h"
#include "client/cli_flags.h"
#include "client/client.h"
#include "corpus/metric.h"
#include "format/checkpoint.h"
#include "format/npy.h"

namespace hardneg::client {
namespace {

constexpr char kCommand[] = "publish";

// The rows to send, read from a checkpoint or from .npy files; the spec's
// spans point into it.
struct PublishData {
  std::optional<Checkpoint> checkpoint;
  NpyMatrix embeddings;
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;
  std::vector<int64_t> delete_ids;
};

// Reports upload progress on stderr: a redrawn bar on a terminal, otherwise
// a line at each quarter.
class ProgressReporter {
 public:
  explicit ProgressReporter(bool wait)
      : tty_(::isatty(STDERR_FILENO) == 1), wait_(wait) {}

  void Update(const PublishProgress& progress) {
    const double fraction = progress.total_rows == 0
                                ? 1.0
                                : static_cast<double>(progress.rows_sent) /
                                      static_cast<double>(progress.total_rows);
    const bool done = progress.rows_sent >= progress.total_rows;
    const double seconds =
        std::max(absl::ToDoubleSeconds(progress.elapsed), 1e-9);
    const double mb_per_s =
        static_cast<double>(progress.bytes_sent) / 1e6 / seconds;
    if (tty_) {
      const absl::Time now = absl::Now();
      if (!done && now - last_draw_ < absl::Milliseconds(100)) return;
      last_draw_ = now;
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(fraction * kWidth);
      std::cerr << absl::StrFormat(
          "\r[%s%s] %d/%d rows %5.1f%% %.1f MB/s", std::string(filled, '#'),
          std::string(kWidth - filled, '.'), progress.rows_sent,
          progress.total_rows, 100 * fraction, mb_per_s);
      if (done) std::cerr << "\n";
    } else {
      const int quarter = static_cast<int>(fraction * 4);
      if (quarter <= last_quarter_) return;
      last_quarter_ = quarter;
      std::cerr << absl::StrFormat(
          "hardneg publish: sent %d of %d rows (%.0f%%), %.1f MB/s\n",
          progress.rows_sent, progress.total_rows, 100 * fraction, mb_per_s);
    }
    if (done && wait_) {
      std::cerr << "hardneg publish: uploaded; waiting for the server to "
                   "build and serve the new version\n";
    }
    std::cerr.flush();
  }

 private:
  const bool tty_;
  const bool wait_;
  absl::Time last_draw_ = absl::InfinitePast();
  int last_quarter_ = 0;
};

}  // namespace

int RunPublishCommand(const std::vector<std::string>& args) {
  ServerFlags server_flags;
  std::vector<std::string> dirs;
  std::string embeddings_path, ids_path, labels_path, delete_ids_path;
  std::string name, metric, base_version;
  uint64_t step = 0;
  uint32_t chunk_rows = 4096;
  bool send_bytes = false;
  bool wait = true;
  FlagSet flags(
      kCommand,
      "--server HOST:PORT (DIR | --embeddings E.npy --ids I.npy [--labels "
      "L.npy] --name N --step S [--metric M]) [--base_version NAME "
      "--delete_ids D.npy] [--chunk_rows 4096] [--bytes] [--nowait]",
      "Streams a new index version to the server's Publish RPC: the "
      "checkpoint directory DIR (manifest.json and its shards), or the "
      ".npy files. With --base_version the rows are upserts to the served "
      "version of that name (new ids appended, changed ids replaced) and "
      "--delete_ids removes ids. Shows upload progress on stderr and prints "
      "the version that now serves on stdout.");
  AddServerFlags(flags, &server_flags);
  flags.Positionals(&dirs);
  flags.String("embeddings", &embeddings_path, "E.npy",
               "Embeddings, float32 or float16 [n, dim] (instead of DIR).");
  flags.String("ids", &ids_path, "I.npy", "Ids, int64 [n].");
  flags.String("labels", &labels_path, "L.npy", "Labels, int64 [n].");
  flags.String("name", &name, "N",
               "The version's name (required without DIR; overrides the "
               "manifest's).");
  flags.Uint64("step", &step,
               "The checkpoint's training step (overrides the manifest's).");
  flags.String("metric", &metric, "inner_product|l2",
               "Default: the manifest's, else the served version's.");
  flags.String("base_version", &base_version, "NAME",
               "Publish incrementally onto the served version NAME.");
  flags.String("delete_ids", &delete_ids_path, "D.npy",
               "Ids to remove, int64 [n] (needs --base_version).");
  flags.Uint32("chunk_rows", &chunk_rows, "Rows per message (> 0).");
  flags.Bool("bytes", &send_bytes,
             "Send embeddings as float32 bytes instead of packed floats.");
  flags.Bool("wait", &wait,
             "Wait until the new version serves; --nowait returns once the "
             "server has received and checked the data.");
  if (std::optional<int> done = ParseServerCommand(flags, args, server_flags)) {
    return *done;
  }
  if (dirs.size() > 1) {
    return flags.UsageError(
        absl::StrCat("expected one checkpoint directory, "
                     "got ",
                     dirs.size(), " arguments"));
  }
  const bool from_dir = !dirs.empty();
  if (from_dir &&
      (!embeddings_path.empty() || !ids_path.empty() || !labels_path.empty())) {
    return flags.UsageError(
        "give either a checkpoint directory or --embeddings/--ids/--labels, "
        "not both");
  }
  if (!from_dir && (embeddings_path.empty() || ids_path.empty())) {
    return flags.UsageError(
        "give a checkpoint directory, or --embeddings and --ids");
  }
  if (!from_dir && name.empty()) {
    return flags.UsageError("--name is required with --embeddings");
  }
  if (!delete_ids_path.empty() && base_version.empty()) {
    return flags.UsageError(
        "--delete_ids needs --base_version (an incremental publish)");
  }
  if (chunk_rows == 0) return flags.UsageError("--chunk_rows must be > 0");
  if (!metric.empty() && !ParseMetric(metric).ok()) {
    return flags.UsageError(
        absl::StrCat("--metric=", metric, ": expected inner_product or l2"));
  }

  PublishData data;
  PublishSpec spec;
  if (from_dir) {
    absl::StatusOr<Checkpoint> checkpoint = ReadCheckpoint(dirs[0]);
    if (!checkpoint.ok()) {
      return RuntimeError(kCommand, dirs[0], checkpoint.status());
    }
    data.checkpoint = *std::move(checkpoint);
    const CheckpointManifest& manifest = data.checkpoint->manifest;
    const CandidateStore& store = data.checkpoint->store;
    spec.name = name.empty() ? manifest.name : name;
    spec.step = flags.IsSet("step") ? step : manifest.step;
    spec.dim = static_cast<uint32_t>(store.dim());
    if (metric.empty() && manifest.metric) {
      metric = MetricName(*manifest.metric);
    }
    spec.ids = store.ids();
    if (store.has_labels()) spec.labels = store.labels();
    spec.embeddings =
        absl::MakeConstSpan(store.data(), store.size() * store.dim());
  } else {
    absl::StatusOr<NpyMatrix> embeddings = ReadNpyMatrix(embeddings_path);
    if (!embeddings.ok()) {
      return RuntimeError(kCommand, "--embeddings", embeddings.status());
    }
    data.embeddings = *std::move(embeddings);
    absl::StatusOr<std::vector<int64_t>> ids = ReadNpyInt64(ids_path);
    if (!ids.ok()) return RuntimeError(kCommand, "--ids", ids.status());
    data.ids = *std::move(ids);
    if (data.ids.size() != data.embeddings.rows) {
      return RuntimeError(
          kCommand, "--ids",
          absl::InvalidArgumentError(absl::StrCat(
              ids_path, " has ", data.ids.size(), " ids but ", embeddings_path,
              " has ", data.embeddings.rows, " rows")));
    }
    if (!labels_path.empty()) {
      absl::StatusOr<std::vector<int64_t>> labels = ReadNpyInt64(labels_path);
      if (!labels.ok()) {
        return RuntimeError(kCommand, "--labels", labels.status());
      }
      data.labels = *std::move(labels);
      if (data.labels.size() != data.ids.size()) {
        return RuntimeError(kCommand, "--labels",
                            absl::InvalidArgumentError(absl::StrCat(
                                labels_path, " has ", data.labels.size(),
                                " labels for ", data.ids.size(), " ids")));
      }
    }
    spec.name = name;
    spec.step = step;
    spec.dim = static_cast<uint32_t>(data.embeddings.cols);
    spec.ids = data.ids;
    spec.labels = data.labels;
    spec.embeddings = data.embeddings.data;
  }
  if (!delete_ids_path.empty()) {
    absl::StatusOr<std::vector<int64_t>> deletes =
        ReadNpyInt64(delete_ids_path);
    if (!deletes.ok()) {
      return RuntimeError(kCommand, "--delete_ids", deletes.status());
    }
    data.delete_ids = *std::move(deletes);
    spec.delete_ids = data.delete_ids;
  }
  spec.metric = metric;
  if (!base_version.empty()) spec.base_version = base_version;
  spec.chunk_rows = chunk_rows;
  spec.send_bytes = send_bytes;
  spec.wait = wait;

  absl::StatusOr<std::unique_ptr<Client>> client =
      ConnectToServer(server_flags);
  if (!client.ok()) {
    return RuntimeError(kCommand, server_flags.server, client.status());
  }
  ProgressReporter reporter(wait);
  const absl::Time start = absl::Now();
  absl::StatusOr<IndexVersion> version = (*client)->Publish(
      spec, [&](const PublishProgress& p) { reporter.Update(p); });
  if (!version.ok()) {
    return RuntimeError(
        kCommand,
        absl::StrCat("Publish of '", spec.name, "' to ", server_flags.server),
        version.status());
  }
  std::cout << "version:      " << version->name << "\n"
            << "sequence:     " << version->sequence << "\n";
  std::cout.flush();
  std::cerr << absl::StrFormat(
      "hardneg publish: %d rows and %d deletes of dim %d in %.3f s; %s\n",
      spec.ids.size(), spec.delete_ids.size(), spec.dim,
      absl::ToDoubleSeconds(absl::Now() - start),
      wait ? "serving now"
           : "the server builds it in the background ('hardneg info' shows "
             "when it serves)");
  return kExitOk;
}

}  // namespace hardneg::client

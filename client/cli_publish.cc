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

// Reports upload progress, then the server's build, on stderr: a redrawn
// bar on a terminal, otherwise a line at each quarter.
class ProgressReporter {
 public:
  explicit ProgressReporter(bool wait)
      : tty_(::isatty(STDERR_FILENO) == 1), wait_(wait) {}

  void Update(const PublishProgress& progress) {
    if (progress.building) {
      UpdateBuild(progress.build_progress);
      return;
    }
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

  // Once the Publish returned: ends a redrawn build bar.
  void Finish() {
    if (build_drawn_) std::cerr << "\n";
  }

 private:
  static constexpr int kWidth = 30;

  // The server's build: a bar on a terminal, otherwise a line at each
  // quarter reached before the end (which the summary line reports).
  void UpdateBuild(double fraction) {
    if (tty_) {
      const int filled = static_cast<int>(fraction * kWidth);
      std::cerr << absl::StrFormat(
          "\r[%s%s] server building %5.1f%%%20s", std::string(filled, '#'),
          std::string(kWidth - filled, '.'), 100 * fraction, "");
      build_drawn_ = true;
    } else {
      const int quarter = static_cast<int>(fraction * 4);
      if (fraction >= 1 || quarter <= last_build_quarter_) return;
      last_build_quarter_ = quarter;
      std::cerr << absl::StrFormat(
          "hardneg publish: the server has built %.0f%% of the new version\n",
          100 * fraction);
    }
    std::cerr.flush();
  }

  const bool tty_;
  const bool wait_;
  absl::Time last_draw_ = absl::InfinitePast();
  int last_quarter_ = 0;
  int last_build_quarter_ = 0;
  bool build_drawn_ = false;
};

// Every flag of `hardneg publish` but the server's.
struct PublishFlags {
  std::vector<std::string> dirs;  // the positional arguments
  std::string embeddings_path, ids_path, labels_path, delete_ids_path;
  std::string name, metric, base_version;
  uint64_t step = 0;
  bool step_set = false;  // --step was given: it overrides the manifest's
  uint32_t chunk_rows = 4096;
  bool send_bytes = false;
  bool wait = true;
};

void AddPublishFlags(FlagSet& flags, PublishFlags* publish) {
  flags.Positionals(&publish->dirs);
  flags.String("embeddings", &publish->embeddings_path, "E.npy",
               "Embeddings, float32 or float16 [n, dim] (instead of DIR).");
  flags.String("ids", &publish->ids_path, "I.npy", "Ids, int64 [n].");
  flags.String("labels", &publish->labels_path, "L.npy", "Labels, int64 [n].");
  flags.String("name", &publish->name, "N",
               "The version's name (required without DIR; overrides the "
               "manifest's).");
  flags.Uint64("step", &publish->step,
               "The checkpoint's training step (overrides the manifest's).");
  flags.String("metric", &publish->metric, "inner_product|l2",
               "Default: the manifest's, else the served version's.");
  flags.String("base_version", &publish->base_version, "NAME",
               "Publish incrementally onto the served version NAME.");
  flags.String("delete_ids", &publish->delete_ids_path, "D.npy",
               "Ids to remove, int64 [n] (needs --base_version).");
  flags.Uint32("chunk_rows", &publish->chunk_rows, "Rows per message (> 0).");
  flags.Bool("bytes", &publish->send_bytes,
             "Send embeddings as float32 bytes instead of packed floats.");
  flags.Bool("wait", &publish->wait,
             "Wait until the new version serves; --nowait returns once the "
             "server has received and checked the data.");
}

// INVALID_ARGUMENT with the usage error's message when the flags do not
// name one consistent source of rows.
absl::Status CheckPublishFlags(const PublishFlags& publish) {
  if (publish.dirs.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected one checkpoint directory, got ",
                     publish.dirs.size(), " arguments"));
  }
  const bool from_dir = !publish.dirs.empty();
  const bool from_npy = !publish.embeddings_path.empty() ||
                        !publish.ids_path.empty() ||
                        !publish.labels_path.empty();
  if (from_dir && from_npy) {
    return absl::InvalidArgumentError(
        "give either a checkpoint directory or --embeddings/--ids/--labels, "
        "not both");
  }
  if (!from_dir &&
      (publish.embeddings_path.empty() || publish.ids_path.empty())) {
    return absl::InvalidArgumentError(
        "give a checkpoint directory, or --embeddings and --ids");
  }
  if (!from_dir && publish.name.empty()) {
    return absl::InvalidArgumentError("--name is required with --embeddings");
  }
  if (!publish.delete_ids_path.empty() && publish.base_version.empty()) {
    return absl::InvalidArgumentError(
        "--delete_ids needs --base_version (an incremental publish)");
  }
  if (publish.chunk_rows == 0) {
    return absl::InvalidArgumentError("--chunk_rows must be > 0");
  }
  if (!publish.metric.empty() && !ParseMetric(publish.metric).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metric=", publish.metric, ": expected inner_product or l2"));
  }
  return absl::OkStatus();
}

// The rows of the checkpoint directory; name, step and metric from its
// manifest unless the flags override them.
absl::Status ReadCheckpointRows(const PublishFlags& publish, PublishData* data,
                                PublishSpec* spec) {
  absl::StatusOr<Checkpoint> checkpoint = ReadCheckpoint(publish.dirs[0]);
  if (!checkpoint.ok()) return checkpoint.status();
  data->checkpoint = *std::move(checkpoint);
  const CheckpointManifest& manifest = data->checkpoint->manifest;
  const CandidateStore& store = data->checkpoint->store;
  spec->name = publish.name.empty() ? manifest.name : publish.name;
  spec->step = publish.step_set ? publish.step : manifest.step;
  spec->dim = static_cast<uint32_t>(store.dim());
  spec->metric = publish.metric;
  if (spec->metric.empty() && manifest.metric) {
    spec->metric = MetricName(*manifest.metric);
  }
  spec->ids = store.ids();
  if (store.has_labels()) spec->labels = store.labels();
  spec->embeddings =
      absl::MakeConstSpan(store.data(), store.size() * store.dim());
  return absl::OkStatus();
}

// The rows of --embeddings, --ids and --labels; `*failed_flag` names the
// flag whose file was wrong.
absl::Status ReadNpyRows(const PublishFlags& publish, PublishData* data,
                         PublishSpec* spec, std::string* failed_flag) {
  *failed_flag = "--embeddings";
  absl::StatusOr<NpyMatrix> embeddings = ReadNpyMatrix(publish.embeddings_path);
  if (!embeddings.ok()) return embeddings.status();
  data->embeddings = *std::move(embeddings);
  *failed_flag = "--ids";
  absl::StatusOr<std::vector<int64_t>> ids = ReadNpyInt64(publish.ids_path);
  if (!ids.ok()) return ids.status();
  data->ids = *std::move(ids);
  if (data->ids.size() != data->embeddings.rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        publish.ids_path, " has ", data->ids.size(), " ids but ",
        publish.embeddings_path, " has ", data->embeddings.rows, " rows"));
  }
  if (!publish.labels_path.empty()) {
    *failed_flag = "--labels";
    absl::StatusOr<std::vector<int64_t>> labels =
        ReadNpyInt64(publish.labels_path);
    if (!labels.ok()) return labels.status();
    data->labels = *std::move(labels);
    if (data->labels.size() != data->ids.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(publish.labels_path, " has ", data->labels.size(),
                       " labels for ", data->ids.size(), " ids"));
    }
  }
  spec->name = publish.name;
  spec->step = publish.step;
  spec->dim = static_cast<uint32_t>(data->embeddings.cols);
  spec->metric = publish.metric;
  spec->ids = data->ids;
  spec->labels = data->labels;
  spec->embeddings = data->embeddings.data;
  return absl::OkStatus();
}

// Everything to publish, as the flags say; `*failed_what` names the
// directory or the flag whose file was wrong.
absl::Status ReadPublishSpec(const PublishFlags& publish, PublishData* data,
                             PublishSpec* spec, std::string* failed_what) {
  absl::Status status;
  if (!publish.dirs.empty()) {
    *failed_what = publish.dirs[0];
    status = ReadCheckpointRows(publish, data, spec);
  } else {
    status = ReadNpyRows(publish, data, spec, failed_what);
  }
  if (!status.ok()) return status;
  if (!publish.delete_ids_path.empty()) {
    *failed_what = "--delete_ids";
    absl::StatusOr<std::vector<int64_t>> deletes =
        ReadNpyInt64(publish.delete_ids_path);
    if (!deletes.ok()) return deletes.status();
    data->delete_ids = *std::move(deletes);
    spec->delete_ids = data->delete_ids;
  }
  if (!publish.base_version.empty()) spec->base_version = publish.base_version;
  spec->chunk_rows = publish.chunk_rows;
  spec->send_bytes = publish.send_bytes;
  spec->wait = publish.wait;
  return absl::OkStatus();
}

// Publishes `spec` with a progress report; prints the version that now
// serves on stdout and a summary on stderr.
int PublishAndReport(Client& client, const PublishSpec& spec,
                     const std::string& server) {
  ProgressReporter reporter(spec.wait);
  const absl::Time start = absl::Now();
  absl::StatusOr<ServedVersion> version = client.Publish(
      spec, [&](const PublishProgress& p) { reporter.Update(p); });
  reporter.Finish();
  if (!version.ok()) {
    return RuntimeError(
        kCommand, absl::StrCat("Publish of '", spec.name, "' to ", server),
        version.status());
  }
  std::cout << "version:      " << version->name << "\n"
            << "sequence:     " << version->sequence << "\n";
  std::cout.flush();
  std::cerr << absl::StrFormat(
      "hardneg publish: %d rows and %d deletes of dim %d in %.3f s; %s\n",
      spec.ids.size(), spec.delete_ids.size(), spec.dim,
      absl::ToDoubleSeconds(absl::Now() - start),
      spec.wait ? "serving now"
                : "the server builds it in the background ('hardneg info' "
                  "shows when it serves)");
  return kExitOk;
}

}  // namespace

int RunPublishCommand(const std::vector<std::string>& args) {
  ConnectionFlags connection_flags;
  PublishFlags publish;
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
  AddConnectionFlags(flags, &connection_flags);
  AddPublishFlags(flags, &publish);
  if (std::optional<int> done =
          ParseServerCommand(flags, args, connection_flags)) {
    return *done;
  }
  publish.step_set = flags.IsSet("step");
  if (absl::Status status = CheckPublishFlags(publish); !status.ok()) {
    return flags.UsageError(status);
  }

  PublishData data;
  PublishSpec spec;
  std::string failed_what;
  if (absl::Status status =
          ReadPublishSpec(publish, &data, &spec, &failed_what);
      !status.ok()) {
    return RuntimeError(kCommand, failed_what, status);
  }
  return RunWithClient(kCommand, connection_flags, [&](Client& client) {
    return PublishAndReport(client, spec, connection_flags.server);
  });
}

}  // namespace hardneg::client

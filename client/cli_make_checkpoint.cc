// `hardneg make-checkpoint`: writes a one-shard checkpoint directory (the
// layout in src/checkpoint.h) from .npy files or from Fashion-MNIST, and
// exports Fashion-MNIST test images as query files for `hardneg mine`.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli_commands.h"
#include "client/cli_flags.h"
#include "client/fashion_mnist.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "format/checkpoint.h"
#include "format/npy.h"

namespace hardneg::client {
namespace {

constexpr char kCommand[] = "make-checkpoint";

// Steps over fewer bytes show no progress: they are over before anyone
// could read it, and small runs print only their result.
constexpr size_t kMinShownBytes = size_t{16} << 20;

// Shows how one step (reading, writing) goes on stderr: a redrawn bar on a
// terminal, otherwise a line at each tenth.
class StepProgress {
 public:
  explicit StepProgress(std::string what)
      : what_(std::move(what)), tty_(::isatty(STDERR_FILENO) == 1) {}

  void Update(size_t done, size_t total) {
    if (total < kMinShownBytes) return;
    done = std::min(done, total);
    const double fraction =
        static_cast<double>(done) / static_cast<double>(total);
    const double mb = static_cast<double>(total) / 1e6;
    if (tty_) {
      const absl::Time now = absl::Now();
      if (done < total && now - last_draw_ < absl::Milliseconds(100)) return;
      last_draw_ = now;
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(fraction * kWidth);
      std::cerr << absl::StrFormat("\rhardneg %s: %s [%s%s] %5.1f%% of %.1f MB",
                                   kCommand, what_, std::string(filled, '#'),
                                   std::string(kWidth - filled, '.'),
                                   100 * fraction, mb);
      if (done == total) std::cerr << "\n";
    } else {
      const int tenth = static_cast<int>(fraction * 10);
      if (tenth <= last_tenth_) return;
      last_tenth_ = tenth;
      std::cerr << absl::StrFormat("hardneg %s: %s %d%% of %.1f MB\n", kCommand,
                                   what_, tenth * 10, mb);
    }
    std::cerr.flush();
  }

 private:
  const std::string what_;
  const bool tty_;
  absl::Time last_draw_ = absl::InfinitePast();
  int last_tenth_ = 0;
};

// The candidates of a checkpoint to write.
struct Candidates {
  size_t dim = 0;
  std::vector<float> embeddings;  // ids.size() x dim
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;  // empty or one per id
};

// The int64 [n] file at `path`, one value per embedding; `what` names the
// values ("ids", "labels").
absl::StatusOr<std::vector<int64_t>> ReadColumn(
    const std::string& path, const char* what, size_t n,
    const std::string& embeddings_path) {
  absl::StatusOr<std::vector<int64_t>> values = ReadNpyInt64(path);
  if (!values.ok()) return values.status();
  if (values->size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " holds ", values->size(), " ", what, " but ",
                     embeddings_path, " holds ", n, " embeddings"));
  }
  return values;
}

// Checks `candidates` as the server will when it loads the checkpoint
// (CandidateStore::Create: unique ids, finite values), on a copy of them.
absl::Status CheckCandidates(const Candidates& candidates) {
  std::optional<std::vector<int64_t>> labels;
  if (!candidates.labels.empty()) labels = candidates.labels;
  return CandidateStore::Create(candidates.dim, candidates.ids,
                                candidates.embeddings, std::move(labels))
      .status();
}

// Reads --embeddings, --ids and --labels and checks the candidates;
// `failed_what` names the flag whose file was wrong, or both files when
// together they are not a valid set of candidates.
absl::StatusOr<Candidates> ReadNpyCandidates(const std::string& embeddings_path,
                                             const std::string& ids_path,
                                             const std::string& labels_path,
                                             std::string* failed_what) {
  Candidates candidates;
  *failed_what = "--embeddings";
  StepProgress reading(absl::StrCat("reading ", embeddings_path));
  absl::StatusOr<NpyMatrix> embeddings = ReadNpyMatrix(
      embeddings_path, [&reading](const NpyReadProgress& progress) {
        reading.Update(progress.bytes_read, progress.file_bytes);
      });
  if (!embeddings.ok()) return embeddings.status();
  if (embeddings->rows == 0 || embeddings->cols == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(embeddings_path, ": shape [", embeddings->rows, ", ",
                     embeddings->cols, "] holds no embeddings"));
  }
  candidates.dim = embeddings->cols;
  const size_t n = embeddings->rows;
  candidates.embeddings = std::move(embeddings->data);

  *failed_what = "--ids";
  absl::StatusOr<std::vector<int64_t>> ids =
      ReadColumn(ids_path, "ids", n, embeddings_path);
  if (!ids.ok()) return ids.status();
  candidates.ids = *std::move(ids);
  if (!labels_path.empty()) {
    *failed_what = "--labels";
    absl::StatusOr<std::vector<int64_t>> labels =
        ReadColumn(labels_path, "labels", n, embeddings_path);
    if (!labels.ok()) return labels.status();
    candidates.labels = *std::move(labels);
  }
  *failed_what = absl::StrCat(embeddings_path, " and ", ids_path);
  if (absl::Status status = CheckCandidates(candidates); !status.ok()) {
    return status;
  }
  failed_what->clear();
  return candidates;
}

Candidates FromFashionMnist(FashionMnistData data) {
  Candidates candidates;
  candidates.dim = data.dim;
  candidates.embeddings = std::move(data.images);
  candidates.ids.resize(data.rows);
  for (size_t i = 0; i < data.rows; ++i) {
    candidates.ids[i] = static_cast<int64_t>(i);
  }
  candidates.labels = std::move(data.labels);
  return candidates;
}

// Every flag of `hardneg make-checkpoint`.
struct MakeCheckpointFlags {
  std::string out, name, metric = "inner_product";
  std::string embeddings_path, ids_path, labels_path;
  std::string split = "train", dir = kFashionMnistDefaultDir;
  std::string export_queries, export_labels;
  uint64_t step = 0;
  uint64_t limit = 0;
  bool fashion_mnist = false;
  bool normalize = true;
  bool force = false;

  bool from_npy() const {
    return !embeddings_path.empty() || !ids_path.empty();
  }
  bool exporting() const {
    return !export_queries.empty() || !export_labels.empty();
  }
  // Exports alone write no checkpoint.
  bool writes_checkpoint() const {
    return from_npy() || !exporting() || !out.empty() || !name.empty();
  }
};

void AddMakeCheckpointFlags(FlagSet& flags, MakeCheckpointFlags* make) {
  flags.String("out", &make->out, "ROOT",
               "The checkpoints root directory (the server's --checkpoints).");
  flags.String("name", &make->name, "NAME",
               "The checkpoint's name: its directory under ROOT.");
  flags.Uint64("step", &make->step,
               "The training step; the server serves the highest.");
  flags.Bool("force", &make->force,
             "Replace an existing ROOT/NAME: the whole folder, in one atomic "
             "step, with nothing of the old one left. Without it an "
             "existing checkpoint is refused.");
  flags.String("metric", &make->metric, "inner_product|l2",
               "How the server scores candidates.");
  flags.String("embeddings", &make->embeddings_path, "E.npy",
               "Candidate embeddings, float32 or float16 [n, dim].");
  flags.String("ids", &make->ids_path, "I.npy",
               "Candidate ids, int64 [n], unique.");
  flags.String("labels", &make->labels_path, "L.npy",
               "Candidate labels, int64 [n] (optional).");
  flags.Bool("fashion_mnist", &make->fashion_mnist,
             "Use Fashion-MNIST as the candidates.");
  flags.String("split", &make->split, "train|test",
               "The Fashion-MNIST split of the candidates.");
  flags.String("dir", &make->dir, "DIR",
               "Where the Fashion-MNIST IDX files are.");
  flags.Bool("normalize", &make->normalize,
             "Scale Fashion-MNIST images (candidates and exports) to unit L2 "
             "norm.");
  flags.String("export_queries", &make->export_queries, "Q.npy",
               "Write Fashion-MNIST test images as queries, float32 [n, 784].");
  flags.String("export_labels", &make->export_labels, "L.npy",
               "Write their labels, int64 [n].");
  flags.Uint64("limit", &make->limit,
               "Export at most N test images; 0 exports all 10000.");
}

// The metric, once the flags are consistent; INVALID_ARGUMENT with the
// usage error's message otherwise.
absl::StatusOr<Metric> CheckMakeCheckpointFlags(
    const MakeCheckpointFlags& make) {
  const bool from_npy = make.from_npy();
  if (from_npy && make.fashion_mnist) {
    return absl::InvalidArgumentError(
        "give either --embeddings/--ids or --fashion_mnist, not both");
  }
  if (from_npy && (make.embeddings_path.empty() || make.ids_path.empty())) {
    return absl::InvalidArgumentError("--embeddings and --ids go together");
  }
  if (!make.labels_path.empty() && !from_npy) {
    return absl::InvalidArgumentError("--labels needs --embeddings and --ids");
  }
  if (make.exporting() && !make.fashion_mnist) {
    return absl::InvalidArgumentError(
        "--export_queries/--export_labels export Fashion-MNIST: add "
        "--fashion_mnist");
  }
  if (!from_npy && !make.fashion_mnist) {
    return absl::InvalidArgumentError(
        "no candidates: give --embeddings and --ids, or --fashion_mnist");
  }
  if (make.split != "train" && make.split != "test") {
    return absl::InvalidArgumentError(
        absl::StrCat("--split=", make.split, ": expected train or test"));
  }
  absl::StatusOr<Metric> metric = ParseMetric(make.metric);
  if (!metric.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metric: ", metric.status().message()));
  }
  if (make.writes_checkpoint() && make.out.empty()) {
    return absl::InvalidArgumentError("--out is required");
  }
  if (make.writes_checkpoint() && make.name.empty()) {
    return absl::InvalidArgumentError("--name is required");
  }
  return metric;
}

// The candidates the flags name; `*source` says where they came from and
// `*failed_what` what was wrong on an error.
absl::StatusOr<Candidates> ReadCandidates(const MakeCheckpointFlags& make,
                                          std::string* source,
                                          std::string* failed_what) {
  if (make.from_npy()) {
    *source = make.embeddings_path;
    return ReadNpyCandidates(make.embeddings_path, make.ids_path,
                             make.labels_path, failed_what);
  }
  *failed_what = "--fashion_mnist";
  *source = absl::StrCat("Fashion-MNIST ", make.split,
                         make.normalize ? " (L2-normalised)" : "");
  absl::StatusOr<FashionMnistData> data =
      ReadFashionMnist(make.dir,
                       make.split == "train" ? FashionMnistSplit::kTrain
                                             : FashionMnistSplit::kTest,
                       make.normalize);
  if (!data.ok()) return data.status();
  return FromFashionMnist(*std::move(data));
}

// Writes ROOT/NAME/ and says so on stdout.
int WriteCandidateCheckpoint(const MakeCheckpointFlags& make, Metric metric) {
  const std::string checkpoint_dir =
      (std::filesystem::path(make.out) / make.name).string();
  std::error_code error;
  const bool replacing = std::filesystem::exists(checkpoint_dir, error);
  if (replacing && !make.force) {  // before reading any candidates
    return RuntimeError(
        kCommand, checkpoint_dir,
        absl::AlreadyExistsError("a checkpoint of this name exists; --force "
                                 "replaces it (the whole folder)"));
  }
  std::string source, failed_what;
  absl::StatusOr<Candidates> candidates =
      ReadCandidates(make, &source, &failed_what);
  if (!candidates.ok()) {
    return RuntimeError(kCommand, failed_what, candidates.status());
  }
  CheckpointManifest manifest;
  manifest.name = make.name;
  manifest.step = make.step;
  manifest.dim = static_cast<uint32_t>(candidates->dim);
  manifest.metric = metric;
  StepProgress writing(absl::StrCat("writing ", checkpoint_dir));
  const absl::Status written = WriteCheckpoint(
      make.out, manifest, candidates->embeddings, candidates->ids,
      candidates->labels, make.force,
      [&writing](size_t bytes, size_t total) { writing.Update(bytes, total); });
  if (!written.ok()) {
    return RuntimeError(kCommand, absl::StrCat("writing ", checkpoint_dir),
                        written);
  }
  std::cout << "wrote checkpoint " << checkpoint_dir << ": "
            << candidates->ids.size() << " x " << candidates->dim << " from "
            << source << ", metric " << MetricName(metric) << ", step "
            << make.step << (candidates->labels.empty() ? "" : ", with labels")
            << (replacing ? " (replaced the previous one)" : "") << "\n";
  return kExitOk;
}

// Writes the first --limit Fashion-MNIST test images and their labels as
// --export_queries and --export_labels, and says so on stdout.
int ExportTestQueries(const MakeCheckpointFlags& make) {
  absl::StatusOr<FashionMnistData> queries =
      ReadFashionMnist(make.dir, FashionMnistSplit::kTest, make.normalize,
                       static_cast<size_t>(make.limit));
  if (!queries.ok()) {
    return RuntimeError(kCommand, "--export_queries", queries.status());
  }
  if (!make.export_queries.empty()) {
    const absl::Status written =
        WriteNpyMatrix(make.export_queries, queries->images.data(),
                       queries->rows, queries->dim);
    if (!written.ok()) {
      return RuntimeError(kCommand, "--export_queries", written);
    }
    std::cout << "wrote " << make.export_queries << ": " << queries->rows
              << " x " << queries->dim << " Fashion-MNIST test queries\n";
  }
  if (!make.export_labels.empty()) {
    const absl::Status written =
        WriteNpyInt64(make.export_labels, queries->labels);
    if (!written.ok()) {
      return RuntimeError(kCommand, "--export_labels", written);
    }
    std::cout << "wrote " << make.export_labels << ": " << queries->rows
              << " Fashion-MNIST test labels\n";
  }
  return kExitOk;
}

}  // namespace

int RunMakeCheckpointCommand(const std::vector<std::string>& args) {
  MakeCheckpointFlags make;
  FlagSet flags(
      kCommand,
      "--out ROOT --name NAME --step S [--metric inner_product|l2]\n"
      "         (--embeddings E.npy --ids I.npy [--labels L.npy] |\n"
      "          --fashion_mnist [--split train|test] [--dir DIR] "
      "[--normalize=true])\n"
      "         [--export_queries Q.npy] [--export_labels L.npy] [--limit N]",
      "Writes a checkpoint ROOT/NAME/ (embeddings-00000.npy, ids-00000.npy, "
      "labels-00000.npy, manifest.json last) for a server watching ROOT. "
      "The candidates come from .npy files, or from Fashion-MNIST (ids = "
      "image index, labels = class 0..9, pixels/255, L2-normalised unless "
      "--normalize=false).\n\n"
      "--export_queries / --export_labels write the Fashion-MNIST *test* "
      "split (its first --limit images) as float32 [n, 784] queries and "
      "int64 [n] labels for `hardneg mine`; with only these flags no "
      "checkpoint is written.");
  AddMakeCheckpointFlags(flags, &make);
  if (absl::Status status = flags.Parse(args); !status.ok()) {
    return flags.UsageError(status);
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return kExitOk;
  }
  absl::StatusOr<Metric> metric = CheckMakeCheckpointFlags(make);
  if (!metric.ok()) return flags.UsageError(metric.status());
  if (make.writes_checkpoint()) {
    if (int exit_code = WriteCandidateCheckpoint(make, *metric);
        exit_code != kExitOk) {
      return exit_code;
    }
  }
  return make.exporting() ? ExportTestQueries(make) : kExitOk;
}

}  // namespace hardneg::client

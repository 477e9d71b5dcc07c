// `hardneg make-checkpoint`: writes a one-shard checkpoint directory (the
// layout in src/checkpoint.h) from .npy files or from Fashion-MNIST, and
// exports Fashion-MNIST test images as query files for `hardneg mine`.
#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/cli_commands.h"
#include "client/cli_flags.h"
#include "client/fashion_mnist.h"
#include "corpus/metric.h"
#include "format/checkpoint.h"
#include "format/npy.h"

namespace hardneg::client {
namespace {

constexpr char kCommand[] = "make-checkpoint";

// The candidates of a checkpoint to write.
struct Candidates {
  size_t dim = 0;
  std::vector<float> embeddings;  // ids.size() x dim
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;  // empty or one per id
};

// Duplicate ids would make the server reject the checkpoint; say so now.
absl::Status CheckUniqueIds(const std::vector<int64_t>& ids,
                            const std::string& path) {
  absl::flat_hash_map<int64_t, size_t> row_of;
  row_of.reserve(ids.size());
  for (size_t row = 0; row < ids.size(); ++row) {
    const auto [it, inserted] = row_of.emplace(ids[row], row);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": duplicate id ",
                                                     ids[row], " at rows ",
                                                     it->second, " and ", row));
    }
  }
  return absl::OkStatus();
}

// So would a NaN or an infinity.
absl::Status CheckFinite(const std::vector<float>& embeddings, size_t dim,
                         const std::string& path) {
  for (size_t i = 0; i < embeddings.size(); ++i) {
    if (!std::isfinite(embeddings[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": non-finite value ", embeddings[i], " at row ",
                       i / dim, ", column ", i % dim));
    }
  }
  return absl::OkStatus();
}

// Reads --embeddings, --ids and --labels; `failed_flag` names the flag
// whose file was wrong.
absl::StatusOr<Candidates> ReadNpyCandidates(const std::string& embeddings_path,
                                             const std::string& ids_path,
                                             const std::string& labels_path,
                                             std::string* failed_flag) {
  Candidates candidates;
  *failed_flag = "--embeddings";
  absl::StatusOr<NpyMatrix> embeddings = ReadNpyMatrix(embeddings_path);
  if (!embeddings.ok()) return embeddings.status();
  if (embeddings->rows == 0 || embeddings->cols == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(embeddings_path, ": shape [", embeddings->rows, ", ",
                     embeddings->cols, "] holds no embeddings"));
  }
  candidates.dim = embeddings->cols;
  const size_t n = embeddings->rows;
  candidates.embeddings = std::move(embeddings->data);
  if (absl::Status status =
          CheckFinite(candidates.embeddings, candidates.dim, embeddings_path);
      !status.ok()) {
    return status;
  }

  *failed_flag = "--ids";
  absl::StatusOr<std::vector<int64_t>> ids = ReadNpyInt64(ids_path);
  if (!ids.ok()) return ids.status();
  if (ids->size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat(ids_path, " holds ", ids->size(), " ids but ",
                     embeddings_path, " holds ", n, " embeddings"));
  }
  candidates.ids = *std::move(ids);
  if (absl::Status status = CheckUniqueIds(candidates.ids, ids_path);
      !status.ok()) {
    return status;
  }

  if (!labels_path.empty()) {
    *failed_flag = "--labels";
    absl::StatusOr<std::vector<int64_t>> labels = ReadNpyInt64(labels_path);
    if (!labels.ok()) return labels.status();
    if (labels->size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat(labels_path, " holds ", labels->size(), " labels but ",
                       embeddings_path, " holds ", n, " embeddings"));
    }
    candidates.labels = *std::move(labels);
  }
  failed_flag->clear();
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

}  // namespace

int RunMakeCheckpointCommand(const std::vector<std::string>& args) {
  std::string out, name, metric_name = "inner_product";
  std::string embeddings_path, ids_path, labels_path;
  std::string split = "train", dir = kFashionMnistDefaultDir;
  std::string export_queries, export_labels;
  uint64_t step = 0;
  uint64_t limit = 0;
  bool fashion_mnist = false;
  bool normalize = true;
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
  flags.String("out", &out, "ROOT",
               "The checkpoints root directory (the server's --checkpoints).");
  flags.String("name", &name, "NAME",
               "The checkpoint's name: its directory under ROOT.");
  flags.Uint64("step", &step,
               "The training step; the server serves the highest.");
  flags.String("metric", &metric_name, "inner_product|l2",
               "How the server scores candidates.");
  flags.String("embeddings", &embeddings_path, "E.npy",
               "Candidate embeddings, float32 or float16 [n, dim].");
  flags.String("ids", &ids_path, "I.npy", "Candidate ids, int64 [n], unique.");
  flags.String("labels", &labels_path, "L.npy",
               "Candidate labels, int64 [n] (optional).");
  flags.Bool("fashion_mnist", &fashion_mnist,
             "Use Fashion-MNIST as the candidates.");
  flags.String("split", &split, "train|test",
               "The Fashion-MNIST split of the candidates.");
  flags.String("dir", &dir, "DIR", "Where the Fashion-MNIST IDX files are.");
  flags.Bool("normalize", &normalize,
             "Scale Fashion-MNIST images (candidates and exports) to unit L2 "
             "norm.");
  flags.String("export_queries", &export_queries, "Q.npy",
               "Write Fashion-MNIST test images as queries, float32 [n, 784].");
  flags.String("export_labels", &export_labels, "L.npy",
               "Write their labels, int64 [n].");
  flags.Uint64("limit", &limit,
               "Export at most N test images; 0 exports all 10000.");

  if (absl::Status status = flags.Parse(args); !status.ok()) {
    return flags.UsageError(status);
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return kExitOk;
  }
  const bool from_npy = !embeddings_path.empty() || !ids_path.empty();
  const bool exporting = !export_queries.empty() || !export_labels.empty();
  if (from_npy && fashion_mnist) {
    return flags.UsageError(
        "give either --embeddings/--ids or --fashion_mnist, not both");
  }
  if (from_npy && (embeddings_path.empty() || ids_path.empty())) {
    return flags.UsageError("--embeddings and --ids go together");
  }
  if (!labels_path.empty() && !from_npy) {
    return flags.UsageError("--labels needs --embeddings and --ids");
  }
  if (exporting && !fashion_mnist) {
    return flags.UsageError(
        "--export_queries/--export_labels export Fashion-MNIST: add "
        "--fashion_mnist");
  }
  if (!from_npy && !fashion_mnist) {
    return flags.UsageError(
        "no candidates: give --embeddings and --ids, or --fashion_mnist");
  }
  if (split != "train" && split != "test") {
    return flags.UsageError(
        absl::StrCat("--split=", split, ": expected train or test"));
  }
  absl::StatusOr<Metric> metric = ParseMetric(metric_name);
  if (!metric.ok()) {
    return flags.UsageError(
        absl::StrCat("--metric: ", metric.status().message()));
  }
  const bool write_checkpoint =
      from_npy || !exporting || !out.empty() || !name.empty();
  if (write_checkpoint && out.empty()) {
    return flags.UsageError("--out is required");
  }
  if (write_checkpoint && name.empty()) {
    return flags.UsageError("--name is required");
  }

  if (write_checkpoint) {
    absl::StatusOr<Candidates> candidates;
    std::string source;
    if (from_npy) {
      std::string failed_flag;
      candidates = ReadNpyCandidates(embeddings_path, ids_path, labels_path,
                                     &failed_flag);
      if (!candidates.ok()) {
        return RuntimeError(kCommand, failed_flag, candidates.status());
      }
      source = embeddings_path;
    } else {
      const FashionMnistSplit which = split == "train"
                                          ? FashionMnistSplit::kTrain
                                          : FashionMnistSplit::kTest;
      absl::StatusOr<FashionMnistData> data =
          ReadFashionMnist(dir, which, normalize);
      if (!data.ok()) {
        return RuntimeError(kCommand, "--fashion_mnist", data.status());
      }
      candidates = FromFashionMnist(*std::move(data));
      source = absl::StrCat("Fashion-MNIST ", split,
                            normalize ? " (L2-normalised)" : "");
    }
    CheckpointManifest manifest;
    manifest.name = name;
    manifest.step = step;
    manifest.dim = static_cast<uint32_t>(candidates->dim);
    manifest.metric = *metric;
    const std::string checkpoint_dir =
        (std::filesystem::path(out) / name).string();
    std::error_code error;
    const bool replacing = std::filesystem::exists(
        std::filesystem::path(checkpoint_dir) / "manifest.json", error);
    const absl::Status written =
        WriteCheckpoint(out, manifest, candidates->embeddings, candidates->ids,
                        candidates->labels);
    if (!written.ok()) {
      return RuntimeError(kCommand, absl::StrCat("writing ", checkpoint_dir),
                          written);
    }
    std::cout << "wrote checkpoint " << checkpoint_dir << ": "
              << candidates->ids.size() << " x " << candidates->dim << " from "
              << source << ", metric " << MetricName(*metric) << ", step "
              << step << (candidates->labels.empty() ? "" : ", with labels")
              << (replacing ? " (replaced the previous one)" : "") << "\n";
  }

  if (exporting) {
    absl::StatusOr<FashionMnistData> queries = ReadFashionMnist(
        dir, FashionMnistSplit::kTest, normalize, static_cast<size_t>(limit));
    if (!queries.ok()) {
      return RuntimeError(kCommand, "--export_queries", queries.status());
    }
    if (!export_queries.empty()) {
      const absl::Status written = WriteNpyMatrix(
          export_queries, queries->images.data(), queries->rows, queries->dim);
      if (!written.ok()) {
        return RuntimeError(kCommand, "--export_queries", written);
      }
      std::cout << "wrote " << export_queries << ": " << queries->rows << " x "
                << queries->dim << " Fashion-MNIST test queries\n";
    }
    if (!export_labels.empty()) {
      const absl::Status written =
          WriteNpyInt64(export_labels, queries->labels);
      if (!written.ok()) {
        return RuntimeError(kCommand, "--export_labels", written);
      }
      std::cout << "wrote " << export_labels << ": " << queries->rows
                << " Fashion-MNIST test labels\n";
    }
  }
  return kExitOk;
}

}  // namespace hardneg::client

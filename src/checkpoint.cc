#include "checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <system_error>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "npy.h"
#include "status_macros.h"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kManifestFile[] = "manifest.json";

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return absl::StrCat(dir, "/", name);
}

// Keeps the code of `status` and puts `prefix` before its message.
absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

// A JSON value as it appears in the file, shortened for messages.
std::string Show(const json& value) {
  constexpr size_t kMaxShown = 80;
  std::string text = value.dump();
  if (text.size() > kMaxShown) text = text.substr(0, kMaxShown) + "...";
  return text;
}

absl::Status FieldError(absl::string_view field, absl::string_view expected,
                        const json& found) {
  return absl::InvalidArgumentError(
      absl::StrCat("field \"", field, "\" must be ", expected, ", found ",
                   found.type_name(), " ", Show(found)));
}

absl::Status MissingField(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("missing field \"", field, "\" (", what, ")"));
}

absl::StatusOr<uint64_t> UnsignedField(const json& object, const char* field,
                                       absl::string_view what) {
  auto it = object.find(field);
  if (it == object.end()) return MissingField(field, what);
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"", field, "\" must be non-negative, found ", Show(*it)));
  }
  return FieldError(field, "a non-negative integer", *it);
}

// Shard file names must stay inside the checkpoint directory: a manifest
// is data from another job and must not make the server read arbitrary
// files.
absl::Status CheckRelativePath(absl::string_view field,
                               const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", field, "\" must name a file, found \"\""));
  }
  if (path.front() == '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"", field, "\" must be a path relative to the ",
        "checkpoint directory, found absolute path \"", path, "\""));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("field \"", field, "\" must stay inside the ",
                       "checkpoint directory, found \"..\" in \"", path, "\""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> PathField(const json& object, const char* field,
                                      const std::string& full_name) {
  auto it = object.find(field);
  if (it == object.end()) return MissingField(full_name, "a file name");
  if (!it->is_string()) return FieldError(full_name, "a string", *it);
  std::string path = it->get<std::string>();
  HARDNEG_RETURN_IF_ERROR(CheckRelativePath(full_name, path));
  return path;
}

// Parses the manifest text; errors carry the reason only, the caller adds
// where it comes from.
absl::StatusOr<CheckpointManifest> ParseManifest(const std::string& text) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number too large for a double.
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected a JSON object, found ", root.type_name(), " ", Show(root)));
  }
  CheckpointManifest manifest;

  auto name = root.find("name");
  if (name == root.end()) return MissingField("name", "a string");
  if (!name->is_string()) return FieldError("name", "a string", *name);
  manifest.name = name->get<std::string>();
  if (manifest.name.empty()) {
    return absl::InvalidArgumentError("field \"name\" must not be empty");
  }

  HARDNEG_ASSIGN_OR_RETURN(manifest.step,
                           UnsignedField(root, "step", "the training step"));

  HARDNEG_ASSIGN_OR_RETURN(
      uint64_t dim, UnsignedField(root, "dim", "the embedding dimension"));
  if (dim == 0) {
    return absl::InvalidArgumentError(
        "field \"dim\" must be positive, found 0");
  }
  if (dim > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"dim\" is too large: ", dim));
  }
  manifest.dim = static_cast<uint32_t>(dim);

  // null is what Python's json writes for None: treat it as "not given".
  auto metric = root.find("metric");
  if (metric != root.end() && !metric->is_null()) {
    if (!metric->is_string()) {
      return FieldError("metric", "\"inner_product\" or \"l2\"", *metric);
    }
    absl::StatusOr<Metric> parsed = ParseMetric(metric->get<std::string>());
    if (!parsed.ok()) return Annotate(parsed.status(), "field \"metric\": ");
    manifest.metric = *parsed;
  }

  auto shards = root.find("shards");
  if (shards == root.end()) return MissingField("shards", "a list of shards");
  if (!shards->is_array()) {
    return FieldError("shards", "a list of shards", *shards);
  }
  if (shards->empty()) {
    return absl::InvalidArgumentError(
        "field \"shards\" must list at least one shard, found []");
  }
  for (size_t i = 0; i < shards->size(); ++i) {
    const json& entry = (*shards)[i];
    const std::string prefix = absl::StrCat("shards[", i, "]");
    if (!entry.is_object()) {
      return FieldError(prefix, "an object {\"embeddings\": ..., \"ids\": ...}",
                        entry);
    }
    CheckpointShard shard;
    HARDNEG_ASSIGN_OR_RETURN(
        shard.embeddings,
        PathField(entry, "embeddings", absl::StrCat(prefix, ".embeddings")));
    HARDNEG_ASSIGN_OR_RETURN(
        shard.ids, PathField(entry, "ids", absl::StrCat(prefix, ".ids")));
    auto labels = entry.find("labels");
    if (labels != entry.end() && !labels->is_null()) {
      HARDNEG_ASSIGN_OR_RETURN(
          shard.labels,
          PathField(entry, "labels", absl::StrCat(prefix, ".labels")));
    }
    manifest.shards.push_back(std::move(shard));
  }
  return manifest;
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  }
  std::string text;
  char buffer[1 << 16];
  while (true) {
    ssize_t got = read(fd, buffer, sizeof(buffer));
    if (got < 0) {
      if (errno == EINTR) continue;
      absl::Status status =
          absl::ErrnoToStatus(errno, absl::StrCat(path, ": read failed"));
      close(fd);
      return status;
    }
    if (got == 0) break;
    text.append(buffer, static_cast<size_t>(got));
  }
  close(fd);
  return text;
}

// Like ReadManifest, but on a parse error the message holds only the reason.
absl::StatusOr<CheckpointManifest> ReadManifestReason(const std::string& dir) {
  const std::string path = JoinPath(dir, kManifestFile);
  HARDNEG_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  return ParseManifest(text);
}

// The first non-finite value of a shard, named by file, row and column so the
// encoder job's owner can find the bad item.
absl::Status CheckFinite(const NpyMatrix& matrix, const std::string& file,
                         const std::vector<int64_t>& ids) {
  for (size_t i = 0; i < matrix.data.size(); ++i) {
    if (!std::isfinite(matrix.data[i])) {
      const size_t row = i / matrix.cols;
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": non-finite value ", matrix.data[i], " at row ",
                       row, " (id ", ids[row], "), column ", i % matrix.cols));
    }
  }
  return absl::OkStatus();
}

// Where a row came from, for messages about the concatenated store.
struct ShardRows {
  std::string ids_file;
  size_t first_row;
  size_t rows;
};

// Explains why CandidateStore::Create rejected the concatenated ids, in the
// checkpoint's own terms (files and rows within them).
absl::Status ExplainDuplicate(const std::vector<int64_t>& ids,
                              const std::vector<ShardRows>& shards) {
  auto locate = [&](size_t row) {
    for (const ShardRows& shard : shards) {
      if (row < shard.first_row + shard.rows) {
        return absl::StrCat(shard.ids_file, " row ", row - shard.first_row);
      }
    }
    return absl::StrCat("row ", row);
  };
  absl::flat_hash_map<int64_t, size_t> first_row;
  first_row.reserve(ids.size());
  for (size_t row = 0; row < ids.size(); ++row) {
    auto [it, inserted] = first_row.emplace(ids[row], row);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("duplicate id ", ids[row], ": ", locate(it->second),
                       " and ", locate(row), "; ids must be unique"));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteTextFileAtomically(const std::string& path,
                                     const std::string& text) {
  std::string tmp = path + ".tmp-XXXXXX";
  int fd = mkstemp(tmp.data());
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat(path, ": cannot create a temporary file"));
  }
  absl::Status status = [&]() -> absl::Status {
    if (fchmod(fd, 0644) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": chmod failed"));
    }
    size_t done = 0;
    while (done < text.size()) {
      ssize_t put = write(fd, text.data() + done, text.size() - done);
      if (put < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": write failed"));
      }
      done += static_cast<size_t>(put);
    }
    if (fsync(fd) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": fsync failed"));
    }
    return absl::OkStatus();
  }();
  if (close(fd) != 0 && status.ok()) {
    status = absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": close failed"));
  }
  if (status.ok() && rename(tmp.c_str(), path.c_str()) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat(path, ": rename failed"));
  }
  if (!status.ok()) unlink(tmp.c_str());
  return status;
}

}  // namespace

absl::StatusOr<CheckpointManifest> ReadManifest(const std::string& dir) {
  absl::StatusOr<CheckpointManifest> manifest = ReadManifestReason(dir);
  // I/O errors already name the file; parse errors do not.
  if (!manifest.ok() &&
      manifest.status().code() == absl::StatusCode::kInvalidArgument) {
    return Annotate(manifest.status(),
                    absl::StrCat(JoinPath(dir, kManifestFile), ": "));
  }
  return manifest;
}

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& dir) {
  HARDNEG_ASSIGN_OR_RETURN(CheckpointManifest manifest, ReadManifest(dir));
  const std::string manifest_path = JoinPath(dir, kManifestFile);
  const bool has_labels = !manifest.shards[0].labels.empty();
  for (size_t i = 1; i < manifest.shards.size(); ++i) {
    if (manifest.shards[i].labels.empty() == has_labels) {
      const size_t with = has_labels ? 0 : i;
      const size_t without = has_labels ? i : 0;
      return absl::InvalidArgumentError(absl::StrCat(
          manifest_path, ": shard ", with, " has labels but shard ", without,
          " has none; give labels for every shard or for none"));
    }
  }

  const size_t dim = manifest.dim;
  std::vector<float> vectors;
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;
  std::vector<ShardRows> rows_of_shard;
  for (size_t i = 0; i < manifest.shards.size(); ++i) {
    const CheckpointShard& shard = manifest.shards[i];
    const std::string embeddings_path = JoinPath(dir, shard.embeddings);
    const std::string ids_path = JoinPath(dir, shard.ids);
    HARDNEG_ASSIGN_OR_RETURN(NpyMatrix matrix, ReadNpyMatrix(embeddings_path));
    if (matrix.cols != dim) {
      return absl::InvalidArgumentError(
          absl::StrCat(embeddings_path, ": embeddings have dimension ",
                       matrix.cols, " but ", manifest_path, " says dim ", dim));
    }
    HARDNEG_ASSIGN_OR_RETURN(std::vector<int64_t> shard_ids,
                             ReadNpyInt64(ids_path));
    if (shard_ids.size() != matrix.rows) {
      return absl::InvalidArgumentError(absl::StrCat(
          ids_path, ": has ", shard_ids.size(), " ids but ", embeddings_path,
          " has ", matrix.rows, " rows (shard ", i, ")"));
    }
    HARDNEG_RETURN_IF_ERROR(CheckFinite(matrix, embeddings_path, shard_ids));
    if (has_labels) {
      const std::string labels_path = JoinPath(dir, shard.labels);
      HARDNEG_ASSIGN_OR_RETURN(std::vector<int64_t> shard_labels,
                               ReadNpyInt64(labels_path));
      if (shard_labels.size() != matrix.rows) {
        return absl::InvalidArgumentError(absl::StrCat(
            labels_path, ": has ", shard_labels.size(), " labels but ",
            embeddings_path, " has ", matrix.rows, " rows (shard ", i, ")"));
      }
      labels.insert(labels.end(), shard_labels.begin(), shard_labels.end());
    }
    rows_of_shard.push_back({ids_path, ids.size(), matrix.rows});
    // The common one-shard checkpoint, possibly gigabytes, moves in
    // without a copy.
    if (vectors.empty()) {
      vectors = std::move(matrix.data);
    } else {
      vectors.insert(vectors.end(), matrix.data.begin(), matrix.data.end());
    }
    ids.insert(ids.end(), shard_ids.begin(), shard_ids.end());
  }
  if (ids.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", dir, " has no rows: every shard is empty"));
  }

  // Create consumes the ids; keep a copy (8 bytes a row, small next to the
  // vectors) to explain a duplicate in terms of files and rows.
  std::vector<int64_t> ids_copy = ids;
  absl::StatusOr<CandidateStore> store = CandidateStore::Create(
      dim, std::move(ids), std::move(vectors),
      has_labels ? std::optional<std::vector<int64_t>>(std::move(labels))
                 : std::nullopt);
  if (!store.ok()) {
    absl::Status duplicate = ExplainDuplicate(ids_copy, rows_of_shard);
    const std::string prefix = absl::StrCat("checkpoint ", dir, ": ");
    if (!duplicate.ok()) return Annotate(duplicate, prefix);
    return Annotate(store.status(), prefix);
  }
  return Checkpoint{std::move(manifest), dir, *std::move(store)};
}

absl::StatusOr<std::vector<CheckpointEntry>> ListCheckpoints(
    const std::string& root, std::vector<std::string>* rejected) {
  std::error_code error;
  const fs::file_status root_status = fs::status(root, error);
  if (!fs::exists(root_status)) {
    return absl::NotFoundError(
        absl::StrCat(root, ": checkpoint root directory does not exist"));
  }
  if (!fs::is_directory(root_status)) {
    return absl::FailedPreconditionError(
        absl::StrCat(root, ": checkpoint root is not a directory"));
  }
  fs::directory_iterator it(root, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(),
                               absl::StrCat(root, ": cannot list"));
  }
  std::vector<CheckpointEntry> entries;
  for (; it != fs::directory_iterator(); it.increment(error)) {
    const std::string base = it->path().filename().string();
    // Hidden entries are where writers stage a directory before renaming
    // it into place; they are not checkpoints yet.
    if (base.empty() || base[0] == '.') continue;
    std::error_code type_error;
    if (!it->is_directory(type_error)) continue;
    const std::string dir = it->path().string();
    absl::StatusOr<CheckpointManifest> manifest = ReadManifestReason(dir);
    if (absl::IsNotFound(manifest.status())) continue;  // still being written
    if (!manifest.ok()) {
      if (rejected != nullptr) {
        // Parse errors carry only the reason; I/O errors name the file.
        rejected->push_back(
            absl::IsInvalidArgument(manifest.status())
                ? absl::StrCat(dir, ": ", kManifestFile, ": ",
                               manifest.status().message())
                : absl::StrCat(dir, ": ", manifest.status().message()));
      }
      continue;
    }
    entries.push_back({dir, manifest->name, manifest->step});
  }
  if (error) {
    return absl::ErrnoToStatus(error.value(),
                               absl::StrCat(root, ": cannot list"));
  }
  std::sort(entries.begin(), entries.end(),
            [](const CheckpointEntry& a, const CheckpointEntry& b) {
              if (a.step != b.step) return a.step > b.step;
              if (a.name != b.name) return a.name > b.name;
              return a.dir > b.dir;
            });
  return entries;
}

absl::Status WriteCheckpoint(const std::string& root,
                             const CheckpointManifest& manifest,
                             const std::vector<float>& embeddings,
                             const std::vector<int64_t>& ids,
                             const std::vector<int64_t>& labels) {
  if (manifest.name.empty() || manifest.name == "." || manifest.name == ".." ||
      absl::StrContains(manifest.name, '/')) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint name \"", manifest.name,
                     "\" must be a non-empty directory name without '/'"));
  }
  if (manifest.dim == 0) {
    return absl::InvalidArgumentError("checkpoint dim must be positive");
  }
  if (embeddings.size() != ids.size() * manifest.dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", ids.size(), " x ", manifest.dim, " = ",
                     ids.size() * manifest.dim, " embedding floats, got ",
                     embeddings.size()));
  }
  if (!labels.empty() && labels.size() != ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", ids.size(), " labels (or none), got ", labels.size()));
  }
  const std::string dir = JoinPath(root, manifest.name);
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(),
                               absl::StrCat(dir, ": cannot create"));
  }
  // Rewriting a checkpoint in place: withdraw the old manifest first, so no
  // reader pairs it with half-replaced shard files.
  const std::string manifest_path = JoinPath(dir, kManifestFile);
  if (unlink(manifest_path.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat(manifest_path, ": cannot remove the old manifest"));
  }

  CheckpointShard shard{"embeddings-00000.npy", "ids-00000.npy",
                        labels.empty() ? "" : "labels-00000.npy"};
  HARDNEG_RETURN_IF_ERROR(WriteNpyMatrix(JoinPath(dir, shard.embeddings),
                                         embeddings.data(), ids.size(),
                                         manifest.dim));
  HARDNEG_RETURN_IF_ERROR(WriteNpyInt64(JoinPath(dir, shard.ids), ids));
  if (!labels.empty()) {
    HARDNEG_RETURN_IF_ERROR(WriteNpyInt64(JoinPath(dir, shard.labels), labels));
  }

  json shard_json = {{"embeddings", shard.embeddings}, {"ids", shard.ids}};
  if (!shard.labels.empty()) shard_json["labels"] = shard.labels;
  json root_json = {{"name", manifest.name},
                    {"step", manifest.step},
                    {"dim", manifest.dim},
                    {"shards", json::array({shard_json})}};
  if (manifest.metric.has_value()) {
    root_json["metric"] = MetricName(*manifest.metric);
  }
  return WriteTextFileAtomically(manifest_path, root_json.dump(2) + "\n");
}

}  // namespace hardneg

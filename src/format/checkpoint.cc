#include "format/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
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
#include "base/status_macros.h"
#include "format/file_util.h"
#include "format/npy.h"
#include "format/version_name.h"
#include "nlohmann/json.hpp"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kManifestFile[] = "manifest.json";
// A manifest lists file names: even ten thousand shards take under 2 MB.
// Anything larger is not a manifest, and would cost every poll a parse.
constexpr size_t kMaxManifestBytes = size_t{4} << 20;
constexpr size_t kMaxShards = 10000;
// A manifest is three levels deep; nlohmann's dump() recurses per level,
// so a hostile file of nested arrays must never reach it.
constexpr int kMaxJsonDepth = 16;

// INVALID_ARGUMENT when `text` nests arrays or objects deeper than
// `max_depth`. A lexical scan (strings and escapes skipped), so that it
// runs before any recursive code sees the document.
absl::Status CheckJsonDepth(absl::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return absl::InvalidArgumentError(absl::StrCat(
            "nested deeper than ", max_depth, " levels at byte ", i));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return absl::OkStatus();
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

// The manifest text as a JSON object, checked for depth before parsing.
absl::StatusOr<json> ParseJsonObject(const std::string& text) {
  HARDNEG_RETURN_IF_ERROR(CheckJsonDepth(text, kMaxJsonDepth));
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
  return root;
}

absl::StatusOr<std::string> NameField(const json& root) {
  auto name = root.find("name");
  if (name == root.end()) return MissingField("name", "a string");
  if (!name->is_string()) return FieldError("name", "a string", *name);
  std::string value = name->get<std::string>();
  if (value.empty()) {
    return absl::InvalidArgumentError("field \"name\" must not be empty");
  }
  HARDNEG_RETURN_IF_ERROR(CheckVersionName(value, "field \"name\""));
  return value;
}

absl::StatusOr<uint32_t> DimField(const json& root) {
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
  return static_cast<uint32_t>(dim);
}

// The optional "metric"; null is what Python's json writes for None, so it
// counts as not given.
absl::StatusOr<std::optional<Metric>> MetricField(const json& root) {
  auto metric = root.find("metric");
  if (metric == root.end() || metric->is_null()) return std::nullopt;
  if (!metric->is_string()) {
    return FieldError("metric", "\"inner_product\" or \"l2\"", *metric);
  }
  absl::StatusOr<Metric> parsed = ParseMetric(metric->get<std::string>());
  if (!parsed.ok()) return Annotate(parsed.status(), "field \"metric\": ");
  return std::optional<Metric>(*parsed);
}

// The shard at `index` of "shards".
absl::StatusOr<CheckpointShard> ShardField(const json& entry, size_t index) {
  const std::string prefix = absl::StrCat("shards[", index, "]");
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
  return shard;
}

absl::StatusOr<std::vector<CheckpointShard>> ShardsField(const json& root) {
  auto shards = root.find("shards");
  if (shards == root.end()) return MissingField("shards", "a list of shards");
  if (!shards->is_array()) {
    return FieldError("shards", "a list of shards", *shards);
  }
  if (shards->empty()) {
    return absl::InvalidArgumentError(
        "field \"shards\" must list at least one shard, found []");
  }
  if (shards->size() > kMaxShards) {
    return absl::InvalidArgumentError(absl::StrCat(
        "field \"shards\" lists ", shards->size(), " shards; the limit is ",
        kMaxShards, " (write fewer, larger shards)"));
  }
  std::vector<CheckpointShard> parsed;
  for (size_t i = 0; i < shards->size(); ++i) {
    HARDNEG_ASSIGN_OR_RETURN(CheckpointShard shard,
                             ShardField((*shards)[i], i));
    parsed.push_back(std::move(shard));
  }
  return parsed;
}

// Parses the manifest text; errors carry the reason only, the caller adds
// where it comes from.
absl::StatusOr<CheckpointManifest> ParseManifest(const std::string& text) {
  HARDNEG_ASSIGN_OR_RETURN(const json root, ParseJsonObject(text));
  CheckpointManifest manifest;
  HARDNEG_ASSIGN_OR_RETURN(manifest.name, NameField(root));
  HARDNEG_ASSIGN_OR_RETURN(manifest.step,
                           UnsignedField(root, "step", "the training step"));
  HARDNEG_ASSIGN_OR_RETURN(manifest.dim, DimField(root));
  HARDNEG_ASSIGN_OR_RETURN(manifest.metric, MetricField(root));
  HARDNEG_ASSIGN_OR_RETURN(manifest.shards, ShardsField(root));
  return manifest;
}

// INVALID_ARGUMENT when `path` resolves (through symlinks) outside `root`.
// A path that does not resolve (missing) is left to its reader to report.
absl::Status CheckInside(const std::string& path, const std::string& root) {
  char resolved_root[PATH_MAX];
  char resolved[PATH_MAX];
  if (realpath(root.c_str(), resolved_root) == nullptr ||
      realpath(path.c_str(), resolved) == nullptr) {
    return absl::OkStatus();
  }
  const absl::string_view inside(resolved);
  const absl::string_view prefix(resolved_root);
  if (inside == prefix || (absl::StartsWith(inside, prefix) &&
                           (prefix == "/" || inside[prefix.size()] == '/'))) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, " is a symbolic link that leads outside ", root,
                   "; checkpoints may only read their own files"));
}

// One manifest read: an error that names the file when it could not be
// read (NOT_FOUND when absent), otherwise the parse's outcome, whose errors
// hold only the reason.
struct ManifestRead {
  bool read_failed = false;
  absl::StatusOr<CheckpointManifest> manifest;
};

ManifestRead ReadManifestFile(const std::string& dir) {
  const std::string path = JoinPath(dir, kManifestFile);
  const absl::Status inside = CheckInside(path, dir);
  if (!inside.ok()) return {true, inside};
  absl::StatusOr<std::string> text = ReadSmallTextFile(path, kMaxManifestBytes);
  if (!text.ok()) return {true, text.status()};
  return {false, ParseManifest(*text)};
}

// The first non-finite value of `rows` x `cols` floats of a shard, named by
// file, row and column so the encoder job's owner can find the bad item.
absl::Status CheckFinite(const float* data, size_t rows, size_t cols,
                         const std::string& file,
                         const std::vector<int64_t>& ids) {
  for (size_t i = 0; i < rows * cols; ++i) {
    if (!std::isfinite(data[i])) {
      const size_t row = i / cols;
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": non-finite value ", data[i], " at row ", row,
                       " (id ", ids[row], "), column ", i % cols));
    }
  }
  return absl::OkStatus();
}

// Where a read puts the embedding rows: a heap vector, or (with a path) a
// float32 .npy file that the store then maps, so that no heap copy of the
// rows is ever made (but of one float16 or Fortran-order file at a time,
// or of one file of several for a shard).
class RowSink {
 public:
  explicit RowSink(std::string path) : path_(std::move(path)) {}

  // Before the first row: the total `rows` x `dim` the store will hold.
  // `reserve`: the heap vector will be appended to more than once.
  absl::Status Begin(size_t rows, size_t dim, bool reserve) {
    dim_ = dim;
    if (path_.empty()) {
      if (reserve) vectors_.reserve(rows * dim);
      return absl::OkStatus();
    }
    HARDNEG_ASSIGN_OR_RETURN(NpyMatrixWriter writer,
                             NpyMatrixWriter::Create(path_, rows, dim));
    writer_.emplace(std::move(writer));
    return absl::OkStatus();
  }

  // Appends the rows of the embeddings file at `path` when they are dim()
  // wide; returns its shape.
  absl::StatusOr<NpyShape2D> AppendFile(const std::string& path,
                                        const NpyReadObserver& observer) {
    if (writer_.has_value()) return writer_->AppendFile(path, observer);
    HARDNEG_ASSIGN_OR_RETURN(NpyMatrix matrix, ReadNpyMatrix(path, observer));
    last_first_ = vectors_.size();
    if (matrix.cols == dim_) {
      // The common one-shard checkpoint, possibly gigabytes, moves in
      // without a copy (several go into the room Begin reserved).
      if (vectors_.capacity() == 0) {
        vectors_ = std::move(matrix.data);
      } else {
        vectors_.insert(vectors_.end(), matrix.data.begin(), matrix.data.end());
      }
    }
    return NpyShape2D{matrix.rows, matrix.cols};
  }

  // Checks the rows the last AppendFile brought, whose ids are `ids`, for
  // non-finite values. Mapped rows are checked by CandidateStore::Create.
  absl::Status CheckLastFinite(const std::string& file,
                               const std::vector<int64_t>& ids) const {
    if (writer_.has_value()) return absl::OkStatus();
    return CheckFinite(vectors_.data() + last_first_, ids.size(), dim_, file,
                       ids);
  }

  absl::Status AppendRows(const float* rows, size_t count) {
    if (writer_.has_value()) return writer_->AppendRows(rows, count);
    vectors_.insert(vectors_.end(), rows, rows + count * dim_);
    return absl::OkStatus();
  }

  // The store of every row appended, with `ids` and `labels`.
  absl::StatusOr<CandidateStore> Create(
      std::vector<int64_t> ids, std::optional<std::vector<int64_t>> labels) {
    if (!writer_.has_value()) {
      return CandidateStore::Create(dim_, std::move(ids), std::move(vectors_),
                                    std::move(labels));
    }
    HARDNEG_RETURN_IF_ERROR(writer_->Finish());
    HARDNEG_ASSIGN_OR_RETURN(MappedNpyMatrix mapped, MapNpyMatrix(path_));
    return CandidateStore::CreateMapped(
        dim_, std::move(ids), std::move(mapped.data), std::move(labels));
  }

 private:
  const std::string path_;
  size_t dim_ = 0;
  std::vector<float> vectors_;
  size_t last_first_ = 0;  // where the last AppendFile's rows start
  std::optional<NpyMatrixWriter> writer_;
};

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

// The size of the file at `path`; 0 when it cannot be stat'ed (its reader
// reports why).
size_t FileBytes(const std::string& path) {
  std::error_code error;
  const uintmax_t size = fs::file_size(path, error);
  return error ? 0 : static_cast<size_t>(size);
}

// Tells a CheckpointReadObserver how far a read has got: the files done,
// plus what is read of the one being read; never going back.
class ReadTracker {
 public:
  ReadTracker(const CheckpointReadObserver& observer,
              const CheckpointShape& shape)
      : observer_(observer) {
    last_.total_rows = shape.rows;
    last_.total_bytes = shape.bytes;
  }

  void Start() { Report(0, 0); }

  // The observer of one file's read; `dim`: the row width of an embeddings
  // file, 0 for ids and labels (whose rows are not counted again).
  NpyReadObserver File(size_t dim) {
    if (!observer_) return nullptr;
    return [this, dim](const NpyReadProgress& file) {
      const size_t rows = dim == 0 ? 0 : file.items_read / dim;
      Report(done_bytes_ + file.bytes_read, done_rows_ + rows);
      if (file.bytes_read >= file.file_bytes && file.items_read == file.items) {
        done_bytes_ += file.file_bytes;
        done_rows_ += rows;
      }
    };
  }

  void Finish() { Report(last_.total_bytes, last_.total_rows); }

 private:
  // Tells the observer, unless nothing moved since the last report.
  void Report(size_t bytes, size_t rows) {
    if (!observer_) return;
    bytes = std::max(last_.bytes, std::min(bytes, last_.total_bytes));
    rows = std::max(last_.rows, std::min(rows, last_.total_rows));
    if (started_ && bytes == last_.bytes && rows == last_.rows) return;
    started_ = true;
    last_.bytes = bytes;
    last_.rows = rows;
    observer_(last_);
  }

  const CheckpointReadObserver& observer_;
  bool started_ = false;
  CheckpointReadProgress last_;
  size_t done_bytes_ = 0;
  size_t done_rows_ = 0;
};

}  // namespace

absl::StatusOr<CheckpointManifest> ReadManifest(const std::string& dir) {
  ManifestRead read = ReadManifestFile(dir);
  // Read errors already name the file; parse errors do not.
  if (!read.read_failed && !read.manifest.ok()) {
    return Annotate(read.manifest.status(),
                    absl::StrCat(JoinPath(dir, kManifestFile), ": "));
  }
  return std::move(read.manifest);
}

absl::StatusOr<CheckpointShape> ReadCheckpointShape(
    const std::string& dir, const CheckpointManifest& manifest) {
  const std::string manifest_path = JoinPath(dir, kManifestFile);
  // Shard files (or links to them) must resolve inside the checkpoint:
  // "../" is refused by the parser, symlinks here.
  for (const CheckpointShard& shard : manifest.shards) {
    for (const std::string* file :
         {&shard.embeddings, &shard.ids, &shard.labels}) {
      if (file->empty()) continue;
      HARDNEG_RETURN_IF_ERROR(CheckInside(JoinPath(dir, *file), dir));
    }
  }
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

  CheckpointShape shape;
  shape.dim = manifest.dim;
  shape.has_labels = has_labels;
  for (size_t i = 0; i < manifest.shards.size(); ++i) {
    const CheckpointShard& shard = manifest.shards[i];
    const std::string embeddings_path = JoinPath(dir, shard.embeddings);
    HARDNEG_ASSIGN_OR_RETURN(NpyShape2D matrix,
                             ReadNpyMatrixShape(embeddings_path));
    if (matrix.cols != shape.dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          embeddings_path, ": embeddings have dimension ", matrix.cols, " but ",
          manifest_path, " says dim ", shape.dim));
    }
    const std::string ids_path = JoinPath(dir, shard.ids);
    HARDNEG_ASSIGN_OR_RETURN(size_t ids, ReadNpyInt64Length(ids_path));
    if (ids != matrix.rows) {
      return absl::InvalidArgumentError(
          absl::StrCat(ids_path, ": has ", ids, " ids but ", embeddings_path,
                       " has ", matrix.rows, " rows (shard ", i, ")"));
    }
    if (has_labels) {
      const std::string labels_path = JoinPath(dir, shard.labels);
      HARDNEG_ASSIGN_OR_RETURN(size_t labels, ReadNpyInt64Length(labels_path));
      if (labels != matrix.rows) {
        return absl::InvalidArgumentError(absl::StrCat(
            labels_path, ": has ", labels, " labels but ", embeddings_path,
            " has ", matrix.rows, " rows (shard ", i, ")"));
      }
    }
    shape.rows += matrix.rows;
    for (const std::string* file :
         {&shard.embeddings, &shard.ids, &shard.labels}) {
      if (!file->empty()) shape.bytes += FileBytes(JoinPath(dir, *file));
    }
  }
  if (shape.rows == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", dir, " has no rows: every shard is empty"));
  }
  return shape;
}

namespace {

// The shapes were checked from the headers; a file whose data disagrees
// now was replaced while the checkpoint was being read.
absl::Status Changed(const std::string& path) {
  return absl::FailedPreconditionError(
      absl::StrCat(path,
                   ": changed while the checkpoint was being read; rewrite the "
                   "checkpoint with manifest.json last"));
}

// INVALID_ARGUMENT naming both places of the first id that appears twice
// in `ids` (the whole checkpoint's, in file order), or OK.
absl::Status CheckUniqueIds(const std::vector<int64_t>& ids,
                            const std::vector<ShardRows>& rows_of_shard) {
  std::vector<int64_t> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end()) {
    return absl::OkStatus();
  }
  return ExplainDuplicate(ids, rows_of_shard);
}

// ReadCheckpointData for one shard of several: every id file is read
// first (8 bytes a row), so that the whole checkpoint is checked exactly
// as an unsharded server checks it (every shard accepts or rejects the same
// checkpoints) and the shard's rows are counted before `admit` is asked;
// then each embeddings file is read in turn and only the shard's rows are
// kept. At most the shard's share plus one file is held at a time.
absl::StatusOr<Checkpoint> ReadCheckpointShard(
    const std::string& dir, CheckpointManifest manifest,
    const CheckpointShape& shape, const CheckpointAdmission& admit,
    ShardFilter shard, ReadTracker& tracker, RowSink& sink) {
  const size_t dim = shape.dim;
  tracker.Start();
  std::vector<int64_t> all_ids;
  all_ids.reserve(shape.rows);
  std::vector<ShardRows> rows_of_shard;
  for (const CheckpointShard& file : manifest.shards) {
    const std::string ids_path = JoinPath(dir, file.ids);
    HARDNEG_ASSIGN_OR_RETURN(std::vector<int64_t> file_ids,
                             ReadNpyInt64(ids_path, tracker.File(0)));
    rows_of_shard.push_back({ids_path, all_ids.size(), file_ids.size()});
    all_ids.insert(all_ids.end(), file_ids.begin(), file_ids.end());
  }
  if (all_ids.size() != shape.rows) {
    return Changed(JoinPath(dir, kManifestFile));
  }
  HARDNEG_RETURN_IF_ERROR(Annotate(CheckUniqueIds(all_ids, rows_of_shard),
                                   absl::StrCat("checkpoint ", dir, ": ")));
  CheckpointShape kept = shape;
  kept.rows = static_cast<size_t>(
      std::count_if(all_ids.begin(), all_ids.end(),
                    [&](int64_t id) { return shard.Keeps(id); }));
  if (admit) HARDNEG_RETURN_IF_ERROR(admit(kept));
  HARDNEG_RETURN_IF_ERROR(sink.Begin(kept.rows, dim, /*reserve=*/true));
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;
  ids.reserve(kept.rows);
  if (shape.has_labels) labels.reserve(kept.rows);
  for (size_t i = 0; i < manifest.shards.size(); ++i) {
    const CheckpointShard& file = manifest.shards[i];
    const std::string embeddings_path = JoinPath(dir, file.embeddings);
    const ShardRows& rows = rows_of_shard[i];
    const std::vector<int64_t> file_ids(
        all_ids.begin() + static_cast<ptrdiff_t>(rows.first_row),
        all_ids.begin() + static_cast<ptrdiff_t>(rows.first_row + rows.rows));
    HARDNEG_ASSIGN_OR_RETURN(NpyMatrix matrix,
                             ReadNpyMatrix(embeddings_path, tracker.File(dim)));
    if (matrix.cols != dim || matrix.rows != rows.rows) {
      return Changed(embeddings_path);
    }
    HARDNEG_RETURN_IF_ERROR(CheckFinite(matrix.data.data(), matrix.rows, dim,
                                        embeddings_path, file_ids));
    std::vector<int64_t> file_labels;
    if (shape.has_labels) {
      const std::string labels_path = JoinPath(dir, file.labels);
      HARDNEG_ASSIGN_OR_RETURN(file_labels,
                               ReadNpyInt64(labels_path, tracker.File(0)));
      if (file_labels.size() != rows.rows) return Changed(labels_path);
    }
    // Runs of kept rows go to the sink at once.
    for (size_t row = 0; row < rows.rows;) {
      size_t end = row;
      while (end < rows.rows && shard.Keeps(file_ids[end])) {
        ids.push_back(file_ids[end]);
        if (shape.has_labels) labels.push_back(file_labels[end]);
        ++end;
      }
      HARDNEG_RETURN_IF_ERROR(
          sink.AppendRows(matrix.data.data() + row * dim, end - row));
      row = end + 1;
    }
  }
  tracker.Finish();
  absl::StatusOr<CandidateStore> store = sink.Create(
      std::move(ids),
      shape.has_labels ? std::optional<std::vector<int64_t>>(std::move(labels))
                       : std::nullopt);
  if (!store.ok()) {
    return Annotate(store.status(), absl::StrCat("checkpoint ", dir, ": "));
  }
  return Checkpoint{std::move(manifest), dir, *std::move(store)};
}

// ReadCheckpoint's work; allocation failures throw std::bad_alloc.
absl::StatusOr<Checkpoint> ReadCheckpointData(
    const std::string& dir, const CheckpointAdmission& admit,
    ShardFilter filter, const CheckpointReadObserver& observer, RowSink& sink) {
  HARDNEG_ASSIGN_OR_RETURN(CheckpointManifest manifest, ReadManifest(dir));
  // Headers first: the budget is checked before any row is read.
  HARDNEG_ASSIGN_OR_RETURN(CheckpointShape shape,
                           ReadCheckpointShape(dir, manifest));
  ReadTracker tracker(observer, shape);
  if (filter.sharded()) {
    return ReadCheckpointShard(dir, std::move(manifest), shape, admit, filter,
                               tracker, sink);
  }
  if (admit) HARDNEG_RETURN_IF_ERROR(admit(shape));
  tracker.Start();
  const size_t dim = shape.dim;
  HARDNEG_RETURN_IF_ERROR(
      sink.Begin(shape.rows, dim, /*reserve=*/manifest.shards.size() > 1));
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;
  if (manifest.shards.size() > 1) {
    ids.reserve(shape.rows);
    if (shape.has_labels) labels.reserve(shape.rows);
  }
  std::vector<ShardRows> rows_of_shard;
  auto changed = [](const std::string& path) { return Changed(path); };
  for (size_t i = 0; i < manifest.shards.size(); ++i) {
    const CheckpointShard& shard = manifest.shards[i];
    const std::string embeddings_path = JoinPath(dir, shard.embeddings);
    const std::string ids_path = JoinPath(dir, shard.ids);
    HARDNEG_ASSIGN_OR_RETURN(
        NpyShape2D matrix, sink.AppendFile(embeddings_path, tracker.File(dim)));
    if (matrix.cols != dim) return changed(embeddings_path);
    HARDNEG_ASSIGN_OR_RETURN(std::vector<int64_t> shard_ids,
                             ReadNpyInt64(ids_path, tracker.File(0)));
    if (shard_ids.size() != matrix.rows) return changed(ids_path);
    HARDNEG_RETURN_IF_ERROR(sink.CheckLastFinite(embeddings_path, shard_ids));
    if (shape.has_labels) {
      const std::string labels_path = JoinPath(dir, shard.labels);
      HARDNEG_ASSIGN_OR_RETURN(std::vector<int64_t> shard_labels,
                               ReadNpyInt64(labels_path, tracker.File(0)));
      if (shard_labels.size() != matrix.rows) return changed(labels_path);
      labels.insert(labels.end(), shard_labels.begin(), shard_labels.end());
    }
    rows_of_shard.push_back({ids_path, ids.size(), matrix.rows});
    ids.insert(ids.end(), shard_ids.begin(), shard_ids.end());
  }
  if (ids.size() != shape.rows) return changed(JoinPath(dir, kManifestFile));
  tracker.Finish();

  // Create consumes the ids; keep a copy (8 bytes a row, small next to the
  // vectors) to explain a duplicate in terms of files and rows.
  std::vector<int64_t> ids_copy = ids;
  absl::StatusOr<CandidateStore> store = sink.Create(
      std::move(ids),
      shape.has_labels ? std::optional<std::vector<int64_t>>(std::move(labels))
                       : std::nullopt);
  if (!store.ok()) {
    absl::Status duplicate = ExplainDuplicate(ids_copy, rows_of_shard);
    const std::string prefix = absl::StrCat("checkpoint ", dir, ": ");
    if (!duplicate.ok()) return Annotate(duplicate, prefix);
    return Annotate(store.status(), prefix);
  }
  return Checkpoint{std::move(manifest), dir, *std::move(store)};
}

}  // namespace

absl::StatusOr<Checkpoint> ReadCheckpoint(
    const std::string& dir, const CheckpointAdmission& admit, ShardFilter shard,
    const CheckpointReadObserver& observer, const std::string& map_vectors_at) {
  try {
    RowSink sink(map_vectors_at);
    return ReadCheckpointData(dir, admit, shard, observer, sink);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("checkpoint ", dir, ": out of memory while reading it"));
  }
}

absl::StatusOr<std::vector<CheckpointEntry>> ListCheckpoints(
    const std::string& root, std::vector<RejectedManifest>* rejected) {
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
    // A symlinked checkpoint may point anywhere under the root, nowhere
    // else: a manifest is data from another job.
    if (it->is_symlink(type_error)) {
      const absl::Status inside = CheckInside(dir, root);
      if (!inside.ok()) {
        if (rejected != nullptr) rejected->push_back({dir, inside});
        continue;
      }
    }
    ManifestRead read = ReadManifestFile(dir);
    const absl::StatusOr<CheckpointManifest>& manifest = read.manifest;
    if (absl::IsNotFound(manifest.status())) continue;  // still being written
    if (!manifest.ok()) {
      if (rejected != nullptr) {
        // Parse errors carry only the reason; read errors name the file.
        rejected->push_back(
            {dir, read.read_failed
                      ? manifest.status()
                      : Annotate(manifest.status(),
                                 absl::StrCat(kManifestFile, ": "))});
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

std::string ManifestStamp(const std::string& dir) {
  return FileStamp(JoinPath(dir, kManifestFile));
}

namespace {

// The shard files and manifest.json (last) of a one-shard checkpoint in
// `dir`.
absl::Status WriteCheckpointFiles(const std::string& dir,
                                  const CheckpointManifest& manifest,
                                  const std::vector<float>& embeddings,
                                  const std::vector<int64_t>& ids,
                                  const std::vector<int64_t>& labels,
                                  const CheckpointWriteObserver& observer) {
  const std::string manifest_path = JoinPath(dir, kManifestFile);
  // The data's bytes (the headers, 128 bytes a file, are left out).
  const size_t total = embeddings.size() * sizeof(float) +
                       (ids.size() + labels.size()) * sizeof(int64_t);
  size_t files_done = 0;  // bytes of the files already written
  auto file_observer = [&]() -> WriteObserver {
    if (!observer) return nullptr;
    return [&](size_t written) {
      observer(std::min(files_done + written, total), total);
    };
  };
  auto next_file = [&](const std::string& path) {
    files_done += FileBytes(path);
  };

  CheckpointShard shard{"embeddings-00000.npy", "ids-00000.npy",
                        labels.empty() ? "" : "labels-00000.npy"};
  HARDNEG_RETURN_IF_ERROR(WriteNpyMatrix(JoinPath(dir, shard.embeddings),
                                         embeddings.data(), ids.size(),
                                         manifest.dim, file_observer()));
  next_file(JoinPath(dir, shard.embeddings));
  HARDNEG_RETURN_IF_ERROR(
      WriteNpyInt64(JoinPath(dir, shard.ids), ids, file_observer()));
  next_file(JoinPath(dir, shard.ids));
  if (!labels.empty()) {
    HARDNEG_RETURN_IF_ERROR(
        WriteNpyInt64(JoinPath(dir, shard.labels), labels, file_observer()));
  }
  if (observer) observer(total, total);

  json shard_json = {{"embeddings", shard.embeddings}, {"ids", shard.ids}};
  if (!shard.labels.empty()) shard_json["labels"] = shard.labels;
  json root_json = {{"name", manifest.name},
                    {"step", manifest.step},
                    {"dim", manifest.dim},
                    {"shards", json::array({shard_json})}};
  if (manifest.metric.has_value()) {
    root_json["metric"] = MetricName(*manifest.metric);
  }
  return WriteFileAtomically(manifest_path, root_json.dump(2) + "\n");
}

// Renames the complete `stage` to `dir`. When `dir` exists: with
// `replace`, the two are exchanged in one step, so `stage` then holds the
// old checkpoint; without, ALREADY_EXISTS.
absl::Status MoveIntoPlace(const std::string& stage, const std::string& dir,
                           bool replace) {
  if (renameat2(AT_FDCWD, stage.c_str(), AT_FDCWD, dir.c_str(),
                RENAME_NOREPLACE) == 0) {
    return absl::OkStatus();
  }
  if (errno == EEXIST && !replace) {
    return absl::AlreadyExistsError(
        absl::StrCat(dir, " appeared while the checkpoint was written"));
  }
  if (errno == EEXIST) {
    if (renameat2(AT_FDCWD, stage.c_str(), AT_FDCWD, dir.c_str(),
                  RENAME_EXCHANGE) == 0) {
      return absl::OkStatus();
    }
  }
  if (errno != EINVAL && errno != ENOSYS) {
    return ErrnoError(dir, "cannot move the new checkpoint into place");
  }
  // No renameat2 on this filesystem. Without `replace`: a plain rename when
  // nothing is there (rename() would replace an empty directory). With it:
  // the old directory aside, the new one in; a crash between the two
  // leaves the old one under the hidden staging name.
  if (!replace) {
    std::error_code error;
    if (fs::exists(dir, error)) {
      return absl::AlreadyExistsError(
          absl::StrCat(dir, " appeared while the checkpoint was written"));
    }
    if (rename(stage.c_str(), dir.c_str()) != 0) {
      return ErrnoError(dir, "cannot move the new checkpoint into place");
    }
    return absl::OkStatus();
  }
  const std::string old = absl::StrCat(stage, ".old");
  const bool had_old = rename(dir.c_str(), old.c_str()) == 0;
  if (rename(stage.c_str(), dir.c_str()) != 0) {
    absl::Status failed =
        ErrnoError(dir, "cannot move the new checkpoint into place");
    if (had_old) rename(old.c_str(), dir.c_str());
    return failed;
  }
  if (had_old) rename(old.c_str(), stage.c_str());  // removed by the caller
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteCheckpoint(const std::string& root,
                             const CheckpointManifest& manifest,
                             const std::vector<float>& embeddings,
                             const std::vector<int64_t>& ids,
                             const std::vector<int64_t>& labels, bool replace,
                             const CheckpointWriteObserver& observer) {
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
  if (fs::exists(dir, error) && !replace) {
    return absl::AlreadyExistsError(
        absl::StrCat(dir, " exists; replacing it must be asked for"));
  }
  fs::create_directories(root, error);
  // A hidden name: checkpoint readers skip it while it is written.
  const std::string stage =
      JoinPath(root, absl::StrCat(".", manifest.name, ".tmp-", getpid()));
  fs::remove_all(stage, error);
  fs::create_directories(stage, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(),
                               absl::StrCat(stage, ": cannot create"));
  }
  absl::Status staged =
      WriteCheckpointFiles(stage, manifest, embeddings, ids, labels, observer);
  if (staged.ok()) staged = MoveIntoPlace(stage, dir, replace);
  fs::remove_all(stage, error);  // the staging directory, or the old one
  return staged;
}

}  // namespace hardneg

#include "versions/snapshot.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "format/file_util.h"
#include "format/npy.h"
#include "index/vector_index.h"
#include "nlohmann/json.hpp"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kSnapshotPrefix[] = "snapshot-";
constexpr size_t kSequenceDigits = 20;
constexpr char kTmpPrefix[] = ".tmp-";
constexpr char kMetaFile[] = "meta.json";
constexpr char kIdsFile[] = "ids.npy";
constexpr char kLabelsFile[] = "labels.npy";
constexpr char kVectorsFile[] = "vectors.npy";
constexpr char kIndexFile[] = "index.faiss";
// Bumped when the layout changes incompatibly; older readers skip newer
// snapshots instead of misreading them.
constexpr int kFormat = 1;
// meta.json is a few hundred bytes; a bigger one is not ours.
constexpr size_t kMaxMetaBytes = 1 << 20;

std::string SnapshotName(uint64_t sequence) {
  char digits[kSequenceDigits + 1];
  std::snprintf(digits, sizeof(digits), "%020" PRIu64, sequence);
  return absl::StrCat(kSnapshotPrefix, digits);
}

absl::Status FsError(const std::string& path, absl::string_view action,
                     const std::error_code& ec) {
  return absl::InternalError(
      absl::StrCat(path, ": ", action, " failed: ", ec.message()));
}

// The entries of `data_dir`: snapshots by sequence, and temporaries.
struct DirListing {
  std::vector<std::pair<uint64_t, std::string>> snapshots;  // newest first
  std::vector<std::string> temporaries;                     // full paths
};

absl::StatusOr<DirListing> ListDataDir(const std::string& data_dir) {
  DirListing listing;
  std::error_code ec;
  fs::directory_iterator it(data_dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) {
      return absl::NotFoundError(
          absl::StrCat(data_dir, ": no such directory, so no snapshots"));
    }
    return FsError(data_dir, "listing", ec);
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return FsError(data_dir, "listing", ec);
    const std::string name = it->path().filename().string();
    if (absl::StartsWith(name, kTmpPrefix)) {
      listing.temporaries.push_back(it->path().string());
      continue;
    }
    std::optional<uint64_t> sequence = ParseSnapshotName(name);
    if (sequence.has_value() && it->is_directory(ec)) {
      listing.snapshots.emplace_back(*sequence, it->path().string());
    }
  }
  if (ec) return FsError(data_dir, "listing", ec);
  std::sort(listing.snapshots.begin(), listing.snapshots.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  return listing;
}

// Removes leftovers of writes that a crash interrupted. Best effort: a
// temporary that cannot be removed is never read anyway.
void RemoveTemporaries(const std::vector<std::string>& temporaries) {
  for (const std::string& path : temporaries) {
    std::error_code ec;
    fs::remove_all(path, ec);
    if (ec) {
      Log(LogLevel::kWarning, "snapshot_cleanup_failed",
          {{"dir", path}, {"reason", ec.message()}});
    }
  }
}

SnapshotMeta MetaOf(const IndexVersion& version, ShardFilter shard) {
  SnapshotMeta meta;
  meta.info = version.info();
  meta.dim = version.dim();
  meta.size = version.size();
  meta.index = version.index().type();
  meta.scan = version.index().scan();
  meta.has_labels = version.store().has_labels();
  meta.shard = shard;
  return meta;
}

// Writes the store's vectors to `path`: a mapped store's file is linked
// (the same bytes, which the server never rewrites) when it can be.
absl::Status WriteVectors(const std::string& path,
                          const CandidateStore& store) {
  if (store.mapped()) {
    if (link(store.vectors_file().c_str(), path.c_str()) == 0) {
      return absl::OkStatus();
    }
    Log(LogLevel::kInfo, "snapshot_vectors_copied",
        {{"from", store.vectors_file()},
         {"reason", absl::StrCat("link failed: ", std::strerror(errno))}});
  }
  return WriteNpyMatrix(path, store.data(), store.size(), store.dim());
}

// Writes every file of the snapshot into `dir`, which exists and is empty.
absl::Status WriteSnapshotFiles(const std::string& dir,
                                const IndexVersion& version,
                                ShardFilter shard) {
  const CandidateStore& store = version.store();
  HARDNEG_RETURN_IF_ERROR(WriteNpyInt64(JoinPath(dir, kIdsFile), store.ids()));
  if (store.has_labels()) {
    HARDNEG_RETURN_IF_ERROR(
        WriteNpyInt64(JoinPath(dir, kLabelsFile), store.labels()));
  }
  HARDNEG_RETURN_IF_ERROR(WriteVectors(JoinPath(dir, kVectorsFile), store));
  if (version.index().kind() != IndexKind::kFlat) {
    const std::string index_path = JoinPath(dir, kIndexFile);
    HARDNEG_RETURN_IF_ERROR(version.index().Save(index_path));
    // faiss::write_index closes without fsync.
    HARDNEG_RETURN_IF_ERROR(SyncPath(index_path, /*directory=*/false));
  }
  // Written last, though the rename of the directory is what publishes.
  HARDNEG_RETURN_IF_ERROR(WriteFileAtomically(
      JoinPath(dir, kMetaFile), SnapshotMetaJson(MetaOf(version, shard))));
  return SyncPath(dir, /*directory=*/true);
}

// Moves a directory in the way of a new snapshot aside and removes it (a
// snapshot that a restart skipped, whose sequence is being reused).
absl::Status RemoveExisting(const std::string& path, const std::string& aside) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::OkStatus();
  if (rename(path.c_str(), aside.c_str()) != 0) {
    return ErrnoError(path, "moving the old snapshot aside failed");
  }
  fs::remove_all(aside, ec);
  return absl::OkStatus();
}

// Keeps the newest `keep` snapshots and the one just written.
void Prune(const std::string& data_dir, size_t keep, uint64_t written) {
  absl::StatusOr<DirListing> listing = ListDataDir(data_dir);
  if (!listing.ok()) {
    Log(LogLevel::kWarning, "snapshot_prune_failed",
        {{"dir", data_dir},
         {"reason", std::string(listing.status().message())}});
    return;
  }
  RemoveTemporaries(listing->temporaries);
  for (size_t i = std::max<size_t>(keep, 1); i < listing->snapshots.size();
       ++i) {
    const auto& [sequence, path] = listing->snapshots[i];
    if (sequence == written) continue;
    std::error_code ec;
    fs::remove_all(path, ec);
    if (ec) {
      Log(LogLevel::kWarning, "snapshot_prune_failed",
          {{"dir", path}, {"reason", ec.message()}});
    }
  }
}

// A field of meta.json, type-checked.
template <typename T>
absl::StatusOr<T> Field(const json& meta, const char* field) {
  auto it = meta.find(field);
  if (it == meta.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("meta.json: missing field \"", field, "\""));
  }
  bool typed;
  if constexpr (std::is_same_v<T, std::string>) {
    typed = it->is_string();
  } else if constexpr (std::is_same_v<T, bool>) {
    typed = it->is_boolean();
  } else if constexpr (std::is_same_v<T, double>) {
    typed = it->is_number();
  } else {
    typed = it->is_number_unsigned();
  }
  if (!typed) {
    return absl::InvalidArgumentError(absl::StrCat("meta.json: field \"", field,
                                                   "\" has the wrong type (",
                                                   it->type_name(), ")"));
  }
  return it->get<T>();
}

// FAILED_PRECONDITION unless `meta` was written by a server holding
// `shard` (an unsharded one writes neither field).
absl::Status CheckSnapshotShard(const json& meta, ShardFilter shard) {
  const uint64_t count = meta.value("num_shards", uint64_t{1});
  const uint64_t index = meta.value("shard_index", uint64_t{0});
  if (count == std::max<uint64_t>(shard.count, 1) && index == shard.index) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("meta.json: the snapshot holds shard ", index, " of ", count,
                   " but this server holds shard ", shard.index, " of ",
                   shard.count, "; give each shard its own data directory"));
}

// The scan precision a snapshot was served at, when this CPU runs it
// natively; otherwise (or for a snapshot without one) `configured`.
ScanPrecision SnapshotScan(const json& meta, ScanPrecision configured) {
  const auto it = meta.find("scan");
  if (it == meta.end() || !it->is_string()) return configured;
  const std::optional<ScanPrecision> recorded =
      ParseScanPrecision(it->get<std::string>());
  if (!recorded.has_value()) return configured;
  if (!CpuRunsScan(*recorded)) {
    Log(LogLevel::kWarning, "snapshot_scan_not_native",
        {{"scan", ScanPrecisionName(*recorded)},
         {"using", ScanPrecisionName(ResolveScanPrecision(configured))}});
    return configured;
  }
  return *recorded;
}

absl::Status ShapeMismatch(size_t rows, size_t cols, size_t size, size_t dim) {
  return absl::InvalidArgumentError(
      absl::StrCat(kVectorsFile, " has shape (", rows, ", ", cols,
                   "), meta.json says (", size, ", ", dim, ")"));
}

// The store of a snapshot whose vectors are at `path`: mapped when `map`
// and the file allows it (the snapshot's files are the server's own, never
// rewritten in place), else read.
absl::StatusOr<CandidateStore> LoadStore(
    const std::string& path, size_t size, size_t dim, std::vector<int64_t> ids,
    std::optional<std::vector<int64_t>> labels, bool map) {
  if (map) {
    absl::StatusOr<MappedNpyMatrix> mapped = MapNpyMatrix(path);
    if (mapped.ok()) {
      if (mapped->rows != size || mapped->cols != dim) {
        return ShapeMismatch(mapped->rows, mapped->cols, size, dim);
      }
      return CandidateStore::CreateMapped(
          dim, std::move(ids), std::move(mapped->data), std::move(labels));
    }
    Log(LogLevel::kWarning, "snapshot_vectors_read",
        {{"file", path},
         {"reason", absl::StrCat("not mapped: ", mapped.status().message())}});
  }
  HARDNEG_ASSIGN_OR_RETURN(NpyMatrix vectors, ReadNpyMatrix(path));
  if (vectors.rows != size || vectors.cols != dim) {
    return ShapeMismatch(vectors.rows, vectors.cols, size, dim);
  }
  return CandidateStore::Create(dim, std::move(ids), std::move(vectors.data),
                                std::move(labels));
}

absl::StatusOr<std::shared_ptr<const IndexVersion>> LoadSnapshot(
    const std::string& dir, uint64_t sequence, const IndexBuildOptions& build,
    ShardFilter shard, bool map_vectors) {
  HARDNEG_ASSIGN_OR_RETURN(
      std::string text,
      ReadSmallTextFile(JoinPath(dir, kMetaFile), kMaxMetaBytes));
  const json meta = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded() || !meta.is_object()) {
    return absl::InvalidArgumentError("meta.json: not a JSON object");
  }
  HARDNEG_ASSIGN_OR_RETURN(uint64_t format, Field<uint64_t>(meta, "format"));
  if (format != kFormat) {
    return absl::InvalidArgumentError(absl::StrCat(
        "meta.json: format ", format, ", this server reads ", kFormat));
  }
  HARDNEG_RETURN_IF_ERROR(CheckSnapshotShard(meta, shard));
  VersionInfo info;
  HARDNEG_ASSIGN_OR_RETURN(info.name, Field<std::string>(meta, "name"));
  HARDNEG_ASSIGN_OR_RETURN(info.step, Field<uint64_t>(meta, "step"));
  HARDNEG_ASSIGN_OR_RETURN(info.sequence, Field<uint64_t>(meta, "sequence"));
  if (info.sequence != sequence) {
    return absl::InvalidArgumentError(
        absl::StrCat("meta.json: sequence ", info.sequence,
                     " differs from the directory name's ", sequence));
  }
  HARDNEG_ASSIGN_OR_RETURN(std::string metric_name,
                           Field<std::string>(meta, "metric"));
  absl::StatusOr<Metric> metric = ParseMetric(metric_name);
  if (!metric.ok()) return Annotate(metric.status(), "meta.json: metric: ");
  info.metric = *metric;
  HARDNEG_ASSIGN_OR_RETURN(uint64_t dim, Field<uint64_t>(meta, "dim"));
  HARDNEG_ASSIGN_OR_RETURN(uint64_t size, Field<uint64_t>(meta, "size"));
  HARDNEG_ASSIGN_OR_RETURN(std::string factory,
                           Field<std::string>(meta, "index"));
  HARDNEG_ASSIGN_OR_RETURN(double created, Field<double>(meta, "created"));
  info.created = absl::UnixEpoch() + absl::Seconds(created);
  HARDNEG_ASSIGN_OR_RETURN(bool has_labels, Field<bool>(meta, "has_labels"));

  HARDNEG_ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                           ReadNpyInt64(JoinPath(dir, kIdsFile)));
  if (ids.size() != size) {
    return absl::InvalidArgumentError(absl::StrCat(
        kIdsFile, " holds ", ids.size(), " ids, meta.json says ", size));
  }
  std::optional<std::vector<int64_t>> labels;
  if (has_labels) {
    HARDNEG_ASSIGN_OR_RETURN(labels, ReadNpyInt64(JoinPath(dir, kLabelsFile)));
  }
  HARDNEG_ASSIGN_OR_RETURN(
      CandidateStore store,
      LoadStore(JoinPath(dir, kVectorsFile), size, dim, std::move(ids),
                std::move(labels), map_vectors));
  auto owned_store = std::make_unique<CandidateStore>(std::move(store));
  IndexBuildOptions index_options = build;
  index_options.factory = std::move(factory);
  // A Flat snapshot keeps the precision it was served at. FAISS indexes
  // recorded f32 before IVF cells could scan at a reduced precision, so
  // theirs is the configured one.
  index_options.scan = IndexKindOf(index_options.factory) == IndexKind::kFlat
                           ? SnapshotScan(meta, build.scan)
                           : build.scan;
  HARDNEG_ASSIGN_OR_RETURN(
      std::unique_ptr<VectorIndex> index,
      LoadVectorIndex(JoinPath(dir, kIndexFile), *owned_store, info.metric,
                      index_options));
  return IndexVersion::FromParts(std::move(info), std::move(owned_store),
                                 std::move(index));
}

}  // namespace

std::string SnapshotMetaJson(const SnapshotMeta& meta) {
  const VersionInfo& info = meta.info;
  json out = json::object();
  out["format"] = kFormat;
  out["name"] = info.name;
  out["step"] = info.step;
  out["sequence"] = info.sequence;
  out["metric"] = MetricName(info.metric);
  out["dim"] = meta.dim;
  out["size"] = meta.size;
  out["index"] = meta.index;
  out["scan"] = ScanPrecisionName(meta.scan);
  out["created"] =
      absl::FDivDuration(info.created - absl::UnixEpoch(), absl::Seconds(1));
  out["has_labels"] = meta.has_labels;
  if (meta.shard.sharded()) {
    out["shard_index"] = meta.shard.index;
    out["num_shards"] = meta.shard.count;
  }
  return out.dump(2) + "\n";
}

std::optional<uint64_t> ParseSnapshotName(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, kSnapshotPrefix)) return std::nullopt;
  if (name.size() != kSequenceDigits) return std::nullopt;
  for (char c : name) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return std::nullopt;
    }
  }
  uint64_t sequence = 0;
  if (!absl::SimpleAtoi(name, &sequence)) return std::nullopt;
  return sequence;
}

absl::Status WriteSnapshot(const SnapshotOptions& options,
                           const IndexVersion& version) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("no data_dir to write a snapshot to");
  }
  std::error_code ec;
  fs::create_directories(options.data_dir, ec);
  if (ec) return FsError(options.data_dir, "creating", ec);

  const uint64_t sequence = version.info().sequence;
  const std::string suffix = absl::StrCat(sequence, "-", getpid());
  const std::string tmp =
      JoinPath(options.data_dir, absl::StrCat(kTmpPrefix, "snapshot-", suffix));
  const std::string final_path =
      JoinPath(options.data_dir, SnapshotName(sequence));
  fs::remove_all(tmp, ec);  // a failed earlier attempt of this process

  // Every failure below is INTERNAL, whatever the errno.
  absl::Status status = [&]() -> absl::Status {
    if (mkdir(tmp.c_str(), 0755) != 0) return ErrnoError(tmp, "mkdir failed");
    HARDNEG_RETURN_IF_ERROR(WriteSnapshotFiles(tmp, version, options.shard));
    HARDNEG_RETURN_IF_ERROR(RemoveExisting(
        final_path,
        JoinPath(options.data_dir, absl::StrCat(kTmpPrefix, "old-", suffix))));
    if (rename(tmp.c_str(), final_path.c_str()) != 0) {
      return ErrnoError(final_path, "rename into place failed");
    }
    return SyncPath(options.data_dir, /*directory=*/true);
  }();
  if (!status.ok()) {
    fs::remove_all(tmp, ec);
    return absl::Status(
        absl::StatusCode::kInternal,
        absl::StrCat("writing snapshot ", final_path, ": ", status.message()));
  }
  Prune(options.data_dir, options.keep, sequence);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const IndexVersion>> ReadNewestSnapshot(
    const SnapshotOptions& options) {
  if (options.data_dir.empty()) {
    return absl::NotFoundError("no data_dir, so no snapshots");
  }
  HARDNEG_ASSIGN_OR_RETURN(DirListing listing, ListDataDir(options.data_dir));
  RemoveTemporaries(listing.temporaries);
  size_t skipped = 0;
  for (const auto& [sequence, path] : listing.snapshots) {
    absl::StatusOr<std::shared_ptr<const IndexVersion>> version = LoadSnapshot(
        path, sequence, options.build, options.shard, options.map_vectors);
    if (version.ok()) return version;
    ++skipped;
    Log(LogLevel::kWarning, "snapshot_skipped",
        {{"dir", path}, {"reason", std::string(version.status().message())}});
  }
  return absl::NotFoundError(absl::StrCat("no loadable snapshot in ",
                                          options.data_dir, " (", skipped,
                                          " skipped)"));
}

}  // namespace hardneg

// Checkpoint directories, as written by an encoder job with numpy alone:
//
//   <root>/<name>/manifest.json        written last: "complete"
//   <root>/<name>/embeddings-00000.npy float32 or float16, [n, dim]
//   <root>/<name>/ids-00000.npy        int64, [n]
//   <root>/<name>/labels-00000.npy     int64, [n] (optional)
//
// manifest.json: {"name": "...", "step": 12000, "dim": 768,
//   "metric": "inner_product", "shards": [{"embeddings": "...",
//   "ids": "...", "labels": "..."}]}
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SRC_FORMAT_CHECKPOINT_H_
#define HARDNEG_SRC_FORMAT_CHECKPOINT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "corpus/candidate_store.h"
#include "corpus/metric.h"
#include "corpus/shard.h"

namespace hardneg {

struct CheckpointShard {
  std::string embeddings;  // file names relative to the checkpoint dir
  std::string ids;
  std::string labels;  // empty when the shard has no labels
};

struct CheckpointManifest {
  std::string name;
  uint64_t step = 0;
  uint32_t dim = 0;
  std::optional<Metric> metric;  // absent when the manifest omits it
  std::vector<CheckpointShard> shards;
};

struct Checkpoint {
  CheckpointManifest manifest;
  std::string dir;
  CandidateStore store;
};

// Parses `<dir>/manifest.json`. NOT_FOUND when absent; INVALID_ARGUMENT
// (naming the field) when malformed: not JSON, nested deeper than 16
// levels, a missing or mistyped field, zero dim, no shards or more than
// 10,000, a shard path that is absolute or contains "..", or a file that
// is not regular or is over 4 MiB (checked before it is read).
absl::StatusOr<CheckpointManifest> ReadManifest(const std::string& dir);

// What a checkpoint holds, from its manifest and .npy headers alone.
struct CheckpointShape {
  size_t rows = 0;
  size_t dim = 0;
  bool has_labels = false;
  size_t bytes = 0;  // the sizes of all its .npy files, summed
};

// Reads the shape of the checkpoint in `dir` described by `manifest`,
// with every check of ReadCheckpoint that the headers allow (shapes, row
// counts, dtypes, file sizes, labels in all shards or none) and no data.
absl::StatusOr<CheckpointShape> ReadCheckpointShape(
    const std::string& dir, const CheckpointManifest& manifest);

// Called with a checkpoint's shape before any of its data is read; an
// error (RESOURCE_EXHAUSTED for a memory budget, say) stops the read.
using CheckpointAdmission =
    std::function<absl::Status(const CheckpointShape& shape)>;

// How far a ReadCheckpoint has got, out of the shape's totals.
struct CheckpointReadProgress {
  size_t rows = 0;  // embedding rows read, of every shard
  size_t total_rows = 0;
  size_t bytes = 0;  // bytes of the .npy files read, headers included
  size_t total_bytes = 0;
};

// Called on the reading thread: first with nothing read, once the headers
// are checked (and, unsharded, the read admitted); then every few MiB,
// never going back nor repeating itself; last with rows == total_rows and bytes
// == total_bytes, once every file is read (before the store is assembled).
using CheckpointReadObserver =
    std::function<void(const CheckpointReadProgress& progress)>;

// Reads a whole checkpoint: the manifest and every shard, checked against
// each other. Errors name the file and the reason: a missing shard, bad
// magic, wrong dtype, wrong shape, truncated data, a dimension mismatch with
// the manifest, ids/labels/embeddings row counts that differ, labels in some
// shards but not others, duplicate ids (naming the id), non-finite values
// (naming the file and row). The headers are checked first and `admit`
// (when set) is asked before any data is read; RESOURCE_EXHAUSTED when
// memory runs out all the same; FAILED_PRECONDITION when a file changes
// while it is read.
//
// With a `shard` of several, the store holds only the candidates the
// filter keeps (possibly none), and `admit` sees their count; the whole
// checkpoint is still checked (every id file is read first, then one
// embeddings file at a time), so that every shard accepts or rejects the
// same checkpoints. `observer`, when set, sees how far the read has got
// (rows and bytes of the whole checkpoint, the shard's or not).
//
// With `map_vectors_at`, the rows are not held on the heap: they are
// gathered into a float32 C-order .npy created at that path (a float32
// C-order embeddings file is copied by the kernel, copy_file_range; a
// float16 or Fortran-order one, or a shard's rows, pass through memory one
// file at a time), fsynced, and the store maps it (CandidateStore::mapped).
// The checkpoint's own files are never mapped: a trainer may rewrite them
// in place, and a mapped file cut short is SIGBUS. The caller owns the new
// file: it must never be truncated or rewritten while the store lives
// (unlinking it is fine), and is left behind, maybe incomplete, on an error.
absl::StatusOr<Checkpoint> ReadCheckpoint(
    const std::string& dir, const CheckpointAdmission& admit = nullptr,
    ShardFilter shard = {}, const CheckpointReadObserver& observer = nullptr,
    const std::string& map_vectors_at = "");

// A complete checkpoint found under a root directory.
struct CheckpointEntry {
  std::string dir;
  std::string name;
  uint64_t step = 0;
};

// A checkpoint directory whose manifest could not be read or parsed.
struct RejectedManifest {
  std::string dir;
  // Its message is "manifest.json: <reason>" for a parse error, or the
  // read error, which names the file.
  absl::Status status;
};

// The subdirectories of `root` holding a readable manifest.json, highest
// step first (ties: name descending). Subdirectories without a manifest
// are incomplete and skipped silently; ones whose manifest does not parse
// are skipped too and reported in `rejected` when it is non-null.
// NOT_FOUND when `root` does not exist.
absl::StatusOr<std::vector<CheckpointEntry>> ListCheckpoints(
    const std::string& root, std::vector<RejectedManifest>* rejected = nullptr);

// The identity of `<dir>/manifest.json` as last written (device, inode,
// size and modification time): a checkpoint whose manifest keeps its stamp
// has not been rewritten. Empty when it cannot be stat'ed.
std::string ManifestStamp(const std::string& dir);

// Writes a one-shard checkpoint to `<root>/<manifest.name>`: files and
// manifest.json into a hidden staging directory beside it, which is then
// renamed into place, so a reader sees the whole checkpoint or none of it.
// An existing checkpoint of that name is ALREADY_EXISTS unless `replace`;
// then the new directory is exchanged with it atomically (renameat2
// RENAME_EXCHANGE, or two renames where the filesystem lacks it) and the
// old one removed: no file of the old checkpoint survives. `labels` may be
// empty. For tests, the CLI and demos. `observer`, when set, is told the
// bytes of the .npy files written so far, out of about `total_bytes`,
// every few MiB, last with bytes == total_bytes.
using CheckpointWriteObserver =
    std::function<void(size_t bytes, size_t total_bytes)>;
absl::Status WriteCheckpoint(const std::string& root,
                             const CheckpointManifest& manifest,
                             const std::vector<float>& embeddings,
                             const std::vector<int64_t>& ids,
                             const std::vector<int64_t>& labels,
                             bool replace = false,
                             const CheckpointWriteObserver& observer = nullptr);

}  // namespace hardneg

#endif  // HARDNEG_SRC_FORMAT_CHECKPOINT_H_

// Snapshots: every version that goes live is written under data_dir, so
// that a restarted server serves its last version at once, before any
// checkpoint, and its sequence continues instead of going back.
//
//   <data_dir>/snapshot-<sequence, 20 digits>/
//     meta.json      name, step, sequence, metric, dim, size, index factory,
//                    scan (the Flat first pass's precision), created (unix
//                    seconds), has_labels
//     ids.npy        int64 [n]
//     labels.npy     int64 [n] (when the version has labels)
//     vectors.npy    float32 [n, dim]; a hard link to the file a mapped
//                    store maps when it can be (never rewritten in place)
//     index.faiss    faiss::write_index output (not for Flat)
//
// A snapshot is written to `.tmp-snapshot-<sequence>-<pid>` and fsynced,
// then renamed into place, so a crash (kill -9) at any moment never leaves
// a half-written snapshot that looks complete; leftover temporaries are
// removed by the next write or read.
//
// Stateless functions; calls on different data_dirs may run concurrently,
// on one data_dir they must be serialised by the caller (IndexManager).
#ifndef HARDNEG_SRC_VERSIONS_SNAPSHOT_H_
#define HARDNEG_SRC_VERSIONS_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "corpus/shard.h"
#include "index/vector_index.h"
#include "versions/index_version.h"

namespace hardneg {

struct SnapshotOptions {
  std::string data_dir;  // created when missing
  size_t keep = 3;       // newest snapshots kept after a write (>= 1)
  // How loaded versions' indexes are restored: as built, but for the
  // factory, which is the snapshot's own.
  IndexBuildOptions build;
  // The shard a server holds, written to meta.json; a snapshot of another
  // shard (or of an unsharded server) is skipped when read.
  ShardFilter shard;
  // Restored versions map vectors.npy (CandidateStore::mapped) instead of
  // reading it onto the heap; a file that cannot be mapped is read.
  bool map_vectors = false;
};

// What a snapshot's meta.json records (everything the reader checks).
struct SnapshotMeta {
  VersionInfo info;
  size_t dim = 0;
  size_t size = 0;
  std::string index;  // the index factory, such as "Flat"
  ScanPrecision scan = ScanPrecision::kF32;
  bool has_labels = false;
  ShardFilter shard;
};

// The text of meta.json for `meta`, as WriteSnapshot writes it: for a
// writer of a snapshot's files that holds no IndexVersion (hardneg-bench's
// W4 streams 27 GB of rows to disk).
std::string SnapshotMetaJson(const SnapshotMeta& meta);

// The sequence of a `snapshot-<20 digits>` directory name, or nullopt for
// any other name.
std::optional<uint64_t> ParseSnapshotName(absl::string_view name);

// Writes `version` as described above, then removes all but the newest
// `keep` snapshots. A mapped store's vectors are linked, not copied, when
// its file still exists on data_dir's file system (the server's staging
// file); otherwise they are written from the mapping, through no buffer.
// INTERNAL (naming the path) on I/O errors; the previous snapshots are intact
// then.
absl::Status WriteSnapshot(const SnapshotOptions& options,
                           const IndexVersion& version);

// The newest complete snapshot, loaded into a servable version (the FAISS
// index is read, not rebuilt). NOT_FOUND when there is none. A snapshot that
// fails to load is logged and skipped for the next older one.
absl::StatusOr<std::shared_ptr<const IndexVersion>> ReadNewestSnapshot(
    const SnapshotOptions& options);

}  // namespace hardneg

#endif  // HARDNEG_SRC_VERSIONS_SNAPSHOT_H_

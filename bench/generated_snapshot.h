// Corpora too big to hold in memory, for the bench's W4 (8.8M x 768: 27 GB
// of float32 on a 24 GB machine): written straight to disk as a server
// snapshot, and an exact reference answer computed by streaming the file.
//
// WriteGeneratedSnapshot writes the layout of src/versions/snapshot.h
// (meta.json, by the server's own SnapshotMetaJson; ids.npy, vectors.npy)
// for a server to restore by mapping its vectors; the rows go through
// NpyMatrixWriter a chunk at a time and are never all in memory. The server's
// snapshot reader checks every field, so a layout this writer gets wrong fails
// the restore, loudly.
//
// Stateless functions; they use the OpenMP threads. Benchmarks only.
#ifndef HARDNEG_BENCH_GENERATED_SNAPSHOT_H_
#define HARDNEG_BENCH_GENERATED_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "index/reduced_scan.h"

namespace hardneg::bench {

struct GeneratedSnapshotSpec {
  std::string data_dir;  // must exist
  std::string name;      // the version's name
  uint64_t step = 1;
  uint64_t sequence = 1;
  size_t rows = 0;
  size_t dim = 0;
  uint64_t seed = 0;
  ScanPrecision scan = ScanPrecision::kInt8;  // meta.json's "scan"
};

// Writes rows [0, rows) of uniform random unit vectors (row r drawn from
// its own generator, seeded from `seed` and r, so the threads' split does
// not change them), ids 0..rows-1, inner product, Flat, no labels, as
// <data_dir>/snapshot-<sequence, 20 digits>/. `progress` (when set) is
// called on this thread after each chunk with the rows written so far.
// Returns the snapshot's directory. INTERNAL (naming the file) on I/O
// errors; what was written is left for the caller to remove.
absl::StatusOr<std::string> WriteGeneratedSnapshot(
    const GeneratedSnapshotSpec& spec,
    const std::function<void(size_t rows_written)>& progress = nullptr);

// A candidate of an exact answer.
struct ExactHit {
  int64_t id = 0;
  float score = 0;  // the dot product accumulated in double, then rounded
};

// For each of the `queries` (row-major, `dim` wide), its `k` best rows of
// the float32 .npy matrix at `vectors_npy` by inner product (ties: id
// ascending), leaving out the id at the same index of `excluded`; `ids`
// holds each row's id. Reads the file once, sequentially, in chunks (not
// through a mapping, whose read-ahead a server may have turned off), so
// memory stays a few hundred MiB whatever the file's size. `progress` as
// above, with rows scored so far.
absl::StatusOr<std::vector<std::vector<ExactHit>>> ExactTopK(
    const std::string& vectors_npy, absl::Span<const int64_t> ids,
    absl::Span<const float> queries, size_t dim,
    absl::Span<const int64_t> excluded, size_t k,
    const std::function<void(size_t rows_scored)>& progress = nullptr);

}  // namespace hardneg::bench

#endif  // HARDNEG_BENCH_GENERATED_SNAPSHOT_H_

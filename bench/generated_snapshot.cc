#include "generated_snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "bench_util.h"
#include "format/file_util.h"
#include "format/npy.h"
#include "index/vector_index.h"
#include "versions/snapshot.h"

namespace hardneg::bench {
namespace {

// Rows generated (and written) at a time: about 48 MiB at dim 768.
constexpr size_t kChunkRows = 16384;

// Row `row`'s generator: its own stream, so rows can be drawn in any order.
SplitMix64 RowRng(uint64_t seed, size_t row) {
  return SplitMix64(seed ^
                    (static_cast<uint64_t>(row) * 0xd1b54a32d192ed03ULL));
}

// meta.json, written by the server's own code.
std::string MetaJson(const GeneratedSnapshotSpec& spec) {
  SnapshotMeta meta;
  meta.info.name = spec.name;
  meta.info.step = spec.step;
  meta.info.sequence = spec.sequence;
  meta.info.metric = Metric::kInnerProduct;
  meta.info.created = absl::Now();
  meta.dim = spec.dim;
  meta.size = spec.rows;
  meta.index = kFlatFactory;
  meta.scan = spec.scan;
  return SnapshotMetaJson(meta);
}

}  // namespace

absl::StatusOr<std::string> WriteGeneratedSnapshot(
    const GeneratedSnapshotSpec& spec,
    const std::function<void(size_t rows_written)>& progress) {
  char digits[21];
  std::snprintf(digits, sizeof(digits), "%020" PRIu64, spec.sequence);
  const std::string dir =
      JoinPath(spec.data_dir, absl::StrCat("snapshot-", digits));
  if (mkdir(dir.c_str(), 0755) != 0) return ErrnoError(dir, "mkdir failed");

  std::vector<int64_t> ids(spec.rows);
  std::iota(ids.begin(), ids.end(), int64_t{0});
  HARDNEG_RETURN_IF_ERROR(WriteNpyInt64(JoinPath(dir, "ids.npy"), ids));
  ids = {};

  HARDNEG_ASSIGN_OR_RETURN(NpyMatrixWriter writer,
                           NpyMatrixWriter::Create(JoinPath(dir, "vectors.npy"),
                                                   spec.rows, spec.dim));
  // Two buffers: one is filled while the other is written.
  std::vector<float> buffers[2];
  for (std::vector<float>& b : buffers) b.resize(kChunkRows * spec.dim);
  absl::Status write_status;
  std::thread write_thread;
  auto wait_write = [&]() -> absl::Status {
    if (write_thread.joinable()) write_thread.join();
    return write_status;
  };
  size_t written = 0;
  for (size_t first = 0, chunk = 0; first < spec.rows;
       first += kChunkRows, ++chunk) {
    const size_t rows = std::min(kChunkRows, spec.rows - first);
    float* out = buffers[chunk % 2].data();
    const auto n = static_cast<int64_t>(rows);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const auto row = static_cast<size_t>(i);
      SplitMix64 rng = RowRng(spec.seed, first + row);
      FillUnitVectors(&rng, 1, spec.dim, out + row * spec.dim);
    }
    HARDNEG_RETURN_IF_ERROR(wait_write());
    if (progress && written > 0) progress(written);
    write_thread = std::thread([&writer, &write_status, out, rows] {
      write_status = writer.AppendRows(out, rows);
    });
    written = first + rows;
  }
  HARDNEG_RETURN_IF_ERROR(wait_write());
  HARDNEG_RETURN_IF_ERROR(writer.Finish());
  if (progress) progress(written);
  HARDNEG_RETURN_IF_ERROR(
      WriteFileAtomically(JoinPath(dir, "meta.json"), MetaJson(spec)));
  HARDNEG_RETURN_IF_ERROR(SyncPath(dir, /*directory=*/true));
  return dir;
}

absl::StatusOr<std::vector<std::vector<ExactHit>>> ExactTopK(
    const std::string& vectors_npy, absl::Span<const int64_t> ids,
    absl::Span<const float> queries, size_t dim,
    absl::Span<const int64_t> excluded, size_t k,
    const std::function<void(size_t rows_scored)>& progress) {
  HARDNEG_ASSIGN_OR_RETURN(NpyShape2D shape, ReadNpyMatrixShape(vectors_npy));
  if (shape.cols != dim || shape.rows != ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(vectors_npy, ": shape (", shape.rows, ", ", shape.cols,
                     "), expected (", ids.size(), ", ", dim, ")"));
  }
  const size_t nq = queries.size() / dim;
  if (excluded.size() != nq) {
    return absl::InvalidArgumentError("one excluded id a query expected");
  }
  HARDNEG_ASSIGN_OR_RETURN(OpenedFile file, OpenRegularFile(vectors_npy));
  const size_t data_bytes = shape.rows * dim * sizeof(float);
  // C-order float32 data ends the file, right after the header.
  size_t offset = file.size - data_bytes;
  posix_fadvise(file.fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);

  // Best first: score descending, then id ascending.
  auto better = [](const ExactHit& a, const ExactHit& b) {
    return a.score != b.score ? a.score > b.score : a.id < b.id;
  };
  std::vector<std::vector<ExactHit>> top(nq);
  std::vector<float> rows(kChunkRows * dim);
  std::vector<float> scores(kChunkRows * nq);
  for (size_t first = 0; first < shape.rows; first += kChunkRows) {
    const size_t n = std::min(kChunkRows, shape.rows - first);
    const size_t bytes = n * dim * sizeof(float);
    size_t got = 0;
    while (got < bytes) {
      const ssize_t r =
          pread(file.fd.get(), reinterpret_cast<char*>(rows.data()) + got,
                bytes - got, static_cast<off_t>(offset + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoError(vectors_npy, "read failed");
      if (r == 0) {
        return absl::FailedPreconditionError(
            absl::StrCat(vectors_npy, ": file shrank while reading"));
      }
      got += static_cast<size_t>(r);
    }
    offset += bytes;
    const auto rows_in_chunk = static_cast<int64_t>(n);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows_in_chunk; ++i) {
      const float* x = rows.data() + static_cast<size_t>(i) * dim;
      for (size_t q = 0; q < nq; ++q) {
        const float* v = queries.data() + q * dim;
        double sum = 0;
        for (size_t j = 0; j < dim; ++j) {
          sum += static_cast<double>(v[j]) * static_cast<double>(x[j]);
        }
        scores[q * kChunkRows + static_cast<size_t>(i)] =
            static_cast<float>(sum);
      }
    }
    for (size_t q = 0; q < nq; ++q) {
      std::vector<ExactHit>& best = top[q];
      for (size_t i = 0; i < n; ++i) {
        const ExactHit hit{ids[first + i], scores[q * kChunkRows + i]};
        if (hit.id == excluded[q]) continue;
        if (best.size() == k && !better(hit, best.back())) continue;
        best.insert(std::upper_bound(best.begin(), best.end(), hit, better),
                    hit);
        if (best.size() > k) best.pop_back();
      }
    }
    if (progress) progress(first + n);
  }
  return top;
}

}  // namespace hardneg::bench

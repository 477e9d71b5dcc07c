// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0):
// the one .npy reader and writer of the server and the CLI.
//
// Reads little-endian float32/float16 2-D matrices (checkpoint embeddings),
// int64 (or int32, widened) 1-D vectors (ids, labels) and 1-D or 2-D int
// matrices (the CLI's positives), C or Fortran order. Writes C-order arrays
// of any shape, atomically (file_util.h). Every error names the file and
// says what was expected and what was found.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SRC_FORMAT_NPY_H_
#define HARDNEG_SRC_FORMAT_NPY_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "corpus/mapped_floats.h"
#include "format/file_util.h"

namespace hardneg {

struct NpyShape2D {
  size_t rows = 0;
  size_t cols = 0;
};

// A 2-D float matrix, row-major.
struct NpyMatrix {
  size_t rows = 0;
  size_t cols = 0;
  std::vector<float> data;  // rows * cols
};

// How far the read of one .npy file has got, its header included.
struct NpyReadProgress {
  size_t bytes_read = 0;  // reaches file_bytes once the data is all read
  size_t file_bytes = 0;  // the file's size when it was opened
  size_t items_read = 0;  // array items (not rows) read so far
  size_t items = 0;       // the product of the shape
};

// Called on the reading thread once the header is read, then after every
// chunk of data (a few MiB), last with the whole file read. Not called for
// a file that fails its header checks.
using NpyReadObserver = std::function<void(const NpyReadProgress&)>;

// Reads a 2-D '<f4' or '<f2' array (float16 is widened to float32).
// INVALID_ARGUMENT for a bad magic string, an unparsable header, another
// dtype, a shape that is not 2-D or data shorter or longer than the shape
// says; NOT_FOUND when the file does not exist. `observer`, when set, sees
// the read progress.
absl::StatusOr<NpyMatrix> ReadNpyMatrix(
    const std::string& path, const NpyReadObserver& observer = nullptr);

// The shape of the 2-D float array at `path`, from its header alone, with
// every check of ReadNpyMatrix but the data's values (the file's size must
// match the shape). For checking a budget before reading.
absl::StatusOr<NpyShape2D> ReadNpyMatrixShape(const std::string& path);

// The length of the 1-D int array at `path`, from its header alone, with
// every check of ReadNpyInt64 but the data's values.
absl::StatusOr<size_t> ReadNpyInt64Length(const std::string& path);

// Reads a 1-D '<i8' or '<i4' array, widened to int64; `observer` as for
// ReadNpyMatrix.
absl::StatusOr<std::vector<int64_t>> ReadNpyInt64(
    const std::string& path, const NpyReadObserver& observer = nullptr);

// A row-major int64 matrix. A 1-D file of n values reads as [n, 1].
struct NpyInt64Matrix {
  size_t rows = 0;
  size_t cols = 0;
  std::vector<int64_t> data;  // rows * cols
};

// Reads a 1-D or 2-D '<i8' or '<i4' array (int32 is widened), with the
// errors of ReadNpyInt64 but for the number of dimensions.
absl::StatusOr<NpyInt64Matrix> ReadNpyInt64Matrix(const std::string& path);

// A 2-D '<f4' C-order array mapped read-only from its file (see
// corpus/mapped_floats.h for what the file must never undergo meanwhile).
struct MappedNpyMatrix {
  size_t rows = 0;
  size_t cols = 0;
  MappedFloats data;  // rows * cols
};

// Maps the 2-D float array at `path` instead of reading it: the errors of
// ReadNpyMatrix, and INVALID_ARGUMENT ("cannot be mapped") for a float16 or
// Fortran-order file, which only a read can convert; INTERNAL when mmap
// fails.
absl::StatusOr<MappedNpyMatrix> MapNpyMatrix(const std::string& path);

// Writes a 2-D '<f4' C-order .npy file of a known shape piece by piece, so
// that gigabytes of rows can be gathered from several files without a heap
// copy of them all. Not atomic: for a private staging file that is renamed
// or linked into place once Finish succeeded. One thread; move-only.
class NpyMatrixWriter {
 public:
  // Creates `path` (replacing a file there) and writes the header of a
  // `rows` x `cols` matrix. Errors name the file.
  static absl::StatusOr<NpyMatrixWriter> Create(const std::string& path,
                                                size_t rows, size_t cols);

  // Appends the rows of the 2-D float .npy at `source` when its width is
  // cols() and they fit: a '<f4' C-order file is copied by the kernel, any
  // other (float16, Fortran order) is read whole, converted and written.
  // Returns the source's shape; nothing is appended when it does not fit
  // (the caller says why). The errors of ReadNpyMatrix; `observer` as its.
  absl::StatusOr<NpyShape2D> AppendFile(
      const std::string& source, const NpyReadObserver& observer = nullptr);

  // Appends `rows` row-major rows of cols() floats (INVALID_ARGUMENT past
  // the shape).
  absl::Status AppendRows(const float* data, size_t rows);

  // Checks that every row was appended (FAILED_PRECONDITION otherwise),
  // fsyncs and closes the file.
  absl::Status Finish();

  size_t cols() const { return cols_; }
  const std::string& path() const { return path_; }

 private:
  NpyMatrixWriter() = default;

  std::string path_;
  ScopedFd fd_;
  size_t rows_ = 0;
  size_t cols_ = 0;
  size_t appended_ = 0;  // rows
};

// Writes a C-order array of `shape` with dtype `descr` ("<i8", "<i4", "<f8"
// or "<f4"), whose bytes are `data` (product(shape) items), with
// WriteFileAtomically. INVALID_ARGUMENT for another descr or a shape whose
// size in bytes overflows; its errors otherwise (NOT_FOUND for a missing
// directory). `observer` as WriteFileAtomically's (header included).
absl::Status WriteNpyArray(const std::string& path, const std::string& descr,
                           const std::vector<size_t>& shape, const void* data,
                           const WriteObserver& observer = nullptr);

// Writes a 2-D '<f4' array (C order), as WriteNpyArray.
absl::Status WriteNpyMatrix(const std::string& path, const float* data,
                            size_t rows, size_t cols,
                            const WriteObserver& observer = nullptr);

// Writes a 1-D '<i8' array, as WriteNpyArray.
absl::Status WriteNpyInt64(const std::string& path,
                           const std::vector<int64_t>& values,
                           const WriteObserver& observer = nullptr);

}  // namespace hardneg

#endif  // HARDNEG_SRC_FORMAT_NPY_H_

// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0).
//
// Only what checkpoints need: little-endian float32/float16 2-D matrices and
// int64 (or int32, widened) 1-D vectors, C or Fortran order. Every error
// names the file and says what was expected and what was found.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SRC_FORMAT_NPY_H_
#define HARDNEG_SRC_FORMAT_NPY_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

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

// Reads a 2-D '<f4' or '<f2' array (float16 is widened to float32).
// INVALID_ARGUMENT for a bad magic string, an unparsable header, another
// dtype, a shape that is not 2-D or data shorter or longer than the shape
// says; NOT_FOUND when the file does not exist.
absl::StatusOr<NpyMatrix> ReadNpyMatrix(const std::string& path);

// The shape of the 2-D float array at `path`, from its header alone, with
// every check of ReadNpyMatrix but the data's values (the file's size must
// match the shape). For checking a budget before reading.
absl::StatusOr<NpyShape2D> ReadNpyMatrixShape(const std::string& path);

// The length of the 1-D int array at `path`, from its header alone, with
// every check of ReadNpyInt64 but the data's values.
absl::StatusOr<size_t> ReadNpyInt64Length(const std::string& path);

// Reads a 1-D '<i8' or '<i4' array, widened to int64.
absl::StatusOr<std::vector<int64_t>> ReadNpyInt64(const std::string& path);

// Writes a 2-D '<f4' array (C order), via a temporary file and a rename.
absl::Status WriteNpyMatrix(const std::string& path, const float* data,
                            size_t rows, size_t cols);

// Writes a 1-D '<i8' array, via a temporary file and a rename.
absl::Status WriteNpyInt64(const std::string& path,
                           const std::vector<int64_t>& values);

}  // namespace hardneg

#endif  // HARDNEG_SRC_FORMAT_NPY_H_

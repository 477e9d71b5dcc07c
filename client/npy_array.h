// The .npy handling the CLI needs beyond src/npy.h: integer arrays of one or
// two dimensions (positive ids are [n, k]) and writing arrays of any shape
// (mined ids [n, k], scores [n, k], embeddings [n, k, dim]).
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_CLIENT_NPY_ARRAY_H_
#define HARDNEG_CLIENT_NPY_ARRAY_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace hardneg::client {

// A row-major int64 matrix. A 1-D file of n values reads as [n, 1].
struct NpyInt64Matrix {
  size_t rows = 0;
  size_t cols = 0;
  std::vector<int64_t> data;  // rows * cols
};

// Reads a 1-D or 2-D '<i8' or '<i4' array (int32 is widened), C or Fortran
// order, .npy format 1.0 to 3.0. NOT_FOUND when the file does not exist;
// INVALID_ARGUMENT naming the file for a bad magic string, an unparsable
// header, another dtype, another number of dimensions, or data shorter or
// longer than the shape says.
absl::StatusOr<NpyInt64Matrix> ReadNpyInt64Matrix(const std::string& path);

// Writes a C-order array of `shape` with dtype `descr` ("<i8" or "<f4"),
// whose bytes are `data` (product(shape) * element size of them), to a
// temporary file renamed to `path`. INVALID_ARGUMENT for another descr;
// the errno's code (naming the file) when it cannot be written.
absl::Status WriteNpyArray(const std::string& path, const std::string& descr,
                           const std::vector<size_t>& shape, const void* data);

}  // namespace hardneg::client

#endif  // HARDNEG_CLIENT_NPY_ARRAY_H_

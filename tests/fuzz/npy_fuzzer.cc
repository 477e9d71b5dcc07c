// Fuzzes the .npy readers (src/format/npy.h): the input is a whole file, read
// by ReadNpyMatrix, ReadNpyInt64 and ReadNpyInt64Matrix. Any reader may reject
// it, with INVALID_ARGUMENT; what it accepts must agree with the header's
// shape.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "format/npy.h"
#include "fuzz_support.h"

namespace hardneg {
namespace {

void CheckRejection(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    fuzz::Fail("a bad .npy file gave " + status.ToString() +
               ", not INVALID_ARGUMENT");
  }
}

int TestOneInput(const uint8_t* data, size_t size) {
  static const std::string* path =
      new std::string(fuzz::ScratchDir() + "/input.npy");
  fuzz::WriteFile(*path, data, size);

  absl::StatusOr<NpyMatrix> matrix = ReadNpyMatrix(*path);
  if (matrix.ok()) {
    if (matrix->data.size() != matrix->rows * matrix->cols) {
      fuzz::Fail("matrix data does not hold rows x cols values");
    }
  } else {
    CheckRejection(matrix.status());
  }
  absl::StatusOr<std::vector<int64_t>> ints = ReadNpyInt64(*path);
  if (!ints.ok()) CheckRejection(ints.status());
  absl::StatusOr<NpyInt64Matrix> int_matrix = ReadNpyInt64Matrix(*path);
  if (int_matrix.ok()) {
    if (int_matrix->data.size() != int_matrix->rows * int_matrix->cols) {
      fuzz::Fail("int matrix data does not hold rows x cols values");
    }
  } else {
    CheckRejection(int_matrix.status());
  }
  return 0;
}

}  // namespace
}  // namespace hardneg

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return hardneg::TestOneInput(data, size);
}

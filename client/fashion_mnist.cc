#include "client/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string_view>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace hardneg::client {
namespace {

constexpr uint8_t kIdxUnsignedByte = 0x08;
constexpr size_t kIdxMaxDims = 4;

struct GzCloser {
  void operator()(gzFile file) const { gzclose(file); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// The whole file, decompressed (gzread passes plain files through).
absl::StatusOr<std::vector<uint8_t>> ReadGzFile(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  GzFile file(gzopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open for reading"));
  }
  std::vector<uint8_t> bytes;
  constexpr size_t kChunk = 1 << 20;
  for (;;) {
    const size_t old_size = bytes.size();
    bytes.resize(old_size + kChunk);
    const int n = gzread(file.get(), bytes.data() + old_size, kChunk);
    if (n < 0) {
      int errnum = 0;
      const char* message = gzerror(file.get(), &errnum);
      return absl::DataLossError(
          absl::StrCat(path, ": corrupt gzip data: ", message));
    }
    bytes.resize(old_size + static_cast<size_t>(n));
    if (n == 0) break;
  }
  return bytes;
}

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string FileName(const std::string& dir, FashionMnistSplit split,
                     const char* kind) {
  const char* prefix = split == FashionMnistSplit::kTrain ? "train" : "t10k";
  const char* suffix =
      std::string_view(kind) == "images" ? "-idx3-ubyte.gz" : "-idx1-ubyte.gz";
  return (std::filesystem::path(dir) / absl::StrCat(prefix, "-", kind, suffix))
      .string();
}

absl::Status AddPackageHint(absl::Status status) {
  if (!absl::IsNotFound(status)) return status;
  return absl::NotFoundError(absl::StrCat(
      status.message(),
      " (install Debian's dataset-fashion-mnist, or pass the directory "
      "holding the IDX files)"));
}

}  // namespace

const char* FashionMnistClassName(int64_t label) {
  if (label < 0 ||
      label >= static_cast<int64_t>(kFashionMnistClassNames.size())) {
    return "unknown";
  }
  return kFashionMnistClassNames[static_cast<size_t>(label)];
}

absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path) {
  absl::StatusOr<std::vector<uint8_t>> bytes = ReadGzFile(path);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() < 4 || (*bytes)[0] != 0 || (*bytes)[1] != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not an IDX file (bad magic number)"));
  }
  if ((*bytes)[2] != kIdxUnsignedByte) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": IDX element type 0x",
        absl::Hex(static_cast<unsigned>((*bytes)[2]), absl::kZeroPad2),
        ", expected 0x08 (unsigned byte)"));
  }
  const size_t ndims = (*bytes)[3];
  if (ndims == 0 || ndims > kIdxMaxDims) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": IDX array has ", ndims,
                     " dimensions, expected 1 to ", kIdxMaxDims));
  }
  const size_t header = 4 + 4 * ndims;
  if (bytes->size() < header) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": truncated IDX header"));
  }
  IdxArray array;
  size_t elements = 1;
  for (size_t d = 0; d < ndims; ++d) {
    array.shape.push_back(BigEndian32(bytes->data() + 4 + 4 * d));
    elements *= array.shape.back();
  }
  if (bytes->size() - header != elements) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": IDX shape says ", elements, " bytes of data, ",
                     "the file holds ", bytes->size() - header));
  }
  array.data.assign(bytes->begin() + static_cast<std::ptrdiff_t>(header),
                    bytes->end());
  return array;
}

absl::StatusOr<FashionMnistData> ReadFashionMnist(const std::string& dir,
                                                  FashionMnistSplit split,
                                                  bool normalize,
                                                  size_t limit) {
  const std::string images_path = FileName(dir, split, "images");
  const std::string labels_path = FileName(dir, split, "labels");
  absl::StatusOr<IdxArray> images = ReadIdxFile(images_path);
  if (!images.ok()) return AddPackageHint(images.status());
  absl::StatusOr<IdxArray> labels = ReadIdxFile(labels_path);
  if (!labels.ok()) return AddPackageHint(labels.status());

  if (images->shape.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, ": expected 3 dimensions [n, rows, cols], ",
                     "found ", images->shape.size()));
  }
  if (labels->shape.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(labels_path, ": expected 1 dimension [n], found ",
                     labels->shape.size()));
  }
  if (images->shape[0] != labels->shape[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, " holds ", images->shape[0], " images but ",
                     labels_path, " holds ", labels->shape[0], " labels"));
  }

  FashionMnistData data;
  data.rows = images->shape[0];
  if (limit > 0) data.rows = std::min(data.rows, limit);
  data.dim = size_t{images->shape[1]} * images->shape[2];
  data.labels.resize(data.rows);
  for (size_t i = 0; i < data.rows; ++i) {
    const uint8_t label = labels->data[i];
    if (label >= kFashionMnistClassNames.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(labels_path, ": label ", static_cast<int>(label),
                       " at index ", i, " is not a class (expected 0..9)"));
    }
    data.labels[i] = label;
  }
  data.images.resize(data.rows * data.dim);
  for (size_t i = 0; i < data.rows; ++i) {
    const uint8_t* pixels = images->data.data() + i * data.dim;
    float* out = data.images.data() + i * data.dim;
    double squared_norm = 0;
    for (size_t j = 0; j < data.dim; ++j) {
      out[j] = static_cast<float>(pixels[j]) / 255.0f;
      squared_norm += static_cast<double>(out[j]) * out[j];
    }
    if (normalize && squared_norm > 0) {
      const float scale = static_cast<float>(1.0 / std::sqrt(squared_norm));
      for (size_t j = 0; j < data.dim; ++j) out[j] *= scale;
    }
  }
  return data;
}

}  // namespace hardneg::client

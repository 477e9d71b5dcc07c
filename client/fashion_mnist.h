// Reading Fashion-MNIST from its IDX files, as installed by Debian's
// `dataset-fashion-mnist` package (gzip-compressed; plain files work too):
//
//   <dir>/train-images-idx3-ubyte.gz  uint8 [60000, 28, 28]
//   <dir>/train-labels-idx1-ubyte.gz  uint8 [60000], classes 0..9
//   <dir>/t10k-images-idx3-ubyte.gz   uint8 [10000, 28, 28]
//   <dir>/t10k-labels-idx1-ubyte.gz   uint8 [10000]
//
// Each image becomes a 784-float vector of pixel/255, optionally scaled to
// unit L2 norm (so that inner product is cosine similarity). Every error
// names the file and what was wrong.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_CLIENT_FASHION_MNIST_H_
#define HARDNEG_CLIENT_FASHION_MNIST_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace hardneg::client {

// Where Debian's dataset-fashion-mnist package installs the files.
inline constexpr char kFashionMnistDefaultDir[] =
    "/usr/share/datasets/fashion-mnist";

// Class names, indexed by label.
inline constexpr std::array<const char*, 10> kFashionMnistClassNames = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

// The class name of `label`, or "unknown" outside 0..9.
const char* FashionMnistClassName(int64_t label);

enum class FashionMnistSplit { kTrain, kTest };

// One split. Image i has id i (its index in the file) and label labels[i].
struct FashionMnistData {
  size_t rows = 0;
  size_t dim = 0;             // 784 = 28 * 28
  std::vector<float> images;  // row-major rows x dim
  std::vector<int64_t> labels;
};

// An IDX array of unsigned bytes (type 0x08), as stored.
struct IdxArray {
  std::vector<uint32_t> shape;
  std::vector<uint8_t> data;  // product(shape) bytes
};

// Reads an IDX file, gzip-compressed or not. NOT_FOUND when it does not
// exist; INVALID_ARGUMENT for a bad magic number, a type other than unsigned
// byte, or data shorter or longer than the shape says; DATA_LOSS for a
// corrupt gzip stream.
absl::StatusOr<IdxArray> ReadIdxFile(const std::string& path);

// Reads the images and labels of `split` from `dir`. At most `limit` rows
// when `limit` > 0. With `normalize`, each image has unit L2 norm (an
// all-black image stays zero). Errors name the file; NOT_FOUND suggests the
// Debian package.
absl::StatusOr<FashionMnistData> ReadFashionMnist(const std::string& dir,
                                                  FashionMnistSplit split,
                                                  bool normalize,
                                                  size_t limit = 0);

}  // namespace hardneg::client

#endif  // HARDNEG_CLIENT_FASHION_MNIST_H_

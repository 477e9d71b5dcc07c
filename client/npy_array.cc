#include "client/npy_array.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace hardneg::client {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLength = 6;

absl::Status Invalid(const std::string& path, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": ", std::string(what)));
}

// The value text of `key` in the header dict, up to the next top-level ','
// or '}' (so a shape tuple stays whole).
std::optional<std::string_view> DictValue(std::string_view dict,
                                          std::string_view key) {
  for (const char quote : {'\'', '"'}) {
    const std::string quoted = absl::StrCat(
        std::string(1, quote), std::string(key), std::string(1, quote));
    size_t pos = dict.find(quoted);
    if (pos == std::string_view::npos) continue;
    pos = dict.find(':', pos + quoted.size());
    if (pos == std::string_view::npos) return std::nullopt;
    ++pos;
    int depth = 0;
    size_t end = pos;
    for (; end < dict.size(); ++end) {
      const char c = dict[end];
      if (c == '(') ++depth;
      if (c == ')') --depth;
      if (depth == 0 && (c == ',' || c == '}')) break;
    }
    std::string_view value = dict.substr(pos, end - pos);
    while (!value.empty() && absl::ascii_isspace(value.front())) {
      value.remove_prefix(1);
    }
    while (!value.empty() && absl::ascii_isspace(value.back())) {
      value.remove_suffix(1);
    }
    return value;
  }
  return std::nullopt;
}

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<size_t> shape;
  size_t data_offset = 0;
};

absl::StatusOr<NpyHeader> ParseHeader(const std::string& path,
                                      const std::string& bytes) {
  if (bytes.size() < kMagicLength + 4 ||
      bytes.compare(0, kMagicLength, kMagic) != 0) {
    return Invalid(path, "not a .npy file (bad magic string)");
  }
  const auto major = static_cast<uint8_t>(bytes[6]);
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t header_length = 0;
  size_t prefix = 0;
  if (major == 1) {
    header_length = p[8] | (size_t{p[9]} << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return Invalid(path, "truncated .npy header");
    header_length = p[8] | (size_t{p[9]} << 8) | (size_t{p[10]} << 16) |
                    (size_t{p[11]} << 24);
    prefix = 12;
  } else {
    return Invalid(path, absl::StrCat(".npy format version ", major,
                                      " is not supported (1 to 3 are)"));
  }
  if (bytes.size() < prefix + header_length) {
    return Invalid(path, "truncated .npy header");
  }
  const std::string_view dict(bytes.data() + prefix, header_length);
  NpyHeader header;
  header.data_offset = prefix + header_length;

  const std::optional<std::string_view> descr = DictValue(dict, "descr");
  if (!descr || descr->size() < 2) {
    return Invalid(path, "the .npy header has no 'descr'");
  }
  header.descr = std::string(descr->substr(1, descr->size() - 2));

  const std::optional<std::string_view> fortran =
      DictValue(dict, "fortran_order");
  if (!fortran || (*fortran != "True" && *fortran != "False")) {
    return Invalid(path, "the .npy header has no valid 'fortran_order'");
  }
  header.fortran_order = *fortran == "True";

  const std::optional<std::string_view> shape = DictValue(dict, "shape");
  if (!shape || shape->size() < 2 || shape->front() != '(' ||
      shape->back() != ')') {
    return Invalid(path, "the .npy header has no valid 'shape'");
  }
  std::string_view dims = shape->substr(1, shape->size() - 2);
  while (!dims.empty()) {
    const size_t comma = dims.find(',');
    std::string_view dim = dims.substr(0, comma);
    dims = comma == std::string_view::npos ? std::string_view()
                                           : dims.substr(comma + 1);
    while (!dim.empty() && absl::ascii_isspace(dim.front())) {
      dim.remove_prefix(1);
    }
    while (!dim.empty() && absl::ascii_isspace(dim.back())) {
      dim.remove_suffix(1);
    }
    if (dim.empty()) continue;  // the trailing comma of "(3,)"
    uint64_t value = 0;
    if (!absl::SimpleAtoi(std::string(dim), &value)) {
      return Invalid(path, absl::StrCat("the .npy shape ", std::string(*shape),
                                        " is not a tuple of integers"));
    }
    header.shape.push_back(static_cast<size_t>(value));
  }
  return header;
}

std::string ShapeString(const std::vector<size_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

size_t ElementSize(const std::string& descr) {
  if (descr == "<i8" || descr == "<f8") return 8;
  if (descr == "<i4" || descr == "<f4") return 4;
  return 0;
}

}  // namespace

absl::StatusOr<NpyInt64Matrix> ReadNpyInt64Matrix(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return absl::ErrnoToStatus(error, absl::StrCat(path, ": cannot open"));
  }
  const std::string bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  absl::StatusOr<NpyHeader> header = ParseHeader(path, bytes);
  if (!header.ok()) return header.status();
  if (header->descr != "<i8" && header->descr != "<i4") {
    return Invalid(path, absl::StrCat("dtype '", header->descr,
                                      "', expected int64 ('<i8') or int32 "
                                      "('<i4')"));
  }
  if (header->shape.size() != 1 && header->shape.size() != 2) {
    return Invalid(path, absl::StrCat("shape ", ShapeString(header->shape),
                                      ", expected [n] or [n, k]"));
  }
  NpyInt64Matrix matrix;
  matrix.rows = header->shape[0];
  matrix.cols = header->shape.size() == 2 ? header->shape[1] : 1;
  const size_t element_size = ElementSize(header->descr);
  const size_t expected = matrix.rows * matrix.cols * element_size;
  const size_t found = bytes.size() - header->data_offset;
  if (found != expected) {
    return Invalid(
        path, absl::StrCat("shape ", ShapeString(header->shape), " needs ",
                           expected, " bytes of data, the file holds ", found));
  }
  matrix.data.resize(matrix.rows * matrix.cols);
  const char* src = bytes.data() + header->data_offset;
  for (size_t i = 0; i < matrix.data.size(); ++i) {
    int64_t value = 0;
    if (element_size == 8) {
      std::memcpy(&value, src + 8 * i, 8);
    } else {
      int32_t narrow = 0;
      std::memcpy(&narrow, src + 4 * i, 4);
      value = narrow;
    }
    // Fortran order stores column after column.
    const size_t out = header->fortran_order
                           ? (i % matrix.rows) * matrix.cols + i / matrix.rows
                           : i;
    matrix.data[out] = value;
  }
  return matrix;
}

absl::Status WriteNpyArray(const std::string& path, const std::string& descr,
                           const std::vector<size_t>& shape, const void* data) {
  const size_t element_size = ElementSize(descr);
  if (element_size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write dtype '", descr, "' to ", path));
  }
  size_t elements = 1;
  for (size_t dim : shape) elements *= dim;

  std::string dict = absl::StrCat(
      "{'descr': '", descr,
      "', 'fortran_order': False, 'shape': ", ShapeString(shape), ", }");
  // Pad so that the data starts on a 64-byte boundary; end with '\n'.
  const size_t unpadded = kMagicLength + 4 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  if (dict.size() > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeString(shape), " is too long for ", path));
  }
  std::string bytes(kMagic, kMagicLength);
  bytes.push_back('\x01');
  bytes.push_back('\x00');
  bytes.push_back(static_cast<char>(dict.size() & 0xff));
  bytes.push_back(static_cast<char>(dict.size() >> 8));
  bytes += dict;

  const std::string temp = absl::StrCat(path, ".tmp-", getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::ErrnoToStatus(errno,
                                 absl::StrCat(path, ": cannot create ", temp));
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.write(static_cast<const char*>(data),
              static_cast<std::streamsize>(elements * element_size));
    out.close();
    if (!out) {
      const int error = errno;
      std::remove(temp.c_str());
      return absl::ErrnoToStatus(error, absl::StrCat(path, ": write failed"));
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temp.c_str());
    return absl::ErrnoToStatus(error,
                               absl::StrCat(path, ": cannot rename ", temp));
  }
  return absl::OkStatus();
}

}  // namespace hardneg::client

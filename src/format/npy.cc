#include "format/npy.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"
#include "format/file_util.h"

// Data is read and written with raw memcpy-like I/O, and '=' ("native") in a
// header is taken to mean little-endian: both are only right on a
// little-endian host.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "npy.cc assumes a little-endian host");

namespace hardneg {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// numpy pads the header so that the data starts on this boundary.
constexpr size_t kHeaderAlign = 64;
// numpy itself refuses headers above 10 KB by default; anything far larger is
// garbage, and the bound keeps a corrupt length from allocating gigabytes.
constexpr uint32_t kMaxHeaderLen = 1 << 20;
// Version 1.0 stores the header length in 2 bytes; 2.0 and 3.0 in 4.
constexpr size_t kMaxV1HeaderLen = 0xffff;

absl::Status PathError(const std::string& path, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", reason));
}

// A header excerpt safe to quote in an error message.
std::string Quote(absl::string_view text) {
  constexpr size_t kMaxQuoted = 200;
  std::string quoted =
      absl::CHexEscape(text.substr(0, std::min(text.size(), kMaxQuoted)));
  if (text.size() > kMaxQuoted) absl::StrAppend(&quoted, "...");
  return absl::StrCat("\"", quoted, "\"");
}

// The parsed header dictionary,
// e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }.
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<size_t> shape;
  size_t data_offset = 0;
};

std::string ShapeString(const std::vector<size_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

// A recursive-descent parser for the Python literal subset numpy writes:
// a dict of quoted keys to quoted strings, True/False and tuples of ints.
// Structured dtypes (a list as 'descr') are recognised only to be rejected
// with a message that says so.
class HeaderParser {
 public:
  explicit HeaderParser(absl::string_view text) : text_(text) {}

  // On failure returns the reason, without the file name.
  absl::StatusOr<NpyHeader> Parse() {
    NpyHeader header;
    bool have_descr = false, have_order = false, have_shape = false;
    SkipSpace();
    if (!Consume('{')) return Error("expected '{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      std::string key;
      HARDNEG_RETURN_IF_ERROR(ParseString(&key));
      SkipSpace();
      if (!Consume(':')) return Error("expected ':' after a key");
      SkipSpace();
      if (key == "descr") {
        if (Peek() == '[') {
          return absl::InvalidArgumentError(
              "structured dtypes (a list as 'descr') are not supported");
        }
        HARDNEG_RETURN_IF_ERROR(ParseString(&header.descr));
        have_descr = true;
      } else if (key == "fortran_order") {
        HARDNEG_RETURN_IF_ERROR(ParseBool(&header.fortran_order));
        have_order = true;
      } else if (key == "shape") {
        HARDNEG_RETURN_IF_ERROR(ParseShape(&header.shape));
        have_shape = true;
      } else {
        // numpy never writes other keys; tolerate them so a future numpy
        // that adds one does not break old readers.
        HARDNEG_RETURN_IF_ERROR(SkipValue());
      }
      SkipSpace();
      if (Consume('}')) break;
      if (!Consume(',')) return Error("expected ',' or '}'");
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after '}'");
    if (!have_descr) return Missing("descr");
    if (!have_order) return Missing("fortran_order");
    if (!have_shape) return Missing("shape");
    return header;
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
            text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("unparsable header: ", what,
                                                   " at offset ", pos_, " in ",
                                                   Quote(text_)));
  }
  absl::Status Missing(absl::string_view key) const {
    return absl::InvalidArgumentError(absl::StrCat(
        "unparsable header: missing key '", key, "' in ", Quote(text_)));
  }

  absl::Status ParseString(std::string* out) {
    char quote = Peek();
    if (quote != '\'' && quote != '"') return Error("expected a quoted string");
    ++pos_;
    size_t end = text_.find(quote, pos_);
    if (end == absl::string_view::npos) return Error("unterminated string");
    out->assign(text_.data() + pos_, end - pos_);
    pos_ = end + 1;
    return absl::OkStatus();
  }

  absl::Status ParseBool(bool* out) {
    if (absl::StartsWith(text_.substr(pos_), "True")) {
      *out = true;
      pos_ += 4;
    } else if (absl::StartsWith(text_.substr(pos_), "False")) {
      *out = false;
      pos_ += 5;
    } else {
      return Error("expected True or False");
    }
    return absl::OkStatus();
  }

  absl::Status ParseSize(size_t* out) {
    size_t start = pos_;
    size_t value = 0;
    while (Peek() >= '0' && Peek() <= '9') {
      size_t digit = static_cast<size_t>(Peek() - '0');
      if (value > (std::numeric_limits<size_t>::max() - digit) / 10) {
        return Error("dimension too large");
      }
      value = value * 10 + digit;
      ++pos_;
    }
    if (pos_ == start) return Error("expected a non-negative integer");
    Consume('L');  // Python 2 numpy wrote longs as "3L".
    *out = value;
    return absl::OkStatus();
  }

  absl::Status ParseShape(std::vector<size_t>* shape) {
    if (!Consume('(')) return Error("expected a tuple for 'shape'");
    shape->clear();
    while (true) {
      SkipSpace();
      if (Consume(')')) return absl::OkStatus();
      size_t dim = 0;
      HARDNEG_RETURN_IF_ERROR(ParseSize(&dim));
      shape->push_back(dim);
      SkipSpace();
      if (Consume(')')) return absl::OkStatus();
      if (!Consume(',')) return Error("expected ',' or ')' in 'shape'");
    }
  }

  // Skips a value of an unknown key: a string, a bare word or number, or a
  // bracketed group.
  absl::Status SkipValue() {
    char c = Peek();
    if (c == '\'' || c == '"') {
      std::string ignored;
      return ParseString(&ignored);
    }
    int depth = 0;
    while (pos_ < text_.size()) {
      c = text_[pos_];
      if (c == '(' || c == '[' || c == '{') ++depth;
      if (c == ')' || c == ']' || c == '}') {
        if (depth == 0) return absl::OkStatus();
        --depth;
      }
      if (c == ',' && depth == 0) return absl::OkStatus();
      if (c == '\'' || c == '"') {
        std::string ignored;
        HARDNEG_RETURN_IF_ERROR(ParseString(&ignored));
        continue;
      }
      ++pos_;
    }
    return Error("unterminated value");
  }

  absl::string_view text_;
  size_t pos_ = 0;
};

// What a reader accepts: a type code ('f' or 'i') and its allowed sizes.
struct DtypeSpec {
  char kind;
  int sizes[2];
  const char* expected;  // for messages, e.g. "float32 '<f4' or float16 '<f2'"
  const char* convert_hint;
};

constexpr DtypeSpec kFloatSpec = {
    'f', {4, 2}, "float32 '<f4' or float16 '<f2'", "arr.astype(np.float32)"};
constexpr DtypeSpec kIntSpec = {
    'i', {8, 4}, "int64 '<i8' or int32 '<i4'", "arr.astype(np.int64)"};

// Checks the dtype against `spec` and returns the item size in bytes.
absl::StatusOr<size_t> CheckDtype(const std::string& descr,
                                  const DtypeSpec& spec) {
  auto unsupported = [&]() {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported dtype '", descr, "': expected ",
                     spec.expected, " (convert with ", spec.convert_hint, ")"));
  };
  if (descr.size() < 3) return unsupported();
  char order = descr[0];
  if (order == '>') {
    return absl::InvalidArgumentError(absl::StrCat(
        "big-endian dtype '", descr, "' is not supported: expected ",
        spec.expected, " (convert with arr.astype('<", descr.substr(1), "'))"));
  }
  // numpy writes '<' for multi-byte little-endian types and '|' where byte
  // order does not apply; '=' (native) is little-endian on this host.
  if (order != '<' && order != '|' && order != '=') return unsupported();
  if (descr[1] != spec.kind) return unsupported();
  absl::string_view digits = absl::string_view(descr).substr(2);
  for (int size : spec.sizes) {
    if (digits == absl::StrCat(size)) return static_cast<size_t>(size);
  }
  return unsupported();
}

// The numbers of dimensions a reader accepts.
struct RankSpec {
  size_t min_ndim;
  size_t max_ndim;
  const char* expected;  // for messages, e.g. "a 2-D array [rows, dim]"
};

constexpr RankSpec kMatrixRank = {2, 2, "a 2-D array [rows, dim]"};
constexpr RankSpec kVectorRank = {1, 1, "a 1-D array [n]"};
constexpr RankSpec kIntMatrixRank = {1, 2, "a 1-D or 2-D array [n] or [n, k]"};

// The number of items of `shape`, or nullopt when they, or their bytes at
// `item_size` each, overflow size_t.
std::optional<size_t> CountItems(const std::vector<size_t>& shape,
                                 size_t item_size) {
  size_t count = 1;
  for (size_t dim : shape) {
    if (dim != 0 && count > std::numeric_limits<size_t>::max() / dim) {
      return std::nullopt;
    }
    count *= dim;
  }
  if (count > std::numeric_limits<size_t>::max() / item_size) {
    return std::nullopt;
  }
  return count;
}

absl::Status TruncatedHeader(const std::string& path, size_t file_size) {
  return PathError(path, absl::StrCat("truncated header: the file is only ",
                                      file_size, " bytes"));
}

// The size of the header-length field of format `major`.`minor`.
absl::StatusOr<size_t> LengthFieldSize(const std::string& path, int major,
                                       int minor) {
  if (major == 1 && minor == 0) return 2;
  if ((major == 2 || major == 3) && minor == 0) return 4;
  return PathError(
      path, absl::StrCat("unsupported .npy format version ", major, ".", minor,
                         ": expected 1.0, 2.0 or 3.0"));
}

// Reads the preamble, magic (6), version (2), then a 2-byte (v1) or 4-byte
// (v2, v3) little-endian length, and returns the header length it gives.
absl::StatusOr<size_t> ReadPreamble(int fd, const std::string& path,
                                    size_t file_size, size_t* preamble_len) {
  unsigned char bytes[kMagicLen + 2 + 4];
  HARDNEG_ASSIGN_OR_RETURN(size_t got,
                           ReadUpTo(fd, bytes, kMagicLen + 2, path));
  absl::string_view magic(reinterpret_cast<const char*>(bytes),
                          std::min(got, kMagicLen));
  if (magic != absl::string_view(kMagic, magic.size()) || got == 0) {
    return PathError(
        path, absl::StrCat("not a .npy file: bad magic string ", Quote(magic),
                           ", expected ", Quote(absl::string_view(kMagic))));
  }
  if (got < kMagicLen + 2) return TruncatedHeader(path, file_size);
  HARDNEG_ASSIGN_OR_RETURN(const size_t len_size,
                           LengthFieldSize(path, bytes[6], bytes[7]));
  HARDNEG_ASSIGN_OR_RETURN(got,
                           ReadUpTo(fd, bytes + kMagicLen + 2, len_size, path));
  if (got < len_size) return TruncatedHeader(path, file_size);
  size_t header_len = 0;
  for (size_t i = 0; i < len_size; ++i) {
    header_len |= static_cast<size_t>(bytes[kMagicLen + 2 + i]) << (8 * i);
  }
  *preamble_len = kMagicLen + 2 + len_size;
  if (header_len > kMaxHeaderLen) {
    return PathError(path, absl::StrCat("unparsable header: header length ",
                                        header_len, " is implausibly large"));
  }
  if (*preamble_len + header_len > file_size) {
    return PathError(path,
                     absl::StrCat("truncated header: it claims ", header_len,
                                  " bytes but the file is only ", file_size));
  }
  return header_len;
}

// Reads and parses the preamble and header dictionary of the file open as
// `fd`, leaving it at the start of the data.
absl::StatusOr<NpyHeader> ReadHeader(int fd, const std::string& path,
                                     size_t file_size) {
  size_t preamble_len = 0;
  HARDNEG_ASSIGN_OR_RETURN(const size_t header_len,
                           ReadPreamble(fd, path, file_size, &preamble_len));
  std::string header_text(header_len, '\0');
  HARDNEG_ASSIGN_OR_RETURN(size_t got,
                           ReadUpTo(fd, header_text.data(), header_len, path));
  if (got < header_len) return PathError(path, "file shrank while reading");
  absl::StatusOr<NpyHeader> header = HeaderParser(header_text).Parse();
  if (!header.ok()) return PathError(path, header.status().message());
  header->data_offset = preamble_len + header_len;
  return header;
}

absl::Status CheckRank(const std::string& path, const NpyHeader& header,
                       const RankSpec& rank) {
  const size_t ndim = header.shape.size();
  if (ndim >= rank.min_ndim && ndim <= rank.max_ndim) return absl::OkStatus();
  return PathError(path,
                   absl::StrCat("wrong shape: expected ", rank.expected,
                                ", found shape ", ShapeString(header.shape)));
}

// Checks that the file, `file_size` bytes, holds exactly the data the
// header's shape says; returns the number of items.
absl::StatusOr<size_t> CheckDataSize(const std::string& path,
                                     const NpyHeader& header, size_t item_size,
                                     size_t file_size) {
  const std::string shape = ShapeString(header.shape);
  const std::optional<size_t> count = CountItems(header.shape, item_size);
  if (!count.has_value()) {
    return PathError(path, absl::StrCat("shape ", shape, " is too large"));
  }
  const size_t expected = *count * item_size;
  const size_t present = file_size - header.data_offset;
  const std::string what = absl::StrCat("shape ", shape, " of '", header.descr,
                                        "' needs ", expected, " data bytes");
  if (present < expected) {
    return PathError(
        path, absl::StrCat("truncated data: ", what, ", found ", present));
  }
  if (present > expected) {
    return PathError(
        path, absl::StrCat("trailing data: ", what, ", found ", present, " (",
                           present - expected, " extra)"));
  }
  return *count;
}

// An open .npy file positioned at the start of its data.
struct OpenedNpy {
  ScopedFd fd;
  NpyHeader header;
  size_t item_size = 0;
  size_t count = 0;       // product of the shape
  size_t file_bytes = 0;  // when it was opened
};

// Opens `path`, parses and checks the header against `spec` and `rank`, and
// checks that the file holds exactly the data the shape says.
absl::StatusOr<OpenedNpy> OpenNpy(const std::string& path,
                                  const DtypeSpec& spec, const RankSpec& rank) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedFile file, OpenRegularFile(path));
  OpenedNpy npy;
  npy.fd = std::move(file.fd);
  npy.file_bytes = file.size;
  HARDNEG_ASSIGN_OR_RETURN(npy.header,
                           ReadHeader(npy.fd.get(), path, file.size));
  absl::StatusOr<size_t> item_size = CheckDtype(npy.header.descr, spec);
  if (!item_size.ok()) return PathError(path, item_size.status().message());
  npy.item_size = *item_size;
  HARDNEG_RETURN_IF_ERROR(CheckRank(path, npy.header, rank));
  HARDNEG_ASSIGN_OR_RETURN(
      npy.count, CheckDataSize(path, npy.header, npy.item_size, file.size));
  return npy;
}

// Bytes read between two calls of a read's observer: small enough for a
// few reports a second from a slow disk, large enough to cost nothing.
constexpr size_t kObservedChunk = size_t{8} << 20;

// Reads the data of `npy` into `dest`, which has room for npy.count items;
// in chunks, each reported to `observer`, when it is set.
absl::Status ReadData(OpenedNpy& npy, void* dest, const std::string& path,
                      const NpyReadObserver& observer = nullptr) {
  const size_t bytes = npy.count * npy.item_size;
  const size_t chunk = observer ? kObservedChunk : bytes;
  char* out = static_cast<char*>(dest);
  NpyReadProgress progress{npy.header.data_offset, npy.file_bytes, 0,
                           npy.count};
  if (observer) observer(progress);
  for (size_t done = 0; done < bytes;) {
    const size_t want = std::min(chunk, bytes - done);
    HARDNEG_ASSIGN_OR_RETURN(size_t got,
                             ReadUpTo(npy.fd.get(), out + done, want, path));
    if (got < want) return PathError(path, "file shrank while reading");
    done += got;
    if (observer) {
      progress.bytes_read = npy.header.data_offset + done;
      progress.items_read = done / npy.item_size;
      observer(progress);
    }
  }
  return absl::OkStatus();
}

// IEEE 754 binary16 to binary32; exact for every input, NaN payloads kept.
float HalfToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  const uint32_t mantissa = half & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  } else {
    // Zero or subnormal: mantissa * 2^-24, exact in float arithmetic.
    float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
    std::memcpy(&bits, &magnitude, sizeof(bits));
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

// Widens `count` items of type From, packed at the start of `buffer`, into
// `count` items of type To filling it. Working from the back never
// overwrites an item not yet read, so big float16 shards need no second
// buffer.
template <typename From, typename To, typename Convert>
void WidenInPlace(void* buffer, size_t count, Convert convert) {
  static_assert(sizeof(From) < sizeof(To), "must widen");
  char* bytes = static_cast<char*>(buffer);
  for (size_t i = count; i-- > 0;) {
    From from;
    std::memcpy(&from, bytes + i * sizeof(From), sizeof(From));
    To to = convert(from);
    std::memcpy(bytes + i * sizeof(To), &to, sizeof(To));
  }
}

// Reads the data of an int array (kIntSpec), widened to int64.
absl::StatusOr<std::vector<int64_t>> ReadInts(
    OpenedNpy& npy, const std::string& path,
    const NpyReadObserver& observer = nullptr) {
  std::vector<int64_t> values(npy.count);
  HARDNEG_RETURN_IF_ERROR(ReadData(npy, values.data(), path, observer));
  if (npy.item_size == 4) {
    WidenInPlace<int32_t, int64_t>(values.data(), npy.count,
                                   [](int32_t v) { return int64_t{v}; });
  }
  return values;
}

// Column-major rows x cols to row-major, in cache-friendly tiles.
template <typename T>
std::vector<T> Transpose(const std::vector<T>& column_major, size_t rows,
                         size_t cols) {
  constexpr size_t kTile = 64;
  std::vector<T> row_major(column_major.size());
  for (size_t r0 = 0; r0 < rows; r0 += kTile) {
    const size_t r1 = std::min(rows, r0 + kTile);
    for (size_t c0 = 0; c0 < cols; c0 += kTile) {
      const size_t c1 = std::min(cols, c0 + kTile);
      for (size_t c = c0; c < c1; ++c) {
        for (size_t r = r0; r < r1; ++r) {
          row_major[r * cols + c] = column_major[c * rows + r];
        }
      }
    }
  }
  return row_major;
}

std::string HeaderDict(absl::string_view descr, absl::string_view shape) {
  return absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, ",
                      "'shape': ", shape, ", }");
}

// The preamble and header, padded (as numpy does) so the data starts on a
// 64-byte boundary: version 1.0, or 2.0 when the header does not fit 1.0's
// 2-byte length.
std::string NpyPreamble(const std::string& dict) {
  auto total_for = [&](size_t len_size) {
    const size_t unpadded = kMagicLen + 2 + len_size + dict.size() + 1;
    return (unpadded + kHeaderAlign - 1) / kHeaderAlign * kHeaderAlign;
  };
  size_t len_size = 2;
  if (total_for(2) - (kMagicLen + 2 + 2) > kMaxV1HeaderLen) len_size = 4;
  const size_t total = total_for(len_size);
  const size_t header_len = total - (kMagicLen + 2 + len_size);
  std::string out(kMagic, kMagicLen);
  out.push_back(len_size == 2 ? '\x01' : '\x02');
  out.push_back('\x00');
  for (size_t i = 0; i < len_size; ++i) {
    out.push_back(static_cast<char>((header_len >> (8 * i)) & 0xff));
  }
  out += dict;
  out.append(header_len - dict.size() - 1, ' ');
  out.push_back('\n');
  return out;
}

// The item size of a dtype WriteNpyArray writes, or 0 for any other.
size_t WritableItemSize(absl::string_view descr) {
  if (descr == "<i8" || descr == "<f8") return 8;
  if (descr == "<i4" || descr == "<f4") return 4;
  return 0;
}

}  // namespace

absl::StatusOr<NpyMatrix> ReadNpyMatrix(const std::string& path,
                                        const NpyReadObserver& observer) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy,
                           OpenNpy(path, kFloatSpec, kMatrixRank));
  NpyMatrix matrix;
  matrix.rows = npy.header.shape[0];
  matrix.cols = npy.header.shape[1];
  matrix.data.resize(npy.count);
  HARDNEG_RETURN_IF_ERROR(ReadData(npy, matrix.data.data(), path, observer));
  if (npy.item_size == 2) {
    WidenInPlace<uint16_t, float>(matrix.data.data(), npy.count, HalfToFloat);
  }
  if (npy.header.fortran_order && matrix.rows > 1 && matrix.cols > 1) {
    matrix.data = Transpose(matrix.data, matrix.rows, matrix.cols);
  }
  return matrix;
}

absl::StatusOr<MappedNpyMatrix> MapNpyMatrix(const std::string& path) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy,
                           OpenNpy(path, kFloatSpec, kMatrixRank));
  const size_t rows = npy.header.shape[0];
  const size_t cols = npy.header.shape[1];
  if (npy.item_size != sizeof(float)) {
    return PathError(path,
                     absl::StrCat("cannot be mapped: dtype '", npy.header.descr,
                                  "' is not float32 '<f4'"));
  }
  if (npy.header.fortran_order && rows > 1 && cols > 1) {
    return PathError(path, "cannot be mapped: Fortran order, not C order");
  }
  HARDNEG_ASSIGN_OR_RETURN(
      MappedFloats data,
      MappedFloats::Map(npy.fd.get(), npy.file_bytes, npy.header.data_offset,
                        npy.count, path));
  return MappedNpyMatrix{rows, cols, std::move(data)};
}

absl::StatusOr<NpyMatrixWriter> NpyMatrixWriter::Create(const std::string& path,
                                                        size_t rows,
                                                        size_t cols) {
  const std::optional<size_t> count = CountItems({rows, cols}, sizeof(float));
  if (!count.has_value()) {
    return PathError(path, absl::StrCat("shape (", rows, ", ", cols,
                                        ") of '<f4' is too large"));
  }
  NpyMatrixWriter writer;
  writer.path_ = path;
  writer.rows_ = rows;
  writer.cols_ = cols;
  unlink(path.c_str());  // never write into a file someone may have mapped
  writer.fd_ = ScopedFd(
      open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!writer.fd_.valid()) return ErrnoError(path, "cannot create");
  HARDNEG_RETURN_IF_ERROR(WriteFully(
      writer.fd_.get(),
      NpyPreamble(HeaderDict("<f4", ShapeString({rows, cols}))), path));
  return writer;
}

absl::StatusOr<NpyShape2D> NpyMatrixWriter::AppendFile(
    const std::string& source, const NpyReadObserver& observer) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy,
                           OpenNpy(source, kFloatSpec, kMatrixRank));
  const NpyShape2D shape{npy.header.shape[0], npy.header.shape[1]};
  if (shape.cols != cols_ || shape.rows > rows_ - appended_) return shape;
  const bool fortran =
      npy.header.fortran_order && shape.rows > 1 && shape.cols > 1;
  if (npy.item_size != sizeof(float) || fortran) {
    HARDNEG_ASSIGN_OR_RETURN(NpyMatrix matrix, ReadNpyMatrix(source, observer));
    if (matrix.rows != shape.rows || matrix.cols != shape.cols) {
      return PathError(source, "changed while it was read");
    }
    HARDNEG_RETURN_IF_ERROR(AppendRows(matrix.data.data(), matrix.rows));
    return shape;
  }
  NpyReadProgress progress{npy.header.data_offset, npy.file_bytes, 0,
                           npy.count};
  if (observer) observer(progress);
  HARDNEG_RETURN_IF_ERROR(CopyFileBytes(
      npy.fd.get(), npy.header.data_offset, fd_.get(),
      npy.count * sizeof(float), source, path_, [&](size_t copied) {
        if (!observer) return;
        progress.bytes_read = npy.header.data_offset + copied;
        progress.items_read = copied / sizeof(float);
        observer(progress);
      }));
  appended_ += shape.rows;
  return shape;
}

absl::Status NpyMatrixWriter::AppendRows(const float* data, size_t rows) {
  if (rows > rows_ - appended_) {
    return PathError(path_, absl::StrCat("appending ", rows, " rows to ",
                                         appended_, " of ", rows_));
  }
  HARDNEG_RETURN_IF_ERROR(
      WriteFully(fd_.get(),
                 absl::string_view(reinterpret_cast<const char*>(data),
                                   rows * cols_ * sizeof(float)),
                 path_));
  appended_ += rows;
  return absl::OkStatus();
}

absl::Status NpyMatrixWriter::Finish() {
  if (appended_ != rows_) {
    return absl::FailedPreconditionError(absl::StrCat(
        path_, ": ", appended_, " of ", rows_, " rows were written"));
  }
  if (fsync(fd_.get()) != 0) return ErrnoError(path_, "fsync failed");
  return fd_.Close(path_);
}

absl::StatusOr<NpyShape2D> ReadNpyMatrixShape(const std::string& path) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy,
                           OpenNpy(path, kFloatSpec, kMatrixRank));
  return NpyShape2D{npy.header.shape[0], npy.header.shape[1]};
}

absl::StatusOr<size_t> ReadNpyInt64Length(const std::string& path) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy, OpenNpy(path, kIntSpec, kVectorRank));
  return npy.count;
}

absl::StatusOr<std::vector<int64_t>> ReadNpyInt64(
    const std::string& path, const NpyReadObserver& observer) {
  // Fortran order changes nothing for a 1-D array.
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy, OpenNpy(path, kIntSpec, kVectorRank));
  return ReadInts(npy, path, observer);
}

absl::StatusOr<NpyInt64Matrix> ReadNpyInt64Matrix(const std::string& path) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy,
                           OpenNpy(path, kIntSpec, kIntMatrixRank));
  NpyInt64Matrix matrix;
  matrix.rows = npy.header.shape[0];
  matrix.cols = npy.header.shape.size() == 2 ? npy.header.shape[1] : 1;
  HARDNEG_ASSIGN_OR_RETURN(matrix.data, ReadInts(npy, path));
  if (npy.header.fortran_order && matrix.rows > 1 && matrix.cols > 1) {
    matrix.data = Transpose(matrix.data, matrix.rows, matrix.cols);
  }
  return matrix;
}

absl::Status WriteNpyArray(const std::string& path, const std::string& descr,
                           const std::vector<size_t>& shape, const void* data,
                           const WriteObserver& observer) {
  const size_t item_size = WritableItemSize(descr);
  if (item_size == 0) {
    return PathError(path, absl::StrCat("cannot write dtype '", descr,
                                        "': expected '<i8', '<i4', '<f8' or "
                                        "'<f4'"));
  }
  const std::optional<size_t> count = CountItems(shape, item_size);
  if (!count.has_value()) {
    return PathError(path, absl::StrCat("shape ", ShapeString(shape), " of '",
                                        descr, "' is too large"));
  }
  const std::string preamble =
      NpyPreamble(HeaderDict(descr, ShapeString(shape)));
  return WriteFileAtomically(
      path, preamble,
      absl::string_view(static_cast<const char*>(data), *count * item_size),
      observer);
}

absl::Status WriteNpyMatrix(const std::string& path, const float* data,
                            size_t rows, size_t cols,
                            const WriteObserver& observer) {
  return WriteNpyArray(path, "<f4", {rows, cols}, data, observer);
}

absl::Status WriteNpyInt64(const std::string& path,
                           const std::vector<int64_t>& values,
                           const WriteObserver& observer) {
  return WriteNpyArray(path, "<i8", {values.size()}, values.data(), observer);
}

}  // namespace hardneg

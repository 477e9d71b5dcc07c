#include "format/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"

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

// Closes the descriptor on every path out of a reader or writer.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) close(fd_);
  }
  FileDescriptor(FileDescriptor&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)) {}
  FileDescriptor& operator=(FileDescriptor&&) = delete;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;

  int get() const { return fd_; }
  // Closes now so that the caller sees the error close() may report.
  int Close() {
    int rc = close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

absl::Status PathError(const std::string& path, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", reason));
}

absl::Status IoError(const std::string& path, absl::string_view action) {
  return absl::ErrnoToStatus(errno, absl::StrCat(path, ": ", action));
}

// Reads until `n` bytes arrived or the file ended; returns the count read.
absl::StatusOr<size_t> ReadUpTo(int fd, void* buf, size_t n,
                                const std::string& path) {
  char* out = static_cast<char*>(buf);
  size_t done = 0;
  while (done < n) {
    // Linux transfers at most ~2 GiB per call anyway.
    size_t chunk = std::min<size_t>(n - done, size_t{1} << 30);
    ssize_t got = read(fd, out + done, chunk);
    if (got < 0) {
      if (errno == EINTR) continue;
      return IoError(path, "read failed");
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

absl::Status WriteAll(int fd, const void* buf, size_t n,
                      const std::string& path) {
  const char* in = static_cast<const char*>(buf);
  while (n > 0) {
    size_t chunk = std::min<size_t>(n, size_t{1} << 30);
    ssize_t put = write(fd, in, chunk);
    if (put < 0) {
      if (errno == EINTR) continue;
      return IoError(path, "write failed");
    }
    in += put;
    n -= static_cast<size_t>(put);
  }
  return absl::OkStatus();
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

// An open .npy file positioned at the start of its data.
struct OpenedNpy {
  FileDescriptor fd;
  NpyHeader header;
  size_t item_size = 0;
  size_t count = 0;  // product of the shape
};

// Opens `path`, parses and checks the header against `spec` and `ndim`, and
// checks that the file holds exactly the data the shape says.
absl::StatusOr<OpenedNpy> OpenNpy(const std::string& path,
                                  const DtypeSpec& spec, size_t ndim,
                                  absl::string_view shape_hint) {
  int raw_fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw_fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return IoError(path, "cannot open");
  }
  OpenedNpy npy{FileDescriptor(raw_fd), {}, 0, 0};
  struct stat st;
  if (fstat(raw_fd, &st) != 0) return IoError(path, "cannot stat");
  if (!S_ISREG(st.st_mode)) return PathError(path, "not a regular file");
  const size_t file_size = static_cast<size_t>(st.st_size);

  // Magic (6), version (2), then a 2-byte (v1) or 4-byte (v2, v3) length.
  unsigned char preamble[12];
  HARDNEG_ASSIGN_OR_RETURN(size_t got,
                           ReadUpTo(raw_fd, preamble, kMagicLen + 2, path));
  absl::string_view magic(reinterpret_cast<const char*>(preamble),
                          std::min(got, kMagicLen));
  if (magic != absl::string_view(kMagic, magic.size()) || got == 0) {
    return PathError(
        path, absl::StrCat("not a .npy file: bad magic string ", Quote(magic),
                           ", expected ", Quote(absl::string_view(kMagic))));
  }
  if (got < kMagicLen + 2) {
    return PathError(path, absl::StrCat("truncated header: the file is only ",
                                        file_size, " bytes"));
  }
  const int major = preamble[6], minor = preamble[7];
  size_t len_size;
  if (major == 1 && minor == 0) {
    len_size = 2;
  } else if ((major == 2 || major == 3) && minor == 0) {
    len_size = 4;
  } else {
    return PathError(
        path, absl::StrCat("unsupported .npy format version ", major, ".",
                           minor, ": expected 1.0, 2.0 or 3.0"));
  }
  HARDNEG_ASSIGN_OR_RETURN(
      got, ReadUpTo(raw_fd, preamble + kMagicLen + 2, len_size, path));
  if (got < len_size) {
    return PathError(path, absl::StrCat("truncated header: the file is only ",
                                        file_size, " bytes"));
  }
  uint32_t header_len = 0;
  for (size_t i = 0; i < len_size; ++i) {
    header_len |= static_cast<uint32_t>(preamble[kMagicLen + 2 + i]) << (8 * i);
  }
  const size_t preamble_len = kMagicLen + 2 + len_size;
  if (header_len > kMaxHeaderLen) {
    return PathError(path, absl::StrCat("unparsable header: header length ",
                                        header_len, " is implausibly large"));
  }
  if (preamble_len + header_len > file_size) {
    return PathError(path,
                     absl::StrCat("truncated header: it claims ", header_len,
                                  " bytes but the file is only ", file_size));
  }
  std::string header_text(header_len, '\0');
  HARDNEG_ASSIGN_OR_RETURN(
      got, ReadUpTo(raw_fd, header_text.data(), header_len, path));
  if (got < header_len) return PathError(path, "file shrank while reading");

  absl::StatusOr<NpyHeader> header = HeaderParser(header_text).Parse();
  if (!header.ok()) return PathError(path, header.status().message());
  npy.header = *std::move(header);
  npy.header.data_offset = preamble_len + header_len;

  absl::StatusOr<size_t> item_size = CheckDtype(npy.header.descr, spec);
  if (!item_size.ok()) return PathError(path, item_size.status().message());
  npy.item_size = *item_size;

  if (npy.header.shape.size() != ndim) {
    return PathError(
        path,
        absl::StrCat("wrong shape: expected a ", ndim, "-D array ", shape_hint,
                     ", found shape ", ShapeString(npy.header.shape)));
  }
  size_t count = 1;
  for (size_t dim : npy.header.shape) {
    if (dim != 0 && count > std::numeric_limits<size_t>::max() / dim) {
      return PathError(path,
                       absl::StrCat("shape ", ShapeString(npy.header.shape),
                                    " is too large"));
    }
    count *= dim;
  }
  if (count > std::numeric_limits<size_t>::max() / npy.item_size) {
    return PathError(path, absl::StrCat("shape ", ShapeString(npy.header.shape),
                                        " is too large"));
  }
  npy.count = count;
  const size_t expected = count * npy.item_size;
  const size_t present = file_size - npy.header.data_offset;
  const std::string what =
      absl::StrCat("shape ", ShapeString(npy.header.shape), " of '",
                   npy.header.descr, "' needs ", expected, " data bytes");
  if (present < expected) {
    return PathError(
        path, absl::StrCat("truncated data: ", what, ", found ", present));
  }
  if (present > expected) {
    return PathError(
        path, absl::StrCat("trailing data: ", what, ", found ", present, " (",
                           present - expected, " extra)"));
  }
  return npy;
}

// Reads the data of `npy` into `dest`, which has room for npy.count items.
absl::Status ReadData(OpenedNpy& npy, void* dest, const std::string& path) {
  const size_t bytes = npy.count * npy.item_size;
  HARDNEG_ASSIGN_OR_RETURN(size_t got,
                           ReadUpTo(npy.fd.get(), dest, bytes, path));
  if (got < bytes) return PathError(path, "file shrank while reading");
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

// Column-major rows x cols to row-major, in cache-friendly tiles.
std::vector<float> Transpose(const std::vector<float>& column_major,
                             size_t rows, size_t cols) {
  constexpr size_t kTile = 64;
  std::vector<float> row_major(column_major.size());
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

// The version 1.0 preamble and header, padded (as numpy does) so the data
// starts on a 64-byte boundary.
std::string NpyPreamble(const std::string& dict) {
  const size_t unpadded = kMagicLen + 2 + 2 + dict.size() + 1;  // + '\n'
  const size_t total =
      (unpadded + kHeaderAlign - 1) / kHeaderAlign * kHeaderAlign;
  const size_t header_len = total - (kMagicLen + 2 + 2);
  std::string out(kMagic, kMagicLen);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header_len & 0xff));
  out.push_back(static_cast<char>(header_len >> 8));
  out += dict;
  out.append(total - unpadded, ' ');
  out.push_back('\n');
  return out;
}

// Writes `preamble` then `size` bytes of `data` to a temporary file next to
// `path`, then renames it over `path`, so a reader never sees a partial file.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& preamble, const void* data,
                                 size_t size) {
  std::string tmp = path + ".tmp-XXXXXX";
  int raw_fd = mkstemp(tmp.data());
  if (raw_fd < 0) return IoError(path, "cannot create a temporary file");
  FileDescriptor fd(raw_fd);
  absl::Status status = [&]() -> absl::Status {
    // mkstemp creates 0600; the files are meant to be shared like numpy's.
    if (fchmod(fd.get(), 0644) != 0) return IoError(tmp, "chmod failed");
    HARDNEG_RETURN_IF_ERROR(
        WriteAll(fd.get(), preamble.data(), preamble.size(), tmp));
    HARDNEG_RETURN_IF_ERROR(WriteAll(fd.get(), data, size, tmp));
    if (fsync(fd.get()) != 0) return IoError(tmp, "fsync failed");
    if (fd.Close() != 0) return IoError(tmp, "close failed");
    if (rename(tmp.c_str(), path.c_str()) != 0) {
      return IoError(path, "rename failed");
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) unlink(tmp.c_str());
  return status;
}

}  // namespace

absl::StatusOr<NpyMatrix> ReadNpyMatrix(const std::string& path) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy,
                           OpenNpy(path, kFloatSpec, 2, "[rows, dim]"));
  NpyMatrix matrix;
  matrix.rows = npy.header.shape[0];
  matrix.cols = npy.header.shape[1];
  matrix.data.resize(npy.count);
  HARDNEG_RETURN_IF_ERROR(ReadData(npy, matrix.data.data(), path));
  if (npy.item_size == 2) {
    WidenInPlace<uint16_t, float>(matrix.data.data(), npy.count, HalfToFloat);
  }
  if (npy.header.fortran_order && matrix.rows > 1 && matrix.cols > 1) {
    matrix.data = Transpose(matrix.data, matrix.rows, matrix.cols);
  }
  return matrix;
}

absl::StatusOr<NpyShape2D> ReadNpyMatrixShape(const std::string& path) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy,
                           OpenNpy(path, kFloatSpec, 2, "[rows, dim]"));
  return NpyShape2D{npy.header.shape[0], npy.header.shape[1]};
}

absl::StatusOr<size_t> ReadNpyInt64Length(const std::string& path) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy, OpenNpy(path, kIntSpec, 1, "[n]"));
  return npy.count;
}

absl::StatusOr<std::vector<int64_t>> ReadNpyInt64(const std::string& path) {
  // Fortran order changes nothing for a 1-D array.
  HARDNEG_ASSIGN_OR_RETURN(OpenedNpy npy, OpenNpy(path, kIntSpec, 1, "[n]"));
  std::vector<int64_t> values(npy.count);
  HARDNEG_RETURN_IF_ERROR(ReadData(npy, values.data(), path));
  if (npy.item_size == 4) {
    WidenInPlace<int32_t, int64_t>(values.data(), npy.count,
                                   [](int32_t v) { return int64_t{v}; });
  }
  return values;
}

absl::Status WriteNpyMatrix(const std::string& path, const float* data,
                            size_t rows, size_t cols) {
  if (rows != 0 &&
      cols > std::numeric_limits<size_t>::max() / sizeof(float) / rows) {
    return PathError(path, "matrix too large");
  }
  const std::string preamble =
      NpyPreamble(HeaderDict("<f4", absl::StrCat("(", rows, ", ", cols, ")")));
  return WriteFileAtomically(path, preamble, data, rows * cols * sizeof(float));
}

absl::Status WriteNpyInt64(const std::string& path,
                           const std::vector<int64_t>& values) {
  const std::string preamble =
      NpyPreamble(HeaderDict("<i8", absl::StrCat("(", values.size(), ",)")));
  return WriteFileAtomically(path, preamble, values.data(),
                             values.size() * sizeof(int64_t));
}

}  // namespace hardneg

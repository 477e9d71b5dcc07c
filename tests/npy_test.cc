#include "format/npy.h"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hardneg {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// Asserts the code and that the message holds every one of `parts`.
void ExpectError(const absl::Status& status, absl::StatusCode code,
                 std::initializer_list<std::string> parts) {
  EXPECT_EQ(status.code(), code) << status;
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(status.message()), HasSubstr(part));
  }
}

// A fresh directory per test, under gtest's temporary directory.
class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info =
        ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("npy_test_",
                        absl::StrReplaceAll(info->name(), {{"/", "_"}}), "_",
                        getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ / name; }

  std::string WriteBytes(const std::string& name, const std::string& bytes) {
    std::string path = Path(name);
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good());
    return path;
  }

  std::string ReadBytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  fs::path dir_;
};

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(T));
}

// A hand-made .npy file: magic, version, little-endian header length (2
// bytes for 1.x, 4 otherwise), `dict` padded with spaces and '\n' to 64
// bytes, then `data`.
std::string Npy(const std::string& dict, const std::string& data,
                int major = 1) {
  const size_t len_size = major == 1 ? 2 : 4;
  const size_t unpadded = 8 + len_size + dict.size() + 1;
  const size_t total = (unpadded + 63) / 64 * 64;
  const size_t header_len = total - 8 - len_size;
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  for (size_t i = 0; i < len_size; ++i) {
    out.push_back(static_cast<char>((header_len >> (8 * i)) & 0xff));
  }
  out += dict;
  out.append(total - unpadded, ' ');
  out.push_back('\n');
  return out + data;
}

std::string Dict(const std::string& descr, const std::string& shape,
                 bool fortran = false) {
  return absl::StrCat("{'descr': '", descr,
                      "', 'fortran_order': ", fortran ? "True" : "False",
                      ", 'shape': ", shape, ", }");
}

TEST_F(NpyTest, MatrixRoundTrip) {
  const std::vector<float> data = {1.5f, -2.25f, 0.0f, 3e38f, -1e-40f, 7.0f};
  const std::string path = Path("m.npy");
  ASSERT_TRUE(WriteNpyMatrix(path, data.data(), 2, 3).ok());
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2u);
  EXPECT_EQ(m->cols, 3u);
  EXPECT_EQ(m->data, data);
}

// What numpy writes for a C-order float32 array of `shape`: a v1.0 header
// padded so the data starts on a 64-byte boundary, then `data`.
void ExpectFloat32NpyV1(const std::string& bytes, const std::string& shape,
                        const std::string& data) {
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(bytes[8]) |
                            static_cast<unsigned char>(bytes[9]) << 8;
  const size_t data_offset = 10 + header_len;
  EXPECT_EQ(data_offset % 64, 0u);
  EXPECT_EQ(bytes[data_offset - 1], '\n');
  EXPECT_THAT(bytes.substr(10, header_len),
              HasSubstr(absl::StrCat("{'descr': '<f4', 'fortran_order': "
                                     "False, 'shape': ",
                                     shape, ", }")));
  EXPECT_EQ(bytes.substr(data_offset), data);
}

TEST_F(NpyTest, WrittenFileIsWhatNumpyWrites) {
  const std::vector<float> data = {1, 2, 3, 4, 5, 6};
  const std::string path = Path("m.npy");
  ASSERT_TRUE(WriteNpyMatrix(path, data.data(), 3, 2).ok());
  ExpectFloat32NpyV1(ReadBytes(path), "(3, 2)", Bytes(data));
}

TEST_F(NpyTest, EmptyMatrixRoundTrip) {
  const std::string path = Path("empty.npy");
  ASSERT_TRUE(WriteNpyMatrix(path, nullptr, 0, 8).ok());
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 0u);
  EXPECT_EQ(m->cols, 8u);
  EXPECT_TRUE(m->data.empty());
}

TEST_F(NpyTest, LargeMatrixRoundTrip) {
  const size_t rows = 1000, cols = 97;
  std::vector<float> data(rows * cols);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<float>(i) * 0.5f - 1000.0f;
  }
  const std::string path = Path("big.npy");
  ASSERT_TRUE(WriteNpyMatrix(path, data.data(), rows, cols).ok());
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, rows);
  EXPECT_EQ(m->cols, cols);
  EXPECT_EQ(m->data, data);
}

TEST_F(NpyTest, Int64RoundTrip) {
  const std::vector<int64_t> values = {0, -1, 42,
                                       std::numeric_limits<int64_t>::min(),
                                       std::numeric_limits<int64_t>::max()};
  const std::string path = Path("ids.npy");
  ASSERT_TRUE(WriteNpyInt64(path, values).ok());
  absl::StatusOr<std::vector<int64_t>> read = ReadNpyInt64(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, values);
}

TEST_F(NpyTest, EmptyInt64RoundTrip) {
  const std::string path = Path("ids.npy");
  ASSERT_TRUE(WriteNpyInt64(path, {}).ok());
  absl::StatusOr<std::vector<int64_t>> read = ReadNpyInt64(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->empty());
}

TEST_F(NpyTest, WriteReplacesAndLeavesNoTemporaryFiles) {
  const std::string path = Path("ids.npy");
  ASSERT_TRUE(WriteNpyInt64(path, {1, 2, 3}).ok());
  ASSERT_TRUE(WriteNpyInt64(path, {4}).ok());
  absl::StatusOr<std::vector<int64_t>> read = ReadNpyInt64(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(*read, ElementsAre(4));
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    names.push_back(entry.path().filename());
  }
  EXPECT_THAT(names, ElementsAre("ids.npy"));
}

TEST_F(NpyTest, WriteIntoMissingDirectoryFails) {
  const std::string path = Path("no/such/dir/m.npy");
  const float one = 1;
  absl::Status status = WriteNpyMatrix(path, &one, 1, 1);
  ExpectError(status, absl::StatusCode::kNotFound, {path});
  ExpectError(WriteNpyInt64(path, {1}), absl::StatusCode::kNotFound, {path});
}

TEST_F(NpyTest, ReadsFloat16IncludingSpecialValues) {
  // binary16 bit patterns and the float32 each must become.
  const std::vector<uint16_t> half = {
      0x3c00,  // 1
      0xc000,  // -2
      0x3555,  // 0.333251953125
      0x7bff,  // 65504, the largest finite
      0x0400,  // 2^-14, the smallest normal
      0x0001,  // 2^-24, the smallest subnormal
      0x03ff,  // 1023 * 2^-24, the largest subnormal
      0x8001,  // -2^-24
      0x0000,  // +0
      0x8000,  // -0
      0x7c00,  // +inf
      0xfc00,  // -inf
  };
  const std::vector<float> expected = {1.0f,
                                       -2.0f,
                                       0.333251953125f,
                                       65504.0f,
                                       std::ldexp(1.0f, -14),
                                       std::ldexp(1.0f, -24),
                                       1023 * std::ldexp(1.0f, -24),
                                       -std::ldexp(1.0f, -24),
                                       0.0f,
                                       -0.0f,
                                       std::numeric_limits<float>::infinity(),
                                       -std::numeric_limits<float>::infinity()};
  const std::string path =
      WriteBytes("h.npy", Npy(Dict("<f2", "(3, 4)"), Bytes(half)));
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 3u);
  EXPECT_EQ(m->cols, 4u);
  EXPECT_EQ(m->data, expected);
  EXPECT_FALSE(std::signbit(m->data[8]));
  EXPECT_TRUE(std::signbit(m->data[9]));
}

TEST_F(NpyTest, ReadsFloat16NaN) {
  const std::vector<uint16_t> half = {0x7e00, 0xfe00, 0x7c01, 0x3c00};
  const std::string path =
      WriteBytes("nan.npy", Npy(Dict("<f2", "(2, 2)"), Bytes(half)));
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(std::isnan(m->data[0]));
  EXPECT_TRUE(std::isnan(m->data[1]));
  EXPECT_TRUE(std::signbit(m->data[1]));
  EXPECT_TRUE(std::isnan(m->data[2]));  // a signalling payload is still NaN
  EXPECT_EQ(m->data[3], 1.0f);
}

TEST_F(NpyTest, Float16EveryFiniteValueMatchesItsDefinition) {
  std::vector<uint16_t> half;
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    if (((bits >> 10) & 0x1f) != 0x1f) half.push_back(bits);
  }
  const std::string path = WriteBytes(
      "all.npy",
      Npy(Dict("<f2", absl::StrCat("(", half.size(), ", 1)")), Bytes(half)));
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->data.size(), half.size());
  for (size_t i = 0; i < half.size(); ++i) {
    const int exponent = (half[i] >> 10) & 0x1f;
    const int mantissa = half[i] & 0x3ff;
    double magnitude = exponent == 0
                           ? std::ldexp(mantissa, -24)
                           : std::ldexp(1024 + mantissa, exponent - 25);
    const double value = (half[i] & 0x8000) ? -magnitude : magnitude;
    ASSERT_EQ(m->data[i], static_cast<float>(value)) << "bits " << half[i];
  }
}

TEST_F(NpyTest, ReadsInt32WidenedToInt64) {
  const std::vector<int32_t> values = {0, -1, 7,
                                       std::numeric_limits<int32_t>::min(),
                                       std::numeric_limits<int32_t>::max()};
  const std::string path =
      WriteBytes("i4.npy", Npy(Dict("<i4", "(5,)"), Bytes(values)));
  absl::StatusOr<std::vector<int64_t>> read = ReadNpyInt64(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(*read, ElementsAre(0, -1, 7, std::numeric_limits<int32_t>::min(),
                                 std::numeric_limits<int32_t>::max()));
}

TEST_F(NpyTest, ReadsFortranOrderFloat32) {
  // [[1, 2, 3], [4, 5, 6]] stored column by column.
  const std::vector<float> column_major = {1, 4, 2, 5, 3, 6};
  const std::string path = WriteBytes(
      "f.npy",
      Npy(Dict("<f4", "(2, 3)", /*fortran=*/true), Bytes(column_major)));
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2u);
  EXPECT_EQ(m->cols, 3u);
  EXPECT_THAT(m->data, ElementsAre(1, 2, 3, 4, 5, 6));
}

TEST_F(NpyTest, ReadsLargeFortranOrderMatrix) {
  // Larger than one transpose tile in both directions, with ragged edges.
  const size_t rows = 150, cols = 70;
  std::vector<float> column_major(rows * cols);
  for (size_t c = 0; c < cols; ++c) {
    for (size_t r = 0; r < rows; ++r) {
      column_major[c * rows + r] = static_cast<float>(r * 1000 + c);
    }
  }
  const std::string path = WriteBytes(
      "f.npy",
      Npy(Dict("<f4", "(150, 70)", /*fortran=*/true), Bytes(column_major)));
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      ASSERT_EQ(m->data[r * cols + c], static_cast<float>(r * 1000 + c));
    }
  }
}

TEST_F(NpyTest, ReadsFortranOrderFloat16) {
  // [[1, 2], [3, 4], [-1, 0.5]] column by column.
  const std::vector<uint16_t> column_major = {0x3c00, 0x4200, 0xbc00,
                                              0x4000, 0x4400, 0x3800};
  const std::string path = WriteBytes(
      "f2.npy",
      Npy(Dict("<f2", "(3, 2)", /*fortran=*/true), Bytes(column_major)));
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(m->data, ElementsAre(1, 2, 3, 4, -1, 0.5));
}

TEST_F(NpyTest, ReadsFortranOrderInts) {
  const std::vector<int64_t> values = {5, 6, 7};
  const std::string path = WriteBytes(
      "i.npy", Npy(Dict("<i8", "(3,)", /*fortran=*/true), Bytes(values)));
  absl::StatusOr<std::vector<int64_t>> read = ReadNpyInt64(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_THAT(*read, ElementsAre(5, 6, 7));
}

TEST_F(NpyTest, ReadsFormatVersions2And3) {
  const std::vector<float> data = {1, 2, 3, 4};
  for (int major : {2, 3}) {
    SCOPED_TRACE(major);
    const std::string path =
        WriteBytes(absl::StrCat("v", major, ".npy"),
                   Npy(Dict("<f4", "(2, 2)"), Bytes(data), major));
    absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->data, data);

    const std::string ids_path = WriteBytes(
        absl::StrCat("ids_v", major, ".npy"),
        Npy(Dict("<i8", "(2,)"), Bytes(std::vector<int64_t>{9, 8}), major));
    absl::StatusOr<std::vector<int64_t>> ids = ReadNpyInt64(ids_path);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_THAT(*ids, ElementsAre(9, 8));
  }
}

TEST_F(NpyTest, AcceptsNativeAndNotApplicableByteOrder) {
  const std::vector<float> data = {1, 2};
  for (const char* descr : {"=f4", "|f4"}) {
    SCOPED_TRACE(descr);
    const std::string path =
        WriteBytes("m.npy", Npy(Dict(descr, "(1, 2)"), Bytes(data)));
    absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->data, data);
  }
  const std::string path = WriteBytes(
      "i.npy", Npy(Dict("=i8", "(1,)"), Bytes(std::vector<int64_t>{3})));
  absl::StatusOr<std::vector<int64_t>> ids = ReadNpyInt64(path);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(3));
}

TEST_F(NpyTest, AcceptsHeaderVariations) {
  // Double quotes, keys in another order, no trailing comma, extra spaces,
  // Python 2 longs, and a key numpy does not write.
  const std::vector<float> data = {1, 2, 3, 4, 5, 6};
  const std::string path = WriteBytes(
      "m.npy", Npy("{ \"shape\" : ( 3L ,2L ) , 'fortran_order':False,"
                   "'descr':\"<f4\", 'note': ('x', [1, 2]) }",
                   Bytes(data)));
  absl::StatusOr<NpyMatrix> m = ReadNpyMatrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 3u);
  EXPECT_EQ(m->cols, 2u);
  EXPECT_EQ(m->data, data);
}

TEST_F(NpyTest, MissingFileIsNotFound) {
  const std::string path = Path("absent.npy");
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kNotFound,
              {path});
  ExpectError(ReadNpyInt64(path).status(), absl::StatusCode::kNotFound, {path});
}

TEST_F(NpyTest, DirectoryIsRejected) {
  const std::string path = Path("sub.npy");
  fs::create_directories(path);
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "not a regular file"});
}

TEST_F(NpyTest, RejectsBadMagic) {
  const std::string path =
      WriteBytes("bad.npy", "PK\x03\x04 this is a zip file, not an npy");
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "bad magic"});
  ExpectError(ReadNpyInt64(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "bad magic"});
}

TEST_F(NpyTest, RejectsEmptyFile) {
  const std::string path = WriteBytes("empty.npy", "");
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "bad magic"});
}

TEST_F(NpyTest, RejectsTruncatedPreamble) {
  const std::string path = WriteBytes("short.npy", "\x93NUMPY\x01");
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "truncated header"});
}

TEST_F(NpyTest, RejectsHeaderLongerThanFile) {
  std::string bytes = Npy(Dict("<f4", "(1, 1)"), Bytes(std::vector<float>{1}));
  bytes.resize(40);  // cuts the header in the middle
  const std::string path = WriteBytes("cut.npy", bytes);
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "truncated header"});
}

TEST_F(NpyTest, RejectsUnsupportedVersion) {
  std::string bytes = Npy(Dict("<f4", "(1, 1)"), Bytes(std::vector<float>{1}));
  bytes[6] = 4;
  const std::string path = WriteBytes("v4.npy", bytes);
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "unsupported .npy format version 4.0"});
}

TEST_F(NpyTest, RejectsUnparsableHeaders) {
  const std::string data = Bytes(std::vector<float>{1, 2});
  struct Case {
    std::string dict;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"not a dict", "expected '{'"},
      {"{'descr': '<f4', 'fortran_order': False}", "missing key 'shape'"},
      {"{'fortran_order': False, 'shape': (1, 2)}", "missing key 'descr'"},
      {"{'descr': '<f4', 'shape': (1, 2)}", "missing key 'fortran_order'"},
      {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1, 2)}",
       "expected True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [1, 2]}",
       "expected a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2)}",
       "expected a non-negative integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2)",
       "expected ',' or '}'"},
      {"{'descr': '<f4 'fortran_order': False, 'shape': (1, 2)}",
       "expected ',' or '}'"},
      {"{'descr: '<f4', 'fortran_order': False, 'shape': (1, 2)}",
       "expected ':'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2)} junk",
       "unexpected text"},
      {"{'descr': '<f4', 'fortran_order': False, "
       "'shape': (99999999999999999999999, 2)}",
       "dimension too large"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
       "structured dtypes"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.dict);
    const std::string path = WriteBytes("h.npy", Npy(c.dict, data));
    absl::Status status = ReadNpyMatrix(path).status();
    ExpectError(status, absl::StatusCode::kInvalidArgument, {path, c.reason});
    if (c.reason != "structured dtypes") {
      EXPECT_THAT(std::string(status.message()),
                  HasSubstr("unparsable header"));
    }
  }
}

TEST_F(NpyTest, RejectsImplausibleHeaderLength) {
  std::string bytes = "\x93NUMPY\x02";
  bytes += std::string("\0\xff\xff\xff\x7f", 5);
  bytes += "{}";
  const std::string path = WriteBytes("huge.npy", bytes);
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "header length"});
}

TEST_F(NpyTest, MatrixRejectsOtherDtypes) {
  struct Case {
    std::string descr;
    size_t item_size;
  };
  for (const Case& c : std::vector<Case>{{"<f8", 8},
                                         {"<i8", 8},
                                         {"<i4", 4},
                                         {"|u1", 1},
                                         {"<c8", 8},
                                         {"|b1", 1},
                                         {"<U3", 12}}) {
    SCOPED_TRACE(c.descr);
    const std::string path = WriteBytes(
        "m.npy", Npy(Dict(c.descr, "(2, 2)"), std::string(4 * c.item_size, 0)));
    ExpectError(ReadNpyMatrix(path).status(),
                absl::StatusCode::kInvalidArgument,
                {path, absl::StrCat("unsupported dtype '", c.descr, "'"),
                 "float32 '<f4' or float16 '<f2'"});
  }
}

TEST_F(NpyTest, IntsRejectOtherDtypes) {
  struct Case {
    std::string descr;
    size_t item_size;
  };
  for (const Case& c : std::vector<Case>{
           {"<f4", 4}, {"<f8", 8}, {"<u8", 8}, {"<i2", 2}, {"|i1", 1}}) {
    SCOPED_TRACE(c.descr);
    const std::string path = WriteBytes(
        "i.npy", Npy(Dict(c.descr, "(3,)"), std::string(3 * c.item_size, 0)));
    ExpectError(ReadNpyInt64(path).status(), absl::StatusCode::kInvalidArgument,
                {path, absl::StrCat("unsupported dtype '", c.descr, "'"),
                 "int64 '<i8' or int32 '<i4'"});
  }
}

TEST_F(NpyTest, RejectsBigEndian) {
  const std::string matrix =
      WriteBytes("be.npy", Npy(Dict(">f4", "(1, 2)"), std::string(8, 0)));
  ExpectError(ReadNpyMatrix(matrix).status(),
              absl::StatusCode::kInvalidArgument,
              {matrix, "big-endian", "'>f4'", "astype('<f4')"});
  const std::string ints =
      WriteBytes("be_ids.npy", Npy(Dict(">i8", "(1,)"), std::string(8, 0)));
  ExpectError(ReadNpyInt64(ints).status(), absl::StatusCode::kInvalidArgument,
              {ints, "big-endian", "'>i8'"});
}

TEST_F(NpyTest, MatrixRejectsOtherShapes) {
  for (const char* shape : {"()", "(6,)", "(1, 2, 3)"}) {
    SCOPED_TRACE(shape);
    const std::string path = WriteBytes(
        "m.npy", Npy(Dict("<f4", shape), Bytes(std::vector<float>(6))));
    ExpectError(ReadNpyMatrix(path).status(),
                absl::StatusCode::kInvalidArgument,
                {path, "wrong shape", "expected a 2-D array",
                 absl::StrCat("found shape ", shape)});
  }
}

TEST_F(NpyTest, IntsRejectOtherShapes) {
  for (const char* shape : {"()", "(3, 1)", "(1, 3)"}) {
    SCOPED_TRACE(shape);
    const std::string path = WriteBytes(
        "i.npy", Npy(Dict("<i8", shape), Bytes(std::vector<int64_t>(3))));
    ExpectError(ReadNpyInt64(path).status(), absl::StatusCode::kInvalidArgument,
                {path, "wrong shape", "expected a 1-D array",
                 absl::StrCat("found shape ", shape)});
  }
}

TEST_F(NpyTest, RejectsTruncatedData) {
  const std::string path = WriteBytes(
      "m.npy", Npy(Dict("<f4", "(2, 3)"), Bytes(std::vector<float>(5))));
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "truncated data", "needs 24 data bytes", "found 20"});
  const std::string ids = WriteBytes(
      "i.npy", Npy(Dict("<i8", "(4,)"), Bytes(std::vector<int64_t>(3))));
  ExpectError(ReadNpyInt64(ids).status(), absl::StatusCode::kInvalidArgument,
              {ids, "truncated data", "needs 32 data bytes", "found 24"});
}

TEST_F(NpyTest, RejectsTrailingData) {
  const std::string path = WriteBytes(
      "m.npy", Npy(Dict("<f2", "(2, 3)"), Bytes(std::vector<uint16_t>(7))));
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "trailing data", "needs 12 data bytes", "2 extra"});
  const std::string ids = WriteBytes(
      "i.npy", Npy(Dict("<i4", "(2,)"), Bytes(std::vector<int32_t>(3))));
  ExpectError(ReadNpyInt64(ids).status(), absl::StatusCode::kInvalidArgument,
              {ids, "trailing data", "4 extra"});
}

TEST_F(NpyTest, RejectsShapeTooLargeForMemory) {
  const std::string path = WriteBytes(
      "m.npy", Npy(Dict("<f4", "(4611686018427387904, 8)"), std::string(8, 0)));
  ExpectError(ReadNpyMatrix(path).status(), absl::StatusCode::kInvalidArgument,
              {path, "too large"});
}

// ReadNpyInt64Matrix and WriteNpyArray: what the CLI reads (positives) and
// writes (mined ids, scores and embeddings).

TEST_F(NpyTest, Int64MatrixReadsOneDimensionAsAColumn) {
  const std::string path = WriteBytes(
      "p.npy", Npy(Dict("<i8", "(3,)"), Bytes(std::vector<int64_t>{4, -1, 9})));
  absl::StatusOr<NpyInt64Matrix> m = ReadNpyInt64Matrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 3u);
  EXPECT_EQ(m->cols, 1u);
  EXPECT_THAT(m->data, ElementsAre(4, -1, 9));
}

TEST_F(NpyTest, Int64MatrixReadsTwoDimensionsInEitherOrder) {
  const std::string c_order =
      WriteBytes("c.npy", Npy(Dict("<i8", "(2, 3)"),
                              Bytes(std::vector<int64_t>{1, 2, 3, 4, 5, 6})));
  // [[1, 2, 3], [4, 5, 6]] stored column by column, as int32.
  const std::string fortran =
      WriteBytes("f.npy", Npy(Dict("<i4", "(2, 3)", /*fortran=*/true),
                              Bytes(std::vector<int32_t>{1, 4, 2, 5, 3, -6})));
  absl::StatusOr<NpyInt64Matrix> c = ReadNpyInt64Matrix(c_order);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rows, 2u);
  EXPECT_EQ(c->cols, 3u);
  EXPECT_THAT(c->data, ElementsAre(1, 2, 3, 4, 5, 6));
  absl::StatusOr<NpyInt64Matrix> f = ReadNpyInt64Matrix(fortran);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->rows, 2u);
  EXPECT_EQ(f->cols, 3u);
  EXPECT_THAT(f->data, ElementsAre(1, 2, 3, 4, 5, -6));
}

TEST_F(NpyTest, Int64MatrixReadsFormatVersion2) {
  const std::string path =
      WriteBytes("v2.npy", Npy(Dict("<i8", "(1, 2)"),
                               Bytes(std::vector<int64_t>{7, 8}), /*major=*/2));
  absl::StatusOr<NpyInt64Matrix> m = ReadNpyInt64Matrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(m->data, ElementsAre(7, 8));
}

TEST_F(NpyTest, Int64MatrixRejectsWhatItCannotRead) {
  const std::string absent = Path("absent.npy");
  ExpectError(ReadNpyInt64Matrix(absent).status(), absl::StatusCode::kNotFound,
              {absent, "no such file"});
  const std::string cube =
      WriteBytes("cube.npy",
                 Npy(Dict("<i8", "(1, 2, 1)"), Bytes(std::vector<int64_t>(2))));
  ExpectError(ReadNpyInt64Matrix(cube).status(),
              absl::StatusCode::kInvalidArgument,
              {cube, "wrong shape", "expected a 1-D or 2-D array",
               "found shape (1, 2, 1)"});
  const std::string floats = WriteBytes(
      "f.npy", Npy(Dict("<f4", "(2,)"), Bytes(std::vector<float>(2))));
  ExpectError(ReadNpyInt64Matrix(floats).status(),
              absl::StatusCode::kInvalidArgument,
              {floats, "unsupported dtype '<f4'", "int64 '<i8' or int32"});
  const std::string bad = WriteBytes("bad.npy", "not an npy file");
  ExpectError(ReadNpyInt64Matrix(bad).status(),
              absl::StatusCode::kInvalidArgument, {bad, "bad magic"});
  const std::string short_data = WriteBytes(
      "s.npy", Npy(Dict("<i8", "(2, 2)"), Bytes(std::vector<int64_t>(3))));
  ExpectError(ReadNpyInt64Matrix(short_data).status(),
              absl::StatusCode::kInvalidArgument,
              {short_data, "truncated data", "needs 32 data bytes"});
}

TEST_F(NpyTest, WriteNpyArrayWritesAnyShapeAsNumpyDoes) {
  std::vector<float> data(2 * 3 * 4);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i);
  const std::string path = Path("e.npy");
  ASSERT_TRUE(WriteNpyArray(path, "<f4", {2, 3, 4}, data.data()).ok());
  ExpectFloat32NpyV1(ReadBytes(path), "(2, 3, 4)", Bytes(data));
}

TEST_F(NpyTest, WriteNpyArrayRoundTripsIdsThroughTheMatrixReader) {
  const std::vector<int64_t> ids = {10, 11, -1, 13, 14, 15};
  const std::string path = Path("ids.npy");
  ASSERT_TRUE(WriteNpyArray(path, "<i8", {3, 2}, ids.data()).ok());
  absl::StatusOr<NpyInt64Matrix> m = ReadNpyInt64Matrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 3u);
  EXPECT_EQ(m->cols, 2u);
  EXPECT_EQ(m->data, ids);
  const std::vector<int64_t> none;
  ASSERT_TRUE(WriteNpyArray(path, "<i8", {0, 5}, none.data()).ok());
  m = ReadNpyInt64Matrix(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 0u);
  EXPECT_EQ(m->cols, 5u);
}

TEST_F(NpyTest, WriteNpyArrayRejectsOtherDtypesAndOverflowingShapes) {
  const std::string path = Path("x.npy");
  const int64_t one = 1;
  ExpectError(WriteNpyArray(path, "<u2", {1}, &one),
              absl::StatusCode::kInvalidArgument,
              {path, "cannot write dtype '<u2'"});
  ExpectError(WriteNpyArray(path, "<f4", {size_t{1} << 62, 8}, &one),
              absl::StatusCode::kInvalidArgument, {path, "too large"});
  EXPECT_FALSE(fs::exists(path));
  const std::string missing = Path("no/such/dir/x.npy");
  ExpectError(WriteNpyArray(missing, "<i8", {1}, &one),
              absl::StatusCode::kNotFound, {missing});
}

TEST_F(NpyTest, WriteNpyArrayUsesVersion2ForAHeaderTooLongForVersion1) {
  // 30000 dimensions of 1: the shape alone is about 90 KB of text.
  const std::vector<size_t> shape(30000, 1);
  const float value = 3;
  const std::string path = Path("wide.npy");
  ASSERT_TRUE(WriteNpyArray(path, "<f4", shape, &value).ok());
  const std::string bytes = ReadBytes(path);
  ASSERT_GE(bytes.size(), 12u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x02\x00", 8));
  size_t header_len = 0;
  for (int i = 0; i < 4; ++i) {
    header_len |= size_t{static_cast<unsigned char>(bytes[8 + i])} << (8 * i);
  }
  const size_t data_offset = 12 + header_len;
  ASSERT_EQ(bytes.size(), data_offset + sizeof(float));
  EXPECT_EQ(data_offset % 64, 0u);
  EXPECT_EQ(bytes[data_offset - 1], '\n');
  EXPECT_EQ(bytes.substr(data_offset), Bytes(std::vector<float>{value}));
}

}  // namespace
}  // namespace hardneg

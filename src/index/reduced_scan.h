// Reduced-precision first pass of the exact Flat search.
//
// The candidate rows are packed once, at build time, as int8 (one scale per
// row) or as bfloat16, sixteen rows interleaved per 64-byte line. A batch of
// queries is dotted with them by AVX512_VNNI (vpdpbusd: 64 int8
// multiply-adds an instruction) or AVX512_BF16 (vdpbf16ps: 32 bf16
// multiply-adds), four 16-row groups by up to six queries per tile, and
// each tile's keys are compared with their query's screen while still in
// registers: only rows that reach it leave the kernel (the fused
// threshold). The error of every reduced dot product is bounded
// (ReducedQueries::DotSlack, derived in reduced_scan.cc), so the caller can
// rescore what leaves the kernel exactly and prove that nothing it dropped
// belonged in the answer.
//
// CPUs without the instructions run portable kernels over the same packed
// rows (int8 gives identical sums; bf16 sums stay within the same bound),
// so every ScanPrecision works on any x86-64, slowly where emulated.
//
// ReducedRows is immutable after construction and may be read by any number
// of threads; a ReducedQueries belongs to one search at a time. The free
// functions are stateless and thread-safe.
#ifndef HARDNEG_SRC_INDEX_REDUCED_SCAN_H_
#define HARDNEG_SRC_INDEX_REDUCED_SCAN_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/string_view.h"

namespace hardneg {

// The precision of the Flat index's first pass (the --scan flag).
enum class ScanPrecision {
  kAuto,  // the fastest this CPU runs natively: int8, else bf16, else f32
  kF32,   // float32 sgemm over the store's rows (plus the binary16 pass for
          // one to three queries, when enabled)
  kBf16,  // bfloat16 rows, AVX512_BF16
  kInt8,  // int8 rows with a scale per row, AVX512_VNNI
};

// "auto", "f32", "bf16" or "int8".
const char* ScanPrecisionName(ScanPrecision precision);
// The inverse of ScanPrecisionName; nullopt for any other string.
std::optional<ScanPrecision> ParseScanPrecision(absl::string_view name);

// True when this CPU (and OS) runs `precision`'s kernels natively: always
// for kF32 and kAuto; AVX-512 F/BW with VNNI (int8) or BF16 (bf16).
bool CpuRunsScan(ScanPrecision precision);

// kAuto resolved to the fastest native precision; any other value as is
// (an explicit bf16 or int8 on a CPU without the instructions runs the
// portable kernels).
ScanPrecision ResolveScanPrecision(ScanPrecision requested);

// The most dimensions int8 takes: its int32 sums of d products of 8-bit
// values (up to 255 x 127 x d with the rows' offset) must not overflow.
inline constexpr size_t kMaxInt8Dim = 65536;

// ResolveScanPrecision for vectors of `dim`: int8 past kMaxInt8Dim becomes
// bf16 (or f32 for auto on a CPU without AVX512_BF16).
ScanPrecision EffectiveScan(ScanPrecision requested, size_t dim);

// Rows a packed group holds.
inline constexpr size_t kReducedGroupRows = 16;

// Packed lines of many ReducedRows in one allocation. An IVF index packs
// each list on its own, about 125 KB on W2: too short for the kernel to
// back with huge pages, which the lines of 1,024 lists together are.
// Frees packed lines as reduced_scan.cc allocates them (`bytes`, the size
// asked for, tells how); 0 for lines the holder does not own.
struct PackedLinesDeleter {
  PackedLinesDeleter() : bytes(0) {}
  explicit PackedLinesDeleter(size_t owned_bytes) : bytes(owned_bytes) {}
  void operator()(uint8_t* lines) const;
  size_t bytes;
};

class ReducedLines {
 public:
  // Room for `bytes` of lines (the sum of ReducedRows::LineBytes of the
  // rows to be packed in it).
  explicit ReducedLines(size_t bytes);
  ReducedLines(const ReducedLines&) = delete;
  ReducedLines& operator=(const ReducedLines&) = delete;

  // The next `bytes` (rounded up to a cache line), or throws
  // std::length_error past the room asked for.
  uint8_t* Take(size_t bytes);
  // Allocated bytes not taken: what no ReducedRows::MemoryBytes() counts.
  size_t PaddingBytes() const;

 private:
  std::unique_ptr<uint8_t, PackedLinesDeleter> block_;
  size_t size_ = 0;
  size_t used_ = 0;
};

// The rows of a store, packed at a reduced precision (kBf16 or kInt8).
//
// Centred rows. Rows far from the origin that differ little (embeddings
// with a common direction: all positive, or a mean cosine of 0.8) spend a
// packed value's precision on what they share, and the keys cannot order
// them. Packed `centred`, each row is stored as x - m, where m is the
// rows' mean (centre()); ReducedQueries adds q.m back to every key
// (offset()), so keys are q.x as before, with the error of q.(x - m).
// Queries that share the direction too would still spend theirs on it:
// each row also keeps its projection p = n.(x - m) on n = m / |m|
// (direction()), and a query whose bound is the smaller for it is packed
// less its share along n, q - l n, l = q.n (along()), which the kernels
// add back as l p.
class ReducedRows {
 public:
  // Packs rows [0, n) of row-major `rows` (n x dim, finite), in parallel
  // on the OpenMP threads; less their mean when `centred`.
  ReducedRows(const float* rows, size_t n, size_t dim, ScanPrecision precision,
              bool centred = false);
  // How a set of rows is packed centred: their mean m (empty: not
  // centred), and whether they share its direction enough (a mean cosine
  // of about 1/4 or more: |m|^2 >= E|x - m|^2 / 3) for queries to be
  // packed less their share along it; below, that gains little, and each
  // key would pay for adding it back.
  struct Centring {
    std::vector<float> mean;
    bool direction = false;
  };
  // The Centring of rows [0, n) (a mean of zeros when n is 0), summed in
  // double in fixed blocks: the same whatever the number of threads.
  static Centring CentringOf(const float* rows, size_t n, size_t dim);
  // The same as centred, on `centring` (of a larger set of rows, such as
  // IVF lists that share one, and so one ReducedQueries); with the packed
  // lines taken from `lines` when set (which must outlive the rows and
  // have LineBytes(n, dim, precision) left) instead of an allocation of
  // their own.
  ReducedRows(const float* rows, size_t n, size_t dim, ScanPrecision precision,
              const Centring& centring, ReducedLines* lines = nullptr);

  ReducedRows(const ReducedRows&) = delete;
  ReducedRows& operator=(const ReducedRows&) = delete;

  ScanPrecision precision() const { return precision_; }
  size_t size() const { return n_; }
  size_t dim() const { return dim_; }
  // 4-byte packed steps per row: ceil(dim / 4) for int8, ceil(dim / 2)
  // for bf16.
  size_t steps() const { return steps_; }
  // Over all rows x: the largest |x - m - x'| and |x'|, where x' is the
  // row as the kernels see it (dequantised) and m the centre (0 unless
  // centred), both rounded up.
  double max_residual() const { return max_residual_; }
  double max_reduced_norm() const { return max_reduced_norm_; }
  // The centre m subtracted before packing (dim floats), or empty; and
  // |m|, rounded up (0 when empty).
  const std::vector<float>& centre() const { return centre_; }
  double centre_norm() const { return centre_norm_; }
  // n = m / |m| in float, and |n| rounded up: empty unless centred rows
  // share a direction (Centring::direction, and m != 0).
  const std::vector<float>& direction() const { return direction_; }
  double direction_norm() const { return direction_norm_; }
  // Each row's n.(x - m), rounded to float (padded with zeros to whole
  // groups), when there is a direction; else null.
  const float* projections() const {
    return direction_.empty() ? nullptr : projections_.data();
  }

  // Heap bytes held (the lines' share of a ReducedLines counted here, its
  // padding by the ReducedLines).
  size_t MemoryBytes() const {
    return lines_bytes_ + FloatBytes(n_, dim_, precision_, !centre_.empty());
  }
  // What MemoryBytes() is for `n` rows of `dim` at `precision`, packed
  // centred or not, with lines of their own.
  static size_t BytesFor(size_t n, size_t dim, ScanPrecision precision,
                         bool centred = false);
  // The packed lines of `n` rows: what a ReducedLines must hold for them.
  static size_t LineBytes(size_t n, size_t dim, ScanPrecision precision);

  // The packed lines: group g, step s at line g * steps() + s.
  const uint8_t* lines() const { return lines_.get(); }
  // int8: the scale of each row (padded with zeros to whole groups).
  const float* scales() const { return scales_.data(); }
  // Each row's |x - x'| and |x'|, rounded up to floats (padded with zeros
  // to whole groups): the per-row terms of DotSlack(i, row).
  const float* residuals() const { return residuals_.data(); }
  const float* norms() const { return norms_.data(); }

 private:
  // What MemoryBytes() counts besides the lines.
  static size_t FloatBytes(size_t n, size_t dim, ScanPrecision precision,
                           bool centred);
  // Sets centre_ to centring.mean (not empty), with its norm, and the
  // direction when centring.direction.
  void Centre(const Centring& centring);
  // Packs every row (less the centre) and measures its residual and norm.
  void Pack(const float* rows);

  ScanPrecision precision_;
  size_t n_;
  size_t dim_;
  size_t steps_;
  // Its own (freed with it), or taken from a ReducedLines (not).
  std::unique_ptr<uint8_t, PackedLinesDeleter> lines_;
  size_t lines_bytes_ = 0;  // as MemoryBytes() counts them
  std::vector<float> scales_;
  std::vector<float> residuals_;
  std::vector<float> norms_;
  std::vector<float> centre_;
  double centre_norm_ = 0;
  std::vector<float> direction_;
  double direction_norm_ = 0;
  std::vector<float> projections_;
  double max_residual_ = 0;
  double max_reduced_norm_ = 0;
};

// A batch of queries packed for one ReducedRows; reused across searches.
class ReducedQueries {
 public:
  // Packs the `nq` queries (row-major nq x rows.dim()) for `rows`.
  void Prepare(const ReducedRows& rows, const float* queries, size_t nq);
  // Queries which[0 .. m) of `from`, in that order: as Prepare would make
  // them for any rows of the same dim, precision and centre (DotSlack(i)
  // without a row is from's).
  void Select(const ReducedQueries& from, const uint32_t* which, size_t m);

  size_t size() const { return nq_; }
  // Bound on |reduced dot - exact dot| of query i with row `row`:
  // a(i) |e_row| + b(i) |x'_row| + c(i) (see reduced_scan.cc), and with any
  // row.
  double DotSlack(size_t i, size_t row, const ReducedRows& rows) const {
    return a_[i] * rows.residuals()[row] + b_[i] * rows.norms()[row] + c_[i];
  }
  double DotSlack(size_t i) const { return slack_[i]; }
  double a(size_t i) const { return a_[i]; }
  double b(size_t i) const { return b_[i]; }
  double c(size_t i) const { return c_[i]; }

  // For the kernels: query i's packed steps, its scale (int8) and the
  // correction for the rows' +128 offset (int8).
  const uint32_t* packed(size_t i) const { return packed_.data() + i * steps_; }
  float scale(size_t i) const { return scale_[i]; }
  int32_t correction(size_t i) const { return correction_[i]; }
  // What the kernels add to query i's dot products: q.m for the rows'
  // centre m, rounded to float (0 for rows not centred); and l = q.n, the
  // share along the rows' direction it was packed without, times each
  // row's projection (0 when packed whole).
  float offset(size_t i) const { return offset_[i]; }
  float along(size_t i) const { return along_[i]; }

 private:
  size_t nq_ = 0;
  size_t steps_ = 0;
  std::vector<uint32_t> packed_;
  std::vector<float> scale_;
  std::vector<int32_t> correction_;
  std::vector<float> offset_;
  std::vector<float> along_;
  std::vector<double> slack_;
  std::vector<double> a_;
  std::vector<double> b_;
  std::vector<double> c_;
};

// `bound` as a float no smaller, with room for the float arithmetic (two
// fused multiply-adds) that combines it: per-row terms and ReducedSink's
// slack coefficients.
float FloatAbove(double bound);

// Where a scan sends the rows that reach their query's screen. A row's key
// is its reduced dot product for inner product, 2 dot - |q|^2 - |x|^2 for
// L2 (higher is closer for both); its slack, a[i] |e_r| + b[i] |x'_r| +
// c[i] (+ d[i] |x_r|^2 for L2) with the rows' residuals() and norms() (0
// without coefficients).
struct ReducedSink {
  const float* query_sq = nullptr;  // per query; L2 only
  const float* row_sq = nullptr;    // per row; null for inner product
  // Per query, or all null: the slack's coefficients.
  const float* slack_a = nullptr;
  const float* slack_b = nullptr;
  const float* slack_c = nullptr;
  const float* slack_d = nullptr;  // L2 only
  // Per query: rows whose key + slack is below it are not offered. The
  // sink may raise it while the scan runs.
  const float* screen = nullptr;
  // Called for each row that reaches the screen, on the scanning thread.
  void (*offer)(void* context, size_t query, size_t row, float key,
                float slack) = nullptr;
  void* context = nullptr;
  // When set, the scan writes every row's key instead, to
  // keys[i * key_stride + row - key_first] for query i (no screen or
  // offers; key_first at most the scan's begin): reduced scores for
  // ranking, where no answer depends on their error; or, with slack
  // coefficients, key + slack as the screen would compare it, an upper
  // bound on the row's exact key (IvfProbe's first pass).
  float* keys = nullptr;
  size_t key_stride = 0;
  size_t key_first = 0;
};

// Offers rows [begin, end) of `rows` to queries [0, queries.size()) through
// `sink`. `begin` is a multiple of kReducedGroupRows. `portable` forces the
// portable kernels (for tests).
void ReducedScan(const ReducedRows& rows, const ReducedQueries& queries,
                 size_t begin, size_t end, const ReducedSink& sink,
                 bool portable = false);

// a . b over `dim` floats, accumulated in float (AVX-512 when the CPU has
// it): the float32 rescoring of candidates, within the float32 path's
// error bound.
float FloatDot(const float* a, const float* b, size_t dim);

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_REDUCED_SCAN_H_

// The reduced-precision kernels (int8, bf16; SIMD and portable) against a
// double-precision reference: every key within its proven slack, the slack
// reached by queries built along a row's rounding error, the screen
// respected, the two kernels agreeing, and every key written where the
// sink asks for them all.
#include "index/reduced_scan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace hardneg {
namespace {

using Rng = std::mt19937_64;

std::vector<float> Gaussian(Rng& rng, size_t count, float sd) {
  std::normal_distribution<float> normal(0.0f, sd);
  std::vector<float> v(count);
  for (float& x : v) x = normal(rng);
  return v;
}

double Dot(const float* a, const float* b, size_t dim) {
  double s = 0;
  for (size_t i = 0; i < dim; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// The squared norms of `count` rows of `dim` floats.
std::vector<float> SquaredNorms(const std::vector<float>& v, size_t count,
                                size_t dim) {
  std::vector<float> sq(count);
  for (size_t r = 0; r < count; ++r) {
    sq[r] = static_cast<float>(Dot(&v[r * dim], &v[r * dim], dim));
  }
  return sq;
}

// Normal rows (deviation `sd`) and queries (deviation `query_sd`), the
// rows packed at `precision` and the queries for them, with the squared
// norms of both.
struct Problem {
  Problem(uint64_t seed, size_t dim_, size_t n_, size_t nq_, float sd,
          float query_sd, ScanPrecision precision)
      : rng(seed),
        dim(dim_),
        n(n_),
        nq(nq_),
        x(Gaussian(rng, n * dim, sd)),
        q(Gaussian(rng, nq * dim, query_sd)),
        row_sq(SquaredNorms(x, n, dim)),
        query_sq(SquaredNorms(q, nq, dim)),
        rows(x.data(), n, dim, precision) {
    queries.Prepare(rows, q.data(), nq);
  }
  Rng rng;
  size_t dim, n, nq;
  std::vector<float> x, q, row_sq, query_sq;
  ReducedRows rows;
  ReducedQueries queries;
};

// Every key a scan offers, by query and row (NaN: not offered).
struct Offers {
  size_t rows;
  std::vector<float> keys;
  std::vector<float> screens;
};

void Record(void* context, size_t query, size_t row, float key,
            float /*slack*/) {
  auto& offers = *static_cast<Offers*>(context);
  float& slot = offers.keys[query * offers.rows + row];
  EXPECT_TRUE(std::isnan(slot)) << "row " << row << " offered twice";
  slot = key;
}

// Scans all rows; `screen` for every query (-inf: every row offered).
Offers ScanAll(const ReducedRows& rows, const ReducedQueries& queries,
               bool portable, float screen, const float* row_sq = nullptr,
               const float* query_sq = nullptr) {
  Offers offers;
  offers.rows = rows.size();
  offers.keys.assign(queries.size() * rows.size(),
                     std::numeric_limits<float>::quiet_NaN());
  offers.screens.assign(queries.size(), screen);
  ReducedSink sink;
  sink.screen = offers.screens.data();
  sink.row_sq = row_sq;
  sink.query_sq = query_sq;
  sink.offer = &Record;
  sink.context = &offers;
  ReducedScan(rows, queries, 0, rows.size(), sink, portable);
  return offers;
}

struct Case {
  ScanPrecision precision;
  bool portable;
};

std::string CaseName(const testing::TestParamInfo<Case>& info) {
  return std::string(ScanPrecisionName(info.param.precision)) +
         (info.param.portable ? "Portable" : "Simd");
}

class ReducedScanTest : public testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!GetParam().portable && !CpuRunsScan(GetParam().precision)) {
      // Without the instructions ReducedScan runs the portable kernel,
      // which the Portable cases test; this case would repeat them.
      portable_ = true;
    }
  }
  bool portable() const { return GetParam().portable || portable_; }

 private:
  bool portable_ = false;
};

// Rows of several magnitudes and dimensions with SIMD tails: every reduced
// dot product is within its row's DotSlack of the exact one, which is
// within the slack for any row.
TEST_P(ReducedScanTest, EveryKeyIsWithinItsSlack) {
  Rng rng(11);
  for (size_t dim :
       {size_t{1}, size_t{5}, size_t{45}, size_t{128}, size_t{769}}) {
    for (float sd : {1e-3f, 1.0f, 300.0f}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + " sd " + std::to_string(sd));
      const size_t n = 83;   // whole groups and a partial one
      const size_t nq = 13;  // three query tiles (5, 4, 4)
      const std::vector<float> x = Gaussian(rng, n * dim, sd);
      const std::vector<float> q = Gaussian(rng, nq * dim, 1.0f);
      const ReducedRows rows(x.data(), n, dim, GetParam().precision);
      ReducedQueries queries;
      queries.Prepare(rows, q.data(), nq);
      const Offers offers = ScanAll(rows, queries, portable(),
                                    -std::numeric_limits<float>::infinity());
      double worst = 0;
      for (size_t i = 0; i < nq; ++i) {
        for (size_t r = 0; r < n; ++r) {
          const float key = offers.keys[i * n + r];
          ASSERT_FALSE(std::isnan(key)) << "row " << r << " not offered";
          const double exact = Dot(q.data() + i * dim, x.data() + r * dim, dim);
          const double slack = queries.DotSlack(i, r, rows);
          EXPECT_LE(slack, queries.DotSlack(i));
          EXPECT_LE(std::fabs(key - exact), slack)
              << "query " << i << " row " << r;
          worst = std::max(worst, std::fabs(key - exact) / slack);
        }
      }
      // The bound is not vacuous: the errors use a share of it.
      EXPECT_GT(worst, 0.01);
    }
  }
}

// n normal rows of dim (deviation 1) about a common normal offset
// (deviation `offset_sd`).
std::vector<float> RowsAboutAnOffset(Rng& rng, size_t n, size_t dim,
                                     float offset_sd) {
  const std::vector<float> offset = Gaussian(rng, dim, offset_sd);
  std::vector<float> x = Gaussian(rng, n * dim, 1.0f);
  for (size_t r = 0; r < n; ++r) {
    for (size_t j = 0; j < dim; ++j) x[r * dim + j] += offset[j];
  }
  return x;
}

// The queries `q` (row-major) packed for `rows`.
ReducedQueries PreparedFor(const ReducedRows& rows,
                           const std::vector<float>& q) {
  ReducedQueries queries;
  queries.Prepare(rows, q.data(), q.size() / rows.dim());
  return queries;
}

// Every key of every query (`q`, row-major) and row (`x`) is offered and
// within its row's slack of the exact dot product.
void ExpectKeysWithinSlack(const Offers& offers, const ReducedQueries& queries,
                           const ReducedRows& rows, const std::vector<float>& q,
                           const std::vector<float>& x) {
  const size_t n = rows.size();
  const size_t dim = rows.dim();
  for (size_t i = 0; i < queries.size(); ++i) {
    for (size_t r = 0; r < n; ++r) {
      const float key = offers.keys[i * n + r];
      ASSERT_FALSE(std::isnan(key)) << "row " << r << " not offered";
      const double exact = Dot(q.data() + i * dim, x.data() + r * dim, dim);
      EXPECT_LE(std::fabs(key - exact), queries.DotSlack(i, r, rows))
          << "query " << i << " row " << r;
    }
  }
}

// Rows far from the origin that differ little (a common offset 100 times
// their spread), packed centred: every key is still within its slack of
// the exact q.x (the kernels add q.m back), and the slack is that of the
// rows' spread, not of their distance from the origin.
TEST_P(ReducedScanTest, CentredRowsKeepTheirPrecision) {
  Rng rng(18);
  for (size_t dim : {size_t{3}, size_t{64}, size_t{131}}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const size_t n = 83;
    const size_t nq = 13;
    const std::vector<float> x = RowsAboutAnOffset(rng, n, dim, 100.0f);
    const std::vector<float> q = Gaussian(rng, nq * dim, 1.0f);
    const ReducedRows plain(x.data(), n, dim, GetParam().precision);
    const ReducedRows rows(x.data(), n, dim, GetParam().precision,
                           /*centred=*/true);
    ASSERT_EQ(rows.centre().size(), dim);
    EXPECT_TRUE(plain.centre().empty());
    const ReducedQueries plain_queries = PreparedFor(plain, q);
    const ReducedQueries queries = PreparedFor(rows, q);
    const Offers offers = ScanAll(rows, queries, portable(),
                                  -std::numeric_limits<float>::infinity());
    for (size_t i = 0; i < nq; ++i) {
      EXPECT_LT(queries.DotSlack(i), plain_queries.DotSlack(i) / 20)
          << "query " << i;
    }
    ExpectKeysWithinSlack(offers, queries, rows, q, x);
  }
}

// Rows whose difference from their mean passes float's range (hostile
// checkpoints): packing leaves an infinite residual, by which callers
// scan float32, rather than converting NaN to an integer.
TEST_P(ReducedScanTest, CentredRowsPastFloatsRangeHaveNoBound) {
  const size_t dim = 4;
  const float big = 3e38f;
  const std::vector<float> x = {big, big, big,  big,  big,  big,
                                big, big, -big, -big, -big, -big};
  const ReducedRows rows(x.data(), 3, dim, GetParam().precision,
                         /*centred=*/true);
  EXPECT_FALSE(std::isfinite(rows.max_residual()));
}

// Queries that share the rows' direction (30 times their own spread along
// it), with centred rows: packed less that share, the kernels add it back
// from each row's projection. Every key stays within its slack of the
// exact q.x, and the slack is about that of the query without the share,
// not 30 times it.
TEST_P(ReducedScanTest, QueriesAlongTheRowsDirectionArePackedWithoutIt) {
  Rng rng(19);
  for (size_t dim : {size_t{2}, size_t{64}, size_t{131}}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    const size_t n = 83;
    const size_t nq = 13;
    const std::vector<float> x = RowsAboutAnOffset(rng, n, dim, 10.0f);
    const ReducedRows rows(x.data(), n, dim, GetParam().precision,
                           /*centred=*/true);
    const std::vector<float>& direction = rows.direction();
    ASSERT_EQ(direction.size(), dim);
    // Each query without its share along the direction, then with a
    // share 30 times its norm.
    std::vector<float> small = Gaussian(rng, nq * dim, 1.0f);
    std::vector<float> q(nq * dim);
    for (size_t i = 0; i < nq; ++i) {
      float* s = small.data() + i * dim;
      const double along = Dot(s, direction.data(), dim);
      for (size_t j = 0; j < dim; ++j) {
        s[j] = static_cast<float>(s[j] - along * direction[j]);
      }
      const double norm = std::sqrt(Dot(s, s, dim));
      for (size_t j = 0; j < dim; ++j) {
        q[i * dim + j] = static_cast<float>(s[j] + 30 * norm * direction[j]);
      }
    }
    const ReducedQueries queries = PreparedFor(rows, q);
    const ReducedQueries without = PreparedFor(rows, small);
    const Offers offers = ScanAll(rows, queries, portable(),
                                  -std::numeric_limits<float>::infinity());
    for (size_t i = 0; i < nq; ++i) {
      EXPECT_NE(queries.along(i), 0.0f) << "query " << i << " packed whole";
      EXPECT_LT(queries.DotSlack(i), 3 * without.DotSlack(i)) << "query " << i;
    }
    ExpectKeysWithinSlack(offers, queries, rows, q, x);
  }
}

// A query along a row's rounding error (integers, so the query itself is
// exact at both precisions) makes the error q.e reach |q| |e|: the bound's
// leading term, which the test sees used to within 15%. Also for a row
// packed centred (two rows about a common offset, the first one's error).
TEST_P(ReducedScanTest, TheSlackIsReachedAlongTheRoundingError) {
  Rng rng(12);
  for (const bool centred : {false, true}) {
    for (size_t dim : {size_t{16}, size_t{128}, size_t{768}}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + (centred ? " centred" : ""));
      const size_t n = centred ? 2 : 1;
      std::vector<float> x = Gaussian(rng, n * dim, 1.0f);
      if (centred) {
        const std::vector<float> offset = Gaussian(rng, dim, 1.0f);
        for (size_t j = 0; j < dim; ++j) {
          x[dim + j] = offset[j] - x[j];
          x[j] += offset[j];
        }
      }
      const ReducedRows rows(x.data(), n, dim, GetParam().precision, centred);
      // The first row as the kernels see it, rebuilt as reduced_scan.cc
      // packs it.
      std::vector<double> value(dim);
      for (size_t j = 0; j < dim; ++j) {
        value[j] =
            centred ? static_cast<double>(x[j]) - rows.centre()[j] : x[j];
      }
      std::vector<double> error(dim);
      float max_abs = 0;
      for (double v : value) {
        max_abs = std::max(max_abs, std::abs(static_cast<float>(v)));
      }
      const float scale = max_abs / 127.0f;
      double max_error = 0;
      for (size_t j = 0; j < dim; ++j) {
        const auto v = static_cast<float>(value[j]);
        double packed = 0;
        if (GetParam().precision == ScanPrecision::kInt8) {
          packed = static_cast<double>(scale) *
                   std::clamp(std::nearbyint(v / scale), -127.0f, 127.0f);
        } else {
          uint32_t bits;
          std::memcpy(&bits, &v, sizeof bits);
          bits += 0x7fffu + ((bits >> 16) & 1u);
          bits &= 0xffff0000u;
          float rounded;
          std::memcpy(&rounded, &bits, sizeof rounded);
          packed = rounded;
        }
        error[j] = value[j] - packed;
        max_error = std::max(max_error, std::fabs(error[j]));
      }
      ASSERT_GT(max_error, 0);
      std::vector<float> q(dim);
      for (size_t j = 0; j < dim; ++j) {
        q[j] = static_cast<float>(std::nearbyint(127 * error[j] / max_error));
      }
      ReducedQueries queries;
      queries.Prepare(rows, q.data(), 1);
      const Offers offers = ScanAll(rows, queries, portable(),
                                    -std::numeric_limits<float>::infinity());
      const double exact = Dot(q.data(), x.data(), dim);
      const double got = std::fabs(offers.keys[0] - exact);
      const double slack = queries.DotSlack(0, 0, rows);
      EXPECT_LE(got, slack);
      EXPECT_GE(got, 0.85 * slack) << "error " << got << ", slack " << slack;
    }
  }
}

// With the slack's coefficients set, as the Flat index sets them, every
// offered row's slack bounds its key's error; a scan of rows [begin, end)
// offers exactly those rows.
TEST_P(ReducedScanTest, TheOfferedSlackBoundsEachKey) {
  Rng rng(17);
  const size_t dim = 96;
  const size_t n = 1000;
  const size_t nq = 9;
  std::vector<float> x = Gaussian(rng, n * dim, 1.0f);
  for (size_t j = 0; j < dim; ++j) x[5 * dim + j] *= 50;  // a coarse row
  const std::vector<float> q = Gaussian(rng, nq * dim, 1.0f);
  const ReducedRows rows(x.data(), n, dim, GetParam().precision);
  ReducedQueries queries;
  queries.Prepare(rows, q.data(), nq);
  std::vector<float> a(nq), b(nq), c(nq);
  for (size_t i = 0; i < nq; ++i) {
    a[i] = static_cast<float>(queries.a(i));
    b[i] = static_cast<float>(queries.b(i));
    c[i] = static_cast<float>(queries.c(i));
  }
  struct Seen {
    std::vector<double> error;
    std::vector<double> slack;
    std::vector<size_t> rows;
    std::vector<size_t> queries;
    std::vector<float> bound;  // key + slack, in float
    const std::vector<float>* x;
    const std::vector<float>* q;
    size_t dim;
  } seen{{}, {}, {}, {}, {}, &x, &q, dim};
  ReducedSink sink;
  const std::vector<float> screens(nq, -std::numeric_limits<float>::infinity());
  sink.screen = screens.data();
  sink.slack_a = a.data();
  sink.slack_b = b.data();
  sink.slack_c = c.data();
  sink.context = &seen;
  sink.offer = [](void* context, size_t i, size_t row, float key, float slack) {
    auto& s = *static_cast<Seen*>(context);
    const double exact =
        Dot(s.q->data() + i * s.dim, s.x->data() + row * s.dim, s.dim);
    s.error.push_back(std::fabs(key - exact));
    s.slack.push_back(slack);
    s.rows.push_back(row);
    s.queries.push_back(i);
    s.bound.push_back(key + slack);
  };
  const size_t begin = 3 * kReducedGroupRows;
  const size_t end = n - 7;
  ReducedScan(rows, queries, begin, end, sink, portable());
  ASSERT_EQ(seen.rows.size(), nq * (end - begin));
  for (size_t j = 0; j < seen.rows.size(); ++j) {
    EXPECT_GE(seen.rows[j], begin);
    EXPECT_LT(seen.rows[j], end);
    EXPECT_LE(seen.error[j], seen.slack[j]) << "row " << seen.rows[j];
  }
  // With keys as well, each row's key + slack is written instead: the
  // bound the screen compares (IvfProbe's first pass reads it), here
  // from the scan's first row on (key_first).
  const size_t stride = end - begin;
  std::vector<float> bounds(nq * stride,
                            std::numeric_limits<float>::quiet_NaN());
  sink.keys = bounds.data();
  sink.key_stride = stride;
  sink.key_first = begin;
  ReducedScan(rows, queries, begin, end, sink, portable());
  ASSERT_EQ(seen.rows.size(), nq * (end - begin));  // nothing offered
  for (size_t j = 0; j < seen.rows.size(); ++j) {
    EXPECT_EQ(bounds[seen.queries[j] * stride + (seen.rows[j] - begin)],
              seen.bound[j])
        << "query " << seen.queries[j] << " row " << seen.rows[j];
  }
}

// Only rows whose key reaches the screen are offered, and all of them.
TEST_P(ReducedScanTest, OffersExactlyTheRowsAtOrAboveTheScreen) {
  Rng rng(13);
  const size_t dim = 40;
  const size_t n = 500;
  const size_t nq = 7;
  const std::vector<float> x = Gaussian(rng, n * dim, 1.0f);
  const std::vector<float> q = Gaussian(rng, nq * dim, 1.0f);
  const ReducedRows rows(x.data(), n, dim, GetParam().precision);
  ReducedQueries queries;
  queries.Prepare(rows, q.data(), nq);
  const Offers all = ScanAll(rows, queries, portable(),
                             -std::numeric_limits<float>::infinity());
  const float screen = 5.0f;
  const Offers some = ScanAll(rows, queries, portable(), screen);
  size_t offered = 0;
  for (size_t i = 0; i < all.keys.size(); ++i) {
    if (all.keys[i] >= screen) {
      EXPECT_EQ(some.keys[i], all.keys[i]) << "entry " << i;
      ++offered;
    } else {
      EXPECT_TRUE(std::isnan(some.keys[i])) << "entry " << i;
    }
  }
  EXPECT_GT(offered, 0u);
  EXPECT_LT(offered, all.keys.size());
}

// L2 keys, 2 dot - |q|^2 - |x|^2, within twice the slack (plus the
// rounding of the key itself) of the exact -|q - x|^2.
TEST_P(ReducedScanTest, L2KeysAreWithinTwiceTheSlack) {
  const Problem p(14, 33, 70, 5, 2.0f, 2.0f, GetParam().precision);
  const size_t dim = p.dim, n = p.n, nq = p.nq;
  const std::vector<float>&x = p.x, &q = p.q, &row_sq = p.row_sq,
        &query_sq = p.query_sq;
  const ReducedRows& rows = p.rows;
  const ReducedQueries& queries = p.queries;
  const Offers offers = ScanAll(rows, queries, portable(),
                                -std::numeric_limits<float>::infinity(),
                                row_sq.data(), query_sq.data());
  for (size_t i = 0; i < nq; ++i) {
    for (size_t r = 0; r < n; ++r) {
      double exact = 0;
      for (size_t j = 0; j < dim; ++j) {
        const double d = static_cast<double>(q[i * dim + j]) - x[r * dim + j];
        exact -= d * d;
      }
      const double key = offers.keys[i * n + r];
      const double rounding = 1e-5 * (query_sq[i] + row_sq[r]);
      EXPECT_LE(std::fabs(key - exact), 2 * queries.DotSlack(i) + rounding)
          << "query " << i << " row " << r;
    }
  }
}

// A sink with keys gets every row's key, the same as the offers with no
// screen (inner product and L2), and nothing is offered; rows outside
// [begin, end) and the padding past the stride's rows are not written.
TEST_P(ReducedScanTest, KeysAreTheOfferedKeysOfEveryRow) {
  Problem p(19, 45, 83, 13, 1.0f, 1.0f, GetParam().precision);
  const size_t n = p.n, nq = p.nq;
  const ReducedRows& rows = p.rows;
  const ReducedQueries& queries = p.queries;
  std::vector<float>&row_sq = p.row_sq, &query_sq = p.query_sq;
  for (bool l2 : {false, true}) {
    SCOPED_TRACE(l2 ? "L2" : "inner product");
    const Offers offers = ScanAll(
        rows, queries, portable(), -std::numeric_limits<float>::infinity(),
        l2 ? row_sq.data() : nullptr, l2 ? query_sq.data() : nullptr);
    const size_t stride = n + 5;
    const float unset = -12345.0f;
    std::vector<float> keys(nq * stride, unset);
    Offers none;
    none.rows = n;
    none.keys.assign(nq * n, std::numeric_limits<float>::quiet_NaN());
    std::vector<float> screens(nq, -std::numeric_limits<float>::infinity());
    ReducedSink sink;
    sink.screen = screens.data();
    sink.row_sq = l2 ? row_sq.data() : nullptr;
    sink.query_sq = l2 ? query_sq.data() : nullptr;
    sink.offer = &Record;
    sink.context = &none;
    sink.keys = keys.data();
    sink.key_stride = stride;
    // From the second group on: the first group's rows stay unwritten.
    const size_t begin = kReducedGroupRows;
    ReducedScan(rows, queries, begin, n, sink, portable());
    for (size_t i = 0; i < nq; ++i) {
      for (size_t r = 0; r < stride; ++r) {
        const float key = keys[i * stride + r];
        if (r < begin || r >= n) {
          EXPECT_EQ(key, unset) << "query " << i << " row " << r;
        } else {
          EXPECT_EQ(key, offers.keys[i * n + r])
              << "query " << i << " row " << r;
        }
      }
    }
    for (float key : none.keys) EXPECT_TRUE(std::isnan(key)) << "offered";
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, ReducedScanTest,
                         testing::Values(Case{ScanPrecision::kInt8, false},
                                         Case{ScanPrecision::kInt8, true},
                                         Case{ScanPrecision::kBf16, false},
                                         Case{ScanPrecision::kBf16, true}),
                         CaseName);

// The SIMD and portable int8 kernels compute the same integer sums, scaled
// the same way: identical keys. Also for centred rows, with queries
// packed less their share along the rows' direction.
TEST(ReducedScanKernelsTest, Int8SimdAndPortableAgreeExactly) {
  Rng rng(15);
  const size_t dim = 131;
  const size_t n = 300;
  const size_t nq = 11;
  std::vector<float> x = Gaussian(rng, n * dim, 1.0f);
  std::vector<float> q = Gaussian(rng, nq * dim, 1.0f);
  for (size_t r = 0; r < n; ++r) {
    for (size_t j = 0; j < dim; ++j) x[r * dim + j] += 3.0f;
  }
  for (size_t i = 0; i < nq; i += 2) {
    for (size_t j = 0; j < dim; ++j) q[i * dim + j] += 5.0f;
  }
  for (const bool centred : {false, true}) {
    const ReducedRows rows(x.data(), n, dim, ScanPrecision::kInt8, centred);
    ReducedQueries queries;
    queries.Prepare(rows, q.data(), nq);
    if (centred) {
      EXPECT_NE(queries.along(0), 0.0f) << "query 0 packed whole";
    }
    const float all = -std::numeric_limits<float>::infinity();
    const Offers simd = ScanAll(rows, queries, false, all);
    const Offers portable = ScanAll(rows, queries, true, all);
    for (size_t i = 0; i < simd.keys.size(); ++i) {
      ASSERT_EQ(simd.keys[i], portable.keys[i])
          << "entry " << i << (centred ? " centred" : "");
    }
  }
}

TEST(ScanPrecisionTest, NamesRoundTripAndAutoResolvesToANativeOne) {
  for (ScanPrecision p : {ScanPrecision::kAuto, ScanPrecision::kF32,
                          ScanPrecision::kBf16, ScanPrecision::kInt8}) {
    EXPECT_EQ(ParseScanPrecision(ScanPrecisionName(p)), p);
  }
  EXPECT_EQ(ParseScanPrecision("fp32"), std::nullopt);
  EXPECT_EQ(ParseScanPrecision("INT8"), std::nullopt);
  const ScanPrecision resolved = ResolveScanPrecision(ScanPrecision::kAuto);
  EXPECT_NE(resolved, ScanPrecision::kAuto);
  EXPECT_TRUE(CpuRunsScan(resolved));
  if (CpuRunsScan(ScanPrecision::kInt8)) {
    EXPECT_EQ(resolved, ScanPrecision::kInt8);
  }
  EXPECT_EQ(ResolveScanPrecision(ScanPrecision::kBf16), ScanPrecision::kBf16);
}

TEST(ReducedRowsTest, BytesAreAQuarterOrAHalfOfFloat32PlusPerRowTerms) {
  Rng rng(16);
  const size_t dim = 64;
  const size_t n = 160;
  const std::vector<float> x = Gaussian(rng, n * dim, 1.0f);
  const ReducedRows int8(x.data(), n, dim, ScanPrecision::kInt8);
  const ReducedRows bf16(x.data(), n, dim, ScanPrecision::kBf16);
  // Plus, per row, its residual and norm (and int8's scale).
  EXPECT_EQ(int8.MemoryBytes(), n * dim + 3 * n * sizeof(float));
  EXPECT_EQ(bf16.MemoryBytes(), n * dim * 2 + 2 * n * sizeof(float));
}

// An IVF index's lists share one ReducedLines: rows packed in it scan as
// rows with lines of their own and count the same bytes, and taking more
// than its room throws.
TEST(ReducedRowsTest, RowsInReducedLinesScanAsRowsWithTheirOwn) {
  Rng rng(17);
  const size_t dim = 70;
  const size_t nq = 5;
  const std::vector<size_t> sizes = {33, 1, 200};
  std::vector<std::vector<float>> lists;
  for (size_t n : sizes) lists.push_back(Gaussian(rng, n * dim, 1.0f));
  const std::vector<float> q = Gaussian(rng, nq * dim, 1.0f);
  const ReducedRows::Centring centring =
      ReducedRows::CentringOf(lists[2].data(), sizes[2], dim);
  const float all = -std::numeric_limits<float>::infinity();
  for (ScanPrecision precision : {ScanPrecision::kInt8, ScanPrecision::kBf16}) {
    SCOPED_TRACE(ScanPrecisionName(precision));
    size_t bytes = 0;
    for (size_t n : sizes) bytes += ReducedRows::LineBytes(n, dim, precision);
    ReducedLines lines(bytes);
    for (size_t l = 0; l < sizes.size(); ++l) {
      const ReducedRows own(lists[l].data(), sizes[l], dim, precision,
                            centring);
      const ReducedRows shared(lists[l].data(), sizes[l], dim, precision,
                               centring, &lines);
      EXPECT_EQ(shared.MemoryBytes(), own.MemoryBytes()) << "list " << l;
      ReducedQueries queries;
      queries.Prepare(own, q.data(), nq);
      for (bool portable : {false, true}) {
        const Offers a = ScanAll(own, queries, portable, all);
        const Offers b = ScanAll(shared, queries, portable, all);
        ASSERT_EQ(a.keys.size(), b.keys.size());
        for (size_t e = 0; e < a.keys.size(); ++e) {
          ASSERT_EQ(a.keys[e], b.keys[e]) << "list " << l << " entry " << e;
        }
      }
    }
    EXPECT_EQ(lines.PaddingBytes(), 0u);  // short: allocated as asked
    EXPECT_THROW(lines.Take(64), std::length_error);
  }
  // An index of empty lists asks for none: a line is allocated (counted).
  ReducedLines none(0);
  EXPECT_EQ(none.PaddingBytes(), 64u);
  EXPECT_THROW(none.Take(64), std::length_error);
}

// Whether this kernel reports the advice below: it has transparent huge
// pages (under any setting, "never" too, madvise(MADV_HUGEPAGE) marks the
// mapping) and /proc/self/smaps shows each mapping's VmFlags.
bool KernelShowsHugeAdvice() {
  if (!std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled")) {
    return false;
  }
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  while (std::getline(smaps, line)) {
    if (line.rfind("VmFlags:", 0) == 0) return true;
  }
  return false;
}

// Whether the mapping holding `p` was advised as huge pages: its VmFlags
// in /proc/self/smaps hold "hg".
bool AdvisedHuge(const void* p) {
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0;
    uintptr_t end = 0;
    char dash = 0;
    std::istringstream header(line);
    if (header >> std::hex >> begin >> dash >> end && dash == '-') {
      inside = begin <= at && at < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return (line + " ").find(" hg ") != std::string::npos;
    }
  }
  return false;
}

// Lines of 4 MB or more (a Flat index's rows; an IVF index's lists
// together) start on a 2 MB boundary, are advised as huge pages (where the
// kernel can show it), and count whole 2 MB pages; shorter ones are none
// of these.
TEST(ReducedRowsTest, LongLinesAreAdvisedAsHugePages) {
  const bool shows = KernelShowsHugeAdvice();
  const size_t dim = 128;
  const size_t n = 40000;  // 2,500 groups of 32 lines: 5,120,000 bytes
  const size_t huge = size_t{2} << 20;
  const std::vector<float> x(n * dim, 0.5f);
  const ReducedRows rows(x.data(), n, dim, ScanPrecision::kInt8);
  ASSERT_EQ(ReducedRows::LineBytes(n, dim, ScanPrecision::kInt8), 5120000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(rows.lines()) % huge, 0u);
  EXPECT_EQ(rows.MemoryBytes(), 3 * huge + 3 * n * sizeof(float));
  EXPECT_EQ(rows.MemoryBytes(),
            ReducedRows::BytesFor(n, dim, ScanPrecision::kInt8));
  if (shows) {
    EXPECT_TRUE(AdvisedHuge(rows.lines()));
  }

  ReducedLines lines(5120000);
  EXPECT_EQ(lines.PaddingBytes(), 3 * huge);
  const uint8_t* first = lines.Take(5000000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % huge, 0u);
  if (shows) {
    EXPECT_TRUE(AdvisedHuge(first));
  }
  EXPECT_EQ(lines.PaddingBytes(), 3 * huge - 5000000);
  lines.Take(1);  // a whole line: the next stays aligned
  EXPECT_EQ(lines.PaddingBytes(), 3 * huge - 5000064);

  const size_t few = 1024;  // 131,072 bytes of lines
  const ReducedRows short_rows(x.data(), few, dim, ScanPrecision::kInt8);
  EXPECT_EQ(short_rows.MemoryBytes(), few * dim + 3 * few * sizeof(float));
  EXPECT_FALSE(AdvisedHuge(short_rows.lines()));
}

}  // namespace
}  // namespace hardneg

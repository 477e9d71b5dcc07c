// WithFastListScan: the SIMD list scan against FAISS's own IndexIVFFlat
// scanner on the same trained index, and the FAISS file round trip.
#include "index/ivf_flat_scan.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/clone_index.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <typeinfo>
#include <vector>

namespace hardneg {
namespace {

using idx_t = faiss::Index::idx_t;

std::vector<float> Gaussian(std::mt19937_64& rng, size_t count) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = normal(rng);
  return v;
}

struct Result {
  std::vector<float> distances;
  std::vector<idx_t> labels;
};

Result Search(const faiss::Index& index, const std::vector<float>& queries,
              size_t nq, size_t k) {
  Result r;
  r.distances.resize(nq * k);
  r.labels.resize(nq * k);
  index.search(static_cast<idx_t>(nq), queries.data(), static_cast<idx_t>(k),
               r.distances.data(), r.labels.data());
  return r;
}

class IvfFlatScanTest : public ::testing::TestWithParam<faiss::MetricType> {};

INSTANTIATE_TEST_SUITE_P(Metrics, IvfFlatScanTest,
                         ::testing::Values(faiss::METRIC_INNER_PRODUCT,
                                           faiss::METRIC_L2),
                         [](const auto& p) {
                           return p.param == faiss::METRIC_L2 ? "L2" : "Ip";
                         });

// Same lists probed, same candidates ranked: the answers agree with
// FAISS's scalar scanner up to float rounding (a dimension of 37 also
// runs the scanner's 4-wide and scalar tails).
TEST_P(IvfFlatScanTest, AgreesWithFaissOwnScanner) {
  const faiss::MetricType metric = GetParam();
  std::mt19937_64 rng(7);
  const size_t d = 37;
  const size_t n = 3000;
  const size_t nq = 40;
  const size_t k = 10;
  const std::vector<float> x = Gaussian(rng, n * d);
  const std::vector<float> queries = Gaussian(rng, nq * d);
  std::unique_ptr<faiss::Index> index(
      faiss::index_factory(static_cast<int>(d), "IVF16,Flat", metric));
  index->train(static_cast<idx_t>(n), x.data());
  index->add(static_cast<idx_t>(n), x.data());
  dynamic_cast<faiss::IndexIVFFlat&>(*index).nprobe = 4;
  std::unique_ptr<faiss::Index> reference(faiss::clone_index(index.get()));
  const Result want = Search(*reference, queries, nq, k);

  faiss::Index* before = index.get();
  std::unique_ptr<faiss::Index> fast = WithFastListScan(std::move(index));
  ASSERT_NE(fast.get(), before);
  const faiss::Index& fast_index = *fast;  // typeid of a plain lvalue
  EXPECT_NE(typeid(fast_index), typeid(faiss::IndexIVFFlat));
  ASSERT_NE(dynamic_cast<faiss::IndexIVFFlat*>(fast.get()), nullptr);
  EXPECT_EQ(fast->ntotal, static_cast<idx_t>(n));
  const Result got = Search(*fast, queries, nq, k);
  for (size_t i = 0; i < nq * k; ++i) {
    const double tolerance = 1e-4 * (1 + std::fabs(want.distances[i]));
    EXPECT_NEAR(got.distances[i], want.distances[i], tolerance) << i;
    if (got.labels[i] == want.labels[i]) continue;
    // Only a near tie may swap places, or leave at the k-th.
    const size_t row = i / k * k;
    size_t at = row + k - 1;
    for (size_t j = row; j < row + k; ++j) {
      if (got.labels[j] == want.labels[i]) at = j;
    }
    EXPECT_NEAR(got.distances[at], want.distances[i], 2 * tolerance)
        << "position " << i << ": " << got.labels[i] << " vs FAISS's "
        << want.labels[i];
  }

  // Written as a plain IndexIVFFlat, read back, and swapped again.
  const std::string path = ::testing::TempDir() + "/ivf_flat_scan_" +
                           std::to_string(::getpid()) + ".faiss";
  faiss::write_index(fast.get(), path.c_str());
  std::unique_ptr<faiss::Index> loaded(faiss::read_index(path.c_str()));
  ::unlink(path.c_str());
  const faiss::Index& loaded_index = *loaded;
  EXPECT_EQ(typeid(loaded_index), typeid(faiss::IndexIVFFlat));
  std::unique_ptr<faiss::Index> reloaded = WithFastListScan(std::move(loaded));
  const Result again = Search(*reloaded, queries, nq, k);
  EXPECT_EQ(again.labels, got.labels);
  EXPECT_EQ(again.distances, got.distances);
}

TEST(IvfFlatScanOtherTest, OtherIndexesAreReturnedUnchanged) {
  auto flat = std::make_unique<faiss::IndexFlatIP>(8);
  faiss::Index* before = flat.get();
  EXPECT_EQ(WithFastListScan(std::move(flat)).get(), before);
}

}  // namespace
}  // namespace hardneg

#include "vector_index.h"

#include <cblas.h>
#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <new>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace hardneg {
namespace {

// Candidates per sgemm block: big enough to amortise the call, small enough
// that a block of scores for a batch stays in cache.
constexpr size_t kBlockRows = 4096;
// Upper bound on per-call candidate buffers (entries), so a deep search of a
// big batch is split into query chunks instead of exhausting memory.
constexpr size_t kMaxBufferEntries = size_t{1} << 24;
// Below this many queries, one sgemv per query beats sgemm's packing.
constexpr size_t kMinGemmQueries = 4;
// float32 unit roundoff.
constexpr double kUnitRoundoff = 1.0 / (1 << 24);

struct Candidate {
  float key;  // higher is closer for both metrics
  int64_t row;
};

bool Better(const Candidate& a, const Candidate& b) {
  return a.key > b.key || (a.key == b.key && a.row < b.row);
}

// Exact search over the store's vectors in place: blocked sgemm for the dot
// products, then a per-query top-k with a threshold filter so that most
// candidates cost one comparison.
class FlatIndex final : public VectorIndex {
 public:
  FlatIndex(const CandidateStore& store, Metric metric)
      : store_(store), metric_(metric) {}

  absl::Status Search(const float* queries, size_t nq, size_t k, float* scores,
                      int64_t* rows) const override {
    if (nq == 0 || k == 0) return absl::OkStatus();
    const size_t kept = std::min(k, store_.size());
    const size_t chunk =
        std::max<size_t>(1, std::min(nq, kMaxBufferEntries / (2 * kept + 1)));
    for (size_t q0 = 0; q0 < nq; q0 += chunk) {
      const size_t nc = std::min(chunk, nq - q0);
      SearchChunk(queries + q0 * store_.dim(), nc, k, kept, scores + q0 * k,
                  rows + q0 * k);
    }
    return absl::OkStatus();
  }

  bool exact() const override { return true; }

  double ErrorBound(double query_norm) const override {
    // sgemm accumulates d products in float: |error| <= d * u * |q| * |x|
    // (with slack for blocking); L2 adds the rounding of |q|^2 + |x|^2.
    const double d = static_cast<double>(store_.dim()) + 8;
    const double m = store_.max_norm();
    if (metric_ == Metric::kInnerProduct) {
      return 2 * d * kUnitRoundoff * query_norm * m + 1e-30;
    }
    const double s = query_norm + m;
    return 2 * d * kUnitRoundoff * s * s + 1e-30;
  }

  std::string type() const override { return "Flat"; }
  // The vectors are the store's, which is saved with it.
  absl::Status Save(const std::string& /*path*/) const override {
    return absl::OkStatus();
  }
  size_t MemoryBytes() const override { return 0; }

 private:
  void SearchChunk(const float* queries, size_t nq, size_t k, size_t kept,
                   float* scores, int64_t* rows) const {
    const size_t n = store_.size();
    const size_t dim = store_.dim();
    const size_t block = std::min(kBlockRows, n);
    std::vector<float> dots(nq * block);
    std::vector<float> query_sq(nq, 0.0f);
    if (metric_ == Metric::kL2) {
      for (size_t q = 0; q < nq; ++q) {
        double sq = 0;
        for (size_t i = 0; i < dim; ++i) {
          sq +=
              static_cast<double>(queries[q * dim + i]) * queries[q * dim + i];
        }
        query_sq[q] = static_cast<float>(sq);
      }
    }
    std::vector<std::vector<Candidate>> heaps(nq);
    std::vector<float> threshold(nq, -std::numeric_limits<float>::infinity());
    for (auto& h : heaps) h.reserve(std::min(2 * kept, n));

    for (size_t b0 = 0; b0 < n; b0 += block) {
      const size_t bn = std::min(block, n - b0);
      if (nq < kMinGemmQueries) {
        // sgemm would repack the whole block for a query or two; sgemv
        // streams it once.
        for (size_t q = 0; q < nq; ++q) {
          cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(bn),
                      static_cast<int>(dim), 1.0f, store_.data() + b0 * dim,
                      static_cast<int>(dim), queries + q * dim, 1, 0.0f,
                      dots.data() + q * bn, 1);
        }
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
                    static_cast<int>(nq), static_cast<int>(bn),
                    static_cast<int>(dim), 1.0f, queries, static_cast<int>(dim),
                    store_.data() + b0 * dim, static_cast<int>(dim), 0.0f,
                    dots.data(), static_cast<int>(bn));
      }
      for (size_t q = 0; q < nq; ++q) {
        const float* s = dots.data() + q * bn;
        std::vector<Candidate>& heap = heaps[q];
        float thr = threshold[q];
        for (size_t j = 0; j < bn; ++j) {
          float key = s[j];
          if (metric_ == Metric::kL2) {
            key = 2 * s[j] - query_sq[q] - store_.squared_norm(b0 + j);
          }
          if (key < thr) continue;
          heap.push_back({key, static_cast<int64_t>(b0 + j)});
          if (heap.size() >= 2 * kept) {
            std::nth_element(heap.begin(), heap.begin() + (kept - 1),
                             heap.end(), Better);
            heap.resize(kept);
            thr = heap[kept - 1].key;
          }
        }
        threshold[q] = thr;
      }
    }
    for (size_t q = 0; q < nq; ++q) {
      std::vector<Candidate>& heap = heaps[q];
      const size_t m = std::min(kept, heap.size());
      std::partial_sort(heap.begin(), heap.begin() + m, heap.end(), Better);
      for (size_t j = 0; j < k; ++j) {
        if (j < m) {
          const float key = heap[j].key;
          scores[q * k + j] = metric_ == Metric::kL2 ? -key : key;
          rows[q * k + j] = heap[j].row;
        } else {
          scores[q * k + j] = metric_ == Metric::kL2
                                  ? std::numeric_limits<float>::infinity()
                                  : -std::numeric_limits<float>::infinity();
          rows[q * k + j] = -1;
        }
      }
    }
  }

  const CandidateStore& store_;
  const Metric metric_;
};

// Any other FAISS factory string: FAISS holds its own codes.
class FaissIndex final : public VectorIndex {
 public:
  FaissIndex(std::unique_ptr<faiss::Index> index, std::string factory)
      : index_(std::move(index)), factory_(std::move(factory)) {}

  absl::Status Search(const float* queries, size_t nq, size_t k, float* scores,
                      int64_t* rows) const override {
    static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t));
    try {
      index_->search(static_cast<faiss::Index::idx_t>(nq), queries,
                     static_cast<faiss::Index::idx_t>(k), scores,
                     reinterpret_cast<faiss::Index::idx_t*>(rows));
    } catch (const faiss::FaissException& e) {
      return absl::InternalError(
          absl::StrCat("FAISS search failed: ", e.what()));
    }
    return absl::OkStatus();
  }

  bool exact() const override { return false; }
  double ErrorBound(double /*query_norm*/) const override { return 0; }
  std::string type() const override { return factory_; }

  absl::Status Save(const std::string& path) const override {
    try {
      faiss::write_index(index_.get(), path.c_str());
    } catch (const faiss::FaissException& e) {
      return absl::InternalError(absl::StrCat("writing FAISS index \"",
                                              factory_, "\" to ", path,
                                              " failed: ", e.what()));
    }
    return absl::OkStatus();
  }

  size_t MemoryBytes() const override {
    // Codes dominate; FAISS keeps no portable accounting of its own.
    return static_cast<size_t>(index_->ntotal) * index_->d * sizeof(float);
  }

 private:
  std::unique_ptr<faiss::Index> index_;
  std::string factory_;
};

faiss::MetricType FaissMetric(Metric metric) {
  return metric == Metric::kInnerProduct ? faiss::METRIC_INNER_PRODUCT
                                         : faiss::METRIC_L2;
}

const char* FaissMetricName(faiss::MetricType metric) {
  switch (metric) {
    case faiss::METRIC_INNER_PRODUCT:
      return "inner_product";
    case faiss::METRIC_L2:
      return "l2";
    default:
      return "another FAISS metric";
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<VectorIndex>> BuildVectorIndex(
    const CandidateStore& store, Metric metric,
    const IndexBuildOptions& options) {
  if (options.factory == "Flat") {
    return std::unique_ptr<VectorIndex>(new FlatIndex(store, metric));
  }
  const faiss::MetricType faiss_metric = FaissMetric(metric);
  std::unique_ptr<faiss::Index> index;
  try {
    index.reset(faiss::index_factory(static_cast<int>(store.dim()),
                                     options.factory.c_str(), faiss_metric));
  } catch (const faiss::FaissException& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--index \"", options.factory,
        "\" is not a FAISS factory string FAISS accepts: ", e.what()));
  }
  try {
    const auto n = static_cast<faiss::Index::idx_t>(store.size());
    if (!index->is_trained) {
      size_t train_rows = store.size();
      if (options.max_train_rows != 0) {
        train_rows = std::min(train_rows, options.max_train_rows);
      }
      if (train_rows == store.size()) {
        index->train(n, store.data());
      } else {
        // An evenly strided sample: checkpoints are often sorted by class.
        std::vector<float> sample(train_rows * store.dim());
        const double stride =
            static_cast<double>(store.size()) / static_cast<double>(train_rows);
        for (size_t i = 0; i < train_rows; ++i) {
          const size_t row = static_cast<size_t>(i * stride);
          std::copy_n(store.vector(row), store.dim(),
                      sample.data() + i * store.dim());
        }
        index->train(static_cast<faiss::Index::idx_t>(train_rows),
                     sample.data());
      }
    }
    index->add(n, store.data());
    if (options.nprobe > 0 &&
        options.factory.find("IVF") != std::string::npos) {
      // ParameterSpace reaches through wrappers such as IndexPreTransform.
      faiss::ParameterSpace().set_index_parameter(
          index.get(), "nprobe", static_cast<double>(options.nprobe));
    }
  } catch (const faiss::FaissException& e) {
    return absl::InternalError(absl::StrCat(
        "building FAISS index \"", options.factory, "\" failed: ", e.what()));
  }
  return std::unique_ptr<VectorIndex>(
      new FaissIndex(std::move(index), options.factory));
}

absl::StatusOr<std::unique_ptr<VectorIndex>> LoadVectorIndex(
    const std::string& path, const CandidateStore& store, Metric metric,
    const std::string& factory) {
  if (factory == "Flat") {
    return std::unique_ptr<VectorIndex>(new FlatIndex(store, metric));
  }
  std::unique_ptr<faiss::Index> index;
  try {
    index = std::unique_ptr<faiss::Index>(faiss::read_index(path.c_str()));
  } catch (const faiss::FaissException& e) {
    return absl::InternalError(absl::StrCat("reading FAISS index \"", factory,
                                            "\" from ", path,
                                            " failed: ", e.what()));
  } catch (const std::bad_alloc&) {
    // A corrupt length field can ask for terabytes.
    return absl::InternalError(
        absl::StrCat("reading FAISS index \"", factory, "\" from ", path,
                     " failed: out of memory (is the file corrupt?)"));
  }
  if (static_cast<size_t>(index->d) != store.dim()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the index has dimension ", index->d,
                     ", the candidates have dimension ", store.dim()));
  }
  if (index->metric_type != FaissMetric(metric)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": the index uses metric ", FaissMetricName(index->metric_type),
        ", expected ", MetricName(metric)));
  }
  if (index->ntotal < 0 || static_cast<size_t>(index->ntotal) != store.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the index holds ", index->ntotal,
                     " vectors, the candidates are ", store.size()));
  }
  if (!index->is_trained) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the index is not trained"));
  }
  return std::unique_ptr<VectorIndex>(
      new FaissIndex(std::move(index), factory));
}

}  // namespace hardneg

#include "index/ivf_flat_scan.h"

#include <faiss/IndexIVFFlat.h>
#include <faiss/utils/Heap.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <cstddef>
#include <cstdint>
#include <typeinfo>
#include <utility>
#include <vector>

#include "index/row_dots.h"

namespace hardneg {
namespace {

#if defined(__SSE2__)
inline float HorizontalSum(__m128 v) {
  v = _mm_add_ps(v, _mm_movehl_ps(v, v));
  v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
  return _mm_cvtss_f32(v);
}
#endif

}  // namespace

float SquaredL2(const float* a, const float* b, size_t d) {
  size_t i = 0;
  float sum = 0;
#if defined(__SSE2__)
  __m128 s[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(),
                 _mm_setzero_ps()};
  for (; i + 16 <= d; i += 16) {
    for (int j = 0; j < 4; ++j) {
      const __m128 t =
          _mm_sub_ps(_mm_loadu_ps(a + i + 4 * j), _mm_loadu_ps(b + i + 4 * j));
      s[j] = _mm_add_ps(s[j], _mm_mul_ps(t, t));
    }
  }
  for (; i + 4 <= d; i += 4) {
    const __m128 t = _mm_sub_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i));
    s[0] = _mm_add_ps(s[0], _mm_mul_ps(t, t));
  }
  sum =
      HorizontalSum(_mm_add_ps(_mm_add_ps(s[0], s[1]), _mm_add_ps(s[2], s[3])));
#endif
  for (; i < d; ++i) sum += (a[i] - b[i]) * (a[i] - b[i]);
  return sum;
}

namespace {

// Scores one query against a list's raw float codes into FAISS's result
// heap (a min-heap of the best inner products, or a max-heap of the
// nearest L2 distances), as IndexIVFFlat's own scanner does.
class SimdFlatScanner final : public faiss::InvertedListScanner {
 public:
  SimdFlatScanner(size_t d, bool inner_product)
      : d_(d), inner_product_(inner_product) {
    keep_max = inner_product;
    code_size = d * sizeof(float);
  }

  void set_query(const float* query) override { query_ = query; }
  void set_list(idx_t list, float /*coarse_dis*/) override { list_no = list; }

  float distance_to_code(const uint8_t* code) const override {
    const auto* x = reinterpret_cast<const float*>(code);
    if (!inner_product_) return SquaredL2(query_, x, d_);
    float dot = 0;
    RowDots(x, 1, d_, query_, 1, &dot);
    return dot;
  }

  size_t scan_codes(size_t n, const uint8_t* codes, const idx_t* ids,
                    float* distances, idx_t* labels, size_t k) const override {
    const auto* x = reinterpret_cast<const float*>(codes);
    size_t updates = 0;
    if (inner_product_) {
      // The whole list's dot products in one RowDots pass (AVX2 where the
      // CPU has it), then the heap.
      thread_local std::vector<float> dots;
      if (dots.size() < n) dots.resize(n);
      RowDots(x, n, d_, query_, 1, dots.data());
      for (size_t j = 0; j < n; ++j) {
        const float dis = dots[j];
        if (dis > distances[0]) {
          faiss::minheap_replace_top(k, distances, labels, dis, ids[j]);
          ++updates;
        }
      }
    } else {
      for (size_t j = 0; j < n; ++j, x += d_) {
        const float dis = SquaredL2(query_, x, d_);
        if (dis < distances[0]) {
          faiss::maxheap_replace_top(k, distances, labels, dis, ids[j]);
          ++updates;
        }
      }
    }
    return updates;
  }

 private:
  const size_t d_;
  const bool inner_product_;
  const float* query_ = nullptr;
};

class SimdIndexIVFFlat final : public faiss::IndexIVFFlat {
 public:
  // Shares `other`'s quantizer and lists; the caller makes `other` stop
  // owning them.
  explicit SimdIndexIVFFlat(const faiss::IndexIVFFlat& other)
      : faiss::IndexIVFFlat(other) {}

  faiss::InvertedListScanner* get_InvertedListScanner(
      bool store_pairs, const faiss::IDSelector* sel) const override {
    if (store_pairs || sel != nullptr ||
        (metric_type != faiss::METRIC_INNER_PRODUCT &&
         metric_type != faiss::METRIC_L2)) {
      return faiss::IndexIVFFlat::get_InvertedListScanner(store_pairs, sel);
    }
    return new SimdFlatScanner(static_cast<size_t>(d),
                               metric_type == faiss::METRIC_INNER_PRODUCT);
  }
};

}  // namespace

bool IsIvfFlat(const faiss::Index& index) {
  return typeid(index) == typeid(faiss::IndexIVFFlat) ||
         typeid(index) == typeid(SimdIndexIVFFlat);
}

std::unique_ptr<faiss::Index> WithFastListScan(
    std::unique_ptr<faiss::Index> index) {
  auto* ivf = dynamic_cast<faiss::IndexIVFFlat*>(index.get());
  if (ivf == nullptr || typeid(*ivf) != typeid(faiss::IndexIVFFlat)) {
    return index;
  }
  auto fast = std::make_unique<SimdIndexIVFFlat>(*ivf);
  // The new index owns what the old one did; the old one gives it up.
  ivf->own_fields = false;
  ivf->own_invlists = false;
  return fast;
}

}  // namespace hardneg

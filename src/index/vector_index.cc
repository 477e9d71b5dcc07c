#include "index/vector_index.h"

#include <cblas.h>
#include <faiss/AutoTune.h>
#include <faiss/IVFlib.h>
#include <faiss/Index.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <omp.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <new>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "index/ivf_flat_scan.h"
#include "index/ivf_probe.h"
#include "index/reduced_scan.h"
#include "index/row_dots.h"

namespace hardneg {
namespace {

// Scores computed per sgemm call (a block of rows for a batch of queries):
// small enough to stay in a core's L2 cache from the sgemm that writes
// them to the scan that reads them.
constexpr size_t kBlockScores = size_t{1} << 16;
// Rows per block: at least enough to amortise a call, at most what one
// query needs to stream its rows once.
constexpr size_t kMinBlockRows = 256;
constexpr size_t kMaxBlockRows = 4096;
// Upper bound on per-call candidate buffers (entries), so a deep search of a
// big batch is split into query chunks instead of exhausting memory.
constexpr size_t kMaxBufferEntries = size_t{1} << 24;
// A thread keeps its buffers between calls up to this many candidate
// entries; a deep search's bigger ones are freed when it ends.
constexpr size_t kKeptBufferEntries = size_t{1} << 20;
// Below this many queries, one sgemv per query beats sgemm's packing.
constexpr size_t kMinGemmQueries = 4;
// Scores are screened this many at a time against the query's threshold:
// one bit mask, usually zero, for the whole group.
constexpr size_t kGroup = 32;
// How long the calling thread of a parallel search spins for the other
// parts to finish before it sleeps (see AwaitParts).
constexpr std::chrono::microseconds kMaxPartSpin{200};
// float32 unit roundoff.
constexpr double kUnitRoundoff = 1.0 / (1 << 24);
// binary16: unit roundoff, and the largest error of rounding a value
// below the normal range (half the subnormal spacing, 2^-24).
constexpr double kHalfRoundoff = 1.0 / (1 << 11);
constexpr double kHalfSubnormalError = 1.0 / (1 << 25);
// Searches for more than this many rows a query skip the half copy: their
// first pass would keep and rescore twice as many, and memory for them.
constexpr size_t kMaxHalfKept = 1024;
// Vectors longer than this have components too close to binary16's
// largest finite value (65504) for a half copy.
constexpr float kHalfMaxNorm = 60000.0f;

// The most queries one reduced pass takes: their packed copies stay in a
// core's L2 cache while every row tile streams past them.
constexpr size_t kMaxReducedQueries = 256;
// Queries the reduced pass takes before it may give up on an index whose
// queries mostly fall back.
constexpr uint64_t kMinReducedVerdict = 256;
// Searches for more than this many rows a query go straight to float32:
// a deep search keeps a large share of the rows anyway.
constexpr size_t kMaxReducedKept = 4096;
// A query whose reduced pass keeps more candidates than this (per part;
// rows too close together for the reduced precision to order) is searched
// again in float32 instead of rescoring them all.
size_t MaxScreened(size_t kept) { return std::max<size_t>(4096, 16 * kept); }

// The precision a Flat index over `store` scans at.
ScanPrecision FlatScan(const CandidateStore& store,
                       const IndexBuildOptions& options) {
  const ScanPrecision scan = EffectiveScan(options.scan, store.dim());
  return store.size() > 0 ? scan : ScanPrecision::kF32;
}

// Whether a Flat index over `store` keeps a half copy.
bool UsesHalfScan(const CandidateStore& store,
                  const IndexBuildOptions& options) {
  return options.half_scan && FlatScan(store, options) == ScanPrecision::kF32 &&
         RowDotsSimd() && store.size() > 0 && store.max_norm() <= kHalfMaxNorm;
}

struct Candidate {
  float key;  // higher is closer for both metrics
  int64_t row;
};

bool Better(const Candidate& a, const Candidate& b) {
  return a.key > b.key || (a.key == b.key && a.row < b.row);
}

// Bit j set when s[j] >= threshold, for j in [0, kGroup).
inline uint32_t GroupMask(const float* s, float threshold) {
#if defined(__SSE2__)
  const __m128 t = _mm_set1_ps(threshold);
  uint32_t mask = 0;
  for (int i = 0; i < 8; ++i) {
    const int bits = _mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(s + 4 * i), t));
    mask |= static_cast<uint32_t>(bits) << (4 * i);
  }
  return mask;
#else
  uint32_t mask = 0;
  for (size_t j = 0; j < kGroup; ++j) {
    if (s[j] >= threshold) mask |= uint32_t{1} << j;
  }
  return mask;
#endif
}

// L2 keys in place: s[j] = 2 s[j] - query_sq - row_sq[j], so that higher
// is closer as for inner products.
void ToL2Keys(float* s, size_t n, float query_sq, const float* row_sq) {
  size_t j = 0;
#if defined(__SSE2__)
  const __m128 q = _mm_set1_ps(query_sq);
  for (; j + 4 <= n; j += 4) {
    const __m128 d = _mm_loadu_ps(s + j);
    _mm_storeu_ps(s + j, _mm_sub_ps(_mm_sub_ps(_mm_add_ps(d, d), q),
                                    _mm_loadu_ps(row_sq + j)));
  }
#endif
  for (; j < n; ++j) s[j] = 2 * s[j] - query_sq - row_sq[j];
}

// A query's best candidates so far: an unordered buffer of up to 2 * kept
// entries, cut back to the best `kept` when full. Candidates below the
// threshold (the kept-th best key after a cut) cannot enter.
class TopK {
 public:
  TopK(Candidate* buffer, size_t kept) : buffer_(buffer), kept_(kept) {}

  float threshold() const { return threshold_; }

  void Push(float key, int64_t row) {
    buffer_[size_++] = {key, row};
    if (size_ == 2 * kept_) {
      std::nth_element(buffer_, buffer_ + (kept_ - 1), buffer_ + size_, Better);
      size_ = kept_;
      threshold_ = buffer_[kept_ - 1].key;
    }
  }

  // The best min(kept, size) candidates, best first.
  size_t Finish() {
    const size_t m = std::min(kept_, size_);
    std::partial_sort(buffer_, buffer_ + m, buffer_ + size_, Better);
    return m;
  }
  const Candidate& operator[](size_t i) const { return buffer_[i]; }

 private:
  Candidate* buffer_;
  size_t kept_;
  size_t size_ = 0;
  float threshold_ = -std::numeric_limits<float>::infinity();
};

// A row from a reduced pass: its reduced key and the bound on that key's
// error, |key - exact key| <= slack.
struct Screened {
  float key;
  float slack;
  int64_t row;
};

// One query's candidates from a reduced pass over a share of the rows:
// every row whose key may be among the `kept` best exact keys. The screen
// (in an array the kernel reads) is the kept-th best lower bound (key -
// slack) among the rows certain to stay under the ceiling (key + slack at
// most `sure_ceiling`): a row whose upper bound (key + slack) is below it is
// beaten, exactly, by `kept` rows that stay. Past `max_size` candidates it
// gives up (overflow) and takes no more.
class ScreenedTop {
 public:
  void Reset(size_t kept, float sure_ceiling, size_t max_size, float* screen) {
    kept_ = kept;
    sure_ceiling_ = sure_ceiling;
    max_size_ = max_size;
    screen_ = screen;
    *screen_ = -std::numeric_limits<float>::infinity();
    next_cut_ = std::max<size_t>(64, 4 * kept);
    overflow_ = false;
    buffer_.clear();
  }

  void Offer(float key, float slack, int64_t row) {
    buffer_.push_back({key, slack, row});
    if (buffer_.size() >= next_cut_) Cut();
  }

  // Raises the screen and drops what falls below it.
  void Cut() {
    const float screen = ScreenOf(buffer_, kept_, sure_ceiling_);
    if (screen > *screen_) *screen_ = screen;
    const float s = *screen_;
    buffer_.erase(
        std::remove_if(buffer_.begin(), buffer_.end(),
                       [s](const Screened& c) { return c.key + c.slack < s; }),
        buffer_.end());
    if (buffer_.size() > max_size_) {
      overflow_ = true;
      *screen_ = std::numeric_limits<float>::infinity();
      buffer_.clear();
    }
    next_cut_ = std::max(next_cut_, 2 * buffer_.size());
  }

  bool overflow() const { return overflow_; }
  const std::vector<Screened>& candidates() const { return buffer_; }
  // Frees a buffer a deep search grew.
  void Trim(size_t max_capacity) {
    if (buffer_.capacity() > max_capacity) {
      std::vector<Screened>().swap(buffer_);
    }
  }

  // The screen `candidates` justify: the kept-th best lower bound among
  // those certain to stay under `sure_ceiling`; -infinity when fewer.
  // Reorders `candidates`.
  static float ScreenOf(std::vector<Screened>& candidates, size_t kept,
                        float sure_ceiling) {
    const auto sure_end = std::partition(
        candidates.begin(), candidates.end(),
        [&](const Screened& c) { return c.key + c.slack <= sure_ceiling; });
    if (static_cast<size_t>(sure_end - candidates.begin()) < kept) {
      return -std::numeric_limits<float>::infinity();
    }
    const auto kth = candidates.begin() + static_cast<ptrdiff_t>(kept - 1);
    std::nth_element(candidates.begin(), kth, sure_end,
                     [](const Screened& a, const Screened& b) {
                       return a.key - a.slack > b.key - b.slack;
                     });
    return kth->key - kth->slack;
  }

 private:
  size_t kept_ = 0;
  float sure_ceiling_ = 0;
  size_t max_size_ = 0;
  float* screen_ = nullptr;
  size_t next_cut_ = 0;
  bool overflow_ = false;
  std::vector<Screened> buffer_;
};

// Buffers reused by the calls of one thread, so that a steady stream of
// batches allocates nothing.
struct Scratch {
  std::vector<float> dots;
  std::vector<Candidate> candidates;
  std::vector<TopK> tops;
  std::vector<float> query_sq;
  std::vector<float> ceiling;
  std::vector<Candidate> merged;
  std::vector<Candidate> rescored;
  // The reduced pass's (see FlatIndex::SearchReduced).
  ReducedQueries reduced_queries;
  std::vector<ScreenedTop> screened;  // parts x queries
  std::vector<float> screens;         // parts x queries
  std::vector<float> slack_a;         // per query: the keys' slack
  std::vector<float> slack_b;         // coefficients
  std::vector<float> slack_c;
  std::vector<float> slack_d;    // L2 only
  std::vector<char> reduced_ok;  // 0: the query falls back
  std::vector<Screened> merged_screened;
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// The thread that called a parallel search waits for the other parts by
// spinning briefly instead of sleeping at OpenMP's closing barrier: with
// OMP_WAIT_POLICY=PASSIVE a thread asleep there must be woken by the last
// one, which cost 25 us a lone query here (a VM). Gives up, and sleeps at
// the barrier, after kMaxPartSpin.
void AwaitParts(const std::atomic<size_t>& done, size_t parts) {
  const auto deadline = std::chrono::steady_clock::now() + kMaxPartSpin;
  while (done.load(std::memory_order_acquire) < parts) {
    for (int i = 0; i < 32; ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (std::chrono::steady_clock::now() > deadline) return;
  }
}

double SquaredNorm(const float* v, size_t dim) {
  double sq = 0;
  for (size_t i = 0; i < dim; ++i) sq += static_cast<double>(v[i]) * v[i];
  return sq;
}

// Frees a buffer a deep search grew past what a thread keeps.
template <typename T>
void TrimBuffer(std::vector<T>& v) {
  if (v.capacity() > kKeptBufferEntries) std::vector<T>().swap(v);
}

// Grows `v` to at least `n` elements (new ones value-initialised), never
// shrinks it: scratch buffers keep their largest size between calls.
template <typename T>
void GrowTo(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// Exact search over the store's vectors in place: blocked sgemm for the dot
// products, then each query's scores screened kGroup at a time against its
// threshold, so that most candidates cost a fraction of a comparison.
//
// Searches of fewer than kMinGemmQueries queries read each row once
// (RowDots) instead. With a half copy, they read binary16 rows, half the
// memory traffic, for a deeper top-k whose candidates are then rescored in
// double from the float32 rows. The answer is kept only when no row left
// out of the first pass can come within the half error of it; otherwise the
// query is searched again in float32. Either way the answer meets the
// float32 ErrorBound.
//
// At a reduced scan precision (int8 or bf16), every search reads the
// packed reduced rows instead (SearchReduced), and float32 rows only to
// rescore the few candidates the reduced pass cannot rule out.
class FlatIndex final : public VectorIndex {
 public:
  FlatIndex(const CandidateStore& store, Metric metric,
            const IndexBuildOptions& options)
      : store_(store), metric_(metric), scan_(FlatScan(store, options)) {
    if (scan_ != ScanPrecision::kF32) {
      // Centred: rows far from the origin keep their precision for what
      // differs between them (reduced_scan.h).
      reduced_ = std::make_unique<ReducedRows>(store.data(), store.size(),
                                               store.dim(), scan_,
                                               /*centred=*/true);
      if (std::isfinite(reduced_->max_residual()) &&
          std::isfinite(reduced_->max_reduced_norm())) {
        // From now on the float32 rows are read only to rescore a few
        // candidates (or for a query that falls back).
        store.AdviseRandomAccess();
        return;
      }
      // Values past bfloat16's range: no bound, so no reduced pass.
      reduced_.reset();
      scan_ = ScanPrecision::kF32;
    }
    if (!UsesHalfScan(store, options)) return;
    const size_t dim = store.dim();
    half_ = std::make_unique<uint16_t[]>(store.size() * dim);
    const auto blocks = static_cast<int64_t>(
        (store.size() + kMaxBlockRows - 1) / kMaxBlockRows);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const size_t r0 = static_cast<size_t>(b) * kMaxBlockRows;
      const size_t rn = std::min(kMaxBlockRows, store.size() - r0);
      ToHalf(store.vector(r0), rn * dim, half_.get() + r0 * dim);
    }
  }

  using VectorIndex::Search;
  absl::Status Search(const float* queries, size_t nq, size_t k,
                      const SearchOptions& options, float* scores,
                      int64_t* rows) const override {
    if (nq == 0 || k == 0) return absl::OkStatus();
    const size_t kept = std::min(k, store_.size());
    // With several OpenMP threads, each scans its own share of the rows
    // (one BLAS thread each) and the shares' top-k are merged: no
    // synchronisation per block, and a lone query uses every core too.
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    const size_t parts =
        std::max<size_t>(1, std::min(static_cast<size_t>(std::max(threads, 1)),
                                     store_.size() / kMaxBlockRows));
    const bool reduced =
        reduced_ != nullptr && kept <= kMaxReducedKept && !ReducedFailing();
    size_t chunk = std::max<size_t>(
        1, std::min(nq, kMaxBufferEntries / (parts * (2 * kept + 1))));
    if (reduced) {
      // A part's tops may hold up to twice MaxScreened before a cut.
      chunk = std::clamp<size_t>(
          kMaxBufferEntries / (parts * 2 * MaxScreened(kept)), 1,
          std::min(chunk, kMaxReducedQueries));
    }
    Scratch& scratch = ThreadScratch();
    for (size_t q0 = 0; q0 < nq; q0 += chunk) {
      const size_t nc = std::min(chunk, nq - q0);
      const Chunk c{queries + q0 * store_.dim(), q0, nc, k, kept, parts};
      if (reduced) {
        SearchReduced(c, options, scratch, scores + q0 * k, rows + q0 * k);
      } else if (half_ != nullptr && nc < kMinGemmQueries &&
                 kept <= kMaxHalfKept) {
        SearchHalf(c, options, scratch, scores + q0 * k, rows + q0 * k);
      } else {
        SearchChunk(c, options, scratch, /*half=*/false,
                    [&](size_t q, const Candidate* best, size_t m) {
                      WriteAnswer(best, m, k, scores + (q0 + q) * k,
                                  rows + (q0 + q) * k);
                    });
      }
    }
    if (scratch.candidates.size() > kKeptBufferEntries) {
      std::vector<Candidate>().swap(scratch.candidates);
    }
    if (scratch.merged.capacity() > kKeptBufferEntries) {
      std::vector<Candidate>().swap(scratch.merged);
    }
    return absl::OkStatus();
  }

  bool exact() const override { return true; }
  bool skips() const override { return true; }

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

  std::string type() const override { return kFlatFactory; }
  // The vectors are the store's, which is saved with it.
  absl::Status Save(const std::string& /*path*/) const override {
    return absl::OkStatus();
  }
  size_t MemoryBytes() const override {
    if (reduced_ != nullptr) return reduced_->MemoryBytes();
    return half_ != nullptr ? store_.size() * store_.dim() * sizeof(uint16_t)
                            : 0;
  }

  ScanPrecision scan() const override { return scan_; }

  // True once most queries the reduced pass took fell back (rows it cannot
  // order even centred, such as two distant clumps of rows that differ
  // little within each): from then on the float32 pass alone is cheaper.
  bool ReducedFailing() const {
    const uint64_t queries = reduced_queries_.load(std::memory_order_relaxed);
    return queries >= kMinReducedVerdict &&
           2 * fallbacks_.load(std::memory_order_relaxed) > queries;
  }
  ScanStats scan_stats() const override {
    return {reduced_queries_.load(std::memory_order_relaxed),
            fallbacks_.load(std::memory_order_relaxed)};
  }

 private:
  // Queries [first, first + nq) of the Search call, k wanted (kept of them
  // can exist), their rows split in `parts`.
  struct Chunk {
    const float* queries;
    size_t first;
    size_t nq;
    size_t k;
    size_t kept;
    size_t parts;
  };

  // Bound on |q.x - q.h| plus the float rounding of q.h, where h is x
  // rounded to binary16, for a query of norm `query_norm`.
  double HalfDotError(double query_norm) const {
    const double d = static_cast<double>(store_.dim());
    const double m = store_.max_norm();
    const double tail = std::sqrt(d) * kHalfSubnormalError;
    const double h = m * (1 + kHalfRoundoff) + tail;
    return 1.0625 * query_norm *
           (m * kHalfRoundoff + tail + 2 * (d + 8) * kUnitRoundoff * h);
  }

  // Bound on |half-pass key - exact key| (L2 keys hold 2 q.x).
  double HalfKeySlack(double query_norm) const {
    const double dot = HalfDotError(query_norm);
    return (metric_ == Metric::kL2 ? 2 * dot : dot) + ErrorBound(query_norm);
  }

  // A few queries over the half copy, each answer checked, and searched
  // again in float32 when the check fails.
  void SearchHalf(const Chunk& c, const SearchOptions& options,
                  Scratch& scratch, float* scores, int64_t* rows) const {
    const size_t dim = store_.dim();
    const bool l2 = metric_ == Metric::kL2;
    Chunk deep = c;
    deep.kept = std::min(store_.size(), 2 * c.kept + 8);
    deep.k = deep.kept;
    size_t failed[kMinGemmQueries];
    size_t failures = 0;
    SearchChunk(
        deep, options, scratch, /*half=*/true,
        [&](size_t q, const Candidate* best, size_t m) {
          const float* query = c.queries + q * dim;
          float ceiling = std::numeric_limits<float>::infinity();
          if (!options.closest.empty()) {
            ceiling = options.closest[c.first + q];
            if (l2) ceiling = -ceiling;
          }
          std::vector<Candidate>& rescored = scratch.rescored;
          rescored.clear();
          for (size_t j = 0; j < m; ++j) {
            const float score = ExactScore(
                metric_, query, store_.vector(static_cast<size_t>(best[j].row)),
                dim);
            const float key = l2 ? -score : score;
            if (key > ceiling) continue;
            rescored.push_back({key, best[j].row});
          }
          const size_t found = std::min(c.kept, rescored.size());
          std::partial_sort(rescored.begin(), rescored.begin() + found,
                            rescored.end(), Better);
          // Every row the first pass left out (if it could leave any)
          // has a half key of at most `cut`, so an exact key within the
          // slack of it.
          if (m == deep.kept && deep.kept < store_.size()) {
            const double cut = best[m - 1].key;
            const double slack =
                HalfKeySlack(std::sqrt(SquaredNorm(query, dim)));
            if (found < c.kept || cut + slack > rescored[found - 1].key) {
              failed[failures++] = q;
              return;
            }
          }
          WriteAnswer(rescored.data(), found, c.k, scores + q * c.k,
                      rows + q * c.k);
        });
    SearchAgainInFloat32(c, options, scratch, failed, failures, scores, rows);
  }

  // What the reduced kernel's offers reach: one part's screened tops.
  struct ReducedPart {
    ScreenedTop* tops;
    const SearchOptions* options;
    size_t first;          // index of query 0 in the Search call
    const float* ceiling;  // per query: the exact keys' ceiling
  };

  static void OfferReduced(void* context, size_t q, size_t row, float key,
                           float slack) {
    const auto& part = *static_cast<const ReducedPart*>(context);
    // Certainly above the ceiling: skipped, as the float32 pass would.
    if (key - slack > part.ceiling[q]) return;
    const auto r = static_cast<int64_t>(row);
    const SearchOptions& options = *part.options;
    if (options.skip_row && options.skip_row(part.first + q, r)) return;
    part.tops[q].Offer(key, slack, r);
  }

  // The reduced pass for chunk `c`: each part scans its rows' packed copy
  // into screened tops (ScreenedTop); their candidates are merged,
  // screened again, and rescored in float32; the best `kept` are the
  // answer. Every row left out had an upper bound below the kept-th best
  // lower bound of rows that stay, so an exact key below theirs: the answer
  // is the float32 path's, within ErrorBound. A query whose candidates
  // overflow, or whose slack is not finite, is searched again in float32.
  void SearchReduced(const Chunk& c, const SearchOptions& options,
                     Scratch& scratch, float* scores, int64_t* rows) const {
    const size_t nq = c.nq;
    scratch.reduced_queries.Prepare(*reduced_, c.queries, nq);
    PrepareReducedBounds(c, options, scratch);
    const size_t parts = c.parts;
    GrowTo(scratch.screened, parts * nq);
    scratch.screens.assign(parts * nq, 0.0f);
    const size_t max_size = MaxScreened(c.kept);
    for (size_t p = 0; p < parts; ++p) {
      for (size_t q = 0; q < nq; ++q) {
        scratch.screened[p * nq + q].Reset(c.kept, scratch.ceiling[q], max_size,
                                           &scratch.screens[p * nq + q]);
      }
    }
    ScanReducedParts(c, options, scratch);
    for (size_t i = 0; i < parts * nq; ++i) scratch.screened[i].Cut();
    size_t failed[kMaxReducedQueries];
    size_t failures = 0;
    for (size_t q = 0; q < nq; ++q) {
      if (!FinishReduced(c, q, scratch, scores + q * c.k, rows + q * c.k)) {
        failed[failures++] = q;
      }
    }
    const size_t keep =
        std::max(kKeptBufferEntries / (parts * nq), 2 * MaxScreened(c.kept));
    for (size_t i = 0; i < parts * nq; ++i) scratch.screened[i].Trim(keep);
    TrimBuffer(scratch.merged_screened);
    TrimBuffer(scratch.rescored);
    reduced_queries_.fetch_add(nq, std::memory_order_relaxed);
    fallbacks_.fetch_add(failures, std::memory_order_relaxed);
    SearchAgainInFloat32(c, options, scratch, failed, failures, scores, rows);
  }

  // Query q of chunk `c` after the reduced scan: merges its parts'
  // candidates, keeps those the merged screen allows, rescores them in
  // float32 and writes the best. False (nothing written) when a part
  // overflowed or the bound is not finite.
  bool FinishReduced(const Chunk& c, size_t q, Scratch& scratch, float* scores,
                     int64_t* rows) const {
    const size_t dim = store_.dim();
    const bool l2 = metric_ == Metric::kL2;
    if (scratch.reduced_ok[q] == 0) return false;
    std::vector<Screened>& merged = scratch.merged_screened;
    merged.clear();
    for (size_t p = 0; p < c.parts; ++p) {
      const ScreenedTop& top = scratch.screened[p * c.nq + q];
      if (top.overflow()) return false;
      merged.insert(merged.end(), top.candidates().begin(),
                    top.candidates().end());
    }
    const float screen =
        ScreenedTop::ScreenOf(merged, c.kept, scratch.ceiling[q]);
    const float* query = c.queries + q * dim;
    const float query_sq = scratch.query_sq[q];
    const float ceiling = scratch.ceiling[q];
    std::vector<Candidate>& rescored = scratch.rescored;
    rescored.clear();
    for (const Screened& cand : merged) {
      if (cand.key + cand.slack < screen) continue;
      const auto row = static_cast<size_t>(cand.row);
      const float dot = FloatDot(query, store_.vector(row), dim);
      const float key =
          l2 ? 2 * dot - query_sq - store_.squared_norm(row) : dot;
      if (key > ceiling) continue;
      rescored.push_back({key, cand.row});
    }
    const size_t found = std::min(c.kept, rescored.size());
    std::partial_sort(rescored.begin(), rescored.begin() + found,
                      rescored.end(), Better);
    WriteAnswer(rescored.data(), found, c.k, scores, rows);
    return true;
  }

  // Per query of chunk `c`: |q|^2 (L2), the ceiling on exact keys, whether
  // the reduced pass may answer it, and the coefficients of the keys'
  // slack: DotSlack's (which include the float32 rescoring and the screens'
  // arithmetic), doubled for L2 keys, plus the rounding of L2 keys, each
  // rounded up.
  void PrepareReducedBounds(const Chunk& c, const SearchOptions& options,
                            Scratch& scratch) const {
    const size_t dim = store_.dim();
    const bool l2 = metric_ == Metric::kL2;
    const ReducedQueries& queries = scratch.reduced_queries;
    scratch.query_sq.assign(c.nq, 0.0f);
    scratch.ceiling.assign(c.nq, std::numeric_limits<float>::infinity());
    scratch.slack_a.assign(c.nq, 0.0f);
    scratch.slack_b.assign(c.nq, 0.0f);
    scratch.slack_c.assign(c.nq, 0.0f);
    scratch.slack_d.assign(c.nq, 0.0f);
    scratch.reduced_ok.assign(c.nq, 0);
    const double m = l2 ? 2 : 1;
    // L2 keys' float arithmetic (2 dot - |q|^2 - |x|^2, each square
    // rounded once, in the kernel, the rescoring and the screens): a few
    // roundings of |q|^2 + |x|^2 at most, taken as 24.
    const double l2_rounding = l2 ? 1.0625 * 24 * kUnitRoundoff : 0;
    for (size_t q = 0; q < c.nq; ++q) {
      const double sq = SquaredNorm(c.queries + q * dim, dim);
      if (l2) scratch.query_sq[q] = static_cast<float>(sq);
      if (!options.closest.empty()) {
        const float closest = options.closest[c.first + q];
        scratch.ceiling[q] = l2 ? -closest : closest;
      }
      scratch.slack_a[q] = FloatAbove(m * queries.a(q));
      scratch.slack_b[q] = FloatAbove(m * queries.b(q));
      scratch.slack_c[q] = FloatAbove(m * queries.c(q) + l2_rounding * sq);
      scratch.slack_d[q] = FloatAbove(l2_rounding);
      // The bound, and the keys, must stay far inside float's range.
      const double largest =
          m * queries.DotSlack(q) + (std::sqrt(sq) + store_.max_norm()) *
                                        (std::sqrt(sq) + store_.max_norm());
      scratch.reduced_ok[q] = largest < 1e36 ? 1 : 0;
    }
  }

  // Runs the reduced kernel over each part's rows (whole 16-row groups).
  void ScanReducedParts(const Chunk& c, const SearchOptions& options,
                        Scratch& scratch) const {
    const size_t nq = c.nq;
    const size_t parts = c.parts;
    const size_t n = store_.size();
    const size_t groups = (n + kReducedGroupRows - 1) / kReducedGroupRows;
    auto scan_part = [&](size_t p) {
      ReducedPart part{scratch.screened.data() + p * nq, &options, c.first,
                       scratch.ceiling.data()};
      ReducedSink sink;
      sink.screen = scratch.screens.data() + p * nq;
      sink.slack_a = scratch.slack_a.data();
      sink.slack_b = scratch.slack_b.data();
      sink.slack_c = scratch.slack_c.data();
      sink.slack_d = scratch.slack_d.data();
      if (metric_ == Metric::kL2) {
        sink.query_sq = scratch.query_sq.data();
        sink.row_sq = store_.squared_norms();
      }
      sink.offer = &FlatIndex::OfferReduced;
      sink.context = &part;
      const size_t begin = groups * p / parts * kReducedGroupRows;
      const size_t end =
          std::min(n, groups * (p + 1) / parts * kReducedGroupRows);
      ReducedScan(*reduced_, scratch.reduced_queries, begin, end, sink);
    };
    if (parts == 1) {
      scan_part(0);
      return;
    }
    const auto part_count = static_cast<int>(parts);
    std::atomic<size_t> done{0};
#pragma omp parallel for schedule(static, 1) num_threads(part_count)
    for (int part = 0; part < part_count; ++part) {
      scan_part(static_cast<size_t>(part));
      done.fetch_add(1, std::memory_order_release);
      if (omp_get_thread_num() == 0 && omp_get_num_threads() == part_count) {
        AwaitParts(done, parts);
      }
    }
  }

  // Searches queries failed[0, failures) of chunk `c` again, one at a
  // time, in float32: the fallback of the half and the reduced passes.
  void SearchAgainInFloat32(const Chunk& c, const SearchOptions& options,
                            Scratch& scratch, const size_t* failed,
                            size_t failures, float* scores,
                            int64_t* rows) const {
    const size_t dim = store_.dim();
    for (size_t i = 0; i < failures; ++i) {
      const size_t q = failed[i];
      const Chunk one{
          c.queries + q * dim, c.first + q, 1, c.k, c.kept, c.parts};
      SearchChunk(one, options, scratch, /*half=*/false,
                  [&](size_t, const Candidate* best, size_t m) {
                    WriteAnswer(best, m, c.k, scores + q * c.k, rows + q * c.k);
                  });
    }
  }

  // Writes the best `found` candidates, then padding, as k scores and rows.
  void WriteAnswer(const Candidate* best, size_t found, size_t k, float* scores,
                   int64_t* rows) const {
    const bool l2 = metric_ == Metric::kL2;
    for (size_t j = 0; j < k; ++j) {
      if (j < found) {
        scores[j] = l2 ? -best[j].key : best[j].key;
        rows[j] = best[j].row;
      } else {
        scores[j] = l2 ? std::numeric_limits<float>::infinity()
                       : -std::numeric_limits<float>::infinity();
        rows[j] = -1;
      }
    }
  }

  // Receives query q's best m candidates (of the chunk), best first.
  using Answer =
      absl::FunctionRef<void(size_t q, const Candidate* best, size_t m)>;

  // Searches chunk `c`, reading the half copy when `half` (keys within
  // HalfKeySlack of the exact ones), and hands each query's answer over.
  void SearchChunk(const Chunk& c, const SearchOptions& options,
                   Scratch& scratch, bool half, Answer answer) const {
    const size_t n = store_.size();
    const size_t dim = store_.dim();
    const size_t nq = c.nq;
    const size_t kept = c.kept;
    const size_t parts = c.parts;
    const bool l2 = metric_ == Metric::kL2;
    const size_t block =
        std::min(n, std::clamp(kBlockScores / nq / kGroup * kGroup,
                               kMinBlockRows, kMaxBlockRows));
    GrowTo(scratch.dots, parts * nq * block);
    GrowTo(scratch.candidates, parts * nq * 2 * kept);
    scratch.tops.clear();
    for (size_t t = 0; t < parts * nq; ++t) {
      scratch.tops.emplace_back(scratch.candidates.data() + t * 2 * kept, kept);
    }
    scratch.query_sq.assign(nq, 0.0f);
    if (l2) {
      for (size_t q = 0; q < nq; ++q) {
        scratch.query_sq[q] =
            static_cast<float>(SquaredNorm(c.queries + q * dim, dim));
      }
    }
    // Keys above a query's ceiling are skipped; a half pass skips only
    // those certainly above it.
    scratch.ceiling.assign(nq, std::numeric_limits<float>::infinity());
    if (!options.closest.empty()) {
      for (size_t q = 0; q < nq; ++q) {
        const float closest = options.closest[c.first + q];
        scratch.ceiling[q] = l2 ? -closest : closest;
        if (half) {
          scratch.ceiling[q] += static_cast<float>(
              HalfKeySlack(std::sqrt(SquaredNorm(c.queries + q * dim, dim))));
        }
      }
    }
    const Rows all{c.queries, c.first, nq, block, half, options, scratch};
    if (parts == 1) {
      ScanRows(all, 0, n, scratch.dots.data(), scratch.tops.data());
    } else {
      const auto part_count = static_cast<int>(parts);
      std::atomic<size_t> done{0};
#pragma omp parallel for schedule(static, 1) num_threads(part_count)
      for (int part = 0; part < part_count; ++part) {
        const auto p = static_cast<size_t>(part);
        ScanRows(all, n * p / parts, n * (p + 1) / parts,
                 scratch.dots.data() + p * nq * block,
                 scratch.tops.data() + p * nq);
        done.fetch_add(1, std::memory_order_release);
        if (omp_get_thread_num() == 0 && omp_get_num_threads() == part_count) {
          AwaitParts(done, parts);
        }
      }
    }
    std::vector<Candidate>& merged = scratch.merged;
    for (size_t q = 0; q < nq; ++q) {
      const Candidate* best = nullptr;
      size_t m = 0;
      if (parts == 1) {
        m = scratch.tops[q].Finish();
        best = &scratch.tops[q][0];
      } else {
        merged.clear();
        for (size_t p = 0; p < parts; ++p) {
          TopK& top = scratch.tops[p * nq + q];
          const size_t found = top.Finish();
          for (size_t j = 0; j < found; ++j) merged.push_back(top[j]);
        }
        m = std::min(kept, merged.size());
        std::partial_sort(merged.begin(), merged.begin() + m, merged.end(),
                          Better);
        best = merged.data();
      }
      answer(q, best, m);
    }
  }

  // What ScanRows shares across the parts of one chunk.
  struct Rows {
    const float* queries;
    size_t first;  // index of queries[0] in the Search call
    size_t nq;
    size_t block;
    bool half;  // read the half copy (nq < kMinGemmQueries)
    const SearchOptions& options;
    const Scratch& scratch;
  };

  // Offers rows [begin, end) to the `tops` of every query, a block at a
  // time, with `dots` for one block's scores.
  void ScanRows(const Rows& r, size_t begin, size_t end, float* dots,
                TopK* tops) const {
    const size_t dim = store_.dim();
    const size_t nq = r.nq;
    const bool l2 = metric_ == Metric::kL2;
    for (size_t b0 = begin; b0 < end; b0 += r.block) {
      const size_t bn = std::min(r.block, end - b0);
      if (r.half) {
        RowDotsHalf(half_.get() + b0 * dim, bn, dim, r.queries, nq, dots);
      } else if (nq < kMinGemmQueries && RowDotsSimd()) {
        RowDots(store_.data() + b0 * dim, bn, dim, r.queries, nq, dots);
      } else if (nq < kMinGemmQueries) {
        // sgemm would repack the whole block for a query or two; sgemv
        // streams it once.
        for (size_t q = 0; q < nq; ++q) {
          cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(bn),
                      static_cast<int>(dim), 1.0f, store_.data() + b0 * dim,
                      static_cast<int>(dim), r.queries + q * dim, 1, 0.0f,
                      dots + q * bn, 1);
        }
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
                    static_cast<int>(nq), static_cast<int>(bn),
                    static_cast<int>(dim), 1.0f, r.queries,
                    static_cast<int>(dim), store_.data() + b0 * dim,
                    static_cast<int>(dim), 0.0f, dots, static_cast<int>(bn));
      }
      for (size_t q = 0; q < nq; ++q) {
        float* s = dots + q * bn;
        if (l2) {
          ToL2Keys(s, bn, r.scratch.query_sq[q], store_.squared_norms() + b0);
        }
        Scan(s, bn, b0, r.first + q, r.scratch.ceiling[q], r.options, tops[q]);
      }
    }
  }

  // Offers keys s[0, bn) of rows b0 + j to query `query`'s top-k.
  static void Scan(const float* s, size_t bn, size_t b0, size_t query,
                   float ceiling, const SearchOptions& options, TopK& top) {
    auto offer = [&](size_t j) {
      const float key = s[j];
      if (key < top.threshold() || key > ceiling) return;
      const auto row = static_cast<int64_t>(b0 + j);
      if (options.skip_row && options.skip_row(query, row)) return;
      top.Push(key, row);
    };
    size_t j = 0;
    for (; j + kGroup <= bn; j += kGroup) {
      // Usually zero once the threshold has settled.
      for (uint32_t mask = GroupMask(s + j, top.threshold()); mask != 0;
           mask &= mask - 1) {
        offer(j + static_cast<size_t>(__builtin_ctz(mask)));
      }
    }
    for (; j < bn; ++j) offer(j);
  }

  const CandidateStore& store_;
  const Metric metric_;
  ScanPrecision scan_;  // set by the constructor
  // The vectors rounded to binary16, or null (see the class comment).
  std::unique_ptr<uint16_t[]> half_;
  // The vectors packed at scan_, or null for kF32.
  std::unique_ptr<ReducedRows> reduced_;
  // Queries searched by the reduced pass, and those of them searched again
  // in float32.
  mutable std::atomic<uint64_t> reduced_queries_{0};
  mutable std::atomic<uint64_t> fallbacks_{0};
};

// Any other FAISS factory string: FAISS holds its own codes.
class FaissIndex final : public VectorIndex {
 public:
  // `store` (for IvfProbe's label counts) must outlive the index. `scan`
  // is the precision IvfProbe's cells may be scanned at.
  FaissIndex(std::unique_ptr<faiss::Index> index, std::string factory,
             const CandidateStore& store, size_t ivf_min_candidates,
             ScanPrecision scan)
      : index_(std::move(index)),
        factory_(std::move(factory)),
        ivf_(faiss::ivflib::try_extract_index_ivf(index_.get())),
        pre_transform_(
            dynamic_cast<const faiss::IndexPreTransform*>(index_.get())),
        probe_(IvfProbe::Create(*index_, store, ivf_min_candidates,
                                IvfProbeUnit::kAuto, scan)) {}

  using VectorIndex::Search;
  absl::Status Search(const float* queries, size_t nq, size_t k,
                      const SearchOptions& options, float* scores,
                      int64_t* rows) const override {
    static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t));
    if (probe_ != nullptr) {
      try {
        probe_->Search(queries, nq, k, options, scores, rows);
      } catch (const faiss::FaissException& e) {
        return absl::InternalError(
            absl::StrCat("FAISS search failed: ", e.what()));
      }
      return absl::OkStatus();
    }
    // A per-call nprobe travels in SearchParameters, never by changing the
    // shared index, so concurrent calls with different values are safe.
    faiss::SearchParametersIVF ivf_params;
    faiss::SearchParametersPreTransform pre_params;
    const faiss::SearchParameters* params = nullptr;
    if (options.nprobe > 0 && ivf_ != nullptr) {
      ivf_params.nprobe = options.nprobe;
      ivf_params.max_codes = ivf_->max_codes;
      params = &ivf_params;
      if (pre_transform_ != nullptr) {
        pre_params.index_params = &ivf_params;
        params = &pre_params;
      }
    }
    try {
      index_->search(static_cast<faiss::Index::idx_t>(nq), queries,
                     static_cast<faiss::Index::idx_t>(k), scores,
                     reinterpret_cast<faiss::Index::idx_t*>(rows), params);
    } catch (const faiss::FaissException& e) {
      return absl::InternalError(
          absl::StrCat("FAISS search failed: ", e.what()));
    }
    return absl::OkStatus();
  }

  bool exact() const override { return false; }
  bool skips() const override { return probe_ != nullptr; }
  bool excludes_labels() const override {
    return probe_ != nullptr && probe_->cells();
  }
  ScanPrecision scan() const override {
    return probe_ != nullptr ? probe_->scan() : ScanPrecision::kF32;
  }
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
    return static_cast<size_t>(index_->ntotal) * index_->d * sizeof(float) +
           (probe_ != nullptr ? probe_->MemoryBytes() : 0);
  }

 private:
  std::unique_ptr<faiss::Index> index_;
  std::string factory_;
  // The inverted-file index inside index_, if any, for per-call nprobe.
  const faiss::IndexIVF* ivf_;
  const faiss::IndexPreTransform* pre_transform_;
  // IVF-Flat over a labelled store: the exclusion-aware search; else null.
  std::unique_ptr<IvfProbe> probe_;
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

IndexKind IndexKindOf(absl::string_view factory) {
  return factory == kFlatFactory ? IndexKind::kFlat : IndexKind::kFaiss;
}

absl::StatusOr<std::unique_ptr<VectorIndex>> BuildVectorIndex(
    const CandidateStore& store, Metric metric,
    const IndexBuildOptions& options, const IndexBuildObserver& observer) {
  auto report = [&observer](double fraction) {
    if (observer) observer(fraction);
  };
  if (IndexKindOf(options.factory) == IndexKind::kFlat) {
    auto flat =
        std::unique_ptr<VectorIndex>(new FlatIndex(store, metric, options));
    report(1);
    return flat;
  }
  const faiss::MetricType faiss_metric = FaissMetric(metric);
  std::unique_ptr<faiss::Index> index;
  try {
    index.reset(faiss::index_factory(static_cast<int>(store.dim()),
                                     options.factory.c_str(), faiss_metric));
  } catch (const faiss::FaissException& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        kIndexFactoryTerm, " \"", options.factory,
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
      // Training and adding take comparable time at the default sample.
      report(0.5);
    }
    index->add(n, store.data());
    index = WithFastListScan(std::move(index));
    if (options.nprobe > 0 && absl::StrContains(options.factory, "IVF")) {
      // ParameterSpace reaches through wrappers such as IndexPreTransform.
      faiss::ParameterSpace().set_index_parameter(
          index.get(), "nprobe", static_cast<double>(options.nprobe));
    }
  } catch (const faiss::FaissException& e) {
    return absl::InternalError(absl::StrCat(
        "building FAISS index \"", options.factory, "\" failed: ", e.what()));
  }
  report(1);
  return std::unique_ptr<VectorIndex>(
      new FaissIndex(std::move(index), options.factory, store,
                     options.ivf_min_candidates, options.scan));
}

namespace {

// What IvfProbe may hold beside the codes for an "IVF<n>,Flat" factory
// over labelled candidates, or 0 for any other factory.
size_t IvfProbeBytes(size_t rows, size_t dim,
                     const IndexBuildOptions& options) {
  const absl::string_view factory = options.factory;
  size_t nlist = 0;
  if (!absl::StartsWith(factory, "IVF") || !absl::EndsWith(factory, ",Flat") ||
      !absl::SimpleAtoi(factory.substr(3, factory.size() - 3 - 5), &nlist)) {
    return 0;
  }
  return IvfProbe::BytesBound(rows, dim, nlist, options.scan);
}

}  // namespace

size_t IndexBytesEstimate(const CandidateStore& store,
                          const IndexBuildOptions& options) {
  const size_t values = store.size() * store.dim();
  if (IndexKindOf(options.factory) != IndexKind::kFlat) {
    return values * sizeof(float) +
           (store.has_labels()
                ? IvfProbeBytes(store.size(), store.dim(), options)
                : 0);
  }
  const ScanPrecision scan = FlatScan(store, options);
  if (scan != ScanPrecision::kF32) {
    return ReducedRows::BytesFor(store.size(), store.dim(), scan,
                                 /*centred=*/true);
  }
  return UsesHalfScan(store, options) ? values * sizeof(uint16_t) : 0;
}

size_t IndexBytesBound(size_t rows, size_t dim,
                       const IndexBuildOptions& options) {
  const size_t values = rows * dim;
  if (IndexKindOf(options.factory) != IndexKind::kFlat) {
    return values * sizeof(float) + IvfProbeBytes(rows, dim, options);
  }
  const ScanPrecision scan = EffectiveScan(options.scan, dim);
  if (scan != ScanPrecision::kF32) {
    return ReducedRows::BytesFor(rows, dim, scan, /*centred=*/true);
  }
  return options.half_scan ? values * sizeof(uint16_t) : 0;
}

absl::StatusOr<std::unique_ptr<VectorIndex>> LoadVectorIndex(
    const std::string& path, const CandidateStore& store, Metric metric,
    const IndexBuildOptions& options) {
  const std::string& factory = options.factory;
  if (IndexKindOf(factory) == IndexKind::kFlat) {
    return std::unique_ptr<VectorIndex>(new FlatIndex(store, metric, options));
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
  index = WithFastListScan(std::move(index));
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
      new FaissIndex(std::move(index), factory, store,
                     options.ivf_min_candidates, options.scan));
}

}  // namespace hardneg

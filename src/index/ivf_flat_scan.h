// A faster list scan for FAISS IVF-Flat indexes.
//
// Debian's FAISS is a generic build: IndexIVFFlat scores each listed vector
// with a scalar loop, which is nearly all of an IVF search's time. This
// swaps an "IVF<n>,Flat" index for a subclass whose scanner computes the
// same inner products and L2 distances with SIMD, four accumulators wide.
// Everything else (training, quantizer, lists, nprobe, I/O) stays FAISS's;
// faiss::write_index writes it as a plain IndexIVFFlat.
//
// WithFastListScan is stateless; safe to call from any thread. The index it
// returns has FAISS's contract: concurrent searches are safe (each gets its
// own scanner), a search concurrent with training or adding is not.
#ifndef HARDNEG_SRC_INDEX_IVF_FLAT_SCAN_H_
#define HARDNEG_SRC_INDEX_IVF_FLAT_SCAN_H_

#include <faiss/Index.h>

#include <cstddef>
#include <memory>

namespace hardneg {

// Returns `index` itself unless it is exactly a faiss::IndexIVFFlat, in
// which case it returns an equivalent index (taking over its quantizer and
// lists) that scans lists with SIMD.
std::unique_ptr<faiss::Index> WithFastListScan(
    std::unique_ptr<faiss::Index> index);

// True when `index` is exactly a faiss::IndexIVFFlat or the SIMD index
// WithFastListScan makes of one: raw float32 codes, one id per entry
// (unlike IndexIVFFlatDedup, whose entries stand for several ids).
bool IsIvfFlat(const faiss::Index& index);

// The squared L2 distance of two `d`-float vectors, as the SIMD scanner
// computes it (four SSE accumulators; scalar without SSE2).
float SquaredL2(const float* a, const float* b, size_t d);

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_IVF_FLAT_SCAN_H_

// The loops over every cell that IvfProbe's ranking runs for every query:
// the cells' keys and their range, their histogram bins, and the cells at
// or above a bin. AVX2 when the CPU has it (chosen at run time), else
// portable loops; both give identical results.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SRC_INDEX_CELL_KEYS_H_
#define HARDNEG_SRC_INDEX_CELL_KEYS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace hardneg {

// Turns the n scores in `score` into keys, higher nearer, in place: the
// score itself (inner product, sq null) or 2 score - sq[c] (L2, sq the
// cells' squared norms); a NaN becomes -inf. Sets *lo and *hi to the
// lowest and highest finite key (*lo > *hi when none is finite).
void CellKeys(float* score, const float* sq, size_t n, float* lo, float* hi,
              bool portable = false);

// A key's bin: (double(key) - lo) * scale, clamped to [0, top] and
// truncated (a NaN: bin 0).
inline uint16_t CellBin(float key, double lo, double scale, uint16_t top) {
  double at = (static_cast<double>(key) - lo) * scale;
  at = at > 0 ? at : 0;
  at = at < top ? at : top;
  return static_cast<uint16_t>(at);
}

// bins[c] = CellBin(key[c], lo, scale, top) for c < n.
void CellBins(const float* key, size_t n, double lo, double scale, uint16_t top,
              uint16_t* bins, bool portable = false);

// Appends to `out`, in order, each c < n with bins[c] >= cut (cut <= 32767).
void CellsFrom(const uint16_t* bins, size_t n, uint16_t cut,
               std::vector<uint32_t>& out, bool portable = false);

}  // namespace hardneg

#endif  // HARDNEG_SRC_INDEX_CELL_KEYS_H_

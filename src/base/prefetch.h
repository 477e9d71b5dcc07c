// PrefetchLines: asks the CPU for every cache line of a byte range, for a
// random read (a row, a vector) that is needed soon but not yet.
#ifndef HARDNEG_SRC_BASE_PREFETCH_H_
#define HARDNEG_SRC_BASE_PREFETCH_H_

#include <cstddef>
#include <cstdint>

namespace hardneg {

// Every 64-byte line of [begin, begin + bytes), which need not start on
// one.
inline void PrefetchLines(const void* begin, size_t bytes) {
  const auto* first = static_cast<const char*>(begin);
  const char* end = first + bytes;
  for (const char* line = first - reinterpret_cast<uintptr_t>(first) % 64;
       line < end; line += 64) {
    __builtin_prefetch(line);
  }
}

}  // namespace hardneg

#endif  // HARDNEG_SRC_BASE_PREFETCH_H_

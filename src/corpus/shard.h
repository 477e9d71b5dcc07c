// ShardOf: which of N shards a candidate belongs to, by its id alone, so
// that a corpus split by any tool (an encoder job pre-splitting its output,
// a server keeping its share of a checkpoint) agrees on every id:
//
//   ShardOf(id, N) = SplitMix64Hash(static_cast<uint64_t>(id)) % N
//
// where SplitMix64Hash is the finaliser of Steele, Lea and Flood's SplitMix64
// generator, applied to the id plus the golden gamma, i.e. the first output
// of a SplitMix64 generator seeded with the id (in 64-bit unsigned
// arithmetic, wrapping; negative ids are taken as their two's complement):
//
//   z = x + 0x9e3779b97f4a7c15
//   z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
//   z = (z ^ (z >> 27)) * 0x94d049bb133111eb
//   return z ^ (z >> 31)
//
// For example SplitMix64Hash(0) = 0xe220a8397b1dcdaf and
// SplitMix64Hash(1234567) = 6457827717110365317 (the reference generator's
// first output for that seed). In Python: `h = splitmix64(id & (2**64 - 1));
// shard = h % n`.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SRC_CORPUS_SHARD_H_
#define HARDNEG_SRC_CORPUS_SHARD_H_

#include <cstdint>

namespace hardneg {

// SplitMix64Hash: the SplitMix64 finaliser above.
constexpr uint64_t SplitMix64Hash(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The shard in [0, num_shards) that holds `id`; num_shards must be > 0.
constexpr uint32_t ShardOf(int64_t id, uint32_t num_shards) {
  return static_cast<uint32_t>(SplitMix64Hash(static_cast<uint64_t>(id)) %
                               num_shards);
}

// The candidates one server keeps: those whose id falls to shard `index`
// of `count`. The default (shard 0 of 1) keeps every candidate.
struct ShardFilter {
  uint32_t index = 0;
  uint32_t count = 1;

  // True when this is one shard of several (some candidates are dropped).
  constexpr bool sharded() const { return count > 1; }
  constexpr bool Keeps(int64_t id) const {
    return count <= 1 || ShardOf(id, count) == index;
  }
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_CORPUS_SHARD_H_

// MappedFloats: a read-only, shared memory mapping of float32 values that
// sit at some byte offset of a file (the data of a '<f4' .npy file), so
// that a CandidateStore can serve rows from the page cache instead of the
// heap. The kernel may evict the pages and read them back from the file at
// will: they are not counted as the process's own memory.
//
// The file must never be truncated or rewritten in place while it is
// mapped (a read past a truncated end is SIGBUS): map only files the
// server owns and replaces by rename. Unlinking a mapped file is safe.
//
// Immutable once mapped: any number of threads may read it. Move-only; the
// destructor unmaps.
#ifndef HARDNEG_SRC_CORPUS_MAPPED_FLOATS_H_
#define HARDNEG_SRC_CORPUS_MAPPED_FLOATS_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace hardneg {

class MappedFloats {
 public:
  // Maps the whole of the file open as `fd` (`file_bytes` long, which must
  // be its size) and exposes the `count` floats at byte `offset` (a
  // multiple of 4). `path` names the file in errors and path(). INVALID_
  // ARGUMENT when the floats do not fit the file or are misaligned;
  // INTERNAL when mmap fails. The descriptor may be closed afterwards.
  static absl::StatusOr<MappedFloats> Map(int fd, size_t file_bytes,
                                          size_t offset, size_t count,
                                          std::string path);

  MappedFloats() = default;
  ~MappedFloats();
  MappedFloats(MappedFloats&& other) noexcept;
  MappedFloats& operator=(MappedFloats&& other) noexcept;
  MappedFloats(const MappedFloats&) = delete;
  MappedFloats& operator=(const MappedFloats&) = delete;

  const float* data() const { return data_; }
  size_t size() const { return count_; }
  // The file mapped when mapped() (it may have been unlinked since).
  const std::string& path() const { return path_; }
  bool mapped() const { return base_ != nullptr; }

  // Tells the kernel how the pages will be read: sequential (read ahead
  // aggressively, as for one pass over every row) or random (no read-ahead,
  // as for rescoring a few rows per query). A hint: failures are ignored.
  // Normal is the kernel's default: some read-ahead.
  void AdviseSequential() const;
  void AdviseRandom() const;
  void AdviseNormal() const;

 private:
  void Unmap();

  void* base_ = nullptr;
  size_t length_ = 0;
  const float* data_ = nullptr;
  size_t count_ = 0;
  std::string path_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_CORPUS_MAPPED_FLOATS_H_

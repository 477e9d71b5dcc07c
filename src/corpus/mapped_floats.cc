#include "corpus/mapped_floats.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace hardneg {

absl::StatusOr<MappedFloats> MappedFloats::Map(int fd, size_t file_bytes,
                                               size_t offset, size_t count,
                                               std::string path) {
  if (offset % sizeof(float) != 0 || offset > file_bytes ||
      count > (file_bytes - offset) / sizeof(float)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", count, " floats at byte ", offset,
                     " do not fit the file's ", file_bytes, " bytes"));
  }
  MappedFloats mapped;
  mapped.path_ = std::move(path);
  mapped.count_ = count;
  if (file_bytes == 0) return mapped;  // nothing to map; data() is null
  void* base = mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return absl::InternalError(
        absl::StrCat(mapped.path_, ": mmap of ", file_bytes,
                     " bytes failed: ", std::strerror(errno)));
  }
  mapped.base_ = base;
  mapped.length_ = file_bytes;
  mapped.data_ =
      reinterpret_cast<const float*>(static_cast<const char*>(base) + offset);
  return mapped;
}

MappedFloats::~MappedFloats() { Unmap(); }

MappedFloats::MappedFloats(MappedFloats&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      length_(std::exchange(other.length_, 0)),
      data_(std::exchange(other.data_, nullptr)),
      count_(std::exchange(other.count_, 0)),
      path_(std::move(other.path_)) {}

MappedFloats& MappedFloats::operator=(MappedFloats&& other) noexcept {
  if (this != &other) {
    Unmap();
    base_ = std::exchange(other.base_, nullptr);
    length_ = std::exchange(other.length_, 0);
    data_ = std::exchange(other.data_, nullptr);
    count_ = std::exchange(other.count_, 0);
    path_ = std::move(other.path_);
  }
  return *this;
}

void MappedFloats::Unmap() {
  if (base_ != nullptr) munmap(base_, length_);
  base_ = nullptr;
  length_ = 0;
  data_ = nullptr;
  count_ = 0;
}

void MappedFloats::AdviseSequential() const {
  if (base_ != nullptr) madvise(base_, length_, MADV_SEQUENTIAL);
}

void MappedFloats::AdviseRandom() const {
  if (base_ != nullptr) madvise(base_, length_, MADV_RANDOM);
}

void MappedFloats::AdviseNormal() const {
  if (base_ != nullptr) madvise(base_, length_, MADV_NORMAL);
}

}  // namespace hardneg

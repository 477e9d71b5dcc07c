// File-system helpers shared by every reader and writer of files in
// format/ and versions/: an owned file descriptor, path joining, opening
// and reading regular files, fsync, and the one atomic write (a temporary
// file, fsynced, renamed into place, its directory fsynced).
//
// Errors name the file and carry the errno's code unless said otherwise.
// Stateless functions, safe to call from any thread; a ScopedFd is owned
// by one thread at a time.
#ifndef HARDNEG_SRC_FORMAT_FILE_UTIL_H_
#define HARDNEG_SRC_FORMAT_FILE_UTIL_H_

#include <cstddef>
#include <functional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hardneg {

// A file descriptor closed when this goes out of scope. Move-only.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd();
  ScopedFd(ScopedFd&& other) noexcept;
  ScopedFd& operator=(ScopedFd&& other) noexcept;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership: the caller closes the returned descriptor.
  int release() { return std::exchange(fd_, -1); }

  // Closes now, so that the caller sees the error close() may report (a
  // write-back failure of a network file system); "`path`: close failed".
  absl::Status Close(const std::string& path);

 private:
  int fd_ = -1;
};

// `dir` + "/" + `name`, without doubling a trailing slash of `dir`.
std::string JoinPath(absl::string_view dir, absl::string_view name);

// The errno's status, "`path`: `action`: <strerror>", from the current errno.
absl::Status ErrnoError(const std::string& path, absl::string_view action);

// A regular file open for reading, and its size when it was opened.
struct OpenedFile {
  ScopedFd fd;
  size_t size = 0;
};

// Opens the regular file at `path` for reading. NOT_FOUND ("no such file")
// when it does not exist; INVALID_ARGUMENT ("not a regular file") for a
// directory, FIFO or device, which is never read, so a hostile name cannot
// block or flood the reader.
absl::StatusOr<OpenedFile> OpenRegularFile(const std::string& path);

// Reads from `fd` until `n` bytes arrived or the file ended; returns how
// many arrived. `path` names the file in errors.
absl::StatusOr<size_t> ReadUpTo(int fd, void* buf, size_t n,
                                const std::string& path);

// The whole of the regular file at `path`, which must hold at most
// `max_bytes`: the errors of OpenRegularFile, and INVALID_ARGUMENT when it
// is larger than `max_bytes`.
absl::StatusOr<std::string> ReadSmallTextFile(const std::string& path,
                                              size_t max_bytes);

// Writes all of `bytes` at the current offset of `fd`; `path` names the
// file in errors.
absl::Status WriteFully(int fd, absl::string_view bytes,
                        const std::string& path);

// Copies `n` bytes from offset `in_offset` of `in_fd` to the current offset
// of `out_fd` inside the kernel (copy_file_range; through a 1 MiB buffer
// where the file systems do not support it), never through a buffer the
// size of the data. `observer`, when set, is told the bytes copied so far
// every few MiB. FAILED_PRECONDITION ("`in_path`: file shrank while
// reading") when the source ends early; the errno's status otherwise.
absl::Status CopyFileBytes(int in_fd, size_t in_offset, int out_fd, size_t n,
                           const std::string& in_path,
                           const std::string& out_path,
                           const std::function<void(size_t)>& observer);

// The identity of the file at `path` as last written (device, inode, size
// and modification time), or "" when it cannot be stat'ed: a file that
// keeps its stamp has not been rewritten.
std::string FileStamp(const std::string& path);

// Flushes the file, or with `directory` the directory's entries, at `path`
// to stable storage.
absl::Status SyncPath(const std::string& path, bool directory);

// Replaces the file at `path` with `text` followed by `more` (a header and
// a large body, written without joining them first) so that a reader, or a
// crash, sees either the old content or all of the new: a temporary file
// beside it, written and fsynced, renamed over `path`, and the directory
// fsynced (best effort: the file is in place by then). The file's mode is
// 0644. Errors name the file; a missing directory is NOT_FOUND.
//
// `observer`, when set, is told the bytes written so far after every few
// MiB, last with all of them (before the fsync).
using WriteObserver = std::function<void(size_t bytes_written)>;
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view text,
                                 absl::string_view more = {},
                                 const WriteObserver& observer = nullptr);

}  // namespace hardneg

#endif  // HARDNEG_SRC_FORMAT_FILE_UTIL_H_

#include "format/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace hardneg {
namespace {

// Linux transfers at most ~2 GiB per read() or write() anyway.
constexpr size_t kMaxChunk = size_t{1} << 30;

// Bytes written between two calls of a write's observer.
constexpr size_t kObservedChunk = size_t{8} << 20;

// Writes `bytes`, adding their count to `*written` and telling `observer`
// (when set) after each chunk.
absl::Status WriteAll(int fd, absl::string_view bytes, const std::string& path,
                      const WriteObserver& observer, size_t* written) {
  const size_t chunk = observer ? kObservedChunk : kMaxChunk;
  while (!bytes.empty()) {
    const ssize_t put = write(fd, bytes.data(), std::min(bytes.size(), chunk));
    if (put < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(path, "write failed");
    }
    bytes.remove_prefix(static_cast<size_t>(put));
    *written += static_cast<size_t>(put);
    if (observer) observer(*written);
  }
  return absl::OkStatus();
}

// The directory holding `path`, for fsyncing a rename in it.
std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash + 1);
}

// Writes `text` and `more` to the temporary file `tmp`, open as `fd`, and
// makes them durable.
absl::Status FillTemporary(ScopedFd& fd, const std::string& tmp,
                           absl::string_view text, absl::string_view more,
                           const WriteObserver& observer) {
  // mkstemp creates 0600; the files are meant to be shared like numpy's.
  if (fchmod(fd.get(), 0644) != 0) return ErrnoError(tmp, "chmod failed");
  size_t written = 0;
  HARDNEG_RETURN_IF_ERROR(WriteAll(fd.get(), text, tmp, observer, &written));
  HARDNEG_RETURN_IF_ERROR(WriteAll(fd.get(), more, tmp, observer, &written));
  if (fsync(fd.get()) != 0) return ErrnoError(tmp, "fsync failed");
  return fd.Close(tmp);
}

}  // namespace

ScopedFd::~ScopedFd() {
  if (fd_ >= 0) close(fd_);
}

ScopedFd::ScopedFd(ScopedFd&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

ScopedFd& ScopedFd::operator=(ScopedFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

absl::Status ScopedFd::Close(const std::string& path) {
  const int rc = close(std::exchange(fd_, -1));
  return rc == 0 ? absl::OkStatus() : ErrnoError(path, "close failed");
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty() || dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::Status ErrnoError(const std::string& path, absl::string_view action) {
  return absl::ErrnoToStatus(errno, absl::StrCat(path, ": ", action));
}

absl::StatusOr<OpenedFile> OpenRegularFile(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
  // writer. It does not affect reads of a regular file.
  ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return ErrnoError(path, "cannot open");
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return ErrnoError(path, "cannot stat");
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  return OpenedFile{std::move(fd), static_cast<size_t>(st.st_size)};
}

absl::StatusOr<size_t> ReadUpTo(int fd, void* buf, size_t n,
                                const std::string& path) {
  char* out = static_cast<char*>(buf);
  size_t done = 0;
  while (done < n) {
    const ssize_t got = read(fd, out + done, std::min(n - done, kMaxChunk));
    if (got < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(path, "read failed");
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

absl::StatusOr<std::string> ReadSmallTextFile(const std::string& path,
                                              size_t max_bytes) {
  HARDNEG_ASSIGN_OR_RETURN(OpenedFile file, OpenRegularFile(path));
  auto too_large = [&](size_t size) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", size, " bytes is over the limit of ", max_bytes));
  };
  if (file.size > max_bytes) return too_large(file.size);
  std::string text;
  text.reserve(file.size);
  char buffer[1 << 16];
  while (true) {
    HARDNEG_ASSIGN_OR_RETURN(
        size_t got, ReadUpTo(file.fd.get(), buffer, sizeof(buffer), path));
    text.append(buffer, got);
    // The file may grow after fstat.
    if (text.size() > max_bytes) return too_large(text.size());
    if (got < sizeof(buffer)) return text;
  }
}

absl::Status WriteFully(int fd, absl::string_view bytes,
                        const std::string& path) {
  size_t written = 0;
  return WriteAll(fd, bytes, path, nullptr, &written);
}

namespace {

// CopyFileBytes where copy_file_range cannot: through a small buffer.
absl::Status CopyThroughBuffer(int in_fd, size_t in_offset, int out_fd,
                               size_t n, const std::string& in_path,
                               const std::string& out_path,
                               const std::function<void(size_t)>& observer) {
  std::vector<char> buffer(size_t{1} << 20);
  for (size_t done = 0; done < n;) {
    const size_t want = std::min(buffer.size(), n - done);
    const ssize_t got =
        pread(in_fd, buffer.data(), want, static_cast<off_t>(in_offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(in_path, "read failed");
    }
    if (got == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(in_path, ": file shrank while reading"));
    }
    HARDNEG_RETURN_IF_ERROR(WriteFully(
        out_fd, absl::string_view(buffer.data(), static_cast<size_t>(got)),
        out_path));
    done += static_cast<size_t>(got);
    if (observer &&
        (done % kObservedChunk < static_cast<size_t>(got) || done == n)) {
      observer(done);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CopyFileBytes(int in_fd, size_t in_offset, int out_fd, size_t n,
                           const std::string& in_path,
                           const std::string& out_path,
                           const std::function<void(size_t)>& observer) {
  size_t done = 0;
  while (done < n) {
    off64_t offset = static_cast<off64_t>(in_offset + done);
    const ssize_t got = copy_file_range(in_fd, &offset, out_fd, nullptr,
                                        std::min(n - done, kObservedChunk), 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (done == 0 && (errno == EXDEV || errno == ENOSYS ||
                        errno == EOPNOTSUPP || errno == EINVAL)) {
        return CopyThroughBuffer(in_fd, in_offset, out_fd, n, in_path, out_path,
                                 observer);
      }
      return ErrnoError(out_path,
                        absl::StrCat("copy from ", in_path, " failed"));
    }
    if (got == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(in_path, ": file shrank while reading"));
    }
    done += static_cast<size_t>(got);
    if (observer) observer(done);
  }
  return absl::OkStatus();
}

std::string FileStamp(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(st.st_dev, ":", st.st_ino, ":", st.st_size, ":",
                      st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
}

absl::Status SyncPath(const std::string& path, bool directory) {
  const int flags = O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0);
  ScopedFd fd(open(path.c_str(), flags));
  if (!fd.valid()) return ErrnoError(path, "open for fsync failed");
  if (fsync(fd.get()) != 0) return ErrnoError(path, "fsync failed");
  return fd.Close(path);
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view text, absl::string_view more,
                                 const WriteObserver& observer) {
  std::string tmp = path + ".tmp-XXXXXX";
  ScopedFd fd(mkstemp(tmp.data()));
  if (!fd.valid()) return ErrnoError(path, "cannot create a temporary file");
  absl::Status status = FillTemporary(fd, tmp, text, more, observer);
  if (status.ok() && rename(tmp.c_str(), path.c_str()) != 0) {
    status = ErrnoError(path, "rename failed");
  }
  if (!status.ok()) {
    unlink(tmp.c_str());
    return status;
  }
  // The rename is durable once the directory is. Best effort: the new
  // content is in place whatever this reports.
  SyncPath(DirectoryOf(path), /*directory=*/true).IgnoreError();
  return absl::OkStatus();
}

}  // namespace hardneg

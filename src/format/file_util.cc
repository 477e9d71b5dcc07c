#include "format/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace hardneg {

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty() || dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::StatusOr<std::string> ReadSmallTextFile(const std::string& path,
                                              size_t max_bytes) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
  // writer. It does not affect reads of a regular file.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  }
  auto fail = [fd](absl::Status status) {
    close(fd);
    return status;
  };
  struct stat st;
  if (fstat(fd, &st) != 0) {
    return fail(
        absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot stat")));
  }
  if (!S_ISREG(st.st_mode)) {
    return fail(
        absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file")));
  }
  auto too_large = [&](size_t size) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", size, " bytes is over the limit of ", max_bytes));
  };
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return fail(too_large(static_cast<size_t>(st.st_size)));
  }
  std::string text;
  text.reserve(static_cast<size_t>(st.st_size));
  char buffer[1 << 16];
  while (true) {
    const ssize_t got = read(fd, buffer, sizeof(buffer));
    if (got < 0) {
      if (errno == EINTR) continue;
      return fail(
          absl::ErrnoToStatus(errno, absl::StrCat(path, ": read failed")));
    }
    if (got == 0) break;
    text.append(buffer, static_cast<size_t>(got));
    // The file may grow after fstat.
    if (text.size() > max_bytes) return fail(too_large(text.size()));
  }
  close(fd);
  return text;
}

std::string FileStamp(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(st.st_dev, ":", st.st_ino, ":", st.st_size, ":",
                      st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view text) {
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = mkstemp(tmp.data());
  if (fd < 0) {
    return absl::ErrnoToStatus(
        errno, absl::StrCat(path, ": cannot create a temporary file"));
  }
  absl::Status status = [&]() -> absl::Status {
    if (fchmod(fd, 0644) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": chmod failed"));
    }
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t put = write(fd, text.data() + done, text.size() - done);
      if (put < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": write failed"));
      }
      done += static_cast<size_t>(put);
    }
    if (fsync(fd) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": fsync failed"));
    }
    return absl::OkStatus();
  }();
  if (close(fd) != 0 && status.ok()) {
    status = absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": close failed"));
  }
  if (status.ok() && rename(tmp.c_str(), path.c_str()) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat(path, ": rename failed"));
  }
  if (!status.ok()) {
    unlink(tmp.c_str());
    return status;
  }
  // The rename is durable once the directory is.
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fsync(dir_fd);
    close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace hardneg

// Small file-system helpers shared by the readers of checkpoints and
// snapshots: path joining and a bounded read of a small text file.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SRC_FORMAT_FILE_UTIL_H_
#define HARDNEG_SRC_FORMAT_FILE_UTIL_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hardneg {

// `dir` + "/" + `name`, without doubling a trailing slash of `dir`.
std::string JoinPath(absl::string_view dir, absl::string_view name);

// The whole of the regular file at `path`, which must hold at most
// `max_bytes`. NOT_FOUND when it does not exist; INVALID_ARGUMENT when it
// is not a regular file (a FIFO or a device is never read, so a hostile
// name cannot block or flood the reader) or is larger than `max_bytes`;
// the errno's code otherwise. Every message names the path.
absl::StatusOr<std::string> ReadSmallTextFile(const std::string& path,
                                              size_t max_bytes);

// The identity of the file at `path` as last written (device, inode, size
// and modification time), or "" when it cannot be stat'ed: a file that
// keeps its stamp has not been rewritten.
std::string FileStamp(const std::string& path);

// Replaces the file at `path` with `text` so that a reader (or a crash)
// sees either the old content or all of the new: a temporary file beside
// it, written and fsynced, renamed over `path`, and the directory fsynced.
// The file's mode is 0644. Errors name the file.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view text);

}  // namespace hardneg

#endif  // HARDNEG_SRC_FORMAT_FILE_UTIL_H_

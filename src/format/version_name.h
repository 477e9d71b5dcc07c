// The names a checkpoint or published version may take, checked wherever a
// name enters: manifests, Publish headers, base versions.
//
// A stateless function; safe to call from any thread.
#ifndef HARDNEG_SRC_FORMAT_VERSION_NAME_H_
#define HARDNEG_SRC_FORMAT_VERSION_NAME_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace hardneg {

// The names a version may take: 1 to 128 characters of [A-Za-z0-9._-],
// not "." or "..". Names travel into logs, GetIndexInfo, metrics and file
// names, so nothing else is accepted. INVALID_ARGUMENT naming `field`
// (e.g. "header.name") and the first character refused.
absl::Status CheckVersionName(absl::string_view name, absl::string_view field);

}  // namespace hardneg

#endif  // HARDNEG_SRC_FORMAT_VERSION_NAME_H_

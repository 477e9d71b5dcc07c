// What this binary is: the project's version (CMake's project VERSION), the
// git revision it was built from, and the build type. `--version` of every
// binary prints VersionLine(); the servers export them as the
// hardneg_build_info{version,revision} gauge.
//
// Constants: usable from any thread.
#ifndef HARDNEG_SRC_BASE_BUILD_INFO_H_
#define HARDNEG_SRC_BASE_BUILD_INFO_H_

#include <string>

#include "absl/strings/string_view.h"

namespace hardneg {

// "0.1.0".
absl::string_view BuildVersion();
// `git describe --always --dirty` of the checkout ("a1b2c3d4e5f6",
// "...-dirty"), $HARDNEG_REVISION when set at build time, else "unknown".
absl::string_view BuildRevision();
// CMAKE_BUILD_TYPE: "RelWithDebInfo", "Release", "Debug", ...
absl::string_view BuildType();

// "<program> 0.1.0 (revision a1b2c3d4e5f6, RelWithDebInfo build)".
std::string VersionLine(absl::string_view program);

}  // namespace hardneg

#endif  // HARDNEG_SRC_BASE_BUILD_INFO_H_

#include "base/build_info.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "build_info_values.h"  // generated: cmake/build_info.cmake

namespace hardneg {

absl::string_view BuildVersion() { return HARDNEG_VERSION; }
absl::string_view BuildRevision() { return HARDNEG_REVISION; }
absl::string_view BuildType() { return HARDNEG_BUILD_TYPE; }

std::string VersionLine(absl::string_view program) {
  return absl::StrCat(program, " ", BuildVersion(), " (revision ",
                      BuildRevision(), ", ", BuildType(), " build)");
}

}  // namespace hardneg

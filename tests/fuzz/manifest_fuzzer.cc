// Fuzzes the checkpoint manifest reader (src/format/checkpoint.h ReadManifest):
// the input is a whole manifest.json. A manifest it accepts must meet the
// contract ReadCheckpoint relies on: a dim, at least one shard, and shard
// paths that stay inside the checkpoint directory.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "format/checkpoint.h"
#include "fuzz_support.h"

namespace hardneg {
namespace {

// The path as open(2) will see it: up to the first NUL.
void CheckPath(const std::string& path, bool may_be_empty) {
  const std::string opened = path.c_str();
  if (path.empty()) {
    if (!may_be_empty) fuzz::Fail("an empty shard path was accepted");
    return;
  }
  if (opened.empty() || opened.front() == '/') {
    fuzz::Fail("shard path '" + opened + "' is not a relative file path");
  }
  for (absl::string_view part : absl::StrSplit(opened, '/')) {
    if (part == "..") {
      fuzz::Fail("shard path '" + opened + "' leaves the checkpoint directory");
    }
  }
}

int TestOneInput(const uint8_t* data, size_t size) {
  static const std::string* dir = new std::string(fuzz::ScratchDir());
  fuzz::WriteFile(*dir + "/manifest.json", data, size);

  absl::StatusOr<CheckpointManifest> manifest = ReadManifest(*dir);
  if (!manifest.ok()) {
    if (manifest.status().code() != absl::StatusCode::kInvalidArgument) {
      fuzz::Fail("a bad manifest gave " + manifest.status().ToString() +
                 ", not INVALID_ARGUMENT");
    }
    return 0;
  }
  if (manifest->dim == 0) fuzz::Fail("dim 0 was accepted");
  if (manifest->shards.empty()) fuzz::Fail("no shards was accepted");
  for (const CheckpointShard& shard : manifest->shards) {
    CheckPath(shard.embeddings, false);
    CheckPath(shard.ids, false);
    CheckPath(shard.labels, true);
  }
  return 0;
}

}  // namespace
}  // namespace hardneg

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return hardneg::TestOneInput(data, size);
}

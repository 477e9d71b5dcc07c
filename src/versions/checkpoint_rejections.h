// CheckpointRejections: which checkpoints the server has given up on, so
// that a bad checkpoint is read once, reported once, and not tried again
// until its manifest is rewritten; with a state directory (the server's
// --data_dir), also across restarts.
//
// A load that never finishes (the process is killed, or runs out of
// memory, while reading or building) cannot report itself. So a load is
// recorded on disk before it starts and cleared when it ends: a restart
// that finds the record of the same manifest twice rejects that checkpoint
// ("interrupted twice") instead of crash-looping on it. One interruption is
// forgiven, since a pod may be stopped during a good load.
//
// Checkpoints are identified by directory and ManifestStamp. Entries kept
// on disk are bounded (the newest 256).
//
// Thread-compatible: callers serialise all calls (IndexManager holds its
// build lock).
#ifndef HARDNEG_SRC_VERSIONS_CHECKPOINT_REJECTIONS_H_
#define HARDNEG_SRC_VERSIONS_CHECKPOINT_REJECTIONS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace hardneg {

class CheckpointRejections {
 public:
  struct Rejection {
    std::string dir;
    std::string stamp;
    std::string reason;
  };

  // `state_dir` empty: nothing is kept across restarts.
  explicit CheckpointRejections(std::string state_dir);

  CheckpointRejections(const CheckpointRejections&) = delete;
  CheckpointRejections& operator=(const CheckpointRejections&) = delete;

  // Reads what an earlier process kept. A load it left unfinished for the
  // second time becomes a rejection, returned so that it is reported;
  // otherwise the interrupted load's count is kept for the next try.
  std::vector<Rejection> Restore();

  bool IsRejected(const std::string& dir, const std::string& stamp) const;

  // Remembers (and keeps on disk) that `dir` at `stamp` was rejected.
  void Add(const std::string& dir, const std::string& stamp,
           const std::string& reason);

  // Records that `dir` at `stamp` is being loaded, until EndLoad.
  void BeginLoad(const std::string& dir, const std::string& stamp);
  void EndLoad();

 private:
  void Save() const;

  const std::string state_dir_;
  std::vector<Rejection> rejected_;
  // An unfinished load found by Restore: tried this many times already.
  std::string interrupted_dir_;
  std::string interrupted_stamp_;
  int interrupted_tries_ = 0;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_VERSIONS_CHECKPOINT_REJECTIONS_H_

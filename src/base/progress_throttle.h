// ProgressThrottle: which reports of a long step's progress to show, so
// that a log or a non-terminal stream gets a few lines a second at most:
// the first report, the last, and between them one per interval.
//
// Not thread-safe: one reporter owns it. Time is passed in, never read,
// so that tests need no clock.
#ifndef HARDNEG_SRC_BASE_PROGRESS_THROTTLE_H_
#define HARDNEG_SRC_BASE_PROGRESS_THROTTLE_H_

#include <optional>

#include "absl/time/time.h"

namespace hardneg {

class ProgressThrottle {
 public:
  explicit ProgressThrottle(absl::Duration interval) : interval_(interval) {}

  // True when the report made at `now` should be shown: it is the first,
  // `last` says it is the final one, or `interval` has passed since the
  // last one shown. A report shown is remembered as such.
  bool Due(absl::Time now, bool last) {
    if (shown_.has_value() && !last && now - *shown_ < interval_) return false;
    shown_ = now;
    return true;
  }

 private:
  const absl::Duration interval_;
  std::optional<absl::Time> shown_;
};

}  // namespace hardneg

#endif  // HARDNEG_SRC_BASE_PROGRESS_THROTTLE_H_

// Status propagation macros (Abseil 20220623 ships none of its own) and
// Annotate, which adds context to a status's message.
//
// Macros over local values and a pure function, no shared state: usable
// from any thread.
#ifndef HARDNEG_SRC_BASE_STATUS_MACROS_H_
#define HARDNEG_SRC_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#define HARDNEG_CONCAT_INNER_(a, b) a##b
#define HARDNEG_CONCAT_(a, b) HARDNEG_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the current function if it is not OK.
#define HARDNEG_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status hardneg_status_ = (expr);           \
    if (!hardneg_status_.ok()) return hardneg_status_; \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status on error,
// otherwise moves the value into `lhs` (which may be a declaration).
#define HARDNEG_ASSIGN_OR_RETURN(lhs, rexpr)                                   \
  HARDNEG_ASSIGN_OR_RETURN_IMPL_(HARDNEG_CONCAT_(hardneg_sor_, __LINE__), lhs, \
                                 rexpr)

// `statusor` names the variable declared and `lhs` may be a declaration:
// neither can be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define HARDNEG_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                   \
  if (!statusor.ok()) return statusor.status();              \
  lhs = std::move(statusor).value()
// NOLINTEND(bugprone-macro-parentheses)

namespace hardneg {

// Keeps the code of `status` and puts `prefix` before its message.
inline absl::Status Annotate(const absl::Status& status,
                             absl::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

}  // namespace hardneg

#endif  // HARDNEG_SRC_BASE_STATUS_MACROS_H_

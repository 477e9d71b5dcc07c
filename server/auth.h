// TokenAuthorizer: bearer tokens and their roles, from a file an operator
// mounts (a Kubernetes Secret, say):
//
//   # comments and blank lines are ignored
//   <TOKEN> mine
//   <TOKEN> mine,publish
//
// Roles: `mine` (Mine, MineOnce, GetIndexInfo) and `publish` (Publish).
// A call carries its token in the `authorization` metadata as
// "Bearer <TOKEN>". Health and reflection stay open, for probes.
//
// Tokens are compared in constant time (no early exit on the first
// differing byte, whatever the lengths) and never appear in a message.
//
// Immutable after FromFile/FromText: Check may be called from any thread.
#ifndef HARDNEG_SERVER_AUTH_H_
#define HARDNEG_SERVER_AUTH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hardneg {

enum class Role : uint8_t { kMine = 1, kPublish = 2 };

class TokenAuthorizer {
 public:
  // INVALID_ARGUMENT naming the line (never the token) for a line without
  // a role, an unknown role, a token shorter than 16 characters, or a
  // token listed twice; and for a file with no token at all.
  static absl::StatusOr<TokenAuthorizer> FromText(absl::string_view text,
                                                  absl::string_view source);
  // The file's errors, or FromText's naming the file.
  static absl::StatusOr<TokenAuthorizer> FromFile(const std::string& path);

  // OK when `authorization` ("Bearer <TOKEN>") holds a known token with
  // `role`. UNAUTHENTICATED when it is empty, malformed or unknown;
  // PERMISSION_DENIED when the token lacks the role.
  absl::Status Check(absl::string_view authorization, Role role) const;

  size_t size() const { return tokens_.size(); }

 private:
  struct Token {
    std::string secret;
    uint8_t roles = 0;  // Role bits
  };
  TokenAuthorizer() = default;

  std::vector<Token> tokens_;
};

}  // namespace hardneg

#endif  // HARDNEG_SERVER_AUTH_H_

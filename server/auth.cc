#include "server/auth.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "format/file_util.h"

namespace hardneg {
namespace {

constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxFileBytes = size_t{1} << 20;

// Equal without an early exit: every byte of `given` is compared, against
// `secret` cycled, so the time depends on neither where they differ nor
// the secret's length.
bool ConstantTimeEquals(absl::string_view given, absl::string_view secret) {
  if (secret.empty()) return false;
  unsigned diff = given.size() == secret.size() ? 0u : 1u;
  for (size_t i = 0; i < given.size(); ++i) {
    diff |= static_cast<unsigned char>(given[i]) ^
            static_cast<unsigned char>(secret[i % secret.size()]);
  }
  return diff == 0;
}

const char* RoleName(Role role) {
  return role == Role::kPublish ? "publish" : "mine";
}

}  // namespace

absl::StatusOr<TokenAuthorizer> TokenAuthorizer::FromText(
    absl::string_view text, absl::string_view source) {
  TokenAuthorizer auth;
  size_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    auto error = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, " line ", line_number, ": ", why,
                       "; expected \"TOKEN ROLE[,ROLE]\" with roles mine "
                       "and publish"));
    };
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) return error("not a token and its roles");
    Token token;
    token.secret = std::string(fields[0]);
    if (token.secret.size() < kMinTokenLength) {
      return error(absl::StrCat("the token is shorter than ", kMinTokenLength,
                                " characters"));
    }
    for (absl::string_view role : absl::StrSplit(fields[1], ',')) {
      if (role == "mine") {
        token.roles |= static_cast<uint8_t>(Role::kMine);
      } else if (role == "publish") {
        token.roles |= static_cast<uint8_t>(Role::kPublish);
      } else {
        return error(absl::StrCat("unknown role \"", role, "\""));
      }
    }
    for (const Token& other : auth.tokens_) {
      if (other.secret == token.secret) return error("a token listed twice");
    }
    auth.tokens_.push_back(std::move(token));
  }
  if (auth.tokens_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, " lists no token: every call would be refused"));
  }
  return auth;
}

absl::StatusOr<TokenAuthorizer> TokenAuthorizer::FromFile(
    const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallTextFile(path, kMaxFileBytes);
  if (!text.ok()) return text.status();
  return FromText(*text, path);
}

absl::Status TokenAuthorizer::Check(absl::string_view authorization,
                                    Role role) const {
  constexpr absl::string_view kScheme = "Bearer ";
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "this server needs a token: send metadata \"authorization: Bearer "
        "<TOKEN>\"");
  }
  if (!absl::StartsWithIgnoreCase(authorization, kScheme)) {
    return absl::UnauthenticatedError(
        "the authorization metadata must be \"Bearer <TOKEN>\"");
  }
  const absl::string_view given = authorization.substr(kScheme.size());
  // Every token is compared, found or not.
  const Token* found = nullptr;
  for (const Token& token : tokens_) {
    if (ConstantTimeEquals(given, token.secret)) found = &token;
  }
  if (found == nullptr) {
    return absl::UnauthenticatedError("unknown token");
  }
  if ((found->roles & static_cast<uint8_t>(role)) == 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the token lacks the role \"", RoleName(role), "\" this call needs"));
  }
  return absl::OkStatus();
}

}  // namespace hardneg

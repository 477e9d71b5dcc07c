// "host:port" for a listening address, as gRPC and getaddrinfo callers
// spell it: an IPv6 host is bracketed ("[::1]:50051"), a name or an IPv4
// address is not. A host already in brackets is left as it is.
//
// A pure function: usable from any thread.
#ifndef HARDNEG_SRC_BASE_HOST_PORT_H_
#define HARDNEG_SRC_BASE_HOST_PORT_H_

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace hardneg {

inline std::string HostPort(absl::string_view host, int port) {
  const bool bare_ipv6 =
      absl::StrContains(host, ':') &&
      !(absl::StartsWith(host, "[") && absl::EndsWith(host, "]"));
  return bare_ipv6 ? absl::StrCat("[", host, "]:", port)
                   : absl::StrCat(host, ":", port);
}

}  // namespace hardneg

#endif  // HARDNEG_SRC_BASE_HOST_PORT_H_

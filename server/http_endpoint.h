// HttpEndpoint: a small HTTP/1.1 server for a fixed set of read-only
// resources, such as Prometheus's /metrics. One thread, with a normal
// stack, poll()s the listening socket and every connection (all
// non-blocking), so no client can stall another. (It replaces
// prometheus-cpp's Exposer: civetweb's worker threads have a fixed ~100 KB
// stack, OpenBLAS's 61 KB of static TLS is carved out of each, and
// civetweb's error path overflowed the rest on any request but /metrics.)
//
//   std::vector<HttpResource> resources;
//   resources.push_back({"/metrics", "text/plain", [&] { return Render(); }});
//   absl::StatusOr<std::unique_ptr<HttpEndpoint>> http =
//       HttpEndpoint::Start("0.0.0.0", 9464, std::move(resources));
//
// Each connection carries one request, and every response closes it
// (`Connection: close`):
//   - GET or HEAD of a resource's path (the query string is ignored): 200
//     with the resource's Content-Type and body (HEAD: the same headers, no
//     body);
//   - a method other than GET and HEAD: 405 with `Allow: GET, HEAD`;
//   - any other path: 404;
//   - a malformed request line or header, a version other than HTTP/1.x,
//     or an HTTP/1.1 request without exactly one Host: 400;
//   - a request head over max_head_bytes: 431;
//   - a head not complete within io_timeout: 408 (or no answer when nothing
//     was sent).
// Bad requests are answered as soon as their bytes show it. Request bodies
// are never read; after the response the connection is drained briefly, so
// that closing it does not reset the response the client has yet to read.
//
// Bounds: at most max_connections connections are open at once; more wait
// in the kernel's listen backlog. While one waits, the open connection that
// has waited longest on its client (for a request head, or to close) is
// closed to make room once it is a second old, so slow clients delay a
// scrape by about a second per max_connections of them, not by io_timeout.
// Each connection has io_timeout to send
// its request head and io_timeout again to take the response; at most
// max_head_bytes are buffered per connection. Nothing is logged per request,
// and peer errors (EPIPE, ECONNRESET) close the connection quietly, never raise
// SIGPIPE.
//
// Thread-safety: a resource's `body` is called on the endpoint's thread, one
// call at a time, and must be safe to run concurrently with the rest of the
// program. port() may be called from any thread. The destructor stops
// promptly (an eventfd wakes the poll), closes every connection, then
// destroys the resources; it must not run on the endpoint's thread (from a
// `body`).
#ifndef HARDNEG_SERVER_HTTP_ENDPOINT_H_
#define HARDNEG_SERVER_HTTP_ENDPOINT_H_

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace hardneg {

struct HttpResource {
  std::string path;          // e.g. "/metrics": starts with '/', no '?'
  std::string content_type;  // e.g. "text/plain; charset=utf-8"
  // The body, made anew for each GET and HEAD. An exception is answered
  // with 500.
  std::function<std::string()> body;
};

struct HttpEndpointOptions {
  int max_connections = 64;
  absl::Duration io_timeout = absl::Seconds(10);
  size_t max_head_bytes = 8 * 1024;  // request line and headers
};

class HttpEndpoint {
 public:
  // Listens on host:port and serves `resources`. `host` is a name or a
  // numeric address; an IPv6 one may be in brackets ("[::1]" or "::1"); ""
  // means every address. Port 0 picks a free one. Returns INVALID_ARGUMENT
  // for a port outside [0, 65535], bad options, or a resource path that is
  // malformed or given twice; UNAVAILABLE when the host does not resolve or
  // the address cannot be bound (in use, not local).
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(
      const std::string& host, int port, std::vector<HttpResource> resources,
      const HttpEndpointOptions& options = {});

  ~HttpEndpoint();

  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // The port listened on (the one picked, when Start was given 0).
  int port() const { return port_; }

 private:
  class Connection;

  HttpEndpoint(int listen_fd, int wake_fd, int port,
               std::vector<HttpResource> resources,
               const HttpEndpointOptions& options);

  // The endpoint's thread: polls until the destructor signals wake_fd_.
  void Run();
  // Accepts pending connections while there is room in `connections`;
  // returns false when accepting should pause (out of file descriptors).
  bool AcceptAll(std::vector<std::unique_ptr<Connection>>* connections);
  // The response to a well-formed request head.
  std::string Respond(absl::string_view method, absl::string_view target) const;

  const int listen_fd_;
  const int wake_fd_;  // an eventfd
  const int port_;
  const std::vector<HttpResource> resources_;
  const HttpEndpointOptions options_;
  const std::chrono::nanoseconds io_timeout_;  // options_.io_timeout
  std::thread thread_;  // last: starts once the rest is set
};

}  // namespace hardneg

#endif  // HARDNEG_SERVER_HTTP_ENDPOINT_H_

#include "server/http_endpoint.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <limits>
#include <system_error>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "base/host_port.h"
#include "base/status_macros.h"
#include "format/file_util.h"
namespace hardneg {
namespace {

using Clock = std::chrono::steady_clock;
using PollEvents = decltype(pollfd::events);  // short

// After its response, a connection is read and discarded for up to this
// long (and this many bytes) before it is closed: closing a socket that
// still holds unread input sends a reset, which can destroy the response
// before the client has read it.
constexpr Clock::duration kMaxLinger = std::chrono::seconds(2);
constexpr size_t kMaxLingerBytes = 1 << 20;
// At the connection cap, a connection that has waited this long on its
// client (for a request head, or to close) gives way to a new one: many
// slow clients then delay a scrape by about this, not by io_timeout.
constexpr Clock::duration kEvictAfter = std::chrono::seconds(1);
// How long accepting pauses when the process is out of file descriptors
// (the listening socket stays readable, so retrying at once would spin).
constexpr Clock::duration kAcceptPause = std::chrono::milliseconds(100);

// RFC 9110 token characters (methods, header names).
bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return absl::StrContains("!#$%&'*+-.^_`|~", c);
}

bool IsToken(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Visible ASCII, the characters of a request target.
bool IsVisible(char c) { return c > 0x20 && c < 0x7f; }

// What may appear in a header line besides its line ending: visible
// ASCII, space, tab and (in values) bytes >= 0x80.
bool IsHeaderByte(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

std::string Response(absl::string_view status, absl::string_view content_type,
                     absl::string_view body, bool head,
                     absl::string_view extra_headers = "") {
  return absl::StrCat(
      "HTTP/1.1 ", status, "\r\nDate: ",
      absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT", absl::Now(),
                       absl::UTCTimeZone()),
      "\r\nContent-Type: ", content_type, "\r\nContent-Length: ", body.size(),
      "\r\n", extra_headers, "Connection: close\r\n\r\n", head ? "" : body);
}

// A response whose body is its status line; never any request bytes.
std::string ErrorResponse(absl::string_view status, bool head = false,
                          absl::string_view extra_headers = "") {
  return Response(status, "text/plain; charset=utf-8",
                  absl::StrCat(status, "\n"), head, extra_headers);
}

// Reads a request head incrementally, checking each byte once: a request
// line "METHOD SP target SP HTTP/1.x", header lines "name: value", and an
// empty line. Lines end in CRLF or a bare LF. Bad bytes are reported as
// soon as they arrive, before the line is complete.
class RequestHeadParser {
 public:
  enum class State { kIncomplete, kComplete, kBad, kTooLarge };

  explicit RequestHeadParser(size_t max_bytes) : max_bytes_(max_bytes) {}

  // How many more bytes Append may take: the head limit plus one, so that
  // a head over the limit is seen.
  size_t room() const { return max_bytes_ + 1 - bytes_.size(); }
  bool empty() const { return bytes_.empty(); }

  // Adds at most room() bytes; once the state is not kIncomplete, no more.
  State Append(absl::string_view data) {
    bytes_.append(data.data(), std::min(data.size(), room()));
    for (; checked_ < bytes_.size(); ++checked_) {
      const unsigned char c = static_cast<unsigned char>(bytes_[checked_]);
      if (c == '\n') {
        absl::string_view line(bytes_.data() + line_start_,
                               checked_ - line_start_);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        line_start_ = checked_ + 1;
        if (method_.empty()) {
          if (!ParseRequestLine(line)) return State::kBad;
        } else if (line.empty()) {
          return Finish(checked_ + 1);
        } else if (!ParseHeaderLine(line)) {
          return State::kBad;
        }
      } else if (c != '\r' &&
                 (method_.empty()
                      ? !(IsVisible(static_cast<char>(c)) || c == ' ')
                      : !IsHeaderByte(c))) {
        return State::kBad;
      }
    }
    return bytes_.size() > max_bytes_ ? State::kTooLarge : State::kIncomplete;
  }

  // Valid once Append returned kComplete.
  const std::string& method() const { return method_; }
  const std::string& target() const { return target_; }

 private:
  bool ParseRequestLine(absl::string_view line) {
    const size_t first = line.find(' ');
    if (first == absl::string_view::npos) return false;
    const size_t second = line.find(' ', first + 1);
    if (second == absl::string_view::npos) return false;
    const absl::string_view method = line.substr(0, first);
    const absl::string_view target = line.substr(first + 1, second - first - 1);
    const absl::string_view version = line.substr(second + 1);
    constexpr absl::string_view kHttp1 = "HTTP/1.";
    if (!IsToken(method) || target.empty() ||
        !std::all_of(target.begin(), target.end(), IsVisible) ||
        version.size() != kHttp1.size() + 1 ||
        version.substr(0, kHttp1.size()) != kHttp1 ||
        !absl::ascii_isdigit(static_cast<unsigned char>(version.back()))) {
      return false;
    }
    method_.assign(method.data(), method.size());
    target_.assign(target.data(), target.size());
    http10_ = version.back() == '0';
    return true;
  }

  bool ParseHeaderLine(absl::string_view line) {
    // No obsolete line folding (a line starting with white space), no space
    // before the colon, no CR inside the line.
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos || !IsToken(line.substr(0, colon)) ||
        absl::StrContains(line, '\r')) {
      return false;
    }
    if (absl::EqualsIgnoreCase(line.substr(0, colon), "host")) ++hosts_;
    return true;
  }

  State Finish(size_t head_size) {
    if (head_size > max_bytes_) return State::kTooLarge;
    // RFC 9112 3.2: an HTTP/1.1 request has exactly one Host.
    if (hosts_ > 1 || (!http10_ && hosts_ == 0)) return State::kBad;
    return State::kComplete;
  }

  const size_t max_bytes_;
  std::string bytes_;
  size_t checked_ = 0;     // bytes_[0, checked_) have been checked
  size_t line_start_ = 0;  // where the line being read starts
  std::string method_;     // empty until the request line is complete
  std::string target_;
  bool http10_ = false;
  int hosts_ = 0;
};

std::string ErrnoMessage(int error) {
  return std::system_category().message(error);
}

}  // namespace

// One client connection: it reads a request head, writes one response,
// then drains its input until the client closes or kMaxLinger passes.
class HttpEndpoint::Connection {
 public:
  Connection(const HttpEndpoint& endpoint, int fd, Clock::time_point now)
      : endpoint_(endpoint),
        fd_(fd),
        accepted_(now),
        parser_(endpoint.options_.max_head_bytes),
        deadline_(now + endpoint.io_timeout_) {}

  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const { return fd_; }
  bool closed() const { return state_ == State::kClosed; }
  // Waiting on the client: for its request head, or to close.
  bool idle() const {
    return state_ == State::kReading || state_ == State::kLingering;
  }
  Clock::time_point accepted() const { return accepted_; }
  Clock::time_point deadline() const { return deadline_; }
  // The poll() events this connection waits for.
  PollEvents events() const {
    return state_ == State::kWriting ? POLLOUT : POLLIN;
  }

  // poll() reported `revents` (not 0) on this connection.
  void OnReady(Clock::time_point now) {
    switch (state_) {
      case State::kReading:
        Read(now);
        break;
      case State::kWriting:
        Write(now);
        break;
      case State::kLingering:
        Drain();
        break;
      case State::kClosed:
        break;
    }
  }

  void Close() {
    ::close(fd_);
    fd_ = -1;
    state_ = State::kClosed;
  }

  // The deadline has passed: a client that sent part of a head is told so.
  void OnDeadline(Clock::time_point now) {
    if (state_ == State::kReading && !parser_.empty()) {
      Reply(ErrorResponse("408 Request Timeout"), now);
    } else {
      Close();
    }
  }

 private:
  enum class State { kReading, kWriting, kLingering, kClosed };

  void Read(Clock::time_point now) {
    char buffer[4096];
    while (state_ == State::kReading) {
      const ssize_t n =
          ::recv(fd_, buffer, std::min(sizeof(buffer), parser_.room()), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) Close();
        return;
      }
      if (n == 0) {  // the client sent all it will, and no complete head
        if (parser_.empty()) {
          Close();
        } else {
          Reply(ErrorResponse("400 Bad Request"), now);
        }
        return;
      }
      switch (
          parser_.Append(absl::string_view(buffer, static_cast<size_t>(n)))) {
        case RequestHeadParser::State::kIncomplete:
          break;
        case RequestHeadParser::State::kComplete:
          Reply(endpoint_.Respond(parser_.method(), parser_.target()), now);
          break;
        case RequestHeadParser::State::kBad:
          Reply(ErrorResponse("400 Bad Request"), now);
          break;
        case RequestHeadParser::State::kTooLarge:
          Reply(ErrorResponse("431 Request Header Fields Too Large"), now);
          break;
      }
    }
  }

  void Reply(std::string response, Clock::time_point now) {
    out_ = std::move(response);
    state_ = State::kWriting;
    deadline_ = now + endpoint_.io_timeout_;
    Write(now);
  }

  void Write(Clock::time_point now) {
    while (sent_ < out_.size()) {
      const ssize_t n =
          ::send(fd_, out_.data() + sent_, out_.size() - sent_, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) Close();  // EPIPE, ...
        return;
      }
      sent_ += static_cast<size_t>(n);
    }
    out_ = std::string();
    ::shutdown(fd_, SHUT_WR);
    state_ = State::kLingering;
    deadline_ = std::min(deadline_, now + kMaxLinger);
    Drain();
  }

  // Reads and discards until the client closes (EOF), an error, or
  // kMaxLingerBytes.
  void Drain() {
    char buffer[4096];
    while (state_ == State::kLingering) {
      const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      drained_ += n > 0 ? static_cast<size_t>(n) : 0;
      if (n <= 0 || drained_ > kMaxLingerBytes) Close();
    }
  }

  const HttpEndpoint& endpoint_;
  int fd_;
  const Clock::time_point accepted_;
  State state_ = State::kReading;
  RequestHeadParser parser_;
  Clock::time_point deadline_;
  std::string out_;  // the response, while writing
  size_t sent_ = 0;
  size_t drained_ = 0;
};

namespace {

absl::Status CheckStartArguments(int port,
                                 const std::vector<HttpResource>& resources,
                                 const HttpEndpointOptions& options) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP port ", port, " is outside [0, 65535]"));
  }
  if (options.max_connections < 1 || options.max_head_bytes < 64 ||
      options.io_timeout <= absl::ZeroDuration() ||
      options.io_timeout > absl::Hours(24)) {
    return absl::InvalidArgumentError(
        "HttpEndpointOptions need max_connections >= 1, max_head_bytes >= "
        "64 and io_timeout in (0, 24h]");
  }
  absl::flat_hash_set<std::string> paths;
  for (const HttpResource& resource : resources) {
    if (resource.path.empty() || resource.path.front() != '/' ||
        !std::all_of(resource.path.begin(), resource.path.end(), IsVisible) ||
        absl::StrContains(resource.path, '?') || !resource.body ||
        !paths.insert(resource.path).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP resource path \"", resource.path,
                       "\" is not an absolute path without a query, has no "
                       "body function, or is given twice"));
    }
  }
  return absl::OkStatus();
}

// A non-blocking socket listening on `host`:`port` (the first address it
// resolves to that binds).
absl::StatusOr<ScopedFd> Listen(const std::string& host, int port) {
  std::string name = host;  // "[::1]" -> "::1"
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  const std::string address = HostPort(name, port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int resolved =
      ::getaddrinfo(name.empty() ? nullptr : name.c_str(),
                    std::to_string(port).c_str(), &hints, &found);
  if (resolved != 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address,
                                               ": ", ::gai_strerror(resolved)));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addresses(
      found, &::freeaddrinfo);
  int error = 0;
  for (const addrinfo* a = addresses.get(); a != nullptr; a = a->ai_next) {
    ScopedFd fd(::socket(a->ai_family,
                         a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                         a->ai_protocol));
    const int on = 1;
    if (fd.get() >= 0 &&
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) ==
            0 &&
        ::bind(fd.get(), a->ai_addr, a->ai_addrlen) == 0 &&
        ::listen(fd.get(), SOMAXCONN) == 0) {
      return fd;
    }
    error = errno;
  }
  return absl::UnavailableError(
      absl::StrCat("cannot listen on ", address, ": ", ErrnoMessage(error),
                   " (the port is in use, or the address is not local)"));
}

// The port `listener` is bound to (the one the kernel chose for port 0).
absl::StatusOr<int> BoundPort(const ScopedFd& listener) {
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&bound),
                    &length) != 0) {
    return absl::ErrnoToStatus(errno, "getsockname of the HTTP listener");
  }
  return ntohs(bound.ss_family == AF_INET6
                   ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                   : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& host, int port, std::vector<HttpResource> resources,
    const HttpEndpointOptions& options) {
  HARDNEG_RETURN_IF_ERROR(CheckStartArguments(port, resources, options));
  absl::StatusOr<ScopedFd> listener = Listen(host, port);
  if (!listener.ok()) return listener.status();
  absl::StatusOr<int> bound_port = BoundPort(*listener);
  if (!bound_port.ok()) return bound_port.status();
  ScopedFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (wake.get() < 0) {
    return absl::ErrnoToStatus(errno, "eventfd for the HTTP endpoint");
  }
  return std::unique_ptr<HttpEndpoint>(
      new HttpEndpoint(listener->release(), wake.release(), *bound_port,
                       std::move(resources), options));
}

HttpEndpoint::HttpEndpoint(int listen_fd, int wake_fd, int port,
                           std::vector<HttpResource> resources,
                           const HttpEndpointOptions& options)
    : listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      port_(port),
      resources_(std::move(resources)),
      options_(options),
      io_timeout_(absl::ToChronoNanoseconds(options.io_timeout)),
      thread_([this] { Run(); }) {}

HttpEndpoint::~HttpEndpoint() {
  const uint64_t one = 1;
  while (::write(wake_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_);
}

void HttpEndpoint::Run() {
  pthread_setname_np(pthread_self(), "http-endpoint");  // for top -H, gdb
  const size_t max_connections = static_cast<size_t>(options_.max_connections);
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<pollfd> fds;
  Clock::time_point accept_paused_until = Clock::time_point::min();
  while (true) {
    const Clock::time_point now = Clock::now();
    const bool room = connections.size() < max_connections;
    Connection* evictable = nullptr;  // at the cap: the oldest idle one
    if (!room) {
      for (const auto& connection : connections) {
        if (connection->idle() &&
            (evictable == nullptr ||
             connection->accepted() < evictable->accepted())) {
          evictable = connection.get();
        }
      }
    }
    Clock::time_point accept_at = accept_paused_until;
    if (!room) {
      accept_at =
          std::max(accept_at, evictable == nullptr
                                  ? Clock::time_point::max()
                                  : evictable->accepted() + kEvictAfter);
    }
    const bool accepting = now >= accept_at;
    Clock::time_point wake_at =
        accepting ? Clock::time_point::max() : accept_at;
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back(
        {listen_fd_, static_cast<PollEvents>(accepting ? POLLIN : 0), 0});
    for (const auto& connection : connections) {
      fds.push_back({connection->fd(), connection->events(), 0});
      wake_at = std::min(wake_at, connection->deadline());
    }
    int timeout_ms = -1;
    if (wake_at != Clock::time_point::max()) {
      const auto wait =
          std::chrono::ceil<std::chrono::milliseconds>(wake_at - now).count();
      timeout_ms = static_cast<int>(
          std::clamp<decltype(wait)>(wait, 0, std::numeric_limits<int>::max()));
    }
    // On failure (EINTR; ENOMEM) the revents are not set: poll again.
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) continue;
    if (fds[0].revents != 0) return;  // the destructor: stop
    // Someone is waiting to connect, and we are full.
    if ((fds[1].revents & POLLIN) != 0 && !room) evictable->Close();

    const Clock::time_point ready = Clock::now();
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& connection = *connections[i];
      if (fds[i + 2].revents != 0) connection.OnReady(ready);
      if (!connection.closed() && ready >= connection.deadline()) {
        connection.OnDeadline(ready);
      }
    }
    connections.erase(std::remove_if(connections.begin(), connections.end(),
                                     [](const auto& c) { return c->closed(); }),
                      connections.end());
    if ((fds[1].revents & POLLIN) != 0 && !AcceptAll(&connections)) {
      accept_paused_until = ready + kAcceptPause;
    }
  }
}

bool HttpEndpoint::AcceptAll(
    std::vector<std::unique_ptr<Connection>>* connections) {
  while (connections->size() < static_cast<size_t>(options_.max_connections)) {
    const int fd =
        ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      connections->push_back(
          std::make_unique<Connection>(*this, fd, Clock::now()));
      continue;
    }
    switch (errno) {
      case EAGAIN:
        return true;
      // The connection failed before it was accepted: try the next one.
      case EINTR:
      case ECONNABORTED:
      case EPROTO:
      case ENETDOWN:
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case EOPNOTSUPP:
      case ENETUNREACH:
        continue;
      default:  // EMFILE, ENFILE, ENOBUFS, ENOMEM: no room for now
        return false;
    }
  }
  return true;
}

std::string HttpEndpoint::Respond(absl::string_view method,
                                  absl::string_view target) const {
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    return ErrorResponse("405 Method Not Allowed", false,
                         "Allow: GET, HEAD\r\n");
  }
  absl::string_view path = target;
  if (path.front() != '/') {
    // The absolute form, "http://host:port/path", which a proxy sends.
    const size_t scheme_end = path.find("://");
    if (scheme_end == absl::string_view::npos ||
        !(absl::EqualsIgnoreCase(path.substr(0, scheme_end), "http") ||
          absl::EqualsIgnoreCase(path.substr(0, scheme_end), "https"))) {
      return ErrorResponse("400 Bad Request", head);
    }
    const size_t slash = path.find('/', scheme_end + 3);
    path = slash == absl::string_view::npos ? "/" : path.substr(slash);
  }
  path = path.substr(0, path.find('?'));
  for (const HttpResource& resource : resources_) {
    if (resource.path != path) continue;
    std::string body;
    try {
      body = resource.body();
    } catch (...) {
      return ErrorResponse("500 Internal Server Error", head);
    }
    return Response("200 OK", resource.content_type, body, head);
  }
  return ErrorResponse("404 Not Found", head);
}

}  // namespace hardneg

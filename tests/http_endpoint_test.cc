// HttpEndpoint over loopback TCP, as an operator's scraper and a hostile
// client see it: GET and HEAD of its resources, 404/405/400/431/408 for
// everything else, each connection closed after one response, and bounded
// connections that neither a slow client, a flood of connections, nor a
// client that vanishes mid-reply can stop or kill. Every test ends by
// checking that the endpoint still serves.
#include "server/http_endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "loopback_socket.h"

namespace hardneg {
namespace {

constexpr char kMetricsType[] = "text/plain; version=0.0.4; charset=utf-8";

// A blocking client connection to 127.0.0.1:<port> (receives time out
// after 30 s).
class Client : public LoopbackSocket {
 public:
  explicit Client(int port) : LoopbackSocket(port) {}

  void CloseWrite() { ::shutdown(fd(), SHUT_WR); }

  // Up to `n` bytes, fewer when the server closes first.
  std::string Read(size_t n) {
    std::string bytes(n, '\0');
    size_t have = 0;
    while (have < n) {
      const ssize_t got = ::recv(fd(), bytes.data() + have, n - have, 0);
      if (got <= 0) break;
      have += static_cast<size_t>(got);
    }
    bytes.resize(have);
    return bytes;
  }

  // Everything until the server closes; `*closed` says whether it did
  // (false: a timeout, or a reset, which sets `*reset` when given).
  std::string ReadAll(bool* closed, bool* reset = nullptr) {
    std::string bytes;
    char buffer[65536];
    ssize_t n = 0;
    while ((n = ::recv(fd(), buffer, sizeof(buffer), 0)) > 0) {
      bytes.append(buffer, static_cast<size_t>(n));
    }
    *closed = n == 0;
    if (reset != nullptr) *reset = n < 0 && errno == ECONNRESET;
    return bytes;
  }

  using LoopbackSocket::ReadAll;
};

struct HttpReply {
  int status = 0;                              // 0: no parsable status line
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  bool closed = false;  // the server closed the connection
  std::string raw;
};

HttpReply ParseReply(std::string raw, bool closed) {
  HttpReply reply;
  reply.closed = closed;
  reply.raw = std::move(raw);
  const size_t head_end = reply.raw.find("\r\n\r\n");
  if (head_end == std::string::npos) return reply;
  const std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(reply.raw).substr(0, head_end), "\r\n");
  const std::vector<absl::string_view> status = absl::StrSplit(lines[0], ' ');
  if (status.size() < 3 || status[0] != "HTTP/1.1" ||
      !absl::SimpleAtoi(status[1], &reply.status)) {
    return reply;
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) continue;
    reply.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        absl::StrCat(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  reply.body = reply.raw.substr(head_end + 4);
  return reply;
}

// Sends `request` on a new connection (leaving it open for writing) and
// reads the reply until the server closes.
HttpReply Exchange(int port, absl::string_view request) {
  Client client(port);
  if (!client.connected() || !client.Send(request)) return {};
  bool closed = false;
  std::string raw = client.ReadAll(&closed);
  return ParseReply(std::move(raw), closed);
}

HttpReply Get(int port, const std::string& target) {
  return Exchange(port, "GET " + target + " HTTP/1.1\r\nHost: test\r\n\r\n");
}

// A 404 or 405 that also says how the request was read: a small text body
// whose Content-Length is right, and a closed connection.
::testing::AssertionResult IsError(const HttpReply& reply, int status) {
  auto header = [&](const std::string& name) {
    auto it = reply.headers.find(name);
    return it == reply.headers.end() ? std::string("(none)") : it->second;
  };
  if (reply.status != status || !reply.closed ||
      header("content-length") != std::to_string(reply.body.size()) ||
      reply.body.size() > 100 || header("connection") != "close") {
    return ::testing::AssertionFailure()
           << "expected " << status << " and a closed connection, got "
           << (reply.closed ? "closed " : "open ") << absl::CEscape(reply.raw);
  }
  return ::testing::AssertionSuccess();
}

class HttpEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({}); }

  void Start(const HttpEndpointOptions& options) {
    endpoint_.reset();
    std::vector<HttpResource> resources;
    resources.push_back({"/metrics", kMetricsType, [this] {
                           return absl::StrCat("scrape ", ++scrapes_, "\n");
                         }});
    resources.push_back({"/big", "application/octet-stream",
                         [] { return std::string(kBigBody, 'b'); }});
    resources.push_back({"/throws", "text/plain", []() -> std::string {
                           throw std::runtime_error("collect failed");
                         }});
    absl::StatusOr<std::unique_ptr<HttpEndpoint>> endpoint =
        HttpEndpoint::Start("127.0.0.1", 0, std::move(resources), options);
    ASSERT_TRUE(endpoint.ok()) << endpoint.status();
    endpoint_ = *std::move(endpoint);
    ASSERT_GT(endpoint_->port(), 0);
  }

  int port() const { return endpoint_->port(); }

  // A scrape works: 200 with the next body.
  void ExpectServes() {
    const HttpReply reply = Get(port(), "/metrics");
    EXPECT_EQ(reply.status, 200) << absl::CEscape(reply.raw);
    EXPECT_EQ(reply.body.rfind("scrape ", 0), 0u) << reply.body;
    EXPECT_TRUE(reply.closed);
  }

  // Larger than the loopback socket buffers, so that a client that stops
  // reading leaves the server mid-reply.
  static constexpr size_t kBigBody = 16 << 20;

  std::atomic<int> scrapes_{0};
  std::unique_ptr<HttpEndpoint> endpoint_;
};

TEST_F(HttpEndpointTest, GetServesTheResourceAndCloses) {
  HttpReply reply = Get(port(), "/metrics");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "scrape 1\n");
  EXPECT_EQ(reply.headers["content-type"], kMetricsType);
  EXPECT_EQ(reply.headers["content-length"], "9");
  EXPECT_EQ(reply.headers["connection"], "close");
  EXPECT_EQ(reply.headers["date"].size(), 29u) << reply.headers["date"];
  EXPECT_TRUE(reply.closed);

  // HTTP/1.0 without Host, a query string, the absolute form, bare LFs.
  for (const std::string& request : std::vector<std::string>{
           "GET /metrics HTTP/1.0\r\n\r\n",
           "GET /metrics?name[]=x&y HTTP/1.1\r\nHost: a\r\n\r\n",
           "GET /metrics? HTTP/1.1\r\nHost: a\r\n\r\n",
           "GET http://127.0.0.1:9464/metrics HTTP/1.1\r\nHost: a\r\n\r\n",
           "GET /metrics HTTP/1.1\nHost: a\nAccept: */*\n\n",
           std::string("GET /metrics HTTP/1.1\r\nhOsT: a\r\nX-Empty:\r\n") +
               "X-Utf8: caf\xc3\xa9\r\n\r\n",
       }) {
    reply = Exchange(port(), request);
    EXPECT_EQ(reply.status, 200) << absl::CEscape(request);
    EXPECT_EQ(reply.body.rfind("scrape ", 0), 0u) << reply.body;
    EXPECT_TRUE(reply.closed);
  }
  // A body sent with a GET is not read as another request.
  reply = Exchange(port(),
                   "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 24\r\n"
                   "\r\nGET /throws HTTP/1.1\r\n\r\n");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body.rfind("scrape ", 0), 0u);
}

TEST_F(HttpEndpointTest, HeadHasTheHeadersOfGetAndNoBody) {
  const HttpReply reply =
      Exchange(port(), "HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.headers.at("content-type"), kMetricsType);
  EXPECT_EQ(reply.headers.at("content-length"), "9");  // "scrape 1\n"
  EXPECT_EQ(reply.body, "");
  EXPECT_TRUE(reply.closed);
  const HttpReply missing =
      Exchange(port(), "HEAD /nothing HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body, "");
  ExpectServes();
}

TEST_F(HttpEndpointTest, OtherPathsAre404) {
  for (const std::string& path : std::vector<std::string>{
           "/", "/healthz", "/metrics/x", "/metrics/", "/Metrics", "/metricsx",
           "/%6detrics", "/../etc/passwd", "/metrics#x", "//metrics",
           "/" + std::string(5000, 'a'), "http://a/", "https://a"}) {
    EXPECT_TRUE(IsError(Get(port(), path), 404)) << path;
  }
  ExpectServes();
}

TEST_F(HttpEndpointTest, OtherMethodsAre405WithAllow) {
  for (const std::string& request : std::vector<std::string>{
           std::string("POST /metrics HTTP/1.1\r\nHost: a\r\n") +
               "Content-Length: 5\r\n\r\nhello",
           "PUT /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
           "DELETE /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
           "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
           "get /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
           "BREW /nothing HTTP/1.1\r\nHost: a\r\n\r\n",
       }) {
    const HttpReply reply = Exchange(port(), request);
    EXPECT_TRUE(IsError(reply, 405)) << absl::CEscape(request);
    EXPECT_EQ(reply.headers.count("allow") ? reply.headers.at("allow") : "",
              "GET, HEAD");
  }
  ExpectServes();
}

// Each is answered as soon as it is received: the client neither closes
// its side nor waits for a timeout (which would be a 408).
TEST_F(HttpEndpointTest, MalformedRequestsAre400AndClose) {
  using namespace std::string_literals;  // NOLINT(build/namespaces)
  for (const std::string& request : {
           "junk\r\n\r\n"s,
           "GET /metrics\r\n\r\n"s,
           "GET /metrics HTTP/1.1 extra\r\nHost: a\r\n\r\n"s,
           "GET  /metrics HTTP/1.1\r\nHost: a\r\n\r\n"s,
           "GET /metrics HTTP/2.0\r\nHost: a\r\n\r\n"s,
           "GET /metrics http/1.1\r\nHost: a\r\n\r\n"s,
           "GET /metrics HTTP/1.\r\nHost: a\r\n\r\n"s,
           "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"s,
           "\r\n\r\n"s,
           "GET /met\0rics HTTP/1.1\r\nHost: a\r\n\r\n"s,
           "GET /metrics\rX HTTP/1.1\r\nHost: a\r\n\r\n"s,
           "GET /m\xc3\xa9trics HTTP/1.1\r\nHost: a\r\n\r\n"s,
           "GET /metrics HTTP/1.1\r\n\r\n"s,  // HTTP/1.1 needs a Host
           "GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"s,
           "GET /metrics HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n"s,
           "GET /metrics HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n"s,
           "GET /metrics HTTP/1.1\r\nHost: a\r\n: y\r\n\r\n"s,
           "GET /metrics HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n"s,
           "GET /metrics HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"s,
           "GET /metrics HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"s,
           "GET ftp://a/metrics HTTP/1.1\r\nHost: a\r\n\r\n"s,
           "GET metrics HTTP/1.1\r\nHost: a\r\n\r\n"s,
           // No line end at all: bytes no request line may hold.
           "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s,  // a TLS hello
           "\x00\xff\x7f\x80\x01\x02\x03\x04"s,
           "GET /metrics\x7f"s,
           "GET /metrics HTTP/1.1\r\nHost: a\r\nX: \x00"s,
       }) {
    EXPECT_TRUE(IsError(Exchange(port(), request), 400))
        << absl::CEscape(request);
  }
  ExpectServes();
}

TEST_F(HttpEndpointTest, AHeadCutShortByTheClientIs400) {
  {
    Client client(port());
    ASSERT_TRUE(client.Send("GET /metrics HTTP/1.1\r\nHost: a\r\n"));
    client.CloseWrite();
    bool closed = false;
    std::string raw = client.ReadAll(&closed);
    EXPECT_TRUE(IsError(ParseReply(std::move(raw), closed), 400));
  }
  {
    // Nothing sent at all: closed without an answer.
    Client client(port());
    client.CloseWrite();
    bool closed = false;
    EXPECT_EQ(client.ReadAll(&closed), "");
    EXPECT_TRUE(closed);
  }
  ExpectServes();
}

TEST_F(HttpEndpointTest, HeadsOverEightKibibytesAre431) {
  const std::string big_header = "GET /metrics HTTP/1.1\r\nHost: a\r\nX: " +
                                 std::string(size_t{100} << 10, 'x') +
                                 "\r\n\r\n";
  const std::string big_line = "GET /" + std::string(size_t{100} << 10, 'a') +
                               " HTTP/1.1\r\nHost: a\r\n\r\n";
  std::string many_headers = "GET /metrics HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 2000; ++i) {
    absl::StrAppend(&many_headers, "X", i, ": y\r\n");
  }
  many_headers += "\r\n";
  for (const std::string& request : {big_header, big_line, many_headers}) {
    EXPECT_TRUE(IsError(Exchange(port(), request), 431));
  }
  // Just under the limit is fine.
  const std::string head = "GET /metrics HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n";
  EXPECT_EQ(
      Exchange(port(), "GET /metrics HTTP/1.1\r\nHost: a\r\nX: " +
                           std::string((size_t{8} << 10) - head.size(), 'x') +
                           "\r\n\r\n")
          .status,
      200);
  ExpectServes();
}

TEST_F(HttpEndpointTest, HalfRequestsHeldOpenDoNotBlockAScrape) {
  std::vector<std::unique_ptr<Client>> slow;
  for (int i = 0; i < 20; ++i) {
    slow.push_back(std::make_unique<Client>(port()));
    ASSERT_TRUE(slow.back()->connected());
    // Half of a head, or nothing at all.
    if (i % 2 == 0) {
      ASSERT_TRUE(slow.back()->Send("GET /metrics HTTP/1.1\r\nHost: a\r\nX-"));
    }
  }
  ExpectServes();
  ExpectServes();
  slow.clear();
  ExpectServes();
}

TEST_F(HttpEndpointTest, SurvivesTwoHundredConnectionsAtOnce) {
  // 200 connections, more than the 64 served at once, all opened first.
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 200; ++i) {
    clients.push_back(std::make_unique<Client>(port()));
    ASSERT_TRUE(clients.back()->connected()) << i;
  }
  // Each asks; those beyond the cap wait in the backlog until earlier ones
  // are read and closed.
  for (auto& client : clients) {
    ASSERT_TRUE(client->Send("GET /metrics HTTP/1.0\r\n\r\n"));
  }
  for (size_t i = 0; i < clients.size(); ++i) {
    bool closed = false;
    std::string raw = clients[i]->ReadAll(&closed);
    const HttpReply reply = ParseReply(std::move(raw), closed);
    EXPECT_EQ(reply.status, 200) << i;
    EXPECT_TRUE(reply.closed) << i;
    clients[i].reset();
  }
  // 200 more that connect and leave without a word.
  for (int i = 0; i < 200; ++i) {
    clients.push_back(std::make_unique<Client>(port()));
  }
  clients.clear();
  ExpectServes();
}

TEST_F(HttpEndpointTest, AClientGoneMidReplyDoesNotKillTheProcess) {
  // A reset; a close over unread data (also a reset); and a reset after the
  // client's FIN, which makes the server's next send fail with EPIPE: that
  // one raises SIGPIPE, and kills this process, unless sends say
  // MSG_NOSIGNAL.
  enum class Gone { kReset, kClose, kHalfCloseThenReset };
  for (Gone gone : {Gone::kReset, Gone::kClose, Gone::kHalfCloseThenReset}) {
    Client client(port());
    ASSERT_TRUE(client.Send("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"));
    if (gone == Gone::kHalfCloseThenReset) client.CloseWrite();
    const std::string start = client.Read(1000);
    ASSERT_EQ(start.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << start;
    if (gone != Gone::kClose) client.Reset();
  }
  ExpectServes();
  // A whole big reply still arrives intact.
  const HttpReply reply = Get(port(), "/big");
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body.size(), kBigBody);
  EXPECT_EQ(reply.headers.at("content-length"), std::to_string(kBigBody));
}

// The request's body (64 KiB here) is never read as part of the request.
// Closing a socket over unread input would reset the connection and drop
// the part of the reply still queued, so the server drains it instead.
TEST_F(HttpEndpointTest, AnUnreadRequestBodyDoesNotCutTheReply) {
  Client client(port());
  ASSERT_TRUE(client.Send(
      "GET /big HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n" +
      std::string(65536, 'q')));
  bool closed = false;
  std::string raw = client.ReadAll(&closed);
  const HttpReply reply = ParseReply(std::move(raw), closed);
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body.size(), kBigBody);
  EXPECT_TRUE(reply.closed);
  ExpectServes();
}

TEST_F(HttpEndpointTest, ABodyThatThrowsIs500) {
  EXPECT_TRUE(IsError(Get(port(), "/throws"), 500));
  ExpectServes();
}

// With one connection allowed, a client that holds half a head keeps the
// next one waiting in the backlog until its io_timeout: it gets a 408, and
// the next is served.
TEST_F(HttpEndpointTest, ASlowHeadGets408AndFreesItsSlot) {
  HttpEndpointOptions options;
  options.max_connections = 1;
  options.io_timeout = absl::Milliseconds(200);
  Start(options);
  Client slow(port());
  ASSERT_TRUE(slow.Send("GET /metrics HTTP/1.1\r\n"));
  ExpectServes();
  bool closed = false;
  std::string raw = slow.ReadAll(&closed);
  EXPECT_TRUE(IsError(ParseReply(std::move(raw), closed), 408));
}

// At the cap, the connection that has waited longest for its head gives
// way to a new one (after a second), long before its io_timeout (an hour
// here) would free its slot.
TEST_F(HttpEndpointTest, AtTheCapTheOldestIdleConnectionGivesWay) {
  HttpEndpointOptions options;
  options.max_connections = 2;
  options.io_timeout = absl::Hours(1);
  Start(options);
  Client oldest(port());
  ASSERT_TRUE(oldest.Send("GET /metrics HTTP/1.1\r\n"));
  Client newer(port());
  ASSERT_TRUE(newer.Send("GET /metrics HTTP/1.1\r\n"));
  ExpectServes();
  bool closed = false;
  EXPECT_EQ(oldest.ReadAll(&closed), "");  // closed without an answer
  EXPECT_TRUE(closed);
  // `newer` took `oldest`'s place in line, and is still open: finishing its
  // head gets it served.
  ASSERT_TRUE(newer.Send("Host: a\r\n\r\n"));
  std::string raw = newer.ReadAll(&closed);
  EXPECT_EQ(ParseReply(std::move(raw), closed).status, 200);
}

TEST_F(HttpEndpointTest, StopsWithConnectionsOpen) {
  Client idle(port());
  Client half(port());
  ASSERT_TRUE(half.Send("GET /metrics HTTP/1.1\r\n"));
  Client reading(port());
  ASSERT_TRUE(reading.Send("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_EQ(reading.Read(15), "HTTP/1.1 200 OK");
  endpoint_.reset();
  // Every connection ends (EOF or reset) rather than hanging.
  for (Client* client : {&idle, &half, &reading}) {
    bool closed = false;
    bool reset = false;
    client->ReadAll(&closed, &reset);
    EXPECT_TRUE(closed || reset);
  }
}

TEST(HttpEndpointStartTest, RejectsBadArguments) {
  auto resource = [](std::string path) {
    return HttpResource{std::move(path), "text/plain", [] { return "x"; }};
  };
  for (int port : {-1, 65536}) {
    EXPECT_EQ(HttpEndpoint::Start("127.0.0.1", port, {}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << port;
  }
  for (const std::vector<HttpResource>& resources :
       {std::vector<HttpResource>{resource("metrics")},
        std::vector<HttpResource>{resource("/a?b")},
        std::vector<HttpResource>{resource("")},
        std::vector<HttpResource>{resource("/a b")},
        std::vector<HttpResource>{resource("/a"), resource("/a")},
        std::vector<HttpResource>{HttpResource{"/a", "text/plain", nullptr}}}) {
    EXPECT_EQ(HttpEndpoint::Start("127.0.0.1", 0, resources).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  HttpEndpointOptions options;
  options.max_connections = 0;
  EXPECT_EQ(HttpEndpoint::Start("127.0.0.1", 0, {}, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HttpEndpointStartTest, AnAddressThatCannotBeBoundIsUnavailable) {
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> first =
      HttpEndpoint::Start("127.0.0.1", 0, {});
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<HttpEndpoint>> second =
      HttpEndpoint::Start("127.0.0.1", (*first)->port(), {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(
                absl::StrCat("127.0.0.1:", (*first)->port())),
            absl::string_view::npos)
      << second.status();
  // Not an address of this machine (TEST-NET-1).
  EXPECT_EQ(HttpEndpoint::Start("192.0.2.1", 0, {}).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(HttpEndpointStartTest, ServesOnIpv6LoopbackWithOrWithoutBrackets) {
  const int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 loopback{};
  loopback.sin6_family = AF_INET6;
  loopback.sin6_addr = in6addr_loopback;
  const bool have_ipv6 =
      probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&loopback),
                           sizeof(loopback)) == 0;
  if (probe >= 0) ::close(probe);
  if (!have_ipv6) GTEST_SKIP() << "no IPv6 loopback here";

  for (const char* host : {"::1", "[::1]"}) {
    std::vector<HttpResource> resources;
    resources.push_back({"/metrics", "text/plain", [] { return "v6\n"; }});
    absl::StatusOr<std::unique_ptr<HttpEndpoint>> endpoint =
        HttpEndpoint::Start(host, 0, std::move(resources));
    ASSERT_TRUE(endpoint.ok()) << host << ": " << endpoint.status();
    const int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
    sockaddr_in6 address = loopback;
    address.sin6_port = htons(static_cast<uint16_t>((*endpoint)->port()));
    ASSERT_EQ(
        ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
        0);
    const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
    ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    std::string reply;
    char buffer[1024];
    ssize_t n = 0;
    while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) {
      reply.append(buffer, static_cast<size_t>(n));
    }
    ::close(fd);
    EXPECT_EQ(ParseReply(reply, true).body, "v6\n") << host;
  }
}

}  // namespace
}  // namespace hardneg

// TLS, mutual TLS and bearer tokens on a real server over loopback, through
// the C++ client; and the token file's rules.
#include "server/auth.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "client/client.h"
#include "format/checkpoint.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "versions/index_manager.h"

namespace hardneg {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kMineToken[] = "mine-token-0123456789";
constexpr char kPublishToken[] = "publish-token-0123456789";
constexpr char kBothToken[] = "both-token-0123456789";
constexpr uint32_t kDim = 8;

std::string TestData(const std::string& name) {
  std::ifstream in(std::string(HARDNEG_TLS_TESTDATA) + "/" + name);
  std::ostringstream text;
  text << in.rdbuf();
  EXPECT_FALSE(text.str().empty()) << name;
  return text.str();
}

std::string TestPath(const std::string& name) {
  return std::string(HARDNEG_TLS_TESTDATA) + "/" + name;
}

TEST(TokenAuthorizerTest, ChecksTokensAndRoles) {
  absl::StatusOr<TokenAuthorizer> auth = TokenAuthorizer::FromText(
      absl::StrCat("# operators' tokens\n\n", kMineToken, " mine\n",
                   kPublishToken, "\tpublish\n", kBothToken, " mine,publish\n"),
      "tokens");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(auth->size(), 3u);
  auto bearer = [](const char* token) {
    return absl::StrCat("Bearer ", token);
  };
  EXPECT_TRUE(auth->Check(bearer(kMineToken), Role::kMine).ok());
  EXPECT_TRUE(auth->Check(bearer(kBothToken), Role::kPublish).ok());
  EXPECT_TRUE(auth->Check(bearer(kBothToken), Role::kMine).ok());
  EXPECT_EQ(auth->Check(bearer(kMineToken), Role::kPublish).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth->Check(bearer(kPublishToken), Role::kMine).code(),
            absl::StatusCode::kPermissionDenied);
  for (const std::string& bad :
       {std::string(), std::string(kMineToken), std::string("Bearer "),
        std::string("Basic ") + kMineToken, bearer(kMineToken) + "x",
        std::string("Bearer mine-token-012345678"), bearer("x")}) {
    const absl::Status status = auth->Check(bad, Role::kMine);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_THAT(status.message(), Not(HasSubstr(kMineToken)));
  }
}

TEST(TokenAuthorizerTest, RejectsMalformedFilesNamingTheLineNotTheToken) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", "lists no token"},
      {"# only comments\n", "lists no token"},
      {absl::StrCat(kMineToken, "\n"), "line 1: not a token and its roles"},
      {absl::StrCat("\n", kMineToken, " admin\n"),
       "line 2: unknown role \"admin\""},
      {"short mine\n", "shorter than 16"},
      {absl::StrCat(kMineToken, " mine\n", kMineToken, " publish\n"),
       "line 2: a token listed twice"},
  };
  for (const Case& c : cases) {
    const absl::Status status = TokenAuthorizer::FromText(c.text, "f").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(status.message(), HasSubstr(c.message));
    EXPECT_THAT(status.message(), Not(HasSubstr(kMineToken)));
  }
  EXPECT_EQ(TokenAuthorizer::FromFile("/nonexistent/tokens").status().code(),
            absl::StatusCode::kNotFound);
}

// A TLS server with tokens (and, when `mutual`, client certificates).
class SecureServer {
 public:
  explicit SecureServer(bool mutual) {
    root_ = absl::StrCat(::testing::TempDir(), "/auth_test_", ::getpid(), "_",
                         mutual ? "mtls" : "tls");
    std::filesystem::remove_all(root_);
    std::vector<float> embeddings(100 * kDim);
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (float& v : embeddings) v = normal(rng);
    std::vector<int64_t> ids(100);
    for (int i = 0; i < 100; ++i) ids[i] = i;
    CheckpointManifest manifest;
    manifest.name = "v1";
    manifest.step = 1;
    manifest.dim = kDim;
    EXPECT_TRUE(WriteCheckpoint(root_, manifest, embeddings, ids, {}).ok());
    IndexManagerOptions manager_options;
    manager_options.checkpoints_dir = root_;
    manager_ = std::make_unique<IndexManager>(manager_options);
    EXPECT_TRUE(manager_->LoadNewest().ok());

    grpc::SslServerCredentialsOptions tls;
    tls.pem_key_cert_pairs.push_back(
        {TestData("server.key"), TestData("server.pem")});
    if (mutual) {
      tls.pem_root_certs = TestData("ca.pem");
      tls.client_certificate_request =
          GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    ServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.threads = 1;
    options.credentials = grpc::SslServerCredentials(tls);
    absl::StatusOr<TokenAuthorizer> auth = TokenAuthorizer::FromText(
        absl::StrCat(kMineToken, " mine\n", kPublishToken, " publish\n"),
        "tokens");
    EXPECT_TRUE(auth.ok());
    options.service.auth =
        std::make_shared<const TokenAuthorizer>(*std::move(auth));
    absl::StatusOr<std::unique_ptr<HardnegServer>> server =
        HardnegServer::Start(options, manager_.get());
    EXPECT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  ~SecureServer() {
    server_.reset();
    manager_.reset();
    std::filesystem::remove_all(root_);
  }

  // A client for `127.0.0.1:<port>` (the certificate names that address too;
  // "localhost" would go through c-ares, whose resolver leaks a few bytes
  // under LeakSanitizer) with the given TLS files and token.
  std::unique_ptr<client::Client> Connect(const std::string& ca,
                                          const std::string& cert,
                                          const std::string& key,
                                          const std::string& token) const {
    client::ClientOptions options;
    options.rpc_timeout = absl::Seconds(20);
    options.publish_timeout = absl::Seconds(20);
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        client::TlsCredentialsFromFiles(ca.empty() ? "" : TestPath(ca),
                                        cert.empty() ? "" : TestPath(cert),
                                        key.empty() ? "" : TestPath(key));
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    options.credentials = *credentials;
    options.bearer_token = token;
    absl::StatusOr<std::unique_ptr<client::Client>> client =
        client::Client::Connect(absl::StrCat("127.0.0.1:", server_->port()),
                                options);
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  int port() const { return server_->port(); }

 private:
  std::string root_;
  std::unique_ptr<IndexManager> manager_;
  std::unique_ptr<HardnegServer> server_;
};

std::vector<client::Query> OneQuery() {
  client::Query query;
  query.embedding.assign(kDim, 0.5f);
  return {query};
}

absl::StatusCode Publish(client::Client& client) {
  std::vector<int64_t> ids = {1000, 1001};
  std::vector<float> embeddings(2 * kDim, 0.25f);
  client::PublishSpec spec;
  spec.name = "v2";
  spec.step = 2;
  spec.dim = kDim;
  spec.ids = ids;
  spec.embeddings = embeddings;
  return client.Publish(spec).status().code();
}

TEST(TlsTest, TokensGateEachRoleAndHealthStaysOpen) {
  SecureServer server(/*mutual=*/false);
  auto miner = server.Connect("ca.pem", "", "", kMineToken);
  absl::StatusOr<client::MineReply> mined =
      miner->MineOnce(OneQuery(), client::MiningOptions());
  ASSERT_TRUE(mined.ok()) << mined.status();
  EXPECT_EQ(mined->results.size(), 1u);
  EXPECT_TRUE(miner->GetIndexInfo().ok());
  EXPECT_EQ(Publish(*miner), absl::StatusCode::kPermissionDenied);

  auto publisher = server.Connect("ca.pem", "", "", kPublishToken);
  EXPECT_EQ(
      publisher->MineOnce(OneQuery(), client::MiningOptions()).status().code(),
      absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Publish(*publisher), absl::StatusCode::kOk);

  for (const std::string& token :
       {std::string(), std::string("not-a-token-at-all")}) {
    auto anonymous = server.Connect("ca.pem", "", "", token);
    EXPECT_EQ(anonymous->GetIndexInfo().status().code(),
              absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(Publish(*anonymous), absl::StatusCode::kUnauthenticated);
    auto stream = anonymous->OpenStream();
    stream->Send(1, OneQuery(), client::MiningOptions()).IgnoreError();
    EXPECT_FALSE(stream->Receive().ok());
    EXPECT_EQ(stream->CloseAndFinish().code(),
              absl::StatusCode::kUnauthenticated);
  }

  // Health needs no token, for probes.
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = TestData("ca.pem");
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server.port()), grpc::SslCredentials(tls)));
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(health->Check(&context, {}, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(TlsTest, PlaintextOrAnUntrustedServerFailsTheHandshake) {
  SecureServer server(/*mutual=*/false);
  client::ClientOptions plain;
  plain.rpc_timeout = absl::Seconds(5);
  plain.bearer_token = kMineToken;
  auto plaintext = *client::Client::Connect(
      absl::StrCat("127.0.0.1:", server.port()), plain);
  EXPECT_EQ(plaintext->GetIndexInfo().status().code(),
            absl::StatusCode::kUnavailable);
  auto wrong_ca = server.Connect("other-ca.pem", "", "", kMineToken);
  EXPECT_EQ(wrong_ca->GetIndexInfo().status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(TlsTest, MutualTlsNeedsAClientCertificate) {
  SecureServer server(/*mutual=*/true);
  auto without = server.Connect("ca.pem", "", "", kMineToken);
  EXPECT_EQ(without->GetIndexInfo().status().code(),
            absl::StatusCode::kUnavailable);
  auto with = server.Connect("ca.pem", "client.pem", "client.key", kMineToken);
  absl::StatusOr<client::IndexInfo> info = with->GetIndexInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version.name, "v1");
}

}  // namespace
}  // namespace hardneg

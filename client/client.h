// hardneg::Client: a C++ client of the hardneg.v1.Miner gRPC service, for
// trainers. It speaks in plain structs (no protos in this header) and returns
// absl::Status / absl::StatusOr: a failed RPC becomes an absl::Status with the
// same code and message as the grpc::Status.
//
// Thread safety:
//   - A Client is thread-safe: any number of threads may call MineOnce,
//     GetIndexInfo, Publish and OpenStream on one Client at the same time (it
//     holds one gRPC channel; calls share its connections).
//   - A MineStream is not thread-safe as a whole, but it is made for one
//     sender thread and one receiver thread: at any moment at most one thread
//     may be in Send/CloseSend and at most one (other) thread in Receive.
//     Cancel may be called from any thread at any time. CloseAndFinish and
//     the destructor must not run concurrently with any other call on the
//     stream (join the sender and receiver threads first).
//   - A MineStream must not outlive the Client that opened it.
//
// A trainer's typical loop (two threads, pipelined):
//
//   auto client = hardneg::Client::Connect("miner:50051", {});
//   auto stream = (*client)->OpenStream();
//   sender:   for (...) stream->Send(step, queries, options);
//             stream->CloseSend();
//   receiver: for (...) { auto reply = stream->Receive(); ... }
//   after joining both: stream->CloseAndFinish();
#ifndef HARDNEG_CLIENT_CLIENT_H_
#define HARDNEG_CLIENT_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
// Installed as include/hardneg/client.h next to include/hardneg/mining/
// options.h (package/CMakeLists.txt): a quoted include is looked up next to
// this file first, so this line needs no include path beyond include/.
#include "mining/options.h"

namespace grpc {
class Channel;
class ChannelCredentials;
class ClientContext;
}  // namespace grpc

namespace hardneg::client {

// One query of a mining request. See README.md, "Mining semantics".
struct Query {
  std::vector<float> embedding;  // exactly the index's dim, all finite
  // Ids that match this query: never returned, and scored to find p.
  std::vector<int64_t> positive_ids;
  // Scores of positives computed by the caller; they count towards p.
  std::vector<float> positive_scores;
  // Candidates with this stored label are excluded (0 is a label).
  std::optional<int64_t> label;
  // The query's own id, excluded.
  std::optional<int64_t> query_id;
};

using Sampling = ::hardneg::Sampling;

// The mining options of a request: the domain's own struct
// (mining/options.h, each field documented there and in the proto; 10
// negatives by default). An absent optional is "unset"; a value of 0 is a
// real bound.
using MiningOptions = ::hardneg::MiningOptions;

struct Negative {
  int64_t id = 0;
  float score = 0;    // inner product, or squared L2 distance
  int64_t label = 0;  // the stored label (0 when the index has none)
  uint32_t rank = 0;  // 0-based among the survivors: range_min <= rank
  std::vector<float> embedding;  // only with return_embeddings
};

struct QueryResult {
  std::vector<Negative> negatives;  // best first
  uint32_t shortfall = 0;  // how many fewer than num_negatives survived
  std::optional<float> positive_score;  // p; absent without positives
};

// The index version that answered (a name and a sequence, not the
// server's index itself): `sequence` rises with every swap.
struct ServedVersion {
  std::string name;
  uint64_t sequence = 0;
};
// ServedVersion's former name, which read as the server's own IndexVersion;
// kept so that code written against it still compiles.
using IndexVersion [[deprecated("renamed ServedVersion")]] = ServedVersion;

// The answer to one request: one result per query, in query order.
struct MineReply {
  uint64_t request_id = 0;
  std::vector<QueryResult> results;
  ServedVersion index;
  // From a router, for a request with allow_partial: the shards (their
  // targets) whose candidates the answer lacks. Empty: the whole corpus.
  std::vector<std::string> missing_shards;
};

struct IndexInfo {
  ServedVersion version;
  uint64_t size = 0;  // number of candidates
  uint32_t dim = 0;
  std::string metric;       // "inner_product" or "l2"
  std::string index_type;   // e.g. a FAISS factory string
  std::string scan;         // the Flat first pass: "int8", "bf16" or "f32"
  std::string build_state;  // e.g. "serving", "building"
  uint64_t step = 0;        // the checkpoint's training step
  bool has_labels = false;
  double age_seconds = 0;     // since the served version went live
  std::string building;       // version being built now, if any
  double build_progress = 0;  // of that build, 0..1
  std::string last_rejected;  // "<source>: <reason>" of the last rejection
  uint64_t rejected_total = 0;
};

// A new index version for Publish. Full (no base_version): ids, labels and
// embeddings are the whole corpus. Incremental (base_version names the
// served version): ids carry the upserts (new or changed ids, replacing
// changed rows in place) and delete_ids the ids to remove. The spans are
// views: the data must stay alive during the call.
struct PublishSpec {
  std::string name;  // the new version's name
  uint64_t step = 0;
  uint32_t dim = 0;
  std::string metric;  // "inner_product" or "l2"; empty: the served one's
  std::optional<std::string> base_version;
  absl::Span<const int64_t> ids;
  absl::Span<const int64_t> labels;    // empty, or one per id
  absl::Span<const float> embeddings;  // ids.size() x dim, row-major
  absl::Span<const int64_t> delete_ids;
  // Rows per PublishChunk; fewer when a chunk would not fit in
  // ClientOptions::max_message_bytes.
  size_t chunk_rows = 4096;
  // Send embeddings as little-endian float32 bytes instead of packed floats.
  bool send_bytes = false;
  // True: return once the new version serves. False: once the server has
  // received and checked the data; the build goes on in the background
  // (the returned sequence is then 0; GetIndexInfo shows when it serves).
  bool wait = true;
};

// How far a Publish is, reported after each chunk is written and then,
// while the server builds the version (spec.wait), a few times a second.
struct PublishProgress {
  uint64_t rows_sent = 0;  // ids and delete_ids sent so far
  uint64_t total_rows = 0;
  uint64_t bytes_sent = 0;  // serialized message bytes
  absl::Duration elapsed;   // since the upload began
  // Every row is sent and the server is building the version: then
  // build_progress is its progress (0..1, never going back), as
  // GetIndexInfo's build_progress says while it names this version.
  bool building = false;
  double build_progress = 0;
};

struct ClientOptions {
  // Largest message sent or received, both ways (gRPC's default is 4 MiB).
  int max_message_bytes = 64 << 20;
  // Queue RPCs while the channel is not ready instead of failing them at
  // once with UNAVAILABLE.
  bool wait_for_ready = false;
  // When set, Connect waits this long for the channel to become ready and
  // fails with UNAVAILABLE otherwise. When unset, Connect does not wait.
  std::optional<absl::Duration> connect_timeout;
  // Deadline of each unary call (MineOnce, GetIndexInfo).
  std::optional<absl::Duration> rpc_timeout;
  // Deadline of a whole Mine stream, from OpenStream.
  std::optional<absl::Duration> stream_timeout;
  // Deadline of a whole Publish call: the upload and, with wait, the build.
  std::optional<absl::Duration> publish_timeout;
  // round_robin spreads calls over every address the target resolves to:
  // "dns:///hardneg-server.ns.svc.cluster.local:50051" (a headless Service
  // of replicas) reaches every ready pod, and the servers'
  // --max_connection_age makes it re-resolve. Empty: gRPC's pick_first.
  std::string load_balancing_policy = "round_robin";
  // nullptr means insecure (plaintext); see TlsCredentialsFromFiles.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Sent with every call as "authorization: Bearer <token>", for servers
  // run with --auth_tokens. Empty: none.
  std::string bearer_token;
};

// TLS credentials for ClientOptions::credentials from PEM files: `ca`, the
// CA bundle that signed the server's certificate (empty: the system's
// roots); `cert` and `key`, a client certificate for mutual TLS (both or
// neither). NOT_FOUND naming an unreadable file; INVALID_ARGUMENT for a
// certificate without its key.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
TlsCredentialsFromFiles(const std::string& ca, const std::string& cert,
                        const std::string& key);

// When `status` came from an in-band MineResponse.error (the request failed
// but its stream stays usable), the failed request's id; otherwise nullopt.
std::optional<uint64_t> FailedRequestId(const absl::Status& status);

class MineStream;

class Client {
 public:
  // Creates a channel to `target` ("host:port", "dns:///host:port", ...).
  // INVALID_ARGUMENT for an empty target; UNAVAILABLE when
  // `options.connect_timeout` is set and the channel is not ready in time.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      const std::string& target, const ClientOptions& options);

  // Wraps an existing channel, e.g. a server's in-process channel in tests.
  // The channel's own arguments (message sizes) apply.
  static std::unique_ptr<Client> FromChannel(
      std::shared_ptr<grpc::Channel> channel, const ClientOptions& options);

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // One unary MineOnce call. On success, one result per query in order. A
  // failed call returns its status (e.g. INVALID_ARGUMENT naming the field
  // and query, UNAVAILABLE, DEADLINE_EXCEEDED).
  absl::StatusOr<MineReply> MineOnce(const std::vector<Query>& queries,
                                     const MiningOptions& options,
                                     uint64_t request_id = 0);

  // The served index's version, size, dim, metric, type and build state.
  absl::StatusOr<IndexInfo> GetIndexInfo();

  // Opens a Mine stream. Never fails here: connection errors surface from
  // Send, Receive and CloseAndFinish.
  std::unique_ptr<MineStream> OpenStream();

  // Streams a new version to the server: a header, then chunks of
  // spec.chunk_rows rows, then the delete_ids. `progress`, when set, is
  // called on this thread after each chunk and, with spec.wait, about four
  // times a second while the server builds (polled with GetIndexInfo). Returns
  // the version that now serves (with spec.wait; otherwise the name and
  // sequence 0). INVALID_ARGUMENT for a spec whose sizes disagree (before any
  // RPC), or the server's: INVALID_ARGUMENT for bad data (naming the chunk and
  // field), FAILED_PRECONDITION for a base_version that is not the served
  // version or a dim/metric change the server does not allow,
  // RESOURCE_EXHAUSTED over the server's memory budget. On any error the
  // served version is unchanged.
  absl::StatusOr<ServedVersion> Publish(
      const PublishSpec& spec,
      const std::function<void(const PublishProgress&)>& progress = nullptr);

 private:
  struct Rpc;  // the channel and the generated stub
  // What polling a publish's build has learnt so far.
  struct BuildPoll {
    bool seen_building = false;  // the server was seen building the version
    bool refused = false;  // GetIndexInfo is not ours to call: stop asking
  };
  // The progress of the server's build of version `name`, from one
  // GetIndexInfo: 1 once it serves after being seen building (a version of
  // the same name served before does not count); nullopt when that fails,
  // the server is busy with another version, or `poll->refused`.
  std::optional<double> BuildProgressOf(const std::string& name,
                                        BuildPoll* poll);
  // wait_for_ready, the deadline `timeout` from now, and the token.
  void Prepare(grpc::ClientContext& context,
               const std::optional<absl::Duration>& timeout) const;
  Client(std::unique_ptr<Rpc> rpc, const ClientOptions& options);

  std::unique_ptr<Rpc> rpc_;
  const ClientOptions options_;
};

// One bidirectional Mine stream: requests go out with Send, replies come
// back from Receive one per request, in order. See the thread-safety
// contract at the top of this file.
class MineStream {
 public:
  MineStream(const MineStream&) = delete;
  MineStream& operator=(const MineStream&) = delete;
  // Cancels the stream if CloseAndFinish was not called.
  ~MineStream();

  // Writes one request; blocks while gRPC flow control pushes back. OK once
  // written (the reply comes from Receive). FAILED_PRECONDITION after
  // CloseSend; ABORTED when the stream is already broken: CloseAndFinish
  // then returns why.
  absl::Status Send(uint64_t request_id, const std::vector<Query>& queries,
                    const MiningOptions& options);

  // Half-closes: tells the server no more requests follow. Idempotent.
  // Call it from the sender thread.
  absl::Status CloseSend();

  // Blocks for the next reply.
  //  - OK: the reply (its request_id is the request's).
  //  - The request failed in-band: that request's code and message, with
  //    FailedRequestId(status) set; the stream stays usable.
  //  - The stream ended (the server finished it, or CloseSend was called and
  //    every reply was read, or it was cancelled): OUT_OF_RANGE, and
  //    FailedRequestId(status) is nullopt. CloseAndFinish then returns the
  //    final status of the RPC.
  absl::StatusOr<MineReply> Receive();

  // Aborts the stream: a blocked Send or Receive returns soon after. Safe
  // from any thread, at any time, any number of times.
  void Cancel();

  // Half-closes if needed, discards replies not yet received, and returns
  // the final status of the RPC (OK when the server finished cleanly,
  // CANCELLED after Cancel). Call once, after the sender and the receiver
  // are done; later calls return the same status.
  absl::Status CloseAndFinish();

 private:
  friend class Client;
  struct Call;  // the ClientContext and the gRPC stream
  explicit MineStream(std::unique_ptr<Call> call);

  std::unique_ptr<Call> call_;
  // Sender side.
  bool send_closed_ = false;
  // Receiver side.
  bool receive_ended_ = false;
  // Set by CloseAndFinish.
  std::optional<absl::Status> final_status_;
};

}  // namespace hardneg::client

namespace hardneg {
// The client's plain structs live in hardneg::client (the server's domain
// types share their names); the entry points are also reachable as
// hardneg::Client and hardneg::MineStream.
using client::Client;
using client::MineStream;
}  // namespace hardneg

#endif  // HARDNEG_CLIENT_CLIENT_H_

// The server side of Miner.Publish: a callback-API read reactor that feeds
// each PublishChunk to a PublishAssembler as it arrives and, once the client
// half-closes, assembles the candidates and installs them with
// IndexManager::Install on a thread of a PublishBuilds, never on a gRPC
// thread (Install blocks for the whole build).
//
// Outcomes: the first message must be a header (INVALID_ARGUMENT
// otherwise); each chunk with ids carries its embeddings either as packed
// floats or as little-endian float32 bytes, not both. Errors come back as
// the RPC status (ToGrpcStatus), and the served version keeps serving. With
// header.wait unset or true the answer is the version that now serves;
// with wait=false it comes once the data is received and valid (name set,
// sequence 0), and the build goes on in the background.
//
// PublishBuilds is thread-safe.
#ifndef HARDNEG_SERVER_PUBLISH_REACTOR_H_
#define HARDNEG_SERVER_PUBLISH_REACTOR_H_

#include <cstddef>
#include <functional>
#include <list>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "hardneg/v1/miner.pb.h"
#include "versions/index_manager.h"

namespace hardneg {

// Owns the threads that assemble and install publishes: each build runs on
// a thread of its own, which may outlive its RPC (wait=false). The
// destructor waits for every build, so destroy it after the gRPC server has
// shut down and before the IndexManager the builds install into.
class PublishBuilds {
 public:
  PublishBuilds() = default;
  ~PublishBuilds();

  PublishBuilds(const PublishBuilds&) = delete;
  PublishBuilds& operator=(const PublishBuilds&) = delete;

  // Runs `build` on a new thread. Joins threads whose build has already
  // returned, so it never waits for a build in progress.
  void Run(std::function<void()> build) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Build {
    std::thread thread;
    bool done = false;  // guarded by mu_
  };

  absl::Mutex mu_;
  std::list<Build> builds_ ABSL_GUARDED_BY(mu_);
};

// The reactor of one Publish call; it deletes itself when the call is done.
// `manager` and `builds` must outlive it (and every build it starts).
// Messages come raw and are parsed here (wire.h): one that does not parse
// fails the call with INVALID_ARGUMENT, and nothing is installed.
grpc::ServerReadReactor<grpc::ByteBuffer>* NewPublishReactor(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response,
    IndexManager* manager, PublishBuilds* builds);

}  // namespace hardneg

#endif  // HARDNEG_SERVER_PUBLISH_REACTOR_H_

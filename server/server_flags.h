// The hardneg-server command line: its flags, read into the options of the
// parts the server wires together. Linked into hardneg-server alone, so
// that no other binary inherits these flags.
//
// ServerConfigFromFlags only reads the flags (absl::GetFlag is thread-safe);
// call it after absl::ParseCommandLine. ServerConfig is a plain value.
#ifndef HARDNEG_SERVER_SERVER_FLAGS_H_
#define HARDNEG_SERVER_SERVER_FLAGS_H_

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/server.h"
#include "versions/index_manager.h"

namespace hardneg {

struct ServerConfig {
  IndexManagerOptions manager;
  // `metrics` is left null: the caller owns the metrics.
  ServerOptions server;
  int metrics_port = -1;  // -1: no metrics
  absl::Duration poll_interval;
  // After SIGTERM, how long calls in flight may finish before the rest
  // are cancelled.
  absl::Duration shutdown_grace = absl::Seconds(10);
};

// Reads the parsed flags. INVALID_ARGUMENT, naming the flag, for a value
// the server cannot use.
absl::StatusOr<ServerConfig> ServerConfigFromFlags();

}  // namespace hardneg

#endif  // HARDNEG_SERVER_SERVER_FLAGS_H_

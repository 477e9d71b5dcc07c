// Runs hardneg-server: loads the index, serves gRPC and /metrics, and
// shuts down in order on SIGTERM or SIGINT.
//
// RunServer is called once, from main's thread; it starts and joins every
// other thread of the server itself.
#ifndef HARDNEG_SERVER_RUN_SERVER_H_
#define HARDNEG_SERVER_RUN_SERVER_H_

#include <signal.h>

#include "server/server_flags.h"

namespace hardneg {

// Serves until one of `signals` (blocked in every thread by the caller,
// before any thread starts) arrives. Returns the process exit code.
int RunServer(const ServerConfig& config, const sigset_t& signals);

}  // namespace hardneg

#endif  // HARDNEG_SERVER_RUN_SERVER_H_

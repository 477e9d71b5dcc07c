// Protos to and from the raw gRPC messages the Miner service handles.
//
// The service takes its methods raw (grpc::ByteBuffer) and parses them
// here, because gRPC reports a message that fails to parse exactly like
// the end of a stream (OnReadDone(false)), and answers a unary call whose
// request fails to parse with UNIMPLEMENTED and no message. Parsed here, a
// corrupt message fails its call with INVALID_ARGUMENT, saying which one.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_SERVER_WIRE_H_
#define HARDNEG_SERVER_WIRE_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/support/byte_buffer.h"

namespace hardneg {

// Parses `buffer` (left empty) into `message`. INVALID_ARGUMENT naming
// `what` (e.g. "MineRequest 3 of the stream") when the bytes are not a
// valid message of its type.
absl::Status ParseMessage(grpc::ByteBuffer& buffer, absl::string_view what,
                          google::protobuf::MessageLite* message);

// Serialises `message` into `buffer`. INTERNAL if protobuf fails (a
// message over 2 GiB, which the reply limits rule out).
absl::Status SerializeMessage(const google::protobuf::MessageLite& message,
                              grpc::ByteBuffer* buffer);

}  // namespace hardneg

#endif  // HARDNEG_SERVER_WIRE_H_

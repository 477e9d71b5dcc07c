#include "server/wire.h"

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"

namespace hardneg {

absl::Status ParseMessage(grpc::ByteBuffer& buffer, absl::string_view what,
                          google::protobuf::MessageLite* message) {
  bool parsed = false;
  {
    grpc::ProtoBufferReader reader(&buffer);
    parsed = reader.status().ok() && message->ParseFromZeroCopyStream(&reader);
  }
  buffer.Clear();
  if (parsed) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " could not be parsed as a ", message->GetTypeName(),
                   " (corrupt bytes, or a message of another type)"));
}

absl::Status SerializeMessage(const google::protobuf::MessageLite& message,
                              grpc::ByteBuffer* buffer) {
  const size_t size = message.ByteSizeLong();
  if (size > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InternalError(
        absl::StrCat("the answer is ", size, " bytes, too large to send"));
  }
  bool own_buffer = false;
  const grpc::Status status =
      grpc::GenericSerialize<grpc::ProtoBufferWriter,
                             google::protobuf::MessageLite>(message, buffer,
                                                            &own_buffer);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("serialising the answer failed: ",
                                            status.error_message()));
  }
  return absl::OkStatus();
}

}  // namespace hardneg

// Tells ThreadSanitizer about the one hand-off of gRPC's callback API that
// it cannot see: an operation started on one thread (StartRead, StartWrite,
// Finish, ... all reach grpc_call_start_batch with the operation's tag)
// completes on another, which runs the tag's callback (the reaction) after
// libgrpc synchronised the two with atomics TSan does not observe. Linked
// into the executables of a HARDNEG_SANITIZE=thread build only, like
// tsan_absl_sync.cc.
//
// The executable defines grpc_call_start_batch (a release on the tag, then
// libgrpc's own) and grpc::internal::CallbackWithSuccessTag::StaticRun,
// which libgrpc calls for every callback-API completion (an acquire on the
// tag, then libgrpc++'s own copy of the inline function). This is the
// ordering gRPC guarantees: what a thread did before starting an operation
// happens before the reaction to its completion. grpc_completion_queue_next
// and _pluck, which deliver completions to the synchronous API and to
// libgrpc++'s callback threads, acquire their event's tag the same way.
//
// A server call's OnDone (and OnCancel) runs once every reaction has
// dropped its reference to the call (ServerCallbackCall::MaybeDone, inline:
// an acq_rel decrement). Some of those decrements are compiled into
// libgrpc++ and invisible, so the thread that dropped the last one may not
// have acquired the others: ScheduleOnDone and CallOnCancel, which libgrpc++
// calls then, acquire the counter first.
#include <dlfcn.h>
#include <grpc/grpc.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "grpcpp/support/server_callback.h"

namespace {

template <typename Fn>
Fn Real(const char* name) {
  void* fn = dlsym(RTLD_NEXT, name);
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_grpc_sync: %s not found: %s\n", name, dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

using StaticRunFn = void (*)(grpc_completion_queue_functor*, int);

#define HARDNEG_CALLBACK_TAG_STATIC_RUN                   \
  "_ZN4grpc8internal22CallbackWithSuccessTag9StaticRunEP" \
  "29grpc_completion_queue_functori"

}  // namespace

// The inline static member grpc::internal::CallbackWithSuccessTag::
// StaticRun, defined here by its mangled name (C++ cannot define an inline
// member twice): a strong definition, so the linker drops the inline
// copies.
void HardnegCallbackTagStaticRun(
    grpc_completion_queue_functor* tag,
    int ok) __asm__(HARDNEG_CALLBACK_TAG_STATIC_RUN);

void HardnegCallbackTagStaticRun(grpc_completion_queue_functor* tag, int ok) {
  static const auto real = Real<StaticRunFn>(HARDNEG_CALLBACK_TAG_STATIC_RUN);
  __tsan_acquire(tag);
  real(tag, ok);
}

namespace grpc {
namespace internal {

// ServerCallbackCall's members, in grpcpp/support/server_callback.h order.
struct ServerCallbackCallLayout {
  void* vtable;
  std::atomic_int on_cancel_conditions_remaining;
  std::atomic_int callbacks_outstanding;
};
static_assert(sizeof(ServerCallbackCallLayout) == sizeof(ServerCallbackCall),
              "grpc::internal::ServerCallbackCall changed its members");

void ServerCallbackCall::ScheduleOnDone(bool inline_ondone) {
  using Fn = void (*)(ServerCallbackCall*, bool);
  static const auto real =
      Real<Fn>("_ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb");
  __tsan_acquire(&reinterpret_cast<ServerCallbackCallLayout*>(this)
                      ->callbacks_outstanding);
  real(this, inline_ondone);
}

void ServerCallbackCall::CallOnCancel(ServerReactor* reactor) {
  using Fn = void (*)(ServerCallbackCall*, ServerReactor*);
  static const auto real = Real<Fn>(
      "_ZN4grpc8internal18ServerCallbackCall12CallOnCancelEPNS0_"
      "13ServerReactorE");
  __tsan_acquire(&reinterpret_cast<ServerCallbackCallLayout*>(this)
                      ->on_cancel_conditions_remaining);
  real(this, reactor);
}

}  // namespace internal
}  // namespace grpc

extern "C" {

grpc_call_error grpc_call_start_batch(grpc_call* call, const grpc_op* ops,
                                      size_t nops, void* tag, void* reserved) {
  using Fn =
      grpc_call_error (*)(grpc_call*, const grpc_op*, size_t, void*, void*);
  static const auto real = Real<Fn>("grpc_call_start_batch");
  if (tag != nullptr) __tsan_release(tag);
  return real(call, ops, nops, tag, reserved);
}

grpc_event grpc_completion_queue_next(grpc_completion_queue* cq,
                                      gpr_timespec deadline, void* reserved) {
  using Fn = grpc_event (*)(grpc_completion_queue*, gpr_timespec, void*);
  static const auto real = Real<Fn>("grpc_completion_queue_next");
  const grpc_event event = real(cq, deadline, reserved);
  if (event.type == GRPC_OP_COMPLETE && event.tag != nullptr) {
    __tsan_acquire(event.tag);
  }
  return event;
}

grpc_event grpc_completion_queue_pluck(grpc_completion_queue* cq, void* tag,
                                       gpr_timespec deadline, void* reserved) {
  using Fn = grpc_event (*)(grpc_completion_queue*, void*, gpr_timespec, void*);
  static const auto real = Real<Fn>("grpc_completion_queue_pluck");
  const grpc_event event = real(cq, tag, deadline, reserved);
  if (event.type == GRPC_OP_COMPLETE && event.tag != nullptr) {
    __tsan_acquire(event.tag);
  }
  return event;
}

}  // extern "C"

// Tells ThreadSanitizer about absl::Mutex, absl::CondVar and
// absl::Notification, which live in Debian's uninstrumented
// libabsl_synchronization. Linked into the executables of a
// HARDNEG_SANITIZE=thread build only.
//
// Without it TSan sees no happens-before edge through these locks (their
// atomics and futex waits are in uninstrumented code) and reports a race on
// every ABSL_GUARDED_BY field touched by two threads. An abseil built with
// -fsanitize=thread makes the __tsan_mutex_* calls below inside mutex.cc;
// here the executable defines the same public functions, so the dynamic
// linker binds every caller (our code, gRPC, abseil itself: they call
// through the PLT) to them, and each one brackets the library's own
// function, found with dlsym(RTLD_NEXT), with those calls. The annotations
// add only edges the locks really provide; an access that takes no lock is
// still reported.
//
// Limits: Await and CondVar waits are modelled as releasing and
// re-acquiring an exclusive hold (our code never waits under a reader
// lock); Notification::HasBeenNotified, inline in the header, gets no edge
// (use WaitForNotification*).
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#if !defined(ABSL_OPTION_USE_INLINE_NAMESPACE) || \
    ABSL_OPTION_USE_INLINE_NAMESPACE != 1
#error "tsan_absl_sync.cc expects abseil's inline namespace (absl::<name>::)"
#endif

namespace {

#define HARDNEG_STRINGIFY_INNER(x) #x
#define HARDNEG_STRINGIFY(x) HARDNEG_STRINGIFY_INNER(x)

// The library's definition of `suffix`, a symbol mangled as
// _ZN4absl<len><inline namespace><suffix> (or _ZNK4absl... when `konst`).
template <typename Fn>
Fn Real(const char* suffix, bool konst = false) {
  const std::string ns = HARDNEG_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name = std::string(konst ? "_ZNK4absl" : "_ZN4absl") +
                           std::to_string(ns.size()) + ns + suffix;
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found: %s\n", name.c_str(),
                 dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

constexpr unsigned kRead = __tsan_mutex_read_lock;

// True in the outermost of nested calls on this thread. The library's
// functions call one another through the PLT too (CondVar::WaitWithTimeout
// calls WaitWithDeadline, Notification calls Mutex), so they reach these
// definitions again; only the outermost call annotates.
class Outermost {
 public:
  Outermost() : outermost_(depth_++ == 0) {}
  ~Outermost() { --depth_; }
  Outermost(const Outermost&) = delete;
  Outermost& operator=(const Outermost&) = delete;
  explicit operator bool() const { return outermost_; }

 private:
  static thread_local int depth_;
  const bool outermost_;
};
thread_local int Outermost::depth_ = 0;

// Exclusive hold of `mu` given up and taken again inside a wait.
void PreWait(void* mu) {
  __tsan_mutex_pre_unlock(mu, 0);
  __tsan_mutex_post_unlock(mu, 0);
  __tsan_mutex_pre_lock(mu, 0);
}
void PostWait(void* mu) { __tsan_mutex_post_lock(mu, 0, 0); }

}  // namespace

// Defines abseil's own functions, which is the point of this file.
namespace absl {  // NOLINT(abseil-no-namespace)
ABSL_NAMESPACE_BEGIN

using MutexFn = void (*)(Mutex*);
using MutexTryFn = bool (*)(Mutex*);
using MutexCondFn = void (*)(Mutex*, const Condition&);
using MutexCondTimeoutFn = bool (*)(Mutex*, const Condition&, Duration);
using MutexCondDeadlineFn = bool (*)(Mutex*, const Condition&, Time);

Mutex::~Mutex() {
  static const auto real = Real<MutexFn>("5MutexD1Ev");
  const Outermost outer;
  real(this);
  if (outer) __tsan_mutex_destroy(this, __tsan_mutex_not_static);
}

void Mutex::Lock() {
  static const auto real = Real<MutexFn>("5Mutex4LockEv");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, 0);
  real(this);
  if (outer) __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::ReaderLock() {
  static const auto real = Real<MutexFn>("5Mutex10ReaderLockEv");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, kRead);
  real(this);
  if (outer) __tsan_mutex_post_lock(this, kRead, 0);
}

void Mutex::Unlock() {
  static const auto real = Real<MutexFn>("5Mutex6UnlockEv");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_unlock(this, 0);
  real(this);
  if (outer) __tsan_mutex_post_unlock(this, 0);
}

void Mutex::ReaderUnlock() {
  static const auto real = Real<MutexFn>("5Mutex12ReaderUnlockEv");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_unlock(this, kRead);
  real(this);
  if (outer) __tsan_mutex_post_unlock(this, kRead);
}

bool Mutex::TryLock() {
  static const auto real = Real<MutexTryFn>("5Mutex7TryLockEv");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  const bool locked = real(this);
  if (outer) {
    __tsan_mutex_post_lock(
        this,
        __tsan_mutex_try_lock | (locked ? 0 : __tsan_mutex_try_lock_failed), 0);
  }
  return locked;
}

bool Mutex::ReaderTryLock() {
  static const auto real = Real<MutexTryFn>("5Mutex13ReaderTryLockEv");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, __tsan_mutex_try_read_lock);
  const bool locked = real(this);
  if (outer) {
    __tsan_mutex_post_lock(
        this,
        locked ? __tsan_mutex_try_read_lock : __tsan_mutex_try_read_lock_failed,
        0);
  }
  return locked;
}

void Mutex::LockWhen(const Condition& cond) {
  static const auto real =
      Real<MutexCondFn>("5Mutex8LockWhenERKNS0_9ConditionE");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, 0);
  real(this, cond);
  if (outer) __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static const auto real =
      Real<MutexCondFn>("5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, kRead);
  real(this, cond);
  if (outer) __tsan_mutex_post_lock(this, kRead, 0);
}

// The *WithTimeout and *WithDeadline lock calls return holding the lock
// whatever they return.
bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Real<MutexCondTimeoutFn>(
      "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, 0);
  const bool met = real(this, cond, timeout);
  if (outer) __tsan_mutex_post_lock(this, 0, 0);
  return met;
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Real<MutexCondTimeoutFn>(
      "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, kRead);
  const bool met = real(this, cond, timeout);
  if (outer) __tsan_mutex_post_lock(this, kRead, 0);
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Real<MutexCondDeadlineFn>(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, 0);
  const bool met = real(this, cond, deadline);
  if (outer) __tsan_mutex_post_lock(this, 0, 0);
  return met;
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Real<MutexCondDeadlineFn>(
      "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const Outermost outer;
  if (outer) __tsan_mutex_pre_lock(this, kRead);
  const bool met = real(this, cond, deadline);
  if (outer) __tsan_mutex_post_lock(this, kRead, 0);
  return met;
}

void Mutex::Await(const Condition& cond) {
  static const auto real = Real<MutexCondFn>("5Mutex5AwaitERKNS0_9ConditionE");
  const Outermost outer;
  if (outer) PreWait(this);
  real(this, cond);
  if (outer) PostWait(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Real<MutexCondTimeoutFn>(
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const Outermost outer;
  if (outer) PreWait(this);
  const bool met = real(this, cond, timeout);
  if (outer) PostWait(this);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Real<MutexCondDeadlineFn>(
      "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const Outermost outer;
  if (outer) PreWait(this);
  const bool met = real(this, cond, deadline);
  if (outer) PostWait(this);
  return met;
}

using CondVarWaitFn = void (*)(CondVar*, Mutex*);
using CondVarTimeoutFn = bool (*)(CondVar*, Mutex*, Duration);
using CondVarDeadlineFn = bool (*)(CondVar*, Mutex*, Time);

void CondVar::Wait(Mutex* mu) {
  static const auto real = Real<CondVarWaitFn>("7CondVar4WaitEPNS0_5MutexE");
  const Outermost outer;
  if (outer) PreWait(mu);
  real(this, mu);
  if (outer) PostWait(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static const auto real = Real<CondVarTimeoutFn>(
      "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  const Outermost outer;
  if (outer) PreWait(mu);
  const bool timed_out = real(this, mu, timeout);
  if (outer) PostWait(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static const auto real = Real<CondVarDeadlineFn>(
      "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  const Outermost outer;
  if (outer) PreWait(mu);
  const bool timed_out = real(this, mu, deadline);
  if (outer) PostWait(mu);
  return timed_out;
}

// A notified Notification returns from its waits without taking its mutex:
// the edge from Notify to a wait that returns true is annotated directly.
using NotifyFn = void (*)(Notification*);
using WaitFn = void (*)(const Notification*);
using WaitTimeoutFn = bool (*)(const Notification*, Duration);
using WaitDeadlineFn = bool (*)(const Notification*, Time);

void Notification::Notify() {
  static const auto real = Real<NotifyFn>("12Notification6NotifyEv");
  const Outermost outer;
  if (outer) __tsan_release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  static const auto real =
      Real<WaitFn>("12Notification19WaitForNotificationEv", true);
  const Outermost outer;
  real(this);
  if (outer) __tsan_acquire(const_cast<Notification*>(this));
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  static const auto real = Real<WaitTimeoutFn>(
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE", true);
  const Outermost outer;
  const bool notified = real(this, timeout);
  if (outer && notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  static const auto real = Real<WaitDeadlineFn>(
      "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE", true);
  const Outermost outer;
  const bool notified = real(this, deadline);
  if (outer && notified) __tsan_acquire(const_cast<Notification*>(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl

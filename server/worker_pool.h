// WorkerPool: a fixed set of threads that run submitted tasks in FIFO
// order. Searches run here, never on gRPC's callback threads.
//
// Thread-safe: Submit may be called from any thread. The destructor runs
// every task already submitted, then joins the threads.
#ifndef HARDNEG_SERVER_WORKER_POOL_H_
#define HARDNEG_SERVER_WORKER_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace hardneg {

class WorkerPool {
 public:
  // `thread_init`, when set, runs first on each worker thread (for
  // per-thread settings such as OpenMP's thread count).
  explicit WorkerPool(size_t threads,
                      const std::function<void()>& thread_init = nullptr);
  ~WorkerPool();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Submit(std::function<void()> task) ABSL_LOCKS_EXCLUDED(mu_);

  size_t size() const { return threads_.size(); }

 private:
  void Run() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace hardneg

#endif  // HARDNEG_SERVER_WORKER_POOL_H_

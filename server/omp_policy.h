// Making OpenMP threads sleep instead of spin while they wait.
//
// Not thread-safe: EnsurePassiveOpenMp sets the environment and may re-exec
// the process, so main calls it once, before it starts any thread.
#ifndef HARDNEG_SERVER_OMP_POLICY_H_
#define HARDNEG_SERVER_OMP_POLICY_H_

namespace hardneg {

// OpenMP reads OMP_WAIT_POLICY when its runtime loads, before main, so the
// policy is set by re-executing the program with OMP_WAIT_POLICY=PASSIVE
// (unless it is set already). Spinning OpenMP threads fight OpenBLAS's and
// the search workers for the cores: a 50x slowdown at small batches. Call
// first thing in main; it returns only when no re-exec was needed or
// possible (then the default policy stays).
void EnsurePassiveOpenMp(char** argv);

}  // namespace hardneg

#endif  // HARDNEG_SERVER_OMP_POLICY_H_

// The single-node launcher behind `weft train --nproc N`: starts N workers of this binary with
// the torchrun environment, prefixes their output with the rank, forwards SIGINT/SIGTERM, and
// tears every worker down when one fails. Layout validation happens before this is called.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace weft {

struct LaunchOptions {
  int nproc = 1;
  std::string exe = "/proc/self/exe";  // the worker binary: this one
  std::vector<std::string> args;       // worker argv[1..] (without --nproc)
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0 = a free port on master_addr (bound here, handed to rank 0's store)
  // After a worker fails: SIGTERM to the others, SIGKILL to those still alive after this.
  std::chrono::milliseconds failure_grace{3000};
  // After SIGINT/SIGTERM to the launcher: time the workers get to checkpoint and exit.
  std::chrono::milliseconds signal_grace{60000};
  std::string label;  // printed when starting, e.g. the layout "tp(2) × pp(2) × dp(2)"
};

// Starts opts.nproc workers and supervises them until all have exited. Each worker gets RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and
// TORCHELASTIC_RESTART_COUNT=0 (rank 0 also WEFT_STORE_LISTEN_FD: the store's socket, bound and
// listening before any worker starts), stdin from /dev/null, its own process group, and
// PR_SET_PDEATHSIG=SIGKILL (no worker outlives a launcher that is killed). Every line a worker
// writes to stdout/stderr appears on the launcher's stdout/stderr prefixed "[rank K] ".
//
// Returns the exit code: 0 if every worker exited 0; otherwise that of the first worker to fail
// (128 + signal number if it was killed), after the others were stopped (SIGTERM, then SIGKILL
// after failure_grace). SIGINT/SIGTERM received by the launcher are forwarded to every worker.
// Throws weft::Error if a worker cannot be started. Call from the main thread, once.
int launch_local_workers(const LaunchOptions& opts);

// argv (without argv[0]) minus --nproc/-nproc and its value (also --nproc=N); the value of a
// --set is never taken for a flag.
std::vector<std::string> strip_nproc_flag(const std::vector<std::string>& args);

}  // namespace weft

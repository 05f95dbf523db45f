// Turns hangs and dead peers into a prompt, explained exit, so that the launcher (torchrun, Slurm,
// Kubernetes, `weft train --nproc`) restarts the job from its newest checkpoint in seconds rather
// than after a collective timeout. Background threads per worker:
//  * Hang watchdog (fault.hang_timeout_s): the training thread marks what it is doing with
//    ProgressScope (core/progress.h); from the first step on, when one operation lasts longer than
//    the timeout, the rank names itself, the operation (collective, p2p, data, checkpoint, compute)
//    and the step. (Start-up is bounded by the rendezvous timeout, parallel.timeout_sec.)
//  * Heartbeats (fault.heartbeat_interval_s, multi-rank only): each rank bumps a counter in the
//    job's c10d store (its own connection) and watches the next rank's, so a peer that dies or is
//    cut off without closing its sockets is noticed within fault.heartbeat_timeout_s even while
//    the others compute. A peer that left cleanly is not missed. The heartbeats run on a second
//    thread: a store round trip can block for as long as the store's host is frozen or cut off
//    (its connection stays open), so the first thread times it and a round trip pending longer
//    than the timeout is a lost store (and the hang check goes on meanwhile).
// A detected fault is logged, appended to metrics.jsonl as
//   {"event":"fault","kind":"hang"|"dead_peer"|"store_lost"|"peer_fault","rank","peer","op","what","step","time"}
// and published in the store, so every other rank exits at once too; then the process exits with
// kFaultExitCode. The same idea as PyTorch's NCCL watchdog/heartbeat monitor and torchft's
// heartbeats; the implementation is Weft's own.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "weft/config.h"

namespace weft {

class ParallelContext;
class StoreClient;

// Exit status of a worker that detected a fault (any non-zero status makes torchrun restart).
constexpr int kFaultExitCode = 3;

struct FaultReport {
  std::string kind;      // hang | dead_peer | store_lost | peer_fault
  int64_t rank = 0;      // the rank reporting
  int64_t peer = -1;     // dead_peer: the silent rank
  std::string op, what;  // hang: the operation kind and its description
  int64_t step = 0;      // the step being worked on
  double stalled_s = 0;  // how long the operation or the peer has been silent
  std::string message;   // one line for the log
};

class Watchdog {
 public:
  // `ctx` null or a world of one: hang detection only (ctx need not outlive this). `events_path`:
  // metrics.jsonl to append the fault event to ("" = none). Starts the thread; throws weft::Error
  // when the store cannot be reached.
  Watchdog(const FaultConfig& cfg, const ParallelContext* ctx, std::string events_path);
  // Stops the thread. Unless stop(true) was called first, peers will notice this rank's silence.
  ~Watchdog();
  // Stops the thread; `clean`: tell the peers this rank leaves on purpose (end of the job).
  void stop(bool clean);

 private:
  void loop();
  void beat_loop();
  [[noreturn]] void die(FaultReport report);

  FaultConfig cfg_;
  int64_t rank_ = 0, world_ = 1;
  std::string events_path_;
  std::unique_ptr<StoreClient> store_;
  int64_t start_ns_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  // CLOCK_MONOTONIC when beat_loop's pending store round trip began; 0 = none pending.
  std::atomic<int64_t> store_call_ns_{0};
  std::thread thread_, beat_thread_;
};

}  // namespace weft

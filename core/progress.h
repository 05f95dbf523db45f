// What the training thread is doing right now, for the hang watchdog (runtime/elastic/watchdog.h):
// the kind of operation (a collective, a p2p transfer, data loading, a checkpoint, compute), a
// description ("all_reduce on dp(ranks 0,1)") and when it began. Code marks an operation with a
// ProgressScope; scopes nest, and leaving one restores the outer one. Every enter and leave counts
// as progress, so "no progress for T seconds" means one operation has lasted T seconds.
//
// This is process-wide state (like NCCL's watchdog, it describes the process, not an object). The
// functions are thread-safe; scopes are meant for the training thread.
#pragma once

#include <cstdint>
#include <string>

namespace weft {

enum class OpKind : uint8_t { kIdle, kStartup, kCompute, kCollective, kP2P, kData, kCheckpoint };

// "collective", "p2p", "data", "checkpoint", "compute", "startup", "idle".
const char* op_kind_name(OpKind kind);

// Marks the calling thread's current operation for its lifetime.
class ProgressScope {
 public:
  ProgressScope(OpKind kind, std::string what);
  ~ProgressScope();
  ProgressScope(const ProgressScope&) = delete;
  ProgressScope& operator=(const ProgressScope&) = delete;

 private:
  OpKind prev_kind_;
  std::string prev_what_;
};

// The optimizer step the process is working on (steps completed + 1), for reports.
void set_progress_step(int64_t step);

struct ProgressState {
  OpKind kind = OpKind::kIdle;
  std::string what;
  int64_t step = 0;
  int64_t last_change_ns = 0;  // CLOCK_MONOTONIC of the last enter or leave
};
ProgressState progress_state();

// CLOCK_MONOTONIC in nanoseconds.
int64_t monotonic_ns();

}  // namespace weft

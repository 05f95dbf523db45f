// Faults injected on purpose, for tests and fire drills (config fault.kill_*, hang_*, slow_*,
// nan_*, kill_during_checkpoint). Inert unless configured. An injected fault fires once per job:
// only in the first attempt (TORCHELASTIC_RESTART_COUNT 0) and only if no earlier run in this
// run.dir fired one (the marker file run.dir/.weft_fault_fired, written just before firing), so
// a restarted or re-run job can finish.
#pragma once

#include <cstdint>
#include <string>

#include "weft/config.h"

namespace weft {

// Thread safety: for the training thread.
class FaultInjector {
 public:
  // `rank`: this process's global rank; `world`: the ranks that train; `restart_count`:
  // TORCHELASTIC_RESTART_COUNT. When armed, refuses (weft::Error naming the key) a fault aimed at
  // a rank that does not train, and arms fault.kill_during_checkpoint's checkpoint fault point.
  FaultInjector(const FaultConfig& cfg, int64_t rank, int64_t world, int64_t restart_count, std::string run_dir);

  bool armed() const { return armed_; }
  // Called as step `step` (1-based) begins: SIGKILLs this process (kill_rank/kill_step) or never
  // returns, leaving the progress watchdog to notice (hang_rank/hang_step).
  void at_step(int64_t step);
  // Milliseconds this rank sleeps in each step's compute (slow_rank/slow_ms).
  double slow_ms() const { return armed_ && cfg_.slow_rank == rank_ ? cfg_.slow_ms : 0; }
  // Whether step `step`'s loss is replaced by NaN (nan_step .. nan_step + nan_count - 1), on
  // every rank alike. After disarm_nan() never again (a rollback replays those steps).
  bool nan_at(int64_t step);
  void disarm_nan() { nan_done_ = true; }
  // Called as the save of `step` begins: writes the marker when fault.kill_during_checkpoint
  // kills this rank in it.
  void before_save(int64_t step);

 private:
  // Writes the marker (before a fault fires).
  void mark_fired(const char* what);

  FaultConfig cfg_;
  int64_t rank_;
  std::string marker_;
  bool armed_ = false, nan_done_ = false;
};

}  // namespace weft

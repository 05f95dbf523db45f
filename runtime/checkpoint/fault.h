// Fault injection for the checkpoint protocol's tests: a process that reaches a named point of a
// save dies there with SIGKILL, as if the machine had failed. Inert unless the environment arms
// it (read once, at the first call):
//   WEFT_CHECKPOINT_FAULT=<point>   snapshot | write | fragment | manifest | rename | latest | retention
//   WEFT_CHECKPOINT_FAULT_SAVE=<n>  the n-th save this process starts (1-based; default 1)
//   WEFT_CHECKPOINT_FAULT_RANK=<r>  the global rank that dies (default 0)
// An unknown point name is refused (weft::Error) at the first call, so a typo cannot turn a fault
// test into a pass. Thread-safe.
#pragma once

#include <cstdint>

namespace weft::fault {

// This process's global rank (call once at start; default 0).
void set_rank(int64_t rank);
// A save of the state after `step` optimizer steps starts: later points count against it.
void begin_save(int64_t step);
// Arms `point` (one of the names above) for the save of `step` (-1: the first save this process
// starts) on `rank`, in addition to the environment (config fault.kill_during_checkpoint uses it).
// Call before that save starts.
void arm_at_step(const char* point, int64_t step, int64_t rank);
// Dies here (SIGKILL to this process) when armed for `point`, the current save and this rank.
void point(const char* name);

}  // namespace weft::fault

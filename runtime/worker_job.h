// Internal: one rank of any multi-process job (training, ckpt -> ckpt conversion), over the
// ParallelContext that weft/worker.h keeps out of the public API.
#pragma once

#include <functional>

#include "parallel/comm.h"
#include "weft/config.h"
#include "weft/worker.h"

namespace weft {

// Validates the layout and memory, connects every group, runs `job`, then waits at a barrier so
// no peer loses its connections mid-operation. A rank beyond the layout (elastic_layout) waits
// as a spare instead and returns 0 when the job ends. WEFT_TEST_WORKER replaces `job` with a
// scripted behaviour (tests/integration/test_launcher.py). Returns the exit code. Throws
// weft::Error (naming the rank) for an impossible layout, a failed rendezvous or a failed
// collective.
int run_worker(const Config& cfg, const WorkerEnv& env, const WorkerOptions& opts,
               const std::function<int(const ParallelContext&)>& job);

}  // namespace weft

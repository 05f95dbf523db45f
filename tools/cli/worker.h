// One rank of a multi-process `weft train`, started by `--nproc N` or by torchrun/Slurm with the
// torchrun environment. Validates the layout, builds the ParallelContext, then trains.
#pragma once

#include "core/config.h"
#include "parallel/comm.h"

namespace weft {

// Returns the exit code. Throws weft::Error (naming the rank) for an impossible layout, a failed
// rendezvous or a failed collective.
int run_train_worker(const Config& cfg, const WorkerEnv& env);

}  // namespace weft

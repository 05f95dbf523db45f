// One rank of a multi-process `weft train`, started by `--nproc N` or by torchrun/Slurm with the
// torchrun environment. Validates the layout, builds the ParallelContext, then trains.
#pragma once

#include <functional>

#include "weft/config.h"
#include "parallel/comm.h"
#include "weft/trainer.h"

namespace weft {

// One rank of any multi-process job: validates the layout and memory, connects every group, runs
// `job`, then waits at a barrier so no peer loses its connections mid-operation. Returns the exit
// code. Throws weft::Error (naming the rank) for an impossible layout, a failed rendezvous or a
// failed collective.
int run_worker(const Config& cfg, const WorkerEnv& env, const std::function<int(const ParallelContext&)>& job);
// run_worker with training as the job.
int run_train_worker(const Config& cfg, const WorkerEnv& env);

// The line `weft train` ends with: "train: finished at step N, final loss L" (or "stopped"), or,
// when the run trained no step, that the checkpoint was already at train.steps.
std::string train_summary(const TrainerStatus& st);

}  // namespace weft

// weft::run_training_worker: one process of a training job, what `weft train` runs in each
// worker (started by `weft train --nproc N`, torchrun or Slurm with the torchrun environment) or
// alone. The library installs no signal handlers: a host that wants SIGINT/SIGTERM to stop
// training installs its own in WorkerOptions::on_role and calls request_worker_stop() from them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "weft/config.h"
#include "weft/trainer.h"

namespace weft {

// What this process turned out to be, once it knows.
enum class WorkerRole {
  kAlone,  // the only process (WORLD_SIZE unset or 1); the Trainer exists, run() comes next
  kRank,   // one rank of a multi-process job; connected, the Trainer exists, run() comes next
  kSpare,  // a rank beyond the layout; it waits for the job to end (request_worker_stop() ends it)
  kTest,   // a WEFT_TEST_WORKER behaviour that waits for a signal (test-only)
};

struct WorkerOptions {
  // true: stdout becomes line-buffered in a multi-process job (lines reach the launcher as they
  // are written) and the worker prints the Trainer's progress lines, a spare's notice and, on
  // the primary, train_summary() there. Off by default: a library writes nothing to its host's
  // stdout unasked.
  bool console = false;
  // Called once, on the calling thread, when the role is known (see WorkerRole): where a host
  // installs its stop-signal handlers. May be empty.
  std::function<void(WorkerRole)> on_role;
};

// Whether this process is one rank of a multi-process job: WORLD_SIZE > 1 in the torchrun
// environment. Throws weft::Error naming the variable when the environment is malformed.
bool is_multi_rank_worker();

// Before `nproc` (> 1) local processes of this job are started: validates the config and the
// layout (tp and pp from the config, dp from the processes; processes beyond a usable layout
// become spares) and, for CPU jobs, that the ranks' training state fits this host's memory
// together. Returns the launcher's label: the layout ("tp(2) × dp(2)"), with " + N spare(s)".
// Throws weft::Error (one line: the layout or memory problem and what to change).
std::string check_local_launch(const Config& cfg, int64_t nproc);

// Trains `cfg` in this process: alone, or as the rank the torchrun environment names (RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; see weft train --help),
// building the process groups, the hang watchdog, and for ranks beyond the layout waiting as a
// spare. Returns the process exit code: 0 when training finished or was stopped with a
// checkpoint; under TorchElastic, a rank stopped only because a peer was asked to stop waits up
// to 10 s for its own stop and otherwise returns the fault exit code so its agent restarts the
// job. Throws weft::Error for bad config, data, layout, a failed rendezvous or collective.
// Process-wide: at most one call at a time per process; see Trainer for its other effects.
int run_training_worker(const Config& cfg, const WorkerOptions& opts = {});

// Asks the run_training_worker of this process to finish its step, checkpoint and return (a
// spare: to leave at once). Async-signal-safe; callable from any thread while
// run_training_worker runs (each call of which starts with no request pending).
void request_worker_stop();

// The line `weft train` ends with: "train: finished at step N, final loss L" (or "stopped"), or,
// when the run trained no step, that the checkpoint was already at train.steps.
std::string train_summary(const TrainerStatus& st);

}  // namespace weft

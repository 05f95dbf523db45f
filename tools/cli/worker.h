// The `weft` binary's side of a worker process: its SIGINT/SIGTERM handlers, which the library
// leaves to the host (weft/worker.h).
#pragma once

#include "weft/worker.h"

namespace weft {

// WorkerOptions with the console on, whose on_role installs the handlers `weft train` documents for that role:
//   kAlone  the first signal finishes the step, checkpoints and exits; a second stops at once.
//   kRank   the same, except that a second signal within 2 s of the first is ignored (the
//           launcher forwarding a signal that reached the whole process group or cgroup too).
//   kSpare  any signal: leave at once, cleanly (a spare has nothing to save).
//   kTest   print "worker pid P got signal S" and die of it (test_launcher.py).
WorkerOptions cli_worker_options();

}  // namespace weft

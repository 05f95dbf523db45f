// A checkpoint written again for another parallel layout, offline (`weft convert --from ckpt:A
// --to ckpt:B --set parallel.tp=...`). Loading already reshards (any layout resumes from any
// checkpoint); this exists so a job can start from a checkpoint whose files match its layout, or
// hand one to a tool that expects that.
#pragma once

#include <string>

#include "weft/config.h"
#include "runtime/checkpointer.h"

namespace weft {

class ParallelContext;

// Collective over the ranks of `ctx` (null: one process). Each rank builds its part of the model
// for cfg.parallel, loads its pieces — parameters and optimizer state — from `from_dir`, and
// saves them as a checkpoint under `to_root` (a checkpoint root: to_root/step_N, to_root/latest)
// with the source's step, data position and RNG state, so a run with checkpoint.dir = to_root
// resumes exactly where one from `from_dir` would. Memory: this rank's share of the model and
// optimizer state, as in training without activations. Throws weft::Error naming the path for
// an unreadable source or a failed write.
SaveOutcome relayout_checkpoint(const Config& cfg, const ParallelContext* ctx, const std::string& from_dir,
                                const std::string& to_root);

}  // namespace weft

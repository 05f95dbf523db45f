// The training job's side of checkpoints: what a step directory holds for this job (every rank's
// parameter pieces and optimizer state, the trainer state, the config and the tokenizer files),
// saving it, and restoring from the newest complete checkpoint or from checkpoint.init_from.
// The format itself (files, manifest, commit) is runtime/checkpoint/checkpoint.h.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "core/config.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/params.h"

namespace weft {

class Optimizer;
class ParallelContext;

// Where a run continues from.
struct RestoredState {
  std::string dir;          // the checkpoint it came from
  bool resumed = false;     // true: full state (model, optimizer, data position, RNG); false: init_from weights
  int64_t step = 0, consumed_samples = 0;
};

// Not thread-safe (the training thread). save() and restore() are collective over every rank of
// the job. Throws weft::Error naming the file for unreadable or damaged checkpoints and for
// tokenizer files it cannot find.
class Checkpointer {
 public:
  // `params` and `optimizer` belong to the job's ParallelModel and must outlive this; `ctx` is
  // null for one process.
  Checkpointer(const Config& cfg, const ParallelContext* ctx, const ParamList& params, Optimizer& optimizer);

  // Loads the newest complete checkpoint under checkpoint.dir (everything, including the default
  // CPU generator's state), else checkpoint.init_from's weights; nullopt when there is neither.
  std::optional<RestoredState> restore();
  // Writes the state after `step` optimizer steps as a committed checkpoint and applies
  // checkpoint.keep. Returns where it went, its size and the milliseconds the caller waited.
  struct Saved {
    SaveResult result;
    double ms = 0;
  };
  Saved save(int64_t step, int64_t consumed_samples);

 private:
  void load_weights(const std::string& dir);
  void load_optimizer(const std::string& dir, int64_t step);
  void take_tokenizer_files(const std::string& checkpoint_dir);

  Config cfg_;  // as saved: data.tokenizer names the checkpoint's own files once they travel with it
  const ParallelContext* ctx_;
  const ParamList& params_;
  Optimizer& optimizer_;
  std::map<std::string, std::string> tokenizer_files_;  // file name -> contents, stored in every save
};

}  // namespace weft

// The training job's side of checkpoints: what a step directory holds for this job (every rank's
// parameter pieces and optimizer state, the trainer state, the config and the tokenizer files),
// saving it without stalling training, and restoring from the newest complete checkpoint (or an
// older one when the newest is damaged and checkpoint.fallback is set) or checkpoint.init_from.
// The format itself (files, manifest, commit) is runtime/checkpoint/checkpoint.h.
//
// An asynchronous save (checkpoint.async, the default) follows PyTorch DCP's async_save and
// ByteCheckpoint: the training loop only takes a snapshot — parameters and optimizer state copied
// into host buffers allocated once and reused (pinned, on a side stream, on a GPU) — and only the
// next optimizer step waits for that copy; a background thread writes, fsyncs and commits. Ranks
// agree on the commit through the rendezvous store (a connection of the writer's own), never
// through the training process groups. At most one save is in flight.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "weft/config.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/params.h"

namespace weft {

class Optimizer;
class ParallelContext;
class StoreClient;

// Where a run continues from.
struct RestoredState {
  std::string dir;          // the checkpoint it came from
  bool resumed = false;     // true: full state (model, optimizer, data position, RNG); false: init_from weights
  int64_t step = 0, consumed_samples = 0;
  // Damaged newer checkpoints passed over (checkpoint.fallback): (directory, error).
  std::vector<std::pair<std::string, std::string>> skipped;
};

// How one save ended.
struct SaveOutcome {
  int64_t step = 0;
  bool ok = false;
  std::string dir, error;  // error: the failure, one line (path and OS reason)
  uint64_t bytes = 0;      // every rank's files together
  double blocking_ms = 0;  // what the training loop waited for this save
  double total_ms = 0;     // snapshot start to commit
  bool async = false;
};

// save(), before_optimizer_step(), poll(), finish() and restore() belong to the training thread;
// save() and restore() are collective over every rank of the job. Throws weft::Error naming the
// file for unreadable or damaged checkpoints and for tokenizer files it cannot find; a failed
// save is reported as an outcome, not thrown.
class Checkpointer {
 public:
  // `params` and `optimizer` belong to the job's ParallelModel and must outlive this; `ctx` is
  // null for one process. `rng` is the job's CPU generator, whose state checkpoints hold.
  Checkpointer(const Config& cfg, const ParallelContext* ctx, const ParamList& params, Optimizer& optimizer,
               at::Generator rng);
  // Waits for a save in flight.
  ~Checkpointer();

  // Cleans leftovers of interrupted saves, then loads the newest complete checkpoint under
  // checkpoint.dir (everything, including the job's CPU generator's state) — or, with
  // checkpoint.fallback, the newest one every rank can read — else checkpoint.init_from's weights;
  // nullopt when there is neither.
  std::optional<RestoredState> restore();
  // Loads everything from one checkpoint directory (a resume from it).
  RestoredState load(const std::string& dir);
  // Starts saving the state after `step` optimizer steps to `root` (default checkpoint.dir):
  // waits for a save still in flight, snapshots, and writes in the background (checkpoint.async)
  // or before returning. Applies checkpoint.keep. With checkpoint.on_error=stop, a save that finds
  // the one before it failed starts nothing.
  void save(int64_t step, int64_t consumed_samples, const std::string& root = "");
  // Call before the optimizer updates parameters or state in place: waits for the snapshot copy.
  void before_optimizer_step();
  // Saves that ended since the last call, in order (a save ends when its writer is done and, if
  // async, the next optimizer step has waited for its copy).
  std::vector<SaveOutcome> poll();
  // Waits for the save in flight; returns every outcome not yet returned.
  std::vector<SaveOutcome> finish();

 private:
  struct InFlight;
  void load_weights(CheckpointReader& reader);
  void take_tokenizer_files(const std::string& spec);  // reads its files; data.tokenizer = own spec
  void write(InFlight& job);
  SaveOutcome coordinate(InFlight& job);
  void snapshot(InFlight& job, int64_t step, int64_t consumed_samples);

  Config cfg_;  // as saved: data.tokenizer names the checkpoint's own files once they travel with it
  const ParallelContext* ctx_;
  const ParamList& params_;
  Optimizer& optimizer_;
  mutable at::Generator rng_;  // the job's CPU generator (its state is saved and restored)
  at::Tensor rng_state() const;  // a copy, taken under the generator's lock
  std::map<std::string, std::string> tokenizer_files_;  // file name -> contents, stored in every save
  std::vector<at::Tensor> host_;  // snapshot buffers, allocated at the first save and reused
  std::unique_ptr<InFlight> in_flight_;
  std::unique_ptr<StoreClient> store_;  // the writer thread's own connection (created there)
  std::atomic<bool> cancel_{false};      // the writer stops waiting for peers
  std::vector<SaveOutcome> ended_;
  int64_t saves_ = 0;
};

}  // namespace weft

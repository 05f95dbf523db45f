// weft::Trainer: the embeddable training API. The CLI is a thin layer over it; a service can
// construct one from a Config, register callbacks, run it on a thread of its own and stop it.
//
//   weft::Config cfg = weft::load_config("configs/demo.yaml");
//   weft::Trainer trainer(cfg);
//   trainer.on_step([](const weft::StepMetrics& m) { ... });
//   trainer.run();  // resumes from cfg's checkpoint dir if it holds a complete checkpoint
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "weft/config.h"

namespace weft {

struct StepMetrics {
  int64_t step = 0;  // optimizer steps completed
  // Mean next-token loss over the counted tokens of the whole global batch; the learning rate
  // used; the global gradient norm before clipping.
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_sec = 0, mfu = 0, step_ms = 0;
  int64_t consumed_samples = 0;
  double peak_rss_mb = 0;      // largest peak resident memory over the ranks
  double dp_wait_ms = 0;       // gradient sync exposed after backward (this rank)
  double pipeline_bubble = 0;  // idle share of the pipeline (pp > 1)
};

// Where a job is. kCreated: constructed, run() not called; kRunning: inside run(); kStopping:
// request_stop() was seen, the stop checkpoint is being written; kFinished: run() returned at
// train.steps; kStopped: run() returned early on request_stop(); kFailed: run() threw.
enum class TrainerState { kCreated, kRunning, kStopping, kFinished, kStopped, kFailed };
// "created", "running", "stopping", "finished", "stopped", "failed".
const char* trainer_state_name(TrainerState state);

// A snapshot of a job (Trainer::status()), consistent as of one moment.
struct TrainerStatus {
  TrainerState state = TrainerState::kCreated;
  int64_t step = 0, total_steps = 0;  // optimizer steps completed; train.steps
  double last_loss = 0;               // the latest step's loss (0 before the first step)
  double tokens_per_sec = 0;          // the latest step's, over the whole job
  // Seconds to train.steps at the mean step time of this run() so far; -1 until one step ran.
  double eta_sec = -1;
  int64_t steps_run = 0;  // optimizer steps the latest run() took (0: it resumed at train.steps)
  std::string last_checkpoint;  // the newest complete checkpoint directory this job wrote, or ""
  bool running = false, finished = false;
  bool failed = false;  // run() threw; `error` holds its message
  std::string error;
};

// One checkpoint save's outcome, as on_checkpoint reports it.
struct CheckpointEvent {
  int64_t step = 0;
  bool ok = false;
  std::string dir;    // the committed step directory (ok)
  std::string error;  // one line: what failed and where (not ok)
  uint64_t bytes = 0;
  double blocking_ms = 0;  // how long training waited for it
};

class ParallelContext;
struct SaveOutcome;

struct TrainerOptions {
  // Print a progress line every train.log_interval steps (and eval/checkpoint lines) on stdout.
  // Off by default: a library writes nothing to its host's stdout unasked (the CLI asks).
  bool console = false;
  // The job's rank grid, or null for one process. Must outlive the Trainer. Its dims must be
  // the config's parallel.* layout for its world size.
  const ParallelContext* parallel = nullptr;
};

// Owns the model, optimizer, data, checkpoints and run directory of one job.
// Threads: run() is called once, from one thread; callbacks run on that thread, between steps.
// With checkpoint.async a save is written by a thread the Trainer starts and joins (at the next
// save, at the end of run(), or in the destructor); it calls no user code.
// request_stop() and status() may be called from any thread, and on_step()/on_eval() too, even
// while run() is running (a callback registered then is called from the next step on).
// The constructor locks run.dir (RUN_DIR/.weft.lock, on the primary rank) for the Trainer's life:
// a second job on the same run.dir, in this process or another, is refused with a weft::Error.
// Errors: the constructor and run() throw weft::Error for bad config, data or checkpoints; when
// run() throws, status() reports failed with the message.
// Process-wide effects: the constructor sets LibTorch's intra-op thread count when
// train.threads > 0 (shared by every job of the process; give concurrent jobs the same value).
// Everything else is the job's own, its random generator included: a service may run several
// Trainers one after another, or at once on separate threads, without one changing another's
// numbers.
class Trainer {
 public:
  explicit Trainer(Config cfg, TrainerOptions opts = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains until train.steps or request_stop(); checkpoints on interval, on stop and at the end.
  // Call it once, from any one thread (the host's choice); a second call throws (resume with a
  // new Trainer). A stop requested before run() returns after saving the current state, without
  // training (one process; ranks of a job agree on it after their first step).
  void run();
  // Asks run() to finish the current step, checkpoint, and return. Async-signal-safe.
  void request_stop() { stop_.store(true); }
  TrainerStatus status() const;

  void on_step(std::function<void(const StepMetrics&)> cb);
  void on_eval(std::function<void(int64_t step, double loss)> cb);
  // Called on the training thread when a save's outcome is known (asynchronous saves: at the
  // next step boundary or at the end of run()).
  void on_checkpoint(std::function<void(const CheckpointEvent&)> cb);

  const Config& config() const { return cfg_; }

 private:
  struct State;
  struct Batch;  // this DP rank's micro-batches of one global batch
  struct Pass;   // what forward/backward leaves: the loss on the device, pipeline timings
  void train_loop();
  // One optimizer step, top to bottom; returns its metrics.
  StepMetrics train_step();
  Batch next_batch();
  // Forward and backward of every micro-batch over the pipeline schedule.
  // `poison`: replace the loss by NaN (fault.nan_step).
  Pass forward_backward(const Batch& batch, bool poison);
  // Every fault.straggler_interval steps: per-rank compute time, reported when one stands out.
  void check_stragglers(double compute_ms);
  // fault.max_bad_steps non-finite steps in a row: reload the newest checkpoint, in process.
  void roll_back();
  // Step metrics, with the loss and the stop request agreed over every rank.
  StepMetrics agree(const Pass& pass, const Batch& batch, double lr, double grad_norm, double sync_ms);
  double evaluate_valid();
  void save();
  void report_saves(const std::vector<SaveOutcome>& outcomes);
  // Checkpointer::finish(), marked as a checkpoint operation for the hang watchdog.
  std::vector<SaveOutcome> finish_saves();
  void notify(const StepMetrics& m);
  Config cfg_;
  TrainerOptions opts_;
  std::unique_ptr<State> s_;
  std::atomic<bool> stop_{false};
  mutable std::mutex callbacks_mu_;
  std::vector<std::function<void(const StepMetrics&)>> step_callbacks_;  // guarded by callbacks_mu_
  std::vector<std::function<void(int64_t, double)>> eval_callbacks_;     // guarded by callbacks_mu_
  std::vector<std::function<void(const CheckpointEvent&)>> checkpoint_callbacks_;  // guarded by callbacks_mu_
  mutable std::mutex status_mu_;
  TrainerStatus status_;  // guarded by status_mu_
};

}  // namespace weft

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

#include "core/config.h"

namespace weft {

struct StepMetrics {
  int64_t step = 0;  // optimizer steps completed
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_sec = 0, mfu = 0, step_ms = 0;
  int64_t consumed_samples = 0;
};

struct TrainerStatus {
  int64_t step = 0, total_steps = 0;
  double last_loss = 0;
  bool running = false, finished = false;
};

class ParallelContext;

struct TrainerOptions {
  bool console = true;  // print a progress line every train.log_interval steps
  // The job's rank grid, or null for one process. Must outlive the Trainer. Its dims must be
  // the config's parallel.* layout for its world size.
  const ParallelContext* parallel = nullptr;
};

// Owns the model, optimizer, data and run directory of one job. run() is called once from one
// thread; request_stop() and status() may be called from any thread. Throws weft::Error for bad
// config, data or checkpoints.
class Trainer {
 public:
  explicit Trainer(Config cfg, TrainerOptions opts = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains until train.steps or request_stop(); checkpoints on interval, on stop and at the end.
  void run();
  // Asks run() to finish the current step, checkpoint, and return. Async-signal-safe.
  void request_stop() { stop_.store(true); }
  TrainerStatus status() const;

  void on_step(std::function<void(const StepMetrics&)> cb) { step_callbacks_.push_back(std::move(cb)); }
  void on_eval(std::function<void(int64_t step, double loss)> cb) { eval_callbacks_.push_back(std::move(cb)); }

  const Config& config() const { return cfg_; }

 private:
  struct State;
  // Loads this rank's pieces of the model (and optimizer) from a complete checkpoint.
  // optimizer_step < 0: weights only (init_from); else also the optimizer, at that step.
  void load_state(const std::string& dir, int64_t optimizer_step);
  void save_state();  // collective: every rank writes what it owns
  double sync_partial_grads();
  double evaluate_valid();
  Config cfg_;
  TrainerOptions opts_;
  std::unique_ptr<State> s_;
  std::atomic<bool> stop_{false};
  std::vector<std::function<void(const StepMetrics&)>> step_callbacks_;
  std::vector<std::function<void(int64_t, double)>> eval_callbacks_;
  mutable std::mutex status_mu_;
  TrainerStatus status_;  // guarded by status_mu_
};

}  // namespace weft

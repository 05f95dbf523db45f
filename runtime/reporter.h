// Where a training run's numbers go: one record per optimizer step and per event in
// metrics.jsonl (and TensorBoard), and the console progress line. Only the primary rank of a job
// writes; the others hold a Reporter that does nothing.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <memory>

#include "weft/config.h"
#include "runtime/checkpointer.h"
#include "weft/trainer.h"

namespace weft {

class MetricsLogger;

// Not thread-safe (the training thread). Throws weft::Error if the run directory cannot be written.
class Reporter {
 public:
  // `writes`: this process writes metrics (the primary rank); `console`: and prints progress.
  Reporter(const Config& cfg, bool writes, bool console);
  ~Reporter();

  // Marks where this run's steps start (for the ETA).
  void start(int64_t first_step);
  // One optimizer step: metrics.jsonl row (dp_wait_ms with dp > 1, pipeline_bubble with pp > 1)
  // and, every train.log_interval steps and at the last, the progress line.
  void step(const StepMetrics& m, int64_t dp, int64_t pp);
  void eval(int64_t step, double loss);
  // How a save ended: {"event":"checkpoint", step, dir, blocking_ms, total_ms, bytes, async}, or
  // {"event":"checkpoint_failed", step, error, consecutive_failures} (also logged).
  void checkpoint(const SaveOutcome& o, int64_t consecutive_failures);
  // A start (or rollback) at `step`, 0 for a fresh one: records of later steps (from an attempt that
  // crashed after them) are dropped.
  void resumed_at(int64_t step);
  // Any other event record ({"event": ..., ...}).
  void event(const nlohmann::json& record);

 private:
  const Config& cfg_;
  std::unique_ptr<MetricsLogger> metrics_;
  bool console_;
  int64_t first_step_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace weft

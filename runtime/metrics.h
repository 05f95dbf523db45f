// Where a run's numbers go: metrics.jsonl (one JSON object per line, flushed as written) and
// TensorBoard event files under tb/. Only one process of a job writes them.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <string>

namespace weft {

class TensorBoardWriter;

// Not thread-safe. Throws weft::Error if the run directory cannot be written.
class MetricsLogger {
 public:
  MetricsLogger(const std::string& run_dir, bool tensorboard);
  ~MetricsLogger();
  // One record; numeric fields other than "step" and "event" also go to TensorBoard as
  // <prefix><field> at `step` (prefix "train/" for step records, "<event>/" for events).
  void write(const nlohmann::json& record);
  // A resume at `step`: drops the records of later steps from metrics.jsonl (a crashed run's
  // steps that are about to run again), so every step has one row. TensorBoard files keep them.
  void drop_after(int64_t step);

 private:
  std::string path_;
  std::ofstream jsonl_;
  std::unique_ptr<TensorBoardWriter> tb_;
};

}  // namespace weft

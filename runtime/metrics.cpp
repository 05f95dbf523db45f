// metrics.jsonl + TensorBoard scalars from one record type.
#include "runtime/metrics.h"

#include <filesystem>
#include <sstream>

#include "weft/error.h"
#include "core/fileio.h"
#include "core/tensorboard.h"

namespace weft {

MetricsLogger::MetricsLogger(const std::string& run_dir, bool tensorboard) {
  path_ = (std::filesystem::path(run_dir) / "metrics.jsonl").string();
  jsonl_.open(path_, std::ios::app);
  WEFT_CHECK(jsonl_.good(), "cannot write ", path_, ": check run.dir");
  if (tensorboard) tb_ = std::make_unique<TensorBoardWriter>((std::filesystem::path(run_dir) / "tb").string());
}

MetricsLogger::~MetricsLogger() = default;

void MetricsLogger::write(const nlohmann::json& record) {
  jsonl_ << record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  jsonl_.flush();
  if (!tb_ || !record.contains("step")) return;
  const int64_t step = record.at("step").get<int64_t>();
  const std::string prefix = record.contains("event") ? record.at("event").get<std::string>() + "/" : "train/";
  for (const auto& [key, value] : record.items())
    if (value.is_number() && key != "step") tb_->add_scalar(prefix + key, value.get<double>(), step);
  tb_->flush();
}

void MetricsLogger::drop_after(int64_t step) {
  jsonl_.close();
  std::istringstream in(read_file(path_));
  std::string kept;
  bool dropped = false;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    // Step rows and validation records are redone; other events (faults, failed saves) are history.
    const bool redone = j.is_object() && (!j.contains("event") || j["event"] == "eval");
    const bool later = redone && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() > step;
    dropped |= later;
    if (!later) kept += line + "\n";
  }
  if (dropped) write_file_atomic(path_, kept);
  jsonl_.open(path_, std::ios::app);
  WEFT_CHECK(jsonl_.good(), "cannot write ", path_, ": check run.dir");
}

}  // namespace weft

// metrics.jsonl + TensorBoard scalars from one record type.
#include "runtime/metrics.h"

#include <filesystem>

#include "core/error.h"
#include "core/tensorboard.h"

namespace weft {

MetricsLogger::MetricsLogger(const std::string& run_dir, bool tensorboard) {
  const auto path = std::filesystem::path(run_dir) / "metrics.jsonl";
  jsonl_.open(path, std::ios::app);
  WEFT_CHECK(jsonl_.good(), "cannot write ", path.string(), ": check run.dir");
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

}  // namespace weft

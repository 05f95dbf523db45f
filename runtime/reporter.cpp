// metrics.jsonl rows and the console progress line.
#include "runtime/reporter.h"

#include <cinttypes>
#include <cstdio>

#include "runtime/metrics.h"

namespace weft {
namespace {

std::string format_duration(double s) {
  char buf[32];
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof(buf), "%" PRId64 "h%02" PRId64 "m", t / 3600, t / 60 % 60);
  else
    std::snprintf(buf, sizeof(buf), "%" PRId64 "m%02" PRId64 "s", t / 60, t % 60);
  return buf;
}

}  // namespace

Reporter::Reporter(const Config& cfg, bool writes, bool console) : cfg_(cfg), console_(console && writes) {
  if (writes) metrics_ = std::make_unique<MetricsLogger>(cfg.run.dir, cfg.run.tensorboard);
}

Reporter::~Reporter() = default;

void Reporter::start(int64_t first_step) {
  first_step_ = first_step;
  start_ = std::chrono::steady_clock::now();
}

void Reporter::step(const StepMetrics& m, int64_t dp, int64_t pp) {
  if (metrics_) {
    nlohmann::json row = {{"step", m.step}, {"loss", m.loss}, {"lr", m.lr}, {"grad_norm", m.grad_norm},
                          {"tokens_per_sec", m.tokens_per_sec}, {"mfu", m.mfu}, {"step_ms", m.step_ms},
                          {"consumed_samples", m.consumed_samples}, {"peak_rss_mb", m.peak_rss_mb}};
    if (dp > 1) row["dp_wait_ms"] = m.dp_wait_ms;
    if (pp > 1) row["pipeline_bubble"] = m.pipeline_bubble;
    metrics_->write(row);
  }
  const int64_t steps = cfg_.train.steps;
  if (!console_ || (m.step % cfg_.train.log_interval != 0 && m.step != steps)) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = elapsed / double(m.step - first_step_) * double(steps - m.step);
  std::printf("step %" PRId64 "/%" PRId64 " | loss %.4f | lr %.3e | grad_norm %.3f | %.0f tok/s | MFU %.1f%% | ETA %s\n",
              m.step, steps, m.loss, m.lr, m.grad_norm, m.tokens_per_sec, 100 * m.mfu, format_duration(eta).c_str());
  std::fflush(stdout);
}

void Reporter::eval(int64_t step, double loss) {
  if (metrics_) metrics_->write({{"event", "eval"}, {"step", step}, {"loss", loss}});
  if (console_) std::printf("eval step %" PRId64 " | val_loss %.4f\n", step, loss), std::fflush(stdout);
}

void Reporter::checkpoint(const SaveOutcome& o, int64_t consecutive_failures) {
  if (!metrics_) return;
  if (!o.ok) {
    metrics_->write({{"event", "checkpoint_failed"}, {"step", o.step}, {"error", o.error},
                     {"consecutive_failures", consecutive_failures}});
    if (console_)
      std::printf("checkpoint of step %lld FAILED (%lld in a row): %s\n", (long long)o.step,
                  (long long)consecutive_failures, o.error.c_str()), std::fflush(stdout);
    return;
  }
  metrics_->write({{"event", "checkpoint"}, {"step", o.step}, {"blocking_ms", o.blocking_ms}, {"total_ms", o.total_ms},
                   {"bytes", o.bytes}, {"dir", o.dir}, {"async", o.async}});
  if (console_)
    std::printf("checkpoint %s (%.1f MB, training waited %.0f ms of %.0f ms)\n", o.dir.c_str(), o.bytes / 1e6,
                o.blocking_ms, o.total_ms), std::fflush(stdout);
}

void Reporter::resumed_at(int64_t step) {
  if (metrics_) metrics_->drop_after(step);
}

void Reporter::event(const nlohmann::json& record) {
  if (metrics_) metrics_->write(record);
}

}  // namespace weft

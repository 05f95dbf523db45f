// The training loop, top to bottom: data -> micro-batches -> forward/backward -> clip -> AdamW
// -> metrics -> checkpoint. Resume restores model, optimizer, schedule position, data position
// and RNG, so a resumed run continues bit for bit.
#include "runtime/trainer.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <glog/logging.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "core/error.h"
#include "core/fileio.h"
#include "models/transformer.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/gpt_dataset.h"
#include "runtime/metrics.h"
#include "runtime/optim/optimizer.h"
#include "runtime/perf.h"
#include "runtime/job.h"
#include "parallel/comm.h"
#include "parallel/data_parallel/grad_buckets.h"
#include "parallel/device.h"

namespace fs = std::filesystem;

namespace weft {

struct Trainer::State {
  const ParallelContext* ctx = nullptr;
  int64_t dp = 1, dp_rank = 0;
  bool primary = true;  // writes config, metrics, checkpoints and the console
  at::Device device{at::kCPU};
  Transformer model{nullptr};
  std::unique_ptr<AdamW> optim;
  std::unique_ptr<GradBuckets> grad_buckets;  // data parallel only
  std::shared_ptr<SampleSource> train_data, valid_data;
  std::unique_ptr<MetricsLogger> metrics;
  int64_t step = 0, consumed_samples = 0;
  double flops_per_token = 0, peak_flops = 0;
};

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

std::string bytes_to_hex(const at::Tensor& t) {
  static const char* digits = "0123456789abcdef";
  auto c = t.contiguous();
  const auto* p = c.data_ptr<uint8_t>();
  std::string s;
  for (int64_t i = 0; i < c.numel(); ++i) s += digits[p[i] >> 4], s += digits[p[i] & 15];
  return s;
}

at::Tensor hex_to_bytes(const std::string& s) {
  auto t = at::empty({int64_t(s.size() / 2)}, at::kByte);
  auto* p = t.data_ptr<uint8_t>();
  for (size_t i = 0; i + 1 < s.size(); i += 2) p[i / 2] = uint8_t(std::stoi(s.substr(i, 2), nullptr, 16));
  return t;
}

}  // namespace

Trainer::Trainer(Config cfg, TrainerOptions opts) : cfg_(std::move(cfg)), opts_(opts), s_(new State) {
  cfg_.validate();
  auto& s = *s_;
  s.ctx = opts_.parallel;
  const auto& par = cfg_.parallel;
  WEFT_CHECK(par.tp == 1 && par.pp == 1 && par.vpp == 1 && par.zero == 0 && !par.sequence_parallel,
             "config: parallel.tp=", par.tp, " parallel.pp=", par.pp, " parallel.vpp=", par.vpp,
             " parallel.zero=", par.zero, " parallel.sequence_parallel=", par.sequence_parallel ? "true" : "false",
             ": the Trainer supports data parallelism only so far; set tp=pp=vpp=1, zero=0, "
             "sequence_parallel=false");
  if (s.ctx) {
    s.dp = s.ctx->dims().dp;
    s.dp_rank = s.ctx->coord().dp;
    s.primary = s.ctx->is_primary();
    opts_.console = opts_.console && s.primary;
  }
  s.device = select_device(cfg_.device, s.ctx ? int(s.ctx->env().local_rank) : 0);
  if (cfg_.train.threads > 0) at::set_num_threads(int(cfg_.train.threads));
  WEFT_CHECK(cfg_.train.global_batch_size % (cfg_.train.micro_batch_size * s.dp) == 0,
             "config: train.global_batch_size (", cfg_.train.global_batch_size,
             ") must be a multiple of train.micro_batch_size (", cfg_.train.micro_batch_size,
             ") x data-parallel size (", s.dp, ")");

  s.train_data = open_dataset(cfg_, DataSplit::kTrain);
  if (cfg_.train.eval_interval > 0) s.valid_data = open_dataset(cfg_, DataSplit::kValid);

  if (s.primary) {
    std::error_code ec;
    fs::create_directories(cfg_.run.dir, ec);
    WEFT_CHECK(!ec, "cannot create run.dir '", cfg_.run.dir, "': ", ec.message());
    write_file_atomic((fs::path(cfg_.run.dir) / "config.yaml").string(), to_yaml(cfg_));
    LOG(INFO) << "resolved config:\n" << to_yaml(cfg_);
  }

  s.model = build_model(cfg_.model, s.device, cfg_.train.seed);
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::vector<bool> decay;
  for (const auto& item : s.model->named_parameters()) {
    params.emplace_back(item.key(), item.value());
    decay.push_back(cfg_.optim.decay_norms_and_biases || !is_no_decay_parameter(item.key()));
  }
  s.optim = std::make_unique<AdamW>(std::move(params), std::move(decay), cfg_.optim);
  if (s.ctx && s.dp > 1) {
    GradBucketsOptions gopts;
    gopts.bucket_bytes = std::max<int64_t>(1, int64_t(cfg_.parallel.grad_bucket_mb * (1 << 20)));
    s.grad_buckets = std::make_unique<GradBuckets>(s.model->parameters(), s.ctx->dp(), gopts);
  }

  s.flops_per_token = training_flops_per_token(cfg_.model, cfg_.train.seq_len);
  s.peak_flops = cfg_.run.peak_tflops > 0
                     ? cfg_.run.peak_tflops * 1e12
                     : measure_matmul_peak_flops(cfg_.precision == "bf16" ? at::kBFloat16 : at::kFloat,
                                                 s.device, 0.3);
  if (s.primary) s.metrics = std::make_unique<MetricsLogger>(cfg_.run.dir, cfg_.run.tensorboard);

  if (auto latest = find_latest_checkpoint(cfg_.checkpoint_dir())) {
    auto data = load_checkpoint(*latest, /*with_optimizer=*/true);
    load_model_tensors(*s.model, data.model, *latest);
    s.step = data.step;
    s.optim->load_state(data.optimizer, s.step);
    s.consumed_samples = data.trainer_state.at("consumed_samples").get<int64_t>();
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(hex_to_bytes(data.trainer_state.at("rng_cpu").get<std::string>()));
    LOG(INFO) << "resumed from " << *latest << " at step " << s.step;
    if (s.metrics) s.metrics->write({{"event", "resume"}, {"step", s.step}, {"checkpoint", *latest}});
  } else if (!cfg_.checkpoint.init_from.empty()) {
    const auto dir = resolve_checkpoint_dir(cfg_.checkpoint.init_from);
    load_model_tensors(*s.model, load_checkpoint(dir, /*with_optimizer=*/false).model, dir);
    LOG(INFO) << "initialised weights from " << dir;
    if (s.metrics) s.metrics->write({{"event", "init_from"}, {"step", 0}, {"checkpoint", dir}});
  }
  status_.step = s.step;
  status_.total_steps = cfg_.train.steps;
}

Trainer::~Trainer() = default;

TrainerStatus Trainer::status() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return status_;
}

void Trainer::run() {
  auto& s = *s_;
  const auto& t = cfg_.train;
  // This DP rank's share of each global batch: samples [dp_rank * local, (dp_rank + 1) * local).
  const int64_t local_batch = t.global_batch_size / s.dp;
  const int64_t num_micro = local_batch / t.micro_batch_size;
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.running = true;
  }
  const auto ckpt_dir = cfg_.checkpoint_dir();
  auto save = [&]() {
    // Data-parallel replicas are identical: the primary writes, the others wait for it.
    if (!s.primary) return s.ctx ? barrier(s.ctx->world()) : void();
    const auto t0 = std::chrono::steady_clock::now();
    CheckpointData data;
    data.step = s.step;
    data.model = model_tensors(*s.model);
    data.optimizer = s.optim->state();
    data.trainer_state = {{"step", s.step},
                          {"consumed_samples", s.consumed_samples},
                          {"rng_cpu", bytes_to_hex(at::detail::getDefaultCPUGenerator().get_state())}};
    data.config_yaml = to_yaml(cfg_);
    auto r = save_checkpoint(ckpt_dir, data, cfg_.checkpoint.keep);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    s.metrics->write({{"event", "checkpoint"}, {"step", s.step}, {"blocking_ms", ms},
                      {"total_ms", ms}, {"bytes", r.bytes}, {"dir", r.dir}});
    if (opts_.console) std::printf("checkpoint %s (%.1f MB, %.0f ms)\n", r.dir.c_str(), r.bytes / 1e6, ms);
    if (s.ctx) barrier(s.ctx->world());
  };

  const auto t_start = std::chrono::steady_clock::now();
  const int64_t first_step = s.step;
  int64_t last_saved = s.step;
  bool stopping = false;
  while (s.step < t.steps && !stopping) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = learning_rate(cfg_.optim, s.step, t.steps);
    s.optim->zero_grad();
    double loss_sum = 0;
    for (int64_t m = 0; m < num_micro; ++m) {
      // (mbs, T+1) tokens: inputs are [:, :-1], labels [:, 1:].
      auto batch = make_batch(*s.train_data,
                              s.consumed_samples + s.dp_rank * local_batch + m * t.micro_batch_size,
                              t.micro_batch_size, t.seq_len)
                       .to(s.device);
      // Gradients are reduced over DP only during the last micro-batch's backward (overlapped).
      if (s.grad_buckets && m == num_micro - 1) s.grad_buckets->arm();
      at::Tensor loss;
      {
        ComputeGuard compute(cfg_.precision, s.device);
        loss = s.model->loss(batch);
      }
      (loss / double(num_micro)).backward();
      loss_sum += loss.item<double>();
    }
    // Agree across ranks on the mean loss and on stopping (a signal may reach ranks at different
    // steps), and collect the data-parallel gradient averages started during backward.
    double loss_mean = loss_sum / double(num_micro);
    stopping = stop_.load();
    if (s.ctx && s.dp > 1) {
      auto agree = at::tensor({loss_mean, stopping ? 1.0 : 0.0}, at::kDouble);
      all_reduce(s.ctx->dp(), agree);
      loss_mean = agree[0].item<double>() / double(s.dp);
      stopping = agree[1].item<double>() > 0;
      s.grad_buckets->finish();
    }
    const double grad_norm = clip_grad_norm(s.model->parameters(), cfg_.optim.clip_grad);
    s.optim->step(lr);
    s.step += 1;
    s.consumed_samples += t.global_batch_size;

    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    StepMetrics m;
    m.step = s.step;
    m.loss = loss_mean;
    m.lr = lr;
    m.grad_norm = grad_norm;
    m.step_ms = dt * 1e3;
    m.tokens_per_sec = double(t.global_batch_size * t.seq_len) / dt;
    m.mfu = m.tokens_per_sec * s.flops_per_token / s.peak_flops;
    m.consumed_samples = s.consumed_samples;
    if (s.metrics) s.metrics->write({{"step", m.step}, {"loss", m.loss}, {"lr", m.lr}, {"grad_norm", m.grad_norm},
                      {"tokens_per_sec", m.tokens_per_sec}, {"mfu", m.mfu}, {"step_ms", m.step_ms},
                      {"consumed_samples", m.consumed_samples}});
    if (opts_.console && (s.step % t.log_interval == 0 || s.step == t.steps)) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      const double eta = elapsed / double(s.step - first_step) * double(t.steps - s.step);
      std::printf("step %" PRId64 "/%" PRId64 " | loss %.4f | lr %.3e | grad_norm %.3f | %.0f tok/s | MFU %.1f%% | ETA %s\n",
                  s.step, t.steps, m.loss, m.lr, m.grad_norm, m.tokens_per_sec, 100 * m.mfu,
                  format_duration(eta).c_str());
      std::fflush(stdout);
    }
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      status_.step = s.step;
      status_.last_loss = m.loss;
    }
    for (auto& cb : step_callbacks_) cb(m);

    if (s.valid_data && s.step % t.eval_interval == 0) {
      const double vloss = evaluate(*s.model, *s.valid_data, t.micro_batch_size, t.seq_len,
                                    t.eval_batches, cfg_.precision, s.device);
      if (s.metrics) s.metrics->write({{"event", "eval"}, {"step", s.step}, {"loss", vloss}});
      if (opts_.console) std::printf("eval step %" PRId64 " | val_loss %.4f\n", s.step, vloss);
      for (auto& cb : eval_callbacks_) cb(s.step, vloss);
    }
    if (cfg_.checkpoint.interval > 0 && s.step % cfg_.checkpoint.interval == 0) {
      save();
      last_saved = s.step;
    }
  }
  if (s.step != last_saved || (s.step == first_step && first_step == 0)) save();
  std::lock_guard<std::mutex> lock(status_mu_);
  status_.running = false;
  status_.finished = s.step >= t.steps;
}

}  // namespace weft

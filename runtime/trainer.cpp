// The training loop, top to bottom: data -> micro-batches -> forward/backward -> clip -> AdamW
// -> metrics -> checkpoint. Resume restores model, optimizer, schedule position, data position
// and RNG, so a resumed run continues bit for bit.
#include "runtime/trainer.h"

#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <ATen/autocast_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <glog/logging.h>

#include <chrono>
#include <cmath>
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
#include "parallel/pipeline/executor.h"
#include "parallel/topology.h"
#include "runtime/optim/zero.h"

namespace fs = std::filesystem;

namespace weft {

struct Trainer::State {
  const ParallelContext* ctx = nullptr;
  ParallelDims dims;
  RankCoord coord;
  bool primary = true;  // writes config, metrics, checkpoint metadata and the console
  at::Device device{at::kCPU};
  // The model chunks this rank holds: one, or vpp with interleaving (chunk c = virtual stage
  // c * pp + pp_rank). Parameter names are global, so the chunks' lists never collide.
  std::vector<Transformer> chunks;
  // Every parameter of every chunk, with where its piece lies in the full tensor.
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::vector<tp::Shard> shards;
  std::vector<bool> tied;  // tied embedding held on both the first and the last stage (pp > 1)
  // This rank's copy is the one saved and counted in the grad norm: the TP owner of a
  // replicated piece, and the first stage's copy of a tied embedding.
  std::vector<bool> owned;
  std::unique_ptr<AdamW> optim;              // replicated optimizer, or
  std::unique_ptr<ShardedAdamW> zero;        // ZeRO-1 over dp
  std::vector<std::unique_ptr<GradBuckets>> grad_buckets;  // per chunk, data parallel only
  Schedule schedule;
  std::shared_ptr<SampleSource> train_data, valid_data;
  std::unique_ptr<MetricsLogger> metrics;
  int64_t step = 0, consumed_samples = 0;
  double flops_per_token = 0, peak_flops = 0;

  int64_t dp() const { return dims.dp; }
  // The pipeline group; one process is a pipeline of one stage.
  const Group& pp() const { return ctx ? ctx->pp() : alone; }
  Group alone = [] {
    Group g;
    g.name = "pp";
    g.ranks = {0};
    g.rank = 0;
    return g;
  }();
  int64_t num_stages() const { return dims.pp * dims.vpp; }
  int64_t stage_of(int64_t chunk) const { return chunk * dims.pp + coord.pp; }
  // This rank's gradient pieces (ZeRO: its shard segments), and which of them it counts in the
  // global norm: each element of the model exactly once across TP, PP and DP.
  void norm_terms(std::vector<at::Tensor>& counted, std::vector<at::Tensor>& all) const;
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

void Trainer::State::norm_terms(std::vector<at::Tensor>& counted, std::vector<at::Tensor>& all) const {
  if (zero) {
    auto grads = zero->grads();
    for (size_t i = 0; i < grads.size(); ++i) {
      all.push_back(grads[i]);
      if (owned[zero->segments()[i].param]) counted.push_back(grads[i]);
    }
    return;
  }
  for (size_t k = 0; k < params.size(); ++k) {
    all.push_back(params[k].second.grad());
    if (owned[k]) counted.push_back(params[k].second.grad());
  }
}

Trainer::Trainer(Config cfg, TrainerOptions opts) : cfg_(std::move(cfg)), opts_(opts), s_(new State) {
  cfg_.validate();
  auto& s = *s_;
  s.ctx = opts_.parallel;
  // One process is the 1-rank grid; a layout that needs more ranks is refused here.
  s.dims = s.ctx ? s.ctx->dims() : validate_layout(1, cfg_);
  if (s.ctx) {
    validate_layout(s.ctx->world_size(), cfg_);
    s.coord = s.ctx->coord();
    s.primary = s.ctx->is_primary();
    opts_.console = opts_.console && s.primary;
  }
  s.device = select_device(cfg_.device, s.ctx ? int(s.ctx->env().local_rank) : 0);
  if (cfg_.train.threads > 0) at::set_num_threads(int(cfg_.train.threads));
  const auto& t = cfg_.train;
  const auto& par = cfg_.parallel;

  s.train_data = open_dataset(cfg_, DataSplit::kTrain);
  if (t.eval_interval > 0) s.valid_data = open_dataset(cfg_, DataSplit::kValid);

  if (s.primary) {
    std::error_code ec;
    fs::create_directories(cfg_.run.dir, ec);
    WEFT_CHECK(!ec, "cannot create run.dir '", cfg_.run.dir, "': ", ec.message());
    write_file_atomic((fs::path(cfg_.run.dir) / "config.yaml").string(), to_yaml(cfg_));
    LOG(INFO) << "resolved config:\n" << to_yaml(cfg_);
  }

  // This rank's chunks: its TP slice of the layers of virtual stages coord.pp, coord.pp + pp, ...
  for (int64_t c = 0; c < s.dims.vpp; ++c)
    s.chunks.push_back(build_model(cfg_.model, s.device, t.seed,
                                   model_shard(cfg_, s.dims, s.coord, c, s.ctx ? &s.ctx->tp() : nullptr)));
  std::vector<bool> decay, deferred;
  std::vector<std::vector<size_t>> chunk_params(s.chunks.size());
  for (size_t c = 0; c < s.chunks.size(); ++c) {
    auto& chunk = *s.chunks[c];
    for (const auto& item : chunk.named_parameters()) {
      chunk_params[c].push_back(s.params.size());
      s.params.emplace_back(item.key(), item.value());
      s.shards.push_back(chunk.shard_of(item.key()));
      s.tied.push_back(cfg_.model.tie_embeddings && s.dims.pp > 1 && item.key() == "embed.weight");
      s.owned.push_back(s.shards.back().owner && !(chunk.holds_tied_copy() && item.key() == "embed.weight"));
      decay.push_back((cfg_.optim.decay_norms_and_biases || !is_no_decay_parameter(item.key())));
      deferred.push_back(s.shards.back().partial_grad || s.tied.back());
    }
  }
  const bool zero = par.zero == 1 && s.dp() > 1;
  if (s.dp() > 1) {
    for (size_t c = 0; c < s.chunks.size(); ++c) {
      GradBucketsOptions gopts;
      gopts.bucket_bytes = std::max<int64_t>(1, int64_t(par.grad_bucket_mb * (1 << 20)));
      gopts.overlap = par.overlap_grad_reduce;
      gopts.reduce_scatter = zero;
      std::vector<at::Tensor> ps;
      for (size_t k : chunk_params[c]) ps.push_back(s.params[k].second), gopts.deferred.push_back(deferred[k]);
      s.grad_buckets.push_back(std::make_unique<GradBuckets>(std::move(ps), s.ctx->dp(), gopts));
    }
  }
  if (zero) {
    std::vector<ShardedAdamW::Chunk> zchunks;
    for (size_t c = 0; c < s.chunks.size(); ++c) zchunks.emplace_back(s.grad_buckets[c].get(), chunk_params[c]);
    s.zero = std::make_unique<ShardedAdamW>(std::move(zchunks), s.params, decay, s.ctx->dp(), cfg_.optim);
  } else {
    s.optim = std::make_unique<AdamW>(s.params, decay, cfg_.optim);
  }
  const int64_t micro = t.global_batch_size / (t.micro_batch_size * s.dp());
  const auto schedule_name = par.schedule.empty() ? default_schedule_name(s.dims.vpp) : par.schedule;
  s.schedule = build_schedule(schedule_name, s.dims.pp, s.dims.vpp, micro);

  s.flops_per_token = training_flops_per_token(cfg_.model, t.seq_len);
  s.peak_flops = cfg_.run.peak_tflops > 0
                     ? cfg_.run.peak_tflops * 1e12
                     : measure_matmul_peak_flops(cfg_.precision == "bf16" ? at::kBFloat16 : at::kFloat,
                                                 s.device, 0.3);
  if (s.primary) s.metrics = std::make_unique<MetricsLogger>(cfg_.run.dir, cfg_.run.tensorboard);

  if (auto latest = find_latest_checkpoint(cfg_.checkpoint_dir())) {
    const auto meta = load_checkpoint_metadata(*latest);
    load_state(*latest, meta.step);
    s.step = meta.step;
    s.consumed_samples = meta.trainer_state.at("consumed_samples").get<int64_t>();
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(hex_to_bytes(meta.trainer_state.at("rng_cpu").get<std::string>()));
    LOG(INFO) << "resumed from " << *latest << " at step " << s.step;
    if (s.metrics) s.metrics->write({{"event", "resume"}, {"step", s.step}, {"checkpoint", *latest}});
  } else if (!cfg_.checkpoint.init_from.empty()) {
    const auto dir = resolve_checkpoint_dir(cfg_.checkpoint.init_from);
    load_state(dir, /*optimizer_step=*/-1);
    LOG(INFO) << "initialised weights from " << dir;
    if (s.metrics) s.metrics->write({{"event", "init_from"}, {"step", 0}, {"checkpoint", dir}});
  }
  status_.step = s.step;
  status_.total_steps = t.steps;
}

Trainer::~Trainer() = default;

TrainerStatus Trainer::status() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return status_;
}

namespace {

ShardPlacement placement_of(const tp::Shard& shard) {
  ShardPlacement p;
  p.global_shape = shard.global_shape;
  p.offsets = shard.offsets();
  p.shape = shard.local_shape();
  return p;
}

}  // namespace

void Trainer::load_state(const std::string& dir, int64_t optimizer_step) {
  auto& s = *s_;
  at::NoGradGuard no_grad;
  std::vector<std::pair<std::string, ShardPlacement>> want;
  for (size_t k = 0; k < s.params.size(); ++k) want.emplace_back(s.params[k].first, placement_of(s.shards[k]));
  auto model = load_shards(dir, "model", want);
  for (size_t k = 0; k < s.params.size(); ++k) s.params[k].second.copy_(model[k].second);
  if (optimizer_step < 0) {
    if (s.zero) s.zero->reload_master();
    return;
  }
  want.clear();
  if (s.zero) {
    s.zero->reload_master();
    for (const auto& seg : s.zero->segments()) {
      auto p = placement_of(s.shards[seg.param]);
      p.flat_begin = seg.begin, p.flat_end = seg.end;
      for (const char* kind : {"exp_avg.", "exp_avg_sq."}) want.emplace_back(kind + s.params[seg.param].first, p);
    }
    s.zero->load_state(load_shards(dir, "optim", want), optimizer_step);
  } else {
    for (size_t k = 0; k < s.params.size(); ++k)
      for (const char* kind : {"exp_avg.", "exp_avg_sq."}) want.emplace_back(kind + s.params[k].first, placement_of(s.shards[k]));
    s.optim->load_state(load_shards(dir, "optim", want), optimizer_step);
  }
}

void Trainer::save_state() {
  auto& s = *s_;
  const auto t0 = std::chrono::steady_clock::now();
  CheckpointData data;
  data.step = s.step;
  data.layout = {s.dims.tp, s.dims.pp, s.dims.dp};
  // Each piece is written once: by its TP owner, on DP rank 0 (replicas are identical), except
  // ZeRO-1 optimizer state, which every DP rank owns a slice of.
  const auto& owned = s.owned;
  if (s.coord.dp == 0)
    for (size_t k = 0; k < s.params.size(); ++k) {
      if (!owned[k]) continue;
      data.model.emplace_back(s.params[k].first, s.params[k].second.detach().to(at::kCPU));
      data.model_placement[s.params[k].first] = placement_of(s.shards[k]);
    }
  if (s.zero) {
    auto state = s.zero->state();  // exp_avg.<name>, exp_avg_sq.<name> per segment, in order
    for (size_t i = 0; i < s.zero->segments().size(); ++i) {
      const auto& seg = s.zero->segments()[i];
      if (!owned[seg.param]) continue;
      auto p = placement_of(s.shards[seg.param]);
      p.flat_begin = seg.begin, p.flat_end = seg.end;
      for (size_t j = 2 * i; j < 2 * i + 2; ++j) {
        data.optimizer.push_back(state[j]);
        data.optimizer_placement[state[j].first] = p;
      }
    }
  } else if (s.coord.dp == 0) {
    auto state = s.optim->state();
    for (size_t k = 0; k < s.params.size(); ++k) {
      if (!owned[k]) continue;
      for (size_t j = 2 * k; j < 2 * k + 2; ++j) {
        data.optimizer.push_back(state[j]);
        data.optimizer_placement[state[j].first] = placement_of(s.shards[k]);
      }
    }
  }
  data.trainer_state = {{"step", s.step},
                        {"consumed_samples", s.consumed_samples},
                        {"rng_cpu", bytes_to_hex(at::detail::getDefaultCPUGenerator().get_state())}};
  data.config_yaml = to_yaml(cfg_);
  auto r = save_checkpoint(cfg_.checkpoint_dir(), data, cfg_.checkpoint.keep, s.ctx ? &s.ctx->world() : nullptr);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!s.metrics) return;
  s.metrics->write({{"event", "checkpoint"}, {"step", s.step}, {"blocking_ms", ms},
                    {"total_ms", ms}, {"bytes", r.bytes}, {"dir", r.dir}});
  if (opts_.console) std::printf("checkpoint %s (%.1f MB from rank 0, %.0f ms)\n", r.dir.c_str(), r.bytes / 1e6, ms);
}

namespace {

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

// Sums gradients that are partial over a group: flattened into one buffer, one all-reduce.
void sum_grads(const Group& g, const std::vector<at::Tensor>& params) {
  if (params.empty() || g.size() == 1) return;
  auto buf = flatten_grads(params);
  all_reduce(g, buf);
  assign_grads(params, buf);
}

}  // namespace

double Trainer::sync_partial_grads() {
  auto& s = *s_;
  if (!s.ctx) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> over_tp, tied;
  for (size_t k = 0; k < s.params.size(); ++k) {
    const auto& p = s.params[k].second;
    const auto& sh = s.shards[k];
    if (s.tied[k]) tied.push_back(p);
    if (!sh.partial_grad) continue;
    if (sh.replicas == s.dims.tp) {
      over_tp.push_back(p);
    } else {
      // A KV head shared by tp/heads ranks: each places its gradient at its head's rows of the
      // full tensor, and one TP all-reduce sums every head's copies.
      auto full = at::zeros(sh.global_shape, p.options());
      if (p.grad().defined()) sh.slice(full).copy_(p.grad());
      all_reduce(s.ctx->tp(), full);
      p.mutable_grad() = sh.slice(full).clone();
    }
  }
  sum_grads(s.ctx->tp(), over_tp);
  if (!tied.empty()) sum_grads(s.ctx->embedding(), tied);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void Trainer::run() {
  auto& s = *s_;
  const auto& t = cfg_.train;
  // This DP rank's share of each global batch: samples [dp_rank * local, (dp_rank + 1) * local).
  const int64_t local_batch = t.global_batch_size / s.dp();
  const int64_t num_micro = local_batch / t.micro_batch_size;
  const int64_t S = s.num_stages();
  const bool sp = cfg_.parallel.sequence_parallel && s.dims.tp > 1;
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.running = true;
  }

  const auto t_start = std::chrono::steady_clock::now();
  const int64_t first_step = s.step;
  int64_t last_saved = s.step;
  bool stopping = false;
  while (s.step < t.steps && !stopping) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = learning_rate(cfg_.optim, s.step, t.steps);
    for (auto& [name, p] : s.params)
      if (p.grad().defined()) p.mutable_grad().reset();
    double loss_sum = 0;
    // (mbs, T+1) tokens of micro-batch m: inputs are [:, :-1], labels [:, 1:].
    auto batch = [&](int64_t m) {
      return make_batch(*s.train_data, s.consumed_samples + s.coord.dp * local_batch + m * t.micro_batch_size,
                        t.micro_batch_size, t.seq_len)
          .to(s.device);
    };
    StageStep step;
    step.forward = [&](int64_t m, int64_t chunk, const at::Tensor& input) {
      const int64_t stage = s.stage_of(chunk);
      at::Tensor tokens, in = input, labels;
      if (stage == 0 || stage == S - 1) tokens = batch(m);
      if (stage == 0) in = tokens.narrow(1, 0, t.seq_len);
      if (stage == S - 1) labels = tokens.narrow(1, 1, t.seq_len);
      at::Tensor out;
      {
        ComputeGuard compute(cfg_.precision, s.device);
        out = s.chunks[chunk]->forward_stage(in, labels);
      }
      if (stage < S - 1) return out;
      loss_sum += out.item<double>();
      return out / double(num_micro);
    };
    step.before_backward = [&](int64_t m, int64_t chunk) {
      // Gradients are reduced over DP only during each chunk's last micro-batch's backward.
      if (!s.grad_buckets.empty() && m == num_micro - 1) s.grad_buckets[chunk]->arm();
    };
    step.boundary = [&](int64_t) {
      return at::empty({t.micro_batch_size, sp ? t.seq_len / s.dims.tp : t.seq_len, cfg_.model.hidden_size},
                       at::TensorOptions().dtype(at::kFloat).device(s.device));
    };
    const auto pipe = run_pipeline(s.schedule, s.pp(), step);
    const auto t_backward_done = std::chrono::steady_clock::now();
    sync_partial_grads();
    for (auto& b : s.grad_buckets) b->finish();
    const double dp_wait_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_backward_done).count();

    // Agree across ranks on the mean loss (held by the last stage's TP rank 0 of each DP
    // replica) and on stopping (a signal may reach ranks at different steps).
    double loss_mean = loss_sum / double(num_micro);
    stopping = stop_.load();
    double rss = peak_rss_mb(), bubble = 0;
    if (s.ctx && s.ctx->world_size() > 1) {
      const bool reports = s.coord.pp == s.dims.pp - 1 && s.coord.tp == 0;
      auto agree = at::tensor({reports ? loss_mean : 0.0, stopping ? 1.0 : 0.0, pipe.compute_ms}, at::kDouble);
      all_reduce(s.ctx->world(), agree);
      auto peak = at::tensor({rss, pipe.total_ms}, at::kDouble);
      all_reduce(s.ctx->world(), peak, ReduceOp::kMax);
      loss_mean = agree[0].item<double>() / double(s.dp());
      stopping = agree[1].item<double>() > 0;
      rss = peak[0].item<double>();
      // Idle share of the pipeline: 1 - (compute summed over all ranks) / (ranks x the longest).
      if (s.dims.pp > 1)
        bubble = 1.0 - agree[2].item<double>() / (double(s.ctx->world_size()) * peak[1].item<double>());
    }
    std::vector<at::Tensor> counted, all;
    s.norm_terms(counted, all);
    double sumsq = grad_sumsq(counted);
    if (s.ctx && s.ctx->world_size() > 1) {
      // ZeRO: every rank holds distinct elements; otherwise the DP replicas hold the same ones.
      auto v = at::tensor({sumsq}, at::kDouble);
      all_reduce(s.zero ? s.ctx->world() : s.ctx->model(), v);
      sumsq = v.item<double>();
    }
    const double grad_norm = std::sqrt(sumsq);
    clip_grads(all, grad_norm, cfg_.optim.clip_grad);
    if (s.zero)
      s.zero->step(lr);
    else
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
    m.mfu = m.tokens_per_sec * s.flops_per_token / (s.peak_flops * double(s.ctx ? s.ctx->world_size() : 1));
    m.consumed_samples = s.consumed_samples;
    if (s.metrics) {
      nlohmann::json row = {{"step", m.step}, {"loss", m.loss}, {"lr", m.lr}, {"grad_norm", m.grad_norm},
                            {"tokens_per_sec", m.tokens_per_sec}, {"mfu", m.mfu}, {"step_ms", m.step_ms},
                            {"consumed_samples", m.consumed_samples}, {"peak_rss_mb", rss}};
      if (s.dp() > 1) row["dp_wait_ms"] = dp_wait_ms;
      if (s.dims.pp > 1) row["pipeline_bubble"] = bubble;
      s.metrics->write(row);
    }
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
      const double vloss = evaluate_valid();
      if (s.metrics) s.metrics->write({{"event", "eval"}, {"step", s.step}, {"loss", vloss}});
      if (opts_.console) std::printf("eval step %" PRId64 " | val_loss %.4f\n", s.step, vloss);
      for (auto& cb : eval_callbacks_) cb(s.step, vloss);
    }
    if (cfg_.checkpoint.interval > 0 && s.step % cfg_.checkpoint.interval == 0) {
      save_state();
      last_saved = s.step;
    }
  }
  if (s.step != last_saved || (s.step == first_step && first_step == 0)) save_state();
  std::lock_guard<std::mutex> lock(status_mu_);
  status_.running = false;
  status_.finished = s.step >= t.steps;
}

double Trainer::evaluate_valid() {
  auto& s = *s_;
  const auto& t = cfg_.train;
  // Through the pipeline (one stage when pp = 1), forward only: the same batches as evaluate().
  at::NoGradGuard no_grad;
  const int64_t total = s.valid_data->num_samples(), mbs = t.micro_batch_size, S = s.num_stages();
  const int64_t batches = t.eval_batches > 0 ? t.eval_batches : (total + mbs - 1) / mbs;
  const bool sp = cfg_.parallel.sequence_parallel && s.dims.tp > 1;
  auto window = [&](int64_t b) { return eval_window(b, mbs, total); };
  double loss_sum = 0;
  int64_t tokens = 0;
  StageStep step;
  step.forward = [&](int64_t b, int64_t chunk, const at::Tensor& input) {
    const int64_t stage = s.stage_of(chunk);
    auto [first, count] = window(b);
    at::Tensor batch, in = input, labels;
    if (stage == 0 || stage == S - 1) batch = make_batch(*s.valid_data, first, count, t.seq_len).to(s.device);
    if (stage == 0) in = batch.narrow(1, 0, t.seq_len);
    if (stage == S - 1) labels = batch.narrow(1, 1, t.seq_len);
    ComputeGuard compute(cfg_.precision, s.device);
    auto out = s.chunks[chunk]->forward_stage(in, labels);
    if (stage == S - 1) loss_sum += out.item<double>() * double(count * t.seq_len), tokens += count * t.seq_len;
    return out;
  };
  step.boundary = [&](int64_t b) {
    return at::empty({window(b).second, sp ? t.seq_len / s.dims.tp : t.seq_len, cfg_.model.hidden_size},
                     at::TensorOptions().dtype(at::kFloat).device(s.device));
  };
  run_pipeline_forward(batches, s.dims.vpp, s.pp(), step);
  if (!s.ctx || s.ctx->world_size() == 1) return loss_sum / double(tokens);
  const bool reports = s.coord.pp == s.dims.pp - 1 && s.coord.tp == 0 && s.coord.dp == 0;
  auto v = at::tensor({reports ? loss_sum : 0.0, reports ? double(tokens) : 0.0}, at::kDouble);
  all_reduce(s.ctx->world(), v);
  return v[0].item<double>() / v[1].item<double>();
}

}  // namespace weft

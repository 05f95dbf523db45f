// weft::plan_job: sizes a job for `weft plan` without allocating it.
#include "weft/plan.h"

#include <algorithm>
#include <cstdio>

#include "models/transformer.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/topology.h"
#include "runtime/perf.h"
#include "weft/error.h"

namespace weft {
namespace {

constexpr double kGiB = 1024.0 * 1024 * 1024;

// printf into a std::string (the plan's lines have fixed, short formats).
template <typename... Args>
std::string format(const char* fmt, Args... args) {
  const int n = std::snprintf(nullptr, 0, fmt, args...);
  std::string out(static_cast<size_t>(n) + 1, '\0');
  std::snprintf(out.data(), out.size(), fmt, args...);
  out.pop_back();
  return out;
}

}  // namespace

ModelPlan plan_model(const Config& cfg) {
  cfg.validate();
  ModelPlan p;
  p.model = cfg.model;
  p.parameters = count_published_parameters(cfg.model);
  p.parameters_padded = count_parameters(cfg.model);
  p.weights_bytes = double(p.parameters_padded) * 4;
  p.training_state_bytes = double(p.parameters_padded) * 16;
  p.flops_per_token = training_flops_per_token(cfg.model, cfg.train.seq_len);
  return p;
}

LayoutPlan plan_layout(const Config& cfg, int64_t world_size) {
  cfg.validate();
  const int64_t world = world_size > 0 ? world_size : cfg.parallel.tp * cfg.parallel.pp;
  const ParallelDims dims = validate_layout(world, cfg);
  LayoutPlan p;
  p.tp = dims.tp;
  p.pp = dims.pp;
  p.dp = dims.dp;
  p.vpp = dims.vpp;
  p.layout = dims.describe();
  // TP ranks of a stage hold the same number of parameters (the plan splits evenly); tp rank 0
  // stands for them.
  for (int64_t pp = 0; pp < dims.pp; ++pp) {
    const auto rank = rank_training_state(cfg, dims, RankCoord{0, 0, pp});
    p.max_rank_parameters = std::max(p.max_rank_parameters, rank.parameters);
    p.stages.push_back(StagePlan{pp, rank.layers, rank.parameters, rank.bytes});
  }
  if (dims.pp > 1) {
    p.pipelined = true;
    const int64_t micro = cfg.train.global_batch_size / (cfg.train.micro_batch_size * dims.dp);
    const auto name = cfg.parallel.schedule.empty() ? default_schedule_name(dims.vpp) : cfg.parallel.schedule;
    const auto in_flight = peak_in_flight(build_schedule(name, dims.pp, dims.vpp, micro));
    p.pipeline = PipelinePlan{name, micro, ideal_bubble_fraction(dims.pp, dims.vpp, micro),
                              *std::max_element(in_flight.begin(), in_flight.end())};
  }
  return p;
}

JobPlan plan_job(const Config& cfg, int64_t world_size) { return JobPlan{plan_model(cfg), plan_layout(cfg, world_size)}; }

std::string render_model_plan(const ModelPlan& p) {
  const ModelConfig& m = p.model;
  std::string out = format("model: %s, %lld layers, hidden %lld, heads %lld/%lld kv, ffn %lld, vocab %lld (padded to %lld)\n",
                           m.family.c_str(), (long long)m.num_layers, (long long)m.hidden_size, (long long)m.num_heads,
                           (long long)m.kv_heads(), (long long)m.ffn_hidden_size, (long long)m.vocab_size,
                           (long long)m.padded_vocab_size());
  out += format("parameters=%lld\nparameters_padded=%lld\n", (long long)p.parameters, (long long)p.parameters_padded);
  out += format("weights_gib=%.2f\ntraining_state_gib=%.2f\n", p.weights_bytes / kGiB, p.training_state_bytes / kGiB);
  out += format("flops_per_token=%.4g\n", p.flops_per_token);
  return out;
}

std::string render_layout_plan(const LayoutPlan& p) {
  std::string out = format("layout: %s\n", p.layout.c_str());
  for (const auto& s : p.stages)
    out += format("rank_parameters pp=%lld (each of %lld tp ranks) layers=%s: %lld (%.2f GiB training state)\n",
                  (long long)s.pp, (long long)p.tp, s.layers.c_str(), (long long)s.parameters,
                  s.training_state_bytes / kGiB);
  out += format("max_rank_parameters=%lld\n", (long long)p.max_rank_parameters);
  if (p.pipelined)
    out += format("pipeline: %s, %lld micro-batches per step, ideal bubble %.1f%%, at most %lld "
                  "forward activations (micro-batch x chunk) held per rank\n",
                  p.pipeline.schedule.c_str(), (long long)p.pipeline.micro_batches, 100 * p.pipeline.ideal_bubble,
                  (long long)p.pipeline.max_in_flight);
  return out;
}

std::string render_plan(const JobPlan& p) { return render_model_plan(p.model) + render_layout_plan(p.layout); }

}  // namespace weft

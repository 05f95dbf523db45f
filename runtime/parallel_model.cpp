// The model as this rank trains it: chunks built from the plan, parameter records, buckets,
// optimizer; and the gradient sync that closes every step's backward.
#include "runtime/parallel_model.h"

#include <fnmatch.h>

#include <chrono>

#include "weft/error.h"
#include "models/lora.h"
#include "runtime/job.h"
#include "runtime/optim/zero.h"

namespace weft {
namespace {

bool frozen(const std::string& name, const std::vector<std::string>& patterns, std::vector<bool>& used) {
  bool hit = false;
  for (size_t i = 0; i < patterns.size(); ++i)
    if (fnmatch(patterns[i].c_str(), name.c_str(), 0) == 0) hit = used[i] = true;
  return hit;
}

// Sums gradients that are partial over a group: flattened into one buffer, one all-reduce.
void sum_grads(const Group& g, const std::vector<at::Tensor>& params) {
  if (params.empty() || g.size() == 1) return;
  auto buf = flatten_grads(params);
  all_reduce(g, buf);
  assign_grads(params, buf);
}

}  // namespace

ParallelModel::ParallelModel(const Config& cfg, const ParallelContext* ctx, const at::Device& device)
    : ctx_(ctx), dims_(ctx ? ctx->dims() : validate_layout(1, cfg)) {
  const RankCoord coord = ctx ? ctx->coord() : RankCoord{};
  for (int64_t c = 0; c < dims_.vpp; ++c)
    chunks_.push_back(build_model(cfg.model, device, cfg.train.seed,
                                  model_shard(cfg, dims_, coord, c, ctx ? &ctx->tp() : nullptr), cfg.lora));
  build_records(cfg);
  build_buckets(cfg);
  if (cfg.parallel.zero == 1 && dims_.dp > 1) {
    std::vector<ShardedAdamW::Chunk> zchunks;
    for (size_t c = 0; c < chunks_.size(); ++c) zchunks.emplace_back(buckets_[c].get(), bucketed_[c]);
    optimizer_ = std::make_unique<ShardedAdamW>(std::move(zchunks), params_, ctx->dp(), ctx->world(), cfg.optim);
  } else {
    optimizer_ = std::make_unique<ReplicatedAdamW>(params_, cfg.optim, ctx ? &ctx->model() : nullptr);
  }
}

void ParallelModel::build_records(const Config& cfg) {
  const auto& patterns = cfg.train.freeze;
  std::vector<bool> used(patterns.size(), false);
  for (size_t c = 0; c < chunks_.size(); ++c) {
    auto& chunk = *chunks_[c];
    for (const auto& item : chunk.named_parameters()) {
      ParamRecord p;
      p.name = item.key();
      p.tensor = item.value();
      p.shard = chunk.shard_of(p.name);
      p.chunk = int64_t(c);
      p.tied = cfg.model.tie_embeddings && dims_.pp > 1 && p.name == "embed.weight";
      p.owned = p.shard.owner && !(chunk.holds_tied_copy() && p.name == "embed.weight");
      p.decay = cfg.optim.decay_norms_and_biases || !is_no_decay_parameter(p.name);
      p.deferred = p.shard.partial_grad || p.tied;
      // LoRA trains the adapters only: the base is frozen like a train.freeze match.
      const bool pattern_frozen = frozen(p.name, patterns, used);
      p.trainable = !pattern_frozen && (cfg.lora.rank == 0 || is_lora_parameter(p.name));
      if (!p.trainable) p.tensor.requires_grad_(false);
      params_.push_back(std::move(p));
    }
  }
  // A pattern may match parameters held by other ranks only; the single-process model (the
  // whole model) must match each one.
  if (!ctx_ || ctx_->world_size() == 1)
    for (size_t i = 0; i < patterns.size(); ++i)
      WEFT_CHECK(used[i], "train.freeze: pattern '", patterns[i],
                 "' matches no parameter (names look like 'layers.0.attn.q_proj.weight')");
}

void ParallelModel::build_buckets(const Config& cfg) {
  bucketed_.resize(chunks_.size());
  for (size_t k = 0; k < params_.size(); ++k)
    if (params_[k].trainable) bucketed_[params_[k].chunk].push_back(k);
  if (dims_.dp == 1) return;
  const auto& par = cfg.parallel;
  for (size_t c = 0; c < chunks_.size(); ++c) {
    GradBucketsOptions opts;
    opts.bucket_bytes = std::max<int64_t>(1, int64_t(par.grad_bucket_mb * (1 << 20)));
    opts.overlap = par.overlap_grad_reduce;
    opts.reduce_scatter = par.zero == 1;
    std::vector<at::Tensor> tensors;
    for (size_t k : bucketed_[c]) tensors.push_back(params_[k].tensor), opts.deferred.push_back(params_[k].deferred);
    buckets_.push_back(std::make_unique<GradBuckets>(std::move(tensors), ctx_->dp(), opts));
  }
}

void ParallelModel::zero_grad() {
  for (auto& p : params_)
    if (p.tensor.grad().defined()) p.tensor.mutable_grad().reset();
}

void ParallelModel::arm_grad_reduce(int64_t c) {
  if (!buckets_.empty()) buckets_.at(c)->arm();
}

void ParallelModel::sum_partial_grads() {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> over_tp, tied;
  for (auto& p : params_) {
    if (!p.trainable) continue;
    if (p.tied) tied.push_back(p.tensor);
    if (!p.shard.partial_grad) continue;
    if (p.shard.replicas == dims_.tp) {
      over_tp.push_back(p.tensor);
      continue;
    }
    // A KV head shared by tp/heads ranks: each places its gradient at its head's rows of the
    // full tensor, and one TP all-reduce sums every head's copies.
    auto full = at::zeros(p.shard.global_shape, p.tensor.options());
    if (p.tensor.grad().defined()) p.shard.slice(full).copy_(p.tensor.grad());
    all_reduce(ctx_->tp(), full);
    p.tensor.mutable_grad() = p.shard.slice(full).clone();
  }
  sum_grads(ctx_->tp(), over_tp);
  if (!tied.empty()) sum_grads(ctx_->embedding(), tied);
}

double ParallelModel::finish_grad_sync() {
  const auto t0 = std::chrono::steady_clock::now();
  if (ctx_) sum_partial_grads();
  for (auto& b : buckets_) b->finish();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace weft

// AdamW through LibTorch's fused kernel (the same math as torch.optim.AdamW), and the schedule.
#include "runtime/optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "weft/error.h"
#include "parallel/comm.h"

namespace weft {

double learning_rate(const OptimConfig& cfg, int64_t step, int64_t train_steps) {
  const int64_t W = cfg.warmup_steps;
  if (step < W) return cfg.lr * double(step + 1) / double(W);
  const int64_t S = cfg.decay_steps > 0 ? cfg.decay_steps : train_steps;
  const double p = std::clamp(double(step - W) / double(std::max<int64_t>(1, S - W)), 0.0, 1.0);
  if (cfg.decay == "cosine") return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + std::cos(M_PI * p));
  if (cfg.decay == "linear") return cfg.lr - (cfg.lr - cfg.min_lr) * p;
  return cfg.lr;
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, std::vector<bool> decay,
             const OptimConfig& cfg)
    : params_(std::move(params)), decay_(std::move(decay)), cfg_(cfg) {
  WEFT_CHECK(params_.size() == decay_.size(), "AdamW: one decay flag per parameter");
  for (const auto& [name, p] : params_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    step_count_.push_back(at::zeros({}, p.options().dtype(at::kFloat)));
  }
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  // Two calls, one per weight-decay group; each list holds only parameters that have a grad.
  for (bool with_decay : {true, false}) {
    std::vector<at::Tensor> p, g, m, v, t;
    for (size_t i = 0; i < params_.size(); ++i) {
      const auto& grad = params_[i].second.grad();
      if (decay_[i] != with_decay || !grad.defined()) continue;
      p.push_back(params_[i].second);
      g.push_back(grad);
      m.push_back(exp_avg_[i]);
      v.push_back(exp_avg_sq_[i]);
      t.push_back(step_count_[i]);
    }
    if (p.empty()) continue;
    at::_foreach_add_(t, 1.0);
    at::_fused_adamw_(p, g, m, v, {}, t, lr, cfg_.beta1, cfg_.beta2,
                      with_decay ? cfg_.weight_decay : 0.0, cfg_.eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  }
  ++steps_;
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].first, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, int64_t steps) {
  at::NoGradGuard no_grad;
  auto find = [&](const std::string& name) -> const at::Tensor& {
    for (const auto& [n, t] : state)
      if (n == name) return t;
    fail(str("optimizer state is missing '", name, "': the checkpoint does not match this model"));
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    const auto& m = find("exp_avg." + name);
    const auto& v = find("exp_avg_sq." + name);
    WEFT_CHECK(m.sizes() == exp_avg_[i].sizes() && v.sizes() == exp_avg_sq_[i].sizes(),
               "optimizer state for '", name, "' has shape ", m.sizes(), ", expected ",
               exp_avg_[i].sizes());
    exp_avg_[i].copy_(m);
    exp_avg_sq_[i].copy_(v);
    step_count_[i].fill_(double(steps));
  }
  steps_ = steps;
}

double grad_sumsq(const std::vector<at::Tensor>& grads) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> defined;
  for (const auto& g : grads)
    if (g.defined() && g.numel() > 0) defined.push_back(g);
  if (defined.empty()) return 0.0;
  auto norms = at::stack(at::_foreach_norm(defined, 2.0)).to(at::kDouble);
  return norms.square().sum().item<double>();
}

void clip_grads(const std::vector<at::Tensor>& grads, double norm, double clip) {
  at::NoGradGuard no_grad;
  const double coef = clip / (norm + 1e-6);
  if (!(clip > 0 && coef < 1.0)) return;
  std::vector<at::Tensor> defined;
  for (const auto& g : grads)
    if (g.defined()) defined.push_back(g);
  if (!defined.empty()) at::_foreach_mul_(defined, coef);
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double clip) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params) grads.push_back(p.grad());
  const double total = std::sqrt(grad_sumsq(grads));
  clip_grads(grads, total, clip);
  return total;
}

namespace {
std::vector<std::pair<std::string, at::Tensor>> named(const std::vector<const ParamRecord*>& params) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto* p : params) out.emplace_back(p->name, p->tensor);
  return out;
}
std::vector<bool> decay_flags(const std::vector<const ParamRecord*>& params) {
  std::vector<bool> out;
  for (const auto* p : params) out.push_back(p->decay);
  return out;
}
std::vector<const ParamRecord*> trainable_of(const ParamList& params) {
  std::vector<const ParamRecord*> out;
  for (const auto& p : params)
    if (p.trainable) out.push_back(&p);
  return out;
}
}  // namespace

ReplicatedAdamW::ReplicatedAdamW(const ParamList& params, const OptimConfig& cfg, const Group* model_group)
    : trainable_(trainable_of(params)),
      adam_(named(trainable_), decay_flags(trainable_), cfg),
      model_group_(model_group) {}

void ReplicatedAdamW::grads(std::vector<at::Tensor>& counted, std::vector<at::Tensor>& all) const {
  for (const auto* p : trainable_) {
    all.push_back(p->tensor.grad());
    if (p->owned) counted.push_back(p->tensor.grad());
  }
}

void ReplicatedAdamW::save_state(int64_t dp_rank, NamedTensors& tensors,
                                 std::map<std::string, ShardPlacement>& placements) const {
  if (dp_rank != 0) return;  // the DP replicas hold the same state
  auto state = adam_.state();  // exp_avg.<name>, exp_avg_sq.<name> per parameter, in order
  for (size_t k = 0; k < trainable_.size(); ++k) {
    if (!trainable_[k]->owned) continue;
    for (size_t j = 2 * k; j < 2 * k + 2; ++j) {
      tensors.emplace_back(state[j].first, state[j].second);  // live: the checkpointer snapshots it
      placements[state[j].first] = placement_of(trainable_[k]->shard);
    }
  }
}

std::vector<std::pair<std::string, ShardPlacement>> ReplicatedAdamW::wanted_state() const {
  std::vector<std::pair<std::string, ShardPlacement>> want;
  for (const auto* p : trainable_)
    for (const char* kind : {"exp_avg.", "exp_avg_sq."}) want.emplace_back(kind + p->name, placement_of(p->shard));
  return want;
}

double clip_global_grad_norm(const Optimizer& optimizer, double clip) {
  std::vector<at::Tensor> counted, all;
  optimizer.grads(counted, all);
  double sumsq = grad_sumsq(counted);
  if (const Group* g = optimizer.norm_group(); g && g->size() > 1) {
    auto v = at::tensor({sumsq}, at::kDouble);
    all_reduce(*g, v);
    sumsq = v.item<double>();
  }
  const double norm = std::sqrt(sumsq);
  clip_grads(all, norm, clip);
  return norm;
}

}  // namespace weft

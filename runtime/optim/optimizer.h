// AdamW with PyTorch's semantics (decoupled weight decay, bias correction; the fused LibTorch
// kernel does the update), per-group weight decay, clipping by global grad norm, and the
// warmup + cosine/linear learning-rate schedule.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "weft/config.h"
#include "runtime/params.h"

namespace weft {

struct Group;

// Learning rate for optimizer step `step` (0-based: the step about to be taken):
//   warmup (step < W):   lr * (step + 1) / W
//   decay:               progress p = clamp((step - W) / max(1, S - W), 0, 1), S = decay_steps
//     cosine             min_lr + (lr - min_lr) * (1 + cos(pi p)) / 2
//     linear             lr - (lr - min_lr) * p
//     constant           lr
double learning_rate(const OptimConfig& cfg, int64_t step, int64_t train_steps);

// Owns the Adam moments of a fixed list of named parameters (fp32 masters). Not thread-safe.
class AdamW {
 public:
  // `params` in a stable order; decay[i] says whether params[i] gets weight decay.
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, std::vector<bool> decay,
        const OptimConfig& cfg);

  // One update with learning rate `lr`, using each parameter's .grad().
  void step(double lr);

  int64_t steps_taken() const { return steps_; }
  // State as named tensors (exp_avg.<name>, exp_avg_sq.<name>) for checkpoints.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  // Restores state(); throws weft::Error naming the missing tensor.
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, int64_t steps);

  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<bool> decay_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_, step_count_;
  OptimConfig cfg_;
  int64_t steps_ = 0;
};

// What the training step asks of an optimizer, whichever way its state is laid out: replicated
// AdamW (every DP rank holds all of it) or ZeRO-1 (runtime/optim/zero.h: state sharded over DP).
// Not thread-safe; collectives are issued from the calling thread in the same order on every rank.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // This rank's gradient pieces once the gradient sync has finished: `all` (to clip) and the
  // `counted` ones, which over norm_group() cover each element of the model exactly once.
  virtual void grads(std::vector<at::Tensor>& counted, std::vector<at::Tensor>& all) const = 0;
  // The ranks whose counted pieces make up the global norm; null for one process.
  virtual const Group* norm_group() const = 0;
  // One update of every trainable parameter with learning rate `lr` (and, for ZeRO-1, the
  // all-gather of the updated parameters).
  virtual void step(double lr) = 0;
  // Checkpoint state: what this rank writes (exp_avg.<name> / exp_avg_sq.<name> with their
  // placement; `dp_rank` 0 writes replicated state, every DP rank its ZeRO-1 shard). The tensors
  // are the live state, on the training device: the caller copies them before the next step(). ...
  virtual void save_state(int64_t dp_rank, NamedTensors& tensors,
                          std::map<std::string, ShardPlacement>& placements) const = 0;
  // ... and what it reads back: the pieces wanted, then load_state() with them in that order.
  virtual std::vector<std::pair<std::string, ShardPlacement>> wanted_state() const = 0;
  virtual void load_state(const NamedTensors& state, int64_t steps) = 0;
  // Re-reads the parameters after they were overwritten (a checkpoint load): ZeRO-1's masters.
  virtual void reload_params() {}
};

// AdamW over the trainable parameters, replicated on every DP rank (gradients arrive averaged).
// `params` must outlive it; `model_group` (TP x PP) sums the norm, null for one process.
class ReplicatedAdamW : public Optimizer {
 public:
  ReplicatedAdamW(const ParamList& params, const OptimConfig& cfg, const Group* model_group);
  void grads(std::vector<at::Tensor>& counted, std::vector<at::Tensor>& all) const override;
  const Group* norm_group() const override { return model_group_; }
  void step(double lr) override { adam_.step(lr); }
  void save_state(int64_t dp_rank, NamedTensors& tensors,
                  std::map<std::string, ShardPlacement>& placements) const override;
  std::vector<std::pair<std::string, ShardPlacement>> wanted_state() const override;
  void load_state(const NamedTensors& state, int64_t steps) override { adam_.load_state(state, steps); }

 private:
  std::vector<const ParamRecord*> trainable_;
  AdamW adam_;
  const Group* model_group_;
};

// The global gradient norm over `optimizer`'s norm group (each element once), and clipping of
// every gradient piece by clip / (norm + 1e-6) when that is below 1 (clip > 0), as
// torch.nn.utils.clip_grad_norm_. Returns the norm before clipping. Collective over norm_group().
double clip_global_grad_norm(const Optimizer& optimizer, double clip);

// Global L2 norm of the gradients, each counted once; grads are scaled in place by
// clip / (norm + 1e-6) when clip > 0 and that factor is below 1 (torch.nn.utils.clip_grad_norm_).
// Returns the norm before clipping.
double clip_grad_norm(const std::vector<at::Tensor>& params, double clip);

// The two halves of clip_grad_norm, for gradients spread over ranks: the sum of squares of
// `grads` (undefined ones skipped), accumulated in double, and the in-place scaling.
double grad_sumsq(const std::vector<at::Tensor>& grads);
void clip_grads(const std::vector<at::Tensor>& grads, double norm, double clip);

}  // namespace weft

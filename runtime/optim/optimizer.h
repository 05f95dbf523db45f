// AdamW with PyTorch's semantics (decoupled weight decay, bias correction; the fused LibTorch
// kernel does the update), per-group weight decay, clipping by global grad norm, and the
// warmup + cosine/linear learning-rate schedule.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"

namespace weft {

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

// Global L2 norm of the gradients, each counted once; grads are scaled in place by
// clip / (norm + 1e-6) when clip > 0 and that factor is below 1 (torch.nn.utils.clip_grad_norm_).
// Returns the norm before clipping.
double clip_grad_norm(const std::vector<at::Tensor>& params, double clip);

// The two halves of clip_grad_norm, for gradients spread over ranks: the sum of squares of
// `grads` (undefined ones skipped), accumulated in double, and the in-place scaling.
double grad_sumsq(const std::vector<at::Tensor>& grads);
void clip_grads(const std::vector<at::Tensor>& grads, double norm, double clip);

}  // namespace weft

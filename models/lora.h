// LoRA (Hu et al. 2021, "Low-Rank Adaptation"), numerically as Hugging Face peft computes it: a
// projection y = x W^T + b gets + scaling * B A dropout(x), scaling = lora.alpha / lora.rank, with
// A (r, in) initialised like peft (kaiming_uniform, a = sqrt(5)) and B (out, r) zeros, so a new
// adapter leaves the model unchanged. The adapter plugs into LinearImpl's adapter seam; its
// tensor-parallel split follows the wrapped projection (see transformer_tp_plan):
//   column/heads-split W:  A replicated (its gradient partial over TP),  B split like W's rows.
//   row-split W:           A split like W's columns, B replicated (gradient partial over TP); the
//                          adapter's output is a partial sum, reduced with the projection's.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "weft/config.h"
#include "models/transformer.h"

namespace weft {

// The CPU generator LoRA dropout draws from on the calling thread while alive: a job's own, so
// jobs training on separate threads of one process neither share nor disturb a random stream
// (without one, LibTorch's default CPU generator). Scopes nest; thread-local.
class DropoutGeneratorScope {
 public:
  explicit DropoutGeneratorScope(at::Generator gen);
  ~DropoutGeneratorScope();
  DropoutGeneratorScope(const DropoutGeneratorScope&) = delete;
  DropoutGeneratorScope& operator=(const DropoutGeneratorScope&) = delete;

 private:
  at::Generator prev_;
};

// out = scaling * (dropout(x) A^T) B^T. Shapes are the wrapped projection's local ones:
// x (..., in_local) -> (..., out_local). Dropout applies only in training mode with autograd on
// (evaluation passes, which run without autograd, see the adapter deterministically). Parameters:
// "lora_A" (r, in_local or in) and "lora_B" (out_local or out, r). Not thread-safe (a module).
class LoraAdapterImpl : public ProjectionAdapter {
 public:
  LoraAdapterImpl(int64_t in, int64_t out, int64_t rank, double scaling, double dropout,
                  const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x) override;
  at::Tensor lora_A, lora_B;
  double scaling, dropout;
};

// Wraps every projection of `model` named in lora.target_modules (peft's names: q_proj ...
// down_proj) with a LoraAdapterImpl sized to the projection's local shape. Values are
// unspecified until init_lora_parameter(). Does nothing when lora.rank is 0.
void attach_lora(torch::nn::Module& model, const LoraConfig& lora, const at::TensorOptions& opts);

// True for the parameters attach_lora adds: names "<projection>.adapter.lora_A" / ".lora_B",
// e.g. "layers.3.attn.q_proj.adapter.lora_A".
bool is_lora_parameter(const std::string& name);

// The full (global_shape) initial value of LoRA parameter `name`: A ~ U(-1/sqrt(in), 1/sqrt(in))
// (peft's kaiming_uniform_(a = sqrt(5))) drawn from `gen`; B zeros.
at::Tensor lora_initial_value(const std::string& name, const std::vector<int64_t>& global_shape, at::Generator gen);

// Whole-model tensors (tp = 1, Weft names) with every adapter merged into its projection:
// W + scaling * B A (computed in fp64, stored in W's dtype); the adapter tensors are dropped.
// Throws weft::Error naming a LoRA tensor whose projection or partner factor is missing.
using LoraTensors = std::vector<std::pair<std::string, at::Tensor>>;  // runtime's NamedTensors
LoraTensors merge_lora(const LoraTensors& tensors, double scaling);

}  // namespace weft

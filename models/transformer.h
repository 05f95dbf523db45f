// The model zoo's one decoder-only transformer, in two families: Llama (RMSNorm, RoPE, SwiGLU,
// grouped-query attention, optional tied embeddings) and GPT-2 (LayerNorm, learned positions,
// GELU-tanh, biases, tied embeddings). The math is written for one device; how it is split across
// ranks is a plan kept beside it (parallel/), never a branch inside it.
//
// Legend for shape comments: B batch, T sequence, C hidden, H heads, K kv heads, D head dim,
// F ffn hidden, V vocabulary.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "weft/config.h"
#include "parallel/tensor_parallel/plan.h"

namespace weft {

struct Group;

// Which part of the model this process builds: a tensor-parallel slice of each layer and a
// contiguous range of layers (a pipeline stage, or one virtual stage with interleaving). The
// default is the whole model on one device.
struct ModelShard {
  int64_t tp = 1, tp_rank = 0;
  const Group* tp_group = nullptr;  // needed to run (not to size) a model with tp > 1
  bool sequence_parallel = false;   // activations between TP regions split along T
  int64_t first_layer = 0, last_layer = -1;  // global layers [first, last); -1 = num_layers
  bool embedding = true;  // holds the token (and position) embedding: the first stage
  bool head = true;       // holds final norm, output head and loss: the last stage
};

// The tensor-parallel plan of the transformer, as data (see parallel/tensor_parallel/plan.h).
tp::Plan transformer_tp_plan(const ModelConfig& cfg);

// What wraps a projection: its output is added to the projection's, y = x W^T + b + adapter(x)
// (LoRA: adapter(x) = B A x * alpha / r). Shapes follow the wrapped projection's local (TP) shapes:
// (..., in_local) -> (..., out_local); for a row-parallel projection the output is a partial sum,
// reduced over TP together with the projection's. Not thread-safe (a module).
class ProjectionAdapter : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
};

// The one module every linear projection of the model goes through (q/k/v, o, gate/up, down):
// Y = X W^T + b with W (out, in), b (out). Tensor parallelism splits it by its plan rule
// (`split`: column, heads or row); an adapter can wrap it without touching attention or MLP code.
// A row-parallel projection's bias is not added by forward(): the caller adds it once, after the
// TP reduction of the partial sums.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const at::TensorOptions& opts);
  LinearImpl(at::IntArrayRef weight_shape, bool bias, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);  // (..., in) -> (..., out)
  // Registers `adapter` as submodule "adapter"; replaces an earlier one.
  void set_adapter(std::shared_ptr<ProjectionAdapter> adapter);
  const std::shared_ptr<ProjectionAdapter>& adapter() const { return adapter_; }
  at::Tensor weight, bias;
  tp::Split split = tp::Split::kReplicated;  // set from the model's TP plan at construction

 private:
  std::shared_ptr<ProjectionAdapter> adapter_;
};
TORCH_MODULE(Linear);

// Several projections of the same input as one GEMM (small projections run far below peak on
// their own): returns each part's output, as parts[i]->forward(x) would, adapters included.
std::vector<at::Tensor> fused_linear(const std::vector<LinearImpl*>& parts, const at::Tensor& x);

// A bare named weight: embeddings and the output head.
class WeightImpl : public torch::nn::Module {
 public:
  WeightImpl(at::IntArrayRef shape, const at::TensorOptions& opts);
  at::Tensor weight;
};
TORCH_MODULE(Weight);

// RMSNorm (weight only) or LayerNorm (weight and bias) over the last dim.
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(int64_t dim, bool layer_norm, double eps, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight, bias;
  bool layer_norm;
  double eps;
};
TORCH_MODULE(Norm);

// How the model's tensor-parallel regions talk to the TP group: around each column-parallel ->
// row-parallel pair of a layer, and around the vocabulary-split embedding and loss. With no group
// (one device) every operation is the plain single-device one, so the model has no TP branches.
struct TpRegion {
  const Group* group = nullptr;
  bool sequence_parallel = false;
  // Into the region: x replicated (or split along T) -> full x on every rank.
  at::Tensor enter(const at::Tensor& x) const;
  // Out of it: partial sums -> reduced (or reduced and split along T).
  at::Tensor exit(const at::Tensor& x) const;
  // Embedding lookup with this rank's vocabulary rows [vocab_start, vocab_start + V_local):
  // tokens (B, T) -> (B, T, C), or (B, T/tp, C) with sequence parallelism.
  at::Tensor embed(const at::Tensor& tokens, const at::Tensor& weight, int64_t vocab_start) const;
  // Sum of next-token cross-entropy over the counted labels (label != -100, PyTorch's
  // ignore_index), logits (N, V_local) holding vocabulary [vocab_start, vocab_start + V_local);
  // labels (N). Returns a fp32 scalar; never gathers full-vocabulary logits.
  // Ids >= vocab_size (a padded vocabulary's padding) are outside the softmax.
  at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& labels, int64_t vocab_start,
                               int64_t vocab_size) const;
  // Output-head logits h W^T: h (B, T, C), W this rank's (V_local, C) rows. One device: only the
  // first vocab_size rows (no padded ids); TP: every local row (the loss masks the padding).
  at::Tensor head_logits(const at::Tensor& h, const at::Tensor& weight, int64_t vocab_size) const;
  // Sequence length of the whole activation given this rank's local one, and where the local
  // slice starts along T.
  int64_t full_length(int64_t local_T) const;
  int64_t sequence_offset(int64_t local_T) const;
};

// Labels with this value are not counted in the loss (PyTorch's cross_entropy ignore_index).
constexpr int64_t kIgnoreIndex = -100;

class AttentionImpl : public torch::nn::Module {
 public:
  // Holds H/tp query heads and max(K/tp, 1) kv heads (see the plan).
  AttentionImpl(const ModelConfig& cfg, const ModelShard& shard, const at::TensorOptions& opts);
  // x (B, T, C); cos/sin (T, D), or (B, 1, T, D) for per-sequence positions, for RoPE, or
  // undefined for GPT-2; mask (B, 1, T, T) bool (true = may attend) or undefined for plain causal
  // attention. Returns (B, T, C) partial sums over TP ranks (before the region's exit; o_proj's
  // bias not added).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask = {});
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t heads, kv_heads, head_dim;  // local to this rank
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& cfg, const ModelShard& shard, const at::TensorOptions& opts);
  // (B, T, C) -> (B, T, C) partial sums over TP ranks, down_proj's bias not added.
  at::Tensor forward(const at::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};  // gate_proj: Llama only
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelConfig& cfg, const ModelShard& shard, const at::TensorOptions& opts);
  // x (B, T, C), or (B, T/tp, C) with sequence parallelism; cos/sin/mask as Attention's.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask = {});
  TpRegion region;
  Norm attn_norm{nullptr}, mlp_norm{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

// Parameter names (stable: checkpoints and the HF converter use them):
//   embed.weight (V, C); pos_embed.weight (P, C) [gpt2]   (V: padded_vocab_size(), a multiple
//     of model.make_vocab_size_divisible_by; rows >= vocab_size are padding)
//   layers.N.attn_norm.{weight,bias*}; layers.N.attn.{q,k,v,o}_proj.{weight,bias*}
//   layers.N.mlp_norm.{weight,bias*}; layers.N.mlp.{gate*,up,down}_proj.{weight,bias*}
//   final_norm.{weight,bias*}; lm_head.weight (V, C) unless tied.   (* family-dependent)
//   with LoRA: layers.N.{attn,mlp}.<proj>.adapter.lora_A (r, in), .adapter.lora_B (out, r)
class TransformerImpl : public torch::nn::Module {
 public:
  // Builds this shard's parameters, in their local shapes, with `opts` (use the meta device to
  // size a model without memory). Parameter names are global ("layers.17..." on the stage that
  // holds layer 17). Values are unspecified until init_weights() or a checkpoint load.
  // With lora.rank > 0 the projections in lora.target_modules carry LoRA adapters (models/lora.h),
  // parameters "<projection>.adapter.lora_A" (r, in) and ".lora_B" (out, r), split by the plan.
  TransformerImpl(const ModelConfig& cfg, const at::TensorOptions& opts, const ModelShard& shard = {},
                  const LoraConfig& lora = {});

  // `positions` (B, T) int64, optional everywhere below: each token's position within its own
  // example when a row packs several (0 starts a new example; HF's packed `position_ids`). A
  // token then attends only to earlier tokens of its example and RoPE (or GPT-2's position
  // embedding) uses these positions, so each example is computed exactly as it would be alone.
  // Undefined: one sequence per row, positions 0..T-1, plain causal attention.

  // tokens (B, T) int64 -> logits (B, T, V) in the compute dtype, V = model.vocab_size (padded
  // ids excluded, so they are never generated). Whole model, tp = 1 only.
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions = {});
  // Mean next-token cross-entropy of input ids (B, T) against labels (B, T) over the counted
  // labels (!= kIgnoreIndex); 0 when none counts. Needs the embedding and the head (pp = 1); any tp.
  at::Tensor loss(const at::Tensor& input_ids, const at::Tensor& labels, const at::Tensor& positions = {});
  // One pipeline stage: input is token ids (B, T) on the first stage, else the previous stage's
  // output (B, T, C) ((B, T/tp, C) with sequence parallelism). Returns that stage output, or on
  // the last stage the mean loss over the counted labels (B, T) (0 when none counts). Every
  // stage needs the micro-batch's `positions` when it has them.
  at::Tensor forward_stage(const at::Tensor& input, const at::Tensor& labels, const at::Tensor& positions = {});
  // Layout-independent initialisation: every parameter is drawn in full from a generator
  // seeded by (seed, its name) and this rank keeps its slice, so every layout gets the same
  // model (LoRA factors as peft initialises them). Materialises at most one full parameter at a time.
  void init_weights(uint64_t seed);

  const ModelConfig& config() const { return cfg_; }
  const ModelShard& shard() const { return shard_; }
  at::Tensor lm_head_weight() const { return cfg_.tie_embeddings ? embed->weight : lm_head->weight; }
  // Where each parameter's local piece lies in the full tensor, by name.
  const tp::Shard& shard_of(const std::string& name) const;
  // The last stage's copy of a tied embedding (pp > 1): its gradient is summed with the first
  // stage's over the embedding group, and the first stage owns it.
  bool holds_tied_copy() const { return cfg_.tie_embeddings && shard_.head && !shard_.embedding; }

  Weight embed{nullptr}, pos_embed{nullptr}, lm_head{nullptr};
  std::vector<Block> layers;
  Norm final_norm{nullptr};

 private:
  // RoPE tables for positions [0, T): cos/sin (T, D) in fp32, cached per (T, device).
  std::pair<at::Tensor, at::Tensor> rope(int64_t T, const at::Device& device);
  // What every layer needs about positions for a sequence of T tokens: RoPE cos/sin (undefined
  // for GPT-2) and the attention mask (undefined without `positions`).
  struct Positions {
    at::Tensor cos, sin, mask;
  };
  Positions layer_positions(int64_t T, const at::Tensor& positions, const at::Device& device);
  // (B, T) -> (B, T, C) or (B, T/tp, C); positions (B, T) or undefined.
  at::Tensor embed_tokens(const at::Tensor& tokens, const at::Tensor& positions);
  at::Tensor head_loss(const at::Tensor& x, const at::Tensor& labels);  // -> mean over counted
  ModelConfig cfg_;
  ModelShard shard_;
  TpRegion region_;
  std::vector<std::pair<std::string, tp::Shard>> shards_;
  at::Tensor cos_, sin_;
};
TORCH_MODULE(Transformer);

// RoPE inverse frequencies (D/2) as Hugging Face computes them, including Llama-3.1 scaling.
at::Tensor rope_inv_freq(const ModelConfig& cfg);
// Exact parameter count of a config (no allocation), the padded vocabulary's rows included (what
// memory holds); with a shard, the parameters that shard holds (replicated ones included).
int64_t count_parameters(const ModelConfig& cfg, const ModelShard& shard = {});
// The whole model's count without vocabulary padding: the published figure (e.g. GPT-2 124M's
// 124,439,808), what Hugging Face counts.
int64_t count_published_parameters(const ModelConfig& cfg);
// True for parameters that get no weight decay by default (norm weights and biases).
bool is_no_decay_parameter(const std::string& name);

}  // namespace weft

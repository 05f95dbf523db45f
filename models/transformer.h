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

#include "core/config.h"
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

// A weight (out, in) with an optional bias (out). Y = X W^T + b.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const at::TensorOptions& opts);
  LinearImpl(at::IntArrayRef weight_shape, bool bias, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);  // (..., in) -> (..., out)
  at::Tensor weight, bias;
};
TORCH_MODULE(Linear);

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

// Tensor-parallel regions around the column-parallel -> row-parallel pairs of a layer. Both are
// the identity for a model on one device.
struct TpRegion {
  const Group* group = nullptr;
  bool sequence_parallel = false;
  // Into the region: x replicated (or split along T) -> full x on every rank.
  at::Tensor enter(const at::Tensor& x) const;
  // Out of it: partial sums -> reduced (or reduced and split along T).
  at::Tensor exit(const at::Tensor& x) const;
};

class AttentionImpl : public torch::nn::Module {
 public:
  // Holds H/tp query heads and max(K/tp, 1) kv heads (see the plan).
  AttentionImpl(const ModelConfig& cfg, const ModelShard& shard, const at::TensorOptions& opts);
  // x (B, T, C); cos/sin (T, D) for RoPE or undefined for GPT-2. Returns (B, T, C) partial
  // sums over TP ranks (before the region's exit; o_proj's bias not added).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
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
  // x (B, T, C), or (B, T/tp, C) with sequence parallelism.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
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
class TransformerImpl : public torch::nn::Module {
 public:
  // Builds this shard's parameters, in their local shapes, with `opts` (use the meta device to
  // size a model without memory). Parameter names are global ("layers.17..." on the stage that
  // holds layer 17). Values are unspecified until init_weights() or a checkpoint load.
  TransformerImpl(const ModelConfig& cfg, const at::TensorOptions& opts, const ModelShard& shard = {});

  // tokens (B, T) int64 -> logits (B, T, V) in the compute dtype, V = model.vocab_size (padded
  // ids excluded, so they are never generated). Whole model, tp = 1 only.
  at::Tensor forward(const at::Tensor& tokens);
  // Mean next-token cross-entropy: tokens (B, T+1); predicts tokens[:, 1:] from tokens[:, :-1].
  // Needs the embedding and the head (pp = 1); any tp.
  at::Tensor loss(const at::Tensor& tokens);
  // One pipeline stage: input is tokens (B, T) on the first stage, else the previous stage's
  // output (B, T, C) ((B, T/tp, C) with sequence parallelism). Returns that stage output, or on
  // the last stage the mean loss against labels (B, T).
  at::Tensor forward_stage(const at::Tensor& input, const at::Tensor& labels);
  // Layout-independent initialisation: every parameter is drawn in full from a generator
  // seeded by (seed, its name) and this rank keeps its slice, so every layout gets the same
  // model. Materialises at most one full parameter at a time.
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
  at::Tensor embed_tokens(const at::Tensor& tokens);        // (B, T) -> (B, T, C) or (B, T/tp, C)
  at::Tensor head_loss(const at::Tensor& x, const at::Tensor& labels);  // -> mean loss
  // A whole (V_padded, C) head's first vocab_size rows (the real ids); itself without padding.
  at::Tensor real_vocab_rows(const at::Tensor& w) const;
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

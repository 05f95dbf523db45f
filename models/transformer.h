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

namespace weft {

// A weight (out, in) with an optional bias (out). Y = X W^T + b.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const at::TensorOptions& opts);
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

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& cfg, const at::TensorOptions& opts);
  // x (B, T, C); cos/sin (T, D) for RoPE or undefined for GPT-2. Returns (B, T, C).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t heads, kv_heads, head_dim;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& cfg, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);  // (B, T, C) -> (B, T, C)
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};  // gate_proj: Llama only
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelConfig& cfg, const at::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
  Norm attn_norm{nullptr}, mlp_norm{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

// Parameter names (stable: checkpoints and the HF converter use them):
//   embed.weight (V, C); pos_embed.weight (P, C) [gpt2]
//   layers.N.attn_norm.{weight,bias*}; layers.N.attn.{q,k,v,o}_proj.{weight,bias*}
//   layers.N.mlp_norm.{weight,bias*}; layers.N.mlp.{gate*,up,down}_proj.{weight,bias*}
//   final_norm.{weight,bias*}; lm_head.weight (V, C) unless tied.   (* family-dependent)
class TransformerImpl : public torch::nn::Module {
 public:
  // Builds parameters with `opts` (use the meta device to size a model without memory).
  // Values are unspecified until init_weights() or a checkpoint load.
  TransformerImpl(const ModelConfig& cfg, const at::TensorOptions& opts);

  // tokens (B, T) int64 -> logits (B, T, V) in the compute dtype.
  at::Tensor forward(const at::Tensor& tokens);
  // Mean next-token cross-entropy: tokens (B, T+1); predicts tokens[:, 1:] from tokens[:, :-1].
  at::Tensor loss(const at::Tensor& tokens);
  // Layout-independent initialisation: every parameter is drawn from a generator seeded by
  // (seed, its name), so any sharding of the same model gets the same values.
  void init_weights(uint64_t seed);

  const ModelConfig& config() const { return cfg_; }
  at::Tensor lm_head_weight() const { return cfg_.tie_embeddings ? embed->weight : lm_head->weight; }

  Weight embed{nullptr}, pos_embed{nullptr}, lm_head{nullptr};
  std::vector<Block> layers;
  Norm final_norm{nullptr};

 private:
  // RoPE tables for positions [0, T): cos/sin (T, D) in fp32, cached per (T, device).
  std::pair<at::Tensor, at::Tensor> rope(int64_t T, const at::Device& device);
  ModelConfig cfg_;
  at::Tensor cos_, sin_;
};
TORCH_MODULE(Transformer);

// RoPE inverse frequencies (D/2) as Hugging Face computes them, including Llama-3.1 scaling.
at::Tensor rope_inv_freq(const ModelConfig& cfg);
// Exact parameter count of a config (no allocation).
int64_t count_parameters(const ModelConfig& cfg);
// True for parameters that get no weight decay by default (norm weights and biases).
bool is_no_decay_parameter(const std::string& name);

}  // namespace weft

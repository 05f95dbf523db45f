// Llama and GPT-2 blocks, written once with the family differences as data (norm kind, biases,
// gated MLP, positions). Numerics follow Hugging Face transformers so converted weights give the
// same logits.
#include "models/transformer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>

#include "core/error.h"

namespace weft {
namespace {

bool is_gpt2(const ModelConfig& cfg) { return cfg.family == "gpt2"; }

// 64-bit FNV-1a of the name mixed with the seed: a per-parameter stream that does not depend on
// construction order or on which rank builds it.
uint64_t param_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ (seed * 0x9E3779B97F4A7C15ull);
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

LinearImpl::LinearImpl(int64_t in, int64_t out, bool has_bias, const at::TensorOptions& opts) {
  weight = register_parameter("weight", at::empty({out, in}, opts));
  if (has_bias) bias = register_parameter("bias", at::empty({out}, opts));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) { return at::linear(x, weight, bias); }

WeightImpl::WeightImpl(at::IntArrayRef shape, const at::TensorOptions& opts) {
  weight = register_parameter("weight", at::empty(shape, opts));
}

NormImpl::NormImpl(int64_t dim, bool ln, double e, const at::TensorOptions& opts)
    : layer_norm(ln), eps(e) {
  weight = register_parameter("weight", at::empty({dim}, opts));
  if (layer_norm) bias = register_parameter("bias", at::empty({dim}, opts));
}

at::Tensor NormImpl::forward(const at::Tensor& x) {
  const int64_t dim = weight.size(0);
  if (layer_norm) return at::layer_norm(x, {dim}, weight, bias, eps);
  return at::rms_norm(x, {dim}, weight, eps);
}

AttentionImpl::AttentionImpl(const ModelConfig& cfg, const at::TensorOptions& opts)
    : heads(cfg.num_heads), kv_heads(cfg.kv_heads()), head_dim(cfg.head_dim()) {
  const bool b = is_gpt2(cfg);
  const int64_t C = cfg.hidden_size;
  q_proj = register_module("q_proj", Linear(C, heads * head_dim, b, opts));
  k_proj = register_module("k_proj", Linear(C, kv_heads * head_dim, b, opts));
  v_proj = register_module("v_proj", Linear(C, kv_heads * head_dim, b, opts));
  o_proj = register_module("o_proj", Linear(heads * head_dim, C, b, opts));
}

namespace {
// HF's rotate_half convention: x = [x1, x2] -> x*cos + [-x2, x1]*sin. x (B, H, T, D).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  auto halves = x.chunk(2, -1);
  auto rotated = at::cat({-halves[1], halves[0]}, -1);
  return x * cos.to(x.scalar_type()) + rotated * sin.to(x.scalar_type());
}
}  // namespace

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1);
  // One GEMM for q, k and v: small projections run far below peak on their own.
  auto qkv = at::linear(x, at::cat({q_proj->weight, k_proj->weight, v_proj->weight}),
                        q_proj->bias.defined() ? at::cat({q_proj->bias, k_proj->bias, v_proj->bias})
                                               : at::Tensor());  // (B, T, (H + 2K) D)
  auto parts = qkv.split({heads * head_dim, kv_heads * head_dim, kv_heads * head_dim}, -1);
  auto q = parts[0].view({B, T, heads, head_dim}).transpose(1, 2);     // (B, H, T, D)
  auto k = parts[1].view({B, T, kv_heads, head_dim}).transpose(1, 2);  // (B, K, T, D)
  auto v = parts[2].view({B, T, kv_heads, head_dim}).transpose(1, 2);  // (B, K, T, D)
  if (cos.defined()) {
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
  }
  if (kv_heads != heads) {  // grouped-query attention: each kv head serves heads/kv_heads queries
    // Expanded explicitly: SDPA's enable_gqa takes a slower kernel on the CPU (measured).
    const int64_t rep = heads / kv_heads;
    k = k.unsqueeze(2).expand({B, kv_heads, rep, T, head_dim}).reshape({B, heads, T, head_dim});
    v = v.unsqueeze(2).expand({B, kv_heads, rep, T, head_dim}).reshape({B, heads, T, head_dim});
  }
  auto y = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);  // (B, H, T, D)
  return o_proj(y.transpose(1, 2).reshape({B, T, heads * head_dim}));
}

MlpImpl::MlpImpl(const ModelConfig& cfg, const at::TensorOptions& opts) {
  const bool b = is_gpt2(cfg);
  const int64_t C = cfg.hidden_size, F = cfg.ffn_hidden_size;
  if (!b) gate_proj = register_module("gate_proj", Linear(C, F, false, opts));
  up_proj = register_module("up_proj", Linear(C, F, b, opts));
  down_proj = register_module("down_proj", Linear(F, C, b, opts));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  if (gate_proj) {  // SwiGLU, gate and up in one GEMM
    auto gate_up = at::linear(x, at::cat({gate_proj->weight, up_proj->weight})).chunk(2, -1);  // 2 x (B, T, F)
    return down_proj(at::silu(gate_up[0]) * gate_up[1]);
  }
  return down_proj(at::gelu(up_proj(x), "tanh"));                       // GPT-2
}

BlockImpl::BlockImpl(const ModelConfig& cfg, const at::TensorOptions& opts) {
  const bool ln = is_gpt2(cfg);
  attn_norm = register_module("attn_norm", Norm(cfg.hidden_size, ln, cfg.norm_eps, opts));
  attn = register_module("attn", Attention(cfg, opts));
  mlp_norm = register_module("mlp_norm", Norm(cfg.hidden_size, ln, cfg.norm_eps, opts));
  mlp = register_module("mlp", Mlp(cfg, opts));
}

at::Tensor BlockImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  auto h = x + attn(attn_norm(x), cos, sin);
  return h + mlp(mlp_norm(h));
}

TransformerImpl::TransformerImpl(const ModelConfig& cfg, const at::TensorOptions& opts)
    : cfg_(cfg) {
  embed = register_module("embed", Weight(std::vector<int64_t>{cfg.vocab_size, cfg.hidden_size}, opts));
  if (is_gpt2(cfg)) pos_embed = register_module("pos_embed", Weight(std::vector<int64_t>{cfg.max_seq_len, cfg.hidden_size}, opts));
  auto stack = register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t i = 0; i < cfg.num_layers; ++i)
    layers.push_back(stack->register_module(std::to_string(i), Block(cfg, opts)));
  final_norm = register_module("final_norm", Norm(cfg.hidden_size, is_gpt2(cfg), cfg.norm_eps, opts));
  if (!cfg.tie_embeddings)
    lm_head = register_module("lm_head", Weight(std::vector<int64_t>{cfg.vocab_size, cfg.hidden_size}, opts));
}

at::Tensor rope_inv_freq(const ModelConfig& cfg) {
  const int64_t D = cfg.head_dim();
  auto inv = 1.0 / at::pow(cfg.rope_theta, at::arange(0, D, 2, at::kLong).to(at::kFloat) / D);
  const auto& s = cfg.rope_scaling;
  if (s.type != "llama3") return inv;
  // Llama 3.1: keep high frequencies, divide low ones by `factor`, interpolate between.
  const double low_wavelen = s.original_max_seq_len / s.low_freq_factor;
  const double high_wavelen = s.original_max_seq_len / s.high_freq_factor;
  auto wavelen = 2 * M_PI / inv;
  auto scaled = at::where(wavelen > low_wavelen, inv / s.factor, inv);
  auto smooth = (s.original_max_seq_len / wavelen - s.low_freq_factor) /
                (s.high_freq_factor - s.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return at::where(medium, smoothed, scaled);
}

std::pair<at::Tensor, at::Tensor> TransformerImpl::rope(int64_t T, const at::Device& device) {
  if (!cos_.defined() || cos_.size(0) < T || cos_.device() != device) {
    const int64_t n = std::max(T, cfg_.max_seq_len);
    auto freqs = at::outer(at::arange(n, at::kFloat), rope_inv_freq(cfg_));  // (n, D/2)
    auto emb = at::cat({freqs, freqs}, -1);                                   // (n, D)
    cos_ = emb.cos().to(device);
    sin_ = emb.sin().to(device);
  }
  return {cos_.narrow(0, 0, T), sin_.narrow(0, 0, T)};
}

at::Tensor TransformerImpl::forward(const at::Tensor& tokens) {
  const int64_t T = tokens.size(1);
  WEFT_CHECK(T <= cfg_.max_seq_len, "sequence of ", T, " tokens exceeds model.max_seq_len (",
             cfg_.max_seq_len, ")");
  auto x = at::embedding(embed->weight, tokens);  // (B, T, C)
  at::Tensor cos, sin;
  if (is_gpt2(cfg_)) {
    x = x + pos_embed->weight.narrow(0, 0, T);
  } else {
    std::tie(cos, sin) = rope(T, tokens.device());
  }
  for (auto& layer : layers) x = layer(x, cos, sin);
  return at::linear(final_norm(x), lm_head_weight());  // (B, T, V)
}

at::Tensor TransformerImpl::loss(const at::Tensor& tokens) {
  const int64_t T = tokens.size(1) - 1;
  auto logits = forward(tokens.narrow(1, 0, T));  // (B, T, V)
  auto labels = tokens.narrow(1, 1, T);           // (B, T)
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat),
                                labels.reshape({-1}));
}

void TransformerImpl::init_weights(uint64_t seed) {
  at::NoGradGuard no_grad;
  // Output projections of each residual branch are scaled down with depth (GPT-2, Megatron).
  const double out_std = cfg_.init_std / std::sqrt(2.0 * cfg_.num_layers);
  for (const auto& item : named_parameters()) {
    const std::string& name = item.key();
    at::Tensor p = item.value();
    WEFT_CHECK(!p.is_meta(), "init_weights: parameter ", name, " is on the meta device");
    const bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    if (is_bias) {
      p.zero_();
    } else if (name.find("norm") != std::string::npos) {
      p.fill_(1.0);
    } else {
      const bool out = name.find("o_proj") != std::string::npos ||
                       name.find("down_proj") != std::string::npos;
      auto gen = at::make_generator<at::CPUGeneratorImpl>(param_seed(seed, name));
      auto values = at::empty(p.sizes(), at::kFloat).normal_(0.0, out ? out_std : cfg_.init_std, gen);
      p.copy_(values);
    }
  }
}

int64_t count_parameters(const ModelConfig& cfg) {
  Transformer model(cfg, at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

bool is_no_decay_parameter(const std::string& name) {
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends(".bias") || name.find("norm.") != std::string::npos;
}

}  // namespace weft

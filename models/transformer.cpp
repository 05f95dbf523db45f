// Llama and GPT-2 blocks, written once with the family differences as data (norm kind, biases,
// gated MLP, positions). Numerics follow Hugging Face transformers so converted weights give the
// same logits.
#include "models/transformer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>

#include "weft/error.h"
#include "models/lora.h"
#include "parallel/tensor_parallel/ops.h"

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

LinearImpl::LinearImpl(int64_t in, int64_t out, bool has_bias, const at::TensorOptions& opts)
    : LinearImpl(std::vector<int64_t>{out, in}, has_bias, opts) {}

LinearImpl::LinearImpl(at::IntArrayRef shape, bool has_bias, const at::TensorOptions& opts) {
  weight = register_parameter("weight", at::empty(shape, opts));
  if (has_bias) bias = register_parameter("bias", at::empty({shape[0]}, opts));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) { return fused_linear({this}, x)[0]; }

void LinearImpl::set_adapter(std::shared_ptr<ProjectionAdapter> adapter) {
  WEFT_CHECK(adapter, "Linear::set_adapter: null adapter");
  adapter_ = adapter_ ? replace_module("adapter", std::move(adapter)) : register_module("adapter", std::move(adapter));
}

std::vector<at::Tensor> fused_linear(const std::vector<LinearImpl*>& parts, const at::Tensor& x) {
  // Row-parallel biases are added by the caller after the reduction (see LinearImpl).
  auto bias_of = [](const LinearImpl* p) { return p->split == tp::Split::kRow ? at::Tensor() : p->bias; };
  std::vector<at::Tensor> out;
  if (parts.size() == 1) {
    out.push_back(at::linear(x, parts[0]->weight, bias_of(parts[0])));
  } else {
    std::vector<at::Tensor> w, b;
    std::vector<int64_t> sizes;
    for (const auto* p : parts) {
      w.push_back(p->weight);
      if (bias_of(p).defined()) b.push_back(bias_of(p));
      sizes.push_back(p->weight.size(0));
    }
    WEFT_CHECK(b.empty() || b.size() == parts.size(), "fused_linear: parts must all have a bias or none");
    auto y = at::linear(x, at::cat(w), b.empty() ? at::Tensor() : at::cat(b));  // (..., sum of out)
    out = y.split(sizes, -1);
  }
  for (size_t i = 0; i < parts.size(); ++i)
    if (parts[i]->adapter()) out[i] = out[i] + parts[i]->adapter()->forward(x);
  return out;
}

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

at::Tensor TpRegion::enter(const at::Tensor& x) const {
  if (!group) return x;
  return sequence_parallel ? tp::gather_sequence(x, *group) : tp::copy_to_region(x, *group);
}

at::Tensor TpRegion::exit(const at::Tensor& x) const {
  if (!group) return x;
  return sequence_parallel ? tp::reduce_scatter_sequence(x, *group) : tp::reduce_from_region(x, *group);
}

at::Tensor TpRegion::embed(const at::Tensor& tokens, const at::Tensor& weight, int64_t vocab_start) const {
  if (!group) return at::embedding(weight, tokens);
  return exit(tp::vocab_parallel_embedding_partial(tokens, weight, vocab_start));
}

at::Tensor TpRegion::cross_entropy_sum(const at::Tensor& logits, const at::Tensor& labels, int64_t vocab_start,
                                       int64_t vocab_size) const {
  if (!group)
    return at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum, kIgnoreIndex);
  auto per_token = tp::vocab_parallel_cross_entropy(logits, labels, vocab_start, *group, vocab_size);  // (N)
  return per_token.masked_fill(labels.eq(kIgnoreIndex), 0.0).sum();
}

at::Tensor TpRegion::head_logits(const at::Tensor& h, const at::Tensor& weight, int64_t vocab_size) const {
  if (!group && weight.size(0) > vocab_size) return at::linear(h, weight.narrow(0, 0, vocab_size));
  return at::linear(h, weight);
}

int64_t TpRegion::full_length(int64_t local_T) const {
  return group && sequence_parallel ? local_T * group->size() : local_T;
}

int64_t TpRegion::sequence_offset(int64_t local_T) const {
  return group && sequence_parallel ? group->rank * local_T : 0;
}

tp::Plan transformer_tp_plan(const ModelConfig& cfg) {
  using tp::Split;
  const int64_t D = cfg.head_dim();
  return {
      {"embed.weight", Split::kColumn},  // vocabulary rows
      {"lm_head.weight", Split::kColumn},
      {"q_proj.weight", Split::kColumn}, {"q_proj.bias", Split::kColumn},
      {"k_proj.weight", Split::kHeads, D}, {"k_proj.bias", Split::kHeads, D},
      {"v_proj.weight", Split::kHeads, D}, {"v_proj.bias", Split::kHeads, D},
      {"o_proj.weight", Split::kRow},
      {"gate_proj.weight", Split::kColumn},
      {"up_proj.weight", Split::kColumn}, {"up_proj.bias", Split::kColumn},
      {"down_proj.weight", Split::kRow},
      // LoRA factors follow their projection (models/lora.h): beside a row-split W, A is split
      // like W's columns and B replicated; beside a column/heads-split W, B is split like W's rows
      // and A replicated. The replicated factor's gradient is partial over TP.
      {"q_proj.adapter.lora_A", Split::kReplicated, 1, true}, {"q_proj.adapter.lora_B", Split::kColumn},
      {"k_proj.adapter.lora_A", Split::kReplicated, 1, true}, {"k_proj.adapter.lora_B", Split::kHeads, D},
      {"v_proj.adapter.lora_A", Split::kReplicated, 1, true}, {"v_proj.adapter.lora_B", Split::kHeads, D},
      {"o_proj.adapter.lora_A", Split::kRow}, {"o_proj.adapter.lora_B", Split::kReplicated, 1, true},
      {"gate_proj.adapter.lora_A", Split::kReplicated, 1, true}, {"gate_proj.adapter.lora_B", Split::kColumn},
      {"up_proj.adapter.lora_A", Split::kReplicated, 1, true}, {"up_proj.adapter.lora_B", Split::kColumn},
      {"down_proj.adapter.lora_A", Split::kRow}, {"down_proj.adapter.lora_B", Split::kReplicated, 1, true},
      // everything else (norms, o_proj/down_proj biases, pos_embed) is replicated
  };
}

AttentionImpl::AttentionImpl(const ModelConfig& cfg, const ModelShard& shard, const at::TensorOptions& opts)
    : heads(tp::local_heads(cfg.num_heads, shard.tp)),
      kv_heads(tp::local_heads(cfg.kv_heads(), shard.tp)),
      head_dim(cfg.head_dim()) {
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

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                  const at::Tensor& mask) {
  const int64_t B = x.size(0), T = x.size(1);
  auto parts = fused_linear({q_proj.get(), k_proj.get(), v_proj.get()}, x);  // (B, T, H D), 2 x (B, T, K D)
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
  // Packed examples: the mask keeps each to itself (and is causal); else the causal kernel.
  auto y = mask.defined() ? at::scaled_dot_product_attention(q, k, v, mask, 0.0, /*is_causal=*/false)
                          : at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);  // (B, H, T, D)
  return o_proj(y.transpose(1, 2).reshape({B, T, heads * head_dim}));  // bias after the reduction
}

MlpImpl::MlpImpl(const ModelConfig& cfg, const ModelShard& shard, const at::TensorOptions& opts) {
  const bool b = is_gpt2(cfg);
  const int64_t C = cfg.hidden_size, F = tp::split_size(cfg.ffn_hidden_size, shard.tp, "model.ffn_hidden_size");
  if (!b) gate_proj = register_module("gate_proj", Linear(C, F, false, opts));
  up_proj = register_module("up_proj", Linear(C, F, b, opts));
  down_proj = register_module("down_proj", Linear(F, C, b, opts));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  // down_proj is row-parallel: its bias is added after the reduction.
  if (gate_proj) {  // SwiGLU, gate and up in one GEMM
    auto gate_up = fused_linear({gate_proj.get(), up_proj.get()}, x);  // 2 x (B, T, F)
    return down_proj(at::silu(gate_up[0]) * gate_up[1]);
  }
  return down_proj(at::gelu(up_proj(x), "tanh"));  // GPT-2
}

BlockImpl::BlockImpl(const ModelConfig& cfg, const ModelShard& shard, const at::TensorOptions& opts)
    : region{shard.tp_group, shard.sequence_parallel} {
  const bool ln = is_gpt2(cfg);
  attn_norm = register_module("attn_norm", Norm(cfg.hidden_size, ln, cfg.norm_eps, opts));
  attn = register_module("attn", Attention(cfg, shard, opts));
  mlp_norm = register_module("mlp_norm", Norm(cfg.hidden_size, ln, cfg.norm_eps, opts));
  mlp = register_module("mlp", Mlp(cfg, shard, opts));
}

namespace {
at::Tensor add_bias(const at::Tensor& y, const at::Tensor& bias) { return bias.defined() ? y + bias : y; }
}  // namespace

at::Tensor BlockImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                              const at::Tensor& mask) {
  // Each branch: enter the TP region, column- then row-parallel GEMMs, exit (reduce), bias.
  auto a = region.exit(attn->forward(region.enter(attn_norm(x)), cos, sin, mask));
  auto h = x + add_bias(a, attn->o_proj->bias);
  auto m = region.exit(mlp(region.enter(mlp_norm(h))));
  return h + add_bias(m, mlp->down_proj->bias);
}

TransformerImpl::TransformerImpl(const ModelConfig& cfg, const at::TensorOptions& opts, const ModelShard& shard,
                                 const LoraConfig& lora)
    : cfg_(cfg), shard_(shard), region_{shard.tp > 1 ? shard.tp_group : nullptr, shard.sequence_parallel} {
  if (shard_.last_layer < 0) shard_.last_layer = cfg.num_layers;
  WEFT_CHECK(shard_.first_layer >= 0 && shard_.first_layer <= shard_.last_layer &&
                 shard_.last_layer <= cfg.num_layers,
             "model shard: layers [", shard_.first_layer, ", ", shard_.last_layer, ") are outside the ",
             cfg.num_layers, " layers of the model");
  WEFT_CHECK(shard_.tp >= 1 && shard_.tp_rank >= 0 && shard_.tp_rank < shard_.tp, "model shard: tp rank ",
             shard_.tp_rank, " outside tp(", shard_.tp, ")");
  // Embedding and head rows: the padded vocabulary (layout-independent), split over TP.
  const int64_t V = tp::split_size(cfg.padded_vocab_size(), shard_.tp,
                                   "the vocabulary padded by model.make_vocab_size_divisible_by");
  const int64_t C = cfg.hidden_size;
  if (shard_.embedding || holds_tied_copy())
    embed = register_module("embed", Weight(std::vector<int64_t>{V, C}, opts));
  if (shard_.embedding && is_gpt2(cfg))
    pos_embed = register_module("pos_embed", Weight(std::vector<int64_t>{cfg.max_seq_len, C}, opts));
  auto stack = register_module("layers", std::make_shared<torch::nn::Module>());
  for (int64_t i = shard_.first_layer; i < shard_.last_layer; ++i)
    layers.push_back(stack->register_module(std::to_string(i), Block(cfg, shard_, opts)));
  if (shard_.head) {
    final_norm = register_module("final_norm", Norm(C, is_gpt2(cfg), cfg.norm_eps, opts));
    if (!cfg.tie_embeddings) lm_head = register_module("lm_head", Weight(std::vector<int64_t>{V, C}, opts));
  }
  attach_lora(*this, lora, opts);  // sized from each projection's local shape
  // Each projection learns its split from the plan (what an adapter must follow).
  const auto plan = transformer_tp_plan(cfg);
  for (const auto& item : named_modules("", /*include_self=*/false))
    if (auto* linear = item.value()->as<LinearImpl>())
      if (const auto* rule = tp::find_rule(plan, item.key() + ".weight")) linear->split = rule->split;
  // Where each local piece lies in the full tensor: the full shape is the local one with the
  // split dim scaled back (kHeads replicated pieces: the model's kv heads).
  for (const auto& item : named_parameters()) {
    const auto* rule = tp::find_rule(plan, item.key());
    auto global = item.value().sizes().vec();
    if (rule && shard_.tp > 1 && rule->split != tp::Split::kReplicated) {
      if (rule->split == tp::Split::kHeads)
        global[0] = cfg.kv_heads() * rule->unit;
      else
        global[rule->split == tp::Split::kRow ? 1 : 0] *= shard_.tp;
    }
    auto s = tp::shard_of(item.key(), global, rule, shard_.tp, shard_.tp_rank, shard_.sequence_parallel);
    WEFT_CHECK(s.local_shape() == item.value().sizes().vec(), "tensor-parallel plan and model disagree on '",
               item.key(), "'");
    if (item.key() == "embed.weight" && holds_tied_copy()) s.owner = false;
    shards_.emplace_back(item.key(), std::move(s));
  }
}

const tp::Shard& TransformerImpl::shard_of(const std::string& name) const {
  for (const auto& [n, s] : shards_)
    if (n == name) return s;
  fail(str("model shard holds no parameter '", name, "'"));
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

TransformerImpl::Positions TransformerImpl::layer_positions(int64_t T, const at::Tensor& positions,
                                                           const at::Device& device) {
  Positions p;
  if (!positions.defined()) {
    if (!is_gpt2(cfg_)) std::tie(p.cos, p.sin) = rope(T, device);
    return p;
  }
  WEFT_CHECK(positions.dim() == 2 && positions.size(1) == T, "positions must be (B, ", T, "), got ",
             positions.sizes());
  if (!is_gpt2(cfg_)) {
    auto [cos, sin] = rope(cfg_.max_seq_len, device);  // (P, D): gathered at each token's position
    const int64_t B = positions.size(0), D = cos.size(1);
    const auto flat = positions.reshape({-1});
    p.cos = cos.index_select(0, flat).view({B, 1, T, D});
    p.sin = sin.index_select(0, flat).view({B, 1, T, D});
  }
  // Example k of a row is the tokens after the k-th position 0: a token may attend to earlier
  // tokens of its own example only.
  const auto example = positions.eq(0).cumsum(1);                                   // (B, T)
  const auto same = example.unsqueeze(2).eq(example.unsqueeze(1));                  // (B, T, T)
  const auto causal = at::ones({T, T}, at::TensorOptions().dtype(at::kBool).device(device)).tril();
  p.mask = same.logical_and(causal).unsqueeze(1);                                    // (B, 1, T, T)
  return p;
}

at::Tensor TransformerImpl::embed_tokens(const at::Tensor& tokens, const at::Tensor& positions) {
  const int64_t T = tokens.size(1);
  WEFT_CHECK(T <= cfg_.max_seq_len, "sequence of ", T, " tokens exceeds model.max_seq_len (",
             cfg_.max_seq_len, ")");
  auto x = region_.embed(tokens, embed->weight, shard_of("embed.weight").start);  // (B, T, C) or (B, T/tp, C)
  if (is_gpt2(cfg_)) {
    const int64_t local_T = x.size(1);  // positions of this rank's slice of the sequence
    const int64_t offset = region_.sequence_offset(local_T);
    x = positions.defined() ? x + at::embedding(pos_embed->weight, positions.narrow(1, offset, local_T))
                            : x + pos_embed->weight.narrow(0, offset, local_T);
  }
  return x;
}

at::Tensor TransformerImpl::head_loss(const at::Tensor& x, const at::Tensor& labels) {
  auto h = region_.enter(final_norm(x));           // (B, T, C)
  // One device: only the real vocabulary's rows, so padded ids are outside the softmax (and
  // their rows get no gradient). TP: the loss masks the padding wherever it falls.
  auto logits = region_.head_logits(h, lm_head_weight(), cfg_.vocab_size);  // (B, T, V) or (B, T, V_padded/tp)
  auto flat = logits.reshape({-1, logits.size(-1)}).to(at::kFloat);
  const int64_t vocab_start = shard_of(cfg_.tie_embeddings ? "embed.weight" : "lm_head.weight").start;
  const auto flat_labels = labels.reshape({-1});
  // Mean over counted labels; a micro-batch with none counts 0 (and gets zero gradients).
  auto counted = flat_labels.ne(kIgnoreIndex).sum().clamp_min(1);
  return region_.cross_entropy_sum(flat, flat_labels, vocab_start, cfg_.vocab_size) / counted;
}

at::Tensor TransformerImpl::forward_stage(const at::Tensor& input, const at::Tensor& labels,
                                         const at::Tensor& positions) {
  auto x = shard_.embedding ? embed_tokens(input, positions) : input;
  const auto pos = layer_positions(region_.full_length(x.size(1)), positions, x.device());
  for (auto& layer : layers) x = layer->forward(x, pos.cos, pos.sin, pos.mask);
  return shard_.head ? head_loss(x, labels) : x;
}

at::Tensor TransformerImpl::forward(const at::Tensor& tokens, const at::Tensor& positions) {
  WEFT_CHECK(shard_.tp == 1 && shard_.embedding && shard_.head && layers.size() == size_t(cfg_.num_layers),
             "forward() needs the whole model on one device; this is a shard");
  auto x = embed_tokens(tokens, positions);
  const auto pos = layer_positions(tokens.size(1), positions, tokens.device());
  for (auto& layer : layers) x = layer->forward(x, pos.cos, pos.sin, pos.mask);
  return region_.head_logits(final_norm(x), lm_head_weight(), cfg_.vocab_size);  // (B, T, V): no padded ids
}

at::Tensor TransformerImpl::loss(const at::Tensor& input_ids, const at::Tensor& labels, const at::Tensor& positions) {
  WEFT_CHECK(shard_.embedding && shard_.head, "loss() needs every layer; use forward_stage() on a pipeline stage");
  return forward_stage(input_ids, labels, positions);
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
    if (is_lora_parameter(name)) {
      const auto& shard = shard_of(name);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(param_seed(seed, name));
      p.copy_(shard.slice(lora_initial_value(name, shard.global_shape, gen)));
    } else if (is_bias) {
      p.zero_();
    } else if (name.find("norm") != std::string::npos) {
      p.fill_(1.0);
    } else {
      const bool out = name.find("o_proj") != std::string::npos ||
                       name.find("down_proj") != std::string::npos;
      const auto& shard = shard_of(name);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(param_seed(seed, name));
      auto full = at::empty(shard.global_shape, at::kFloat).normal_(0.0, out ? out_std : cfg_.init_std, gen);
      p.copy_(shard.slice(full));
    }
  }
}

int64_t count_parameters(const ModelConfig& cfg, const ModelShard& shard) {
  Transformer model(cfg, at::TensorOptions().device(at::kMeta).dtype(at::kFloat), shard);
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

int64_t count_published_parameters(const ModelConfig& cfg) {
  const int64_t padding_rows = cfg.padded_vocab_size() - cfg.vocab_size;
  return count_parameters(cfg) - padding_rows * cfg.hidden_size * (cfg.tie_embeddings ? 1 : 2);
}

bool is_no_decay_parameter(const std::string& name) {
  auto ends = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends(".bias") || name.find("norm.") != std::string::npos;
}

}  // namespace weft

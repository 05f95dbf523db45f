// Name and layout mapping between Hugging Face checkpoints and Weft. Llama's q/k weights are
// already in the rotate-half layout Weft uses; GPT-2's Conv1D weights are (in, out) and its
// attention input projection is fused (C, 3C), so they are transposed and split.
#include "runtime/hf_convert.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace weft {
namespace {

template <typename T>
T get_or(const json& j, const char* key, T fallback) {
  return j.contains(key) && !j.at(key).is_null() ? j.at(key).get<T>() : fallback;
}

ModelConfig llama_config(const json& j, const std::string& path) {
  ModelConfig c;
  c.family = "llama";
  c.vocab_size = j.at("vocab_size");
  c.hidden_size = j.at("hidden_size");
  c.num_layers = j.at("num_hidden_layers");
  c.num_heads = j.at("num_attention_heads");
  c.num_kv_heads = get_or<int64_t>(j, "num_key_value_heads", c.num_heads);
  c.ffn_hidden_size = j.at("intermediate_size");
  c.max_seq_len = get_or<int64_t>(j, "max_position_embeddings", 2048);
  c.norm_eps = get_or<double>(j, "rms_norm_eps", 1e-6);
  c.tie_embeddings = get_or<bool>(j, "tie_word_embeddings", false);
  WEFT_CHECK(get_or<int64_t>(j, "head_dim", c.hidden_size / c.num_heads) == c.hidden_size / c.num_heads,
             path, ": head_dim != hidden_size / num_attention_heads is not supported");
  WEFT_CHECK(!get_or<bool>(j, "attention_bias", false) && !get_or<bool>(j, "mlp_bias", false), path,
             ": attention_bias/mlp_bias are not supported by Weft's llama family");
  WEFT_CHECK(get_or<std::string>(j, "hidden_act", "silu") == "silu", path, ": hidden_act must be silu");
  // transformers >= 5 keeps theta and scaling in rope_parameters; older files at the top level.
  json rope = j.contains("rope_parameters") && j.at("rope_parameters").is_object() ? j.at("rope_parameters")
              : j.contains("rope_scaling") && j.at("rope_scaling").is_object()   ? j.at("rope_scaling")
                                                                                  : json::object();
  c.rope_theta = get_or<double>(rope, "rope_theta", get_or<double>(j, "rope_theta", 10000.0));
  const std::string type = get_or<std::string>(rope, "rope_type", get_or<std::string>(rope, "type", "default"));
  if (type == "llama3") {
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = rope.at("factor");
    c.rope_scaling.low_freq_factor = rope.at("low_freq_factor");
    c.rope_scaling.high_freq_factor = rope.at("high_freq_factor");
    c.rope_scaling.original_max_seq_len = rope.at("original_max_position_embeddings");
  } else {
    WEFT_CHECK(type == "default", path, ": rope type '", type, "' is not supported (default, llama3 are)");
  }
  return c;
}

ModelConfig gpt2_config(const json& j, const std::string& path) {
  ModelConfig c;
  c.family = "gpt2";
  c.vocab_size = j.at("vocab_size");
  c.hidden_size = j.at("n_embd");
  c.num_layers = j.at("n_layer");
  c.num_heads = j.at("n_head");
  c.num_kv_heads = 0;
  c.ffn_hidden_size = get_or<int64_t>(j, "n_inner", 4 * c.hidden_size);
  c.max_seq_len = j.at("n_positions");
  c.norm_eps = get_or<double>(j, "layer_norm_epsilon", 1e-5);
  c.tie_embeddings = true;
  const auto act = get_or<std::string>(j, "activation_function", "gelu_new");
  WEFT_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh", path, ": activation_function '", act,
             "' is not supported (gelu_new is)");
  WEFT_CHECK(get_or<bool>(j, "scale_attn_weights", true) && !get_or<bool>(j, "scale_attn_by_inverse_layer_idx", false),
             path, ": only standard attention scaling is supported");
  return c;
}

// All tensors of a HF directory: model.safetensors or the shards its index names.
std::map<std::string, at::Tensor> read_hf_tensors(const fs::path& dir) {
  std::vector<fs::path> files;
  if (fs::exists(dir / "model.safetensors")) {
    files.push_back(dir / "model.safetensors");
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    const auto index = json::parse(read_file((dir / "model.safetensors.index.json").string()));
    std::set<std::string> names;
    for (const auto& [k, v] : index.at("weight_map").items()) names.insert(v.get<std::string>());
    for (const auto& n : names) files.push_back(dir / n);
  } else {
    fail(str(dir.string(), " has no model.safetensors or model.safetensors.index.json (only safetensors "
             "checkpoints are supported; save with safe_serialization=True)"));
  }
  std::map<std::string, at::Tensor> out;
  for (const auto& f : files) {
    SafetensorsReader r(f.string());
    for (const auto& n : r.names()) out[n] = r.get(n);
  }
  return out;
}

struct Taker {
  std::map<std::string, at::Tensor>& src;
  std::string where;
  at::Tensor operator()(const std::string& name) {
    auto it = src.find(name);
    WEFT_CHECK(it != src.end(), where, ": tensor '", name, "' is missing");
    auto t = it->second.to(at::kFloat);
    src.erase(it);
    return t;
  }
};

std::string L(int64_t i) { return "layers." + std::to_string(i) + "."; }

// Megatron's default vocabulary padding, written into every converted config so the model splits
// over any tp dividing 128 (a no-op for vocabularies that are already multiples, e.g. Llama's).
constexpr int64_t kConvertedVocabMultiple = 128;

// Embedding and output head of `from` rows resized to `to` (Weft's padded vocabulary on import:
// zero rows appended; the published one on export: the padding dropped). Tensors of any other
// shape are left for the caller's shape check to report.
void resize_vocab_rows(NamedTensors& tensors, int64_t from, int64_t to) {
  for (auto& [name, t] : tensors) {
    if ((name != "embed.weight" && name != "lm_head.weight") || t.dim() != 2 || t.size(0) != from) continue;
    t = to < from ? t.narrow(0, 0, to).contiguous()
                  : at::cat({t, at::zeros({to - from, t.size(1)}, t.options())});
  }
}

NamedTensors llama_from_hf(std::map<std::string, at::Tensor> hf, const ModelConfig& c, const std::string& where) {
  Taker take{hf, where};
  NamedTensors out = {{"embed.weight", take("model.embed_tokens.weight")}};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string h = "model.layers." + std::to_string(i) + ".";
    out.emplace_back(L(i) + "attn_norm.weight", take(h + "input_layernorm.weight"));
    for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"})
      out.emplace_back(L(i) + "attn." + p + ".weight", take(h + "self_attn." + p + ".weight"));
    out.emplace_back(L(i) + "mlp_norm.weight", take(h + "post_attention_layernorm.weight"));
    for (const char* p : {"gate_proj", "up_proj", "down_proj"})
      out.emplace_back(L(i) + "mlp." + p + ".weight", take(h + "mlp." + p + ".weight"));
  }
  out.emplace_back("final_norm.weight", take("model.norm.weight"));
  if (!c.tie_embeddings) out.emplace_back("lm_head.weight", take("lm_head.weight"));
  hf.erase("lm_head.weight");  // a tied model may still store it
  for (auto it = hf.begin(); it != hf.end();)  // non-persistent buffers some versions save
    it = it->first.find("rotary_emb.inv_freq") != std::string::npos ? hf.erase(it) : std::next(it);
  WEFT_CHECK(hf.empty(), where, ": unexpected tensor '", hf.begin()->first, "' for a Llama model");
  return out;
}

NamedTensors gpt2_from_hf(std::map<std::string, at::Tensor> hf, const ModelConfig& c, const std::string& where) {
  // Files saved from GPT2LMHeadModel prefix names with "transformer."; the original ones do not.
  std::map<std::string, at::Tensor> src;
  for (auto& [k, v] : hf) {
    if (k == "lm_head.weight" || k.find(".attn.bias") != std::string::npos ||
        k.find(".attn.masked_bias") != std::string::npos)
      continue;  // tied head and causal-mask buffers
    src[k.rfind("transformer.", 0) == 0 ? k.substr(12) : k] = v;
  }
  Taker take{src, where};
  NamedTensors out = {{"embed.weight", take("wte.weight")}, {"pos_embed.weight", take("wpe.weight")}};
  const int64_t C = c.hidden_size;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string h = "h." + std::to_string(i) + ".";
    out.emplace_back(L(i) + "attn_norm.weight", take(h + "ln_1.weight"));
    out.emplace_back(L(i) + "attn_norm.bias", take(h + "ln_1.bias"));
    auto qkv_w = take(h + "attn.c_attn.weight").t().contiguous();  // (3C, C)
    auto qkv_b = take(h + "attn.c_attn.bias");                      // (3C)
    const char* names[] = {"q_proj", "k_proj", "v_proj"};
    for (int k = 0; k < 3; ++k) {
      out.emplace_back(L(i) + "attn." + names[k] + ".weight", qkv_w.narrow(0, k * C, C).contiguous());
      out.emplace_back(L(i) + "attn." + names[k] + ".bias", qkv_b.narrow(0, k * C, C).contiguous());
    }
    out.emplace_back(L(i) + "attn.o_proj.weight", take(h + "attn.c_proj.weight").t().contiguous());
    out.emplace_back(L(i) + "attn.o_proj.bias", take(h + "attn.c_proj.bias"));
    out.emplace_back(L(i) + "mlp_norm.weight", take(h + "ln_2.weight"));
    out.emplace_back(L(i) + "mlp_norm.bias", take(h + "ln_2.bias"));
    out.emplace_back(L(i) + "mlp.up_proj.weight", take(h + "mlp.c_fc.weight").t().contiguous());
    out.emplace_back(L(i) + "mlp.up_proj.bias", take(h + "mlp.c_fc.bias"));
    out.emplace_back(L(i) + "mlp.down_proj.weight", take(h + "mlp.c_proj.weight").t().contiguous());
    out.emplace_back(L(i) + "mlp.down_proj.bias", take(h + "mlp.c_proj.bias"));
  }
  out.emplace_back("final_norm.weight", take("ln_f.weight"));
  out.emplace_back("final_norm.bias", take("ln_f.bias"));
  WEFT_CHECK(src.empty(), where, ": unexpected tensor '", src.begin()->first, "' for a GPT-2 model");
  return out;
}

}  // namespace

HfModel load_hf_model(const std::string& dir_str) {
  const fs::path dir(dir_str);
  const auto cfg_path = (dir / "config.json").string();
  WEFT_CHECK(fs::exists(cfg_path), cfg_path, " not found: --from hf:DIR needs a Hugging Face model directory");
  json j;
  try {
    j = json::parse(read_file(cfg_path));
  } catch (const json::exception& e) {
    fail(str(cfg_path, ": invalid JSON (", e.what(), ")"));
  }
  const auto type = get_or<std::string>(j, "model_type", "");
  HfModel m;
  try {
    if (type == "llama") {
      m.config = llama_config(j, cfg_path);
      m.tensors = llama_from_hf(read_hf_tensors(dir), m.config, dir_str);
    } else if (type == "gpt2") {
      m.config = gpt2_config(j, cfg_path);
      m.tensors = gpt2_from_hf(read_hf_tensors(dir), m.config, dir_str);
    } else {
      fail(str(cfg_path, ": model_type '", type, "' is not supported; Weft converts llama and gpt2"));
    }
  } catch (const json::exception& e) {
    fail(str(cfg_path, ": missing or invalid field (", e.what(), ")"));
  }
  m.config.make_vocab_size_divisible_by = kConvertedVocabMultiple;
  resize_vocab_rows(m.tensors, m.config.vocab_size, m.config.padded_vocab_size());
  if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) m.tokenizer = "gpt2:" + dir_str;
  return m;
}

void save_hf_model(const std::string& dir_str, const ModelConfig& c, const NamedTensors& tensors) {
  const fs::path dir(dir_str);
  fs::create_directories(dir);
  NamedTensors published = tensors;
  resize_vocab_rows(published, c.padded_vocab_size(), c.vocab_size);
  std::map<std::string, at::Tensor> w(published.begin(), published.end());
  auto get = [&](const std::string& n) {
    auto it = w.find(n);
    WEFT_CHECK(it != w.end(), "checkpoint has no tensor '", n, "'");
    return it->second.contiguous();
  };
  std::vector<std::pair<std::string, at::Tensor>> out;
  json j;
  if (c.family == "llama") {
    out.emplace_back("model.embed_tokens.weight", get("embed.weight"));
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string h = "model.layers." + std::to_string(i) + ".";
      out.emplace_back(h + "input_layernorm.weight", get(L(i) + "attn_norm.weight"));
      for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"})
        out.emplace_back(h + "self_attn." + p + ".weight", get(L(i) + "attn." + p + ".weight"));
      out.emplace_back(h + "post_attention_layernorm.weight", get(L(i) + "mlp_norm.weight"));
      for (const char* p : {"gate_proj", "up_proj", "down_proj"})
        out.emplace_back(h + "mlp." + p + ".weight", get(L(i) + "mlp." + p + ".weight"));
    }
    out.emplace_back("model.norm.weight", get("final_norm.weight"));
    if (!c.tie_embeddings) out.emplace_back("lm_head.weight", get("lm_head.weight"));
    json rope = {{"rope_theta", c.rope_theta}, {"rope_type", "default"}};
    if (c.rope_scaling.type == "llama3")
      rope = {{"rope_theta", c.rope_theta}, {"rope_type", "llama3"}, {"factor", c.rope_scaling.factor},
              {"low_freq_factor", c.rope_scaling.low_freq_factor},
              {"high_freq_factor", c.rope_scaling.high_freq_factor},
              {"original_max_position_embeddings", c.rope_scaling.original_max_seq_len}};
    j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", c.vocab_size},
         {"hidden_size", c.hidden_size}, {"num_hidden_layers", c.num_layers},
         {"num_attention_heads", c.num_heads}, {"num_key_value_heads", c.kv_heads()},
         {"intermediate_size", c.ffn_hidden_size}, {"max_position_embeddings", c.max_seq_len},
         {"rms_norm_eps", c.norm_eps}, {"tie_word_embeddings", c.tie_embeddings},
         {"hidden_act", "silu"}, {"head_dim", c.head_dim()}, {"rope_theta", c.rope_theta},
         {"rope_parameters", rope}, {"attention_bias", false}, {"mlp_bias", false},
         {"torch_dtype", "float32"}};
    if (c.rope_scaling.type == "llama3") j["rope_scaling"] = rope;
  } else {
    WEFT_CHECK(c.tie_embeddings, "GPT-2 export needs model.tie_embeddings=true (HF GPT-2 ties them)");
    out.emplace_back("transformer.wte.weight", get("embed.weight"));
    out.emplace_back("transformer.wpe.weight", get("pos_embed.weight"));
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string h = "transformer.h." + std::to_string(i) + ".";
      out.emplace_back(h + "ln_1.weight", get(L(i) + "attn_norm.weight"));
      out.emplace_back(h + "ln_1.bias", get(L(i) + "attn_norm.bias"));
      out.emplace_back(h + "attn.c_attn.weight",
                       at::cat({get(L(i) + "attn.q_proj.weight"), get(L(i) + "attn.k_proj.weight"),
                                get(L(i) + "attn.v_proj.weight")}).t().contiguous());
      out.emplace_back(h + "attn.c_attn.bias", at::cat({get(L(i) + "attn.q_proj.bias"),
                                                        get(L(i) + "attn.k_proj.bias"),
                                                        get(L(i) + "attn.v_proj.bias")}));
      out.emplace_back(h + "attn.c_proj.weight", get(L(i) + "attn.o_proj.weight").t().contiguous());
      out.emplace_back(h + "attn.c_proj.bias", get(L(i) + "attn.o_proj.bias"));
      out.emplace_back(h + "ln_2.weight", get(L(i) + "mlp_norm.weight"));
      out.emplace_back(h + "ln_2.bias", get(L(i) + "mlp_norm.bias"));
      out.emplace_back(h + "mlp.c_fc.weight", get(L(i) + "mlp.up_proj.weight").t().contiguous());
      out.emplace_back(h + "mlp.c_fc.bias", get(L(i) + "mlp.up_proj.bias"));
      out.emplace_back(h + "mlp.c_proj.weight", get(L(i) + "mlp.down_proj.weight").t().contiguous());
      out.emplace_back(h + "mlp.c_proj.bias", get(L(i) + "mlp.down_proj.bias"));
    }
    out.emplace_back("transformer.ln_f.weight", get("final_norm.weight"));
    out.emplace_back("transformer.ln_f.bias", get("final_norm.bias"));
    j = {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"vocab_size", c.vocab_size},
         {"n_embd", c.hidden_size}, {"n_layer", c.num_layers}, {"n_head", c.num_heads},
         {"n_inner", c.ffn_hidden_size}, {"n_positions", c.max_seq_len},
         {"layer_norm_epsilon", c.norm_eps}, {"activation_function", "gelu_new"},
         {"tie_word_embeddings", true}, {"torch_dtype", "float32"}};
  }
  write_safetensors((dir / "model.safetensors").string(), out, {{"format", "pt"}});
  write_file_atomic((dir / "config.json").string(), j.dump(2) + "\n");
}

}  // namespace weft

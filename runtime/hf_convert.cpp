// Name and layout mapping between Hugging Face checkpoints and Weft. Llama's q/k weights are
// already in the rotate-half layout Weft uses; GPT-2's Conv1D weights are (in, out) and its
// attention input projection is fused (C, 3C), so they are transposed and split.
#include "runtime/hf_convert.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <set>

#include "weft/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace weft {
namespace {

// Typed access to config.json: every value is checked against the JSON type Weft needs, so a
// string, float or null where an integer belongs is an error naming the file and key (instead of
// a nlohmann exception or a silently truncated number).
class HfConfig {
 public:
  HfConfig(const json& j, std::string path) : j_(j), path_(std::move(path)) {}
  const std::string& path() const { return path_; }
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  int64_t integer(const std::string& key) const { return integer_in(j_, key, key); }
  int64_t integer(const std::string& key, int64_t fallback) const {
    return has(key) ? integer(key) : fallback;
  }
  double number(const std::string& key, double fallback) const { return number_in(j_, key, key, fallback); }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    WEFT_CHECK(j_.at(key).is_boolean(), path_, ": ", key, " must be true or false, got ", j_.at(key).dump());
    return j_.at(key).get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    WEFT_CHECK(j_.at(key).is_string(), path_, ": ", key, " must be a string, got ", j_.at(key).dump());
    return j_.at(key).get<std::string>();
  }
  // A nested object (rope_parameters); read its values with integer_in / number_in.
  json object(const std::string& key) const {
    if (!has(key)) return json::object();
    WEFT_CHECK(j_.at(key).is_object(), path_, ": ", key, " must be an object, got ", j_.at(key).dump());
    return j_.at(key);
  }
  int64_t integer_in(const json& o, const std::string& key, const std::string& name) const {
    WEFT_CHECK(o.contains(key) && !o.at(key).is_null(), path_, ": required key ", name, " is missing");
    const auto& v = o.at(key);
    WEFT_CHECK(v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX), path_,
               ": ", name, " must be an integer, got ", v.dump());
    return v.get<int64_t>();
  }
  double number_in(const json& o, const std::string& key, const std::string& name, double fallback) const {
    if (!o.contains(key) || o.at(key).is_null()) return fallback;
    const auto& v = o.at(key);
    WEFT_CHECK(v.is_number(), path_, ": ", name, " must be a number, got ", v.dump());
    return v.get<double>();
  }

 private:
  const json& j_;
  std::string path_;
};

// Python's json module writes NaN and +-Infinity, which JSON (and nlohmann) lack. Read such bare
// tokens as strings, so the type check can name the key that holds one.
std::string quote_nonfinite(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size()) out += text[++i];
      else if (ch == '"') in_string = false;
      continue;
    }
    if (ch == '"') in_string = true;
    bool replaced = false;
    for (const char* tok : {"NaN", "-Infinity", "Infinity"}) {
      const size_t n = std::strlen(tok);
      if (text.compare(i, n, tok) == 0) {
        out += str('"', tok, '"');
        i += n - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += ch;
  }
  return out;
}

// Weft's model fields as each family's config.json spells them, for validation messages.
std::string llama_key(const std::string& field) {
  static const std::map<std::string, std::string> names = {
      {"family", "model_type"}, {"num_layers", "num_hidden_layers"}, {"num_heads", "num_attention_heads"},
      {"num_kv_heads", "num_key_value_heads"}, {"ffn_hidden_size", "intermediate_size"},
      {"max_seq_len", "max_position_embeddings"}, {"norm_eps", "rms_norm_eps"},
      {"tie_embeddings", "tie_word_embeddings"}, {"init_std", "initializer_range"},
      {"rope_scaling.type", "rope_parameters.rope_type"},
      {"rope_scaling.factor", "rope_parameters.factor"},
      {"rope_scaling.low_freq_factor", "rope_parameters.low_freq_factor"},
      {"rope_scaling.high_freq_factor", "rope_parameters.high_freq_factor"},
      {"rope_scaling.original_max_seq_len", "rope_parameters.original_max_position_embeddings"}};
  auto it = names.find(field);
  return it == names.end() ? field : it->second;
}

std::string gpt2_key(const std::string& field) {
  static const std::map<std::string, std::string> names = {
      {"family", "model_type"}, {"hidden_size", "n_embd"}, {"num_layers", "n_layer"}, {"num_heads", "n_head"},
      {"num_kv_heads", "n_head"}, {"ffn_hidden_size", "n_inner"}, {"max_seq_len", "n_positions"},
      {"norm_eps", "layer_norm_epsilon"}, {"tie_embeddings", "tie_word_embeddings"},
      {"init_std", "initializer_range"}};
  auto it = names.find(field);
  return it == names.end() ? field : it->second;
}

ModelConfig llama_config(const HfConfig& j) {
  const auto& path = j.path();
  ModelConfig c;
  c.family = "llama";
  c.vocab_size = j.integer("vocab_size");
  c.hidden_size = j.integer("hidden_size");
  c.num_layers = j.integer("num_hidden_layers");
  c.num_heads = j.integer("num_attention_heads");
  c.num_kv_heads = j.integer("num_key_value_heads", c.num_heads);
  WEFT_CHECK(c.num_kv_heads > 0, path, ": num_key_value_heads must be > 0, got ", c.num_kv_heads);
  c.ffn_hidden_size = j.integer("intermediate_size");
  c.max_seq_len = j.integer("max_position_embeddings", 2048);
  c.norm_eps = j.number("rms_norm_eps", 1e-6);
  c.tie_embeddings = j.boolean("tie_word_embeddings", false);
  WEFT_CHECK(!j.boolean("attention_bias", false) && !j.boolean("mlp_bias", false), path,
             ": attention_bias/mlp_bias are not supported by Weft's llama family");
  const auto act = j.string("hidden_act", "silu");
  WEFT_CHECK(act == "silu", path, ": hidden_act must be silu, got '", act, "'");
  // transformers >= 5 keeps theta and scaling in rope_parameters; older files at the top level.
  const bool params = j.has("rope_parameters");
  const json rope = params ? j.object("rope_parameters") : j.object("rope_scaling");
  const std::string rp = params ? "rope_parameters." : "rope_scaling.";
  c.rope_theta = j.number_in(rope, "rope_theta", rp + "rope_theta", j.number("rope_theta", 10000.0));
  std::string type = "default";
  for (const char* k : {"rope_type", "type"}) {
    if (!rope.contains(k) || rope.at(k).is_null()) continue;
    WEFT_CHECK(rope.at(k).is_string(), path, ": ", rp, k, " must be a string, got ", rope.at(k).dump());
    type = rope.at(k).get<std::string>();
    break;
  }
  // A file may carry both (transformers >= 5 writes rope_parameters; a hand-edited or older
  // rope_scaling beside it must not hold a scaling that would be dropped silently).
  if (params)
    for (const char* k : {"rope_type", "type"}) {
      const json other = j.object("rope_scaling");
      if (!other.contains(k) || !other.at(k).is_string()) continue;
      const auto t = other.at(k).get<std::string>();
      WEFT_CHECK(t == type, path, ": rope_scaling.", k, " '", t,
                 "' disagrees with rope_parameters.rope_type '", type, "'; keep one of them");
    }
  if (type == "llama3") {
    c.rope_scaling.type = "llama3";
    auto need = [&](const char* k) {
      WEFT_CHECK(rope.contains(k) && !rope.at(k).is_null(), path, ": required key ", rp, k, " is missing");
      return j.number_in(rope, k, rp + k, 0.0);
    };
    c.rope_scaling.factor = need("factor");
    c.rope_scaling.low_freq_factor = need("low_freq_factor");
    c.rope_scaling.high_freq_factor = need("high_freq_factor");
    c.rope_scaling.original_max_seq_len =
        j.integer_in(rope, "original_max_position_embeddings", rp + "original_max_position_embeddings");
  } else {
    WEFT_CHECK(type == "default", path, ": ", rp, "rope_type '", type, "' is not supported (default, llama3 are)");
  }
  c.validate(path, llama_key);  // before any division by a head count
  const int64_t head_dim = j.integer("head_dim", c.head_dim());
  WEFT_CHECK(head_dim == c.head_dim(), path, ": head_dim (", head_dim, ") != hidden_size / num_attention_heads (",
             c.head_dim(), ") is not supported");
  return c;
}

ModelConfig gpt2_config(const HfConfig& j) {
  const auto& path = j.path();
  ModelConfig c;
  c.family = "gpt2";
  c.vocab_size = j.integer("vocab_size");
  c.hidden_size = j.integer("n_embd");
  c.num_layers = j.integer("n_layer");
  c.num_heads = j.integer("n_head");
  c.num_kv_heads = 0;
  // n_inner: null means 4 x n_embd; the multiplication waits until n_embd is known to be sane.
  c.ffn_hidden_size = j.has("n_inner") ? j.integer("n_inner") : 4;
  c.max_seq_len = j.integer("n_positions");
  c.norm_eps = j.number("layer_norm_epsilon", 1e-5);
  c.tie_embeddings = j.boolean("tie_word_embeddings", true);
  const auto act = j.string("activation_function", "gelu_new");
  WEFT_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh", path, ": activation_function '", act,
             "' is not supported (gelu_new is)");
  WEFT_CHECK(j.boolean("scale_attn_weights", true) && !j.boolean("scale_attn_by_inverse_layer_idx", false),
             path, ": only standard attention scaling is supported");
  c.validate(path, gpt2_key);
  if (!j.has("n_inner")) c.ffn_hidden_size = 4 * c.hidden_size;
  return c;
}

// The tensors of a HF directory (model.safetensors or the shards its index names), each with the
// file it came from. Converters take() what they map; whatever is left is refused by name, so no
// weight is ever dropped silently.
struct HfTensors {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> file;  // tensor name -> path, for messages
  std::string dir;

  // The tensor as fp32, removed from the set. `shape`, when given, is checked first, so a file
  // that disagrees with config.json fails here rather than inside a transpose or split.
  at::Tensor take(const std::string& name, std::vector<int64_t> shape = {}) {
    auto it = tensors.find(name);
    WEFT_CHECK(it != tensors.end(), dir, ": tensor '", name, "' is missing");
    WEFT_CHECK(shape.empty() || it->second.sizes() == at::IntArrayRef(shape), file[name], ": tensor '", name,
               "' has shape ", it->second.sizes(), ", config.json implies ", at::IntArrayRef(shape));
    auto t = it->second.to(at::kFloat);
    tensors.erase(it);
    return t;
  }
  // A tied model may also store the head; it must then be the embedding, else one would be lost.
  void take_tied_head(const std::string& name, const at::Tensor& embed) {
    if (!tensors.count(name)) return;
    WEFT_CHECK(at::equal(take(name, embed.sizes().vec()), embed), file[name], ": tensor '", name,
               "' differs from the input embedding but config.json has tie_word_embeddings true; "
               "set it to false to keep a separate head");
  }
  // Non-persistent buffers some library versions saved (no weights); `matches` picks them.
  template <typename F>
  void drop_buffers(F matches) {
    for (auto it = tensors.begin(); it != tensors.end();) it = matches(it->first) ? tensors.erase(it) : std::next(it);
  }
  void expect_empty(const std::string& family, const ModelConfig& c) {
    if (tensors.empty()) return;
    const auto& name = tensors.begin()->first;
    fail(str(file[name], ": tensor '", name, "' is not used by a ", family, " model with ", c.num_layers,
             " layers and tie_word_embeddings ", c.tie_embeddings ? "true" : "false",
             "; Weft converts every weight or refuses (", tensors.size(), " unused)"));
  }
};

HfTensors read_hf_tensors(const fs::path& dir) {
  std::vector<fs::path> files;
  if (fs::exists(dir / "model.safetensors")) {
    files.push_back(dir / "model.safetensors");
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    const auto index_path = (dir / "model.safetensors.index.json").string();
    json index;
    try {
      index = json::parse(read_file(index_path));
    } catch (const json::exception& e) {
      fail(str(index_path, ": invalid JSON (", e.what(), ")"));
    }
    WEFT_CHECK(index.contains("weight_map") && index.at("weight_map").is_object(), index_path,
               ": weight_map must be an object of tensor name -> file");
    std::set<std::string> names;
    for (const auto& [k, v] : index.at("weight_map").items()) {
      WEFT_CHECK(v.is_string(), index_path, ": weight_map.", k, " must be a file name");
      names.insert(v.get<std::string>());
    }
    for (const auto& n : names) files.push_back(dir / n);
  } else {
    fail(str(dir.string(), " has no model.safetensors or model.safetensors.index.json (only safetensors "
             "checkpoints are supported; save with safe_serialization=True)"));
  }
  HfTensors out;
  out.dir = dir.string();
  for (const auto& f : files) {
    SafetensorsReader r(f.string());
    for (const auto& n : r.names()) {
      WEFT_CHECK(!out.tensors.count(n), f.string(), ": tensor '", n, "' is also in ", out.file[n]);
      out.tensors[n] = r.get(n);
      out.file[n] = f.string();
    }
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

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

NamedTensors llama_from_hf(HfTensors hf, const ModelConfig& c) {
  const int64_t V = c.vocab_size, C = c.hidden_size, F = c.ffn_hidden_size, KV = c.kv_heads() * c.head_dim();
  NamedTensors out = {{"embed.weight", hf.take("model.embed_tokens.weight", {V, C})}};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string h = "model.layers." + std::to_string(i) + ".";
    out.emplace_back(L(i) + "attn_norm.weight", hf.take(h + "input_layernorm.weight", {C}));
    out.emplace_back(L(i) + "attn.q_proj.weight", hf.take(h + "self_attn.q_proj.weight", {C, C}));
    out.emplace_back(L(i) + "attn.k_proj.weight", hf.take(h + "self_attn.k_proj.weight", {KV, C}));
    out.emplace_back(L(i) + "attn.v_proj.weight", hf.take(h + "self_attn.v_proj.weight", {KV, C}));
    out.emplace_back(L(i) + "attn.o_proj.weight", hf.take(h + "self_attn.o_proj.weight", {C, C}));
    out.emplace_back(L(i) + "mlp_norm.weight", hf.take(h + "post_attention_layernorm.weight", {C}));
    out.emplace_back(L(i) + "mlp.gate_proj.weight", hf.take(h + "mlp.gate_proj.weight", {F, C}));
    out.emplace_back(L(i) + "mlp.up_proj.weight", hf.take(h + "mlp.up_proj.weight", {F, C}));
    out.emplace_back(L(i) + "mlp.down_proj.weight", hf.take(h + "mlp.down_proj.weight", {C, F}));
  }
  out.emplace_back("final_norm.weight", hf.take("model.norm.weight", {C}));
  if (c.tie_embeddings) hf.take_tied_head("lm_head.weight", out.front().second);
  else out.emplace_back("lm_head.weight", hf.take("lm_head.weight", {V, C}));
  // RoPE frequencies: recomputed from the config, saved only by old transformers versions.
  hf.drop_buffers([](const std::string& n) { return ends_with(n, ".rotary_emb.inv_freq"); });
  hf.expect_empty("Llama", c);
  return out;
}

NamedTensors gpt2_from_hf(HfTensors hf, const ModelConfig& c) {
  // Files saved from GPT2LMHeadModel prefix names with "transformer."; the original ones do not.
  auto P = [&](const std::string& name) {
    return hf.tensors.count("transformer." + name) ? "transformer." + name : name;
  };
  // Causal-mask buffers (not weights) that GPT-2 files from older transformers versions carry.
  hf.drop_buffers([](const std::string& n) {
    return (ends_with(n, ".attn.bias") || ends_with(n, ".attn.masked_bias")) &&
           (n.rfind("h.", 0) == 0 || n.rfind("transformer.h.", 0) == 0);
  });
  const int64_t V = c.vocab_size, C = c.hidden_size, F = c.ffn_hidden_size;
  NamedTensors out = {{"embed.weight", hf.take(P("wte.weight"), {V, C})},
                      {"pos_embed.weight", hf.take(P("wpe.weight"), {c.max_seq_len, C})}};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string h = "h." + std::to_string(i) + ".";
    out.emplace_back(L(i) + "attn_norm.weight", hf.take(P(h + "ln_1.weight"), {C}));
    out.emplace_back(L(i) + "attn_norm.bias", hf.take(P(h + "ln_1.bias"), {C}));
    // Conv1D weights are (in, out); Weft's linear weights are (out, in).
    auto qkv_w = hf.take(P(h + "attn.c_attn.weight"), {C, 3 * C}).t().contiguous();  // (3C, C)
    auto qkv_b = hf.take(P(h + "attn.c_attn.bias"), {3 * C});                          // (3C)
    const char* names[] = {"q_proj", "k_proj", "v_proj"};
    for (int k = 0; k < 3; ++k) {
      out.emplace_back(L(i) + "attn." + names[k] + ".weight", qkv_w.narrow(0, k * C, C).contiguous());
      out.emplace_back(L(i) + "attn." + names[k] + ".bias", qkv_b.narrow(0, k * C, C).contiguous());
    }
    out.emplace_back(L(i) + "attn.o_proj.weight", hf.take(P(h + "attn.c_proj.weight"), {C, C}).t().contiguous());
    out.emplace_back(L(i) + "attn.o_proj.bias", hf.take(P(h + "attn.c_proj.bias"), {C}));
    out.emplace_back(L(i) + "mlp_norm.weight", hf.take(P(h + "ln_2.weight"), {C}));
    out.emplace_back(L(i) + "mlp_norm.bias", hf.take(P(h + "ln_2.bias"), {C}));
    out.emplace_back(L(i) + "mlp.up_proj.weight", hf.take(P(h + "mlp.c_fc.weight"), {C, F}).t().contiguous());
    out.emplace_back(L(i) + "mlp.up_proj.bias", hf.take(P(h + "mlp.c_fc.bias"), {F}));
    out.emplace_back(L(i) + "mlp.down_proj.weight", hf.take(P(h + "mlp.c_proj.weight"), {F, C}).t().contiguous());
    out.emplace_back(L(i) + "mlp.down_proj.bias", hf.take(P(h + "mlp.c_proj.bias"), {C}));
  }
  out.emplace_back("final_norm.weight", hf.take(P("ln_f.weight"), {C}));
  out.emplace_back("final_norm.bias", hf.take(P("ln_f.bias"), {C}));
  if (c.tie_embeddings) hf.take_tied_head("lm_head.weight", out.front().second);
  else out.emplace_back("lm_head.weight", hf.take("lm_head.weight", {V, C}));
  hf.expect_empty("GPT-2", c);
  return out;
}

}  // namespace

HfModel load_hf_model(const std::string& dir_str) {
  const fs::path dir(dir_str);
  const auto cfg_path = (dir / "config.json").string();
  WEFT_CHECK(fs::exists(cfg_path), cfg_path, " not found: --from hf:DIR needs a Hugging Face model directory");
  json j;
  try {
    j = json::parse(quote_nonfinite(read_file(cfg_path)));
  } catch (const json::exception& e) {
    fail(str(cfg_path, ": invalid JSON (", e.what(), ")"));
  }
  WEFT_CHECK(j.is_object(), cfg_path, ": expected a JSON object of config keys");
  const HfConfig hc(j, cfg_path);
  const auto type = hc.string("model_type", "");
  HfModel m;
  // Every config value is validated before a tensor is read or a model is sized.
  if (type == "llama") {
    m.config = llama_config(hc);
    m.tensors = llama_from_hf(read_hf_tensors(dir), m.config);
  } else if (type == "gpt2") {
    m.config = gpt2_config(hc);
    m.tensors = gpt2_from_hf(read_hf_tensors(dir), m.config);
  } else {
    fail(str(cfg_path, ": model_type '", type, "' is not supported; Weft converts llama and gpt2"));
  }
  m.config.make_vocab_size_divisible_by = kConvertedVocabMultiple;
  resize_vocab_rows(m.tensors, m.config.vocab_size, m.config.padded_vocab_size());
  if (fs::exists(dir / "tokenizer.json") || fs::exists(dir / "tokenizer.model")) {
    m.tokenizer = "hf:" + dir_str;
  } else if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")) {
    m.tokenizer = "gpt2:" + dir_str;
  }
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
    if (!c.tie_embeddings) out.emplace_back("lm_head.weight", get("lm_head.weight"));
    j = {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"vocab_size", c.vocab_size},
         {"n_embd", c.hidden_size}, {"n_layer", c.num_layers}, {"n_head", c.num_heads},
         {"n_inner", c.ffn_hidden_size}, {"n_positions", c.max_seq_len},
         {"layer_norm_epsilon", c.norm_eps}, {"activation_function", "gelu_new"},
         {"tie_word_embeddings", c.tie_embeddings}, {"torch_dtype", "float32"}};
  }
  write_safetensors((dir / "model.safetensors").string(), out, {{"format", "pt"}});
  write_file_atomic((dir / "config.json").string(), j.dump(2) + "\n");
}

}  // namespace weft

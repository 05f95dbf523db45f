// YAML <-> Config through one key table. for_each_field lists every key once; parsing, --set
// overrides, the resolved dump and the key list all walk it, so a new key is one line.
#include "weft/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "weft/error.h"

namespace weft {
namespace {

template <typename C, typename F>
void for_each_field(C& c, F&& f) {
  f("model.family", c.model.family);
  f("model.vocab_size", c.model.vocab_size);
  f("model.make_vocab_size_divisible_by", c.model.make_vocab_size_divisible_by);
  f("model.hidden_size", c.model.hidden_size);
  f("model.num_layers", c.model.num_layers);
  f("model.num_heads", c.model.num_heads);
  f("model.num_kv_heads", c.model.num_kv_heads);
  f("model.ffn_hidden_size", c.model.ffn_hidden_size);
  f("model.max_seq_len", c.model.max_seq_len);
  f("model.rope_theta", c.model.rope_theta);
  f("model.norm_eps", c.model.norm_eps);
  f("model.tie_embeddings", c.model.tie_embeddings);
  f("model.init_std", c.model.init_std);
  f("model.rope_scaling.type", c.model.rope_scaling.type);
  f("model.rope_scaling.factor", c.model.rope_scaling.factor);
  f("model.rope_scaling.low_freq_factor", c.model.rope_scaling.low_freq_factor);
  f("model.rope_scaling.high_freq_factor", c.model.rope_scaling.high_freq_factor);
  f("model.rope_scaling.original_max_seq_len", c.model.rope_scaling.original_max_seq_len);
  f("lora.rank", c.lora.rank);
  f("lora.alpha", c.lora.alpha);
  f("lora.dropout", c.lora.dropout);
  f("lora.target_modules", c.lora.target_modules);
  f("train.steps", c.train.steps);
  f("train.global_batch_size", c.train.global_batch_size);
  f("train.micro_batch_size", c.train.micro_batch_size);
  f("train.seq_len", c.train.seq_len);
  f("train.seed", c.train.seed);
  f("train.log_interval", c.train.log_interval);
  f("train.eval_interval", c.train.eval_interval);
  f("train.eval_batches", c.train.eval_batches);
  f("train.threads", c.train.threads);
  f("train.freeze", c.train.freeze);
  f("optim.lr", c.optim.lr);
  f("optim.min_lr", c.optim.min_lr);
  f("optim.weight_decay", c.optim.weight_decay);
  f("optim.beta1", c.optim.beta1);
  f("optim.beta2", c.optim.beta2);
  f("optim.eps", c.optim.eps);
  f("optim.warmup_steps", c.optim.warmup_steps);
  f("optim.decay", c.optim.decay);
  f("optim.decay_steps", c.optim.decay_steps);
  f("optim.clip_grad", c.optim.clip_grad);
  f("optim.decay_norms_and_biases", c.optim.decay_norms_and_biases);
  f("data.prefix", c.data.prefix);
  f("data.blend", c.data.blend);
  f("data.split", c.data.split);
  f("data.tokenizer", c.data.tokenizer);
  f("data.cache_dir", c.data.cache_dir);
  f("data.packing", c.data.packing);
  f("run.dir", c.run.dir);
  f("run.tensorboard", c.run.tensorboard);
  f("run.peak_tflops", c.run.peak_tflops);
  f("run.memory_limit_gb", c.run.memory_limit_gb);
  f("checkpoint.dir", c.checkpoint.dir);
  f("checkpoint.interval", c.checkpoint.interval);
  f("checkpoint.keep", c.checkpoint.keep);
  f("checkpoint.init_from", c.checkpoint.init_from);
  f("checkpoint.async", c.checkpoint.async);
  f("checkpoint.fallback", c.checkpoint.fallback);
  f("checkpoint.on_error", c.checkpoint.on_error);
  f("parallel.tp", c.parallel.tp);
  f("parallel.pp", c.parallel.pp);
  f("parallel.vpp", c.parallel.vpp);
  f("parallel.zero", c.parallel.zero);
  f("parallel.sequence_parallel", c.parallel.sequence_parallel);
  f("parallel.timeout_sec", c.parallel.timeout_sec);
  f("parallel.grad_bucket_mb", c.parallel.grad_bucket_mb);
  f("parallel.overlap_grad_reduce", c.parallel.overlap_grad_reduce);
  f("parallel.schedule", c.parallel.schedule);
  f("parallel.pipeline_layers", c.parallel.pipeline_layers);
  f("fault.hang_timeout_s", c.fault.hang_timeout_s);
  f("fault.heartbeat_interval_s", c.fault.heartbeat_interval_s);
  f("fault.heartbeat_timeout_s", c.fault.heartbeat_timeout_s);
  f("fault.max_bad_steps", c.fault.max_bad_steps);
  f("fault.straggler_interval", c.fault.straggler_interval);
  f("fault.straggler_factor", c.fault.straggler_factor);
  f("fault.kill_rank", c.fault.kill_rank);
  f("fault.kill_step", c.fault.kill_step);
  f("fault.hang_rank", c.fault.hang_rank);
  f("fault.hang_step", c.fault.hang_step);
  f("fault.slow_rank", c.fault.slow_rank);
  f("fault.slow_ms", c.fault.slow_ms);
  f("fault.nan_step", c.fault.nan_step);
  f("fault.nan_count", c.fault.nan_count);
  f("fault.kill_during_checkpoint", c.fault.kill_during_checkpoint);
  f("precision", c.precision);
  f("device", c.device);
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string nearest_key(const std::string& key) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& k : config_keys()) {
    // Compare against the full key and its last component, so "lr" finds "optim.lr".
    size_t d = edit_distance(key, k);
    auto dot = k.rfind('.');
    if (dot != std::string::npos) d = std::min(d, edit_distance(key, k.substr(dot + 1)) + 1);
    if (d < best_d) best_d = d, best = k;
  }
  return best;
}

const char* type_name(const std::string&) { return "a string"; }
const char* type_name(const int64_t&) { return "an integer"; }
const char* type_name(const double&) { return "a number"; }
const char* type_name(const bool&) { return "true or false"; }
const char* type_name(const std::vector<std::string>&) { return "a list"; }
const char* type_name(const std::vector<int64_t>&) { return "a list of integers"; }

template <typename T>
bool decode(const YAML::Node& n, T& out) {
  if (!n.IsScalar()) return false;
  return YAML::convert<T>::decode(n, out);
}
bool decode(const YAML::Node& n, std::string& out) {
  if (!n.IsScalar()) return false;
  out = n.Scalar();
  return true;
}
bool decode(const YAML::Node& n, std::vector<std::string>& out) {
  out.clear();
  if (n.IsNull()) return true;
  if (n.IsScalar()) {  // "1,a,2,b" from the command line
    std::stringstream ss(n.Scalar());
    for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
    return true;
  }
  if (!n.IsSequence()) return false;
  for (const auto& item : n) {
    if (!item.IsScalar()) return false;
    out.push_back(item.Scalar());
  }
  return true;
}

bool decode(const YAML::Node& n, std::vector<int64_t>& out) {
  std::vector<std::string> items;
  if (!decode(n, items)) return false;
  out.clear();
  for (const auto& item : items) {
    YAML::Node scalar(item);
    int64_t v = 0;
    if (!YAML::convert<int64_t>::decode(scalar, v)) return false;
    out.push_back(v);
  }
  return true;
}

std::string where(const std::string& source, const YAML::Node& n) {
  return n.Mark().is_null() ? source : str(source, ":", n.Mark().line + 1);
}

// Assigns one leaf. Returns false if `key` is not a config key.
bool assign(Config& cfg, const std::string& key, const YAML::Node& value,
            const std::string& source) {
  bool found = false;
  for_each_field(cfg, [&](const char* k, auto& field) {
    if (found || key != k) return;
    found = true;
    auto parsed = field;
    WEFT_CHECK(decode(value, parsed), where(source, value), ": ", key, " expects ",
               type_name(field), ", got '", YAML::Dump(value), "'");
    field = parsed;
  });
  return found;
}

bool is_leaf_key(const std::string& key) {
  const auto keys = config_keys();
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

void merge_node(Config& cfg, const YAML::Node& node, const std::string& prefix,
                const std::string& source) {
  for (const auto& kv : node) {
    const std::string key = prefix + kv.first.as<std::string>();
    const YAML::Node& value = kv.second;
    if (value.IsMap() && !is_leaf_key(key)) {
      merge_node(cfg, value, key + ".", source);
      continue;
    }
    WEFT_CHECK(assign(cfg, key, value, source), where(source, kv.first), ": unknown key '", key,
               "'; did you mean '", nearest_key(key), "'?");
  }
}

void check_positive(int64_t v, const char* key) {
  WEFT_CHECK(v > 0, "config: ", key, " must be > 0, got ", v);
}

template <typename T>
void emit_value(YAML::Emitter& out, const T& v) {
  out << v;
}
void emit_value(YAML::Emitter& out, const double& v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  std::string s = os.str();
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // keep it a float in YAML
  out << s;
}
template <typename T>
void emit_value(YAML::Emitter& out, const std::vector<T>& v) {
  out << YAML::Flow << YAML::BeginSeq;
  for (const auto& s : v) out << s;
  out << YAML::EndSeq;
}

}  // namespace

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  Config c;
  for_each_field(c, [&](const char* k, auto&) { keys.emplace_back(k); });
  return keys;
}

void merge_config_yaml(Config& cfg, const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail(str(source, ":", e.mark.line + 1, ": invalid YAML: ", e.msg));
  }
  if (root.IsNull()) return;  // an empty --set or resolved dump adds nothing
  WEFT_CHECK(root.IsMap(), source, ": expected a mapping of config keys at the top level");
  merge_node(cfg, root, "", source);
}

Config load_config(const std::string& path) {
  std::ifstream in(path);
  WEFT_CHECK(in.good(), "config file '", path,
             "' cannot be read: check the path given to --config");
  std::stringstream ss;
  ss << in.rdbuf();
  // An empty job file would otherwise train the built-in defaults (a 6.5B-parameter Llama).
  YAML::Node root;
  try {
    root = YAML::Load(ss.str());
  } catch (const YAML::Exception&) {
    root = YAML::Node(YAML::NodeType::Map);  // merge_config_yaml reports it with its line
  }
  WEFT_CHECK(!root.IsNull(), path, ": the config file is empty (no keys); write the job's model.*, "
             "train.* and data.* keys, e.g. start from configs/llama-tiny.yaml");
  Config cfg;
  merge_config_yaml(cfg, ss.str(), path);
  return cfg;
}

void apply_override(Config& cfg, const std::string& assignment) {
  auto eq = assignment.find('=');
  WEFT_CHECK(eq != std::string::npos && eq > 0, "--set '", assignment,
             "': expected KEY=VALUE, e.g. --set optim.lr=3e-4");
  const std::string key = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail(str("--set ", key, ": invalid value: ", e.msg));
  }
  if (value.IsNull() && eq + 1 < assignment.size()) value = YAML::Node(assignment.substr(eq + 1));
  if (value.IsNull()) value = YAML::Node(std::string());
  WEFT_CHECK(assign(cfg, key, value, "--set"), "--set: unknown key '", key, "'; did you mean '",
             nearest_key(key), "'?");
}

std::string to_yaml(const Config& cfg) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string open;  // the section currently open, e.g. "model" or "model.rope_scaling"
  int depth = 0;
  for_each_field(cfg, [&](const char* k, const auto& v) {
    std::string key = k;
    auto dot = key.rfind('.');
    std::string section = dot == std::string::npos ? "" : key.substr(0, dot);
    if (section != open) {
      // Close sections that are not prefixes of the new one, then open the missing ones.
      while (depth > 0 && section.rfind(open, 0) != 0) {
        out << YAML::EndMap;
        --depth;
        auto d = open.rfind('.');
        open = d == std::string::npos ? "" : open.substr(0, d);
      }
      while (open != section) {
        auto start = open.empty() ? 0 : open.size() + 1;
        auto end = section.find('.', start);
        std::string part = section.substr(start, end == std::string::npos ? end : end - start);
        out << YAML::Key << part << YAML::Value << YAML::BeginMap;
        ++depth;
        open = section.substr(0, end == std::string::npos ? section.size() : end);
      }
    }
    out << YAML::Key << key.substr(dot == std::string::npos ? 0 : dot + 1) << YAML::Value;
    emit_value(out, v);
  });
  while (depth-- > 0) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

int64_t FaultConfig::checkpoint_kill_step() const {
  const std::string& v = kill_during_checkpoint;
  if (v.empty() || v == "false" || v == "0") return 0;
  if (v == "true") return -1;
  char* end = nullptr;
  const long long step = std::strtoll(v.c_str(), &end, 10);
  WEFT_CHECK(end && *end == '\0' && step > 0, "config: fault.kill_during_checkpoint must be true, false or a step >= 1, got '",
             v, "'");
  return step;
}

std::string Config::checkpoint_dir() const {
  return checkpoint.dir.empty() ? (std::filesystem::path(run.dir) / "checkpoints").string()
                                : checkpoint.dir;
}

void ModelConfig::validate(const std::string& src, KeyNamer key) const {
  // Bounds far above any real model, low enough that no size product overflows int64.
  auto positive = [&](int64_t v, const char* field, int64_t most) {
    WEFT_CHECK(v > 0, src, ": ", key(field), " must be > 0, got ", v);
    WEFT_CHECK(v <= most, src, ": ", key(field), " = ", v, " is implausibly large (at most ", most, ")");
  };
  auto finite_positive = [&](double v, const char* field) {
    WEFT_CHECK(std::isfinite(v) && v > 0, src, ": ", key(field), " must be a finite number > 0, got ", v);
  };
  WEFT_CHECK(family == "llama" || family == "gpt2", src, ": ", key("family"), " must be llama or gpt2, got '",
             family, "'");
  positive(vocab_size, "vocab_size", int64_t(1) << 31);
  positive(make_vocab_size_divisible_by, "make_vocab_size_divisible_by", int64_t(1) << 20);
  positive(hidden_size, "hidden_size", int64_t(1) << 20);
  positive(num_layers, "num_layers", int64_t(1) << 14);
  positive(num_heads, "num_heads", int64_t(1) << 20);
  positive(ffn_hidden_size, "ffn_hidden_size", int64_t(1) << 22);
  positive(max_seq_len, "max_seq_len", int64_t(1) << 24);
  WEFT_CHECK(hidden_size % num_heads == 0, src, ": ", key("hidden_size"), " (", hidden_size,
             ") must be divisible by ", key("num_heads"), " (", num_heads, ")");
  WEFT_CHECK(num_kv_heads >= 0 && num_kv_heads <= num_heads && num_heads % kv_heads() == 0, src, ": ",
             key("num_heads"), " (", num_heads, ") must be a multiple of ", key("num_kv_heads"), " (",
             num_kv_heads, ")");
  WEFT_CHECK(head_dim() % 2 == 0 || family != "llama", src, ": head dim ", key("hidden_size"), " / ",
             key("num_heads"), " = ", head_dim(), " must be even for RoPE");
  WEFT_CHECK(family == "llama" || num_kv_heads == 0 || num_kv_heads == num_heads, src, ": ",
             key("num_kv_heads"), " is only supported for family llama");
  finite_positive(norm_eps, "norm_eps");
  finite_positive(rope_theta, "rope_theta");
  WEFT_CHECK(std::isfinite(init_std) && init_std >= 0, src, ": ", key("init_std"),
             " must be a finite number >= 0, got ", init_std);
  WEFT_CHECK(rope_scaling.type == "none" || rope_scaling.type == "llama3", src, ": ",
             key("rope_scaling.type"), " must be none or llama3, got '", rope_scaling.type, "'");
  if (rope_scaling.type == "llama3") {
    finite_positive(rope_scaling.factor, "rope_scaling.factor");
    finite_positive(rope_scaling.low_freq_factor, "rope_scaling.low_freq_factor");
    finite_positive(rope_scaling.high_freq_factor, "rope_scaling.high_freq_factor");
    // The smoothing between the two wavelength bands divides by their difference.
    WEFT_CHECK(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor, src, ": ",
               key("rope_scaling.high_freq_factor"), " (", rope_scaling.high_freq_factor,
               ") must be greater than ", key("rope_scaling.low_freq_factor"), " (",
               rope_scaling.low_freq_factor, ")");
    positive(rope_scaling.original_max_seq_len, "rope_scaling.original_max_seq_len", int64_t(1) << 24);
  }
}

void LoraConfig::validate(const std::string& family) const {
  WEFT_CHECK(rank >= 0 && rank <= (int64_t(1) << 16), "config: lora.rank must be >= 0 (0 = off), got ", rank);
  WEFT_CHECK(std::isfinite(alpha) && alpha >= 0, "config: lora.alpha must be a finite number >= 0 (0 = lora.rank), got ",
             alpha);
  WEFT_CHECK(std::isfinite(dropout) && dropout >= 0 && dropout < 1, "config: lora.dropout must be in [0, 1), got ",
             dropout);
  if (rank == 0) return;
  WEFT_CHECK(!target_modules.empty(), "config: lora.target_modules is empty; name projections, e.g. [q_proj, v_proj]");
  static const std::vector<std::string> known = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"};
  std::set<std::string> seen;
  for (const auto& t : target_modules) {
    WEFT_CHECK(std::find(known.begin(), known.end(), t) != known.end(), "config: lora.target_modules: unknown module '",
               t, "'; use peft's names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
    WEFT_CHECK(!(t == "gate_proj" && family == "gpt2"), "config: lora.target_modules: '", t,
               "' does not exist in family gpt2 (no gated MLP); use q_proj, k_proj, v_proj, o_proj, up_proj or down_proj");
    WEFT_CHECK(seen.insert(t).second, "config: lora.target_modules names '", t, "' twice");
  }
}

void Config::validate() const {
  const auto& m = model;
  m.validate("config", [](const std::string& field) { return "model." + field; });
  lora.validate(m.family);
  check_positive(train.steps, "train.steps");
  check_positive(train.global_batch_size, "train.global_batch_size");
  check_positive(train.micro_batch_size, "train.micro_batch_size");
  check_positive(train.seq_len, "train.seq_len");
  WEFT_CHECK(train.eval_interval >= 0, "config: train.eval_interval must be >= 0 (0 = never), got ",
             train.eval_interval);
  WEFT_CHECK(train.eval_batches >= 0, "config: train.eval_batches must be >= 0 (0 = every window), got ",
             train.eval_batches);
  WEFT_CHECK(train.seq_len <= m.max_seq_len, "config: train.seq_len (", train.seq_len,
             ") exceeds model.max_seq_len (", m.max_seq_len, ")");
  WEFT_CHECK(optim.decay == "cosine" || optim.decay == "linear" || optim.decay == "constant",
             "config: optim.decay must be cosine, linear or constant, got '", optim.decay, "'");
  // Values AdamW cannot train with (they make the first update non-finite or meaningless).
  WEFT_CHECK(std::isfinite(optim.lr) && optim.lr >= 0 && optim.min_lr >= 0 && optim.min_lr <= optim.lr,
             "config: need 0 <= optim.min_lr <= optim.lr, both finite (got ", optim.min_lr, ", ", optim.lr, ")");
  WEFT_CHECK(std::isfinite(optim.clip_grad) && optim.clip_grad >= 0, "config: optim.clip_grad must be >= 0");
  WEFT_CHECK(optim.warmup_steps >= 0, "config: optim.warmup_steps must be >= 0");
  WEFT_CHECK(optim.decay_steps >= 0, "config: optim.decay_steps must be >= 0 (0 = train.steps), got ", optim.decay_steps);
  WEFT_CHECK(std::isfinite(optim.eps) && optim.eps > 0, "config: optim.eps must be > 0, got ", optim.eps);
  WEFT_CHECK(optim.beta1 >= 0 && optim.beta1 < 1, "config: optim.beta1 must be in [0, 1), got ", optim.beta1);
  WEFT_CHECK(optim.beta2 >= 0 && optim.beta2 < 1, "config: optim.beta2 must be in [0, 1), got ", optim.beta2);
  WEFT_CHECK(std::isfinite(optim.weight_decay) && optim.weight_decay >= 0, "config: optim.weight_decay must be >= 0, got ",
             optim.weight_decay);
  check_positive(train.log_interval, "train.log_interval");
  WEFT_CHECK(train.threads >= 0, "config: train.threads must be >= 0 (0 = LibTorch's default), got ", train.threads);
  WEFT_CHECK(!run.dir.empty(), "config: run.dir must name a directory");
  WEFT_CHECK(precision == "fp32" || precision == "bf16", "config: precision must be fp32 or bf16, got '",
             precision, "'");
  WEFT_CHECK(device == "cpu" || device == "cuda", "config: device must be cpu or cuda, got '",
             device, "'");
  WEFT_CHECK(data.blend.size() % 2 == 0, "config: data.blend must alternate weight, prefix");
  WEFT_CHECK(data.packing == "stream" || data.packing == "packed" || data.packing == "padded",
             "config: data.packing must be stream, packed or padded, got '", data.packing, "'");
  WEFT_CHECK(parallel.tp >= 1 && parallel.pp >= 1 && parallel.vpp >= 1,
             "config: parallel.tp, parallel.pp and parallel.vpp must be >= 1");
  WEFT_CHECK(parallel.zero == 0 || parallel.zero == 1, "config: parallel.zero must be 0 or 1");
  check_positive(parallel.timeout_sec, "parallel.timeout_sec");
  WEFT_CHECK(parallel.grad_bucket_mb > 0, "config: parallel.grad_bucket_mb must be > 0");
  WEFT_CHECK(std::isfinite(run.memory_limit_gb) && run.memory_limit_gb >= 0,
             "config: run.memory_limit_gb must be >= 0 (0 = detect)");
  WEFT_CHECK(checkpoint.interval >= 0 && checkpoint.keep >= 0,
             "config: checkpoint.interval and checkpoint.keep must be >= 0");
  WEFT_CHECK(checkpoint.on_error == "continue" || checkpoint.on_error == "stop",
             "config: checkpoint.on_error must be continue or stop, got '", checkpoint.on_error, "'");
  const auto& x = fault;
  for (const auto& [v, key] : {std::pair{x.hang_timeout_s, "fault.hang_timeout_s"}, {x.heartbeat_interval_s, "fault.heartbeat_interval_s"},
                               {x.heartbeat_timeout_s, "fault.heartbeat_timeout_s"}, {x.slow_ms, "fault.slow_ms"}})
    WEFT_CHECK(std::isfinite(v) && v >= 0, "config: ", key, " must be >= 0 (0 = off), got ", v);
  WEFT_CHECK(x.heartbeat_interval_s == 0 || x.heartbeat_timeout_s >= 2 * x.heartbeat_interval_s,
             "config: fault.heartbeat_timeout_s (", x.heartbeat_timeout_s, ") must be at least twice ",
             "fault.heartbeat_interval_s (", x.heartbeat_interval_s, "); fault.heartbeat_interval_s=0 turns heartbeats off");
  for (const auto& [v, key] : {std::pair{x.max_bad_steps, "fault.max_bad_steps"}, {x.straggler_interval, "fault.straggler_interval"}})
    WEFT_CHECK(v >= 0, "config: ", key, " must be >= 0 (0 = off), got ", v);
  WEFT_CHECK(x.nan_count >= 1, "config: fault.nan_count must be >= 1, got ", x.nan_count);
  // An injected fault set for a step the run never reaches would silently not fire: the drill
  // would look like a recovery that worked.
  const int64_t kdc = x.checkpoint_kill_step(), every = checkpoint.interval;  // throws if malformed
  for (const auto& [v, key] : {std::pair{x.kill_step, "fault.kill_step"}, {x.hang_step, "fault.hang_step"},
                               {x.nan_step, "fault.nan_step"}, {std::max<int64_t>(kdc, 0), "fault.kill_during_checkpoint"}}) {
    WEFT_CHECK(v >= 0, "config: ", key, " must be a step >= 1, or 0 = off; got ", v);
    WEFT_CHECK(v <= train.steps, "config: ", key, " (", v, ") is after the last step (train.steps=", train.steps,
               "), so the fault would never fire; pick a step in 1..", train.steps);
  }
  WEFT_CHECK(kdc <= 0 || kdc == train.steps || (every > 0 && kdc % every == 0), "config: fault.kill_during_checkpoint (",
             kdc, ") is not a step that saves a checkpoint (checkpoint.interval=", every, ", train.steps=", train.steps,
             "), so the fault would never fire; pick a multiple of checkpoint.interval, train.steps, or true (the first save)");
  WEFT_CHECK(std::isfinite(x.straggler_factor) && x.straggler_factor > 1, "config: fault.straggler_factor must be > 1, got ",
             x.straggler_factor);
  WEFT_CHECK((x.kill_step > 0) == (x.kill_rank >= 0) || x.checkpoint_kill_step() != 0,
             "config: fault.kill_rank and fault.kill_step go together (a rank >= 0 and a step >= 1)");
  WEFT_CHECK((x.hang_step > 0) == (x.hang_rank >= 0), "config: fault.hang_rank and fault.hang_step go together ",
             "(a rank >= 0 and a step >= 1)");
  WEFT_CHECK((x.slow_ms > 0) == (x.slow_rank >= 0), "config: fault.slow_rank and fault.slow_ms go together");
}

}  // namespace weft

// Weft checkpoint -> Hugging Face directory: the whole model (LoRA merged), or a peft LoRA adapter.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>

#include "weft/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "models/lora.h"
#include "runtime/data/tokenizer.h"
#include "runtime/hf_convert.h"
#include "runtime/job.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

// "layers.3.attn.q_proj.adapter.lora_A" -> "base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"
// (peft's saved names for LlamaForCausalLM: the adapter name "default" is dropped on save).
std::string peft_name(const std::string& name) {
  const std::string adapter = ".adapter.";
  const auto a = name.find(adapter);
  const auto dot = name.find('.', 7);  // after "layers.N"
  WEFT_CHECK(name.rfind("layers.", 0) == 0 && a != std::string::npos && dot != std::string::npos,
             "adapter export: unexpected LoRA tensor name '", name, "'");
  std::string module = name.substr(dot + 1, a - dot - 1);  // "attn.q_proj" | "mlp.up_proj"
  if (module.rfind("attn.", 0) == 0) module = "self_attn." + module.substr(5);
  return "base_model.model.model." + name.substr(0, dot) + "." + module + "." + name.substr(a + adapter.size()) +
         ".weight";
}

// The HF directory the base was imported from (`weft convert --from hf:DIR` records it), if it
// still exists.
nlohmann::json base_model_path(const std::string& base_dir) {
  if (base_dir.empty()) return nullptr;
  const auto state = CheckpointReader(base_dir).trainer_state();
  const std::string from = state.is_object() ? state.value("converted_from", "") : "";
  if (from.rfind("hf:", 0) != 0 || !fs::is_directory(from.substr(3))) return nullptr;
  return fs::absolute(from.substr(3)).lexically_normal().string();
}

void write_adapter(const Config& cfg, const std::string& dir, const std::string& base_dir, const fs::path& out) {
  const auto& l = cfg.lora;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [name, t] : load_checkpoint(dir, /*with_optimizer=*/false).model)
    if (is_lora_parameter(name)) tensors.emplace_back(peft_name(name), t.to(at::kFloat).contiguous());
  WEFT_CHECK(!tensors.empty(), dir, " holds no LoRA tensors; export it merged (--lora-export merged)");
  write_safetensors((out / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  // peft 0.21's LoraConfig keys, defaults where Weft has no counterpart.
  nlohmann::json c = {
      {"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"auto_mapping", nullptr},
      {"base_model_name_or_path", base_model_path(base_dir)}, {"revision", nullptr}, {"inference_mode", true},
      {"r", l.rank}, {"target_modules", l.target_modules}, {"exclude_modules", nullptr},
      {"lora_alpha", l.effective_alpha()}, {"lora_dropout", l.dropout}, {"fan_in_fan_out", false}, {"bias", "none"},
      {"use_rslora", false}, {"modules_to_save", nullptr}, {"init_lora_weights", true},
      {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"rank_pattern", nlohmann::json::object()},
      {"alpha_pattern", nlohmann::json::object()}, {"megatron_config", nullptr}, {"megatron_core", "megatron.core"},
      {"trainable_token_indices", nullptr}, {"loftq_config", nlohmann::json::object()}, {"eva_config", nullptr},
      {"corda_config", nullptr}, {"use_dora", false}, {"layer_replication", nullptr}, {"lora_bias", false},
      {"target_parameters", nullptr}};
  write_file_atomic((out / "adapter_config.json").string(), c.dump(2) + "\n");
}

// config.json's bos_token_id/eos_token_id from the exported tokenizer (tokenizer_config.json's
// tokens), so that transformers' generate() stops where the model was taught to. Weft's model
// config does not hold them; a tokenizer without one leaves that key out.
void set_special_token_ids(const fs::path& out) {
  const fs::path config = out / "config.json";
  const bool hf = fs::exists(out / "tokenizer.json") || fs::exists(out / "tokenizer.model");
  if (!hf && !fs::exists(out / "vocab.json")) return;
  const auto tok = make_tokenizer((hf ? "hf:" : "gpt2:") + out.string());
  auto j = nlohmann::json::parse(read_file(config.string()));
  if (tok->bos_id() >= 0) j["bos_token_id"] = tok->bos_id();
  try {
    j["eos_token_id"] = tok->eos_id();
  } catch (const Error&) {  // no end-of-sequence token: leave the key out
  }
  write_file_atomic(config.string(), j.dump(2) + "\n");
}

}  // namespace

void export_hf(const std::string& checkpoint, const std::string& out_dir, bool adapter,
               const std::vector<std::string>& overrides) {
  const std::string dir = resolve_checkpoint_dir(checkpoint);
  Config cfg = checkpoint_config(dir);
  for (const auto& o : overrides) apply_override(cfg, o);
  cfg.validate();
  if (adapter) {
    WEFT_CHECK(cfg.lora.rank > 0, "adapter export: ", dir, " was not trained with LoRA (lora.rank=0); export it ",
               "merged (--lora-export merged)");
    WEFT_CHECK(cfg.model.family == "llama", "adapter export: family ", cfg.model.family, " is not supported: peft ",
               "adapts GPT-2's fused c_attn (Conv1D), which Weft's separate q/k/v adapters do not map onto; export ",
               "the LoRA merged instead (--lora-export merged)");
  }
  const std::string base_dir = cfg.lora.rank > 0 ? lora_base_dir(cfg) : "";
  const fs::path out(out_dir);
  fs::create_directories(out);
  if (adapter) {
    write_adapter(cfg, dir, base_dir, out);
  } else {
    Transformer model = load_checkpoint_model(cfg, dir);
    save_hf_model(out_dir, cfg.model, merge_lora(model_tensors(*model), cfg.lora.scaling()));
  }
  auto files = CheckpointReader(dir).extra_files();
  if (files.empty() && !base_dir.empty()) files = CheckpointReader(base_dir).extra_files();
  for (const auto& [name, contents] : files) write_file_atomic((out / name).string(), contents);
  if (!adapter && is_checkpoint_tokenizer(cfg.data.tokenizer)) set_special_token_ids(out);
}

}  // namespace weft

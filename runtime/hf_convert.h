// Hugging Face interop: safetensors + config.json of LlamaForCausalLM / GPT2LMHeadModel <->
// Weft model configs and parameter names.
#pragma once

#include <string>
#include <vector>

#include "weft/config.h"
#include "runtime/checkpoint/checkpoint.h"

namespace weft {

// Reads DIR/config.json and DIR/model.safetensors (or the sharded index). Returns the model
// config and tensors (fp32, CPU) under Weft's names; an untied head (tie_word_embeddings false)
// becomes lm_head.weight with model.tie_embeddings false. Throws weft::Error naming the file and
// key for: unsupported architectures or options; config values of the wrong JSON type, missing,
// or failing ModelConfig::validate (checked before any tensor is read); tensors whose shape
// disagrees with config.json; and any tensor the conversion would not use (only the
// non-persistent buffers listed in the converter are skipped).
// The vocabulary comes back padded: make_vocab_size_divisible_by is 128 and the embedding and head
// get zero rows up to padded_vocab_size(). save_hf_model drops the padding again.
struct HfModel {
  ModelConfig config;
  NamedTensors tensors;
  // "hf:DIR" when DIR has tokenizer.json or tokenizer.model, else "gpt2:DIR" when it has
  // vocab.json + merges.txt, else ""
  std::string tokenizer;
};
HfModel load_hf_model(const std::string& dir);

// Writes DIR/config.json and DIR/model.safetensors in Hugging Face's layout (with lm_head.weight
// and tie_word_embeddings false when cfg.tie_embeddings is false); padded embedding and head rows
// are dropped (config.json's vocab_size is cfg.vocab_size).
void save_hf_model(const std::string& dir, const ModelConfig& cfg, const NamedTensors& tensors);

// Exports Weft checkpoint `checkpoint` (a step directory, a checkpoint root or a run directory)
// as a Hugging Face directory `out_dir` (created; existing files of the same names replaced), with
// the checkpoint's tokenizer files (those that travel with it, else its LoRA base's).
//   adapter = false: config.json + model.safetensors via save_hf_model, LoRA merged into the base
//     weights (W + lora.alpha / lora.rank * B A); a checkpoint without LoRA exports as it is.
//   adapter = true: a peft LoRA adapter, adapter_config.json (peft 0.21's keys; task_type
//     CAUSAL_LM, base_model_name_or_path the base's HF directory when the base was imported from
//     one, else null) + adapter_model.safetensors (base_model.model.model.layers.N.self_attn.
//     q_proj.lora_A.weight (r, in), ...lora_B.weight (out, r), fp32), for
//     peft.PeftModel.from_pretrained(base, out_dir). Llama only.
// `overrides` (key=value) apply to the checkpoint's config, e.g. checkpoint.init_from=DIR for a
// base that moved. Reads the whole model into this process's memory (CPU). Throws weft::Error
// naming the path or key: no checkpoint, a missing base (checkpoint.init_from), adapter export of
// a checkpoint without LoRA or of family gpt2 (peft adapts its fused c_attn; export merged).
// Not thread-safe with other writers of `out_dir`.
void export_hf(const std::string& checkpoint, const std::string& out_dir, bool adapter,
               const std::vector<std::string>& overrides = {});

}  // namespace weft

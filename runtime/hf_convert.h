// Hugging Face interop: safetensors + config.json of LlamaForCausalLM / GPT2LMHeadModel <->
// Weft model configs and parameter names.
#pragma once

#include <string>

#include "core/config.h"
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

}  // namespace weft

// Hugging Face interop: safetensors + config.json of LlamaForCausalLM / GPT2LMHeadModel <->
// Weft model configs and parameter names.
#pragma once

#include <string>

#include "core/config.h"
#include "runtime/checkpoint/checkpoint.h"

namespace weft {

// Reads DIR/config.json and DIR/model.safetensors (or the sharded index). Returns the model
// config and tensors under Weft's names, the vocabulary padded: make_vocab_size_divisible_by is
// 128 and the embedding and head get zero rows up to padded_vocab_size(). Throws weft::Error
// naming the file for unsupported architectures or options.
struct HfModel {
  ModelConfig config;
  NamedTensors tensors;
  std::string tokenizer;  // "gpt2:DIR" when DIR has vocab.json + merges.txt, else ""
};
HfModel load_hf_model(const std::string& dir);

// Writes DIR/config.json and DIR/model.safetensors in Hugging Face's layout; padded embedding and
// head rows are dropped (config.json's vocab_size is cfg.vocab_size).
void save_hf_model(const std::string& dir, const ModelConfig& cfg, const NamedTensors& tensors);

}  // namespace weft

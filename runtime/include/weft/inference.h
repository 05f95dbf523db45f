// weft::CheckpointModel: a checkpoint's model loaded for inference, what `weft eval` and
// `weft generate` run. A LoRA checkpoint loads its base (checkpoint.init_from) with the adapters.
//
//   auto m = weft::CheckpointModel::load("runs/demo");          // newest checkpoint of a run
//   double loss = m->evaluate("data/valid").loss;
//   weft::GenerationOptions g;
//   g.max_new_tokens = 32;
//   std::string text = m->generate("Once upon a time", g);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "weft/config.h"

namespace weft {

struct EvalOptions {
  int64_t max_batches = 0;  // micro-batches of train.micro_batch_size windows; 0 = every window
  // When set: a .safetensors file with the first micro-batch's input_ids (B, T) int64 and logits
  // (B, T, vocab_size) fp32, plus positions (B, T) for packed examples (data.packing packed,
  // computed apart so examples do not attend to each other): what parity tests compare.
  std::string logits_out;
};

struct EvalResult {
  double loss = 0;  // mean next-token loss over the counted tokens of the windows evaluated
};

struct GenerationOptions {
  int64_t max_new_tokens = 64;  // > 0
  double temperature = 0;       // finite, >= 0; 0 = greedy
  int64_t top_k = 0;            // >= 0; sample from the k most likely tokens, 0 = all
  uint64_t seed = 0;            // sampling seed
};

// Threads: one call at a time per object (evaluate/generate use the model's buffers); separate
// objects may be used from separate threads. Process-wide: load() sets LibTorch's intra-op thread
// count when train.threads > 0 in the (overridden) config.
class CheckpointModel {
 public:
  // Loads checkpoint `dir` (a step directory, a checkpoint root or a run directory) onto the
  // config's device, in eval mode. `overrides` (key=value, as --set) apply to the config the
  // checkpoint was saved with, e.g. checkpoint.init_from=DIR for a LoRA base that moved or
  // device=cuda. Throws weft::Error naming the path, file, tensor or key.
  static std::unique_ptr<CheckpointModel> load(const std::string& dir,
                                               const std::vector<std::string>& overrides = {});
  ~CheckpointModel();
  CheckpointModel(const CheckpointModel&) = delete;
  CheckpointModel& operator=(const CheckpointModel&) = delete;

  const Config& config() const;    // the saved config with the overrides
  const std::string& dir() const;  // the step directory loaded

  // Mean next-token loss over the indexed dataset `data_prefix` (PREFIX.bin/.idx), in windows of
  // train.seq_len tokens in order from the first, train.micro_batch_size per micro-batch, without
  // autograd, in the config's precision. Throws weft::Error for missing data or max_batches < 0.
  EvalResult evaluate(const std::string& data_prefix, const EvalOptions& opts = {});

  // Chooses the tokenizer generate() uses: `spec` (byte | gpt2:DIR | hf:DIR | sp:FILE), or "" for
  // the checkpoint's own (data.tokenizer; files the checkpoint carries are read from it). Throws
  // weft::Error for a tokenizer that cannot load or whose vocabulary exceeds the model's.
  void use_tokenizer(const std::string& spec);

  // Continues `prompt` (not empty) with up to opts.max_new_tokens tokens, stopping after the
  // tokenizer's end-of-document token (not included in the text). `on_text` (optional) gets each
  // new token's text as it is produced. Returns the new text (bytes; not necessarily valid UTF-8
  // at every token boundary). Uses the checkpoint's tokenizer unless use_tokenizer() chose one.
  // Recomputes the whole window per token (no KV cache): for checks and demos, not serving.
  // Throws weft::Error for an empty prompt or invalid options.
  std::string generate(const std::string& prompt, const GenerationOptions& opts,
                       const std::function<void(const std::string& text)>& on_text = nullptr);

 private:
  struct State;
  explicit CheckpointModel(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace weft

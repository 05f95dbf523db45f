// Text continuation with a trained model: greedy or temperature/top-k sampling.
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "models/transformer.h"

namespace weft {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = whole vocabulary (the ids below vocab_limit)
  uint64_t seed = 0;
  int64_t stop_token = -1;   // stop after producing this token (e.g. end of document); -1 = never
  // Only ids < vocab_limit are ever produced; 0 = any id of the model. A model's vocabulary is
  // often padded past its tokenizer's (to a multiple of 8, say): set this to the tokenizer's
  // vocab_size so a padded id, which nothing can decode, is never chosen.
  int64_t vocab_limit = 0;
};

// Picks the next token from one position's logits, shape (V), float on the CPU: the argmax when
// opts.temperature <= 0, else a draw from `gen` out of softmax(logits / temperature) over the
// opts.top_k largest (all when 0). Ids >= opts.vocab_limit (when > 0) are never picked.
// Throws weft::Error when vocab_limit is negative or larger than V.
int64_t pick_next_token(const at::Tensor& logits, const GenerateOptions& opts, at::Generator& gen);

// Returns only the new tokens. `on_token` (optional) sees each as it is produced. Recomputes
// the full window each step (no KV cache): meant for checks and demos, not serving.
// Throws weft::Error for an empty prompt or a vocab_limit past the model's vocab_size.
std::vector<int64_t> generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& opts,
                              const std::function<void(int64_t)>& on_token = nullptr);

}  // namespace weft

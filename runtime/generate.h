// Text continuation with a trained model: greedy or temperature/top-k sampling.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "models/transformer.h"

namespace weft {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = whole vocabulary
  uint64_t seed = 0;
  int64_t stop_token = -1;   // stop after producing this token (e.g. end of document); -1 = never
};

// Returns only the new tokens. `on_token` (optional) sees each as it is produced. Recomputes
// the full window each step (no KV cache): meant for checks and demos, not serving.
std::vector<int64_t> generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& opts,
                              const std::function<void(int64_t)>& on_token = nullptr);

}  // namespace weft

// Autoregressive decoding over the model's own forward().
#include "runtime/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"

namespace weft {

std::vector<int64_t> generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& opts, const std::function<void(int64_t)>& on_token) {
  WEFT_CHECK(!prompt.empty(), "generate: the prompt encodes to no tokens");
  at::NoGradGuard no_grad;
  const auto device = model.embed->weight.device();
  const int64_t window = model.config().max_seq_len;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);
  std::vector<int64_t> tokens = prompt, out;
  for (int64_t i = 0; i < opts.max_new_tokens; ++i) {
    const int64_t start = std::max<int64_t>(0, int64_t(tokens.size()) - window);
    auto input = at::tensor(std::vector<int64_t>(tokens.begin() + start, tokens.end()), at::kLong)
                     .unsqueeze(0)
                     .to(device);                                             // (1, T)
    auto logits = model.forward(input).select(1, -1).squeeze(0).to(at::kFloat).cpu();  // (V)
    int64_t next;
    if (opts.temperature <= 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      logits = logits / opts.temperature;
      if (opts.top_k > 0 && opts.top_k < logits.size(0)) {
        auto kth = std::get<0>(logits.topk(opts.top_k)).min();
        logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
      }
      next = at::multinomial(logits.softmax(-1), 1, false, gen).item<int64_t>();
    }
    tokens.push_back(next);
    out.push_back(next);
    if (on_token) on_token(next);
    if (next == opts.stop_token) break;
  }
  return out;
}

}  // namespace weft

// Autoregressive decoding over the model's own forward().
#include "runtime/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include <limits>

#include "weft/error.h"

namespace weft {

int64_t pick_next_token(const at::Tensor& logits, const GenerateOptions& opts, at::Generator& gen) {
  const int64_t vocab = logits.size(0);
  WEFT_CHECK(opts.vocab_limit >= 0 && opts.vocab_limit <= vocab, "generate: vocab_limit ",
             opts.vocab_limit, " must be in [0, ", vocab, "] (the model's vocab_size)");
  // Ids past the limit are dropped rather than masked, so neither argmax nor top-k can see them.
  auto l = opts.vocab_limit > 0 ? logits.narrow(0, 0, opts.vocab_limit) : logits;  // (V')
  if (opts.temperature <= 0) return l.argmax().item<int64_t>();
  l = l / opts.temperature;
  if (opts.top_k > 0 && opts.top_k < l.size(0)) {
    auto kth = std::get<0>(l.topk(opts.top_k)).min();
    l = l.masked_fill(l < kth, -std::numeric_limits<float>::infinity());
  }
  return at::multinomial(l.softmax(-1), 1, false, gen).item<int64_t>();
}

std::vector<int64_t> generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& opts,
                              const std::function<void(int64_t)>& on_token) {
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
    const int64_t next = pick_next_token(logits, opts, gen);
    tokens.push_back(next);
    out.push_back(next);
    if (on_token) on_token(next);
    if (next == opts.stop_token) break;
  }
  return out;
}

}  // namespace weft

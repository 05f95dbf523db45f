// FLOP accounting and a matmul peak probe through LibTorch.
#include "runtime/perf.h"

#include <algorithm>
#include <chrono>

#include "weft/error.h"
#include "models/lora.h"
#include "models/transformer.h"
#include "runtime/job.h"

namespace weft {

double training_flops_per_token(const ModelConfig& cfg, int64_t seq_len) {
  // Model FLOPs of the published model: a padded vocabulary's extra rows are overhead, not model
  // work, so they do not count toward MFU (PaLM's definition).
  const double V = cfg.vocab_size, C = cfg.hidden_size, L = cfg.num_layers;
  double matmul_params = double(count_published_parameters(cfg)) - V * C;  // the input lookup is no matmul
  if (cfg.family == "gpt2") matmul_params -= double(cfg.max_seq_len) * C;
  if (cfg.tie_embeddings) matmul_params += V * C;  // the head still multiplies by it
  return 6.0 * matmul_params + 12.0 * L * C * double(seq_len);
}

RankTrainingState rank_training_state(const Config& cfg, const ParallelDims& dims, const RankCoord& coord) {
  RankTrainingState s;
  int64_t trained = 0;  // with LoRA only the adapters get grads, moments and checkpoint copies
  for (int64_t c = 0; c < dims.vpp; ++c) {
    const auto shard = model_shard(cfg, dims, coord, c, nullptr);
    s.parameters += count_parameters(cfg.model, shard);
    if (cfg.lora.rank > 0) {
      const Transformer meta(cfg.model, at::TensorOptions().device(at::kMeta), shard, cfg.lora);
      for (const auto& item : meta->named_parameters())
        if (is_lora_parameter(item.key())) s.parameters += item.value().numel(), trained += item.value().numel();
    }
    s.layers += str(c ? "," : "", shard.first_layer, "-", shard.last_layer - 1);
  }
  if (cfg.lora.rank == 0) trained = s.parameters;
  const double moments_share = cfg.parallel.zero == 1 ? 1.0 / double(dims.dp) : 1.0;
  s.bytes = double(s.parameters) * 4.0 + double(trained) * (4.0 + 8.0 * moments_share);
  if (cfg.checkpoint.async) s.snapshot_bytes = double(trained) * (4.0 + 8.0 * moments_share);
  return s;
}

double measure_matmul_peak_flops(at::ScalarType dtype, const at::Device& device, double seconds,
                                 int64_t n) {
  auto opts = at::TensorOptions().dtype(dtype).device(device);
  auto a = at::randn({n, n}, opts), b = at::randn({n, n}, opts), c = at::empty({n, n}, opts);
  at::mm_out(c, a, b);  // warm up
  using clock = std::chrono::steady_clock;
  double best = 0;
  const auto end = clock::now() + std::chrono::duration<double>(seconds);
  while (clock::now() < end) {
    const auto t0 = clock::now();
    for (int i = 0; i < 4; ++i) at::mm_out(c, a, b);
    (void)c.sum().item<double>();  // synchronise on devices that run asynchronously
    const double dt = std::chrono::duration<double>(clock::now() - t0).count();
    best = std::max(best, 4 * 2.0 * double(n) * n * n / dt);
  }
  return best;
}

}  // namespace weft

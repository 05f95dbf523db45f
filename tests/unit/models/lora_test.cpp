// LoRA adapters: layout-independent initialisation (every TP shard a slice of the one-device
// adapters, replicated factors' gradients marked partial), a fresh adapter changes nothing, and
// merging B A into W gives the adapted model's logits.
#include "models/lora.h"

#include <gtest/gtest.h>

#include <cmath>

#include "runtime/job.h"
#include "runtime/perf.h"

namespace weft {
namespace {

ModelConfig small() {
  ModelConfig c;
  c.vocab_size = 64, c.hidden_size = 32, c.num_layers = 2, c.num_heads = 8, c.num_kv_heads = 2;
  c.ffn_hidden_size = 64, c.max_seq_len = 16;
  return c;
}

LoraConfig every_projection() {
  LoraConfig l;
  l.rank = 4, l.alpha = 8;
  l.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return l;
}

TEST(Lora, ShardedInitIsASliceOfTheFullAdapters) {
  auto full = build_model(small(), at::kCPU, 7, {}, every_projection());
  auto whole = full->named_parameters();
  int64_t lora_params = 0;
  for (const auto& item : whole) lora_params += is_lora_parameter(item.key());
  EXPECT_EQ(lora_params, 2 * 7 * 2);
  for (int64_t tp : {2, 4, 8})  // tp 4 and 8 replicate the 2 KV heads
    for (int64_t rank = 0; rank < tp; ++rank) {
      ModelShard shard;
      shard.tp = tp, shard.tp_rank = rank;
      auto part = build_model(small(), at::kCPU, 7, shard, every_projection());
      for (const auto& item : part->named_parameters()) {
        if (!is_lora_parameter(item.key())) continue;
        const auto& s = part->shard_of(item.key());
        EXPECT_TRUE(at::equal(s.slice(*whole.find(item.key())), item.value())) << "tp=" << tp << " " << item.key();
        // The factor a rank holds whole beside a split projection sees only part of the computation.
        const bool row = item.key().find("o_proj") != std::string::npos || item.key().find("down_proj") != std::string::npos;
        const bool a = item.key().back() == 'A';
        if (row != a) EXPECT_TRUE(s.partial_grad && s.dim < 0 && s.replicas == tp) << item.key();
        if (row == a) EXPECT_GE(s.dim, 0) << item.key();
      }
    }
}

TEST(Lora, FreshAdaptersChangeNothingAndAFollowsPeftsInit) {
  auto plain = build_model(small(), at::kCPU, 7);
  auto adapted = build_model(small(), at::kCPU, 7, {}, every_projection());
  auto tokens = at::randint(0, 64, {2, 9}, at::kLong);
  EXPECT_TRUE(at::equal(plain->forward(tokens), adapted->forward(tokens)));
  for (const auto& item : adapted->named_parameters()) {
    if (item.key().back() != 'A' || !is_lora_parameter(item.key())) continue;
    const double bound = 1.0 / std::sqrt(double(item.value().size(1)));  // kaiming_uniform, a = sqrt(5)
    EXPECT_LE(item.value().abs().max().item<double>(), bound) << item.key();
    EXPECT_GT(item.value().abs().max().item<double>(), 0.8 * bound) << item.key();
  }
}

TEST(Lora, MergedWeightsGiveTheAdaptedLogits) {
  auto adapted = build_model(small(), at::kCPU, 7, {}, every_projection());
  {
    at::NoGradGuard no_grad;
    for (auto& item : adapted->named_parameters())
      if (is_lora_parameter(item.key()) && item.key().back() == 'B') item.value().normal_(0, 0.5);
  }
  auto tokens = at::randint(0, 64, {2, 9}, at::kLong);
  auto want = adapted->forward(tokens);
  auto merged = build_model(small(), at::kCPU, 1);
  load_model_tensors(*merged, merge_lora(model_tensors(*adapted), every_projection().scaling()), "merged");
  auto got = merged->forward(tokens);
  EXPECT_GT((want - build_model(small(), at::kCPU, 7)->forward(tokens)).abs().max().item<double>(), 1e-2);
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-5);
}

// A LoRA job's training state: fp32 weights of everything, grads and AdamW moments (and the async
// checkpoint copy) of the adapters only.
TEST(Lora, TrainingStateCountsGradsAndMomentsOfTheAdaptersOnly) {
  Config cfg;
  cfg.model = small();
  const auto dims = validate_layout(1, cfg);
  const auto plain = rank_training_state(cfg, dims, RankCoord{});
  cfg.lora = every_projection();
  const auto lora = rank_training_state(cfg, dims, RankCoord{});
  int64_t adapters = 0;
  for (const auto& item : build_model(small(), at::kCPU, 1, {}, cfg.lora)->named_parameters())
    if (is_lora_parameter(item.key())) adapters += item.value().numel();
  EXPECT_EQ(lora.parameters, plain.parameters + adapters);
  EXPECT_DOUBLE_EQ(lora.bytes, 4.0 * double(plain.parameters) + 16.0 * double(adapters));
  EXPECT_DOUBLE_EQ(lora.snapshot_bytes, 12.0 * double(adapters));
}

}  // namespace
}  // namespace weft

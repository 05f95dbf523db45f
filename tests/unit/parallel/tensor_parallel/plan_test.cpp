// Tensor-parallel plans: how a tensor splits over TP ranks, and the model built from them.
#include "parallel/tensor_parallel/plan.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "weft/config.h"
#include "models/transformer.h"
#include "parallel/topology.h"
#include "runtime/job.h"
#include "tests/unit/test_util.h"

namespace weft {
namespace {

using testing::error_of;

TEST(TpPlan, RulesMatchWholeNameComponents) {
  const tp::Plan plan = {{"embed.weight", tp::Split::kColumn}, {"o_proj.weight", tp::Split::kRow}};
  ASSERT_NE(tp::find_rule(plan, "embed.weight"), nullptr);
  EXPECT_EQ(tp::find_rule(plan, "pos_embed.weight"), nullptr);
  EXPECT_EQ(tp::find_rule(plan, "layers.3.attn.o_proj.weight")->split, tp::Split::kRow);
  EXPECT_EQ(tp::find_rule(plan, "layers.3.attn.o_proj.bias"), nullptr);
}

TEST(TpPlan, ColumnRowAndReplicatedPieces) {
  const tp::ShardRule col{"w", tp::Split::kColumn}, row{"w", tp::Split::kRow};
  auto c = tp::shard_of("w", {8, 6}, &col, 4, 3, false);
  EXPECT_EQ(c.dim, 0);
  EXPECT_EQ(c.start, 6);
  EXPECT_EQ(c.local_shape(), (std::vector<int64_t>{2, 6}));
  EXPECT_TRUE(c.owner);
  auto r = tp::shard_of("w", {8, 6}, &row, 2, 1, false);
  EXPECT_EQ(r.offsets(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(r.local_shape(), (std::vector<int64_t>{8, 3}));
  auto rep = tp::shard_of("n", {8}, nullptr, 4, 2, false);
  EXPECT_EQ(rep.dim, -1);
  EXPECT_FALSE(rep.owner);
  EXPECT_FALSE(rep.partial_grad);
  EXPECT_TRUE(tp::shard_of("n", {8}, nullptr, 4, 2, /*sequence_parallel=*/true).partial_grad);
  EXPECT_NE(error_of([&] { tp::shard_of("w", {6, 6}, &col, 4, 0, false); }).find("not divisible by tp(4)"),
            std::string::npos);
}

TEST(TpPlan, FewerKvHeadsThanRanksAreReplicated) {
  const tp::ShardRule kv{"k", tp::Split::kHeads, 4};  // 2 heads of 4 rows over 8 ranks
  for (int64_t rank = 0; rank < 8; ++rank) {
    auto s = tp::shard_of("k", {8, 16}, &kv, 8, rank, false);
    EXPECT_EQ(s.start, rank / 4 * 4) << rank;
    EXPECT_EQ(s.length, 4);
    EXPECT_EQ(s.replicas, 4);
    EXPECT_EQ(s.owner, rank % 4 == 0);
    EXPECT_TRUE(s.partial_grad);
  }
  auto split = tp::shard_of("k", {8, 16}, &kv, 2, 1, false);  // more heads than ranks: split
  EXPECT_EQ(split.start, 4);
  EXPECT_FALSE(split.partial_grad);
}

ModelConfig small(const std::string& family) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = family == "llama" ? 2 : 0;
  c.ffn_hidden_size = 64;
  c.max_seq_len = 16;
  c.tie_embeddings = family == "gpt2";
  return c;
}

// Every shard of every layout holds exactly its slice of the single-process model's values.
TEST(TpPlan, ShardedInitIsASliceOfTheFullModel) {
  for (const std::string family : {"llama", "gpt2"}) {
    auto full = build_model(small(family), at::kCPU, 7);
    auto whole = full->named_parameters();
    for (int64_t tp : {2, 4, 8})
      for (int64_t rank = 0; rank < tp; ++rank) {
        ModelShard shard;
        shard.tp = tp, shard.tp_rank = rank, shard.first_layer = 1, shard.last_layer = 3;
        auto part = build_model(small(family), at::kCPU, 7, shard);
        for (const auto& item : part->named_parameters()) {
          const auto& s = part->shard_of(item.key());
          ASSERT_TRUE(whole.find(item.key())) << item.key();
          EXPECT_TRUE(at::equal(s.slice(*whole.find(item.key())), item.value()))
              << family << " tp=" << tp << " rank=" << rank << " " << item.key();
        }
      }
  }
}

// Across TP × PP every element of the model is owned (saved, counted in the norm) exactly once,
// on the meta device, for a zoo model with GQA, 8-way TP, 4 stages and 2 virtual stages each.
TEST(TpPlan, EveryElementOwnedOnceAcrossTheGrid) {
  const char* d = std::getenv("WEFT_SOURCE_DIR");
  // GPT-2's 50257 ids split over TP as 50304 padded rows (model.make_vocab_size_divisible_by).
  for (const auto& [name, tp] : {std::pair<const char*, int64_t>{"llama3-8b", 4}, {"gpt2-124m", 4}}) {
    Config cfg = load_config(std::string(d ? d : ".") + "/configs/" + name + ".yaml");
    cfg.parallel.tp = tp, cfg.parallel.pp = 4, cfg.parallel.vpp = 3;
    const auto dims = validate_layout(tp * 4, cfg);
    int64_t owned = 0;
    for (int64_t pp = 0; pp < dims.pp; ++pp)
      for (int64_t t = 0; t < dims.tp; ++t)
        for (int64_t c = 0; c < dims.vpp; ++c) {
          Transformer m(cfg.model, at::TensorOptions().device(at::kMeta), model_shard(cfg, dims, {t, 0, pp}, c, nullptr));
          for (const auto& item : m->named_parameters()) {
            const auto& s = m->shard_of(item.key());
            const bool tied_copy = m->holds_tied_copy() && item.key() == "embed.weight";
            if (s.owner && !tied_copy) owned += item.value().numel();
          }
        }
    EXPECT_EQ(owned, count_parameters(cfg.model)) << name;
  }
}

}  // namespace
}  // namespace weft

// Rank-grid arithmetic and layout validation, without processes: the layouts of issue 3 on 8
// ranks, Megatron's documented groups for 16 ranks, and the refusal messages.
#include "parallel/topology.h"

#include <gtest/gtest.h>

#include <set>

#include "weft/error.h"

namespace weft {
namespace {

using Ranks = std::vector<int64_t>;

ParallelConfig pc(int64_t tp, int64_t pp, int64_t vpp = 1) {
  ParallelConfig p;
  p.tp = tp;
  p.pp = pp;
  p.vpp = vpp;
  return p;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

struct Layout {
  int64_t tp, pp, dp;
};
void PrintTo(const Layout& l, std::ostream* os) {
  *os << "(" << l.tp << "," << l.pp << "," << l.dp << ")";
}

class Topology8 : public ::testing::TestWithParam<Layout> {};

TEST_P(Topology8, GroupsPartitionTheGrid) {
  const auto [tp, pp, dp] = GetParam();
  const ParallelDims d = make_parallel_dims(8, pc(tp, pp));
  EXPECT_EQ(d.tp, tp);
  EXPECT_EQ(d.pp, pp);
  EXPECT_EQ(d.dp, dp);
  EXPECT_EQ(d.world_size(), 8);
  for (int64_t r = 0; r < 8; ++r) {
    const RankCoord c = coord_of(d, r);
    EXPECT_EQ(rank_of(d, c), r);
    EXPECT_EQ(r, c.pp * (dp * tp) + c.dp * tp + c.tp);  // TP fastest, then DP, then PP
  }
  const std::pair<GroupKind, int64_t> kinds[] = {{GroupKind::kWorld, 8},
                                                 {GroupKind::kTensor, tp},
                                                 {GroupKind::kData, dp},
                                                 {GroupKind::kPipeline, pp},
                                                 {GroupKind::kModel, tp * pp}};
  for (const auto& [kind, size] : kinds) {
    std::multiset<int64_t> covered;
    const auto groups = all_groups(d, kind);
    EXPECT_EQ(static_cast<int64_t>(groups.size()), 8 / size) << group_kind_name(kind);
    for (const auto& g : groups) {
      EXPECT_EQ(static_cast<int64_t>(g.size()), size) << group_kind_name(kind);
      EXPECT_TRUE(std::is_sorted(g.begin(), g.end()));
      for (int64_t r : g) {
        covered.insert(r);
        EXPECT_EQ(group_ranks(d, r, kind), g) << "every member sees the same group";
      }
    }
    EXPECT_EQ(covered.size(), 8u) << group_kind_name(kind);
    EXPECT_EQ(std::set<int64_t>(covered.begin(), covered.end()).size(), 8u);
  }
  // A tp group is tp consecutive ranks; a dp/pp group shares tp (and dp/pp) coordinates.
  for (int64_t r = 0; r < 8; ++r) {
    const auto t = group_ranks(d, r, GroupKind::kTensor);
    EXPECT_EQ(t.front() % tp, 0);
    EXPECT_EQ(t.back() - t.front(), tp - 1);
    for (int64_t q : group_ranks(d, r, GroupKind::kData)) {
      EXPECT_EQ(coord_of(d, q).tp, coord_of(d, r).tp);
      EXPECT_EQ(coord_of(d, q).pp, coord_of(d, r).pp);
    }
    for (int64_t q : group_ranks(d, r, GroupKind::kPipeline)) {
      EXPECT_EQ(coord_of(d, q).tp, coord_of(d, r).tp);
      EXPECT_EQ(coord_of(d, q).dp, coord_of(d, r).dp);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Issue3Layouts, Topology8,
                         ::testing::Values(Layout{1, 1, 8}, Layout{8, 1, 1}, Layout{1, 8, 1},
                                           Layout{2, 2, 2}, Layout{4, 2, 1}, Layout{2, 1, 4},
                                           Layout{1, 4, 2}),
                         [](const auto& info) {
                           const auto& l = info.param;
                           return "tp" + std::to_string(l.tp) + "_pp" + std::to_string(l.pp) +
                                  "_dp" + std::to_string(l.dp);
                         });

TEST(Topology, Grid222Memberships) {
  const ParallelDims d = make_parallel_dims(8, pc(2, 2));
  // rank 5 = pp 1, dp 0, tp 1
  EXPECT_EQ(coord_of(d, 5), (RankCoord{1, 0, 1}));
  EXPECT_EQ(group_ranks(d, 5, GroupKind::kTensor), (Ranks{4, 5}));
  EXPECT_EQ(group_ranks(d, 5, GroupKind::kData), (Ranks{5, 7}));
  EXPECT_EQ(group_ranks(d, 5, GroupKind::kPipeline), (Ranks{1, 5}));
  EXPECT_EQ(group_ranks(d, 5, GroupKind::kEmbedding), (Ranks{1, 5}));
  EXPECT_EQ(group_ranks(d, 5, GroupKind::kModel), (Ranks{0, 1, 4, 5}));
  EXPECT_EQ(group_ranks(d, 2, GroupKind::kModel), (Ranks{2, 3, 6, 7}));
  EXPECT_EQ(all_groups(d, GroupKind::kData), (std::vector<Ranks>{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
}

// The example in Megatron-LM's initialize_model_parallel docstring: 16 GPUs, tp 2, pp 4.
TEST(Topology, MatchesMegatronDocstringExample) {
  const ParallelDims d = make_parallel_dims(16, pc(2, 4));
  EXPECT_EQ(d.dp, 2);
  EXPECT_EQ(
      all_groups(d, GroupKind::kTensor),
      (std::vector<Ranks>{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}}));
  EXPECT_EQ(
      all_groups(d, GroupKind::kData),
      (std::vector<Ranks>{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15}}));
  EXPECT_EQ(all_groups(d, GroupKind::kPipeline),
            (std::vector<Ranks>{{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}));
  EXPECT_EQ(all_groups(d, GroupKind::kEmbedding),
            (std::vector<Ranks>{{0, 12}, {1, 13}, {2, 14}, {3, 15}}));
}

TEST(Topology, EmbeddingGroupSkipsMiddleStages) {
  const ParallelDims d = make_parallel_dims(8, pc(1, 8));
  EXPECT_EQ(group_ranks(d, 0, GroupKind::kEmbedding), (Ranks{0, 7}));
  EXPECT_EQ(group_ranks(d, 7, GroupKind::kEmbedding), (Ranks{0, 7}));
  for (int64_t r = 1; r < 7; ++r) EXPECT_TRUE(group_ranks(d, r, GroupKind::kEmbedding).empty());
  const ParallelDims flat = make_parallel_dims(4, pc(2, 1));
  EXPECT_EQ(group_ranks(flat, 3, GroupKind::kEmbedding), (Ranks{3}));  // first stage is last
}

TEST(Topology, SingleProcess) {
  const ParallelDims d = make_parallel_dims(1, ParallelConfig{});
  EXPECT_EQ(d.dp, 1);
  for (auto kind : {GroupKind::kWorld, GroupKind::kTensor, GroupKind::kData, GroupKind::kPipeline,
                    GroupKind::kEmbedding, GroupKind::kModel})
    EXPECT_EQ(group_ranks(d, 0, kind), (Ranks{0}));
}

TEST(Topology, RefusesDegreesThatDoNotDivideTheWorld) {
  const auto msg = error_of([] { make_parallel_dims(8, pc(3, 2)); });
  EXPECT_NE(msg.find("tp(3) × pp(2) = 6 does not divide world_size(8)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vpp(1)"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
  EXPECT_NE(error_of([] { make_parallel_dims(8, pc(0, 1)); }).find("parallel.tp(0) must be >= 1"),
            std::string::npos);
  const auto vpp = error_of([] { make_parallel_dims(8, pc(2, 1, 2)); });
  EXPECT_NE(vpp.find("vpp(2) > 1 needs pipeline parallelism but pp(1)"), std::string::npos) << vpp;
  EXPECT_NE(
      error_of([] { make_parallel_dims(8, pc(16, 1)); }).find("does not divide world_size(8)"),
      std::string::npos);
}

Config tiny(int64_t tp, int64_t pp, int64_t vpp = 1) {
  Config c;
  c.model.vocab_size = 256;
  c.model.hidden_size = 64;
  c.model.num_layers = 8;
  c.model.num_heads = 8;
  c.model.ffn_hidden_size = 128;
  c.train.global_batch_size = 8;
  c.train.micro_batch_size = 1;
  c.train.seq_len = 64;
  c.parallel = pc(tp, pp, vpp);
  return c;
}

TEST(Topology, ValidLayoutsOfATinyModel) {
  for (auto [tp, pp] :
       {std::pair<int64_t, int64_t>{1, 1}, {8, 1}, {1, 8}, {2, 2}, {4, 2}, {2, 1}, {1, 4}})
    EXPECT_NO_THROW(validate_layout(8, tiny(tp, pp))) << tp << "," << pp;
  EXPECT_NO_THROW(validate_layout(8, tiny(1, 4, 2)));  // 8 virtual stages, 8 layers
}

TEST(Topology, ModelProblemsAreNamedTogether) {
  Config c = tiny(8, 1);
  c.model.num_heads = 12;
  c.model.hidden_size = 96;
  c.model.ffn_hidden_size = 100;
  c.model.vocab_size = 50257;
  const auto msg = error_of([&] { validate_layout(8, c); });
  EXPECT_NE(msg.find("parallel layout tp(8) × pp(1) × dp(1) for world_size(8)"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("model.num_heads(12) is not divisible by tp(8)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.ffn_hidden_size(100) is not divisible by tp(8)"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("e.g. 104"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.vocab_size(50257) is not divisible by tp(8)"), std::string::npos)
      << msg;
  // The fix suggested is a layout-independent padding multiple (Megatron's 128): 50304 rows.
  EXPECT_NE(msg.find("set model.make_vocab_size_divisible_by to a multiple of 8 (e.g. 128"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("50304"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
}

TEST(Topology, KvHeadsMustDivideOrBeDivisibleByTp) {
  Config c = tiny(2, 1);
  c.model.num_heads = 12;
  c.model.hidden_size = 96;
  c.model.num_kv_heads = 3;
  const auto msg = error_of([&] { validate_layout(8, c); });
  EXPECT_NE(msg.find("model.num_kv_heads(3) and tp(2): one must divide the other"),
            std::string::npos)
      << msg;
  c.model.num_kv_heads = 2;
  c.parallel.tp = 4;  // 2 KV heads replicated over 4 TP ranks
  EXPECT_NO_THROW(validate_layout(8, c));
  c.model.num_kv_heads = 4;
  EXPECT_NO_THROW(validate_layout(8, c));
}

TEST(Topology, MoreStagesThanLayers) {
  Config c = tiny(1, 4, 2);
  c.model.num_layers = 6;
  const auto msg = error_of([&] { validate_layout(8, c); });
  EXPECT_NE(msg.find("pp(4) × vpp(2) = 8 virtual stages but model.num_layers is 6"),
            std::string::npos)
      << msg;
  c = tiny(1, 8);
  c.model.num_layers = 4;
  EXPECT_NE(error_of([&] { validate_layout(8, c); }).find("pp(8) stages but model.num_layers is 4"),
            std::string::npos);
}

TEST(Topology, BatchAndSequenceSplits) {
  Config c = tiny(2, 1);  // dp 4
  c.train.global_batch_size = 10;
  auto msg = error_of([&] { validate_layout(8, c); });
  EXPECT_NE(
      msg.find(
          "train.global_batch_size(10) is not divisible by train.micro_batch_size(1) × dp(4) = 4"),
      std::string::npos)
      << msg;
  c = tiny(8, 1);
  c.train.seq_len = 60;
  EXPECT_NO_THROW(validate_layout(8, c));
  c.parallel.sequence_parallel = true;
  msg = error_of([&] { validate_layout(8, c); });
  EXPECT_NE(
      msg.find("train.seq_len(60) is not divisible by tp(8) with parallel.sequence_parallel=true"),
      std::string::npos)
      << msg;
}

TEST(Topology, CoordinatesOutsideTheGrid) {
  const ParallelDims d = make_parallel_dims(8, pc(2, 2));
  EXPECT_NE(error_of([&] { coord_of(d, 8); }).find("rank 8 is outside the grid"),
            std::string::npos);
  EXPECT_THROW(rank_of(d, RankCoord{2, 0, 0}), Error);
}

}  // namespace
}  // namespace weft

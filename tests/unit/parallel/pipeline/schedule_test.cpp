// Pipeline schedule tables without tensors: coverage and order of every (micro-batch, chunk) on
// every rank over a grid of (pp, vpp, m), the transfer annotations the executor relies on, the
// memory bound of each schedule, error messages for bad inputs, and describe().
#include "tests/unit/test_util.h"
#include "parallel/pipeline/schedule.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <tuple>

#include "weft/error.h"
#include "tests/unit/parallel/pipeline/schedule_grid.h"

namespace weft {
namespace {

using testing::error_of;

using pipeline_test::grid_id;
using pipeline_test::schedule_grid;

TEST(PipelineSchedule, GridCoversEverySchedule) {
  auto configs = schedule_grid();
  auto count = [&](const std::string& name) {
    return std::count_if(configs.begin(), configs.end(),
                         [&](const pipeline_test::GridPoint& c) { return c.name == name; });
  };
  // Distinct m per pp: 5 values, except pp=2 {2,4,8,16}, pp=4 {4,8,16}, pp=8 {8,16,32}.
  EXPECT_EQ(count("1f1b"), 35);
  EXPECT_EQ(count("gpipe"), 4 * 35);
  // m % pp == 0 leaves pp, 2pp, 4pp, plus 8 and 16 where pp divides them.
  EXPECT_EQ(count("interleaved_1f1b"), 4 * (5 + 4 + 3 + 3 + 3 + 3 + 3 + 3));
}

TEST(PipelineSchedule, EveryRankRunsEachCellOnceAndBackwardAfterForward) {
  for (const auto& c : schedule_grid()) {
    SCOPED_TRACE(grid_id(c));
    auto s = build_schedule(c.name, c.pp, c.vpp, c.m);
    ASSERT_EQ(s.pp, c.pp);
    ASSERT_EQ(static_cast<int64_t>(s.ranks.size()), c.pp);
    for (int64_t r = 0; r < c.pp; ++r) {
      const auto& actions = s.ranks[r].actions;
      ASSERT_EQ(static_cast<int64_t>(actions.size()), 2 * c.m * c.vpp) << "rank " << r;
      std::map<std::pair<int64_t, int64_t>, int64_t> forward_at, backward_at;
      for (int64_t k = 0; k < static_cast<int64_t>(actions.size()); ++k) {
        const auto& a = actions[k];
        ASSERT_GE(a.microbatch, 0);
        ASSERT_LT(a.microbatch, c.m);
        ASSERT_GE(a.chunk, 0);
        ASSERT_LT(a.chunk, c.vpp);
        auto& seen = a.kind == PipelineAction::kForward ? forward_at : backward_at;
        ASSERT_TRUE(seen.emplace(std::make_pair(a.microbatch, a.chunk), k).second)
            << "rank " << r << " repeats action " << k;
      }
      ASSERT_EQ(static_cast<int64_t>(forward_at.size()), c.m * c.vpp);
      ASSERT_EQ(static_cast<int64_t>(backward_at.size()), c.m * c.vpp);
      for (const auto& [cell, k] : backward_at)
        ASSERT_LT(forward_at.at(cell), k) << "rank " << r << " backward before forward";
    }
  }
}

// The first steps of the two Megatron schedules, against the formulas they come from.
TEST(PipelineSchedule, OneFOneBWarmupIsPpMinusRankMinusOne) {
  auto s = build_schedule("1f1b", 4, 1, 8);
  for (int64_t r = 0; r < 4; ++r) {
    const auto& a = s.ranks[r].actions;
    int64_t warmup = 0;
    while (a[warmup].kind == PipelineAction::kForward) ++warmup;
    EXPECT_EQ(warmup, 4 - r - 1 + 1) << "rank " << r;  // warmup forwards + the first steady one
    // Then B, F alternate until the last forward; the rest is backwards.
    std::string kinds;
    for (const auto& x : a) kinds += x.kind == PipelineAction::kForward ? 'F' : 'B';
    std::string expected(4 - r - 1, 'F');
    for (int64_t j = 0; j < 8 - (4 - r - 1); ++j) expected += "FB";
    expected += std::string(4 - r - 1, 'B');
    EXPECT_EQ(kinds, expected) << "rank " << r;
  }
}

TEST(PipelineSchedule, InterleavedFollowsMegatronIterationOrder) {
  // p=2, v=2, m=4: forward iterations visit (mb, chunk) = (0,0) (1,0) (0,1) (1,1) (2,0) (3,0)
  // (2,1) (3,1); rank 0 warms up with 2(p-1) + (v-1)p = 4 forwards, rank 1 with 2.
  auto s = build_schedule("interleaved_1f1b", 2, 2, 4);
  auto labels = [&](int64_t r) {
    std::vector<std::string> out;
    for (const auto& a : s.ranks[r].actions)
      out.push_back(
          str(a.kind == PipelineAction::kForward ? "F" : "B", a.microbatch, ".", a.chunk));
    return out;
  };
  EXPECT_EQ(labels(0), (std::vector<std::string>{"F0.0", "F1.0", "F0.1", "F1.1", "F2.0", "B0.1",
                                                 "F3.0", "B1.1", "F2.1", "B0.0", "F3.1", "B1.0",
                                                 "B2.1", "B3.1", "B2.0", "B3.0"}));
  EXPECT_EQ(labels(1), (std::vector<std::string>{"F0.0", "F1.0", "F0.1", "B0.1", "F1.1", "B1.1",
                                                 "F2.0", "B0.0", "F3.0", "B1.0", "F2.1", "B2.1",
                                                 "F3.1", "B3.1", "B2.0", "B3.0"}));
}

TEST(PipelineSchedule, InterleavedWithMEqualPpRunsAllForwardsFirst) {
  auto s = build_schedule("interleaved_1f1b", 4, 2, 4);
  for (const auto& rank : s.ranks)
    for (size_t k = 0; k < rank.actions.size(); ++k)
      EXPECT_EQ(rank.actions[k].kind, k < 8 ? PipelineAction::kForward : PipelineAction::kBackward);
}

// The memory property: how many (micro-batch, chunk) activations a rank holds at once.
//  1f1b:        min(m, p - r)                      <= p, whatever m is (GPipe holds all m)
//  interleaved: min(W + 1, m v), W = 2(p - r - 1) + (v - 1) p; m v when m == p
//               <= v p + p - 1 chunk-activations = p + (p - 1)/v stage-equivalents (rank 0)
TEST(PipelineSchedule, PeakInFlightMicrobatchesMatchesEachScheduleBound) {
  for (const auto& c : schedule_grid()) {
    SCOPED_TRACE(grid_id(c));
    auto peaks = peak_in_flight(build_schedule(c.name, c.pp, c.vpp, c.m));
    ASSERT_EQ(static_cast<int64_t>(peaks.size()), c.pp);
    for (int64_t r = 0; r < c.pp; ++r) {
      SCOPED_TRACE(str("rank ", r));
      const int64_t p = c.pp, v = c.vpp, m = c.m;
      if (c.name == "1f1b") {
        EXPECT_EQ(peaks[r], std::min(m, p - r));
        EXPECT_LE(peaks[r], p);
      } else if (c.name == "interleaved_1f1b") {
        const int64_t expected =
            m == p ? m * v : std::min(2 * (p - r - 1) + (v - 1) * p + 1, m * v);
        EXPECT_EQ(peaks[r], expected);
        EXPECT_LE(peaks[r], v * p + p - 1);
      } else {
        EXPECT_EQ(peaks[r], m * v);
      }
    }
  }
}

// What the executor relies on: each cross-rank tensor has one send after its producer (at most
// one action later: the interleaved steady state sends F's output after the paired B) and one
// recv before its consumer, both sides of every rank pair list them in the same order, and a
// rank never sends to itself. pp == 1 hands tensors over in memory: no ops at all.
TEST(PipelineSchedule, TransfersAreAnnotatedOnceInOrderAndInTime) {
  using Key = std::tuple<int, int64_t, int64_t>;  // (payload, microbatch, producer stage)
  for (const auto& c : schedule_grid()) {
    SCOPED_TRACE(grid_id(c));
    auto s = build_schedule(c.name, c.pp, c.vpp, c.m);
    const int64_t stages = c.pp * c.vpp;
    std::map<std::pair<int64_t, int64_t>, std::vector<Key>> sent, received;  // (from, to)
    std::map<Key, int64_t> send_count, recv_count;
    for (int64_t r = 0; r < c.pp; ++r) {
      const auto& rs = s.ranks[r];
      const int64_t n = static_cast<int64_t>(rs.actions.size());
      std::map<Key, int64_t> produced_at, consumed_at;
      for (int64_t k = 0; k < n; ++k) {
        const auto& a = rs.actions[k];
        const int64_t stage = virtual_stage(c.pp, r, a.chunk);
        const bool fwd = a.kind == PipelineAction::kForward;
        const int payload = fwd ? Transfer::kActivation : Transfer::kGradient;
        const int64_t next = fwd ? stage + 1 : stage - 1, prev = fwd ? stage - 1 : stage + 1;
        if (next >= 0 && next < stages && next % c.pp != r)
          produced_at[{payload, a.microbatch, stage}] = k;
        if (prev >= 0 && prev < stages && prev % c.pp != r)
          consumed_at[{payload, a.microbatch, prev}] = k;
      }
      for (int64_t k = 0; k <= n; ++k) {
        const auto& ops = k < n ? rs.actions[k].comm_before : rs.comm_after;
        bool seen_recv = false;
        for (const auto& op : ops) {
          ASSERT_NE(op.peer, r);
          const int64_t stage = virtual_stage(c.pp, r, op.chunk);
          if (op.type == Transfer::kSend) {
            ASSERT_FALSE(seen_recv) << "sends come first in a batch";
            Key key{op.payload, op.microbatch, stage};
            ASSERT_TRUE(produced_at.count(key)) << "rank " << r << " sends what it never makes";
            const int64_t producer = produced_at.at(key);
            EXPECT_GT(k, producer) << "rank " << r;
            EXPECT_LE(k, producer + 2) << "rank " << r << " holds a send back";
            sent[{r, op.peer}].push_back(key);
            ++send_count[key];
          } else {
            seen_recv = true;
            Key key{op.payload, op.microbatch,
                    op.payload == Transfer::kActivation ? stage - 1 : stage + 1};
            ASSERT_TRUE(consumed_at.count(key)) << "rank " << r << " receives what it never uses";
            EXPECT_LE(k, consumed_at.at(key)) << "rank " << r << " receives after use";
            received[{op.peer, r}].push_back(key);
            ++recv_count[key];
          }
        }
      }
      for (const auto& [key, k] : produced_at) EXPECT_EQ(send_count[key], 1);
      for (const auto& [key, k] : consumed_at) EXPECT_EQ(recv_count[key], 1);
    }
    EXPECT_EQ(sent, received) << "a pair's sends and recvs are listed in different orders";
    if (c.pp == 1) {
      EXPECT_TRUE(sent.empty());
    }
  }
}

TEST(PipelineSchedule, OneFOneBPairsSendsWithRecvsLikeMegatron) {
  // Rank 1 of 4 in the steady state: send_forward_recv_backward after F, then
  // send_backward_recv_forward after B.
  auto s = build_schedule("1f1b", 4, 1, 8);
  const auto& a = s.ranks[1].actions;
  // a[3] = B0 (after warmup F0 F1 and steady F2), a[4] = F3, a[5] = B1.
  ASSERT_EQ(a[5].kind, PipelineAction::kBackward);
  ASSERT_EQ(a[5].microbatch, 1);
  ASSERT_EQ(a[5].comm_before.size(), 2u);
  EXPECT_EQ(a[5].comm_before[0].type, Transfer::kSend);
  EXPECT_EQ(a[5].comm_before[0].payload, Transfer::kActivation);
  EXPECT_EQ(a[5].comm_before[0].peer, 2);
  EXPECT_EQ(a[5].comm_before[0].microbatch, 3);
  EXPECT_EQ(a[5].comm_before[1].type, Transfer::kRecv);
  EXPECT_EQ(a[5].comm_before[1].payload, Transfer::kGradient);
  EXPECT_EQ(a[5].comm_before[1].peer, 2);
  EXPECT_EQ(a[5].comm_before[1].microbatch, 1);
  ASSERT_EQ(a[6].comm_before.size(), 2u);
  EXPECT_EQ(a[6].comm_before[0].type, Transfer::kSend);
  EXPECT_EQ(a[6].comm_before[0].payload, Transfer::kGradient);
  EXPECT_EQ(a[6].comm_before[0].peer, 0);
  EXPECT_EQ(a[6].comm_before[1].type, Transfer::kRecv);
  EXPECT_EQ(a[6].comm_before[1].payload, Transfer::kActivation);
  EXPECT_EQ(a[6].comm_before[1].microbatch, 4);
}

TEST(PipelineSchedule, DefaultNameFollowsVpp) {
  EXPECT_EQ(default_schedule_name(1), "1f1b");
  EXPECT_EQ(default_schedule_name(2), "interleaved_1f1b");
  EXPECT_EQ(build_schedule(default_schedule_name(3), 4, 3, 8).name, "interleaved_1f1b");
  EXPECT_EQ(schedule_names(), (std::vector<std::string>{"1f1b", "interleaved_1f1b", "gpipe"}));
}

TEST(PipelineSchedule, InvalidInputsNameTheirValues) {
  auto msg = error_of([] { build_schedule("interleaved_1f1b", 4, 2, 6); });
  EXPECT_NE(msg.find("microbatches=6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pp=4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("multiple of pp"), std::string::npos) << msg;

  msg = error_of([] { build_schedule("1f1b", 0, 1, 4); });
  EXPECT_NE(msg.find("pp must be >= 1 (got pp=0)"), std::string::npos) << msg;
  msg = error_of([] { build_schedule("interleaved_1f1b", -2, 2, 4); });
  EXPECT_NE(msg.find("got pp=-2"), std::string::npos) << msg;
  msg = error_of([] { build_schedule("gpipe", 2, 0, 4); });
  EXPECT_NE(msg.find("got vpp=0"), std::string::npos) << msg;
  msg = error_of([] { build_schedule("1f1b", 2, 1, 0); });
  EXPECT_NE(msg.find("got microbatches=0"), std::string::npos) << msg;

  msg = error_of([] { build_schedule("zero_bubble", 4, 1, 8); });
  EXPECT_NE(msg.find("unknown pipeline schedule 'zero_bubble'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pp=4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1f1b, interleaved_1f1b, gpipe"), std::string::npos) << msg;

  msg = error_of([] { build_schedule("1f1b", 4, 2, 8); });
  EXPECT_NE(msg.find("needs vpp == 1 (got vpp=2)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("interleaved_1f1b"), std::string::npos) << msg;
}

TEST(PipelineSchedule, CustomOrdersAreValidated) {
  auto f = [](int64_t mb) { return PipelineAction{PipelineAction::kForward, mb, 0, {}}; };
  auto b = [](int64_t mb) { return PipelineAction{PipelineAction::kBackward, mb, 0, {}}; };
  auto msg = error_of([&] { schedule_from_orders("mine", 1, 1, 2, {{f(0), b(0), b(1), f(1)}}); });
  EXPECT_NE(msg.find("rank 0 action 2 (B1) runs before its forward"), std::string::npos) << msg;
  msg = error_of([&] { schedule_from_orders("mine", 1, 1, 2, {{f(0), b(0), f(0), b(1)}}); });
  EXPECT_NE(msg.find("action 2 (F0) repeats a forward"), std::string::npos) << msg;
  msg = error_of([&] { schedule_from_orders("mine", 1, 1, 2, {{f(0), b(0)}}); });
  EXPECT_NE(msg.find("rank 0 never runs the forward of micro-batch 1 chunk 0"), std::string::npos)
      << msg;
  msg = error_of([&] { schedule_from_orders("mine", 1, 1, 1, {{f(0), b(0)}, {f(0), b(0)}}); });
  EXPECT_NE(msg.find("orders for 2 ranks, expected pp=1"), std::string::npos) << msg;
}

TEST(PipelineSchedule, OrdersThatCannotRunAreReportedAsDeadlockWhenBuilt) {
  // Rank 0 wants micro-batch 0's gradient before it sends micro-batch 1's activation; rank 1
  // insists on micro-batch 1 first. Nobody can move.
  auto f = [](int64_t mb) { return PipelineAction{PipelineAction::kForward, mb, 0, {}}; };
  auto b = [](int64_t mb) { return PipelineAction{PipelineAction::kBackward, mb, 0, {}}; };
  auto msg = error_of([&] {
    schedule_from_orders("crossed", 2, 1, 2, {{f(0), b(0), f(1), b(1)}, {f(1), b(1), f(0), b(0)}});
  });
  EXPECT_NE(msg.find("'crossed' (pp=2, vpp=1, microbatches=2) deadlocks"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("rank 0 before B0 (action 1)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1 before F1 (action 0)"), std::string::npos) << msg;
}

TEST(PipelineSchedule, DescribePrintsOneRowPerRank) {
  auto s = build_schedule("1f1b", 2, 1, 3);
  EXPECT_EQ(describe(s),
            "1f1b pp=2 vpp=1 microbatches=3\n"
            "rank 0: F0 F1 B0 F2 B1 B2\n"
            "rank 1: F0 B0 F1 B1 F2 B2\n");
  EXPECT_EQ(describe(s, true),
            "1f1b pp=2 vpp=1 microbatches=3\n"
            "rank 0: F0 [>1:a0] F1 [>1:a1 <1:g0] B0 F2 [>1:a2 <1:g1] B1 [<1:g2] B2\n"
            "rank 1: [<0:a0] F0 [<0:a1] B0 [>0:g0] F1 B1 [>0:g1 <0:a2] F2 B2 [>0:g2]\n");
  auto t = describe(build_schedule("interleaved_1f1b", 2, 2, 2));
  EXPECT_NE(t.find("rank 0: F0.0 F1.0 F0.1 F1.1 B0.1"), std::string::npos) << t;
}

}  // namespace
}  // namespace weft

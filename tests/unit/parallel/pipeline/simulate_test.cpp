// The schedule simulator: every schedule in the grid runs to completion under the executor
// protocol, bubbles equal the theory, and deadlocks, out-of-order pairs and missing inputs in a
// hand-broken schedule are reported with the rank and action.
#include <gtest/gtest.h>

#include <array>
#include <functional>

#include "tests/unit/test_util.h"
#include "weft/error.h"
#include "parallel/pipeline/schedule.h"
#include "tests/unit/parallel/pipeline/schedule_grid.h"

namespace weft {
namespace {

using testing::error_of;

using pipeline_test::grid_id;
using pipeline_test::schedule_grid;

// Completion does not depend on timing (ops match by order, not by clock), but the times do;
// run a few shapes, including slow transfers, and check the accounting.
TEST(PipelineSimulate, GridRunsToCompletionUnderSeveralTimings) {
  const std::vector<std::array<double, 3>> timings = {
      {1, 2, 0}, {1, 1, 0}, {2, 1, 0.5}, {1.5, 3.25, 0.1}};
  for (const auto& c : schedule_grid()) {
    SCOPED_TRACE(grid_id(c));
    auto s = build_schedule(c.name, c.pp, c.vpp, c.m);
    for (const auto& [tf, tb, tp] : timings) {
      SCOPED_TRACE(str("t_f=", tf, " t_b=", tb, " t_p2p=", tp));
      SimResult r;
      ASSERT_NO_THROW(r = simulate(s, tf, tb, tp));
      ASSERT_EQ(static_cast<int64_t>(r.busy.size()), c.pp);
      const double work = c.m * c.vpp * (tf + tb);
      for (int64_t rank = 0; rank < c.pp; ++rank) {
        EXPECT_DOUBLE_EQ(r.busy[rank], work);
        EXPECT_DOUBLE_EQ(r.idle[rank], r.total_time - work);
        // Actions run one after another.
        const auto& start = r.start[rank];
        for (size_t k = 1; k < start.size(); ++k) EXPECT_GE(start[k], r.end[rank][k - 1]);
      }
      // Dependency chains no schedule can shorten. The last rank cannot start before
      // micro-batch 0 has crossed the p - 1 ranks before it (ramp), then does all its work;
      // with one stage per rank its last action is a backward that p - 1 ranks must still pass
      // back (drain). And one micro-batch alone runs forward through all v p stages and back,
      // with a transfer between consecutive stages (on different ranks when p > 1; with p = 1
      // they hand over in memory). Exact for 1F1B without transfers, hence the rounding slack.
      const int64_t stages = c.pp * c.vpp;
      const double hops = c.pp > 1 ? tp : 0.0;
      const double ramp = (c.pp - 1) * (tf + tp), drain = c.vpp == 1 ? (c.pp - 1) * (tb + tp) : 0.0;
      const double one_microbatch = stages * (tf + tb) + 2 * (stages - 1) * hops;
      const double slack = 1e-12 * r.total_time;
      EXPECT_GE(r.total_time + slack, work + ramp + drain);
      EXPECT_GE(r.total_time + slack, one_microbatch);
      // Every rank is busy for the same `work`, so the bubble is the idle share of the makespan.
      EXPECT_DOUBLE_EQ(r.bubble_fraction, (r.total_time - work) / r.total_time);
    }
  }
}

// With uniform stage times and t_b = 2 t_f, PipeDream-Flush's makespan is
//   (m + p - 1)(t_f + t_b):  p - 1 steps of ramp-up and of drain around m steps of work,
// so each rank idles exactly (p - 1)(t_f + t_b) and the bubble is (p - 1) / (m + p - 1).
// GPipe has the same bubble (it only differs in memory). Times are small integers, so exact.
TEST(PipelineSimulate, OneFOneBAndGpipeBubbleEqualsTheoryExactly) {
  for (const auto& c : schedule_grid()) {
    if (c.name == "interleaved_1f1b" || c.vpp != 1) continue;
    SCOPED_TRACE(grid_id(c));
    auto r = simulate(build_schedule(c.name, c.pp, 1, c.m), 1.0, 2.0);
    EXPECT_EQ(r.total_time, (c.m + c.pp - 1) * 3.0);
    for (double idle : r.idle) EXPECT_EQ(idle, (c.pp - 1) * 3.0);
    EXPECT_DOUBLE_EQ(r.bubble_fraction,
                     static_cast<double>(c.pp - 1) / static_cast<double>(c.m + c.pp - 1));
    EXPECT_DOUBLE_EQ(r.bubble_fraction, ideal_bubble_fraction(c.pp, 1, c.m));
  }
}

// Interleaved: t_f, t_b are per chunk (a chunk is 1/v of a rank's layers). What we assert, and
// why it is exact rather than approximate: the ramp-up and drain still take p - 1 steps, but
// of one chunk, so the makespan is (v m + p - 1)(t_f + t_b), every rank idles exactly
// (p - 1)(t_f + t_b) and the bubble is (p - 1) / (v m + p - 1) -- the Megatron-LM paper's
// (1/v)(p - 1)/m expressed as a fraction of the total instead of the ideal time. That needs
// the transfers to line up: with blocking batches this holds only because the steady state
// exchanges after each F/B pair (Megatron's send_forward_backward_recv_forward_backward);
// sending F's output between F and B would make senders wait out a neighbour's backward.
// Also checked at t_b = t_f, and that it beats 1F1B for v > 1, p > 1 (same ratio units).
TEST(PipelineSimulate, InterleavedBubbleEqualsTheoryAndBeatsOneFOneB) {
  for (const auto& c : schedule_grid()) {
    if (c.name != "interleaved_1f1b") continue;
    SCOPED_TRACE(grid_id(c));
    auto s = build_schedule(c.name, c.pp, c.vpp, c.m);
    for (double tb : {2.0, 1.0}) {
      auto r = simulate(s, 1.0, tb);
      EXPECT_EQ(r.total_time, (c.vpp * c.m + c.pp - 1) * (1.0 + tb));
      for (double idle : r.idle) EXPECT_EQ(idle, (c.pp - 1) * (1.0 + tb));
      EXPECT_DOUBLE_EQ(r.bubble_fraction, ideal_bubble_fraction(c.pp, c.vpp, c.m));
    }
    if (c.vpp > 1 && c.pp > 1) {
      const double one_f_one_b =
          simulate(build_schedule("1f1b", c.pp, 1, c.m), 1.0, 2.0).bubble_fraction;
      EXPECT_LT(simulate(s, 1.0, 2.0).bubble_fraction, one_f_one_b);
    }
  }
}

TEST(PipelineSimulate, TransferTimeDelaysDependentSteps) {
  // pp=2, m=1: F0 on rank 0 [0,1]; activation arrives at 1.5; F0 on rank 1 [1.5,2.5];
  // B0 [2.5,4.5]; gradient arrives at 5; B0 on rank 0 [5,7].
  auto r = simulate(build_schedule("1f1b", 2, 1, 1), 1.0, 2.0, 0.5);
  EXPECT_DOUBLE_EQ(r.total_time, 7.0);
  EXPECT_EQ(r.start[0], (std::vector<double>{0.0, 5.0}));
  EXPECT_EQ(r.start[1], (std::vector<double>{1.5, 2.5}));
  EXPECT_DOUBLE_EQ(r.idle[0], 4.0);
  EXPECT_DOUBLE_EQ(r.idle[1], 4.0);
  EXPECT_DOUBLE_EQ(r.bubble_fraction, 8.0 / 14.0);
}

TEST(PipelineSimulate, SingleStageHasNoBubbleAndNoTransfers) {
  auto s = build_schedule("interleaved_1f1b", 1, 3, 4);  // chunks hand over in memory
  auto r = simulate(s, 1.0, 2.0, 10.0);
  EXPECT_EQ(r.total_time, 4 * 3 * 3.0);
  EXPECT_EQ(r.bubble_fraction, 0.0);
}

// Hand-broken schedules: what an executor would hang on, or compute wrongly, is an error here.
PipelineAction act(PipelineAction::Kind kind, int64_t mb, std::vector<Transfer> comm = {}) {
  return {kind, mb, 0, std::move(comm)};
}
Transfer op(Transfer::Type type, Transfer::Payload payload, int64_t peer, int64_t mb) {
  return {type, payload, peer, mb, 0};
}

TEST(PipelineSimulate, DeadlockNamesEachBlockedRankActionAndOp) {
  // Rank 0 waits for micro-batch 0's gradient before its first forward, so it never sends the
  // activation rank 1 waits for.
  Schedule s{"broken", 2, 1, 1, {}};
  s.ranks.push_back({{act(PipelineAction::kForward, 0, {op(Transfer::kRecv, Transfer::kGradient, 1, 0)}),
                      act(PipelineAction::kBackward, 0)},
                     {op(Transfer::kSend, Transfer::kActivation, 1, 0)}});
  s.ranks.push_back(
      {{act(PipelineAction::kForward, 0, {op(Transfer::kRecv, Transfer::kActivation, 0, 0)}),
        act(PipelineAction::kBackward, 0)},
       {op(Transfer::kSend, Transfer::kGradient, 0, 0)}});
  auto msg = error_of([&] { simulate(s, 1, 2); });
  EXPECT_NE(msg.find("'broken' (pp=2, vpp=1, microbatches=1) deadlocks"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 0 before F0 (action 0) waits to recv gradient of micro-batch 0 "
                     "(chunk 0) from rank 1"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("rank 1 before F0 (action 0) waits to recv activation of micro-batch 0 "
                     "(chunk 0) from rank 0"),
            std::string::npos)
      << msg;
}

TEST(PipelineSimulate, OutOfOrderPairIsAnError) {
  // Rank 1 lists its two activation recvs the other way round: with NCCL or Gloo the tensors
  // would silently swap.
  auto s = build_schedule("1f1b", 2, 1, 2);
  std::vector<Transfer>* first = nullptr;
  for (auto& a : s.ranks[1].actions)
    for (auto& o : a.comm_before)
      if (o.type == Transfer::kRecv && o.payload == Transfer::kActivation) {
        if (!first) {
          first = &a.comm_before;
        } else if (&a.comm_before != first) {
          std::swap(o.microbatch, first->back().microbatch);
        }
      }
  auto msg = error_of([&] { simulate(s, 1, 2); });
  EXPECT_NE(msg.find("transfers from rank 0 to rank 1 are out of order"), std::string::npos) << msg;
  EXPECT_NE(msg.find("send activation of micro-batch 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expects to recv activation of micro-batch 1"), std::string::npos) << msg;
}

TEST(PipelineSimulate, RunningBeforeTheInputArrivesIsAnError) {
  // Move rank 1's first recv to after the forward that needs it.
  auto s = build_schedule("1f1b", 2, 1, 1);
  auto& actions = s.ranks[1].actions;
  ASSERT_EQ(actions[0].comm_before.size(), 1u);
  actions[1].comm_before.insert(actions[1].comm_before.begin(), actions[0].comm_before[0]);
  actions[0].comm_before.clear();
  auto msg = error_of([&] { simulate(s, 1, 2); });
  EXPECT_NE(msg.find("rank 1 runs F0 (action 0) before receiving its activation from stage 0 on "
                     "rank 0"),
            std::string::npos)
      << msg;
}

TEST(PipelineSimulate, SendingToTheWrongRankOrBeforeComputingIsAnError) {
  auto s = build_schedule("1f1b", 3, 1, 3);
  s.ranks[0].actions[1].comm_before[0].peer = 2;  // rank 0's activations go to rank 1
  auto msg = error_of([&] { simulate(s, 1, 2); });
  EXPECT_NE(msg.find("that tensor's other end is rank 1"), std::string::npos) << msg;

  s = build_schedule("1f1b", 3, 1, 3);
  s.ranks[0].actions[1].comm_before[0].microbatch = 2;  // not computed yet
  msg = error_of([&] { simulate(s, 1, 2); });
  EXPECT_NE(msg.find("rank 0 before F1 (action 1) would send activation of micro-batch 2"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("before computing it"), std::string::npos) << msg;
}

TEST(PipelineSimulate, BadTimesAreRejected) {
  auto s = build_schedule("gpipe", 2, 1, 2);
  auto msg = error_of([&] { simulate(s, 0.0, 1.0); });
  EXPECT_NE(msg.find("t_forward=0"), std::string::npos) << msg;
}

TEST(PipelineSimulate, TimelineDrawsActionsOverTheirDuration) {
  auto s = build_schedule("1f1b", 2, 1, 2);
  auto r = simulate(s, 1.0, 2.0);
  EXPECT_EQ(describe_timeline(s, r, 1.0),
            "rank 0: F0 F1 .  .  B0    .  B1\n"
            "rank 1: .  F0 B0    F1 B1    .  .\n");
}

}  // namespace
}  // namespace weft

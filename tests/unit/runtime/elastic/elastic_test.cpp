// The pieces of issue 9 that need no processes: the layout an elastic world trains with (and its
// spares), fault.* validation, the once-per-job rule of injected faults, the progress record the
// watchdog reads, and the watchdog's exit on a hang (a death test: it ends the process).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "weft/config.h"
#include "core/progress.h"
#include "parallel/topology.h"
#include "runtime/elastic/inject.h"
#include "runtime/elastic/watchdog.h"
#include "tests/unit/test_util.h"

namespace weft {
namespace {

using weft::testing::error_of;
namespace fs = std::filesystem;

Config tiny(int64_t tp, int64_t pp, int64_t global_batch, int64_t micro) {
  Config c;
  c.model.vocab_size = 256, c.model.hidden_size = 64, c.model.num_layers = 4, c.model.num_heads = 4;
  c.model.ffn_hidden_size = 128, c.model.max_seq_len = 32;
  c.train.seq_len = 32, c.train.global_batch_size = global_batch, c.train.micro_batch_size = micro;
  c.parallel.tp = tp, c.parallel.pp = pp;
  return c;
}

TEST(ElasticLayout, LargestMultipleOfTpTimesPpWhoseDpKeepsTheGlobalBatch) {
  // 5 processes, tp × pp = 2: 4 train, 1 spare.
  ParallelDims d = elastic_layout(5, tiny(2, 1, 8, 1));
  EXPECT_EQ(d.dp, 2);
  EXPECT_EQ(d.world_size(), 4);
  // 3 processes, 4 sequences in micro-batches of 2: dp 3 cannot split them, dp 2 can.
  d = elastic_layout(3, tiny(1, 1, 4, 2));
  EXPECT_EQ(d.dp, 2);
  // 7 processes, global batch 12, micro-batch 1: dp 6 (12 / 6 = 2 micro-batches each).
  d = elastic_layout(7, tiny(1, 1, 12, 1));
  EXPECT_EQ(d.dp, 6);
  // A world that fits exactly is used whole.
  d = elastic_layout(8, tiny(2, 2, 8, 1));
  EXPECT_EQ(d.world_size(), 8);
  EXPECT_EQ(d.dp, 2);
}

TEST(ElasticLayout, RefusesWhatNoDpCanTrain) {
  EXPECT_NE(error_of([] { elastic_layout(3, tiny(2, 2, 8, 1)); }).find("world_size(3) is smaller than tp(2) × pp(2) = 4"),
            std::string::npos);
  // A global batch that is not a multiple of the micro-batch: no dp keeps it.
  EXPECT_NE(error_of([] { elastic_layout(4, tiny(1, 1, 3, 2)); }).find("global_batch_size"), std::string::npos);
  // The model cannot split by tp at any dp.
  EXPECT_NE(error_of([] { elastic_layout(6, tiny(3, 1, 6, 1)); }).find("tp(3)"), std::string::npos);
}

TEST(FaultConfig, ValidatesItsKeys) {
  Config c;
  c.fault.heartbeat_interval_s = 2, c.fault.heartbeat_timeout_s = 3;
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.heartbeat_timeout_s (3) must be at least twice"), std::string::npos);
  c = Config();
  c.fault.kill_rank = 1;  // without kill_step
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.kill_rank and fault.kill_step go together"), std::string::npos);
  c = Config();
  c.fault.straggler_factor = 1.0;
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.straggler_factor must be > 1"), std::string::npos);
  c = Config();
  c.fault.hang_timeout_s = -1;
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.hang_timeout_s must be >= 0"), std::string::npos);
  // Each bad value is refused naming its own key and value.
  c = Config();
  c.fault.max_bad_steps = -1;
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.max_bad_steps must be >= 0 (0 = off), got -1"), std::string::npos);
  c = Config();
  c.fault.nan_count = 0;
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.nan_count must be >= 1, got 0"), std::string::npos);
  c = Config();
  c.fault.heartbeat_timeout_s = 0;  // "0 = off" is the interval's
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.heartbeat_interval_s=0 turns heartbeats off"), std::string::npos);
  // A fault the run can never reach is refused rather than silently not fired.
  c = Config();
  c.train.steps = 12, c.fault.nan_step = 13;
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.nan_step (13) is after the last step (train.steps=12)"),
            std::string::npos);
  c = Config();
  c.train.steps = 12, c.fault.hang_rank = 0, c.fault.hang_step = 20;
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.hang_step (20) is after the last step"), std::string::npos);
  c = Config();
  c.train.steps = 12, c.checkpoint.interval = 4, c.fault.kill_during_checkpoint = "6";
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.kill_during_checkpoint (6) is not a step that saves a checkpoint"),
            std::string::npos);
  c.checkpoint.interval = 0;  // only the last step saves
  c.fault.kill_during_checkpoint = "8";
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.kill_during_checkpoint (8) is not a step"), std::string::npos);
  c.fault.kill_during_checkpoint = "12";
  EXPECT_EQ(error_of([&] { c.validate(); }), "");
  c.fault.kill_during_checkpoint = "true";  // the first save, whichever step
  EXPECT_EQ(error_of([&] { c.validate(); }), "");
  Config ok;
  ok.checkpoint.interval = 4;  // step 8 saves
  ok.fault.kill_during_checkpoint = "8";  // rank 0 by default
  EXPECT_EQ(error_of([&] { ok.validate(); }), "");
  EXPECT_EQ(ok.fault.checkpoint_kill_step(), 8);
  ok.fault.kill_during_checkpoint = "true";  // the first save
  EXPECT_EQ(ok.fault.checkpoint_kill_step(), -1);
  ok.fault.kill_during_checkpoint = "false";
  EXPECT_EQ(ok.fault.checkpoint_kill_step(), 0);
  c = Config();
  c.fault.kill_during_checkpoint = "soon";
  EXPECT_NE(error_of([&] { c.validate(); }).find("fault.kill_during_checkpoint must be true, false or a step"),
            std::string::npos);
  // Every key reads from YAML and --set.
  apply_override(ok, "fault.nan_step=5");
  apply_override(ok, "fault.slow_ms=12.5");
  EXPECT_EQ(ok.fault.nan_step, 5);
  EXPECT_EQ(ok.fault.slow_ms, 12.5);
  EXPECT_NE(to_yaml(ok).find("hang_timeout_s"), std::string::npos);
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name = std::to_string(getpid()))
      : path(fs::temp_directory_path() / ("weft_elastic_" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

TEST(FaultInjector, FiresOncePerJob) {
  TempDir dir;
  FaultConfig f;
  f.nan_step = 3, f.nan_count = 2;
  FaultInjector first(f, 0, 2, 0, dir.path.string());
  EXPECT_TRUE(first.armed());
  EXPECT_FALSE(first.nan_at(2));
  EXPECT_TRUE(first.nan_at(3));
  EXPECT_TRUE(first.nan_at(4));
  EXPECT_FALSE(first.nan_at(5));
  EXPECT_FALSE(first.nan_at(3));  // replayed after a rollback: not again
  EXPECT_TRUE(fs::exists(dir.path / ".weft_fault_fired"));
  // A later run in the same run.dir, and a torchrun restart, are not armed.
  EXPECT_FALSE(FaultInjector(f, 0, 2, 0, dir.path.string()).armed());
  TempDir other;
  fs::remove_all(other.path);
  fs::create_directories(other.path / "x");
  EXPECT_FALSE(FaultInjector(f, 0, 2, 1, (other.path / "x").string()).armed());
  // Nothing configured: inert.
  EXPECT_FALSE(FaultInjector(FaultConfig(), 0, 2, 0, (other.path / "x").string()).armed());
  // disarm_nan (a rollback before the NaN steps ended) stops the rest.
  FaultInjector again(f, 0, 2, 0, (other.path / "x").string());
  EXPECT_TRUE(again.nan_at(3));
  again.disarm_nan();
  EXPECT_FALSE(again.nan_at(4));
  // slow_ms applies to its rank only.
  FaultConfig s;
  s.slow_rank = 1, s.slow_ms = 50;
  fs::create_directories(other.path / "y");
  EXPECT_EQ(FaultInjector(s, 1, 2, 0, (other.path / "y").string()).slow_ms(), 50);
  EXPECT_EQ(FaultInjector(s, 0, 2, 0, (other.path / "y").string()).slow_ms(), 0);
}

TEST(Progress, ScopesNestAndRestore) {
  set_progress_step(7);
  {
    ProgressScope outer(OpKind::kCheckpoint, "saving");
    {
      ProgressScope inner(OpKind::kCollective, "all_reduce on dp(ranks 0,1)");
      const ProgressState s = progress_state();
      EXPECT_EQ(s.kind, OpKind::kCollective);
      EXPECT_EQ(s.what, "all_reduce on dp(ranks 0,1)");
      EXPECT_EQ(s.step, 7);
    }
    const ProgressState s = progress_state();
    EXPECT_EQ(s.kind, OpKind::kCheckpoint);
    EXPECT_EQ(s.what, "saving");
    EXPECT_STREQ(op_kind_name(s.kind), "checkpoint");
  }
  EXPECT_EQ(progress_state().kind, OpKind::kIdle);
}

TEST(WatchdogDeathTest, ExitsNamingTheStuckOperation) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  TempDir dir("death");  // the same path in the re-executed child
  const std::string events = (dir.path / "metrics.jsonl").string();
  FaultConfig f;
  f.hang_timeout_s = 0.5;
  EXPECT_EXIT(
      {
        Watchdog w(f, nullptr, events);
        set_progress_step(3);
        ProgressScope scope(OpKind::kData, "reading the batch of step 3");
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(kFaultExitCode), "no progress for 0.[5-9] s .*at step 3, stuck in data: reading the batch");
  std::ifstream in(events);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_NE(line.find("\"kind\":\"hang\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"op\":\"data\""), std::string::npos) << line;
}

TEST(Watchdog, QuietWhileOperationsProgress) {
  FaultConfig f;
  f.hang_timeout_s = 0.3;
  Watchdog w(f, nullptr, "");
  for (int i = 0; i < 10; ++i) {  // 1 s in all, never 0.3 s in one operation
    ProgressScope scope(OpKind::kCompute, "forward");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  w.stop(true);
  SUCCEED();  // reaching here is the assertion: the watchdog did not end the process
}

}  // namespace
}  // namespace weft

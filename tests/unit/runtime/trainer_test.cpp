// The Trainer as a service holds it: failures show in status(), callbacks can be registered while
// it runs; frozen parameters stay bit-identical and hold no optimizer state.
#include "weft/trainer.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <filesystem>
#include <fstream>
#include <thread>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/indexed_dataset.h"
#include "runtime/job.h"
#include "tests/unit/test_util.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

// A tiny Llama job over a random-token dataset in a fresh directory.
Config tiny_job(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("weft_trainer_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    IndexedDatasetWriter w((dir / "data").string(), 4);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
    for (int d = 0; d < 16; ++d) {
      auto t = at::randint(0, 64, {80}, gen, at::kLong);
      w.add_document(std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()));
    }
    w.finalize();
  }
  Config c;
  c.model.family = "llama";
  c.model.vocab_size = 64;
  c.model.hidden_size = 32;
  c.model.num_layers = 2;
  c.model.num_heads = 4;
  c.model.num_kv_heads = 2;
  c.model.ffn_hidden_size = 64;
  c.model.max_seq_len = 16;
  c.train.steps = 5;
  c.train.global_batch_size = 4;
  c.train.micro_batch_size = 2;
  c.train.seq_len = 16;
  c.data.prefix = (dir / "data").string();
  c.data.split = "100,0";
  c.run.dir = (dir / "run").string();
  c.run.tensorboard = false;
  c.run.peak_tflops = 1;
  return c;
}

// Replaces the job's checkpoint directory by a file, so every save fails (root ignores
// permissions, so a read-only directory would not do).
void block_checkpoint_dir(const Config& c) {
  fs::remove_all(c.checkpoint_dir());
  std::ofstream(c.checkpoint_dir()) << "a file where the checkpoint directory should be";
}

TrainerOptions quiet() {
  TrainerOptions o;
  o.console = false;
  return o;
}

TEST(Trainer, StatusReportsFailureWithTheMessage) {
  Config c = tiny_job("fail");
  c.checkpoint.on_error = "stop";
  Trainer t(c, quiet());
  block_checkpoint_dir(c);
  const auto message = testing::error_of([&] { t.run(); });
  ASSERT_NE(message, "");
  const auto st = t.status();
  EXPECT_TRUE(st.failed);
  EXPECT_FALSE(st.running);
  EXPECT_FALSE(st.finished);
  EXPECT_EQ(st.error, message);
  EXPECT_NE(st.error.find(c.checkpoint_dir()), std::string::npos) << st.error;
}

// checkpoint.on_error=continue (the default): a save that cannot be written is reported and
// training finishes.
TEST(Trainer, FailedSaveIsReportedAndTrainingGoesOn) {
  Config c = tiny_job("save_fails");
  c.checkpoint.interval = 1;
  c.train.steps = 4;
  Trainer t(c, quiet());
  block_checkpoint_dir(c);
  std::atomic<int> steps{0};
  // The directory comes back before the last save: that one must succeed for run() to succeed.
  t.on_step([&](const StepMetrics& m) {
    if (++steps == 3) fs::remove(c.checkpoint_dir()), fs::create_directories(c.checkpoint_dir());
    (void)m;
  });
  t.run();
  EXPECT_TRUE(t.status().finished);
  EXPECT_FALSE(t.status().failed);
  std::ifstream in(fs::path(c.run.dir) / "metrics.jsonl");
  int failures = 0, last = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("event", "") != "checkpoint_failed") continue;
    ++failures;
    EXPECT_EQ(j.at("consecutive_failures").get<int>(), last + 1) << line;
    last = j.at("consecutive_failures").get<int>();
    EXPECT_NE(j.at("error").get<std::string>().find(c.checkpoint_dir()), std::string::npos) << line;
  }
  EXPECT_EQ(failures, 2);  // steps 1 and 2; 3 and 4 saved
  EXPECT_TRUE(find_latest_checkpoint(c.checkpoint_dir()).has_value());
}

// The last save is the one training cannot do without: its failure fails run() even with
// checkpoint.on_error=continue, and a checkpoint.dir that cannot be a directory is refused at once.
TEST(Trainer, FailedLastSaveFailsTheRun) {
  Config c = tiny_job("last_save_fails");
  Trainer t(c, quiet());
  block_checkpoint_dir(c);
  const auto message = testing::error_of([&] { t.run(); });
  EXPECT_NE(message.find("last checkpoint"), std::string::npos) << message;
  EXPECT_TRUE(t.status().failed);
  Config bad = tiny_job("ckpt_dir_is_file");
  std::ofstream(fs::path(bad.run.dir).parent_path() / "a_file") << "x";
  bad.checkpoint.dir = (fs::path(bad.run.dir).parent_path() / "a_file").string();
  const auto refused = testing::error_of([&] { Trainer(bad, quiet()); });
  EXPECT_NE(refused.find("checkpoint.dir"), std::string::npos) << refused;
}

// An asynchronous save (snapshot copied while the next step's forward/backward runs) writes
// exactly what a synchronous one does at the same step, and records how long training waited.
TEST(Trainer, AsyncSavesEqualSyncSaves) {
  std::map<bool, std::string> roots;
  for (bool async : {false, true}) {
    Config c = tiny_job(async ? "async" : "sync");
    c.checkpoint.interval = 2;
    c.checkpoint.keep = 0;
    c.checkpoint.async = async;
    Trainer t(c, quiet());
    t.run();
    roots[async] = c.checkpoint_dir();
    std::ifstream in(fs::path(c.run.dir) / "metrics.jsonl");
    std::vector<int64_t> steps;
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.value("event", "") != "checkpoint") continue;
      steps.push_back(j.at("step").get<int64_t>());
      EXPECT_EQ(j.at("async").get<bool>(), async) << line;
      EXPECT_LE(j.at("blocking_ms").get<double>(), j.at("total_ms").get<double>() + 1e-9) << line;
      EXPECT_GT(j.at("bytes").get<int64_t>(), 0) << line;
    }
    EXPECT_EQ(steps, (std::vector<int64_t>{2, 4, 5}));
  }
  for (const char* step : {"step_00000002", "step_00000004", "step_00000005"}) {
    auto a = load_checkpoint((fs::path(roots[false]) / step).string());
    auto b = load_checkpoint((fs::path(roots[true]) / step).string());
    ASSERT_EQ(a.model.size(), b.model.size());
    ASSERT_EQ(a.optimizer.size(), b.optimizer.size());
    for (size_t i = 0; i < a.model.size(); ++i) EXPECT_TRUE(at::equal(a.model[i].second, b.model[i].second)) << step;
    for (size_t i = 0; i < a.optimizer.size(); ++i)
      EXPECT_TRUE(at::equal(a.optimizer[i].second, b.optimizer[i].second)) << step << " " << a.optimizer[i].first;
    EXPECT_EQ(a.trainer_state, b.trainer_state) << step;
  }
}

TEST(Trainer, CallbackRegisteredWhileRunningIsCalledFromTheNextStep) {
  Config c = tiny_job("callbacks");
  Trainer t(c, quiet());
  std::atomic<int> first{0}, late{0};
  std::atomic<int64_t> late_first_step{-1};
  std::thread::id callback_thread;
  t.on_step([&](const StepMetrics& m) {
    callback_thread = std::this_thread::get_id();
    if (++first == 2)  // registered from inside run(), between steps
      t.on_step([&](const StepMetrics& m2) {
        if (late++ == 0) late_first_step = m2.step;
      });
  });
  std::thread runner([&] { t.run(); });
  const auto runner_id = runner.get_id();
  runner.join();
  EXPECT_EQ(first.load(), 5);
  EXPECT_EQ(late.load(), 3);
  EXPECT_EQ(late_first_step.load(), 3);
  EXPECT_EQ(callback_thread, runner_id);  // callbacks run on the thread that runs run()
  EXPECT_TRUE(t.status().finished);
}

// What a service relies on: a run.dir holds one job at a time; run() is once per Trainer; a stop
// requested before run() trains nothing; status() says where the job is.
TEST(Trainer, OneJobPerRunDirOneRunPerTrainerAndStopBeforeRun) {
  Config c = tiny_job("lifecycle");
  {
    Trainer a(c, quiet());
    EXPECT_EQ(a.status().state, TrainerState::kCreated);
    const std::string busy = testing::error_of([&] { Trainer b(c, quiet()); });
    EXPECT_NE(busy.find("run.dir " + c.run.dir + " is in use by another training job"), std::string::npos) << busy;
    a.request_stop();
    a.run();
    EXPECT_EQ(a.status().step, 0);
    EXPECT_EQ(a.status().state, TrainerState::kStopped);
    EXPECT_STREQ(trainer_state_name(a.status().state), "stopped");
    const std::string twice = testing::error_of([&] { a.run(); });
    EXPECT_NE(twice.find("Trainer::run() was already called"), std::string::npos) << twice;
  }
  Trainer again(c, quiet());  // the lock went with the first Trainer
  again.run();
  const TrainerStatus st = again.status();
  EXPECT_EQ(st.state, TrainerState::kFinished);
  EXPECT_EQ(st.step, c.train.steps);
  EXPECT_EQ(st.eta_sec, 0);
  EXPECT_GT(st.tokens_per_sec, 0);
  EXPECT_EQ(fs::path(st.last_checkpoint).filename().string(), "step_00000005");
}

TEST(Trainer, FrozenParametersStayBitIdenticalAndHoldNoOptimizerState) {
  Config c = tiny_job("freeze");
  c.train.freeze = {"layers.0.mlp.*", "embed.weight"};
  Trainer t(c, quiet());
  t.run();
  auto init = build_model(c.model, at::kCPU, c.train.seed);
  auto saved = load_checkpoint(*find_latest_checkpoint(c.checkpoint_dir()), true);
  ASSERT_EQ(saved.step, 5);
  int frozen = 0, trained = 0;
  for (const auto& [name, tensor] : saved.model) {
    const bool is_frozen = name == "embed.weight" || name.rfind("layers.0.mlp.", 0) == 0;
    const auto& before = init->named_parameters()[name];
    if (is_frozen) {
      ++frozen;
      EXPECT_TRUE(at::equal(tensor, before)) << name << " changed while frozen";
    } else {
      ++trained;
      EXPECT_FALSE(at::equal(tensor, before)) << name << " did not train";
    }
    bool has_state = false;
    for (const auto& [state_name, state] : saved.optimizer)
      has_state = has_state || state_name == "exp_avg." + name || state_name == "exp_avg_sq." + name;
    EXPECT_EQ(has_state, !is_frozen) << name;
  }
  // Every parameter of the model is saved: the 4 frozen ones (embedding, gate/up/down of layer
  // 0) and all the others, each trained.
  const auto all = static_cast<int>(init->named_parameters().size());
  EXPECT_EQ(frozen, 4);
  EXPECT_EQ(trained, all - 4);
}

TEST(Trainer, FreezePatternThatMatchesNothingIsAnError) {
  Config c = tiny_job("freeze_typo");
  c.train.freeze = {"layers.0.mpl.*"};
  const auto message = testing::error_of([&] { Trainer t(c, quiet()); });
  EXPECT_NE(message.find("train.freeze"), std::string::npos) << message;
  EXPECT_NE(message.find("layers.0.mpl.*"), std::string::npos) << message;
}

TEST(EvalWindows, EachWindowCountsOnce) {
  // 3 windows in micro-batches of 2: batches (0, 2) and (2, 1), however many are asked for.
  EXPECT_EQ(eval_batch_count(4, 2, 3), 2);
  EXPECT_EQ(eval_batch_count(0, 2, 3), 2);
  EXPECT_EQ(eval_batch_count(1, 2, 3), 1);
  using Window = std::pair<int64_t, int64_t>;
  EXPECT_EQ(eval_window(0, 2, 3), Window(0, 2));
  EXPECT_EQ(eval_window(1, 2, 3), Window(2, 1));
  EXPECT_NE(testing::error_of([] { eval_window(2, 2, 3); }), "");
}

}  // namespace
}  // namespace weft

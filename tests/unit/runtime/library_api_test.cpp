// The library calls the CLI is built on (weft/plan.h, convert.h, inference.h, worker.h), checked
// against published figures, hand computations and exact invariants rather than against the CLI.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "core/safetensors.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/indexed_dataset.h"
#include "runtime/hf_convert.h"
#include "runtime/job.h"
#include "tests/unit/test_util.h"
#include "weft/convert.h"
#include "weft/inference.h"
#include "weft/plan.h"
#include "weft/worker.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

std::string source_dir() {
  const char* d = std::getenv("WEFT_SOURCE_DIR");
  return d ? d : ".";
}

fs::path fresh_dir(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("weft_api_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A tiny Llama over byte-range random tokens (vocabulary 264 holds the byte tokenizer's 257),
// with `docs` (documents of 80 tokens) written to dir/data.
Config tiny_job(const fs::path& dir, std::vector<std::vector<int64_t>>* docs = nullptr) {
  {
    IndexedDatasetWriter w((dir / "data").string(), 4);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    for (int d = 0; d < 8; ++d) {
      auto t = at::randint(0, 257, {80}, gen, at::kLong);
      std::vector<int64_t> doc(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
      w.add_document(doc);
      if (docs) docs->push_back(doc);
    }
    w.finalize();
  }
  Config c;
  c.model.vocab_size = 264;
  c.model.hidden_size = 32;
  c.model.num_layers = 2;
  c.model.num_heads = 4;
  c.model.num_kv_heads = 2;
  c.model.ffn_hidden_size = 64;
  c.model.max_seq_len = 32;
  c.train.steps = 2;
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

WorkerOptions quiet() {
  WorkerOptions o;
  o.console = false;
  return o;
}

// GPT-2 124M: 124,439,808 parameters as released; the padded vocabulary (50304 rows) adds 47
// rows of 768 (tied head); memory lines are 4 and 16 bytes per held parameter.
TEST(PlanApi, Gpt2SmallMatchesThePublishedCount) {
  const Config cfg = load_config(source_dir() + "/configs/gpt2-124m.yaml");
  const ModelPlan p = plan_model(cfg);
  EXPECT_EQ(p.parameters, 124439808);
  EXPECT_EQ(p.parameters_padded, 124439808 + 47 * 768);
  EXPECT_EQ(p.weights_bytes, 4.0 * p.parameters_padded);
  EXPECT_EQ(p.training_state_bytes, 16.0 * p.parameters_padded);
  const std::string text = render_model_plan(p);
  EXPECT_NE(text.find("\nparameters=124439808\nparameters_padded=124475904\n"), std::string::npos) << text;
}

// One stage per rank with tp = 1: the stages together hold every parameter once (untied head);
// the ideal bubble is (p - 1) / (v m + p - 1) (Narayanan et al. 2021).
TEST(PlanApi, PipelineStagesPartitionTheModel) {
  Config cfg = load_config(source_dir() + "/configs/parallel-tiny.yaml");
  cfg.parallel.pp = 4;
  cfg.parallel.vpp = 2;
  const JobPlan p = plan_job(cfg, 8);  // dp 2
  ASSERT_EQ(p.layout.stages.size(), 4u);
  int64_t sum = 0;
  for (const auto& s : p.layout.stages) sum += s.parameters;
  EXPECT_EQ(sum, p.model.parameters_padded);
  EXPECT_EQ(p.layout.dp, 2);
  EXPECT_EQ(p.layout.layout, "tp(1) × pp(4) × dp(2) × vpp(2)");
  ASSERT_TRUE(p.layout.pipelined);
  const int64_t m = 16 / (2 * 2);
  EXPECT_EQ(p.layout.pipeline.micro_batches, m);
  EXPECT_DOUBLE_EQ(p.layout.pipeline.ideal_bubble, 3.0 / (2 * m + 3));
  EXPECT_NE(render_plan(p).find(str("max_rank_parameters=", p.layout.max_rank_parameters, "\n")), std::string::npos);
}

TEST(PlanApi, ImpossibleLayoutIsAOneLineError) {
  Config cfg = load_config(source_dir() + "/configs/gpt2-124m.yaml");
  cfg.model.make_vocab_size_divisible_by = 1;
  cfg.parallel.tp = 2;
  const auto msg = testing::error_of([&] { plan_layout(cfg); });
  EXPECT_NE(msg.find("model.vocab_size(50257) is not divisible by tp(2)"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);
}

// hf -> ckpt -> hf gives back the same tensors (padding added on import, dropped on export).
TEST(ConvertApi, HfCheckpointRoundTripIsExact) {
  const auto dir = fresh_dir("convert");
  ModelConfig mc = tiny_job(dir).model;
  auto model = build_model(mc, at::kCPU, 3);
  save_hf_model((dir / "hf").string(), mc, model_tensors(*model));
  const std::string hf = "hf:" + (dir / "hf").string(), ckpt = "ckpt:" + (dir / "ckpt").string();
  const auto imported = convert(hf, ckpt);
  ModelConfig padded = mc;  // the import pads the vocabulary to a multiple of 128 (hf_convert.h)
  padded.make_vocab_size_divisible_by = 128;
  EXPECT_EQ(imported.summary, str("converted ", hf, " -> ", ckpt, " (llama, ", count_parameters(padded), " parameters)"));
  EXPECT_EQ(imported.processes, 0);
  convert(ckpt, "hf:" + (dir / "back").string());
  SafetensorsReader a((dir / "hf" / "model.safetensors").string()), b((dir / "back" / "model.safetensors").string());
  ASSERT_EQ(a.names().size(), b.names().size());
  for (const auto& name : a.names()) EXPECT_TRUE(a.get(name).equal(b.get(name))) << name;

  // ckpt -> ckpt on two ranks outside a multi-rank job: the caller starts them; nothing written.
  ConvertOptions two;
  two.nproc = 2;
  const auto relayout = convert(ckpt, "ckpt:" + (dir / "dp2").string(), two);
  EXPECT_EQ(relayout.processes, 2);
  EXPECT_EQ(relayout.summary, "");
  EXPECT_FALSE(fs::exists(dir / "dp2"));
  EXPECT_NE(testing::error_of([&] { convert("hf", ckpt); }).find("expected hf:DIR or ckpt:DIR"), std::string::npos);
  fs::remove_all(dir);
}

// Trains the tiny job for two steps through run_training_worker, stopped by nobody.
Config trained_tiny(const fs::path& dir, std::vector<std::vector<int64_t>>* docs) {
  Config c = tiny_job(dir, docs);
  EXPECT_EQ(run_training_worker(c, quiet()), 0);
  return c;
}

// evaluate(): windows of seq_len tokens in order, next-token cross-entropy, computed here by hand
// from the documents written (stream packing: window i is tokens [i T, i T + T], one batch of 2).
TEST(InferenceApi, EvaluateEqualsHandComputedLoss) {
  const auto dir = fresh_dir("eval");
  std::vector<std::vector<int64_t>> docs;
  const Config c = trained_tiny(dir, &docs);
  auto m = CheckpointModel::load(c.run.dir);
  EvalOptions o;
  o.max_batches = 1;
  const double loss = m->evaluate(c.data.prefix, o).loss;

  at::NoGradGuard no_grad;
  auto ref = load_checkpoint_model(m->config(), m->dir());
  ref->eval();
  const int64_t T = c.train.seq_len;
  auto tokens = at::tensor(docs[0], at::kLong);
  auto input = at::stack({tokens.slice(0, 0, T), tokens.slice(0, T, 2 * T)});
  auto labels = at::stack({tokens.slice(0, 1, T + 1), tokens.slice(0, T + 1, 2 * T + 1)});
  auto logits = ref->forward(input).slice(-1, 0, c.model.vocab_size);
  const double expected =
      at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1})).item<double>();
  EXPECT_NEAR(loss, expected, 1e-5);
  EXPECT_NE(testing::error_of([&] { m->evaluate(c.data.prefix, EvalOptions{-1, ""}); }).find("max_batches"),
            std::string::npos);
  fs::remove_all(dir);
}

// Greedy generate(): the argmax chain over the byte tokenizer's ids, computed here by hand.
TEST(InferenceApi, GreedyGenerateEqualsArgmaxChain) {
  const auto dir = fresh_dir("generate");
  const Config c = trained_tiny(dir, nullptr);
  auto m = CheckpointModel::load(c.run.dir);
  GenerationOptions g;
  g.max_new_tokens = 8;
  std::string streamed;
  const std::string text = m->generate("ab", g, [&](const std::string& t) { streamed += t; });
  EXPECT_EQ(text, streamed);

  at::NoGradGuard no_grad;
  auto ref = load_checkpoint_model(m->config(), m->dir());
  ref->eval();
  std::vector<int64_t> ids = {'a', 'b'};
  std::string expected;
  for (int i = 0; i < 8; ++i) {
    auto logits = ref->forward(at::tensor(ids, at::kLong).unsqueeze(0)).select(1, int64_t(ids.size()) - 1)[0];
    const int64_t next = logits.slice(0, 0, 257).argmax().item<int64_t>();  // byte tokenizer: 257 ids
    if (next == 256) break;                                                  // its end of document
    expected += char(next);
    ids.push_back(next);
  }
  EXPECT_EQ(text, expected);
  EXPECT_NE(testing::error_of([&] { m->use_tokenizer("bogus:x"); }), "");
  fs::remove_all(dir);
}

// request_worker_stop() from on_role stops after the first step with a checkpoint; the library
// leaves SIGINT's disposition alone.
TEST(WorkerApi, StopRequestEndsTrainingWithACheckpointAndNoHandlerIsInstalled) {
  const auto dir = fresh_dir("worker");
  Config c = tiny_job(dir);
  c.train.steps = 5;
  std::vector<WorkerRole> roles;
  WorkerOptions o = quiet();
  o.on_role = [&](WorkerRole r) {
    roles.push_back(r);
    request_worker_stop();
  };
  struct sigaction before {}, after {};
  sigaction(SIGINT, nullptr, &before);
  EXPECT_EQ(run_training_worker(c, o), 0);
  sigaction(SIGINT, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
  EXPECT_EQ(roles, std::vector<WorkerRole>{WorkerRole::kAlone});
  // Requested before training: no step is trained; the state is saved as it is.
  const auto step_dir = resolve_checkpoint_dir(c.checkpoint_dir());
  EXPECT_EQ(fs::path(step_dir).filename().string(), "step_00000000");
  // A second run starts with no request pending: it trains on to train.steps.
  EXPECT_EQ(run_training_worker(c, quiet()), 0);
  EXPECT_EQ(fs::path(resolve_checkpoint_dir(c.checkpoint_dir())).filename().string(), "step_00000005");
  fs::remove_all(dir);
}

TEST(WorkerApi, LocalLaunchLabelNamesTheLayoutAndSpares) {
  const auto dir = fresh_dir("launch");
  Config c = tiny_job(dir);  // 4 / 2 = 2 micro-batches per step: dp at most 2
  c.run.memory_limit_gb = 64;
  EXPECT_EQ(check_local_launch(c, 2), "tp(1) × pp(1) × dp(2)");
  EXPECT_EQ(check_local_launch(c, 3), "tp(1) × pp(1) × dp(2) + 1 spare(s)");
  c.parallel.tp = 3;
  EXPECT_NE(testing::error_of([&] { check_local_launch(c, 2); }), "");
  TrainerStatus st;
  st.finished = true;
  st.step = st.steps_run = 3;
  st.last_loss = 1.23456;
  EXPECT_EQ(train_summary(st), "train: finished at step 3, final loss 1.2346");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace weft

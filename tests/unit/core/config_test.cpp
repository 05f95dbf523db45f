// Config: YAML into typed structs, --set overrides, unknown keys and wrong types named.
#include "tests/unit/test_util.h"
#include "weft/config.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "weft/error.h"

namespace weft {
namespace {

using testing::error_of;

TEST(Config, ParsesNestedKeysIntoTypedFields) {
  Config c;
  merge_config_yaml(c, "model:\n  hidden_size: 128\n  tie_embeddings: true\n  rope_scaling:\n    type: llama3\n"
                       "optim:\n  lr: 1e-3\ndata:\n  blend: [0.3, a, 0.7, b]\nprecision: bf16\n", "t.yaml");
  EXPECT_EQ(c.model.hidden_size, 128);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.model.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.optim.lr, 1e-3);
  EXPECT_EQ(c.data.blend, (std::vector<std::string>{"0.3", "a", "0.7", "b"}));
  EXPECT_EQ(c.precision, "bf16");
}

TEST(Config, UnknownKeyNamesFileLineAndNearestKey) {
  Config c;
  auto msg = error_of([&] { merge_config_yaml(c, "model:\n  hidden_size: 8\n  num_layer: 2\n", "job.yaml"); });
  EXPECT_NE(msg.find("job.yaml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.num_layer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'model.num_layers'"), std::string::npos) << msg;
}

TEST(Config, WrongTypeNamesKeyAndExpectedType) {
  Config c;
  auto msg = error_of([&] { merge_config_yaml(c, "train:\n  steps: many\n", "job.yaml"); });
  EXPECT_NE(msg.find("job.yaml:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.steps expects an integer"), std::string::npos) << msg;
  msg = error_of([&] { merge_config_yaml(c, "model: 3\n", "job.yaml"); });
  EXPECT_NE(msg.find("unknown key 'model'"), std::string::npos) << msg;
}

TEST(Config, SetOverridesAnyKeyAndRejectsUnknown) {
  Config c;
  apply_override(c, "optim.lr=3e-4");
  apply_override(c, "model.family=gpt2");
  apply_override(c, "parallel.sequence_parallel=true");
  apply_override(c, "data.blend=[1, x]");
  EXPECT_DOUBLE_EQ(c.optim.lr, 3e-4);
  EXPECT_EQ(c.model.family, "gpt2");
  EXPECT_TRUE(c.parallel.sequence_parallel);
  EXPECT_EQ(c.data.blend, (std::vector<std::string>{"1", "x"}));
  auto msg = error_of([&] { apply_override(c, "optim.wieght_decay=1"); });
  EXPECT_NE(msg.find("did you mean 'optim.weight_decay'"), std::string::npos) << msg;
  msg = error_of([&] { apply_override(c, "noequals"); });
  EXPECT_NE(msg.find("--set 'noequals': expected KEY=VALUE"), std::string::npos) << msg;
  msg = error_of([&] { apply_override(c, "train.steps=1.5"); });
  EXPECT_NE(msg.find("train.steps expects an integer"), std::string::npos) << msg;
}

TEST(Config, ParallelTimeout) {
  Config c;
  EXPECT_EQ(c.parallel.timeout_sec, 300);
  apply_override(c, "parallel.timeout_sec=30");
  EXPECT_EQ(c.parallel.timeout_sec, 30);
  apply_override(c, "parallel.timeout_sec=0");
  EXPECT_NE(error_of([&] { c.validate(); }).find("parallel.timeout_sec must be > 0"), std::string::npos);
}

TEST(Config, ResolvedYamlRoundTrips) {
  Config c;
  apply_override(c, "model.rope_theta=500000");
  apply_override(c, "run.dir=/tmp/x y");
  apply_override(c, "data.blend=[0.5, a, 0.5, b]");
  Config back;
  merge_config_yaml(back, to_yaml(c), "resolved");
  EXPECT_EQ(to_yaml(back), to_yaml(c));
  EXPECT_DOUBLE_EQ(back.model.rope_theta, 500000.0);
  EXPECT_EQ(back.run.dir, "/tmp/x y");
}

TEST(Config, ValidateRejectsImpossibleModels) {
  Config c;
  c.model.hidden_size = 100;
  c.model.num_heads = 3;
  EXPECT_NE(error_of([&] { c.validate(); }).find("divisible"), std::string::npos);
  Config d;
  d.train.seq_len = d.model.max_seq_len + 1;
  EXPECT_NE(error_of([&] { d.validate(); }).find("train.seq_len"), std::string::npos);
}

// Values torch.optim.AdamW refuses ("Invalid learning rate / epsilon value / beta parameter /
// weight_decay value"), refused here by the key's name before a job trains to NaN.
TEST(Config, ValidateRejectsOptimizerValuesAdamWRefuses) {
  for (const auto& [kv, key] : std::vector<std::pair<std::string, std::string>>{
           {"optim.lr=.inf", "optim.lr"}, {"optim.lr=-1", "optim.lr"}, {"optim.eps=0", "optim.eps"},
           {"optim.beta1=2", "optim.beta1"}, {"optim.beta2=-1", "optim.beta2"}, {"optim.beta2=1", "optim.beta2"},
           {"optim.weight_decay=-5", "optim.weight_decay"}, {"optim.decay_steps=-3", "optim.decay_steps"},
           {"train.log_interval=0", "train.log_interval"}, {"train.threads=-3", "train.threads"},
           {"run.dir=''", "run.dir"}}) {
    Config c;
    apply_override(c, kv);
    const std::string msg = error_of([&] { c.validate(); });
    EXPECT_NE(msg.find(key), std::string::npos) << kv << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  Config ok;
  apply_override(ok, "optim.beta1=0");
  apply_override(ok, "optim.weight_decay=0");
  ok.validate();  // the edges AdamW accepts
}

TEST(Config, MissingFileNamesPath) {
  auto msg = error_of([] { load_config("/nonexistent/job.yaml"); });
  EXPECT_NE(msg.find("/nonexistent/job.yaml"), std::string::npos);
}

}  // namespace
}  // namespace weft

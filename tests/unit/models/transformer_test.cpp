// Model zoo: exact parameter counts on the meta device, layout-independent initialisation,
// causal masking, and the RoPE scaling rule.
#include "models/transformer.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>

#include "core/config.h"

namespace weft {
namespace {

std::string source_dir() {
  const char* d = std::getenv("WEFT_SOURCE_DIR");
  return d ? d : ".";
}

TEST(Transformer, ZooParameterCountsMatchPublished) {
  // Hugging Face's counts of the released checkpoints (GPT-3: architecture of Brown et al.).
  const std::pair<const char*, int64_t> published[] = {
      {"gpt2-124m", 124439808},       {"gpt2-355m", 354823168},       {"gpt2-774m", 774030080},
      {"gpt2-1.5b", 1557611200},      {"llama2-7b", 6738415616},      {"llama2-13b", 13015864320},
      {"llama2-70b", 68976648192},    {"llama3-8b", 8030261248},      {"llama3-70b", 70553706496},
      {"llama3.1-405b", 405853388800}, {"gpt3-175b", 174604259328}};
  for (const auto& [name, count] : published) {
    auto cfg = load_config(source_dir() + "/configs/" + name + ".yaml");
    cfg.validate();
    EXPECT_EQ(count_published_parameters(cfg.model), count) << name;
  }
}

ModelConfig tiny(const std::string& family) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = family == "llama" ? 2 : 0;
  c.ffn_hidden_size = 64;
  c.max_seq_len = 16;
  c.tie_embeddings = family == "gpt2";
  return c;
}

TEST(Transformer, InitDependsOnSeedAndNameOnly) {
  for (const auto* fam : {"llama", "gpt2"}) {
    Transformer a(tiny(fam), at::kFloat), b(tiny(fam), at::kFloat), c(tiny(fam), at::kFloat);
    a->init_weights(7);
    b->init_weights(7);
    c->init_weights(8);
    auto pa = a->named_parameters(), pb = b->named_parameters(), pc = c->named_parameters();
    for (const auto& item : pa) {
      EXPECT_TRUE(at::equal(item.value(), pb[item.key()])) << item.key();
      if (item.key().find("norm") == std::string::npos && item.key().find("bias") == std::string::npos)
        EXPECT_FALSE(at::equal(item.value(), pc[item.key()])) << item.key();
    }
  }
}

TEST(Transformer, IsCausal) {
  for (const auto* fam : {"llama", "gpt2"}) {
    Transformer m(tiny(fam), at::kFloat);
    m->init_weights(1);
    at::NoGradGuard g;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    auto x = at::randint(0, 50, {2, 12}, gen, at::kLong);
    auto y = x.clone();
    y.select(1, 8).add_(1).remainder_(50);  // change a later token (always to a different id)
    auto lx = m->forward(x), ly = m->forward(y);
    EXPECT_TRUE(at::allclose(lx.narrow(1, 0, 8), ly.narrow(1, 0, 8))) << fam;
    EXPECT_GT((lx.narrow(1, 8, 4) - ly.narrow(1, 8, 4)).abs().max().item<double>(), 0.0) << fam;
  }
}

TEST(Transformer, Llama3RopeScalingKeepsHighAndDividesLowFrequencies) {
  ModelConfig c = tiny("llama");
  c.hidden_size = 512;
  c.num_heads = 4;  // head dim 128
  c.rope_theta = 500000;
  auto plain = rope_inv_freq(c);
  c.rope_scaling.type = "llama3";
  auto scaled = rope_inv_freq(c);
  EXPECT_FLOAT_EQ(scaled[0].item<float>(), plain[0].item<float>());  // highest frequency kept
  EXPECT_NEAR(scaled[-1].item<float>(), plain[-1].item<float>() / 8.0f, 1e-12);
}

TEST(Transformer, NoDecayCoversNormsAndBiases) {
  EXPECT_TRUE(is_no_decay_parameter("layers.0.attn_norm.weight"));
  EXPECT_TRUE(is_no_decay_parameter("final_norm.weight"));
  EXPECT_TRUE(is_no_decay_parameter("layers.1.attn.q_proj.bias"));
  EXPECT_FALSE(is_no_decay_parameter("layers.1.attn.q_proj.weight"));
  EXPECT_FALSE(is_no_decay_parameter("embed.weight"));
}

}  // namespace
}  // namespace weft

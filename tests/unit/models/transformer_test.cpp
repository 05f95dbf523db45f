// Model zoo: exact parameter counts on the meta device, layout-independent initialisation,
// causal masking, and the RoPE scaling rule.
#include "models/transformer.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstdlib>

#include "weft/config.h"

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

// A fixed extra weight D on a projection: adapter(x) = x D^T, so wrapping W behaves as W + D.
class ExtraWeight : public ProjectionAdapter {
 public:
  explicit ExtraWeight(at::Tensor d) : d_(register_parameter("delta", std::move(d))) {}
  at::Tensor forward(const at::Tensor& x) override { return at::linear(x, d_); }

 private:
  at::Tensor d_;
};

TEST(Transformer, AdapterWrapsEveryProjectionKindWithoutModelChanges) {
  // q_proj and gate_proj are parts of fused GEMMs (q/k/v, gate/up); o_proj and down_proj are
  // row-parallel; up_proj of GPT-2 has a bias. Wrapping any of them must equal adding the delta
  // to its weight.
  const std::pair<const char*, std::vector<const char*>> cases[] = {
      {"llama", {"attn.q_proj", "attn.v_proj", "attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}},
      {"gpt2", {"attn.k_proj", "mlp.up_proj", "mlp.down_proj"}}};
  for (const auto& [fam, projections] : cases) {
    for (const auto* proj : projections) {
      Transformer wrapped(tiny(fam), at::kFloat), merged(tiny(fam), at::kFloat);
      wrapped->init_weights(5);
      merged->init_weights(5);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
      const std::string name = std::string("layers.1.") + proj;
      Linear target{nullptr};
      for (const auto& item : wrapped->named_modules())
        if (item.key() == name) target = Linear(std::dynamic_pointer_cast<LinearImpl>(item.value()));
      ASSERT_TRUE(target) << name;
      auto delta = at::randn(target->weight.sizes(), gen) * 0.1;
      target->set_adapter(std::make_shared<ExtraWeight>(delta));
      {
        at::NoGradGuard g;
        merged->named_parameters()[name + ".weight"].add_(delta);
      }
      EXPECT_TRUE(wrapped->named_parameters().contains(name + ".adapter.delta")) << name;
      at::NoGradGuard g;
      auto x = at::randint(0, 50, {2, 10}, gen, at::kLong);
      auto a = wrapped->forward(x), b = merged->forward(x);
      EXPECT_TRUE(at::allclose(a, b, 1e-5, 1e-5)) << fam << " " << name << ": "
                                                  << (a - b).abs().max().item<double>();
    }
  }
}

TEST(Transformer, ProjectionsKnowTheirTensorParallelSplit) {
  Transformer m(tiny("llama"), at::kFloat);
  auto mods = m->named_modules();
  auto split = [&](const std::string& n) { return mods[n]->as<LinearImpl>()->split; };
  EXPECT_EQ(split("layers.0.attn.q_proj"), tp::Split::kColumn);
  EXPECT_EQ(split("layers.0.attn.k_proj"), tp::Split::kHeads);
  EXPECT_EQ(split("layers.0.attn.o_proj"), tp::Split::kRow);
  EXPECT_EQ(split("layers.0.mlp.gate_proj"), tp::Split::kColumn);
  EXPECT_EQ(split("layers.0.mlp.down_proj"), tp::Split::kRow);
}

TEST(Transformer, LossCountsOnlyLabelsThatAreNotIgnored) {
  // Reference: the mean of -log softmax at the counted labels, computed from forward()'s logits.
  Transformer m(tiny("llama"), at::kFloat);
  m->init_weights(2);
  at::NoGradGuard g;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  auto x = at::randint(0, 50, {2, 8}, gen, at::kLong), labels = at::randint(0, 50, {2, 8}, gen, at::kLong);
  labels.index_put_({0, at::indexing::Slice(0, 5)}, kIgnoreIndex);
  labels.index_put_({1, 7}, kIgnoreIndex);
  auto logp = at::log_softmax(m->forward(x), -1);
  double sum = 0;
  int n = 0;
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 8; ++t)
      if (labels[b][t].item<int64_t>() != kIgnoreIndex) sum -= logp[b][t][labels[b][t].item<int64_t>()].item<double>(), ++n;
  EXPECT_EQ(n, 10);
  EXPECT_NEAR(m->loss(x, labels).item<double>(), sum / n, 1e-5);
  auto none = at::full({2, 8}, kIgnoreIndex, at::kLong);
  EXPECT_EQ(m->loss(x, none).item<double>(), 0.0);  // nothing counted: 0, not NaN
}

}  // namespace
}  // namespace weft

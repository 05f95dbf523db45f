// Generation: with a model vocabulary padded past the tokenizer's, only the tokenizer's ids are
// ever produced, greedy or sampled, however strongly the logits favour the padded ones.
#include "runtime/generate.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "weft/config.h"
#include "weft/error.h"

namespace weft {
namespace {

constexpr int64_t kModelVocab = 264, kTokenizerVocab = 257;  // byte tokenizer, padded to 8

TEST(GenerateTest, PickNeverReturnsIdsPastTheLimit) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto logits = at::randn({kModelVocab}, gen);
  logits.narrow(0, kTokenizerVocab, kModelVocab - kTokenizerVocab).fill_(50.0);
  GenerateOptions unlimited;
  EXPECT_GE(pick_next_token(logits, unlimited, gen), kTokenizerVocab);  // they do win unchecked

  GenerateOptions o;
  o.vocab_limit = kTokenizerVocab;
  EXPECT_EQ(pick_next_token(logits, o, gen),
            logits.narrow(0, 0, kTokenizerVocab).argmax().item<int64_t>());
  for (double temperature : {0.5, 1.0, 100.0}) {
    for (int64_t top_k : {int64_t{0}, int64_t{5}, kTokenizerVocab, int64_t{300}}) {
      for (uint64_t seed = 0; seed < 20; ++seed) {
        o.temperature = temperature;
        o.top_k = top_k;
        auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
        const int64_t id = pick_next_token(logits, o, g);
        EXPECT_TRUE(id >= 0 && id < kTokenizerVocab)
            << id << " at temperature " << temperature << ", top_k " << top_k;
      }
    }
  }
  o.vocab_limit = kModelVocab + 1;
  EXPECT_THROW(pick_next_token(logits, o, gen), Error);
}

TEST(GenerateTest, PaddedModelGeneratesOnlyTokenizerIds) {
  ModelConfig c;
  c.family = "gpt2";
  c.vocab_size = kModelVocab;
  c.hidden_size = 16;
  c.num_layers = 1;
  c.num_heads = 2;
  c.ffn_hidden_size = 32;
  c.max_seq_len = 8;
  c.tie_embeddings = true;
  Transformer model(c, at::kFloat);
  model->init_weights(3);
  {
    // The final LayerNorm then outputs its bias, all ones, at every position: the logits are the
    // row sums of the (tied) embedding, largest for the padded rows.
    at::NoGradGuard no_grad;
    model->final_norm->weight.zero_();
    model->final_norm->bias.fill_(1.0);
    model->embed->weight.narrow(0, kTokenizerVocab, kModelVocab - kTokenizerVocab).fill_(1.0);
  }
  const int64_t best =
      model->embed->weight.narrow(0, 0, kTokenizerVocab).sum(1).argmax().item<int64_t>();
  GenerateOptions o;
  o.max_new_tokens = 10;  // past max_seq_len, so the window slides too
  o.vocab_limit = kTokenizerVocab;
  EXPECT_EQ(generate(*model, {'h', 'i'}, o), std::vector<int64_t>(10, best));
  o.temperature = 1.0;
  for (uint64_t seed = 0; seed < 3; ++seed) {
    o.seed = seed;
    for (int64_t id : generate(*model, {'h', 'i'}, o)) {
      EXPECT_TRUE(id >= 0 && id < kTokenizerVocab) << id;
    }
  }
  o.vocab_limit = kModelVocab + 1;
  EXPECT_THROW(generate(*model, {'h'}, o), Error);
}

}  // namespace
}  // namespace weft

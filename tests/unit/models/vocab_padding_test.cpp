// Vocabulary padding (model.make_vocab_size_divisible_by): the padded size, its validation, the
// layout check it fixes, and that a padded model is the unpadded one (loss, logits, gradients).
#include <gtest/gtest.h>

#include <functional>

#include "weft/config.h"
#include "weft/error.h"
#include "models/transformer.h"
#include "parallel/topology.h"

namespace weft {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool is_vocab_table(const std::string& name) { return name == "embed.weight" || name == "lm_head.weight"; }

ModelConfig gpt2(int64_t vocab, int64_t divisible_by) {
  ModelConfig c;
  c.family = "gpt2";
  c.vocab_size = vocab;
  c.make_vocab_size_divisible_by = divisible_by;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.ffn_hidden_size = 64;
  c.max_seq_len = 16;
  c.tie_embeddings = true;
  return c;
}

TEST(VocabPadding, PaddedSizeRoundsUpIndependentlyOfTp) {
  EXPECT_EQ(gpt2(50257, 1).padded_vocab_size(), 50257);
  EXPECT_EQ(gpt2(50257, 128).padded_vocab_size(), 50304);
  EXPECT_EQ(gpt2(32000, 128).padded_vocab_size(), 32000);
  EXPECT_EQ(gpt2(257, 128).padded_vocab_size(), 384);
  Config c;
  c.model.make_vocab_size_divisible_by = 0;
  EXPECT_NE(error_of([&] { c.validate(); }).find("model.make_vocab_size_divisible_by must be > 0"),
            std::string::npos);
}

TEST(VocabPadding, PaddedVocabularySplitsOverTp) {
  Config c;
  c.model = gpt2(50257, 128);
  c.model.num_heads = 8;
  c.train.seq_len = 16;
  c.train.global_batch_size = 8;
  c.parallel.tp = 8;
  EXPECT_NO_THROW(validate_layout(8, c));
  c.model.make_vocab_size_divisible_by = 100;  // 50300 rows: 8 does not divide them
  const auto msg = error_of([&] { validate_layout(8, c); });
  EXPECT_NE(msg.find("model.vocab_size(50257) padded to 50300 (model.make_vocab_size_divisible_by=100) "
                     "is not divisible by tp(8)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("e.g. 200"), std::string::npos) << msg;
}

TEST(VocabPadding, CountsWithAndWithoutPadding) {
  for (bool tied : {true, false}) {
    auto padded = gpt2(50, 16), plain = gpt2(50, 1);
    padded.tie_embeddings = plain.tie_embeddings = tied;
    const int64_t rows = 64 - 50;
    EXPECT_EQ(count_parameters(padded), count_parameters(plain) + rows * 32 * (tied ? 1 : 2));
    EXPECT_EQ(count_published_parameters(padded), count_parameters(plain));
  }
}

// The padded model with any values in its padding rows computes the unpadded model's logits and
// loss, and the padding rows get no gradient.
TEST(VocabPadding, PaddedModelIsTheUnpaddedOne) {
  for (bool tied : {true, false}) {
    auto pc = gpt2(50, 16), uc = gpt2(50, 1);
    pc.tie_embeddings = uc.tie_embeddings = tied;
    Transformer padded(pc, at::kFloat), plain(uc, at::kFloat);
    padded->init_weights(3);
    {
      at::NoGradGuard g;
      auto src = padded->named_parameters();
      for (auto& item : plain->named_parameters()) {
        auto p = src[item.key()];
        if (is_vocab_table(item.key())) {
          p.narrow(0, 50, 14).fill_(5.0);  // would dominate the softmax if it counted
          p = p.narrow(0, 0, 50);
        }
        item.value().copy_(p);
      }
    }
    auto tokens = at::arange(0, 2 * 13, at::kLong).mul(7).remainder(50).view({2, 13});
    auto logits = padded->forward(tokens.narrow(1, 0, 12));
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 12, 50}));
    EXPECT_TRUE(at::allclose(logits, plain->forward(tokens.narrow(1, 0, 12)), 1e-5, 1e-6));
    auto loss = padded->loss(tokens.narrow(1, 0, 12), tokens.narrow(1, 1, 12));
    auto ref = plain->loss(tokens.narrow(1, 0, 12), tokens.narrow(1, 1, 12));
    EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-6 * ref.item<double>());
    loss.backward();
    for (const auto& item : padded->named_parameters()) {
      if (!is_vocab_table(item.key())) continue;
      EXPECT_TRUE(item.value().grad().narrow(0, 50, 14).eq(0).all().item<bool>()) << item.key();
      EXPECT_TRUE(item.value().grad().narrow(0, 0, 50).ne(0).any().item<bool>()) << item.key();
    }
  }
}

}  // namespace
}  // namespace weft

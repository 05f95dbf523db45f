// Schedule shape and the AdamW state round trip (numerical parity with torch.optim.AdamW is a
// parity test: tests/parity/test_optimizer.py).
#include "runtime/optim/optimizer.h"

#include <gtest/gtest.h>

namespace weft {
namespace {

TEST(Schedule, WarmupThenCosineToMinLr) {
  OptimConfig c;
  c.lr = 1.0;
  c.min_lr = 0.1;
  c.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0, 20), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate(c, 3, 20), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(c, 4, 20), 1.0);
  EXPECT_NEAR(learning_rate(c, 12, 20), 0.55, 1e-12);  // halfway through decay
  EXPECT_DOUBLE_EQ(learning_rate(c, 20, 20), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(c, 100, 20), 0.1);
  c.decay = "linear";
  EXPECT_NEAR(learning_rate(c, 12, 20), 0.55, 1e-12);
  c.decay = "constant";
  EXPECT_DOUBLE_EQ(learning_rate(c, 12, 20), 1.0);
}

TEST(AdamW, StateRoundTripContinuesIdentically) {
  auto make = [] {
    auto w = at::ones({4}, at::kFloat).set_requires_grad(true);
    return w;
  };
  OptimConfig cfg;
  auto w1 = make(), w2 = make();
  AdamW a({{"w", w1}}, {true}, cfg), b({{"w", w2}}, {true}, cfg);
  auto grad = at::tensor({0.1f, -0.2f, 0.3f, 0.0f});
  for (int i = 0; i < 3; ++i) {
    w1.mutable_grad() = grad.clone();
    a.step(1e-2);
  }
  {
    at::NoGradGuard g;
    w2.copy_(w1);
  }
  b.load_state(a.state(), a.steps_taken());
  w1.mutable_grad() = grad.clone();
  w2.mutable_grad() = grad.clone();
  a.step(1e-2);
  b.step(1e-2);
  EXPECT_TRUE(at::equal(w1, w2));
}

TEST(ClipGradNorm, ScalesToMaxNorm) {
  auto p = at::zeros({2}).set_requires_grad(true);
  p.mutable_grad() = at::tensor({3.0f, 4.0f});
  EXPECT_NEAR(clip_grad_norm({p}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(p.grad().norm().item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(clip_grad_norm({p}, 0.0), 1.0, 1e-5);  // 0 = measure only
}

}  // namespace
}  // namespace weft

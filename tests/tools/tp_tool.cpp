// Test-only worker: checks the tensor-parallel mappings against the same math done densely on
// one rank, forward and backward, over a real Gloo tensor-parallel group. Started with the
// torchrun environment by tests/integration/test_tensor_parallel_ops.py; world size = tp.
// Prints one "ok"/"FAIL" line per check; exits 0 only when all pass.
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <string>

#include "parallel/comm.h"
#include "parallel/tensor_parallel/ops.h"
#include "parallel/topology.h"

namespace weft {
namespace {

int failures = 0;
int64_t g_rank = 0;

void expect_close(const std::string& what, const at::Tensor& got, const at::Tensor& want, double tol = 1e-5) {
  const double diff = (got - want).abs().max().item<double>();
  const double scale = std::max(1.0, want.abs().max().item<double>());
  const bool ok = got.sizes() == want.sizes() && diff <= tol * scale;
  std::printf("rank %lld %s: %s (max diff %.2e)\n", (long long)g_rank, ok ? "ok" : "FAIL", what.c_str(), diff);
  failures += !ok;
}

// Same values on every rank: a generator per tensor, seeded by name.
at::Tensor seeded(at::IntArrayRef shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::kFloat);
}

at::Tensor slice(const at::Tensor& t, int64_t dim, const Group& g) {
  const int64_t n = t.size(dim) / g.size();
  return t.narrow(dim, g.rank * n, n).contiguous();
}

// Column-parallel then row-parallel MLP (Megatron): Y = gelu(X A^T) B^T with A split by rows
// (output features) and B by columns (input features), optionally with sequence parallelism.
void mlp(const Group& g, bool sequence_parallel) {
  const int64_t B = 2, T = 8, C = 6, F = 12;
  auto X = seeded({B, T, C}, 1), A = seeded({F, C}, 2), Bw = seeded({C, F}, 3), dY = seeded({B, T, C}, 4);
  auto x = X.clone().requires_grad_(), a = A.clone().requires_grad_(), b = Bw.clone().requires_grad_();
  auto y = at::linear(at::gelu(at::linear(x, a)), b);
  y.backward(dY);

  auto a_l = slice(A, 0, g).requires_grad_(), b_l = slice(Bw, 1, g).requires_grad_();
  at::Tensor x_in, out;
  const std::string tag = sequence_parallel ? "sequence-parallel" : "tensor-parallel";
  if (sequence_parallel) {
    x_in = slice(X, 1, g).requires_grad_();  // (B, T/tp, C)
    auto h = at::gelu(at::linear(tp::gather_sequence(x_in, g), a_l));
    out = tp::reduce_scatter_sequence(at::linear(h, b_l), g);  // (B, T/tp, C)
    out.backward(slice(dY, 1, g));
    expect_close(tag + " MLP output", out, slice(y.detach(), 1, g));
    expect_close(tag + " dX", x_in.grad(), slice(x.grad(), 1, g));
  } else {
    x_in = X.clone().requires_grad_();
    auto h = at::gelu(at::linear(tp::copy_to_region(x_in, g), a_l));
    out = tp::reduce_from_region(at::linear(h, b_l), g);
    out.backward(dY);
    expect_close(tag + " MLP output", out, y.detach());
    expect_close(tag + " dX", x_in.grad(), x.grad());
  }
  expect_close(tag + " dA (row slice)", a_l.grad(), slice(a.grad(), 0, g));
  expect_close(tag + " dB (column slice)", b_l.grad(), slice(b.grad(), 1, g));
}

void vocab_parallel(const Group& g) {
  const int64_t N = 10, V = 16, C = 5;
  // Cross-entropy on logits split over the vocabulary, vs LibTorch's on the full logits.
  auto Z = seeded({N, V}, 5) * 3;
  auto labels = at::arange(N, at::kLong).mul(7).remainder(V);
  auto z = Z.clone().requires_grad_();
  auto ref = at::cross_entropy_loss(z, labels, {}, at::Reduction::None);
  ref.sum().backward();
  const int64_t start = g.rank * (V / g.size());
  auto z_l = slice(Z, 1, g).requires_grad_();
  auto loss = tp::vocab_parallel_cross_entropy(z_l, labels, start, g);
  loss.sum().backward();
  expect_close("vocab-parallel cross-entropy", loss, ref.detach());
  expect_close("vocab-parallel cross-entropy grad", z_l.grad(), slice(z.grad(), 1, g));

  // A padded vocabulary: only the first 9 of the 16 columns are ids; the padding (100 here, so
  // it would dominate the softmax if it counted) is excluded and gets zero gradient. Over 4
  // ranks the last holds padding only. Reference: LibTorch on the 9 real columns.
  const int64_t real = 9;
  auto Zp = Z.clone();
  Zp.narrow(1, real, V - real).fill_(100);
  auto labels_p = at::arange(N, at::kLong).mul(5).remainder(real);  // 8, the last real id, included
  auto zr = Z.narrow(1, 0, real).clone().requires_grad_();
  auto ref_p = at::cross_entropy_loss(zr, labels_p, {}, at::Reduction::None);
  ref_p.sum().backward();
  auto zp_l = slice(Zp, 1, g).requires_grad_();
  auto loss_p = tp::vocab_parallel_cross_entropy(zp_l, labels_p, start, g, real);
  loss_p.sum().backward();
  expect_close("padded vocab-parallel cross-entropy", loss_p, ref_p.detach());
  expect_close("padded vocab-parallel cross-entropy grad", zp_l.grad(),
               slice(at::cat({zr.grad(), at::zeros({N, V - real})}, 1), 1, g));

  // Embedding with the table split over the vocabulary.
  auto W = seeded({V, C}, 6);
  auto tokens = at::arange(12, at::kLong).mul(5).remainder(V).view({2, 6});
  auto w = W.clone().requires_grad_();
  auto e = at::embedding(w, tokens);
  auto dE = seeded({2, 6, C}, 7);
  e.backward(dE);
  auto w_l = slice(W, 0, g).requires_grad_();
  auto e_l = tp::reduce_from_region(tp::vocab_parallel_embedding_partial(tokens, w_l, g.rank * (V / g.size())), g);
  e_l.backward(dE);
  expect_close("vocab-parallel embedding", e_l, e.detach());
  expect_close("vocab-parallel embedding grad", w_l.grad(), slice(w.grad(), 0, g));
}

}  // namespace
}  // namespace weft

int main() {
  try {
    const auto env = weft::worker_env_from_environment();
    weft::g_rank = env.rank;
    weft::ParallelConfig pc;
    pc.tp = env.world_size;
    weft::ParallelContext ctx(env, weft::make_parallel_dims(env.world_size, pc));
    weft::mlp(ctx.tp(), false);
    weft::mlp(ctx.tp(), true);
    weft::vocab_parallel(ctx.tp());
    weft::barrier(ctx.world());
    return weft::failures == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("rank %lld error: %s\n", (long long)weft::g_rank, e.what());
    return 1;
  }
}

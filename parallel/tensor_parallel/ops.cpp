// Megatron's tensor-parallel mappings as LibTorch autograd functions over c10d groups.
#include "parallel/tensor_parallel/ops.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>

#include "weft/error.h"

namespace weft {
namespace tp {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool trivial(const Group& g) { return g.size() == 1; }

// Autograd contexts hold IValues; the group outlives every graph, so its address is enough.
int64_t stash(const Group& g) { return reinterpret_cast<intptr_t>(&g); }
const Group& unstash(AutogradContext* ctx) {
  return *reinterpret_cast<const Group*>(ctx->saved_data["group"].toInt());
}

struct CopyToRegion : torch::autograd::Function<CopyToRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const Group& g) {
    ctx->saved_data["group"] = stash(g);
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto g = grads[0].contiguous().clone();
    all_reduce(unstash(ctx), g);
    return {g, at::Tensor()};
  }
};

struct ReduceFromRegion : torch::autograd::Function<ReduceFromRegion> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, const Group& g) {
    auto y = x.contiguous().clone();
    all_reduce(g, y);
    return y;
  }
  static variable_list backward(AutogradContext*, variable_list grads) { return {grads[0], at::Tensor()}; }
};

struct GatherSequence : torch::autograd::Function<GatherSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const Group& g) {
    ctx->saved_data["group"] = stash(g);
    return all_gather_dim(x, 1, g);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {reduce_scatter_dim(grads[0], 1, unstash(ctx)), at::Tensor()};
  }
};

struct ReduceScatterSequence : torch::autograd::Function<ReduceScatterSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const Group& g) {
    ctx->saved_data["group"] = stash(g);
    return reduce_scatter_dim(x, 1, g);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_gather_dim(grads[0], 1, unstash(ctx)), at::Tensor()};
  }
};

struct ScatterSequence : torch::autograd::Function<ScatterSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const Group& g) {
    ctx->saved_data["group"] = stash(g);
    const int64_t n = g.size(), T = x.size(1);
    WEFT_CHECK(T % n == 0, "sequence parallelism: seq_len ", T, " is not divisible by tp ", n);
    return x.narrow(1, g.rank * (T / n), T / n).contiguous();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_gather_dim(grads[0], 1, unstash(ctx)), at::Tensor()};
  }
};

struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels,
                            int64_t vocab_start, const Group& g, int64_t vocab_size) {
    const int64_t V = logits.size(1);
    auto z = logits.to(at::kFloat);                              // (N, V/tp)
    const int64_t real = vocab_size < 0 ? V : std::clamp<int64_t>(vocab_size - vocab_start, 0, V);
    if (real < V) z = z.index_fill(1, at::arange(real, V, labels.options()), -INFINITY);  // padding
    auto m = std::get<0>(z.max(1));                              // (N)
    all_reduce(g, m, ReduceOp::kMax);
    z = z - m.unsqueeze(1);
    auto local = labels.ge(vocab_start).logical_and(labels.lt(vocab_start + V));  // (N)
    auto idx = (labels - vocab_start).clamp(0, V - 1);
    // where, not a product: a clamped index may land on a padding column (-inf * 0 is NaN).
    auto target = at::where(local, z.gather(1, idx.unsqueeze(1)).squeeze(1), 0.0f);
    all_reduce(g, target);
    auto e = z.exp();
    auto sum = e.sum(1);
    all_reduce(g, sum);
    ctx->save_for_backward({e / sum.unsqueeze(1), idx, local});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return sum.log() - target;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto grad = saved[0].clone();  // softmax slice (N, V/tp)
    grad.scatter_add_(1, saved[1].unsqueeze(1), -saved[2].to(at::kFloat).unsqueeze(1));
    grad.mul_(grads[0].unsqueeze(1));
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.to(dtype), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor all_gather_dim(const at::Tensor& t, int64_t dim, const Group& g) {
  if (trivial(g)) return t;
  return all_gather(g, t.movedim(dim, 0).contiguous()).movedim(0, dim).contiguous();
}

at::Tensor reduce_scatter_dim(const at::Tensor& t, int64_t dim, const Group& g) {
  if (trivial(g)) return t;
  WEFT_CHECK(t.size(dim) % g.size() == 0, "reduce-scatter: dim ", dim, " of size ", t.size(dim),
             " is not divisible by the group size ", g.size());
  return reduce_scatter(g, t.movedim(dim, 0).contiguous()).movedim(0, dim).contiguous();
}

at::Tensor copy_to_region(const at::Tensor& x, const Group& g) {
  return trivial(g) ? x : CopyToRegion::apply(x, g);
}
at::Tensor reduce_from_region(const at::Tensor& x, const Group& g) {
  return trivial(g) ? x : ReduceFromRegion::apply(x, g);
}
at::Tensor gather_sequence(const at::Tensor& x, const Group& g) {
  return trivial(g) ? x : GatherSequence::apply(x, g);
}
at::Tensor reduce_scatter_sequence(const at::Tensor& x, const Group& g) {
  return trivial(g) ? x : ReduceScatterSequence::apply(x, g);
}
at::Tensor scatter_sequence(const at::Tensor& x, const Group& g) {
  return trivial(g) ? x : ScatterSequence::apply(x, g);
}

at::Tensor vocab_parallel_embedding_partial(const at::Tensor& tokens, const at::Tensor& weight,
                                            int64_t vocab_start) {
  const int64_t V = weight.size(0);
  auto local = tokens.ge(vocab_start).logical_and(tokens.lt(vocab_start + V));  // (B, T)
  auto idx = (tokens - vocab_start).clamp(0, V - 1);
  return at::embedding(weight, idx) * local.unsqueeze(-1).to(weight.scalar_type());  // (B, T, C)
}

at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                        int64_t vocab_start, const Group& g, int64_t vocab_size) {
  return VocabParallelCrossEntropy::apply(logits, labels, vocab_start, g, vocab_size);
}

}  // namespace tp
}  // namespace weft

// Tensor-parallel communication as autograd functions (Megatron's mappings), over an explicit
// c10d process group. Each op is the identity when the group has one rank.
//
// Regions: inside a tensor-parallel region each rank holds a slice of the hidden features
// (column-parallel outputs); outside it activations are replicated (or, with sequence
// parallelism, split along the sequence dim T of (B, T, C)).
//   copy_to_region:          f: Y = X                    b: dX = all_reduce(dY)
//   reduce_from_region:      f: Y = all_reduce(X)        b: dX = dY
//   gather_sequence:         f: Y = all_gather_T(X)      b: dX = reduce_scatter_T(dY)
//   reduce_scatter_sequence: f: Y = reduce_scatter_T(X)  b: dX = all_gather_T(dY)
//   scatter_sequence:        f: Y = X[:, rank's T slice] b: dX = all_gather_T(dY)
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

namespace weft {

using ProcessGroupPtr = c10::intrusive_ptr<c10d::ProcessGroup>;

namespace tp {

at::Tensor copy_to_region(const at::Tensor& x, const ProcessGroupPtr& group);
at::Tensor reduce_from_region(const at::Tensor& x, const ProcessGroupPtr& group);
// x (B, T/tp, C) <-> (B, T, C); T must divide evenly.
at::Tensor gather_sequence(const at::Tensor& x, const ProcessGroupPtr& group);
at::Tensor reduce_scatter_sequence(const at::Tensor& x, const ProcessGroupPtr& group);
at::Tensor scatter_sequence(const at::Tensor& x, const ProcessGroupPtr& group);

// Embedding lookup with the vocabulary split over the group: rank r holds rows
// [vocab_start, vocab_start + V/tp) of the table. Returns this rank's partial sum (B, T, C)
// (zeros for tokens it does not own); the caller reduces it (all-reduce or reduce-scatter).
at::Tensor vocab_parallel_embedding_partial(const at::Tensor& tokens, const at::Tensor& weight,
                                            int64_t vocab_start);

// Cross-entropy with logits split over the vocabulary: logits (N, V/tp) on each rank, labels (N)
// global ids. Never gathers full-vocabulary logits: max, target logit and sum-exp are
// all-reduced. Returns per-token loss (N), fp32.
//   loss_i = log(sum_j exp(z_ij - m_i)) - (z_i,label - m_i),   m_i = max_j z_ij
//   dz_ij  = softmax(z)_ij - [j == label_i]                    (local slice of it)
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                        int64_t vocab_start, const ProcessGroupPtr& group);

// Collectives used above, blocking, on contiguous CPU or CUDA tensors (in place for all_reduce).
void all_reduce_(at::Tensor& t, const ProcessGroupPtr& group, c10d::ReduceOp op = c10d::ReduceOp::SUM);
at::Tensor all_gather_dim(const at::Tensor& t, int64_t dim, const ProcessGroupPtr& group);
at::Tensor reduce_scatter_dim(const at::Tensor& t, int64_t dim, const ProcessGroupPtr& group);

}  // namespace tp
}  // namespace weft

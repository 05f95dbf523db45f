// Tensor-parallel communication as autograd functions (Megatron's mappings), over an explicit
// group of the ParallelContext. Each op is the identity when the group has one rank. The group
// must outlive the autograd graph (it does: the context lives for the whole job).
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

#include "parallel/comm.h"

namespace weft {
namespace tp {

at::Tensor copy_to_region(const at::Tensor& x, const Group& group);
at::Tensor reduce_from_region(const at::Tensor& x, const Group& group);
// x (B, T/tp, C) <-> (B, T, C); T must divide evenly.
at::Tensor gather_sequence(const at::Tensor& x, const Group& group);
at::Tensor reduce_scatter_sequence(const at::Tensor& x, const Group& group);
at::Tensor scatter_sequence(const at::Tensor& x, const Group& group);

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
// Columns of global id >= vocab_size (the padding of a padded vocabulary, wherever it falls,
// possibly a whole rank's slice) are excluded from the softmax: their logits count as -inf and
// get zero gradient. vocab_size < 0: every column is a real id. Labels must be < vocab_size.
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                        int64_t vocab_start, const Group& group,
                                        int64_t vocab_size = -1);

// all_gather / reduce_scatter of parallel/comm.h along any dim (they work on dim 0).
at::Tensor all_gather_dim(const at::Tensor& t, int64_t dim, const Group& group);
at::Tensor reduce_scatter_dim(const at::Tensor& t, int64_t dim, const Group& group);

}  // namespace tp
}  // namespace weft

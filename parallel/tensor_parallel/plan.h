// Tensor-parallel plans as data: how each parameter of a model is split over the TP group, and
// where one rank's piece lies in the full tensor. A model lists its rules beside its math
// (models/*: "attn.q_proj.weight" -> kColumn); this file turns a rule into shapes and slices.
// Pure arithmetic: no process groups, so plans are unit-tested and `weft plan` sizes any rank.
//
// Splits (Megatron's layers), for a Linear Y = X W^T + b with W (out, in):
//   kColumn      W = [W_1; ...; W_p] by rows (dim 0): Y_i = X W_i^T, each rank a slice of the
//                output features (q/k/v, gate/up, and the vocab rows of embedding and head).
//   kRow         W = [W_1 ... W_p] by columns (dim 1): Y = sum_i X_i W_i^T (all-reduced), the
//                bias added once after the reduction (o_proj, down_proj).
//   kHeads       dim 0 split in whole heads of `unit` rows (K/V projections under GQA). With
//                fewer heads than ranks, head h is replicated on tp/heads consecutive ranks,
//                whose gradients are then partial and must be summed among them.
//   kReplicated  every rank holds the whole tensor (norms, row-parallel biases, positions).
//                With sequence parallelism each rank sees 1/tp of the tokens, so its gradient
//                is partial and is summed over the TP group.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace weft {
namespace tp {

enum class Split { kReplicated, kColumn, kRow, kHeads };

// A rule applies to every parameter whose name ends with `suffix` as whole dot-separated
// components ("embed.weight" matches "embed.weight", not "pos_embed.weight"); the first match
// wins and a name no rule matches is kReplicated.
struct ShardRule {
  std::string suffix;
  Split split;
  int64_t unit = 1;  // kHeads: rows per head
  // kReplicated only: the gradient is partial over TP even without sequence parallelism (each
  // rank sees only its slice of the computation the tensor feeds, e.g. a LoRA factor beside a
  // split projection), so it is summed over the TP group.
  bool partial_grad = false;
};
using Plan = std::vector<ShardRule>;

// One rank's piece of a tensor.
struct Shard {
  std::vector<int64_t> global_shape;
  int64_t dim = -1;                // split dim; -1 = the whole tensor
  int64_t start = 0, length = 0;   // along dim (length = global size when dim = -1)
  int64_t replicas = 1;            // TP ranks holding this same piece
  bool owner = true;               // first of those: counts it in the grad norm, saves it
  bool partial_grad = false;       // gradients must be summed over the ranks sharing it

  std::vector<int64_t> local_shape() const;
  // The piece of `full` (global_shape) this rank holds (a view).
  at::Tensor slice(const at::Tensor& full) const;
  // Element offsets of the piece in the global tensor, per dim (for checkpoint manifests).
  std::vector<int64_t> offsets() const;
};

const ShardRule* find_rule(const Plan& plan, const std::string& name);

// The piece of a tensor of `global_shape` that TP rank `rank` of `tp` holds under `rule`
// (null = kReplicated). `sequence_parallel` marks replicated tensors' gradients partial.
// Throws weft::Error naming the tensor when the split does not divide.
Shard shard_of(const std::string& name, const std::vector<int64_t>& global_shape,
               const ShardRule* rule, int64_t tp, int64_t rank, bool sequence_parallel);

// Local sizes a model needs to build its layers: `total` split over tp ranks.
int64_t split_size(int64_t total, int64_t tp, const char* what);
// Heads held locally when `heads` are split over tp (1 when heads < tp: replicated).
int64_t local_heads(int64_t heads, int64_t tp);

}  // namespace tp
}  // namespace weft

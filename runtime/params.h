// One record per parameter of this rank's model chunks: every fact the training step, the
// optimizer and the checkpoint need about a parameter, in one place.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "parallel/tensor_parallel/plan.h"
#include "runtime/checkpoint/checkpoint.h"

namespace weft {

struct ParamRecord {
  std::string name;   // global name ("layers.3.attn.q_proj.weight"), the same in every layout
  at::Tensor tensor;  // this rank's piece (local shape), fp32, on the training device
  tp::Shard shard;    // where the piece lies in the full tensor
  int64_t chunk = 0;  // the model chunk (virtual pipeline stage) holding it
  // This rank's copy is the one saved and counted in the grad norm: the TP owner of a
  // replicated piece, and the first stage's copy of a tied embedding.
  bool owned = true;
  bool tied = false;       // tied embedding held by the first and the last stage (pp > 1)
  bool decay = true;       // gets weight decay
  bool deferred = false;   // its gradient needs a TP or tied-embedding sum before the DP reduction
  bool trainable = true;   // false: no gradient, no bucket space, no optimizer state
};
using ParamList = std::vector<ParamRecord>;

// Where a TP piece lies in its global tensor, for checkpoint manifests.
inline ShardPlacement placement_of(const tp::Shard& shard) {
  ShardPlacement p;
  p.global_shape = shard.global_shape;
  p.offsets = shard.offsets();
  p.shape = shard.local_shape();
  return p;
}

}  // namespace weft

// ZeRO-1, the distributed optimizer: AdamW whose fp32 master weights and moments are sharded
// over the data-parallel group, along the flat layout of the gradient buckets. Gradients arrive
// reduce-scattered (GradBuckets with reduce_scatter: DP rank r holds the average of elements
// [r n, (r + 1) n) of each bucket), each rank updates its elements only, and the updated
// parameters are all-gathered back into every replica. Optimizer memory per rank falls by dp.
//
//   bucket b (padded to a multiple of dp):  | p3 ........ | p2 .... | p1 ...... |pad|
//   DP rank 0 owns                           [-------- n -------)
//   DP rank 1 owns                                              [-------- n -------)
// A parameter cut by a shard boundary has a segment on each side: segment = (param, its flat
// elements [begin, end)), a view into this rank's master shard.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "parallel/comm.h"
#include "parallel/data_parallel/grad_buckets.h"
#include "runtime/optim/optimizer.h"

namespace weft {

class ShardedAdamW {
 public:
  // One GradBuckets per model chunk (each reduce-scattering over `dp`), with the indices into
  // `params` of the parameters it was given, in its order.
  using Chunk = std::pair<const GradBuckets*, std::vector<size_t>>;
  ShardedAdamW(std::vector<Chunk> chunks, std::vector<std::pair<std::string, at::Tensor>> params,
               const std::vector<bool>& decay, const Group& dp, const OptimConfig& cfg);

  struct Segment {
    size_t param;              // index into params
    int64_t begin, end;        // flat elements of the parameter
    size_t chunk;
    int64_t bucket, shard_offset;  // where they sit in this rank's shard of that bucket
    at::Tensor master, grad;   // (end - begin) views into this rank's shards
  };
  const std::vector<Segment>& segments() const { return segments_; }
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }

  // This rank's averaged gradient elements (after GradBuckets::finish()), per segment.
  std::vector<at::Tensor> grads() const;
  // Updates the master shard with learning rate `lr`, then all-gathers every bucket's
  // parameters over dp into the model.
  void step(double lr);

  // exp_avg.<name> / exp_avg_sq.<name> of each segment (flat), for checkpoints.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, int64_t steps);
  // Re-reads the master shard from the parameters (after they were loaded from a checkpoint).
  void reload_master();

 private:
  std::vector<Chunk> chunks_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  const Group& dp_;
  std::vector<std::vector<at::Tensor>> master_;  // per chunk, per bucket: (padded / dp) fp32
  std::vector<Segment> segments_;
  std::unique_ptr<AdamW> adam_;     // over the segments' master views
};

}  // namespace weft

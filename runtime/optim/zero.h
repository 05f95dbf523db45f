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

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "weft/config.h"
#include "parallel/comm.h"
#include "parallel/data_parallel/grad_buckets.h"
#include "runtime/optim/optimizer.h"

namespace weft {

class ShardedAdamW : public Optimizer {
 public:
  // One GradBuckets per model chunk (each reduce-scattering over `dp`), with the indices into
  // `params` of the parameters it was given, in its order (trainable ones only). `params` and
  // the buckets must outlive it. `world` sums the grad norm (every rank holds distinct elements).
  using Chunk = std::pair<const GradBuckets*, std::vector<size_t>>;
  ShardedAdamW(std::vector<Chunk> chunks, const ParamList& params, const Group& dp, const Group& world,
               const OptimConfig& cfg);

  struct Segment {
    size_t param;              // index into params
    int64_t begin, end;        // flat elements of the parameter
    size_t chunk;
    int64_t bucket, shard_offset;  // where they sit in this rank's shard of that bucket
    at::Tensor master;         // (end - begin) view into this rank's fp32 master shard
  };
  const std::vector<Segment>& segments() const { return segments_; }

  // This rank's averaged gradient elements of every segment (after GradBuckets::finish()).
  void grads(std::vector<at::Tensor>& counted, std::vector<at::Tensor>& all) const override;
  const Group* norm_group() const override { return &world_; }
  // Updates the master shard with learning rate `lr`, then all-gathers every bucket's
  // parameters over dp into the model.
  void step(double lr) override;
  // exp_avg.<name> / exp_avg_sq.<name> of each owned segment, flat, with its range of the piece.
  void save_state(int64_t dp_rank, NamedTensors& tensors,
                  std::map<std::string, ShardPlacement>& placements) const override;
  std::vector<std::pair<std::string, ShardPlacement>> wanted_state() const override;
  void load_state(const NamedTensors& state, int64_t steps) override { adam_->load_state(state, steps); }
  // Re-reads the master shard from the parameters (after they were loaded from a checkpoint).
  void reload_params() override;

 private:
  ShardPlacement segment_placement(const Segment& s) const;
  at::Tensor segment_grad(const Segment& s) const;

  std::vector<Chunk> chunks_;
  const ParamList& params_;
  const Group& dp_;
  const Group& world_;
  std::vector<std::vector<at::Tensor>> master_;  // per chunk, per bucket: (padded / dp) fp32
  std::vector<Segment> segments_;
  std::unique_ptr<AdamW> adam_;  // over the segments' master views
};

}  // namespace weft

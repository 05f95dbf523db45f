// Building and parallelising the model, as one step before training: this rank's chunks (its TP
// slice of the layers of its pipeline stages, the plan applied), one record per parameter,
// frozen parameters marked, the data-parallel gradient buckets, and the optimizer over them.
// After backward, finish_grad_sync() completes every gradient reduction the layout needs.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "weft/config.h"
#include "models/transformer.h"
#include "parallel/data_parallel/grad_buckets.h"
#include "parallel/topology.h"
#include "runtime/optim/optimizer.h"
#include "runtime/params.h"

namespace weft {

// Owns the model chunks, the parameter records and the gradient buckets. Not thread-safe: the
// training thread builds and uses it. Throws weft::Error for a config it cannot build (a
// train.freeze pattern that matches nothing, a layout the model does not split into).
class ParallelModel {
 public:
  // `ctx` may be null (one process); it must outlive the model.
  ParallelModel(const Config& cfg, const ParallelContext* ctx, const at::Device& device);
  ParallelModel(const ParallelModel&) = delete;
  ParallelModel& operator=(const ParallelModel&) = delete;

  // Chunk c is virtual stage c * pp + pp_rank (one chunk without interleaving).
  TransformerImpl& chunk(int64_t c) { return *chunks_.at(c); }
  int64_t num_chunks() const { return int64_t(chunks_.size()); }
  const ParamList& params() const { return params_; }
  // The optimizer over the trainable parameters: ZeRO-1 when parallel.zero = 1 and dp > 1.
  // Built once; the model owns it.
  Optimizer& optimizer() { return *optimizer_; }

  // Drops every gradient (the step starts from none).
  void zero_grad();
  // Call right before the backward of chunk `c`'s last micro-batch of a step: only then do its
  // gradients start their data-parallel reduction.
  void arm_grad_reduce(int64_t c);
  // After the last backward of a step: sums TP-partial gradients over TP and tied-embedding
  // copies over the embedding group, then finishes the DP buckets (averaged gradients, or
  // ZeRO-1 shards). Collective. Returns the milliseconds it took (time exposed after backward).
  double finish_grad_sync();

 private:
  void build_records(const Config& cfg);
  void build_buckets(const Config& cfg);
  void sum_partial_grads();

  const ParallelContext* ctx_;
  ParallelDims dims_;
  std::vector<Transformer> chunks_;
  ParamList params_;
  std::vector<std::unique_ptr<GradBuckets>> buckets_;  // per chunk, when dp > 1
  std::vector<std::vector<size_t>> bucketed_;          // per chunk: indices of its bucketed params
  std::unique_ptr<Optimizer> optimizer_;
};

}  // namespace weft

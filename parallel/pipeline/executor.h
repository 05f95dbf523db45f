// Runs one pipeline rank's part of a Schedule (schedule.h) with real tensors: forwards and
// backwards through the model chunks this rank holds, activations and gradients moved with
// batched c10d isend/irecv over the pipeline group, exactly as the executor protocol in
// schedule.h describes. The model itself stays behind callbacks, so this file knows tensors and
// groups but no model.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

#include "parallel/comm.h"
#include "parallel/pipeline/schedule.h"

namespace weft {

struct StageStep {
  // Forward of (microbatch, chunk). `input` is undefined on virtual stage 0 (the callback reads
  // its own tokens), else the previous stage's output. Returns the stage output, or on the last
  // virtual stage the scalar to call backward() on (the micro-batch's loss, already scaled).
  std::function<at::Tensor(int64_t microbatch, int64_t chunk, const at::Tensor& input)> forward;
  // Called right before the backward of (microbatch, chunk), e.g. to arm gradient buckets.
  std::function<void(int64_t microbatch, int64_t chunk)> before_backward;
  // An empty tensor shaped like micro-batch `microbatch`'s stage boundary activation
  // ((B, T, C) or (B, T/tp, C)), fp32: a receive buffer.
  std::function<at::Tensor(int64_t microbatch)> boundary;
};

struct PipelineStats {
  double compute_ms = 0;  // time in forward and backward
  double total_ms = 0;    // the whole schedule, waits included
};

// Runs schedule.ranks[pp.rank] over `pp` (group rank = pipeline rank). With pp.size() == 1 the
// schedule must be single-stage (vpp 1) and no communication happens. Throws weft::Error (from
// comm) when a transfer fails.
PipelineStats run_pipeline(const Schedule& schedule, const Group& pp, const StageStep& step);

// Forward only (evaluation): every micro-batch through every virtual stage in order, blocking
// transfers between consecutive stages. `step.forward` on the last stage returns the value the
// caller accumulates; backward and before_backward are not used.
void run_pipeline_forward(int64_t microbatches, int64_t vpp, const Group& pp, const StageStep& step);

}  // namespace weft

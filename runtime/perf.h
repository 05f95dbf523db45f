// Throughput accounting: model FLOPs per token and this machine's measured matmul peak, for MFU.
#pragma once

#include <ATen/ATen.h>

#include "weft/config.h"
#include "parallel/topology.h"

namespace weft {

// Training FLOPs per token of the published model (padded vocabulary rows excluded; forward +
// backward = 3x forward): 6 x (parameters used in matmuls)
// + 12 x layers x hidden x seq_len for attention scores (Megatron/PaLM accounting).
double training_flops_per_token(const ModelConfig& cfg, int64_t seq_len);

// What the rank at `coord` holds for training, sized on the meta device: its parameters (all its
// virtual-pipeline chunks, its TP slice) and their training state in bytes: fp32 weights and
// grads (8 B/parameter) plus two fp32 AdamW moments (8 B/parameter, divided over dp with ZeRO-1).
// Activations and communication buffers are not included. `weft plan` prints these figures.
struct RankTrainingState {
  int64_t parameters = 0;
  double bytes = 0;           // fp32 weights, grads and AdamW moments (LoRA: grads and moments of the adapters only)
  double snapshot_bytes = 0;  // host copy an asynchronous checkpoint keeps (checkpoint.async)
  std::string layers;  // the rank's layer ranges, e.g. "0-3,8-11"
};
RankTrainingState rank_training_state(const Config& cfg, const ParallelDims& dims, const RankCoord& coord);

// Achieved FLOP/s of square matmuls of `dtype` on `device`, best of several timed repeats over
// about `seconds`. Uses the current intra-op thread count.
double measure_matmul_peak_flops(at::ScalarType dtype, const at::Device& device, double seconds = 0.5,
                                 int64_t n = 1024);

}  // namespace weft

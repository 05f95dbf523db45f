// Throughput accounting: model FLOPs per token and this machine's measured matmul peak, for MFU.
#pragma once

#include <ATen/ATen.h>

#include "core/config.h"

namespace weft {

// Training FLOPs per token (forward + backward = 3x forward): 6 x (parameters used in matmuls)
// + 12 x layers x hidden x seq_len for attention scores (Megatron/PaLM accounting).
double training_flops_per_token(const ModelConfig& cfg, int64_t seq_len);

// Achieved FLOP/s of square matmuls of `dtype` on `device`, best of several timed repeats over
// about `seconds`. Uses the current intra-op thread count.
double measure_matmul_peak_flops(at::ScalarType dtype, const at::Device& device, double seconds = 0.5,
                                 int64_t n = 1024);

}  // namespace weft

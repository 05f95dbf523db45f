// Measures this machine's matmul peak through LibTorch (the denominator of MFU):
//   weft_matmul_peak [threads] [seconds]  ->  matmul_peak_fp32_flops=..., matmul_peak_bf16_flops=...
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>

#include "runtime/perf.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::atoi(argv[1]) > 0) at::set_num_threads(std::atoi(argv[1]));
  const double seconds = argc > 2 ? std::atof(argv[2]) : 2.0;
  for (auto [name, dtype] : {std::pair{"fp32", at::kFloat}, std::pair{"bf16", at::kBFloat16}}) {
    double best = 0;
    for (int64_t n : {512, 1024, 2048})
      best = std::max(best, weft::measure_matmul_peak_flops(dtype, at::kCPU, seconds / 3, n));
    std::printf("matmul_peak_%s_flops=%.4g\n", name, best);
  }
  std::printf("threads=%d\n", at::get_num_threads());
  return 0;
}

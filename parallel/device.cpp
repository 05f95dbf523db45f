// Device-independent half of the device layer; the CUDA half is parallel/cuda/device_cuda.cpp,
// compiled only when a CUDA toolkit is found (WEFT_CUDA).
#include "parallel/device.h"

#include "core/error.h"

namespace weft {

#ifdef WEFT_CUDA
void detail_set_current_device(const at::Device& d);  // parallel/cuda/device_cuda.cpp
#else
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
at::Tensor pinned_empty_like(const at::Tensor& like) {
  return at::empty(like.sizes(), like.options().device(at::kCPU));
}
void run_on_side_stream(const at::Device&, const std::function<void()>& fn) { fn(); }
#endif

at::Device select_device(const std::string& kind, int local_rank) {
  if (kind == "cpu") return at::Device(at::kCPU);
  WEFT_CHECK(kind == "cuda", "device must be cpu or cuda, got '", kind, "'");
#ifndef WEFT_CUDA
  fail("device=cuda but this weft was built without CUDA: rebuild with a CUDA toolkit, or set device=cpu");
#else
  const int n = cuda_device_count();
  WEFT_CHECK(n > 0, "device=cuda but no GPU is visible (CUDA_VISIBLE_DEVICES?); set device=cpu to train on the CPU");
  at::Device d(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank % n));
  detail_set_current_device(d);
  return d;
#endif
}

std::string collective_backend(const at::Device& device) {
  return device.is_cuda() ? "nccl" : "gloo";
}

}  // namespace weft

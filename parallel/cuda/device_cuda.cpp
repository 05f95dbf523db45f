// CUDA half of the device layer: device count, current device, pinned host memory and side
// streams through LibTorch's CUDA runtime wrappers. Compiled only with WEFT_CUDA; it must build
// and link without a GPU present.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CachingHostAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cuda_runtime_api.h>

#include "parallel/device.h"

namespace weft {

int cuda_device_count() { return static_cast<int>(c10::cuda::device_count()); }
bool cuda_available() { return cuda_device_count() > 0; }

void detail_set_current_device(const at::Device& d) { c10::cuda::set_device(d.index()); }

int64_t detail_cuda_available_bytes(const at::Device& d) {
  c10::cuda::CUDAGuard guard(d);
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error; the caller treats 0 as unknown
    return 0;
  }
  return int64_t(free);
}

at::Tensor pinned_empty_like(const at::Tensor& like) {
  auto opts = like.options().device(at::kCPU);
  if (!cuda_available()) return at::empty(like.sizes(), opts);
  return at::empty(like.sizes(), opts.pinned_memory(true));
}

void run_on_side_stream(const at::Device& device, const std::function<void()>& fn) {
  if (!device.is_cuda()) return fn();
  auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
  auto current = c10::cuda::getCurrentCUDAStream(device.index());
  // The side stream must see everything already queued on the compute stream.
  at::cuda::CUDAEvent ready;
  ready.record(current);
  ready.block(side);
  {
    c10::cuda::CUDAStreamGuard guard(side);
    fn();
  }
  side.synchronize();
}

std::shared_ptr<void> detail_cuda_copy_async(const at::Device& device, const std::vector<at::Tensor>& src,
                                             const std::vector<at::Tensor>& dst,
                                             const std::function<void(size_t)>& after_each) {
  auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
  auto current = c10::cuda::getCurrentCUDAStream(device.index());
  at::cuda::CUDAEvent ready;
  ready.record(current);
  ready.block(side);
  auto done = std::make_shared<at::cuda::CUDAEvent>();
  {
    c10::cuda::CUDAStreamGuard guard(side);
    for (size_t i = 0; i < src.size(); ++i) {
      dst[i].copy_(src[i], /*non_blocking=*/true);
      if (after_each) after_each(i);
    }
    done->record(side);
  }
  return done;
}

void detail_cuda_event_synchronize(const std::shared_ptr<void>& event) {
  static_cast<at::cuda::CUDAEvent*>(event.get())->synchronize();
}

void detail_cuda_event_block_current(const std::shared_ptr<void>& event, const at::Device& device) {
  static_cast<at::cuda::CUDAEvent*>(event.get())->block(c10::cuda::getCurrentCUDAStream(device.index()));
}

}  // namespace weft

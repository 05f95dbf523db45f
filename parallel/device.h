// The thin device layer: which accelerator a rank uses, pinned host staging memory, and a side
// stream for copies. Everything device-specific lives behind these functions; with no CUDA
// toolkit at build time (or no GPU at run time) they fall back to plain CPU behaviour.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>

namespace weft {

// Whether this build has CUDA code and the machine has at least one GPU.
bool cuda_available();
int cuda_device_count();

// The device for a rank: "cpu", or "cuda" -> cuda:<local_rank % device count>, made current.
// Throws weft::Error naming the problem when CUDA is requested but unavailable.
at::Device select_device(const std::string& kind, int local_rank = 0);

// Host memory for device<->host staging (page-locked when CUDA is available, so copies can be
// asynchronous). Shaped and typed like `like`, on the CPU.
at::Tensor pinned_empty_like(const at::Tensor& like);

// Runs `fn` with a non-default stream current on `device` (CUDA), so copies it issues overlap
// with compute; waits for that stream before returning. On the CPU it just runs `fn`.
void run_on_side_stream(const at::Device& device, const std::function<void()>& fn);

// Bytes this process can still allocate on `device`, before it allocates anything: on the CPU,
// MemAvailable from /proc/meminfo or, when lower, the cgroup memory limit minus current usage;
// on a GPU, the device's free memory (cudaMemGetInfo; meant for start-up, before LibTorch's
// caching allocator holds any). 0 when it cannot be determined. `source` (optional) receives where
// the figure came from, for messages. Thread-safe.
int64_t available_memory_bytes(const at::Device& device, std::string* source = nullptr);

// The backend name c10d should use for this device: "nccl" for CUDA, "gloo" otherwise.
std::string collective_backend(const at::Device& device);

}  // namespace weft

// The thin device layer: which accelerator a rank uses, pinned host staging memory, and a side
// stream for copies. Everything device-specific lives behind these functions; with no CUDA
// toolkit at build time (or no GPU at run time) they fall back to plain CPU behaviour.
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

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

// Copies device tensors into host tensors without blocking the calling thread where the device
// allows, for checkpoint snapshots. CUDA: start() queues the copies on a side stream that first
// waits for the current stream's work, then records an event; the CPU: start() only records the
// pairs and finish() does the copies (on whichever thread calls it). One object per snapshot.
// start() and before_update() belong to the training thread; finish() may run on another.
class HostCopy {
 public:
  // dst[i]: host tensor shaped and typed like src[i] (pinned for CUDA, see pinned_empty_like).
  // `after_each(i)` runs after copy i is issued (fault injection, progress); may be empty.
  void start(std::vector<at::Tensor> src, std::vector<at::Tensor> dst,
             std::function<void(size_t)> after_each = {});
  // Returns once every dst holds its data. Idempotent; rethrows a failed copy's error.
  void finish();
  // Call before the next in-place update of any src: CUDA makes the current stream wait for
  // the copies (the host does not block); the CPU blocks until finish() has completed. Returns
  // the milliseconds the host waited.
  double before_update();

 private:
  std::vector<at::Tensor> src_, dst_;
  std::function<void(size_t)> after_each_;
  std::shared_ptr<void> event_;  // CUDA: the copies' completion event
  at::Device device_{at::kCPU};
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
};

// Bytes this process can still allocate on `device`, before it allocates anything: on the CPU,
// MemAvailable from /proc/meminfo or, when lower, the cgroup memory limit minus current usage;
// on a GPU, the device's free memory (cudaMemGetInfo; meant for start-up, before LibTorch's
// caching allocator holds any). 0 when it cannot be determined. `source` (optional) receives where
// the figure came from, for messages. Thread-safe.
int64_t available_memory_bytes(const at::Device& device, std::string* source = nullptr);

// The backend name c10d should use for this device: "nccl" for CUDA, "gloo" otherwise.
std::string collective_backend(const at::Device& device);

}  // namespace weft

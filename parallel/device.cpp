// Device-independent half of the device layer; the CUDA half is parallel/cuda/device_cuda.cpp,
// compiled only when a CUDA toolkit is found (WEFT_CUDA).
#include "parallel/device.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "weft/error.h"

namespace weft {
namespace {

// The first number in `path` (a cgroup file); -1 if absent or "max" (no limit).
int64_t read_cgroup_number(const char* path) {
  std::ifstream in(path);
  std::string word;
  if (!(in >> word) || word == "max") return -1;
  char* end = nullptr;
  const long long v = std::strtoll(word.c_str(), &end, 10);
  return end && *end == '\0' ? int64_t(v) : -1;
}

int64_t host_available_bytes(std::string* source) {
  int64_t avail = 0;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream fields(line.substr(13));
    long long kib = 0;
    if (fields >> kib) avail = int64_t(kib) * 1024;
  }
  if (source) *source = "MemAvailable in /proc/meminfo";
  // cgroup v2, then v1; v1 reports "no limit" as a huge number, which min() ignores.
  const std::pair<const char*, const char*> cgroups[] = {
      {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
      {"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"}};
  for (const auto& [limit_path, usage_path] : cgroups) {
    const int64_t limit = read_cgroup_number(limit_path), usage = read_cgroup_number(usage_path);
    if (limit < 0 || usage < 0) continue;
    const int64_t left = std::max<int64_t>(0, limit - usage);
    if (avail == 0 || left < avail) {
      avail = left;
      if (source) *source = str("the cgroup limit ", limit_path, " less usage");
    }
    break;
  }
  return avail;
}

}  // namespace

#ifdef WEFT_CUDA
void detail_set_current_device(const at::Device& d);       // parallel/cuda/device_cuda.cpp
int64_t detail_cuda_available_bytes(const at::Device& d);  // parallel/cuda/device_cuda.cpp
// Queues dst[i].copy_(src[i]) on a side stream after the current stream's work; returns the
// event recorded after them. Waits for / orders the current stream after such an event.
std::shared_ptr<void> detail_cuda_copy_async(const at::Device& d, const std::vector<at::Tensor>& src,
                                             const std::vector<at::Tensor>& dst,
                                             const std::function<void(size_t)>& after_each);
void detail_cuda_event_synchronize(const std::shared_ptr<void>& event);
void detail_cuda_event_block_current(const std::shared_ptr<void>& event, const at::Device& d);
#else
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
at::Tensor pinned_empty_like(const at::Tensor& like) {
  return at::empty(like.sizes(), like.options().device(at::kCPU));
}
void run_on_side_stream(const at::Device&, const std::function<void()>& fn) { fn(); }
#endif

void HostCopy::start(std::vector<at::Tensor> src, std::vector<at::Tensor> dst, std::function<void(size_t)> after_each) {
  src_ = std::move(src), dst_ = std::move(dst), after_each_ = std::move(after_each);
  device_ = src_.empty() ? at::Device(at::kCPU) : src_.front().device();
#ifdef WEFT_CUDA
  if (device_.is_cuda()) event_ = detail_cuda_copy_async(device_, src_, dst_, after_each_);
#endif
}

void HostCopy::finish() {
  std::unique_lock<std::mutex> lock(mu_);
  if (done_) {
    if (error_) std::rethrow_exception(error_);
    return;
  }
  lock.unlock();
  std::exception_ptr error;
  try {
#ifdef WEFT_CUDA
    if (event_) detail_cuda_event_synchronize(event_);
#endif
    if (!event_)
      for (size_t i = 0; i < src_.size(); ++i) {
        // One thread, no intra-op pool: a background copy must not take the training's cores.
        if (src_[i].is_contiguous() && dst_[i].is_contiguous() && src_[i].dtype() == dst_[i].dtype())
          std::memcpy(dst_[i].data_ptr(), src_[i].data_ptr(), src_[i].nbytes());
        else
          dst_[i].copy_(src_[i]);
        if (after_each_) after_each_(i);
      }
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  done_ = true, error_ = error;
  src_.clear();  // the live tensors are no longer needed
  cv_.notify_all();
  if (error_) std::rethrow_exception(error_);
}

double HostCopy::before_update() {
#ifdef WEFT_CUDA
  if (event_) {
    detail_cuda_event_block_current(event_, device_);
    return 0;
  }
#endif
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

int64_t available_memory_bytes(const at::Device& device, std::string* source) {
  if (device.is_cpu()) return host_available_bytes(source);
#ifdef WEFT_CUDA
  if (device.is_cuda()) {
    if (source) *source = "free GPU memory";
    return detail_cuda_available_bytes(device);
  }
#endif
  return 0;
}

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

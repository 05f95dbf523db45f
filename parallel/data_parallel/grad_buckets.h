// Data-parallel gradient reduction in buckets, overlapped with backward: once every gradient of
// a bucket has been accumulated on the last micro-batch of a step, its all-reduce (average over
// the DP group) starts asynchronously while backward continues with earlier layers.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "parallel/comm.h"

namespace weft {

// The gradients of `params` in one flat buffer, in order (zeros for a parameter without one),
// zero-padded to `numel` elements when that is larger.
at::Tensor flatten_grads(const std::vector<at::Tensor>& params, int64_t numel = 0);
// Sets each parameter's gradient to its slice of `flat` (the layout of flatten_grads).
void assign_grads(const std::vector<at::Tensor>& params, const at::Tensor& flat);

struct GradBucketsOptions {
  int64_t bucket_bytes = 25 << 20;  // close a bucket once it holds this many gradient bytes
  // false: every reduction starts in finish(), after backward (the baseline overlap is
  // measured against).
  bool overlap = true;
  // ZeRO-1: reduce-scatter each bucket (padded to a multiple of the DP size) so that DP rank r
  // keeps the average of elements [r * n, (r + 1) * n) only (see shard()); params' .grad is not
  // written back.
  bool reduce_scatter = false;
  // Parameters whose gradients need another reduction first (summed over TP or with a tied
  // copy on another stage): no hook; they sit in buckets of their own, reduced in finish().
  std::vector<bool> deferred;
};

// Owns post-accumulate-grad hooks on `params` (removed on destruction) and one flat buffer per
// bucket. Buckets follow reverse parameter order, the order backward produces gradients.
// Not thread-safe; arm()/finish() from the training thread, hooks run on the autograd thread
// of the same backward. Collectives are issued in the same order on every rank because every
// rank runs the same graph. Throws weft::Error (via comm) when a reduction fails.
class GradBuckets {
 public:
  GradBuckets(std::vector<at::Tensor> params, const Group& dp, GradBucketsOptions opts = {});
  ~GradBuckets();
  GradBuckets(const GradBuckets&) = delete;
  GradBuckets& operator=(const GradBuckets&) = delete;

  // Call before the backward of a step's last micro-batch: only then do hooks launch reductions
  // (earlier micro-batches just accumulate locally).
  void arm();
  // Launches what backward did not (parameters without a gradient reduce zeros), waits for every
  // reduction and writes the averaged gradients back (or, with reduce_scatter, keeps this rank's
  // shard). Call after that backward.
  void finish();
  int64_t num_buckets() const { return int64_t(buckets_.size()); }

  // Bucket layout, for ZeRO-1: parameter k of bucket b occupies flat elements
  // [offsets[i], offsets[i] + numel) of the bucket (padded to `padded`, a multiple of dp).
  struct Layout {
    std::vector<size_t> params;   // indices into the constructor's params
    std::vector<int64_t> offsets;
    int64_t numel = 0, padded = 0;
  };
  const Layout& layout(int64_t b) const { return buckets_[b].layout; }
  // After finish() with reduce_scatter: this rank's averaged elements of bucket b, (padded / dp).
  const at::Tensor& shard(int64_t b) const { return buckets_[b].flat; }

 private:
  struct Bucket {
    Layout layout;
    size_t ready = 0;
    bool launched = false;
    at::Tensor flat, input;
    CommHandle handle;
  };
  void on_grad_ready(size_t param);
  void launch(Bucket& b);
  std::vector<at::Tensor> bucket_params(const Bucket& b) const;

  std::vector<at::Tensor> params_;
  std::vector<size_t> bucket_of_;  // param index -> bucket index
  std::vector<Bucket> buckets_;
  const Group& dp_;
  GradBucketsOptions opts_;
  bool armed_ = false;
};

}  // namespace weft

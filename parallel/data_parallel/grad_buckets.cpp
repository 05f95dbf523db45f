// Bucketed, overlapped data-parallel gradient averaging through post-accumulate-grad hooks.
#include "parallel/data_parallel/grad_buckets.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "core/error.h"

namespace weft {
namespace {

struct ReadyHook : torch::autograd::PostAccumulateGradHook {
  ReadyHook(std::function<void()> fn) : fn_(std::move(fn)) {}
  void operator()(const torch::autograd::Variable&) override { fn_(); }
  std::function<void()> fn_;
};

}  // namespace

GradBuckets::GradBuckets(std::vector<at::Tensor> params, const Group& dp, GradBucketsOptions opts)
    : params_(std::move(params)), bucket_of_(params_.size()), dp_(dp) {
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    if (buckets_.empty() || bytes >= opts.bucket_bytes) buckets_.emplace_back(), bytes = 0;
    auto& b = buckets_.back();
    b.params.push_back(k);
    b.numel += params_[k].numel();
    bytes += params_[k].numel() * int64_t(params_[k].element_size());
    bucket_of_[k] = buckets_.size() - 1;
    torch::autograd::impl::set_post_acc_grad_hooks(
        params_[k], std::make_unique<ReadyHook>([this, k] { on_grad_ready(k); }));
  }
}

GradBuckets::~GradBuckets() {
  for (auto& p : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void GradBuckets::arm() {
  armed_ = true;
  for (auto& b : buckets_) b.ready = 0, b.launched = false;
}

void GradBuckets::on_grad_ready(size_t param) {
  if (!armed_) return;
  auto& b = buckets_[bucket_of_[param]];
  if (++b.ready == b.params.size()) launch(b);
}

void GradBuckets::launch(Bucket& b) {
  std::vector<at::Tensor> grads;
  for (size_t k : b.params) {
    const auto& g = params_[k].grad();
    grads.push_back(g.defined() ? g.reshape({-1}) : at::zeros({params_[k].numel()}, params_[k].options()));
  }
  b.flat = at::cat(grads);
  b.handle = all_reduce_async(dp_, b.flat, ReduceOp::kAvg);
  b.launched = true;
}

void GradBuckets::finish() {
  WEFT_CHECK(armed_, "GradBuckets::finish() without arm()");
  armed_ = false;
  for (auto& b : buckets_)
    if (!b.launched) launch(b);
  at::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    b.handle.wait();
    int64_t offset = 0;
    for (size_t k : b.params) {
      auto& p = params_[k];
      auto avg = b.flat.narrow(0, offset, p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(avg);
      else
        p.mutable_grad() = avg.clone();
      offset += p.numel();
    }
    b.flat = at::Tensor();
  }
}

}  // namespace weft

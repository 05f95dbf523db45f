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
    : params_(std::move(params)), bucket_of_(params_.size()), dp_(dp), opts_(std::move(opts)) {
  WEFT_CHECK(opts_.deferred.empty() || opts_.deferred.size() == params_.size(),
             "GradBuckets: deferred has ", opts_.deferred.size(), " flags for ", params_.size(), " params");
  // Hooked parameters first (reverse order, as backward produces them), then deferred ones.
  for (bool deferred : {false, true}) {
    int64_t bytes = 0;
    bool open = false;
    for (size_t k = params_.size(); k-- > 0;) {
      if ((!opts_.deferred.empty() && opts_.deferred[k]) != deferred) continue;
      if (!open || bytes >= opts_.bucket_bytes) buckets_.emplace_back(), bytes = 0, open = true;
      auto& l = buckets_.back().layout;
      l.params.push_back(k);
      l.offsets.push_back(l.numel);
      l.numel += params_[k].numel();
      bytes += params_[k].numel() * int64_t(params_[k].element_size());
      bucket_of_[k] = buckets_.size() - 1;
      if (!deferred)
        torch::autograd::impl::set_post_acc_grad_hooks(
            params_[k], std::make_unique<ReadyHook>([this, k] { on_grad_ready(k); }));
    }
  }
  for (auto& b : buckets_) {
    auto& l = b.layout;
    l.padded = opts_.reduce_scatter ? (l.numel + dp_.size() - 1) / dp_.size() * dp_.size() : l.numel;
  }
}

GradBuckets::~GradBuckets() {
  for (size_t k = 0; k < params_.size(); ++k)
    if (opts_.deferred.empty() || !opts_.deferred[k])
      torch::autograd::impl::set_post_acc_grad_hooks(params_[k], nullptr);
}

void GradBuckets::arm() {
  armed_ = true;
  for (auto& b : buckets_) b.ready = 0, b.launched = false;
}

void GradBuckets::on_grad_ready(size_t param) {
  if (!armed_ || !opts_.overlap) return;
  auto& b = buckets_[bucket_of_[param]];
  if (++b.ready == b.layout.params.size()) launch(b);
}

void GradBuckets::launch(Bucket& b) {
  std::vector<at::Tensor> grads;
  for (size_t k : b.layout.params) {
    const auto& g = params_[k].grad();
    grads.push_back(g.defined() ? g.reshape({-1}) : at::zeros({params_[k].numel()}, params_[k].options()));
  }
  if (b.layout.padded > b.layout.numel)
    grads.push_back(at::zeros({b.layout.padded - b.layout.numel}, params_[b.layout.params[0]].options()));
  b.flat = at::cat(grads);
  if (opts_.reduce_scatter) {
    // The bucket holds them now, and ZeRO-1 reads only the averaged shard: free the originals.
    for (size_t k : b.layout.params) params_[k].mutable_grad().reset();
    // Sum, divided after the wait (Gloo's reduce_scatter has no AVG); the input stays alive
    // in b.input until then.
    b.input = b.flat;
    b.handle = reduce_scatter_async(dp_, b.input, b.flat);
  } else {
    b.handle = all_reduce_async(dp_, b.flat, ReduceOp::kAvg);
  }
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
    if (opts_.reduce_scatter) {  // this rank's shard stays in b.flat
      b.input = at::Tensor();
      b.flat.div_(double(dp_.size()));
      continue;
    }
    for (size_t i = 0; i < b.layout.params.size(); ++i) {
      auto& p = params_[b.layout.params[i]];
      auto avg = b.flat.narrow(0, b.layout.offsets[i], p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(avg);
      else
        p.mutable_grad() = avg.clone();
    }
    b.flat = at::Tensor();
  }
}

}  // namespace weft

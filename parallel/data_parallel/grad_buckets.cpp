// Bucketed, overlapped data-parallel gradient averaging through post-accumulate-grad hooks.
#include "parallel/data_parallel/grad_buckets.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "weft/error.h"

namespace weft {
namespace {

struct ReadyHook : torch::autograd::PostAccumulateGradHook {
  ReadyHook(std::function<void()> fn) : fn_(std::move(fn)) {}
  void operator()(const torch::autograd::Variable&) override { fn_(); }
  std::function<void()> fn_;
};

}  // namespace

at::Tensor flatten_grads(const std::vector<at::Tensor>& params, int64_t numel) {
  std::vector<at::Tensor> flat;
  int64_t n = 0;
  for (const auto& p : params) {
    flat.push_back(p.grad().defined() ? p.grad().reshape({-1}) : at::zeros({p.numel()}, p.options()));
    n += p.numel();
  }
  if (numel > n) flat.push_back(at::zeros({numel - n}, params.at(0).options()));
  return at::cat(flat);
}

void assign_grads(const std::vector<at::Tensor>& params, const at::Tensor& flat) {
  at::NoGradGuard no_grad;
  int64_t offset = 0;
  for (auto p : params) {
    auto part = flat.narrow(0, offset, p.numel()).view(p.sizes());
    if (p.grad().defined())
      p.mutable_grad().copy_(part);
    else
      p.mutable_grad() = part.clone();
    offset += p.numel();
  }
}

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

std::vector<at::Tensor> GradBuckets::bucket_params(const Bucket& b) const {
  std::vector<at::Tensor> out;
  for (size_t k : b.layout.params) out.push_back(params_[k]);
  return out;
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
  b.flat = flatten_grads(bucket_params(b), b.layout.padded);
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
  for (auto& b : buckets_) {
    b.handle.wait();
    if (opts_.reduce_scatter) {  // this rank's shard stays in b.flat
      b.input = at::Tensor();
      b.flat.div_(double(dp_.size()));
      continue;
    }
    assign_grads(bucket_params(b), b.flat);
    b.flat = at::Tensor();
  }
}

}  // namespace weft

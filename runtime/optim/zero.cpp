#include "runtime/optim/zero.h"

#include <algorithm>

#include "core/error.h"

namespace weft {

ShardedAdamW::ShardedAdamW(const GradBuckets& buckets, std::vector<std::pair<std::string, at::Tensor>> params,
                           const std::vector<bool>& decay, const Group& dp, const OptimConfig& cfg)
    : buckets_(buckets), params_(std::move(params)), dp_(dp) {
  at::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> views;
  std::vector<bool> view_decay;
  for (int64_t b = 0; b < buckets_.num_buckets(); ++b) {
    const auto& l = buckets_.layout(b);
    const int64_t n = l.padded / dp_.size(), lo = dp_.rank * n, hi = lo + n;
    auto master = at::zeros({n}, at::kFloat);
    for (size_t i = 0; i < l.params.size(); ++i) {
      const int64_t off = l.offsets[i], numel = params_[l.params[i]].second.numel();
      const int64_t a = std::max(lo, off), e = std::min(hi, off + numel);
      if (a >= e) continue;
      Segment s{l.params[i], a - off, e - off, b, a - lo, master.narrow(0, a - lo, e - a), at::Tensor()};
      views.emplace_back(params_[s.param].first, s.master);
      view_decay.push_back(decay[s.param]);
      segments_.push_back(std::move(s));
    }
    master_.push_back(master);
  }
  reload_master();
  adam_ = std::make_unique<AdamW>(std::move(views), std::move(view_decay), cfg);
}

void ShardedAdamW::reload_master() {
  at::NoGradGuard no_grad;
  for (auto& s : segments_)
    s.master.copy_(params_[s.param].second.detach().reshape({-1}).narrow(0, s.begin, s.end - s.begin));
}

std::vector<at::Tensor> ShardedAdamW::grads() const {
  std::vector<at::Tensor> out;
  for (const auto& s : segments_)
    out.push_back(buckets_.shard(s.bucket).narrow(0, s.shard_offset, s.end - s.begin));
  return out;
}

void ShardedAdamW::step(double lr) {
  at::NoGradGuard no_grad;
  auto g = grads();
  for (size_t k = 0; k < segments_.size(); ++k) segments_[k].master.mutable_grad() = g[k];
  adam_->step(lr);
  for (int64_t b = 0; b < buckets_.num_buckets(); ++b) {
    const auto& l = buckets_.layout(b);
    auto full = all_gather(dp_, master_[b]);  // (padded)
    for (size_t i = 0; i < l.params.size(); ++i) {
      auto& p = params_[l.params[i]].second;
      p.detach().copy_(full.narrow(0, l.offsets[i], p.numel()).view(p.sizes()));
    }
  }
  for (auto& s : segments_) s.master.mutable_grad().reset();
}

std::vector<std::pair<std::string, at::Tensor>> ShardedAdamW::state() const { return adam_->state(); }

void ShardedAdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, int64_t steps) { adam_->load_state(state, steps); }

}  // namespace weft

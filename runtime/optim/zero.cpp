#include "runtime/optim/zero.h"

#include <algorithm>

#include "core/error.h"

namespace weft {

ShardedAdamW::ShardedAdamW(std::vector<Chunk> chunks, std::vector<std::pair<std::string, at::Tensor>> params,
                           const std::vector<bool>& decay, const Group& dp, const OptimConfig& cfg)
    : chunks_(std::move(chunks)), params_(std::move(params)), dp_(dp) {
  at::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> views;
  std::vector<bool> view_decay;
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const auto& [buckets, index] = chunks_[c];
    master_.emplace_back();
    for (int64_t b = 0; b < buckets->num_buckets(); ++b) {
      const auto& l = buckets->layout(b);
      const int64_t n = l.padded / dp_.size(), lo = dp_.rank * n, hi = lo + n;
      auto master = at::zeros({n}, at::kFloat);
      for (size_t i = 0; i < l.params.size(); ++i) {
        const size_t param = index.at(l.params[i]);
        const int64_t off = l.offsets[i], numel = params_[param].second.numel();
        const int64_t a = std::max(lo, off), e = std::min(hi, off + numel);
        if (a >= e) continue;
        Segment s{param, a - off, e - off, c, b, a - lo, master.narrow(0, a - lo, e - a), at::Tensor()};
        views.emplace_back(params_[param].first, s.master);
        view_decay.push_back(decay[param]);
        segments_.push_back(std::move(s));
      }
      master_.back().push_back(master);
    }
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
    out.push_back(chunks_[s.chunk].first->shard(s.bucket).narrow(0, s.shard_offset, s.end - s.begin));
  return out;
}

void ShardedAdamW::step(double lr) {
  at::NoGradGuard no_grad;
  auto g = grads();
  for (size_t k = 0; k < segments_.size(); ++k) segments_[k].master.mutable_grad() = g[k];
  adam_->step(lr);
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const auto& [buckets, index] = chunks_[c];
    for (int64_t b = 0; b < buckets->num_buckets(); ++b) {
      const auto& l = buckets->layout(b);
      auto full = all_gather(dp_, master_[c][b]);  // (padded)
      for (size_t i = 0; i < l.params.size(); ++i) {
        auto& p = params_[index.at(l.params[i])].second;
        p.detach().copy_(full.narrow(0, l.offsets[i], p.numel()).view(p.sizes()));
      }
    }
  }
  for (auto& s : segments_) s.master.mutable_grad().reset();
}

std::vector<std::pair<std::string, at::Tensor>> ShardedAdamW::state() const { return adam_->state(); }

void ShardedAdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, int64_t steps) { adam_->load_state(state, steps); }

}  // namespace weft

// ZeRO-1's sharded AdamW: master shards on the parameters' device, views per parameter segment.
#include "runtime/optim/zero.h"

#include <algorithm>

#include "weft/error.h"

namespace weft {

ShardedAdamW::ShardedAdamW(std::vector<Chunk> chunks, const ParamList& params, const Group& dp,
                           const Group& world, const OptimConfig& cfg)
    : chunks_(std::move(chunks)), params_(params), dp_(dp), world_(world) {
  at::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> views;
  std::vector<bool> view_decay;
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const auto& [buckets, index] = chunks_[c];
    master_.emplace_back();
    for (int64_t b = 0; b < buckets->num_buckets(); ++b) {
      const auto& l = buckets->layout(b);
      const int64_t n = l.padded / dp_.size(), lo = dp_.rank * n, hi = lo + n;
      const auto& first = params_.at(index.at(l.params.at(0))).tensor;
      auto master = at::zeros({n}, first.options().dtype(at::kFloat));  // on the parameters' device
      for (size_t i = 0; i < l.params.size(); ++i) {
        const size_t param = index.at(l.params[i]);
        const int64_t off = l.offsets[i], numel = params_[param].tensor.numel();
        const int64_t a = std::max(lo, off), e = std::min(hi, off + numel);
        if (a >= e) continue;
        Segment s{param, a - off, e - off, c, b, a - lo, master.narrow(0, a - lo, e - a)};
        views.emplace_back(params_[param].name, s.master);
        view_decay.push_back(params_[param].decay);
        segments_.push_back(std::move(s));
      }
      master_.back().push_back(master);
    }
  }
  reload_params();
  adam_ = std::make_unique<AdamW>(std::move(views), std::move(view_decay), cfg);
}

void ShardedAdamW::reload_params() {
  at::NoGradGuard no_grad;
  for (auto& s : segments_)
    s.master.copy_(params_[s.param].tensor.detach().reshape({-1}).narrow(0, s.begin, s.end - s.begin));
}

at::Tensor ShardedAdamW::segment_grad(const Segment& s) const {
  return chunks_[s.chunk].first->shard(s.bucket).narrow(0, s.shard_offset, s.end - s.begin);
}

void ShardedAdamW::grads(std::vector<at::Tensor>& counted, std::vector<at::Tensor>& all) const {
  for (const auto& s : segments_) {
    all.push_back(segment_grad(s));
    if (params_[s.param].owned) counted.push_back(all.back());
  }
}

void ShardedAdamW::step(double lr) {
  at::NoGradGuard no_grad;
  for (auto& s : segments_) s.master.mutable_grad() = segment_grad(s);
  adam_->step(lr);
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const auto& [buckets, index] = chunks_[c];
    for (int64_t b = 0; b < buckets->num_buckets(); ++b) {
      const auto& l = buckets->layout(b);
      auto full = all_gather(dp_, master_[c][b]);  // (padded)
      for (size_t i = 0; i < l.params.size(); ++i) {
        auto p = params_[index.at(l.params[i])].tensor;
        p.detach().copy_(full.narrow(0, l.offsets[i], p.numel()).view(p.sizes()));
      }
    }
  }
  for (auto& s : segments_) s.master.mutable_grad().reset();
}

ShardPlacement ShardedAdamW::segment_placement(const Segment& s) const {
  auto p = placement_of(params_[s.param].shard);
  p.flat_begin = s.begin, p.flat_end = s.end;
  return p;
}

void ShardedAdamW::save_state(int64_t, NamedTensors& tensors, std::map<std::string, ShardPlacement>& placements) const {
  auto state = adam_->state();  // exp_avg.<name>, exp_avg_sq.<name> per segment, in order
  for (size_t i = 0; i < segments_.size(); ++i) {
    if (!params_[segments_[i].param].owned) continue;
    for (size_t j = 2 * i; j < 2 * i + 2; ++j) {
      tensors.emplace_back(state[j].first, state[j].second);  // live: the checkpointer snapshots it
      placements[state[j].first] = segment_placement(segments_[i]);
    }
  }
}

std::vector<std::pair<std::string, ShardPlacement>> ShardedAdamW::wanted_state() const {
  std::vector<std::pair<std::string, ShardPlacement>> want;
  for (const auto& s : segments_)
    for (const char* kind : {"exp_avg.", "exp_avg_sq."}) want.emplace_back(kind + params_[s.param].name, segment_placement(s));
  return want;
}

}  // namespace weft

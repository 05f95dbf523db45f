#include "parallel/pipeline/executor.h"

#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <map>
#include <tuple>

#include "weft/error.h"

namespace weft {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// (payload, microbatch, chunk)
using Key = std::tuple<int, int64_t, int64_t>;

}  // namespace

PipelineStats run_pipeline(const Schedule& schedule, const Group& pp, const StageStep& step) {
  const auto t_start = Clock::now();
  const int64_t P = schedule.pp, S = schedule.pp * schedule.vpp;
  WEFT_CHECK(pp.size() == P, "pipeline schedule for pp(", P, ") run on ", pp.describe());
  const int64_t r = pp.rank;
  const auto& mine = schedule.ranks.at(r);

  std::map<Key, at::Tensor> received, produced;  // transfers in and out
  std::map<std::pair<int64_t, int64_t>, std::pair<at::Tensor, at::Tensor>> saved;  // (input, output)
  PipelineStats stats;

  auto post = [&](const std::vector<Transfer>& ops) {
    if (ops.empty()) return;
    std::vector<P2POp> batch;
    std::vector<Key> recv_keys;
    for (const auto& op : ops) {
      const Key key{int(op.payload), op.microbatch, op.chunk};
      if (op.type == Transfer::kSend) {
        auto it = produced.find(key);
        WEFT_CHECK(it != produced.end(), "pipeline rank ", r, ": schedule sends ",
                   op.payload == Transfer::kActivation ? "activation" : "gradient", " of micro-batch ",
                   op.microbatch, " chunk ", op.chunk, " before computing it");
        batch.push_back(P2POp::send(it->second, op.peer));
      } else {
        auto buf = step.boundary(op.microbatch);
        received[key] = buf;
        batch.push_back(P2POp::recv(buf, op.peer));
      }
    }
    auto handles = batch_isend_irecv(pp, batch);
    wait_all(handles);
    for (const auto& op : ops)  // a sent tensor is no longer needed
      if (op.type == Transfer::kSend) produced.erase(Key{int(op.payload), op.microbatch, op.chunk});
  };

  auto take = [&](const Key& key, const char* what) {
    auto it = received.find(key);
    WEFT_CHECK(it != received.end(), "pipeline rank ", r, ": ", what, " of micro-batch ",
               std::get<1>(key), " chunk ", std::get<2>(key), " was never received");
    auto t = it->second;
    received.erase(it);
    return t;
  };

  for (const auto& a : mine.actions) {
    post(a.comm_before);
    const int64_t s = virtual_stage(P, r, a.chunk);
    const auto t0 = Clock::now();
    if (a.kind == PipelineAction::kForward) {
      at::Tensor input;
      if (s > 0) input = take(Key{Transfer::kActivation, a.microbatch, a.chunk}, "activation").requires_grad_(true);
      auto out = step.forward(a.microbatch, a.chunk, input);
      if (s < S - 1) produced[Key{Transfer::kActivation, a.microbatch, a.chunk}] = out.detach().to(at::kFloat).contiguous();
      saved[{a.microbatch, a.chunk}] = {input, out};
    } else {
      auto node = saved.find({a.microbatch, a.chunk});
      WEFT_CHECK(node != saved.end(), "pipeline rank ", r, ": backward of micro-batch ", a.microbatch,
                 " chunk ", a.chunk, " before its forward");
      auto [input, out] = node->second;
      saved.erase(node);
      if (step.before_backward) step.before_backward(a.microbatch, a.chunk);
      // The output of a stage whose parameters are all frozen (and that gets no input gradient
      // to pass on: the first stage) needs no backward.
      if (s == S - 1) {
        if (out.requires_grad()) torch::autograd::backward({out});
      } else {
        auto grad = take(Key{Transfer::kGradient, a.microbatch, a.chunk}, "output gradient");
        if (out.requires_grad()) torch::autograd::backward({out}, {grad.to(out.scalar_type())});
      }
      if (s > 0) {
        WEFT_CHECK(input.grad().defined(), "pipeline rank ", r, ": no input gradient for micro-batch ",
                   a.microbatch, " chunk ", a.chunk);
        produced[Key{Transfer::kGradient, a.microbatch, a.chunk}] = input.grad().contiguous();
      }
    }
    stats.compute_ms += ms_since(t0);
  }
  post(mine.comm_after);
  WEFT_CHECK(saved.empty() && received.empty() && produced.empty(), "pipeline rank ", r,
             ": schedule ", schedule.name, " left ", saved.size(), " forwards without backward, ",
             received.size(), " unused transfers and ", produced.size(), " unsent tensors");
  stats.total_ms = ms_since(t_start);
  return stats;
}

void run_pipeline_forward(int64_t microbatches, int64_t vpp, const Group& pp, const StageStep& step) {
  const int64_t P = pp.size(), S = P * vpp, r = pp.rank;
  for (int64_t m = 0; m < microbatches; ++m) {
    at::Tensor carry;  // only used when pp == 1 (every stage on this rank)
    for (int64_t s = 0; s < S; ++s) {
      if (s % P != r) continue;
      at::Tensor input = carry;
      if (s > 0 && P > 1) {
        input = step.boundary(m);
        auto h = batch_isend_irecv(pp, {P2POp::recv(input, (s - 1) % P)});
        wait_all(h);
      }
      auto out = step.forward(m, s / P, input);
      if (s < S - 1) {
        if (P > 1) {
          auto h = batch_isend_irecv(pp, {P2POp::send(out.to(at::kFloat).contiguous(), (s + 1) % P)});
          wait_all(h);
        } else {
          carry = out;
        }
      }
    }
  }
}

}  // namespace weft

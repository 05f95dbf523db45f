// Pipeline schedule builders (1F1B, interleaved 1F1B, GPipe) and the placement of their
// point-to-point transfers into per-step batches. No tensors: everything here is integers, so
// the orders are unit-tested directly and checked on a virtual clock by simulate.cpp.
#include "parallel/pipeline/schedule.h"

#include <algorithm>
#include <map>
#include <unordered_map>

#include "weft/error.h"
#include "parallel/pipeline/schedule_impl.h"

namespace weft {

int64_t virtual_stage(int64_t pp, int64_t rank, int64_t chunk) { return chunk * pp + rank; }

namespace detail {

ActionIo action_io(int64_t pp, int64_t vpp, int64_t rank, const PipelineAction& a) {
  ActionIo io;
  const int64_t num_stages = pp * vpp;
  io.stage = virtual_stage(pp, rank, a.chunk);
  // Activations flow s -> s+1, gradients s -> s-1.
  const int64_t step = a.kind == PipelineAction::kForward ? 1 : -1;
  io.payload = a.kind == PipelineAction::kForward ? Transfer::kActivation : Transfer::kGradient;
  io.src_stage = io.stage - step;
  io.dst_stage = io.stage + step;
  io.has_input = io.src_stage >= 0 && io.src_stage < num_stages;
  io.has_output = io.dst_stage >= 0 && io.dst_stage < num_stages;
  if (io.has_input && io.src_stage % pp != rank) io.src_rank = io.src_stage % pp;
  if (io.has_output && io.dst_stage % pp != rank) io.dst_rank = io.dst_stage % pp;
  return io;
}

int64_t transfer_key(int64_t pp, int64_t vpp, int64_t microbatches, Transfer::Payload payload,
                     int64_t microbatch, int64_t producer_stage) {
  return (static_cast<int64_t>(payload) * microbatches + microbatch) * (pp * vpp) + producer_stage;
}

int64_t op_key(const Schedule& s, int64_t rank, const Transfer& op) {
  int64_t stage = virtual_stage(s.pp, rank, op.chunk);
  if (op.type == Transfer::kRecv) stage += op.payload == Transfer::kActivation ? -1 : 1;
  return transfer_key(s.pp, s.vpp, s.microbatches, op.payload, op.microbatch, stage);
}

std::string action_label(const PipelineAction& a, int64_t vpp) {
  std::string label = str(a.kind == PipelineAction::kForward ? "F" : "B", a.microbatch);
  if (vpp > 1) label += str(".", a.chunk);
  return label;
}

std::string op_label(const Transfer& op, int64_t vpp) {
  std::string label = str(op.type == Transfer::kSend ? ">" : "<", op.peer, ":",
                          op.payload == Transfer::kActivation ? "a" : "g", op.microbatch);
  if (vpp > 1) label += str(".", op.chunk);
  return label;
}

std::string op_text(const Transfer& op) {
  return str(op.type == Transfer::kSend ? "send " : "recv ",
             op.payload == Transfer::kActivation ? "activation" : "gradient", " of micro-batch ",
             op.microbatch, " (chunk ", op.chunk, ") ", op.type == Transfer::kSend ? "to" : "from",
             " rank ", op.peer);
}

std::string schedule_id(const Schedule& s) {
  return str("'", s.name, "' (pp=", s.pp, ", vpp=", s.vpp, ", microbatches=", s.microbatches, ")");
}

void check_dims(const std::string& name, int64_t pp, int64_t vpp, int64_t microbatches) {
  WEFT_CHECK(pp >= 1, "pipeline schedule '", name, "': pp must be >= 1 (got pp=", pp, ")");
  WEFT_CHECK(vpp >= 1, "pipeline schedule '", name, "': vpp must be >= 1 (got vpp=", vpp, ")");
  WEFT_CHECK(microbatches >= 1, "pipeline schedule '", name,
             "': microbatches must be >= 1 (got microbatches=", microbatches, ")");
}

}  // namespace detail

namespace {

PipelineAction forward(int64_t microbatch, int64_t chunk) {
  return {PipelineAction::kForward, microbatch, chunk, {}};
}
PipelineAction backward(int64_t microbatch, int64_t chunk) {
  return {PipelineAction::kBackward, microbatch, chunk, {}};
}

// PipeDream-Flush (Megatron's non-interleaved 1F1B). Rank r of p runs
//   warmup:   W = min(p - r - 1, m) forwards F0 .. F(W-1)
//   steady:   m - W pairs F(W + j), B(j)
//   cooldown: W backwards B(m - W) .. B(m - 1)
// so it holds at most p - r micro-batches' activations (vs m for GPipe), and with uniform stage
// times the pipeline is idle (p - 1)(t_f + t_b) per rank: bubble (p - 1) / (m + p - 1).
std::vector<PipelineAction> order_1f1b(int64_t pp, int64_t rank, int64_t m) {
  const int64_t warmup = std::min(pp - rank - 1, m);
  std::vector<PipelineAction> order;
  for (int64_t i = 0; i < warmup; ++i) order.push_back(forward(i, 0));
  for (int64_t j = 0; j < m - warmup; ++j) {
    order.push_back(forward(warmup + j, 0));
    order.push_back(backward(j, 0));
  }
  for (int64_t i = m - warmup; i < m; ++i) order.push_back(backward(i, 0));
  return order;
}

// Megatron's interleaved 1F1B. Each rank walks the same sequence of m*v forward "iterations"
// k = 0 .. m*v - 1, in groups of p micro-batches per chunk:
//   chunk(k) = (k mod p*v) div p,    micro-batch(k) = (k div p*v) * p + (k mod p)
// e.g. p=2, v=2: (0,c0) (1,c0) (0,c1) (1,c1) (2,c0) (3,c0) (2,c1) ...; backward iteration k
// visits the same micro-batch with the chunks reversed: chunk = v - 1 - (k mod p*v) div p.
// This is why m must be a multiple of p: each group of p micro-batches fills all chunks.
// Rank r runs W warmup forwards, then pairs F(W + j), B(j), then the remaining backwards, with
//   W = min(2 (p - r - 1) + (v - 1) p, m v)      (all m v forwards first when m == p)
// (v - 1) p forwards fill the later chunks; 2 (p - r - 1) more cover the round trip to the last
// stage and back. Each chunk is 1/v of a rank's layers, so ramp-up and drain cost p - 1 chunk
// steps: with uniform times every rank idles (p - 1)(t_f + t_b)/v (t_f, t_b of a whole stage)
// and the bubble is (p - 1) / (v m + p - 1) -- exactly, in simulation -- at the cost of holding
// up to W + 1 chunk-activations (rank 0: v p + p - 1, i.e. p + (p - 1)/v stage-equivalents).
//
// Transfers follow Megatron's steady state too: no batch between F(W + j) and B(j); one batch
// after the pair exchanges both outputs and the next inputs with both neighbours. That keeps all
// ranks at step boundaries together (a blocking send never waits out a peer's backward).
// `comm_points` gets the boundaries where a batch may be posted (see schedule_from_orders).
std::vector<PipelineAction> order_interleaved(int64_t pp, int64_t vpp, int64_t rank, int64_t m,
                                              std::vector<bool>* comm_points) {
  const int64_t total = m * vpp;
  const int64_t group = pp * vpp;
  auto microbatch_of = [&](int64_t k) { return (k / group) * pp + k % pp; };
  auto chunk_of = [&](int64_t k, bool fwd) {
    const int64_t c = (k % group) / pp;
    return fwd ? c : vpp - 1 - c;
  };
  int64_t warmup = total;
  if (m != pp) warmup = std::min(2 * (pp - rank - 1) + (vpp - 1) * pp, total);
  std::vector<PipelineAction> order;
  auto add_forward = [&](int64_t k) {
    order.push_back(forward(microbatch_of(k), chunk_of(k, true)));
  };
  auto add_backward = [&](int64_t k) {
    order.push_back(backward(microbatch_of(k), chunk_of(k, false)));
  };
  for (int64_t k = 0; k < warmup; ++k) add_forward(k);
  comm_points->assign(2 * total + 1, true);
  for (int64_t j = 0; j < total - warmup; ++j) {
    add_forward(warmup + j);
    (*comm_points)[order.size()] = false;
    add_backward(j);
  }
  for (int64_t k = total - warmup; k < total; ++k) add_backward(k);
  return order;
}

// GPipe (looped breadth-first with chunks): every forward of chunk 0, then chunk 1, ...; then
// every backward, last chunk first. Same bubble as 1F1B when v == 1, but holds all m v
// chunk-activations at once.
std::vector<PipelineAction> order_gpipe(int64_t vpp, int64_t m) {
  std::vector<PipelineAction> order;
  for (int64_t c = 0; c < vpp; ++c)
    for (int64_t i = 0; i < m; ++i) order.push_back(forward(i, c));
  for (int64_t c = vpp - 1; c >= 0; --c)
    for (int64_t i = 0; i < m; ++i) order.push_back(backward(i, c));
  return order;
}

// ---- Transfer placement -------------------------------------------------------------------
//
// Runs the orders on a reference clock (t_f = 1, t_b = 2, free transfers) with blocking batches
// and decides each batch's contents when its rank reaches it. A rank posts a batch only at its
// comm points (by default before every action and after the last); each batch holds
//  - sends of every output produced since the previous batch, in production order;
//  - from every peer, recvs of everything that peer has already posted a send for (so the
//    sender is released now instead of when the tensor is needed);
//  - recvs of the inputs of the actions up to the next comm point, each preceded by any earlier
//    items of that peer's send sequence not yet received (both sides of a pair stay in order).
// Ranks reaching a comm point at the same time post their sends before anyone picks recvs.
// The result is a fixed structure: which op each batch waits for does not depend on timing, so
// a run that completes on the reference clock completes under any compute and transfer times.
class Placer {
 public:
  Placer(Schedule& s, std::vector<std::vector<bool>> comm_points)
      : s_(s),
        pp_(s.pp),
        comm_points_(std::move(comm_points)),
        seq_(pp_ * pp_),
        posted_(pp_ * pp_),
        received_(pp_ * pp_),
        next_(pp_, 0),
        arrive_(pp_, 0.0),
        state_(pp_, kArriving),
        unsent_(pp_),
        batch_(pp_),
        batch_index_(pp_),
        batch_time_(pp_, 0.0) {
    for (int64_t a = 0; a < pp_; ++a) {
      for (const auto& act : s_.ranks[a].actions) {
        auto io = detail::action_io(pp_, s_.vpp, a, act);
        if (io.dst_rank < 0) continue;
        auto& seq = seq_[a * pp_ + io.dst_rank];
        pos_[detail::transfer_key(pp_, s_.vpp, s_.microbatches, io.payload, act.microbatch,
                                  io.stage)] = static_cast<int64_t>(seq.size());
        seq.push_back({io.payload, act.microbatch, io.dst_stage / pp_});
      }
    }
  }

  void run() {
    for (;;) {
      double now = -1;
      for (int64_t r = 0; r < pp_; ++r)
        if (state_[r] == kArriving && (now < 0 || arrive_[r] < now)) now = arrive_[r];
      if (now < 0) break;
      std::vector<int64_t> group;
      for (int64_t r = 0; r < pp_; ++r) {
        if (state_[r] != kArriving || arrive_[r] != now) continue;
        if (next_[r] > 0) unsent_[r].push_back(next_[r] - 1);
        if (is_comm_point(r, next_[r])) {
          group.push_back(r);
        } else {
          start_action(r, now);  // no batch here: straight on to the next action
        }
      }
      for (int64_t r : group) post_sends(r, now);
      for (int64_t r : group) post_recvs(r, now);
      complete_batches();
    }
    for (int64_t r = 0; r < pp_; ++r)
      if (state_[r] != kDone) fail_deadlock();
  }

 private:
  enum State { kArriving, kWaiting, kDone };
  struct Item {
    Transfer::Payload payload;
    int64_t microbatch;
    int64_t consumer_chunk;
  };

  int64_t num_actions(int64_t r) const { return static_cast<int64_t>(s_.ranks[r].actions.size()); }

  // Boundary k is before action k; k == num_actions is after the last one (always a comm point).
  bool is_comm_point(int64_t r, int64_t k) const {
    if (comm_points_.empty() || k == 0 || k == num_actions(r)) return true;
    return comm_points_[r][k];
  }

  void start_action(int64_t r, double now) {
    const auto& act = s_.ranks[r].actions[next_[r]];
    arrive_[r] = now + (act.kind == PipelineAction::kForward ? 1.0 : 2.0);
    ++next_[r];
    state_[r] = kArriving;
  }

  void post_sends(int64_t r, double now) {
    batch_[r].clear();
    batch_index_[r].clear();
    batch_time_[r] = now;
    state_[r] = kWaiting;
    for (int64_t k : unsent_[r]) {
      const auto& prev = s_.ranks[r].actions[k];
      auto io = detail::action_io(pp_, s_.vpp, r, prev);
      if (io.dst_rank < 0) continue;
      auto& sent = posted_[r * pp_ + io.dst_rank];
      batch_[r].push_back({Transfer::kSend, io.payload, io.dst_rank, prev.microbatch, prev.chunk});
      batch_index_[r].push_back(static_cast<int64_t>(sent.size()));
      sent.push_back(now);
    }
    unsent_[r].clear();
  }

  void post_recvs(int64_t r, double now) {
    // Inputs needed before the next comm point.
    std::vector<int64_t> target(pp_, 0);
    for (int64_t a = 0; a < pp_; ++a) target[a] = static_cast<int64_t>(posted_[a * pp_ + r].size());
    for (int64_t k = next_[r]; k < num_actions(r); ++k) {
      if (k > next_[r] && is_comm_point(r, k)) break;
      const auto& act = s_.ranks[r].actions[k];
      auto io = detail::action_io(pp_, s_.vpp, r, act);
      if (io.src_rank < 0) continue;
      const int64_t key = detail::transfer_key(pp_, s_.vpp, s_.microbatches, io.payload,
                                               act.microbatch, io.src_stage);
      target[io.src_rank] = std::max(target[io.src_rank], pos_.at(key) + 1);
    }
    for (int64_t a = 0; a < pp_; ++a) {
      auto& got = received_[a * pp_ + r];
      for (int64_t i = static_cast<int64_t>(got.size()); i < target[a]; ++i) {
        const Item& item = seq_[a * pp_ + r][i];
        batch_[r].push_back({Transfer::kRecv, item.payload, a, item.microbatch, item.consumer_chunk});
        batch_index_[r].push_back(i);
        got.push_back(now);
      }
    }
  }

  // A waiting batch completes once every op's partner is posted; its rank then computes.
  void complete_batches() {
    for (int64_t r = 0; r < pp_; ++r) {
      if (state_[r] != kWaiting) continue;
      double done = batch_time_[r];
      if (!partners_posted(r, &done)) continue;
      if (next_[r] < num_actions(r)) {
        s_.ranks[r].actions[next_[r]].comm_before = batch_[r];
        start_action(r, done);
      } else {
        s_.ranks[r].comm_after = batch_[r];
        state_[r] = kDone;
      }
    }
  }

  bool partners_posted(int64_t r, double* done) const {
    for (size_t i = 0; i < batch_[r].size(); ++i) {
      const auto& op = batch_[r][i];
      const bool send = op.type == Transfer::kSend;
      const auto& theirs = send ? received_[r * pp_ + op.peer] : posted_[op.peer * pp_ + r];
      const int64_t index = batch_index_[r][i];
      if (index >= static_cast<int64_t>(theirs.size())) return false;
      *done = std::max(*done, theirs[index]);
    }
    return true;
  }

  [[noreturn]] void fail_deadlock() const {
    std::string blocked;
    for (int64_t r = 0; r < pp_; ++r) {
      if (state_[r] == kDone) continue;
      if (!blocked.empty()) blocked += "; ";
      blocked += str("rank ", r, " before ");
      blocked += next_[r] < num_actions(r)
                     ? str(detail::action_label(s_.ranks[r].actions[next_[r]], s_.vpp), " (action ",
                           next_[r], ")")
                     : std::string("its final batch");
    }
    fail(str("pipeline schedule ", detail::schedule_id(s_), " deadlocks: no rank can progress (",
             blocked, "); each waits for a tensor its peer only produces later"));
  }

  Schedule& s_;
  const int64_t pp_;
  const std::vector<std::vector<bool>> comm_points_;  // [rank][boundary]; empty: everywhere
  std::vector<std::vector<Item>> seq_;                // [a * pp + b]: what a sends b, in a's order
  std::unordered_map<int64_t, int64_t> pos_;   // transfer key -> index in its pair's sequence
  std::vector<std::vector<double>> posted_;    // [a * pp + b]: post times of a's sends to b
  std::vector<std::vector<double>> received_;  // [a * pp + b]: post times of b's recvs from a
  std::vector<int64_t> next_;   // per rank: the action after the boundary it is at / heads to
  std::vector<double> arrive_;  // per rank: when it reaches that boundary
  std::vector<State> state_;
  std::vector<std::vector<int64_t>> unsent_;       // per rank: actions whose output is not sent yet
  std::vector<std::vector<Transfer>> batch_;          // per rank: the batch being formed / waited on
  std::vector<std::vector<int64_t>> batch_index_;  // per op of batch_: index in its pair's sequence
  std::vector<double> batch_time_;
};

}  // namespace

std::string default_schedule_name(int64_t vpp) { return vpp > 1 ? "interleaved_1f1b" : "1f1b"; }

std::vector<std::string> schedule_names() { return {"1f1b", "interleaved_1f1b", "gpipe"}; }

Schedule build_schedule(const std::string& name, int64_t pp, int64_t vpp, int64_t microbatches) {
  detail::check_dims(name, pp, vpp, microbatches);
  std::vector<std::vector<PipelineAction>> orders;
  std::vector<std::vector<bool>> comm_points;
  for (int64_t r = 0; r < pp; ++r) {
    if (name == "1f1b") {
      WEFT_CHECK(vpp == 1, "pipeline schedule '1f1b' needs vpp == 1 (got vpp=", vpp,
                 "); use 'interleaved_1f1b' for virtual stages");
      orders.push_back(order_1f1b(pp, r, microbatches));
    } else if (name == "interleaved_1f1b") {
      WEFT_CHECK(microbatches % pp == 0,
                 "pipeline schedule 'interleaved_1f1b' needs the number of micro-batches to be a "
                 "multiple of pp (got microbatches=",
                 microbatches, ", pp=", pp,
                 "); change train.global_batch_size / train.micro_batch_size or use '1f1b'");
      comm_points.emplace_back();
      orders.push_back(order_interleaved(pp, vpp, r, microbatches, &comm_points.back()));
    } else if (name == "gpipe") {
      orders.push_back(order_gpipe(vpp, microbatches));
    } else {
      std::string valid;
      for (const auto& n : schedule_names()) valid += (valid.empty() ? "" : ", ") + n;
      fail(str("unknown pipeline schedule '", name, "' (pp=", pp, ", vpp=", vpp,
               ", microbatches=", microbatches, "); valid names: ", valid));
    }
  }
  return schedule_from_orders(name, pp, vpp, microbatches, std::move(orders), comm_points);
}

Schedule schedule_from_orders(const std::string& name, int64_t pp, int64_t vpp,
                              int64_t microbatches, std::vector<std::vector<PipelineAction>> orders,
                              const std::vector<std::vector<bool>>& comm_points) {
  detail::check_dims(name, pp, vpp, microbatches);
  WEFT_CHECK(static_cast<int64_t>(orders.size()) == pp, "pipeline schedule '", name,
             "': got orders for ", orders.size(), " ranks, expected pp=", pp);
  Schedule s{name, pp, vpp, microbatches, {}};
  for (auto& order : orders) {
    for (auto& a : order) a.comm_before.clear();
    s.ranks.push_back({std::move(order), {}});
  }
  validate(s);
  if (!comm_points.empty()) {
    WEFT_CHECK(static_cast<int64_t>(comm_points.size()) == pp, "pipeline schedule '", name,
               "': got comm points for ", comm_points.size(), " ranks, expected pp=", pp);
    for (int64_t r = 0; r < pp; ++r) {
      WEFT_CHECK(comm_points[r].size() == s.ranks[r].actions.size() + 1, "pipeline schedule '",
                 name, "': rank ", r, " has ", comm_points[r].size(), " comm points for ",
                 s.ranks[r].actions.size(), " actions; expected one per action plus one");
    }
  }
  Placer(s, comm_points).run();
  return s;
}

void validate(const Schedule& s) {
  detail::check_dims(s.name, s.pp, s.vpp, s.microbatches);
  WEFT_CHECK(static_cast<int64_t>(s.ranks.size()) == s.pp, "pipeline schedule ",
             detail::schedule_id(s), " has ", s.ranks.size(), " rank rows, expected ", s.pp);
  const int64_t cells = s.microbatches * s.vpp;
  for (int64_t r = 0; r < s.pp; ++r) {
    const auto& actions = s.ranks[r].actions;
    std::vector<int> forwards(cells, 0), backwards(cells, 0);
    for (size_t k = 0; k < actions.size(); ++k) {
      const auto& a = actions[k];
      const std::string where = str("pipeline schedule ", detail::schedule_id(s), ": rank ", r,
                                    " action ", k, " (", detail::action_label(a, s.vpp), ")");
      WEFT_CHECK(a.microbatch >= 0 && a.microbatch < s.microbatches, where, " names micro-batch ",
                 a.microbatch, " outside [0, ", s.microbatches, ")");
      WEFT_CHECK(a.chunk >= 0 && a.chunk < s.vpp, where, " names chunk ", a.chunk, " outside [0, ",
                 s.vpp, ")");
      const int64_t cell = a.microbatch * s.vpp + a.chunk;
      if (a.kind == PipelineAction::kForward) {
        WEFT_CHECK(++forwards[cell] == 1, where, " repeats a forward");
      } else {
        WEFT_CHECK(forwards[cell] == 1, where, " runs before its forward");
        WEFT_CHECK(++backwards[cell] == 1, where, " repeats a backward");
      }
    }
    for (int64_t cell = 0; cell < cells; ++cell) {
      WEFT_CHECK(forwards[cell] == 1 && backwards[cell] == 1, "pipeline schedule ",
                 detail::schedule_id(s), ": rank ", r, " never runs the ",
                 forwards[cell] ? "backward" : "forward", " of micro-batch ", cell / s.vpp,
                 " chunk ", cell % s.vpp);
    }
  }
}

std::vector<int64_t> peak_in_flight(const Schedule& s) {
  std::vector<int64_t> peaks;
  for (const auto& rank : s.ranks) {
    int64_t live = 0, peak = 0;
    for (const auto& a : rank.actions) {
      live += a.kind == PipelineAction::kForward ? 1 : -1;
      peak = std::max(peak, live);
    }
    peaks.push_back(peak);
  }
  return peaks;
}

double ideal_bubble_fraction(int64_t pp, int64_t vpp, int64_t microbatches) {
  return static_cast<double>(pp - 1) / static_cast<double>(vpp * microbatches + pp - 1);
}

std::string describe(const Schedule& s, bool show_comm) {
  size_t width = 0;
  for (const auto& rank : s.ranks)
    for (const auto& a : rank.actions)
      width = std::max(width, detail::action_label(a, s.vpp).size());
  auto batch_text = [&](const std::vector<Transfer>& ops) {
    std::string text = "[";
    for (size_t i = 0; i < ops.size(); ++i)
      text += (i ? " " : "") + detail::op_label(ops[i], s.vpp);
    return text + "] ";
  };
  std::string out =
      str(s.name, " pp=", s.pp, " vpp=", s.vpp, " microbatches=", s.microbatches, "\n");
  for (int64_t r = 0; r < s.pp; ++r) {
    std::string row = str("rank ", r, ":");
    for (const auto& a : s.ranks[r].actions) {
      row += " ";
      if (show_comm && !a.comm_before.empty()) row += batch_text(a.comm_before);
      std::string label = detail::action_label(a, s.vpp);
      if (!show_comm) label.resize(width, ' ');
      row += label;
    }
    if (show_comm && !s.ranks[r].comm_after.empty()) row += " " + batch_text(s.ranks[r].comm_after);
    while (!row.empty() && row.back() == ' ') row.pop_back();
    out += row + "\n";
  }
  return out;
}

}  // namespace weft

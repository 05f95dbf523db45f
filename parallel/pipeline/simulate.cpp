// Runs a pipeline schedule on a virtual clock following the executor protocol in schedule.h:
// blocking batches, point-to-point ops matched per rank pair in posting order. Proves a schedule
// deadlock-free and dependency-correct without tensors, and measures its bubble.
#include <algorithm>
#include <deque>
#include <set>

#include "weft/error.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/schedule_impl.h"

namespace weft {
namespace {

// One posted op waiting in its pair's queue for the other side.
struct Pending {
  int64_t rank;   // who posted it
  int64_t index;  // position in that rank's current batch
  int64_t key;
  double time;
};

class Simulator {
 public:
  Simulator(const Schedule& s, double t_f, double t_b, double t_p2p)
      : s_(s),
        pp_(s.pp),
        t_f_(t_f),
        t_b_(t_b),
        t_p2p_(t_p2p),
        sends_(pp_ * pp_),
        recvs_(pp_ * pp_),
        ranks_(pp_) {
    for (int64_t r = 0; r < pp_; ++r) {
      ranks_[r].start.assign(s.ranks[r].actions.size(), 0.0);
      ranks_[r].end.assign(s.ranks[r].actions.size(), 0.0);
    }
  }

  SimResult run() {
    for (bool progress = true; progress;) {
      progress = false;
      for (int64_t r = 0; r < pp_; ++r) progress |= step(r);
    }
    for (int64_t r = 0; r < pp_; ++r)
      if (ranks_[r].state != kDone) fail_deadlock();
    SimResult out;
    for (const auto& rank : ranks_) out.total_time = std::max(out.total_time, rank.clock);
    double idle = 0;
    for (auto& rank : ranks_) {
      out.busy.push_back(rank.busy);
      out.idle.push_back(out.total_time - rank.busy);
      idle += out.idle.back();
      out.start.push_back(std::move(rank.start));
      out.end.push_back(std::move(rank.end));
    }
    out.bubble_fraction = out.total_time > 0 ? idle / (pp_ * out.total_time) : 0.0;
    return out;
  }

 private:
  enum State { kPost, kWait, kDone };
  struct Rank {
    State state = kPost;
    int64_t next = 0;  // the action the current batch precedes (== size: the final batch)
    double clock = 0;  // when the current batch was posted / the rank finished
    double done = 0;   // max completion over the current batch's matched ops
    int64_t unmatched = 0;
    std::vector<bool> matched;              // per op of the current batch
    std::set<int64_t> received;             // transfer keys of received tensors
    std::set<std::pair<int, int64_t>> ran;  // (kind, microbatch * vpp + chunk) already computed
    double busy = 0;
    std::vector<double> start, end;
  };

  const std::vector<Transfer>& batch(int64_t r) const {
    const auto& rs = s_.ranks[r];
    const size_t k = static_cast<size_t>(ranks_[r].next);
    return k < rs.actions.size() ? rs.actions[k].comm_before : rs.comm_after;
  }

  std::string position(int64_t r) const {
    const auto& rs = s_.ranks[r];
    const size_t k = static_cast<size_t>(ranks_[r].next);
    if (k >= rs.actions.size()) return str("rank ", r, " in its final batch");
    return str("rank ", r, " before ", detail::action_label(rs.actions[k], s_.vpp), " (action ", k,
               ")");
  }

  // Advances rank r as far as it can go now; returns whether anything happened.
  bool step(int64_t r) {
    Rank& me = ranks_[r];
    if (me.state == kPost) {
      post(r);
      return true;
    }
    if (me.state != kWait || me.unmatched > 0) return false;
    const double ready = std::max(me.clock, me.done);
    const auto& actions = s_.ranks[r].actions;
    if (me.next == static_cast<int64_t>(actions.size())) {
      me.clock = ready;
      me.state = kDone;
      return true;
    }
    const auto& a = actions[me.next];
    check_inputs(r, a);
    const double duration = a.kind == PipelineAction::kForward ? t_f_ : t_b_;
    me.start[me.next] = ready;
    me.end[me.next] = ready + duration;
    me.clock = ready + duration;
    me.busy += duration;
    me.ran.insert({a.kind, a.microbatch * s_.vpp + a.chunk});
    ++me.next;
    me.state = kPost;
    return true;
  }

  void post(int64_t r) {
    Rank& me = ranks_[r];
    const auto& ops = batch(r);
    me.state = kWait;
    me.done = me.clock;
    me.unmatched = static_cast<int64_t>(ops.size());
    me.matched.assign(ops.size(), false);
    for (size_t i = 0; i < ops.size(); ++i) {
      const auto& op = ops[i];
      WEFT_CHECK(op.peer >= 0 && op.peer < pp_ && op.peer != r, "pipeline schedule ",
                 detail::schedule_id(s_), ": ", position(r), " has an op with peer ", op.peer);
      const int64_t key = detail::op_key(s_, r, op);
      check_peer(r, op);
      if (op.type == Transfer::kSend) {
        const int kind =
            op.payload == Transfer::kActivation ? PipelineAction::kForward : PipelineAction::kBackward;
        WEFT_CHECK(me.ran.count({kind, op.microbatch * s_.vpp + op.chunk}), "pipeline schedule ",
                   detail::schedule_id(s_), ": ", position(r), " would ", detail::op_text(op),
                   " before computing it");
        sends_[r * pp_ + op.peer].push_back({r, static_cast<int64_t>(i), key, me.clock});
        match(r, op.peer);
      } else {
        recvs_[op.peer * pp_ + r].push_back({r, static_cast<int64_t>(i), key, me.clock});
        match(op.peer, r);
      }
    }
  }

  // The peer named by an op must own the stage on the other side of the transfer.
  void check_peer(int64_t r, const Transfer& op) const {
    int64_t stage = virtual_stage(pp_, r, op.chunk);
    const bool towards_next = (op.type == Transfer::kSend) == (op.payload == Transfer::kActivation);
    stage += towards_next ? 1 : -1;
    WEFT_CHECK(stage >= 0 && stage < pp_ * s_.vpp && stage % pp_ == op.peer, "pipeline schedule ",
               detail::schedule_id(s_), ": ", position(r), " would ", detail::op_text(op),
               ", but that tensor's other end is ",
               stage >= 0 && stage < pp_ * s_.vpp ? str("rank ", stage % pp_) : str("no stage"));
  }

  // Pairs the heads of a -> b's send and recv queues, in posting order.
  void match(int64_t a, int64_t b) {
    auto& sends = sends_[a * pp_ + b];
    auto& recvs = recvs_[a * pp_ + b];
    while (!sends.empty() && !recvs.empty()) {
      const Pending snd = sends.front(), rcv = recvs.front();
      sends.pop_front();
      recvs.pop_front();
      const auto& sop = batch(a)[snd.index];
      const auto& rop = batch(b)[rcv.index];
      WEFT_CHECK(snd.key == rcv.key, "pipeline schedule ", detail::schedule_id(s_),
                 ": transfers from rank ", a, " to rank ", b, " are out of order: ", position(a),
                 " would ", detail::op_text(sop), " while ", position(b), " expects to ",
                 detail::op_text(rop));
      const double t = std::max(snd.time, rcv.time) + t_p2p_;
      for (const Pending* p : {&snd, &rcv}) {
        Rank& side = ranks_[p->rank];
        side.matched[p->index] = true;
        --side.unmatched;
        side.done = std::max(side.done, t);
      }
      ranks_[b].received.insert(rcv.key);
    }
  }

  void check_inputs(int64_t r, const PipelineAction& a) const {
    const Rank& me = ranks_[r];
    const auto io = detail::action_io(pp_, s_.vpp, r, a);
    const std::string what =
        str("pipeline schedule ", detail::schedule_id(s_), ": rank ", r, " runs ",
            detail::action_label(a, s_.vpp), " (action ", me.next, ") ");
    if (a.kind == PipelineAction::kBackward) {
      WEFT_CHECK(me.ran.count({PipelineAction::kForward, a.microbatch * s_.vpp + a.chunk}), what,
                 "before its forward");
    }
    if (!io.has_input) return;
    if (io.src_rank < 0) {  // neighbour stage on this rank (pp == 1): handed over in memory
      WEFT_CHECK(me.ran.count({a.kind, a.microbatch * s_.vpp + io.src_stage / pp_}), what,
                 "before stage ", io.src_stage, " on the same rank produced its input");
      return;
    }
    const int64_t key =
        detail::transfer_key(pp_, s_.vpp, s_.microbatches, io.payload, a.microbatch, io.src_stage);
    WEFT_CHECK(me.received.count(key), what, "before receiving its ",
               io.payload == Transfer::kActivation ? "activation" : "gradient", " from stage ",
               io.src_stage, " on rank ", io.src_rank);
  }

  [[noreturn]] void fail_deadlock() const {
    std::string blocked;
    for (int64_t r = 0; r < pp_; ++r) {
      const Rank& me = ranks_[r];
      if (me.state == kDone) continue;
      const auto& ops = batch(r);
      size_t i = 0;
      while (i < ops.size() && me.matched[i]) ++i;
      if (!blocked.empty()) blocked += "; ";
      blocked += position(r);
      if (i < ops.size()) blocked += str(" waits to ", detail::op_text(ops[i]));
    }
    fail(str("pipeline schedule ", detail::schedule_id(s_), " deadlocks: ", blocked));
  }

  const Schedule& s_;
  const int64_t pp_;
  const double t_f_, t_b_, t_p2p_;
  std::vector<std::deque<Pending>> sends_;  // [a * pp + b]: posted, unmatched sends a -> b
  std::vector<std::deque<Pending>> recvs_;  // [a * pp + b]: posted, unmatched recvs at b from a
  std::vector<Rank> ranks_;
};

}  // namespace

SimResult simulate(const Schedule& schedule, double t_forward, double t_backward, double t_p2p) {
  validate(schedule);
  WEFT_CHECK(
      t_forward > 0 && t_backward > 0 && t_p2p >= 0, "simulate ", detail::schedule_id(schedule),
      ": t_forward and t_backward must be positive, t_p2p non-negative (got t_forward=", t_forward,
      ", t_backward=", t_backward, ", t_p2p=", t_p2p, ")");
  return Simulator(schedule, t_forward, t_backward, t_p2p).run();
}

namespace {
std::string pad(std::string text, size_t width) {
  text.resize(width, ' ');
  return text;
}
}  // namespace

std::string describe_timeline(const Schedule& s, const SimResult& sim, double unit) {
  WEFT_CHECK(unit > 0, "describe_timeline: unit must be positive (got ", unit, ")");
  WEFT_CHECK(static_cast<int64_t>(sim.start.size()) == s.pp && sim.end.size() == sim.start.size(),
             "describe_timeline: the simulation has ", sim.start.size(), " ranks, the schedule ",
             detail::schedule_id(s), " has ", s.pp);
  size_t width = 0;
  for (const auto& rank : s.ranks)
    for (const auto& a : rank.actions)
      width = std::max(width, detail::action_label(a, s.vpp).size());
  width += 1;
  const auto columns = static_cast<size_t>(sim.total_time / unit + 0.5);
  std::string out;
  for (int64_t r = 0; r < s.pp; ++r) {
    std::string row(columns * width, ' ');
    for (size_t c = 0; c < columns; ++c) row[c * width] = '.';
    const auto& actions = s.ranks[r].actions;
    for (size_t k = 0; k < actions.size(); ++k) {
      const auto first = static_cast<size_t>(sim.start[r][k] / unit + 0.5);
      const auto last = std::max(first + 1, static_cast<size_t>(sim.end[r][k] / unit + 0.5));
      for (size_t c = first; c < last && c < columns; ++c)
        row.replace(c * width, width, std::string(width, ' '));
      if (first < columns)
        row.replace(first * width, width - 1,
                    pad(detail::action_label(actions[k], s.vpp), width - 1));
    }
    while (!row.empty() && row.back() == ' ') row.pop_back();
    out += str("rank ", r, ": ", row, "\n");
  }
  return out;
}

}  // namespace weft

// Pipeline schedules as data: which micro-batch each pipeline rank runs forward or backward, in
// what order, and which point-to-point transfers it posts between its steps. Built here, run by
// the pipeline executor, and checked without tensors by simulate() on a virtual clock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace weft {

// Terms. pp pipeline ranks, each holding vpp model chunks; chunk c on rank r is virtual stage
//   s = c * pp + r,   s in [0, S),   S = pp * vpp
// (Megatron's layout: with pp=4, vpp=2 rank 0 holds stages 0 and 4). A forward of stage s for
// micro-batch i needs stage s-1's output activation for i; a backward of stage s needs stage
// s+1's input gradient for i and its own forward of i. Stage 0 reads data, stage S-1 computes
// the loss (so its backward needs nothing from another stage). Stage s+1 lives on rank
// (r + 1) % pp, so with vpp > 1 activations wrap from rank pp-1 back to rank 0, and gradients
// from rank 0 to rank pp-1.
int64_t virtual_stage(int64_t pp, int64_t rank, int64_t chunk);

// One point-to-point transfer as seen from one side. The tensor is named by the local action
// it belongs to: for a send, the output of this rank's action (kind, microbatch, chunk) that
// produced it (kActivation: a forward's output, kGradient: a backward's input gradient); for a
// recv, the input of this rank's action that will consume it (kActivation: input of the forward
// of (microbatch, chunk), kGradient: output gradient for the backward of (microbatch, chunk)).
struct Transfer {
  enum Type { kSend, kRecv };
  enum Payload { kActivation, kGradient };
  Type type = kSend;
  Payload payload = kActivation;
  int64_t peer = 0;  // pipeline rank on the other side; never this rank
  int64_t microbatch = 0;
  int64_t chunk = 0;  // local chunk on THIS rank (0..vpp-1)
};

// One compute step, preceded by the batch of transfers to complete before it.
struct PipelineAction {
  enum Kind { kForward, kBackward };
  Kind kind = kForward;
  int64_t microbatch = 0;
  int64_t chunk = 0;  // model chunk on this rank, 0..vpp-1 (virtual stage chunk * pp + rank)
  // Posted together as ONE batch and all waited for before this action computes. Holds the
  // sends of outputs produced since the previous batch, the recv of this action's input if it
  // is not here yet, and recvs of inputs of later actions whose senders are already waiting (so
  // they are released early). Often empty. See the executor protocol below.
  std::vector<Transfer> comm_before;
};

struct RankSchedule {
  std::vector<PipelineAction> actions;  // executed strictly in this order
  std::vector<Transfer> comm_after;        // one last batch after the last action (its send)
};

// A whole pipeline's schedule: one RankSchedule per pipeline rank. Plain data; copyable.
struct Schedule {
  std::string name;
  int64_t pp = 1;
  int64_t vpp = 1;
  int64_t microbatches = 1;
  std::vector<RankSchedule> ranks;  // indexed by pipeline rank, size pp
};

// ---- Executor protocol ------------------------------------------------------------------------
//
// Pipeline rank r runs schedule.ranks[r] like this (c10d P2P: isend/irecv batched through
// ProcessGroup::startCoalescing/endCoalescing, or batch_isend_irecv; one batch = one NCCL group):
//
//   for each action A in ranks[r].actions:
//     post_batch(A.comm_before)          // all ops of the batch posted in list order, then
//                                        // wait() on every one of them (sends included)
//     if A is a forward of stage s:      // input: data (s == 0), the received activation
//                                        // (s > 0), or, when pp == 1, chunk-1's output in memory
//       out = forward(A.microbatch, A.chunk, input); keep input/output for the backward
//       (stage S-1: out is the loss)
//     if A is a backward:                // output grad: received (s < S-1) or from the loss
//       in_grad = backward(A.microbatch, A.chunk, output_grad); free the saved tensors
//   post_batch(ranks[r].comm_after)
//
// post_batch(ops): an empty list posts nothing. Otherwise, for op in ops, in list order:
//     kSend -> isend(the tensor this rank produced for (payload, microbatch, chunk), op.peer)
//     kRecv -> irecv(a new buffer shaped like the stage boundary tensor, e.g. (B, T, C), op.peer)
//   and only then wait for all of them. Never wait on one op before posting the rest of its
//   batch: [>1:a3 <1:g0] on one rank meets [>0:g0 <0:a3] on the other, and two blocking sends
//   would hang. Received tensors go into a table keyed by (payload, microbatch, chunk); a recv
//   may complete several actions before its consumer, which looks it up there.
//
// Guarantees of build_schedule / schedule_from_orders (checked by simulate() and the unit tests),
// so the executor needs no communication logic of its own:
//  - Every cross-rank tensor has exactly one send, in the first batch after its producer (the
//    interleaved steady state posts none between a paired F and B, so F's output goes after B),
//    and exactly one recv, at the latest in the batch right before its consumer.
//  - Between any two ranks a -> b, sends and recvs appear in the same order on both sides (NCCL
//    and Gloo match point-to-point messages between a pair in posting order; no tags needed).
//    With pp == 2 activations and gradients share the pair, so this matters.
//  - Run as blocking rendezvous (a send completes only once the peer has posted the recv, as
//    with large NCCL messages), the batches cannot deadlock, whatever the compute and transfer
//    times: ops match by order, never by clock, so one simulated run proves it for every timing.
//  - Within a batch, sends come first, in production order, then recvs grouped by peer in
//    matching order.
// Timing: where a recv goes is decided on a reference run with t_backward = 2 t_forward: a
// batch also picks up every tensor whose sender is already waiting. This reproduces Megatron's
// pairings (send_forward_recv_backward / send_backward_recv_forward in 1F1B, one exchange with
// both neighbours per F/B pair in interleaved) and, on uniform times, the ideal bubble. Other
// timings stay correct and deadlock-free; only idle time may differ.

// The factory. Names:
//  "1f1b"             PipeDream-Flush / Megatron non-interleaved; needs vpp == 1.
//  "interleaved_1f1b" Megatron's interleaved 1F1B with vpp chunks per rank; needs
//                     microbatches % pp == 0.
//  "gpipe"            all forwards, then all backwards (chunk by chunk when vpp > 1); a reference.
// Throws weft::Error naming the values for pp < 1, vpp < 1, microbatches < 1, an unknown name,
// or a schedule's own requirement.
Schedule build_schedule(const std::string& name, int64_t pp, int64_t vpp, int64_t microbatches);

// "interleaved_1f1b" when vpp > 1, else "1f1b" (what `parallel.vpp` selects by default).
std::string default_schedule_name(int64_t vpp);

// All names build_schedule accepts, for messages and --help.
std::vector<std::string> schedule_names();

// Builds a schedule from per-rank compute orders (comm_before is ignored): checks that each rank
// runs every (microbatch, chunk) forward once and backward once after it, then places the
// transfers as described above. comm_points[r][k] says whether rank r may post a batch before
// its action k (k == actions: after the last, always allowed, as is k == 0); outputs produced
// where no batch is allowed go out with the next batch. Empty: a batch may go anywhere. Throws
// weft::Error if the orders deadlock, naming the blocked ranks and their next actions.
// build_schedule() uses it; custom orders can too.
Schedule schedule_from_orders(const std::string& name, int64_t pp, int64_t vpp,
                              int64_t microbatches, std::vector<std::vector<PipelineAction>> orders,
                              const std::vector<std::vector<bool>>& comm_points = {});

// Checks the compute orders only (coverage, backward after forward, chunk ranges). Throws
// weft::Error naming rank, action and the problem.
void validate(const Schedule& schedule);

// Per rank: the largest number of (microbatch, chunk) forwards done whose backward has not run
// yet, at any point of the order. This is how many micro-batches' activations a rank holds
// (each 1/vpp of a rank's layers when vpp > 1), i.e. the schedule's memory cost.
std::vector<int64_t> peak_in_flight(const Schedule& schedule);

// (pp - 1) / (vpp * m + pp - 1): the idle fraction of an ideal 1F1B-family pipeline, where a
// rank's vpp chunks each take 1/vpp of its time (Megatron-LM paper, Narayanan et al. 2021).
double ideal_bubble_fraction(int64_t pp, int64_t vpp, int64_t microbatches);

// ---- Simulator --------------------------------------------------------------------------------

struct SimResult {
  double total_time = 0;                   // makespan: every rank's last batch completed
  std::vector<double> busy;                // per rank: time spent computing
  std::vector<double> idle;                // per rank: total_time - busy (waiting and transfers)
  double bubble_fraction = 0;              // sum(idle) / (pp * total_time)
  std::vector<std::vector<double>> start;  // [rank][action index]: when the action began
  std::vector<std::vector<double>> end;    // [rank][action index]: when it finished
};

// Runs the schedule on a virtual clock exactly as the executor protocol above describes: each
// rank runs its actions in order; a batch completes when every op in it is matched by the peer's
// op (pairs matched in posting order) at max(both posting times) + t_p2p; each forward takes
// t_forward and each backward t_backward (per chunk). Checks every data dependency (a forward
// of stage s after stage s-1's forward of that micro-batch reached it, a backward after stage
// s+1's backward and its own forward) and that matched ops carry the same tensor. Whether it
// completes does not depend on the times (see the protocol). Throws weft::Error on a deadlock
// (naming each blocked rank, its next action and the op it waits on), a mismatched pair, a send
// of something not computed yet or to the wrong rank, or a violated dependency.
SimResult simulate(const Schedule& schedule, double t_forward, double t_backward, double t_p2p = 0);

// The compute order as text, one row per rank: "rank 0: F0 F1 B0 ..." with the chunk after a dot
// when vpp > 1 ("F3.1"). With show_comm, each batch is shown in brackets before its action:
// ">1:a3" sends micro-batch 3's activation to rank 1, "<2:g0" receives micro-batch 0's gradient
// from rank 2 (".c" adds the local chunk when vpp > 1).
std::string describe(const Schedule& schedule, bool show_comm = false);

// A time chart of a simulation: one row per rank, one column per `unit` of time, each action
// drawn as its label padded over its duration and idle time as '.'. Meant for t_forward = unit.
std::string describe_timeline(const Schedule& schedule, const SimResult& sim, double unit);

}  // namespace weft

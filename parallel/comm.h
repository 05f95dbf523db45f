// How ranks talk: the torchrun environment contract (WorkerEnv), the one ParallelContext that
// owns the rendezvous store and this rank's c10d process groups, and thin collective helpers
// that always take an explicit Group.
//
// Backends. CPU tensors use c10d's ProcessGroupGloo, CUDA tensors ProcessGroupNCCL (created in
// parallel/cuda/, compiled only with WEFT_CUDA). Findings for the torch 2.15.0 wheel, checked by
// tests/tools/comm_tool.cpp and tests/integration/test_comm.py:
//  * The wheel ships c10d's ProcessGroupGloo.hpp but not the gloo headers it includes. Debian's
//    libgloo-dev (0.0~git20220518) supplies them and they are compatible *for the way Weft uses
//    them*: the gloo code that runs is LibTorch's newer copy inside libtorch_cpu.so (Weft never
//    links Debian's libgloo; tests/integration/test_gloo_abi.py checks with ldd and nm). The two
//    gloo versions differ (e.g. LibTorch's gloo::rendezvous::Store has the v2 multi_get/add
//    virtuals, Debian's does not), so Weft must never instantiate a gloo type or a class with
//    inline gloo virtuals (ProcessGroupGloo::GlooStore), nor read gloo struct fields. It only
//    calls LibTorch's out-of-line functions — ProcessGroupGloo::Options::Options,
//    createDeviceForHostname / createDeviceForInterface / createDefaultDevice, the
//    ProcessGroupGloo constructor — and holds gloo::transport::Device by shared_ptr (created
//    and destroyed inside LibTorch). comm.cpp is the only file that includes
//    ProcessGroupGloo.hpp.
//  * ProcessGroupGloo on CPU supports: allreduce (SUM, AVG, PRODUCT, MIN, MAX; fp32, fp16,
//    bf16, int64), allreduce_coalesced, allgather and all_gather_single (_allgather_base),
//    reduce_scatter and reduce_scatter_single (_reduce_scatter_base, SUM and MAX), broadcast,
//    send/recv with tags, barrier, alltoall_base. So reduce_scatter needs no all_reduce
//    fallback on Gloo.
//  * Gloo enforces the group timeout itself: a collective or recv whose peer is hung fails
//    after parallel.timeout_sec with "Timed out waiting Nms for recv operation", and one whose
//    peer died fails at once with "Connection closed by peer". After either, the group is
//    unusable ("Application timeout caused pair closure"): the error is fatal for the worker,
//    and recovery is a restart (the launcher or torchrun restarts the job).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/intrusive_ptr.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/progress.h"
#include "parallel/topology.h"

namespace c10d {
class ProcessGroup;
class Store;
class Work;
}  // namespace c10d

namespace weft {

// This worker's place in the job, read from the torchrun/TorchElastic environment contract.
struct WorkerEnv {
  int64_t rank = 0;                       // RANK
  int64_t world_size = 1;                 // WORLD_SIZE
  int64_t local_rank = 0;                 // LOCAL_RANK (defaults to RANK)
  int64_t local_world_size = 1;           // LOCAL_WORLD_SIZE (defaults to WORLD_SIZE)
  std::string master_addr = "127.0.0.1";  // MASTER_ADDR: host of the TCPStore
  int64_t master_port = 29500;            // MASTER_PORT
  int64_t restart_count = 0;              // TORCHELASTIC_RESTART_COUNT
  // TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already serves the store at
  // MASTER_ADDR:MASTER_PORT, so every rank connects as a client.
  bool use_agent_store = false;
  // WEFT_STORE_LISTEN_FD (set by `weft train --nproc` for rank 0 only): a socket already bound to
  // MASTER_PORT and listening, which rank 0's store serves on instead of binding the port again.
  // The port is never free between the launcher choosing it and the store opening it, so another
  // process cannot take it in between. -1: bind MASTER_PORT.
  int store_listen_fd = -1;

  // Rank 0 prints progress and writes metrics; every rank logs its own errors.
  bool is_primary() const { return rank == 0; }
};

// Reads the contract through `lookup` (getenv-like; nullptr = unset). With neither RANK nor
// WORLD_SIZE set this is a single-process world (rank 0 of 1). A malformed or inconsistent value
// throws a one-line weft::Error naming the variable, e.g. "RANK='x' is not an integer".
WorkerEnv parse_worker_env(const std::function<const char*(const char*)>& lookup);
// parse_worker_env over this process's environment.
WorkerEnv worker_env_from_environment();

// One process group as seen from this rank. A value type; copies share the c10d group.
struct Group {
  std::string name;            // "world", "tp", "dp", "pp", "embedding", "model" (for messages)
  std::vector<int64_t> ranks;  // global ranks in group-rank order; empty = not a member
  int64_t rank = -1;           // this process's rank in the group; -1 = not a member
  int64_t global_rank = 0;     // this process's world rank (for messages)
  std::chrono::milliseconds timeout{0};
  // Null when size() <= 1: there is nobody to talk to and the helpers below return at once.
  c10::intrusive_ptr<c10d::ProcessGroup> pg;

  Group();
  Group(const Group&);
  Group& operator=(const Group&);
  ~Group();
  int64_t size() const { return static_cast<int64_t>(ranks.size()); }
  bool is_member() const { return rank >= 0; }
  // "tp(ranks 2,3)", for messages.
  std::string describe() const;
};

struct ParallelContextOptions {
  // Rendezvous and collective timeout (config: parallel.timeout_sec).
  std::chrono::milliseconds timeout = std::chrono::seconds(300);
  // "gloo": CPU tensors only. "nccl": CUDA tensors on NCCL, CPU tensors still on Gloo (the same
  // split torch.distributed uses for "cpu:gloo,cuda:nccl"). See collective_backend(device).
  std::string backend = "gloo";
};

// The rank grid and this rank's process groups, built once per job and passed by reference to
// everything that communicates. There is no global instance.
//
// Construction is collective: every rank of the job must construct its context with the same
// dims, or the rendezvous times out. dims may cover fewer ranks than WORLD_SIZE: the ranks beyond
// it are spares (they join the store but no group, see elastic_layout) and construct no context. With world_size > 1 it connects to the c10d TCPStore at
// MASTER_ADDR:MASTER_PORT (rank 0 serves it unless the torchrun agent does) and creates only the
// groups this rank belongs to, each under its own store prefix; groups with identical members
// share one c10d group. With world_size 1 it touches no store and no network: every group is
// {0} with a null pg. Throws weft::Error naming the rank on a bad env/dims pair or a failed
// rendezvous.
//
// Destroying it closes this rank's connections: at the end of a job, barrier(world()) first so
// no peer is still mid-operation with this rank (rank 0 also serves the store).
//
// Non-copyable and non-movable (groups hold sockets and threads). The accessors are const and
// safe from any thread; but collectives on one group must be issued in the same order on every
// member, so issue them from one thread per group (normally the training thread).
class ParallelContext {
 public:
  ParallelContext(const WorkerEnv& env, const ParallelDims& dims,
                  ParallelContextOptions options = {});
  ~ParallelContext();
  ParallelContext(const ParallelContext&) = delete;
  ParallelContext& operator=(const ParallelContext&) = delete;

  const WorkerEnv& env() const { return env_; }
  const ParallelDims& dims() const { return dims_; }
  const RankCoord& coord() const { return coord_; }
  int64_t rank() const { return env_.rank; }
  // The ranks of the layout (dims().world_size()); WORLD_SIZE may hold spares beyond them.
  int64_t world_size() const { return dims_.world_size(); }
  // This round's key prefix in the store, unique to the round ("weft" in a store rank 0 serves,
  // which is new each round; "weft/round_<n>" in torchrun's shared store; "" for a world of one).
  // StoreClient prefixes of helpers (checkpoint commit, heartbeats, spares) begin with it.
  const std::string& store_root() const { return root_; }
  // The hook for "only rank 0 prints progress and writes metrics".
  bool is_primary() const { return env_.is_primary(); }
  bool is_first_stage() const { return coord_.pp == 0; }
  bool is_last_stage() const { return coord_.pp == dims_.pp - 1; }

  const Group& world() const { return group(GroupKind::kWorld); }
  const Group& tp() const { return group(GroupKind::kTensor); }
  const Group& dp() const { return group(GroupKind::kData); }
  const Group& pp() const { return group(GroupKind::kPipeline); }
  // First and last pipeline stage with this rank's tp/dp coordinates (tied embeddings); a rank on
  // a middle stage is not a member (is_member() false, helpers throw).
  const Group& embedding() const { return group(GroupKind::kEmbedding); }
  // The tp × pp ranks holding one model replica (e.g. for the global grad norm).
  const Group& model() const { return group(GroupKind::kModel); }
  const Group& group(GroupKind kind) const;

  // The rendezvous store (null for world_size 1), for later users such as heartbeats.
  const c10::intrusive_ptr<c10d::Store>& store() const { return store_; }

 private:
  WorkerEnv env_;
  ParallelDims dims_;
  RankCoord coord_;
  ParallelContextOptions options_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::vector<Group> groups_;  // indexed by GroupKind
  std::string root_;
  std::shared_ptr<void> beacon_;  // rank 0 in torchrun's shared store: proves this round alive
};

// A further connection to the job's rendezvous store, with keys under `prefix` (within this
// attempt's namespace), for a thread other than the training thread — the checkpoint writer — so
// its blocking waits never hold the connection the process groups use. Use from one thread.
// Errors (timeout, store gone because rank 0 died) throw a one-line weft::Error naming the key.
class StoreClient {
 public:
  // `member`: this is the process's own connection (a spare's): it joins the store like a
  // ParallelContext does and its keys are under its round's root + "/" + prefix. Otherwise a
  // further connection, with keys under `prefix` as given (begin it with store_root()).
  StoreClient(const WorkerEnv& env, const std::string& prefix, std::chrono::milliseconds timeout, bool member = false);
  ~StoreClient();
  void set(const std::string& key, const std::string& value);
  // Adds `delta` to the integer at `key` (created as 0) and returns the new value; add(key, 0)
  // reads a counter in one round trip without waiting.
  int64_t add(const std::string& key, int64_t delta);
  // Waits up to the timeout for `key` to be set, then returns its value; gives up (weft::Error)
  // as soon as `*cancel` becomes true.
  std::string get(const std::string& key, const std::atomic<bool>* cancel = nullptr);

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  std::chrono::milliseconds timeout_;
  std::string what_;
};

// ---- Collective helpers ----------------------------------------------------------------------
// Every helper takes the group explicitly, returns at once for a group of one, throws
// weft::Error if this rank is not a member, and turns any backend failure (timeout, dead peer)
// into a one-line weft::Error naming this rank, the operation and the group. Tensors live on the
// group's device type (CPU for Gloo); in-place arguments must be contiguous.

enum class ReduceOp { kSum, kAvg, kMax, kMin };

// An operation in flight. wait() blocks until it completes and throws weft::Error if it failed;
// waiting twice is fine. A default-constructed handle is already complete.
class CommHandle {
 public:
  CommHandle();
  // `what` names the operation in errors ("rank 3: all_reduce on tp(ranks 2,3)"); `timeout` is
  // the group's, for the message; `kind` is what wait() reports to the hang watchdog.
  CommHandle(c10::intrusive_ptr<c10d::Work> work, std::string what,
             std::chrono::milliseconds timeout, OpKind kind = OpKind::kCollective);
  CommHandle(const CommHandle&);
  CommHandle& operator=(const CommHandle&);
  CommHandle(CommHandle&&) noexcept;
  CommHandle& operator=(CommHandle&&) noexcept;
  ~CommHandle();
  void wait();
  bool is_completed() const;

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::string what_;
  std::chrono::milliseconds timeout_{0};
  OpKind kind_ = OpKind::kCollective;
};

// t = op over the group's t, in place.
void all_reduce(const Group& g, at::Tensor& t, ReduceOp op = ReduceOp::kSum);
CommHandle all_reduce_async(const Group& g, at::Tensor& t, ReduceOp op = ReduceOp::kSum);
// (N, ...) on each rank -> (size*N, ...), group rank r's block at rows [r*N, (r+1)*N).
at::Tensor all_gather(const Group& g, const at::Tensor& t);
// (size*N, ...) -> (N, ...): rows [r*N, (r+1)*N) of op over the group's t. Dim 0 must divide.
at::Tensor reduce_scatter(const Group& g, const at::Tensor& t, ReduceOp op = ReduceOp::kSum);
// Starts it: `out` is allocated (N, ...) and valid after wait(); `t` (contiguous) must stay
// alive and unchanged until then.
CommHandle reduce_scatter_async(const Group& g, const at::Tensor& t, at::Tensor& out,
                                ReduceOp op = ReduceOp::kSum);
// t on every rank = t of the rank whose group rank is `root`, in place.
void broadcast(const Group& g, at::Tensor& t, int64_t root = 0);
void barrier(const Group& g);

// One point-to-point transfer; `peer` is a group rank. Matching send/recv pairs use the same tag.
struct P2POp {
  enum class Kind { kSend, kRecv };
  Kind kind = Kind::kSend;
  at::Tensor tensor;  // recv: contiguous destination of the right shape and dtype
  int64_t peer = 0;
  int64_t tag = 0;

  static P2POp send(at::Tensor t, int64_t peer, int64_t tag = 0);
  static P2POp recv(at::Tensor t, int64_t peer, int64_t tag = 0);
};
// Posts every op before waiting on any, so pairs of ranks that both send and receive cannot
// deadlock. Returns one handle per op, in order.
std::vector<CommHandle> batch_isend_irecv(const Group& g, const std::vector<P2POp>& ops);
void wait_all(std::vector<CommHandle>& handles);

}  // namespace weft

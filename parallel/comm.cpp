// WorkerEnv parsing, ParallelContext construction (TCPStore rendezvous, one c10d group per
// distinct membership) and the collective helpers. The only file that includes
// ProcessGroupGloo.hpp: see comm.h for why Weft must not touch gloo's own types.
#include "parallel/comm.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <thread>

#include "weft/error.h"
#include "core/progress.h"

namespace weft {

#ifdef WEFT_CUDA
namespace detail {
// parallel/cuda/comm_nccl.cpp
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    int rank, int size,
                                                    std::chrono::milliseconds timeout);
}  // namespace detail
#endif

namespace {

// ---- environment ---------------------------------------------------------------------------

int64_t parse_int(const char* name, const std::string& v, int64_t lo, int64_t hi) {
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  WEFT_CHECK(!v.empty() && end && *end == '\0' && errno == 0, name, "='", v,
             "' is not an integer (torchrun environment contract)");
  WEFT_CHECK(x >= lo && x <= hi, name, "=", x, " is out of range [", lo, ", ", hi, "]");
  return x;
}

bool parse_bool(const char* name, std::string v) {
  std::transform(v.begin(), v.end(), v.begin(), ::tolower);
  if (v == "1" || v == "true") return true;
  if (v == "0" || v == "false" || v.empty()) return false;
  fail(str(name, "='", v, "' is not a boolean (True/False/1/0)"));
}

// ---- failures ------------------------------------------------------------------------------

// First line of a backend's message, without gloo's "[path/file.cc:123] " prefix and its
// advice to read the other logs (hint_for gives ours).
std::string first_line(std::string msg) {
  msg = msg.substr(0, msg.find('\n'));
  if (!msg.empty() && msg[0] == '[') {
    const auto close = msg.find("] ");
    if (close != std::string::npos && msg.find(':') < close) msg = msg.substr(close + 2);
  }
  const auto advice = msg.find(". This is typically caused by");
  if (advice != std::string::npos) msg = msg.substr(0, advice);
  return msg;
}

std::string hint_for(const std::string& msg, std::chrono::milliseconds timeout) {
  if (msg.find("imed out") != std::string::npos || msg.find("timeout") != std::string::npos)
    return str(" (a peer is hung or slower than parallel.timeout_sec=", timeout.count() / 1000.0,
               "; see the other ranks' logs)");
  if (msg.find("closed by peer") != std::string::npos ||
      msg.find("reset by peer") != std::string::npos ||
      msg.find("Broken pipe") != std::string::npos)
    return " (a peer process died; see the other ranks' logs)";
  return "";
}

// Runs `fn`, turning any exception into a one-line weft::Error "<what> failed: <reason>".
template <typename F>
auto rethrow_as_weft(const std::string& what, std::chrono::milliseconds timeout, F&& fn)
    -> decltype(fn()) {
  std::string msg;
  try {
    return fn();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    msg = first_line(e.what_without_backtrace());
  } catch (const std::exception& e) {
    msg = first_line(e.what());
  }
  fail(str(what, " failed: ", msg, hint_for(msg, timeout)));
}

std::string op_name(const Group& g, const char* op) {
  return str("rank ", g.global_rank, ": ", op, " on ", g.describe());
}

// Checks membership; returns false when the group has nobody else (the helper returns at once).
bool needs_comm(const Group& g, const char* op) {
  WEFT_CHECK(g.is_member(), "rank ", g.global_rank, ": ", op, " on group '", g.name,
             "' but this rank is not a member of it");
  return g.size() > 1;
}

// Starts an operation; failures to start and to finish both become weft::Error naming `what`.
template <typename F>
CommHandle start(const Group& g, const std::string& what, F&& fn, OpKind kind = OpKind::kCollective) {
  return CommHandle(rethrow_as_weft(what, g.timeout, fn), what, g.timeout, kind);
}

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return c10d::ReduceOp(c10d::ReduceOp::SUM);
    case ReduceOp::kAvg: return c10d::ReduceOp(c10d::ReduceOp::AVG);
    case ReduceOp::kMax: return c10d::ReduceOp(c10d::ReduceOp::MAX);
    case ReduceOp::kMin: return c10d::ReduceOp(c10d::ReduceOp::MIN);
  }
  return c10d::ReduceOp(c10d::ReduceOp::SUM);
}

// ---- construction ----------------------------------------------------------------------------

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

// Which address Gloo listens on: GLOO_SOCKET_IFNAME if set (as torch.distributed does), the
// loopback for a single-machine job, else this host's resolved name.
std::shared_ptr<::gloo::transport::Device> make_gloo_device(const WorkerEnv& env) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    std::string first(ifname);
    first = first.substr(0, first.find(','));
    return c10d::ProcessGroupGloo::createDeviceForInterface(first);
  }
  if (is_loopback(env.master_addr))
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// Rank 0's proof that the round it opened in a shared store is alive: a counter it bumps every
// 50 ms, over a connection of its own (a blocking wait on the main one holds that connection).
class RoundBeacon {
 public:
  RoundBeacon(c10::intrusive_ptr<c10d::Store> store, std::string key)
      : thread_([this, store, key] {
          while (!stop_.load()) {
            try {
              store->add(key, 1);
            } catch (const std::exception&) {
              return;  // the store is gone: the job is failing anyway
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
          }
        }) {}
  ~RoundBeacon() {
    stop_.store(true);
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct Connected {
  c10::intrusive_ptr<c10d::Store> tcp;
  std::string root;  // this round's key prefix ("" for a further connection: the caller names keys)
  std::shared_ptr<RoundBeacon> beacon;  // rank 0 in a shared store: keep while others may join
};

Connected connect_store(const WorkerEnv& env, std::chrono::milliseconds timeout, bool extra_client);

// torchrun's agent store outlives the rounds of an elastic job and still holds an earlier round's
// keys, and TORCHELASTIC_RESTART_COUNT cannot name the rounds: each agent counts its own restarts
// (a node that joins later starts at 0) and a membership change counts none. So rank 0 opens a
// generation (a counter in the store) and proves it alive with a beacon; every other process takes
// the newest generation whose beacon it sees moving. torchrun stops every worker of a round before
// it starts the next, so the only live beacon is this round's rank 0's.
Connected join_shared_round(const WorkerEnv& env, c10::intrusive_ptr<c10d::Store> tcp, std::chrono::milliseconds timeout,
                            const std::string& what) {
  auto alive = [](int64_t gen) { return str("weft/generation_", gen, "/alive"); };
  if (env.rank == 0) {
    const int64_t gen = rethrow_as_weft(what, timeout, [&] { return tcp->add("weft/generation", 1); });
    auto beacon = std::make_shared<RoundBeacon>(connect_store(env, timeout, /*extra_client=*/true).tcp, alive(gen));
    return {tcp, str("weft/round_", gen), beacon};
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const int64_t gen = rethrow_as_weft(what, timeout, [&] { return tcp->add("weft/generation", 0); });
    if (gen > 0) {
      const int64_t before = rethrow_as_weft(what, timeout, [&] { return tcp->add(alive(gen), 0); });
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      if (rethrow_as_weft(what, timeout, [&] { return tcp->add(alive(gen), 0); }) > before)
        return {tcp, str("weft/round_", gen), nullptr};
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    WEFT_CHECK(std::chrono::steady_clock::now() < deadline, what, " failed: rank 0 of this round did not open it within ",
               timeout.count() / 1000, " s (parallel.timeout_sec); see rank 0's log");
  }
}

// `extra_client`: a further connection of a process that already joined (never the server, waits
// for nobody, opens or looks for no round).
Connected connect_store(const WorkerEnv& env, std::chrono::milliseconds timeout, bool extra_client) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(env.master_port);
  o.isServer = env.rank == 0 && !env.use_agent_store && !extra_client;
  o.waitWorkers = !env.use_agent_store && !extra_client;
  if (!env.use_agent_store && !extra_client) o.numWorkers = static_cast<size_t>(env.world_size);
  o.timeout = timeout;
  if (o.isServer && env.store_listen_fd >= 0) {
    // The launcher's socket serves the first store this process opens; it is that store's then.
    static std::atomic<bool> taken{false};
    if (!taken.exchange(true)) o.masterListenFd = static_cast<int>(env.store_listen_fd);
  }
  const std::string what =
      str("rank ", env.rank, ": rendezvous with the store at ", env.master_addr, ":",
          env.master_port, o.isServer ? " (served by this rank)" : "");
  auto tcp = rethrow_as_weft(
      what, timeout, [&] { return c10::make_intrusive<c10d::TCPStore>(env.master_addr, o); });
  if (extra_client) return {tcp, "", nullptr};
  // A store rank 0 serves is new with every round of the job.
  if (!env.use_agent_store) return {tcp, "weft", nullptr};
  return join_shared_round(env, tcp, timeout, what);
}

}  // namespace

StoreClient::StoreClient(const WorkerEnv& env, const std::string& prefix, std::chrono::milliseconds timeout, bool member)
    : timeout_(timeout), what_(str("rank ", env.rank, ": store key under '", prefix, "'")) {
  // A member's keys are under its round's root; a further connection's under the caller's prefix,
  // which begins with ParallelContext::store_root().
  const Connected c = connect_store(env, timeout, /*extra_client=*/!member);
  store_ = c10::make_intrusive<c10d::PrefixStore>(c.root.empty() ? prefix : c.root + "/" + prefix, c.tcp);
}

StoreClient::~StoreClient() = default;

void StoreClient::set(const std::string& key, const std::string& value) {
  rethrow_as_weft(str(what_, " set '", key, "'"), timeout_,
                  [&] { store_->set(key, std::vector<uint8_t>(value.begin(), value.end())); });
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  return rethrow_as_weft(str(what_, " add '", key, "'"), timeout_, [&] { return store_->add(key, delta); });
}

std::string StoreClient::get(const std::string& key, const std::atomic<bool>* cancel) {
  // Polls with check() (a plain request/response) rather than a blocking wait, so the caller
  // can give up early and a timed-out wait never leaves a stale reply on the connection.
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  auto pause = std::chrono::milliseconds(5);
  for (;;) {
    const bool ready = rethrow_as_weft(str(what_, " check '", key, "'"), timeout_, [&] { return store_->check({key}); });
    if (ready) break;
    WEFT_CHECK(!(cancel && cancel->load()), what_, ": gave up waiting for '", key, "' (cancelled)");
    WEFT_CHECK(std::chrono::steady_clock::now() < deadline, what_, ": '", key, "' was not set within ",
               timeout_.count() / 1000, " s; a peer rank died or hangs");
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(500));
  }
  const auto v = rethrow_as_weft(str(what_, " get '", key, "'"), timeout_, [&] { return store_->get(key); });
  return std::string(v.begin(), v.end());
}

// ---- WorkerEnv -------------------------------------------------------------------------------

WorkerEnv parse_worker_env(const std::function<const char*(const char*)>& lookup) {
  auto get = [&](const char* name) -> const char* {
    const char* v = lookup(name);
    return v && *v ? v : nullptr;
  };
  WorkerEnv e;
  const char* rank = get("RANK");
  const char* world = get("WORLD_SIZE");
  if (!rank && !world) return e;  // not launched: a world of one
  WEFT_CHECK(rank && world, rank ? "RANK" : "WORLD_SIZE", " is set but ",
             rank ? "WORLD_SIZE" : "RANK",
             " is not: a launched worker needs both (torchrun environment contract)");
  e.world_size = parse_int("WORLD_SIZE", world, 1, 1 << 20);
  e.rank = parse_int("RANK", rank, 0, e.world_size - 1);
  e.local_world_size = e.world_size;
  e.local_rank = e.rank;
  if (const char* v = get("LOCAL_WORLD_SIZE"))
    e.local_world_size = parse_int("LOCAL_WORLD_SIZE", v, 1, e.world_size);
  if (const char* v = get("LOCAL_RANK"))
    e.local_rank = parse_int("LOCAL_RANK", v, 0, e.local_world_size - 1);
  WEFT_CHECK(e.local_rank < e.local_world_size, "LOCAL_RANK=", e.local_rank,
             " must be < LOCAL_WORLD_SIZE=", e.local_world_size);
  const char* addr = get("MASTER_ADDR");
  const char* port = get("MASTER_PORT");
  if (e.world_size > 1) {
    WEFT_CHECK(addr, "MASTER_ADDR is not set: with WORLD_SIZE=", e.world_size,
               " every rank needs the host of rank 0's store");
    WEFT_CHECK(port, "MASTER_PORT is not set: with WORLD_SIZE=", e.world_size,
               " every rank needs the port of rank 0's store");
  }
  if (addr) e.master_addr = addr;
  if (port) e.master_port = parse_int("MASTER_PORT", port, 1, 65535);
  if (const char* v = get("TORCHELASTIC_RESTART_COUNT"))
    e.restart_count = parse_int("TORCHELASTIC_RESTART_COUNT", v, 0, INT32_MAX);
  if (const char* v = get("TORCHELASTIC_USE_AGENT_STORE"))
    e.use_agent_store = parse_bool("TORCHELASTIC_USE_AGENT_STORE", v);
  if (const char* v = get("WEFT_STORE_LISTEN_FD")) {
    e.store_listen_fd = parse_int("WEFT_STORE_LISTEN_FD", v, 0, INT32_MAX);
    WEFT_CHECK(e.rank == 0 && !e.use_agent_store, "WEFT_STORE_LISTEN_FD is for rank 0 serving its own store; got it with RANK=",
               e.rank, e.use_agent_store ? " and TORCHELASTIC_USE_AGENT_STORE" : "");
  }
  return e;
}

WorkerEnv worker_env_from_environment() {
  return parse_worker_env([](const char* name) { return std::getenv(name); });
}

// ---- Group -------------------------------------------------------------------------------------

Group::Group() = default;
Group::Group(const Group&) = default;
Group& Group::operator=(const Group&) = default;
Group::~Group() = default;

std::string Group::describe() const {
  std::string s = name + "(ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ranks[i]);
  }
  return s + ")";
}

// ---- ParallelContext -------------------------------------------------------------------------

ParallelContext::ParallelContext(const WorkerEnv& env, const ParallelDims& dims,
                                 ParallelContextOptions options)
    : env_(env), dims_(dims), options_(std::move(options)) {
  WEFT_CHECK(dims_.world_size() <= env_.world_size && env_.rank < dims_.world_size(), "rank ", env_.rank,
             ": the layout ", dims_.describe(), " needs world_size(", dims_.world_size(), ") but WORLD_SIZE is ",
             env_.world_size, env_.rank >= dims_.world_size() ? " and this rank is outside it (a spare)" : "");
  WEFT_CHECK(options_.backend == "gloo" || options_.backend == "nccl",
             "collective backend must be gloo or nccl, got '", options_.backend, "'");
  WEFT_CHECK(options_.timeout.count() > 0, "parallel.timeout_sec must be > 0");
#ifndef WEFT_CUDA
  WEFT_CHECK(options_.backend == "gloo",
             "backend nccl needs a weft built with CUDA; use device=cpu");
#endif
  coord_ = coord_of(dims_, env_.rank);
  const auto timeout = options_.timeout;
  std::shared_ptr<::gloo::transport::Device> device;
  // Every process of the job, spares included, joins the store; only the layout's ranks form groups.
  if (env_.world_size > 1) {
    const Connected c = connect_store(env_, timeout, /*extra_client=*/false);
    root_ = c.root;
    beacon_ = c.beacon;
    store_ = c10::make_intrusive<c10d::PrefixStore>(root_, c.tcp);
    device = rethrow_as_weft(str("rank ", env_.rank, ": opening a Gloo device"), timeout,
                             [&] { return make_gloo_device(env_); });
  }

  // Groups with the same members share one c10d group. Every member meets a membership first at
  // the same kind (each kind partitions the ranks), so all of them create it under one prefix.
  std::map<std::vector<int64_t>, c10::intrusive_ptr<c10d::ProcessGroup>> made;
  const GroupKind kinds[] = {GroupKind::kWorld,    GroupKind::kTensor,    GroupKind::kData,
                             GroupKind::kPipeline, GroupKind::kEmbedding, GroupKind::kModel};
  groups_.resize(std::size(kinds));
  for (GroupKind kind : kinds) {
    Group& g = groups_[static_cast<size_t>(kind)];
    g.name = group_kind_name(kind);
    g.ranks = group_ranks(dims_, env_.rank, kind);
    g.global_rank = env_.rank;
    g.timeout = timeout;
    auto me = std::find(g.ranks.begin(), g.ranks.end(), env_.rank);
    g.rank = me == g.ranks.end() ? -1 : me - g.ranks.begin();
    if (g.size() <= 1) continue;
    if (auto it = made.find(g.ranks); it != made.end()) {
      g.pg = it->second;
      continue;
    }
    const auto all = all_groups(dims_, kind);
    const auto index = std::find(all.begin(), all.end(), g.ranks) - all.begin();
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(str(g.name, "/", index), store_);
    const int rank = static_cast<int>(g.rank), size = static_cast<int>(g.size());
    g.pg = rethrow_as_weft(
        str("rank ", env_.rank, ": creating process group ", g.describe()), timeout, [&] {
          auto pg = c10::make_intrusive<c10d::ProcessGroup>(prefixed, rank, size);
          auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
          opts->devices.push_back(device);
          auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
              c10::make_intrusive<c10d::PrefixStore>("cpu/", prefixed), rank, size, opts);
          pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
          pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
#ifdef WEFT_CUDA
          if (options_.backend == "nccl") {
            auto nccl = detail::make_nccl_backend(
                c10::make_intrusive<c10d::PrefixStore>("cuda/", prefixed), rank, size, timeout);
            pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
            pg->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
          }
#endif
          return pg;
        });
    made[g.ranks] = g.pg;
  }
}

ParallelContext::~ParallelContext() = default;

const Group& ParallelContext::group(GroupKind kind) const {
  return groups_.at(static_cast<size_t>(kind));
}

// ---- CommHandle --------------------------------------------------------------------------------

CommHandle::CommHandle() = default;
CommHandle::CommHandle(c10::intrusive_ptr<c10d::Work> work, std::string what,
                       std::chrono::milliseconds timeout, OpKind kind)
    : work_(std::move(work)), what_(std::move(what)), timeout_(timeout), kind_(kind) {}
CommHandle::CommHandle(const CommHandle&) = default;
CommHandle& CommHandle::operator=(const CommHandle&) = default;
CommHandle::CommHandle(CommHandle&&) noexcept = default;
CommHandle& CommHandle::operator=(CommHandle&&) noexcept = default;
CommHandle::~CommHandle() = default;

void CommHandle::wait() {
  if (!work_) return;
  // Gloo applies the group's timeout itself; wait() without a deadline of its own.
  ProgressScope scope(kind_, what_);
  rethrow_as_weft(what_, timeout_, [&] { work_->wait(); });
}

bool CommHandle::is_completed() const { return !work_ || work_->isCompleted(); }

// ---- collectives -----------------------------------------------------------------------------

CommHandle all_reduce_async(const Group& g, at::Tensor& t, ReduceOp op) {
  if (!needs_comm(g, "all_reduce")) return {};
  const auto what = op_name(g, "all_reduce");
  WEFT_CHECK(t.is_contiguous(), what, ": the tensor must be contiguous (it is reduced in place)");
  c10d::AllreduceOptions o;
  o.reduceOp = to_c10d(op);
  std::vector<at::Tensor> v{t};
  return start(g, what, [&] { return g.pg->allreduce(v, o); });
}

void all_reduce(const Group& g, at::Tensor& t, ReduceOp op) { all_reduce_async(g, t, op).wait(); }

at::Tensor all_gather(const Group& g, const at::Tensor& t) {
  if (!needs_comm(g, "all_gather")) return t;
  const auto what = op_name(g, "all_gather");
  WEFT_CHECK(t.dim() >= 1, what, ": needs a tensor with at least one dim, got a scalar");
  at::Tensor in = t.contiguous();
  auto sizes = in.sizes().vec();
  sizes[0] *= g.size();
  at::Tensor out = at::empty(sizes, in.options());  // (size*N, ...)
  start(g, what, [&] { return g.pg->all_gather_single(out, in); }).wait();
  return out;
}

CommHandle reduce_scatter_async(const Group& g, const at::Tensor& t, at::Tensor& out, ReduceOp op) {
  if (!needs_comm(g, "reduce_scatter")) {
    out = t;
    return {};
  }
  const auto what = op_name(g, "reduce_scatter");
  WEFT_CHECK(t.dim() >= 1 && t.size(0) % g.size() == 0, what, ": dim 0 (", t.dim() ? t.size(0) : 0,
             ") must be divisible by the group size ", g.size());
  WEFT_CHECK(t.is_contiguous(), what, ": the input must be contiguous (it is read until the operation completes)");
  auto sizes = t.sizes().vec();
  sizes[0] /= g.size();
  out = at::empty(sizes, t.options());  // (N, ...)
  c10d::ReduceScatterOptions o;
  o.reduceOp = to_c10d(op);
  at::Tensor in = t;
  return start(g, what, [&] { return g.pg->reduce_scatter_single(out, in, o); });
}

at::Tensor reduce_scatter(const Group& g, const at::Tensor& t, ReduceOp op) {
  at::Tensor out;
  reduce_scatter_async(g, t.contiguous(), out, op).wait();
  return out;
}

void broadcast(const Group& g, at::Tensor& t, int64_t root) {
  if (!needs_comm(g, "broadcast")) return;
  const auto what = op_name(g, "broadcast");
  WEFT_CHECK(root >= 0 && root < g.size(), what, ": root ", root, " is not a rank of the group");
  WEFT_CHECK(t.is_contiguous(), what, ": the tensor must be contiguous (it is written in place)");
  c10d::BroadcastOptions o;
  o.rootRank = root;
  std::vector<at::Tensor> v{t};
  start(g, what, [&] { return g.pg->broadcast(v, o); }).wait();
}

void barrier(const Group& g) {
  if (!needs_comm(g, "barrier")) return;
  const auto what = op_name(g, "barrier");
  start(g, what, [&] { return g.pg->barrier(); }).wait();
}

P2POp P2POp::send(at::Tensor t, int64_t peer, int64_t tag) {
  return P2POp{Kind::kSend, std::move(t), peer, tag};
}
P2POp P2POp::recv(at::Tensor t, int64_t peer, int64_t tag) {
  return P2POp{Kind::kRecv, std::move(t), peer, tag};
}

std::vector<CommHandle> batch_isend_irecv(const Group& g, const std::vector<P2POp>& ops) {
  std::vector<CommHandle> handles;
  if (ops.empty()) return handles;
  WEFT_CHECK(g.is_member(), "rank ", g.global_rank, ": send/recv on group '", g.name,
             "' but this rank is not a member of it");
  for (const auto& op : ops) {
    const bool is_send = op.kind == P2POp::Kind::kSend;
    const bool valid_peer = op.peer >= 0 && op.peer < g.size();
    const auto what =
        str("rank ", g.global_rank, ": ", is_send ? "send to " : "recv from ", g.name, " rank ",
            op.peer, valid_peer ? str(" (global ", g.ranks[op.peer], ")") : "", " tag ", op.tag,
            " on ", g.describe());
    WEFT_CHECK(valid_peer && op.peer != g.rank, what,
               ": the peer must be another rank of the group");
    WEFT_CHECK(op.tensor.defined(), what, ": no tensor");
    WEFT_CHECK(is_send || op.tensor.is_contiguous(), what, ": the destination must be contiguous");
    std::vector<at::Tensor> v{is_send ? op.tensor.contiguous() : op.tensor};
    const int peer = static_cast<int>(op.peer), tag = static_cast<int>(op.tag);
    handles.push_back(start(
        g, what, [&] { return is_send ? g.pg->send(v, peer, tag) : g.pg->recv(v, peer, tag); }, OpKind::kP2P));
  }
  return handles;
}

void wait_all(std::vector<CommHandle>& handles) {
  for (auto& h : handles) h.wait();
}

}  // namespace weft

// weft_comm_tool: one worker of a multi-process collective test. Started N times by
// tests/integration/test_comm.py with the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT); builds a ParallelContext and runs real Gloo collectives through Weft's helpers.
// Every check prints "rank R ok NAME"; the first wrong value exits 1 with "rank R FAIL NAME: ...".
#include <ATen/ATen.h>

#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "weft/error.h"
#include "parallel/comm.h"
#include "parallel/topology.h"

namespace weft {
namespace {

const char* kUsage =
    "usage: weft_comm_tool SCENARIO [--tp N] [--pp N] [--timeout-ms MS]\n"
    "  collectives  all_reduce/all_gather/reduce_scatter/broadcast/barrier/send-recv on the world\n"
    "               and on every tp/dp/pp/embedding/model group of the grid\n"
    "  timeout      rank 0 all_reduces, the others never join: rank 0 must fail after MS\n"
    "  recv-timeout rank 0 waits for a message rank 1 never sends\n"
    "  dead-peer    rank 1 exits after a barrier; rank 0's next all_reduce must fail at once\n"
    "Failures expected by a scenario print 'rank R error: MESSAGE' and exit 3.";

int g_rank = 0;
int g_checks = 0;

void expect(bool ok, const std::string& name, const std::string& detail = "") {
  if (!ok) {
    std::printf("rank %d FAIL %s: %s\n", g_rank, name.c_str(), detail.c_str());
    std::fflush(stdout);
    std::exit(1);
  }
  ++g_checks;
  std::printf("rank %d ok %s\n", g_rank, name.c_str());
}

std::string show(const at::Tensor& t) {
  std::string s;
  auto f = t.to(at::kDouble).flatten();
  for (int64_t i = 0; i < f.numel(); ++i) {
    if (i) s += ',';
    s += std::to_string(f[i].item<double>());
  }
  return s;
}

bool same(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && at::allclose(a.to(at::kDouble), b.to(at::kDouble));
}

at::Tensor ranks_tensor(const std::vector<int64_t>& ranks) {
  return at::tensor(std::vector<double>(ranks.begin(), ranks.end()), at::kDouble);
}

// Collectives on one group, with values built from global ranks so each member can compute the
// expected result on its own.
void check_group(const Group& g, const std::string& tag) {
  if (!g.is_member()) {
    expect(g.ranks.empty(), tag + " non-member");
    return;
  }
  const double me = double(g.global_rank);
  const at::Tensor members = ranks_tensor(g.ranks);  // (size,)
  // all_reduce sum / max of the global rank
  at::Tensor t = at::full({3}, me, at::kDouble);
  all_reduce(g, t);
  expect(same(t, at::full({3}, members.sum().item<double>(), at::kDouble)), tag + " all_reduce_sum",
         show(t));
  t = at::full({2}, me, at::kFloat);
  all_reduce(g, t, ReduceOp::kMax);
  expect(same(t, at::full({2}, members.max().item<double>())), tag + " all_reduce_max", show(t));
  // all_gather: (2, 3) per rank -> (2*size, 3), block r filled with member r's rank
  at::Tensor gathered = all_gather(g, at::full({2, 3}, me, at::kFloat));
  expect(same(gathered, members.repeat_interleave(2).unsqueeze(1).expand({2 * g.size(), 3})),
         tag + " all_gather", show(gathered));
  // reduce_scatter: (2*size, 3) -> (2, 3): rows [2r, 2r+2) of the sum of (base + rank)
  at::Tensor base = at::arange(2 * g.size() * 3, at::kFloat).view({2 * g.size(), 3});
  at::Tensor shard = reduce_scatter(g, base + me);
  at::Tensor want = (base * g.size() + members.sum().item<double>()).narrow(0, 2 * g.rank, 2);
  expect(same(shard, want), tag + " reduce_scatter", show(shard));
  // broadcast from the last group rank
  t = at::full({4}, me, at::kFloat);
  broadcast(g, t, g.size() - 1);
  expect(same(t, at::full({4}, double(g.ranks.back()))), tag + " broadcast", show(t));
  barrier(g);
  expect(true, tag + " barrier");
}

// Both directions of a ring at once (what a pipeline does between neighbouring stages): each
// rank sends to next and previous and receives from both, all posted before any wait.
void check_ring(const Group& g, const std::string& tag) {
  if (g.size() < 2) return;
  const int64_t n = g.size(), r = g.rank;
  const int64_t next = (r + 1) % n, prev = (r + n - 1) % n;
  at::Tensor from_prev = at::empty({5}, at::kFloat), from_next = at::empty({5}, at::kFloat);
  std::vector<P2POp> ops = {P2POp::send(at::full({5}, double(g.global_rank)), next, /*tag=*/1),
                            P2POp::recv(from_prev, prev, /*tag=*/1)};
  if (n > 2) {  // with two ranks next == prev; one direction is enough
    ops.push_back(P2POp::send(at::full({5}, double(g.global_rank) + 0.5), prev, /*tag=*/2));
    ops.push_back(P2POp::recv(from_next, next, /*tag=*/2));
  }
  auto handles = batch_isend_irecv(g, ops);
  expect(handles.size() == ops.size(), tag + " p2p handles");
  wait_all(handles);
  expect(same(from_prev, at::full({5}, double(g.ranks[prev]))), tag + " recv_from_prev",
         show(from_prev));
  if (n > 2)
    expect(same(from_next, at::full({5}, double(g.ranks[next]) + 0.5)), tag + " recv_from_next",
           show(from_next));
}

int collectives(const ParallelContext& ctx) {
  const Group& w = ctx.world();
  const int64_t n = w.size();
  check_group(w, "world");
  check_ring(w, "world");
  // bf16, async, and a larger tensor than one Gloo chunk.
  at::Tensor big = at::full({1 << 16}, double(ctx.rank() + 1), at::kFloat);
  CommHandle h = all_reduce_async(w, big);
  h.wait();
  h.wait();  // twice is fine
  expect(h.is_completed() && same(big, at::full({1 << 16}, double(n * (n + 1) / 2))),
         "world all_reduce_async");
  at::Tensor bf = at::full({8}, double(ctx.rank() + 1)).to(at::kBFloat16);
  all_reduce(w, bf, ReduceOp::kSum);
  expect(same(bf, at::full({8}, double(n * (n + 1) / 2))), "world all_reduce_bf16", show(bf));
  at::Tensor avg = at::full({2}, double(ctx.rank()));
  all_reduce(w, avg, ReduceOp::kAvg);
  expect(same(avg, at::full({2}, (n - 1) / 2.0)), "world all_reduce_avg", show(avg));

  for (GroupKind kind : {GroupKind::kTensor, GroupKind::kData, GroupKind::kPipeline,
                         GroupKind::kEmbedding, GroupKind::kModel}) {
    const Group& g = ctx.group(kind);
    expect(g.ranks == group_ranks(ctx.dims(), ctx.rank(), kind),
           std::string(g.name) + " membership");
    check_group(g, g.name);
  }
  // Pipeline neighbours: stage s sends to s+1 (activations) and s+1 answers (gradients).
  const Group& pp = ctx.pp();
  if (pp.size() > 1) {
    std::vector<P2POp> ops;
    at::Tensor act = at::empty({2, 3}), grad = at::empty({2, 3});
    if (pp.rank + 1 < pp.size())
      ops.push_back(P2POp::send(at::full({2, 3}, double(ctx.rank())), pp.rank + 1));
    if (pp.rank > 0) ops.push_back(P2POp::recv(act, pp.rank - 1));
    auto hs = batch_isend_irecv(pp, ops);
    wait_all(hs);
    if (pp.rank > 0)
      expect(same(act, at::full({2, 3}, double(pp.ranks[pp.rank - 1]))), "pp forward p2p",
             show(act));
    ops.clear();
    if (pp.rank > 0) ops.push_back(P2POp::send(at::full({2, 3}, -double(ctx.rank())), pp.rank - 1));
    if (pp.rank + 1 < pp.size()) ops.push_back(P2POp::recv(grad, pp.rank + 1));
    hs = batch_isend_irecv(pp, ops);
    wait_all(hs);
    if (pp.rank + 1 < pp.size())
      expect(same(grad, at::full({2, 3}, -double(pp.ranks[pp.rank + 1]))), "pp backward p2p",
             show(grad));
    check_ring(pp, "pp");
  }
  barrier(w);
  std::printf("rank %d all %d checks passed\n", g_rank, g_checks);
  return 0;
}

int expect_failure(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    fn();
  } catch (const Error& e) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("rank %d error after %.1fs: %s\n", g_rank, s, e.what());
    return 3;
  }
  std::printf("rank %d FAIL: the operation succeeded\n", g_rank);
  return 1;
}

int run(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help")) return std::puts(kUsage), argc < 2 ? 2 : 0;
  const std::string scenario = argv[1];
  ParallelConfig pc;
  ParallelContextOptions opts;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (flag == "--tp")
      pc.tp = v;
    else if (flag == "--pp")
      pc.pp = v;
    else if (flag == "--timeout-ms")
      opts.timeout = std::chrono::milliseconds(v);
    else
      return std::fprintf(stderr, "unknown flag %s\n%s\n", flag.c_str(), kUsage), 2;
  }
  const WorkerEnv env = worker_env_from_environment();
  g_rank = static_cast<int>(env.rank);
  ParallelContext ctx(env, make_parallel_dims(env.world_size, pc), opts);
  std::printf("rank %d connected: %s\n", g_rank, ctx.dims().describe().c_str());
  std::fflush(stdout);
  at::Tensor t = at::ones({4});
  if (scenario == "collectives") return collectives(ctx);
  if (scenario == "timeout") {
    if (env.rank != 0) return std::this_thread::sleep_for(opts.timeout * 3), 0;
    return expect_failure([&] { all_reduce(ctx.world(), t); });
  }
  if (scenario == "recv-timeout") {
    if (env.rank != 0) return std::this_thread::sleep_for(opts.timeout * 3), 0;
    return expect_failure([&] {
      auto hs = batch_isend_irecv(ctx.world(), {P2POp::recv(t, 1, 7)});
      wait_all(hs);
    });
  }
  if (scenario == "dead-peer") {
    barrier(ctx.world());
    if (env.rank == 1) std::_Exit(0);  // gone without a word, like a crash
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return expect_failure([&] { all_reduce(ctx.world(), t); });
  }
  std::fprintf(stderr, "unknown scenario '%s'\n%s\n", scenario.c_str(), kUsage);
  return 2;
}

}  // namespace
}  // namespace weft

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return weft::run(argc, argv);
  } catch (const std::exception& e) {
    std::printf("rank %d error: %s\n", weft::g_rank, e.what());
    return 1;
  }
}

// WorkerEnv parsing (the torchrun contract) and the single-process ParallelContext, which must
// work with no store and no network. Multi-process collectives are in tests/integration.
#include "parallel/comm.h"

#include <gtest/gtest.h>

#include <map>

#include "weft/error.h"

namespace weft {
namespace {

using Env = std::map<std::string, std::string>;

WorkerEnv parse(const Env& env) {
  return parse_worker_env([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const Env& env) {
  try {
    parse(env);
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    return e.what();
  }
  return "(no error)";
}

TEST(WorkerEnv, MissingEnvironmentIsASingleProcess) {
  const WorkerEnv e = parse({});
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_TRUE(e.is_primary());
}

TEST(WorkerEnv, ReadsTheTorchrunContract) {
  const WorkerEnv e = parse({{"RANK", "5"},
                             {"WORLD_SIZE", "8"},
                             {"LOCAL_RANK", "1"},
                             {"LOCAL_WORLD_SIZE", "4"},
                             {"MASTER_ADDR", "node0"},
                             {"MASTER_PORT", "29511"},
                             {"TORCHELASTIC_RESTART_COUNT", "2"},
                             {"TORCHELASTIC_USE_AGENT_STORE", "True"}});
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 4);
  EXPECT_EQ(e.master_addr, "node0");
  EXPECT_EQ(e.master_port, 29511);
  EXPECT_EQ(e.restart_count, 2);
  EXPECT_TRUE(e.use_agent_store);
  EXPECT_FALSE(e.is_primary());
  const WorkerEnv d =
      parse({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}});
  EXPECT_EQ(d.local_rank, 3);  // defaults: one node
  EXPECT_EQ(d.local_world_size, 4);
  EXPECT_FALSE(d.use_agent_store);
}

TEST(WorkerEnv, MalformedValuesNameTheVariable) {
  const Env base = {
      {"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29500"}};
  auto with = [&](const std::string& k, const std::string& v) {
    Env e = base;
    e[k] = v;
    return e;
  };
  EXPECT_NE(error_of(with("RANK", "x")).find("RANK='x' is not an integer"), std::string::npos);
  EXPECT_NE(error_of(with("RANK", "2")).find("RANK=2 is out of range [0, 1]"), std::string::npos);
  EXPECT_NE(error_of(with("WORLD_SIZE", "2.5")).find("WORLD_SIZE='2.5' is not an integer"),
            std::string::npos);
  EXPECT_NE(error_of(with("WORLD_SIZE", "0")).find("WORLD_SIZE=0 is out of range"),
            std::string::npos);
  EXPECT_NE(error_of(with("MASTER_PORT", "70000")).find("MASTER_PORT=70000 is out of range"),
            std::string::npos);
  EXPECT_NE(error_of(with("LOCAL_RANK", "-1")).find("LOCAL_RANK=-1 is out of range"),
            std::string::npos);
  EXPECT_NE(error_of(with("TORCHELASTIC_RESTART_COUNT", "many"))
                .find("TORCHELASTIC_RESTART_COUNT='many'"),
            std::string::npos);
  EXPECT_NE(error_of(with("TORCHELASTIC_USE_AGENT_STORE", "maybe"))
                .find("TORCHELASTIC_USE_AGENT_STORE='maybe'"),
            std::string::npos);
  EXPECT_NE(error_of({{"RANK", "0"}}).find("RANK is set but WORLD_SIZE is not"), std::string::npos);
  EXPECT_NE(error_of({{"WORLD_SIZE", "2"}}).find("WORLD_SIZE is set but RANK is not"),
            std::string::npos);
  EXPECT_NE(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}})
                .find("MASTER_ADDR is not set"),
            std::string::npos);
  EXPECT_NE(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}})
                .find("MASTER_PORT is not set"),
            std::string::npos);
  // The launcher's listening socket is rank 0's to serve the store on, and nobody else's.
  EXPECT_EQ(parse({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                   {"MASTER_PORT", "1"}, {"WEFT_STORE_LISTEN_FD", "7"}})
                .store_listen_fd,
            7);
  EXPECT_NE(error_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"},
                      {"WEFT_STORE_LISTEN_FD", "7"}})
                .find("WEFT_STORE_LISTEN_FD is for rank 0 serving its own store; got it with RANK=1"),
            std::string::npos);
  EXPECT_NE(error_of(with("WEFT_STORE_LISTEN_FD", "x")).find("WEFT_STORE_LISTEN_FD='x'"), std::string::npos);
}

TEST(ParallelContext, SingleProcessNeedsNoStoreAndShortCircuits) {
  const ParallelContext ctx(WorkerEnv{}, make_parallel_dims(1, ParallelConfig{}));
  EXPECT_TRUE(ctx.is_primary());
  EXPECT_TRUE(ctx.is_first_stage() && ctx.is_last_stage());
  EXPECT_FALSE(ctx.store());
  for (auto kind : {GroupKind::kWorld, GroupKind::kTensor, GroupKind::kData, GroupKind::kPipeline,
                    GroupKind::kEmbedding, GroupKind::kModel}) {
    const Group& g = ctx.group(kind);
    EXPECT_EQ(g.size(), 1) << g.name;
    EXPECT_EQ(g.rank, 0) << g.name;
    EXPECT_FALSE(g.pg) << g.name;
  }
  at::Tensor t = at::arange(6, at::kFloat);
  all_reduce(ctx.world(), t, ReduceOp::kMax);
  all_reduce_async(ctx.dp(), t).wait();
  broadcast(ctx.tp(), t, 0);
  barrier(ctx.pp());
  EXPECT_TRUE(at::equal(t, at::arange(6, at::kFloat)));
  EXPECT_TRUE(at::equal(all_gather(ctx.tp(), t), t));
  EXPECT_TRUE(at::equal(reduce_scatter(ctx.tp(), t), t));
  EXPECT_TRUE(batch_isend_irecv(ctx.pp(), {}).empty());
}

TEST(ParallelContext, RefusesMismatchedWorldAndNonMembers) {
  try {
    ParallelContext ctx(WorkerEnv{}, make_parallel_dims(2, ParallelConfig{}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs world_size(2) but WORLD_SIZE is 1"),
              std::string::npos)
        << e.what();
  }
  Group outsider;
  outsider.name = "embedding";
  outsider.global_rank = 3;
  at::Tensor t = at::ones({2});
  try {
    all_reduce(outsider, t);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "rank 3: all_reduce on group 'embedding' but this rank is not a member"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace weft

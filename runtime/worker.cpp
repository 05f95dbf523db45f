// One process of a training job (weft/worker.h) and of any multi-process job (worker_job.h):
// reads the torchrun environment, validates the layout, connects every group, runs the job under
// the hang watchdog, and keeps spare ranks waiting. WEFT_TEST_WORKER replaces the job with a
// scripted behaviour so tests/integration/test_launcher.py can exercise the real launcher and
// rendezvous end to end. No signal handler is installed here: the host does that (on_role).
#include "runtime/worker_job.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include <glog/logging.h>

#include "core/progress.h"
#include "parallel/device.h"
#include "parallel/topology.h"
#include "runtime/elastic/watchdog.h"
#include "runtime/job.h"
#include "weft/error.h"
#include "weft/trainer.h"

namespace weft {
namespace {

// request_worker_stop()'s state. Lock-free atomics: it is called from signal handlers.
std::atomic<Trainer*> g_trainer{nullptr};  // the Trainer of the running worker, if any
std::atomic<bool> g_stop{false};           // a stop was requested of this process

void notify_role(const WorkerOptions& opts, WorkerRole role) {
  if (opts.on_role) opts.on_role(role);
}

// Test-only behaviours, chosen by WEFT_TEST_WORKER:
//   allreduce   all-reduce the rank over the world; rank 0 (the primary) prints the sum
//   sleep       print "ready", then wait for a signal (the host's kTest handlers)
//   exit:R:C    like sleep, but rank R exits with code C once every rank is ready
int run_test_worker(const ParallelContext& ctx, const std::string& spec, const WorkerOptions& opts) {
  const int rank = static_cast<int>(ctx.rank());
  if (spec == "allreduce") {
    at::Tensor t = at::full({1}, double(rank + 1));
    all_reduce(ctx.world(), t);
    std::printf("rank %d of %lld in %s: all_reduce ok\n", rank, (long long)ctx.world_size(),
                ctx.dims().describe().c_str());
    if (ctx.is_primary()) std::printf("sum=%g\n", t.item<double>());
    barrier(ctx.world());  // nobody tears its connections down while a peer still uses them
    return 0;
  }
  int exit_rank = -1, exit_code = 0;
  if (spec.rfind("exit:", 0) == 0)
    WEFT_CHECK(std::sscanf(spec.c_str(), "exit:%d:%d", &exit_rank, &exit_code) == 2,
               "WEFT_TEST_WORKER='", spec, "': expected exit:RANK:CODE");
  else
    WEFT_CHECK(spec == "sleep", "WEFT_TEST_WORKER='", spec,
               "': expected allreduce, sleep or exit:R:C");
  notify_role(opts, WorkerRole::kTest);
  std::printf("worker pid %d ready\n", getpid());
  barrier(ctx.world());
  if (rank == exit_rank) {
    std::printf("exiting with code %d\n", exit_code);
    std::fflush(stdout);
    std::_Exit(exit_code);
  }
  for (;;) pause();
}

// A rank beyond the layout (elastic_layout): joins the store so that rendezvous completes, then
// waits for rank 0 to say the job is over. Leaving the spare idle (rather than exiting) keeps the
// job's size what the launcher started, so torchrun treats it as one group; it restarts every
// process, spares included, on the next membership change.
int run_spare(const WorkerEnv& env, const ParallelDims& dims, std::chrono::milliseconds timeout,
              const WorkerOptions& opts) {
  if (opts.console)
    std::printf("rank %lld is a spare: WORLD_SIZE=%lld, training on the first %lld ranks as %s; waiting for "
                "the job to end\n",
                (long long)env.rank, (long long)env.world_size, (long long)dims.world_size(),
                dims.describe().c_str());
  LOG(WARNING) << "rank " << env.rank << " is a spare (" << env.world_size << " processes, layout " << dims.describe() << ")";
  StoreClient store(env, "spares/", timeout, /*member=*/true);
  // A stop request (Ctrl-C forwarded by the launcher, or torchrun stopping its workers): a spare
  // has nothing to finish or save, so it leaves cleanly at once; dying of the signal would make
  // the launcher report a failed job while the training ranks finish their step and save.
  notify_role(opts, WorkerRole::kSpare);
  for (int tick = 0; !g_stop.load(); ++tick) {
    // The store going away (rank 0 died) throws: the job failed, and so does this process.
    if (tick % 5 == 0 && store.add(str("done_", env.world_size), 0) > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (g_stop.load()) LOG(WARNING) << "rank " << env.rank << " (a spare) got a stop signal; exiting";
  try {
    store.add(str("acked_", env.world_size), 1);  // rank 0 need not wait for it at the end
  } catch (const std::exception&) {
    // A stopped job's store may be gone already; there is nobody left to tell.
  }
  return 0;
}

// Rank 0, at the end of a job with spares: releases them, and serves the store until they saw it.
void release_spares(const ParallelContext& ctx, std::chrono::milliseconds timeout) {
  const WorkerEnv& env = ctx.env();
  const int64_t spares = env.world_size - ctx.world_size();
  if (spares <= 0 || env.rank != 0) return;
  StoreClient store(env, ctx.store_root() + "/spares/", timeout);
  store.add(str("done_", env.world_size), 1);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (store.add(str("acked_", env.world_size), 0) < spares && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

// Points request_worker_stop() at a Trainer for the lifetime of this object.
class StopTarget {
 public:
  explicit StopTarget(Trainer& t) {
    g_trainer.store(&t);
    if (g_stop.load()) t.request_stop();  // a request that came while it was being built
  }
  ~StopTarget() { g_trainer.store(nullptr); }
  StopTarget(const StopTarget&) = delete;
  StopTarget& operator=(const StopTarget&) = delete;
};

int train_alone(const Config& cfg, const WorkerOptions& opts) {
  TrainerOptions topts;
  topts.console = opts.console;
  Trainer trainer(cfg, topts);  // refuses a job too large for this machine before allocating it
  StopTarget target(trainer);
  notify_role(opts, WorkerRole::kAlone);
  Watchdog watchdog(cfg.fault, nullptr, (std::filesystem::path(cfg.run.dir) / "metrics.jsonl").string());
  trainer.run();
  watchdog.stop(/*clean=*/true);
  if (opts.console) std::printf("%s\n", train_summary(trainer.status()).c_str());
  return 0;
}

}  // namespace

int run_worker(const Config& cfg, const WorkerEnv& env, const WorkerOptions& opts,
               const std::function<int(const ParallelContext&)>& job) {
  // Lines reach the launcher (a pipe) as they are written, not when a 4 KiB buffer fills.
  if (opts.console) setvbuf(stdout, nullptr, _IOLBF, 0);
  cfg.validate();
  // tp and pp from the config, dp from the processes there are (ranks beyond are spares).
  const ParallelDims dims = elastic_layout(env.world_size, cfg);
  const auto timeout = std::chrono::milliseconds(cfg.parallel.timeout_sec * 1000);
  if (env.rank >= dims.world_size()) return run_spare(env, dims, timeout, opts);
  if (env.is_primary() && dims.world_size() < env.world_size)
    LOG(WARNING) << "training on " << dims.world_size() << " of " << env.world_size << " processes as "
                 << dims.describe() << "; ranks " << dims.world_size() << ".." << env.world_size - 1
                 << " wait as spares (a usable layout needs a multiple of tp × pp whose dp divides "
                 << "train.global_batch_size / train.micro_batch_size)";
  const at::Device device = select_device(cfg.device, static_cast<int>(env.local_rank));
  // Before rendezvous, so every rank checks before any allocates. CPU ranks on one host share its
  // memory: the local ranks are RANK - LOCAL_RANK ... (torchrun's contract).
  std::vector<RankCoord> sharing = {coord_of(dims, env.rank)};
  if (device.is_cpu())
    for (int64_t r = env.rank - env.local_rank; r < env.rank - env.local_rank + env.local_world_size; ++r)
      if (r != env.rank && r >= 0 && r < dims.world_size()) sharing.push_back(coord_of(dims, r));
  check_memory_fits(cfg, dims, sharing, device);
  ParallelContextOptions popts;
  popts.timeout = timeout;
  popts.backend = collective_backend(device);
  std::unique_ptr<ParallelContext> ctx;
  {
    ProgressScope scope(OpKind::kStartup, "rendezvous and process groups");
    ctx = std::make_unique<ParallelContext>(env, dims, popts);
  }
  if (const char* spec = std::getenv("WEFT_TEST_WORKER"); spec && *spec) return run_test_worker(*ctx, spec, opts);
  Watchdog watchdog(cfg.fault, ctx.get(), (std::filesystem::path(cfg.run.dir) / "metrics.jsonl").string());
  const int rc = job(*ctx);
  barrier(ctx->world());  // nobody tears its connections down while a peer still uses them
  watchdog.stop(/*clean=*/true);
  release_spares(*ctx, timeout);
  return rc;
}

bool is_multi_rank_worker() { return worker_env_from_environment().world_size > 1; }

std::string check_local_launch(const Config& cfg, int64_t nproc) {
  // Refuse an impossible layout, or CPU workers whose state cannot fit in this host's memory
  // together, before any worker starts. (GPU workers check their own device.)
  cfg.validate();
  const ParallelDims dims = elastic_layout(nproc, cfg);  // ranks beyond it are spares
  if (cfg.device == "cpu") {
    std::vector<RankCoord> all;
    for (int64_t r = 0; r < dims.world_size(); ++r) all.push_back(coord_of(dims, r));
    check_memory_fits(cfg, dims, all, at::Device(at::kCPU));
  }
  return dims.world_size() == nproc ? dims.describe() : str(dims.describe(), " + ", nproc - dims.world_size(), " spare(s)");
}

void request_worker_stop() {
  g_stop.store(true);
  if (Trainer* t = g_trainer.load()) t->request_stop();
}

std::string train_summary(const TrainerStatus& st) {
  if (st.steps_run == 0 && st.finished)
    return str("train: finished at step ", st.step, ": the checkpoint it resumed from is already at train.steps (",
               st.total_steps, "); raise train.steps to train on");
  char loss[32];
  std::snprintf(loss, sizeof(loss), "%.4f", st.last_loss);
  return str("train: ", st.finished ? "finished" : "stopped", " at step ", st.step, ", final loss ", loss);
}

int run_training_worker(const Config& cfg, const WorkerOptions& opts) {
  g_stop.store(false);
  const WorkerEnv env = worker_env_from_environment();
  if (env.world_size <= 1) return train_alone(cfg, opts);
  bool stopped_by_peer = false;
  const int rc = run_worker(cfg, env, opts, [&](const ParallelContext& ctx) {
    TrainerOptions topts;
    topts.parallel = &ctx;
    topts.console = opts.console;
    Trainer trainer(cfg, topts);
    StopTarget target(trainer);
    notify_role(opts, WorkerRole::kRank);
    trainer.run();
    const auto st = trainer.status();
    if (ctx.is_primary() && opts.console) std::printf("%s\n", train_summary(st).c_str());
    stopped_by_peer = !st.finished && !g_stop.load();
    return 0;
  });
  // Stopped, unfinished, because another rank was asked to stop (ranks agree on stopping). Under
  // torchrun that is usually its agent restarting the job for a membership change, which stops
  // this node's workers too a moment later; exiting 0 first would tell this node's agent that the
  // job succeeded, and it would leave the job. So wait for that stop; if none comes (the other
  // node was preempted or lost), exit non-zero so that this agent restarts the job too.
  if (rc != 0 || !stopped_by_peer || !std::getenv("TORCHELASTIC_RUN_ID")) return rc;
  constexpr int kWaitS = 10;
  LOG(WARNING) << "rank " << env.rank << ": stopped because another rank was asked to stop; waiting up to " << kWaitS
               << " s for this node's agent to stop this worker too";
  for (int i = 0; i < kWaitS * 10 && !g_stop.load(); ++i) usleep(100000);
  if (g_stop.load()) return 0;
  LOG(WARNING) << "rank " << env.rank << ": no stop came from this node's agent; exiting with code " << kFaultExitCode
               << " so that it restarts the job";
  return kFaultExitCode;
}

}  // namespace weft

// The worker side of `weft train` with WORLD_SIZE > 1. The Trainer does not split a model across
// ranks yet (issue 3, items 3-7); until it does, a worker validates, connects every group and
// stops with an error saying so. WEFT_TEST_WORKER replaces training with a scripted behaviour so
// tests/integration/test_launcher.py can exercise the real launcher and rendezvous end to end.
#include "tools/cli/worker.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "parallel/device.h"
#include "parallel/topology.h"

namespace weft {
namespace {

extern "C" void announce_and_die(int sig) {
  char msg[64];
  const int n = std::snprintf(msg, sizeof(msg), "worker pid %d got signal %d\n", getpid(), sig);
  (void)!write(1, msg, static_cast<size_t>(n));
  signal(sig, SIG_DFL);
  raise(sig);
}

// Test-only behaviours, chosen by WEFT_TEST_WORKER:
//   allreduce   all-reduce the rank over the world; rank 0 (the primary) prints the sum
//   sleep       print "ready", then wait for a signal (printing it when it comes)
//   exit:R:C    like sleep, but rank R exits with code C once every rank is ready
int run_test_worker(const ParallelContext& ctx, const std::string& spec) {
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
  signal(SIGTERM, announce_and_die);
  signal(SIGINT, announce_and_die);
  std::printf("worker pid %d ready\n", getpid());
  barrier(ctx.world());
  if (rank == exit_rank) {
    std::printf("exiting with code %d\n", exit_code);
    std::fflush(stdout);
    std::_Exit(exit_code);
  }
  for (;;) pause();
}

}  // namespace

int run_train_worker(const Config& cfg, const WorkerEnv& env) {
  // Lines reach the launcher (a pipe) as they are written, not when a 4 KiB buffer fills.
  setvbuf(stdout, nullptr, _IOLBF, 0);
  cfg.validate();
  const ParallelDims dims = validate_layout(env.world_size, cfg);
  const at::Device device = select_device(cfg.device, static_cast<int>(env.local_rank));
  ParallelContextOptions opts;
  opts.timeout = std::chrono::seconds(cfg.parallel.timeout_sec);
  opts.backend = collective_backend(device);
  const ParallelContext ctx(env, dims, opts);
  if (const char* spec = std::getenv("WEFT_TEST_WORKER"); spec && *spec)
    return run_test_worker(ctx, spec);
  fail(str("rank ", env.rank, ": layout ", dims.describe(), " is valid and all ", env.world_size,
           " ranks connected, but the Trainer cannot split a model across processes yet; run "
           "without --nproc (or with WORLD_SIZE=1)"));
}

}  // namespace weft

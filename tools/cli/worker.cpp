// Stop-signal handlers of a `weft train` worker process; the training itself is
// weft::run_training_worker's.
#include "tools/cli/worker.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <ctime>

namespace weft {
namespace {

// The single process: the first signal asks for a stop; the default action kills on a second.
extern "C" void stop_alone(int sig) {
  request_worker_stop();
  signal(sig, SIG_DFL);
}

std::atomic<int64_t> g_first_stop_ns{0};  // when the first stop signal came (lock-free: signal-safe)

// A rank: the first signal finishes the step in flight (all ranks agree on it), checkpoints and
// exits. A second one stops at once — unless it comes within 2 s of the first: then it is the
// launcher forwarding a signal that reached the whole process group or cgroup too (scancel,
// systemctl).
extern "C" void stop_rank(int sig) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const int64_t now = int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  const int64_t first = g_first_stop_ns.load();
  if (first == 0) {
    g_first_stop_ns.store(now);
    request_worker_stop();
    return;
  }
  if (now - first < 2000000000) return;
  signal(sig, SIG_DFL);
  raise(sig);
}

// A spare leaves cleanly on any signal: dying of it would make the launcher report a failed job
// while the training ranks finish their step and save.
extern "C" void stop_spare(int) { request_worker_stop(); }

extern "C" void announce_and_die(int sig) {
  char msg[64];
  const int n = std::snprintf(msg, sizeof(msg), "worker pid %d got signal %d\n", getpid(), sig);
  (void)!write(1, msg, static_cast<size_t>(n));
  signal(sig, SIG_DFL);
  raise(sig);
}

void install(void (*handler)(int)) {
  signal(SIGTERM, handler);
  signal(SIGINT, handler);
}

}  // namespace

WorkerOptions cli_worker_options() {
  WorkerOptions opts;
  opts.console = true;
  opts.on_role = [](WorkerRole role) {
    switch (role) {
      case WorkerRole::kAlone: return install(stop_alone);
      case WorkerRole::kRank: return install(stop_rank);
      case WorkerRole::kSpare: return install(stop_spare);
      case WorkerRole::kTest: return install(announce_and_die);
    }
  };
  return opts;
}

}  // namespace weft

#include "runtime/checkpoint/fault.h"

#include <glog/logging.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "weft/error.h"

namespace weft::fault {
namespace {

constexpr const char* kPoints[] = {"snapshot", "write", "fragment", "manifest", "rename", "latest", "retention"};

struct Armed {
  std::string point;  // empty: inert
  int64_t save = 1, rank = 0;
};

std::atomic<int64_t> g_rank{0}, g_save{0}, g_step{-1};
std::mutex g_mu;
Armed g_by_step;  // guarded by g_mu; Armed::save holds the step here

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  WEFT_CHECK(end && *end == '\0', name, "='", v, "' is not an integer");
  return x;
}

const Armed& armed() {
  static const Armed a = [] {
    Armed a;
    const char* p = std::getenv("WEFT_CHECKPOINT_FAULT");
    if (!p || !*p) return a;
    bool known = false;
    for (const char* k : kPoints) known |= std::strcmp(k, p) == 0;
    WEFT_CHECK(known, "WEFT_CHECKPOINT_FAULT='", p, "' is not a fault point; use one of snapshot, write, "
               "fragment, manifest, rename, latest, retention");
    a.point = p;
    a.save = env_int("WEFT_CHECKPOINT_FAULT_SAVE", 1);
    a.rank = env_int("WEFT_CHECKPOINT_FAULT_RANK", 0);
    return a;
  }();
  return a;
}

}  // namespace

void set_rank(int64_t rank) { g_rank = rank; }
void begin_save(int64_t step) {
  g_save += 1;
  g_step = step;
}

void arm_at_step(const char* point, int64_t step, int64_t rank) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_by_step = Armed{point, step, rank};
}

void point(const char* name) {
  const Armed& a = armed();
  bool by_step = false;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    by_step = g_by_step.point == name && g_rank.load() == g_by_step.rank &&
              (g_by_step.save == -1 ? g_save.load() == 1 : g_step.load() == g_by_step.save);
  }
  if (!by_step && (a.point != name || g_save.load() != a.save || g_rank.load() != a.rank)) return;
  LOG(ERROR) << "fault injection: rank " << g_rank.load() << " dies at checkpoint point '" << name << "' of the save of step "
             << g_step.load();
  google::FlushLogFiles(google::GLOG_INFO);
  ::kill(::getpid(), SIGKILL);
}

}  // namespace weft::fault

#include "core/progress.h"

#include <time.h>

#include <mutex>

namespace weft {
namespace {

std::mutex g_mu;
ProgressState g_state;  // guarded by g_mu

}  // namespace

int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

const char* op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kIdle: return "idle";
    case OpKind::kStartup: return "startup";
    case OpKind::kCompute: return "compute";
    case OpKind::kCollective: return "collective";
    case OpKind::kP2P: return "p2p";
    case OpKind::kData: return "data";
    case OpKind::kCheckpoint: return "checkpoint";
  }
  return "?";
}

ProgressScope::ProgressScope(OpKind kind, std::string what) {
  const int64_t now = monotonic_ns();
  std::lock_guard<std::mutex> lock(g_mu);
  prev_kind_ = g_state.kind;
  prev_what_ = std::move(g_state.what);
  g_state.kind = kind;
  g_state.what = std::move(what);
  g_state.last_change_ns = now;
}

ProgressScope::~ProgressScope() {
  const int64_t now = monotonic_ns();
  std::lock_guard<std::mutex> lock(g_mu);
  g_state.kind = prev_kind_;
  g_state.what = std::move(prev_what_);
  g_state.last_change_ns = now;
}

void set_progress_step(int64_t step) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_state.step = step;
  g_state.last_change_ns = monotonic_ns();
}

ProgressState progress_state() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_state;
}

}  // namespace weft

#include "runtime/elastic/watchdog.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "weft/error.h"
#include "core/progress.h"
#include "parallel/comm.h"

namespace weft {
namespace {

// A counter at or above this means "left on purpose".
constexpr int64_t kLeft = int64_t(1) << 40;

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void append_line(const std::string& path, const std::string& line) {
  if (path.empty()) return;
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  const std::string l = line + "\n";
  (void)!::write(fd, l.data(), l.size());  // one write: appended whole, even beside other ranks
  ::close(fd);
}

}  // namespace

Watchdog::Watchdog(const FaultConfig& cfg, const ParallelContext* ctx, std::string events_path)
    : cfg_(cfg), events_path_(std::move(events_path)), start_ns_(monotonic_ns()) {
  if (ctx) rank_ = ctx->rank(), world_ = ctx->world_size();
  if (world_ > 1 && cfg_.heartbeat_interval_s > 0) {
    const auto timeout = std::chrono::milliseconds(int64_t(std::max(cfg_.heartbeat_timeout_s, 1.0) * 1000));
    store_ = std::make_unique<StoreClient>(ctx->env(), ctx->store_root() + "/elastic/", timeout);
  }
  if (cfg_.hang_timeout_s <= 0 && !store_) return;
  thread_ = std::thread([this] { loop(); });
  if (store_) beat_thread_ = std::thread([this] { beat_loop(); });
}

Watchdog::~Watchdog() { stop(false); }

void Watchdog::stop(bool clean) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  // The heartbeats first: while one is blocked on a frozen store, loop() still ends the process.
  if (beat_thread_.joinable()) beat_thread_.join();
  if (thread_.joinable()) thread_.join();
  if (clean && store_) {
    try {
      store_->add(str("hb/", rank_), kLeft);
    } catch (const std::exception&) {
      // The job is over; a peer that misses this exits a little later, that is all.
    }
  }
}

void Watchdog::loop() {
  const int64_t hang_ns = int64_t(cfg_.hang_timeout_s * 1e9);
  const int64_t silent_ns = int64_t(cfg_.heartbeat_timeout_s * 1e9);
  // Wake often enough to notice a hang or a stuck store call within a quarter of a second.
  const auto tick = std::chrono::milliseconds(250);
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, tick, [&] { return stopping_; })) return;
    }
    const int64_t now = monotonic_ns();
    // Start-up (before the first step: rendezvous, loading, a first data index build) is bounded
    // by parallel.timeout_sec instead; a one-time index build may rightly take long.
    if (hang_ns > 0 && progress_state().step > 0) {
      const ProgressState st = progress_state();
      const int64_t last = std::max(st.last_change_ns, start_ns_);
      if (now - last > hang_ns) {
        FaultReport r;
        r.kind = "hang", r.rank = rank_, r.op = op_kind_name(st.kind), r.what = st.what, r.step = st.step;
        r.stalled_s = double(now - last) / 1e9;
        r.message = str("rank ", rank_, ": no progress for ", int64_t(r.stalled_s * 10) / 10.0, " s (fault.hang_timeout_s=",
                        cfg_.hang_timeout_s, ") at step ", st.step, ", stuck in ", r.op,
                        st.what.empty() ? "" : ": ", st.what, "; exiting so the job restarts from its last checkpoint");
        die(std::move(r));
      }
    }
    // A heartbeat round trip pending this long: the store's host is frozen or cut off.
    const int64_t call = store_call_ns_.load();
    if (call > 0 && now - call > silent_ns) {
      FaultReport r;
      r.kind = "store_lost", r.rank = rank_, r.step = progress_state().step;
      r.stalled_s = double(now - call) / 1e9;
      r.message = str("rank ", rank_, ": the job's store did not answer a heartbeat for ", int64_t(r.stalled_s * 10) / 10.0,
                      " s (fault.heartbeat_timeout_s=", cfg_.heartbeat_timeout_s,
                      "): its host (rank 0 or the rendezvous host) is frozen or cut off; exiting so the job restarts");
      die(std::move(r));
    }
  }
}

void Watchdog::beat_loop() {
  const int64_t beat_ns = int64_t(cfg_.heartbeat_interval_s * 1e9);
  const int64_t silent_ns = int64_t(cfg_.heartbeat_timeout_s * 1e9);
  const int64_t peer = (rank_ + 1) % world_;
  int64_t peer_count = -1, peer_seen_ns = monotonic_ns();
  bool peer_left = false;
  const auto tick = std::chrono::milliseconds(std::max<int64_t>(beat_ns / 1000000, 10));
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, tick, [&] { return stopping_; })) return;
    }
    try {
      store_call_ns_.store(monotonic_ns());
      store_->add(str("hb/", rank_), 1);
      if (store_->add("abort", 0) > 0) {
        FaultReport r;
        r.kind = "peer_fault", r.rank = rank_, r.step = progress_state().step;
        r.message = str("rank ", rank_, ": another rank reported a fault (", store_->get("abort_reason"),
                        "); exiting so the job restarts");
        die(std::move(r));
      }
      const bool watch = !peer_left && peer != rank_;
      const int64_t count = watch ? store_->add(str("hb/", peer), 0) : 0;
      store_call_ns_.store(0);
      if (!watch) continue;
      const int64_t now = monotonic_ns();
      if (count >= kLeft) {
        peer_left = true;
      } else if (count != peer_count) {
        peer_count = count, peer_seen_ns = now;
      } else if (now - peer_seen_ns > silent_ns) {
        FaultReport r;
        r.kind = "dead_peer", r.rank = rank_, r.peer = peer, r.step = progress_state().step;
        r.stalled_s = double(now - peer_seen_ns) / 1e9;
        r.message = str("rank ", rank_, ": rank ", peer, " sent no heartbeat for ", int64_t(r.stalled_s * 10) / 10.0,
                        " s (fault.heartbeat_timeout_s=", cfg_.heartbeat_timeout_s,
                        "): it died, hangs with its process frozen, or its node is cut off; exiting so the job restarts");
        die(std::move(r));
      }
    } catch (const Error& e) {
      FaultReport r;
      r.kind = "store_lost", r.rank = rank_, r.step = progress_state().step;
      r.message = str("rank ", rank_, ": lost the job's store (", e.what(),
                      "): the rendezvous host or rank 0 is gone; exiting so the job restarts");
      die(std::move(r));
    }
  }
}

void Watchdog::die(FaultReport r) {
  // Both threads may find a fault at once: the first reports and exits, the other waits for it.
  static std::atomic<bool> dying{false};
  if (dying.exchange(true))
    for (;;) ::pause();
  LOG(ERROR) << r.message;
  std::fprintf(stderr, "weft: %s\n", r.message.c_str());
  std::fflush(stderr);
  nlohmann::json j = {{"event", "fault"}, {"kind", r.kind}, {"rank", r.rank}, {"step", r.step}, {"time", unix_seconds()}};
  if (r.peer >= 0) j["peer"] = r.peer;
  if (!r.op.empty()) j["op"] = r.op, j["what"] = r.what;
  if (r.stalled_s > 0) j["stalled_s"] = r.stalled_s;
  append_line(events_path_, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  // A dead peer is news to the others (they may be computing); a hang stalls them all, and each
  // notices its own.
  if (store_ && r.kind == "dead_peer") {
    try {
      store_->set("abort_reason", r.message);
      store_->add("abort", 1);
    } catch (const std::exception&) {
    }
  }
  google::FlushLogFiles(google::GLOG_INFO);
  std::_Exit(kFaultExitCode);
}

}  // namespace weft

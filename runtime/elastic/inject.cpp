#include "runtime/elastic/inject.h"

#include <glog/logging.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>

#include "weft/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "runtime/checkpoint/fault.h"

namespace weft {

FaultInjector::FaultInjector(const FaultConfig& cfg, int64_t rank, int64_t world, int64_t restart_count,
                             std::string run_dir)
    : cfg_(cfg), rank_(rank), marker_((std::filesystem::path(run_dir) / ".weft_fault_fired").string()) {
  const bool any = cfg_.kill_step > 0 || cfg_.hang_step > 0 || cfg_.slow_rank >= 0 || cfg_.nan_step > 0 ||
                   cfg_.checkpoint_kill_step() != 0;
  if (!any) return;
  std::error_code ec;
  const bool fired = std::filesystem::exists(marker_, ec);
  armed_ = restart_count == 0 && !fired;
  if (armed_)
    LOG(WARNING) << "fault injection armed";
  else if (fired)
    LOG(WARNING) << "fault injection disarmed: it fired in an earlier run of this run.dir (" << marker_ << ")";
  else
    LOG(WARNING) << "fault injection disarmed: this is restart " << restart_count << " of the job (TORCHELASTIC_RESTART_COUNT)";
  if (!armed_) return;
  // A drill aimed at a rank that does not train (beyond the layout, or a spare) would never fire.
  for (const auto& [r, key] : {std::pair{cfg_.kill_rank, "fault.kill_rank"}, {cfg_.hang_rank, "fault.hang_rank"},
                               {cfg_.slow_rank, "fault.slow_rank"}})
    WEFT_CHECK(r < world, "config: ", key, " (", r, ") is not a training rank (this job trains on ", world,
               " rank(s)), so the fault would never fire; pick a rank in 0..", world - 1);
  if (const int64_t at = cfg_.checkpoint_kill_step())
    fault::arm_at_step("write", at, std::max<int64_t>(cfg_.kill_rank, 0));
}

void FaultInjector::before_save(int64_t step) {
  const int64_t at = armed_ ? cfg_.checkpoint_kill_step() : 0;
  if (at != 0 && (at == -1 || at == step) && rank_ == std::max<int64_t>(cfg_.kill_rank, 0))
    mark_fired(str("fault.kill_during_checkpoint: SIGKILL while writing step ", step).c_str());
}

void FaultInjector::mark_fired(const char* what) {
  LOG(WARNING) << "fault injection: rank " << rank_ << ": " << what;
  try {
    write_file_atomic(marker_, str(what, "\n"));
  } catch (const std::exception& e) {
    LOG(ERROR) << "fault injection: cannot write " << marker_ << ": " << e.what();
  }
}

void FaultInjector::at_step(int64_t step) {
  if (!armed_) return;
  if (cfg_.kill_rank == rank_ && cfg_.kill_step == step) {
    mark_fired(str("fault.kill_rank: SIGKILL in step ", step).c_str());
    google::FlushLogFiles(google::GLOG_INFO);
    ::kill(::getpid(), SIGKILL);
  }
  if (cfg_.hang_rank == rank_ && cfg_.hang_step == step) {
    mark_fired(str("fault.hang_rank: hangs in step ", step).c_str());
    ProgressScope scope(OpKind::kCompute, "forward (fault.hang_rank: an injected hang)");
    for (;;) ::pause();
  }
}

bool FaultInjector::nan_at(int64_t step) {
  if (!armed_ || nan_done_ || cfg_.nan_step == 0) return false;
  const bool hit = step >= cfg_.nan_step && step < cfg_.nan_step + cfg_.nan_count;
  if (hit && step == cfg_.nan_step && rank_ == 0) mark_fired(str("fault.nan_step: NaN loss from step ", step).c_str());
  if (step >= cfg_.nan_step + cfg_.nan_count - 1) nan_done_ = hit ? nan_done_ : true;
  return hit;
}

}  // namespace weft

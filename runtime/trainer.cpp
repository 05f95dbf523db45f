// The training loop. run() loops over train_step(), which reads like the algorithm: zero the
// gradients -> forward/backward of every micro-batch over the pipeline schedule -> finish the
// gradient sync -> global grad norm and clip -> optimizer step -> report. Building the model
// (ParallelModel), checkpoints (Checkpointer) and reporting (Reporter) are the pieces it owns.
// Resume restores model, optimizer, schedule position, data position and RNG, so a resumed run
// continues bit for bit.
#include "weft/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <glog/logging.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <thread>

#include "weft/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "models/lora.h"
#include "parallel/comm.h"
#include "parallel/device.h"
#include "parallel/pipeline/executor.h"
#include "parallel/topology.h"
#include "runtime/checkpointer.h"
#include "runtime/data/gpt_dataset.h"
#include "runtime/elastic/inject.h"
#include "runtime/job.h"
#include "runtime/optim/optimizer.h"
#include "runtime/parallel_model.h"
#include "runtime/perf.h"
#include "runtime/reporter.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

using Clock = std::chrono::steady_clock;

// An exclusive lock on RUN_DIR/.weft.lock for a job's life: a second job on the same run
// directory (another process, or another Trainer of this one) would interleave its checkpoints
// and metrics with this one's and lose both. Released when the process dies.
class RunDirLock {
 public:
  explicit RunDirLock(const std::string& dir) {
    const std::string path = (fs::path(dir) / ".weft.lock").string();
    fd_ = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    WEFT_CHECK(fd_ >= 0, "cannot open ", path, ": ", std::strerror(errno), "; point run.dir at a directory you can write");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      fail(str("run.dir ", dir, " is in use by another training job; wait for it to end or use another run.dir"));
    }
  }
  ~RunDirLock() { ::close(fd_); }
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int fd_ = -1;
};

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double peak_rss_mb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

// Seconds since this process started (/proc/self/stat starttime against /proc/uptime); 0 if unknown.
double process_age_seconds() {
  std::ifstream stat("/proc/self/stat"), up("/proc/uptime");
  std::string line;
  double uptime = 0;
  if (!std::getline(stat, line) || !(up >> uptime)) return 0;
  std::istringstream rest(line.substr(line.rfind(')') + 2));  // fields from 3 on
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i)
    if (i == 22) return std::max(0.0, uptime - std::stod(field) / double(sysconf(_SC_CLK_TCK)));
  return 0;
}

Group single_stage_group() {
  Group g;
  g.name = "pp";
  g.ranks = {0};
  g.rank = 0;
  return g;
}

// A micro-batch's packed-example positions on the device, or undefined (none, or no batch here).
at::Tensor positions_on(const MicroBatch* mb, const at::Device& device) {
  return mb && mb->positions.defined() ? mb->positions.to(device) : at::Tensor();
}

}  // namespace

struct Trainer::State {
  const ParallelContext* ctx = nullptr;
  ParallelDims dims;
  RankCoord coord;
  bool primary = true;  // writes config, metrics, checkpoint metadata and the console
  std::unique_ptr<RunDirLock> run_lock;  // the primary's, for the job's life
  bool ran = false;                       // run() was called
  at::Generator rng;    // the job's CPU generator (LoRA dropout), saved with each checkpoint
  Clock::time_point run_start;
  at::Device device{at::kCPU};
  std::unique_ptr<ParallelModel> model;
  std::unique_ptr<Checkpointer> checkpointer;
  std::unique_ptr<Reporter> reporter;
  Schedule schedule;
  std::shared_ptr<SampleSource> train_data, valid_data;
  int64_t step = 0, consumed_samples = 0, last_saved = 0;
  std::unique_ptr<FaultInjector> faults;
  int64_t bad_steps = 0;          // consecutive steps skipped for a non-finite gradient
  int64_t rolled_back_to = -1;    // the checkpoint step of the last rollback
  double compute_ms = 0;          // this rank's compute since the last straggler check
  int64_t compute_steps = 0;
  nlohmann::json start_record;    // the resume record, written with the first completed step
  bool stopping = false;  // agreed over every rank after each step
  int64_t failed_saves = 0;      // consecutive failed checkpoint saves
  std::string last_save_error;   // the newest failed save's error
  std::string save_error;        // the failure that stops training (checkpoint.on_error=stop)
  double flops_per_token = 0, peak_flops = 0;
  Group alone = single_stage_group();

  // The pipeline group; one process is a pipeline of one stage.
  const Group& pp() const { return ctx ? ctx->pp() : alone; }
  int64_t num_stages() const { return dims.pp * dims.vpp; }
  int64_t stage_of(int64_t chunk) const { return chunk * dims.pp + coord.pp; }
  bool holds_stage(int64_t stage) const { return stage % dims.pp == coord.pp; }
  int64_t micro_batches() const { return schedule.microbatches; }
  bool sequence_parallel(const Config& cfg) const { return cfg.parallel.sequence_parallel && dims.tp > 1; }
  // A receive buffer for a stage boundary activation of `rows` sequences: (B, T, C) or (B, T/tp, C).
  at::Tensor boundary(const Config& cfg, int64_t rows) const {
    const int64_t T = cfg.train.seq_len / (sequence_parallel(cfg) ? dims.tp : 1);
    return at::empty({rows, T, cfg.model.hidden_size}, at::TensorOptions().dtype(at::kFloat).device(device));
  }
};

// This DP rank's micro-batches of one global batch, on the host (ranks holding neither the
// first nor the last stage load none), and how many labels count over the whole global batch.
struct Trainer::Batch {
  std::vector<MicroBatch> micro;
  int64_t global_counted = 0;
  // Every micro-batch of every DP rank counts the same number of labels (always so without a
  // loss mask). Then the token mean is computed as the mean of the micro-batch means, the
  // arithmetic (and rounding) Weft used before loss masks existed.
  bool uniform = true;
};

struct Trainer::Pass {
  at::Tensor loss;  // (), double, on the device: sum of micro-batch means (uniform) or of mean x count
  PipelineStats pipe;
};

Trainer::Trainer(Config cfg, TrainerOptions opts) : cfg_(std::move(cfg)), opts_(opts), s_(new State) {
  cfg_.validate();
  auto& s = *s_;
  s.ctx = opts_.parallel;
  // One process is the 1-rank grid; a layout that needs more ranks is refused here.
  s.dims = validate_layout(s.ctx ? s.ctx->world_size() : 1, cfg_);
  if (s.ctx) s.coord = s.ctx->coord(), s.primary = s.ctx->is_primary();
  s.device = select_device(cfg_.device, s.ctx ? int(s.ctx->env().local_rank) : 0);
  if (cfg_.train.threads > 0) at::set_num_threads(int(cfg_.train.threads));
  // A model too large for this rank is refused now, not by the OOM killer minutes later.
  check_memory_fits(cfg_, s.dims, s.coord, s.device);

  s.train_data = open_dataset(cfg_, DataSplit::kTrain);
  if (cfg_.train.eval_interval > 0) s.valid_data = open_dataset(cfg_, DataSplit::kValid);
  if (s.primary) {
    std::error_code ec;
    fs::create_directories(cfg_.run.dir, ec);
    WEFT_CHECK(!ec, "cannot create run.dir '", cfg_.run.dir, "': ", ec.message());
    s.run_lock = std::make_unique<RunDirLock>(cfg_.run.dir);
    write_file_atomic((fs::path(cfg_.run.dir) / "config.yaml").string(), to_yaml(cfg_));
    LOG(INFO) << "resolved config:\n" << to_yaml(cfg_);
    // Refused now rather than at the first save, hours in.
    fs::create_directories(cfg_.checkpoint_dir(), ec);
    WEFT_CHECK(!ec && fs::is_directory(cfg_.checkpoint_dir()), "cannot create checkpoint.dir '", cfg_.checkpoint_dir(),
               "': ", ec ? ec.message() : "not a directory", "; point checkpoint.dir at a directory you can write");
  }
  // Fresh runs are reproducible to the byte (the generator's state is saved with each checkpoint).
  // The job's own generator: jobs on other threads of this process draw from theirs.
  s.rng = at::make_generator<at::CPUGeneratorImpl>(uint64_t(cfg_.train.seed));

  s.model = std::make_unique<ParallelModel>(cfg_, s.ctx, s.device);
  const int64_t micro = cfg_.train.global_batch_size / (cfg_.train.micro_batch_size * s.dims.dp);
  const auto& name = cfg_.parallel.schedule.empty() ? default_schedule_name(s.dims.vpp) : cfg_.parallel.schedule;
  s.schedule = build_schedule(name, s.dims.pp, s.dims.vpp, micro);
  s.flops_per_token = training_flops_per_token(cfg_.model, cfg_.train.seq_len);
  s.peak_flops = cfg_.run.peak_tflops > 0
                     ? cfg_.run.peak_tflops * 1e12
                     : measure_matmul_peak_flops(cfg_.precision == "bf16" ? at::kBFloat16 : at::kFloat, s.device, 0.3);
  s.reporter = std::make_unique<Reporter>(cfg_, s.primary, opts_.console);
  s.checkpointer = std::make_unique<Checkpointer>(cfg_, s.ctx, s.model->params(), s.model->optimizer(), s.rng);

  s.faults = std::make_unique<FaultInjector>(cfg_.fault, s.ctx ? s.ctx->rank() : 0, s.dims.world_size(),
                                             s.ctx ? s.ctx->env().restart_count : 0, cfg_.run.dir);

  // Every start is recorded (with its first step): {"event":"resume","step","world_size","dp","seconds"}
  // and, when it continues a checkpoint, "checkpoint" and "load_ms".
  s.start_record = {{"event", "resume"}, {"step", 0}, {"world_size", s.dims.world_size()}, {"dp", s.dims.dp}};
  if (s.ctx && s.ctx->env().world_size > s.dims.world_size())
    s.start_record["spares"] = s.ctx->env().world_size - s.dims.world_size();
  const auto restore_start = Clock::now();
  std::optional<RestoredState> restored;
  {
    ProgressScope scope(OpKind::kCheckpoint, "restoring from checkpoint.dir");
    restored = s.checkpointer->restore();
  }
  if (auto& r = restored) {
    const double load_ms = ms_since(restore_start);
    s.step = r->step, s.consumed_samples = r->consumed_samples;
    for (const auto& [dir, error] : r->skipped)
      s.reporter->event({{"event", "checkpoint_fallback"}, {"from", dir}, {"to", r->dir}, {"error", error}});
    LOG(INFO) << (r->resumed ? "resumed from " : "initialised weights from ") << r->dir << " at step " << s.step
              << " (" << load_ms << " ms)";
    if (r->resumed) {
      s.start_record["step"] = s.step, s.start_record["checkpoint"] = r->dir, s.start_record["load_ms"] = load_ms;
    } else {
      s.reporter->event({{"event", "init_from"}, {"step", s.step}, {"checkpoint", r->dir}, {"load_ms", load_ms}});
    }
  }
  // Every start, also one from step 0 (a restart before the first checkpoint): the rows an earlier
  // attempt logged past this step are about to be redone.
  s.reporter->resumed_at(s.step);
  status_.step = s.step;
  status_.total_steps = cfg_.train.steps;
}

Trainer::~Trainer() = default;

TrainerStatus Trainer::status() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return status_;
}

void Trainer::on_step(std::function<void(const StepMetrics&)> cb) {
  std::lock_guard<std::mutex> lock(callbacks_mu_);
  step_callbacks_.push_back(std::move(cb));
}

void Trainer::on_eval(std::function<void(int64_t step, double loss)> cb) {
  std::lock_guard<std::mutex> lock(callbacks_mu_);
  eval_callbacks_.push_back(std::move(cb));
}

void Trainer::on_checkpoint(std::function<void(const CheckpointEvent&)> cb) {
  std::lock_guard<std::mutex> lock(callbacks_mu_);
  checkpoint_callbacks_.push_back(std::move(cb));
}

const char* trainer_state_name(TrainerState state) {
  switch (state) {
    case TrainerState::kCreated: return "created";
    case TrainerState::kRunning: return "running";
    case TrainerState::kStopping: return "stopping";
    case TrainerState::kFinished: return "finished";
    case TrainerState::kStopped: return "stopped";
    case TrainerState::kFailed: return "failed";
  }
  return "unknown";
}

void Trainer::run() {
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    WEFT_CHECK(!s_->ran, "Trainer::run() was already called; to resume the job, construct a new Trainer from its config");
    s_->ran = true;
    status_.running = true, status_.failed = false, status_.error.clear();
    status_.state = TrainerState::kRunning;
    status_.steps_run = 0;
    status_.eta_sec = -1;
  }
  s_->run_start = Clock::now();
  try {
    DropoutGeneratorScope rng(s_->rng);
    train_loop();
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.running = false, status_.failed = true, status_.error = e.what();
    status_.state = TrainerState::kFailed;
    throw;
  }
  std::lock_guard<std::mutex> lock(status_mu_);
  status_.running = false;
  status_.finished = s_->step >= cfg_.train.steps;
  status_.state = status_.finished ? TrainerState::kFinished : TrainerState::kStopped;
  status_.eta_sec = status_.finished ? 0 : -1;
}

void Trainer::train_loop() {
  auto& s = *s_;
  const auto& t = cfg_.train;
  const int64_t first_step = s.step;
  s.last_saved = s.step;
  // A stop requested before run() (one process) ends it before any step; ranks of a job agree on
  // stopping after a step, so there it takes effect after the first.
  s.stopping = stop_.load() && (!s.ctx || s.ctx->world_size() == 1);
  s.reporter->start(first_step);
  while (s.step < t.steps && !s.stopping) {
    notify(train_step());
    if (cfg_.fault.max_bad_steps > 0 && s.bad_steps >= cfg_.fault.max_bad_steps) {
      roll_back();
      continue;
    }
    if (s.valid_data && s.step % t.eval_interval == 0) {
      const double vloss = evaluate_valid();
      s.reporter->eval(s.step, vloss);
      std::vector<std::function<void(int64_t, double)>> callbacks;
      {
        std::lock_guard<std::mutex> lock(callbacks_mu_);
        callbacks = eval_callbacks_;
      }
      for (auto& cb : callbacks) cb(s.step, vloss);
    }
    // Stopping (agreed over ranks): the save after the loop is the last one.
    if (!s.stopping && cfg_.checkpoint.interval > 0 && s.step % cfg_.checkpoint.interval == 0) {
      // Not in a run of skipped steps that may yet roll back: the rollback target must be the state
      // before the run (to replay its steps), and this save would also retire an older checkpoint.
      if (cfg_.fault.max_bad_steps > 0 && s.bad_steps > 0)
        LOG(WARNING) << "checkpoint of step " << s.step << " not saved: the step's update was skipped (" << s.bad_steps
                     << " non-finite in a row); a rollback returns to the checkpoint before them";
      else
        save();
    }
  }
  // Every rank learns how the saves so far ended before deciding on the last one together.
  report_saves(finish_saves());
  // The last state is always saved; so is step 0 of a run that trains no step. Not after a failed
  // save stopped training (checkpoint.on_error=stop).
  if (s.save_error.empty() && (s.step != s.last_saved || (s.step == first_step && first_step == 0))) save();
  report_saves(finish_saves());
  WEFT_CHECK(s.save_error.empty(), "training stopped at step ", s.step, " (checkpoint.on_error=stop): ", s.save_error);
  // on_error=continue tolerates a failed save mid-run, not losing the last state.
  WEFT_CHECK(s.failed_saves == 0, "the last checkpoint (step ", s.step, ") could not be saved, so the steps since the ",
             "last complete checkpoint are lost: ", s.last_save_error);
}

std::vector<SaveOutcome> Trainer::finish_saves() {
  ProgressScope scope(OpKind::kCheckpoint, "waiting for the checkpoint writer");
  return s_->checkpointer->finish();
}

void Trainer::report_saves(const std::vector<SaveOutcome>& outcomes) {
  auto& s = *s_;
  for (const auto& o : outcomes) {
    s.failed_saves = o.ok ? 0 : s.failed_saves + 1;
    if (!o.ok) {
      s.last_save_error = o.error;
      LOG(ERROR) << "checkpoint of step " << o.step << " failed (" << s.failed_saves << " in a row): " << o.error
                 << "; `latest` is unchanged"
                 << (cfg_.checkpoint.on_error == "stop" ? "; stopping (checkpoint.on_error=stop)" : "; training goes on");
      if (cfg_.checkpoint.on_error == "stop" && s.save_error.empty()) s.save_error = o.error;
    }
    s.reporter->checkpoint(o, s.failed_saves);
    if (o.ok) {
      std::lock_guard<std::mutex> lock(status_mu_);
      status_.last_checkpoint = o.dir;
    }
    std::vector<std::function<void(const CheckpointEvent&)>> callbacks;
    {
      std::lock_guard<std::mutex> lock(callbacks_mu_);
      callbacks = checkpoint_callbacks_;
    }
    const CheckpointEvent e{o.step, o.ok, o.dir, o.error, o.bytes, o.blocking_ms};
    for (auto& cb : callbacks) cb(e);
  }
}

StepMetrics Trainer::train_step() {
  auto& s = *s_;
  const auto t0 = Clock::now();
  set_progress_step(s.step + 1);
  s.faults->at_step(s.step + 1);
  const double lr = learning_rate(cfg_.optim, s.step, cfg_.train.steps);
  s.model->zero_grad();
  Batch batch;
  {
    ProgressScope scope(OpKind::kData, str("reading the batch of step ", s.step + 1));
    batch = next_batch();
  }
  const Pass pass = forward_backward(batch, s.faults->nan_at(s.step + 1));
  const double sync_ms = s.model->finish_grad_sync();
  const double grad_norm = clip_global_grad_norm(s.model->optimizer(), cfg_.optim.clip_grad);
  // grad_norm is global, so every rank takes the same branch. A non-finite gradient skips the
  // update (the step and its data still count, as in Megatron's skipped iterations).
  const bool finite = std::isfinite(grad_norm);
  if (finite) {
    {
      ProgressScope scope(OpKind::kCheckpoint, "waiting for the snapshot copy");
      s.checkpointer->before_optimizer_step();  // a snapshot being copied must not see this update
    }
    s.model->optimizer().step(lr);
  }
  s.bad_steps = finite ? 0 : s.bad_steps + 1;
  report_saves(s.checkpointer->poll());
  s.step += 1;
  s.consumed_samples += cfg_.train.global_batch_size;

  StepMetrics m = agree(pass, batch, lr, grad_norm, sync_ms);
  const double seconds = ms_since(t0) / 1e3;
  m.step_ms = seconds * 1e3;
  m.tokens_per_sec = double(cfg_.train.global_batch_size * cfg_.train.seq_len) / seconds;
  m.mfu = m.tokens_per_sec * s.flops_per_token / (s.peak_flops * double(s.dims.world_size()));
  if (!s.start_record.is_null()) {
    s.start_record["seconds"] = process_age_seconds();
    s.reporter->event(s.start_record);
    s.start_record = nullptr;
  }
  s.reporter->step(m, s.dims.dp, s.dims.pp);
  if (!finite) {
    LOG(WARNING) << "step " << s.step << ": non-finite gradient norm (" << grad_norm << "), update skipped ("
                 << s.bad_steps << " in a row; fault.max_bad_steps=" << cfg_.fault.max_bad_steps << ")";
    s.reporter->event({{"event", "bad_step"}, {"step", s.step}, {"consecutive", s.bad_steps}});
  }
  check_stragglers(pass.pipe.compute_ms);
  return m;
}

void Trainer::check_stragglers(double compute_ms) {
  auto& s = *s_;
  s.compute_ms += compute_ms, s.compute_steps += 1;
  const int64_t every = cfg_.fault.straggler_interval, world = s.ctx ? s.ctx->world_size() : 1;
  if (every == 0 || world == 1 || s.step % every != 0) return;
  // Compute time per rank (waiting in collectives excluded), so a slow rank stands out even though
  // every rank's step takes as long as the slowest's.
  auto per_rank = at::zeros({world}, at::kDouble);
  per_rank[s.ctx->rank()] = s.compute_ms / double(std::max<int64_t>(s.compute_steps, 1));
  all_reduce(s.ctx->world(), per_rank);
  s.compute_ms = 0, s.compute_steps = 0;
  std::vector<double> ms(per_rank.data_ptr<double>(), per_rank.data_ptr<double>() + world);
  std::vector<double> sorted = ms;
  // The lower median: with two ranks, the faster one is the yardstick.
  std::nth_element(sorted.begin(), sorted.begin() + (world - 1) / 2, sorted.end());
  const double median = sorted[size_t((world - 1) / 2)];
  std::vector<int64_t> slow;
  std::vector<double> slow_ms;
  for (int64_t r = 0; r < world; ++r)
    if (ms[r] > cfg_.fault.straggler_factor * median && ms[r] - median > 1.0) slow.push_back(r), slow_ms.push_back(ms[r]);
  if (slow.empty()) return;
  std::string list;
  for (size_t i = 0; i < slow.size(); ++i) list += str(i ? ", " : "", "rank ", slow[i], " ", int64_t(slow_ms[i]), " ms");
  if (s.primary)
    LOG(WARNING) << "stragglers over steps " << s.step - every + 1 << ".." << s.step << ": " << list
                 << " of compute per step against a median of " << int64_t(median) << " ms (fault.straggler_factor="
                 << cfg_.fault.straggler_factor << ")";
  s.reporter->event({{"event", "straggler"}, {"step", s.step}, {"ranks", slow}, {"compute_ms", slow_ms},
                     {"median_ms", median}});
}

void Trainer::roll_back() {
  auto& s = *s_;
  report_saves(finish_saves());
  const auto latest = find_latest_checkpoint(cfg_.checkpoint_dir());
  WEFT_CHECK(latest, s.bad_steps, " consecutive steps up to step ", s.step, " had a non-finite gradient ",
             "(fault.max_bad_steps=", cfg_.fault.max_bad_steps, ") and there is no checkpoint in ", cfg_.checkpoint_dir(),
             " to roll back to; lower optim.lr, check the data, or set checkpoint.interval");
  ProgressScope scope(OpKind::kCheckpoint, str("rolling back to ", *latest));
  const RestoredState r = s.checkpointer->load(*latest);
  WEFT_CHECK(r.step != s.rolled_back_to, "steps after step ", r.step, " had a non-finite gradient again after rolling ",
             "back to it (", *latest, "): the divergence is not transient; lower optim.lr or skip the data there");
  LOG(WARNING) << s.bad_steps << " consecutive non-finite steps (fault.max_bad_steps=" << cfg_.fault.max_bad_steps
               << "): rolled back from step " << s.step << " to " << *latest;
  s.reporter->resumed_at(r.step);
  s.reporter->event({{"event", "rollback"}, {"step", r.step}, {"from_step", s.step}, {"checkpoint", *latest}});
  s.step = s.last_saved = r.step, s.consumed_samples = r.consumed_samples;
  s.rolled_back_to = r.step;
  s.bad_steps = 0;
  s.faults->disarm_nan();
}

Trainer::Batch Trainer::next_batch() {
  auto& s = *s_;
  const auto& t = cfg_.train;
  Batch b;
  b.global_counted = t.global_batch_size * t.seq_len;  // without a loss mask every label counts
  // Every stage needs packed examples' positions (attention masks); else only the first and last.
  if (!s.holds_stage(0) && !s.holds_stage(s.num_stages() - 1) && !s.train_data->has_positions()) return b;
  // This DP rank's share: samples [dp_rank * local, (dp_rank + 1) * local) of the global batch.
  const int64_t local = t.global_batch_size / s.dims.dp;
  const int64_t first = s.consumed_samples + s.coord.dp * local;
  for (int64_t m = 0; m < s.micro_batches(); ++m)
    b.micro.push_back(make_micro_batch(*s.train_data, first + m * t.micro_batch_size, t.micro_batch_size, t.seq_len));
  if (!s.train_data->has_loss_mask()) return b;
  int64_t counted = 0, fewest = b.micro[0].num_counted, most = fewest;
  for (const auto& mb : b.micro)
    counted += mb.num_counted, fewest = std::min(fewest, mb.num_counted), most = std::max(most, mb.num_counted);
  if (s.dims.dp > 1) {
    auto sum = at::tensor({double(counted)}, at::kDouble);
    all_reduce(s.ctx->dp(), sum);
    auto range = at::tensor({double(-fewest), double(most)}, at::kDouble);
    all_reduce(s.ctx->dp(), range, ReduceOp::kMax);
    counted = int64_t(sum.item<double>());
    fewest = int64_t(-range[0].item<double>()), most = int64_t(range[1].item<double>());
  }
  b.global_counted = counted;
  b.uniform = fewest == most;
  return b;
}

Trainer::Pass Trainer::forward_backward(const Batch& batch, bool poison) {
  auto& s = *s_;
  const int64_t S = s.num_stages();
  Pass pass;
  pass.loss = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(s.device));
  StageStep step;
  step.forward = [&](int64_t m, int64_t chunk, const at::Tensor& input) {
    const int64_t stage = s.stage_of(chunk);
    const MicroBatch* mb = batch.micro.empty() ? nullptr : &batch.micro.at(m);
    at::Tensor out;
    {
      ProgressScope scope(OpKind::kCompute, str("forward of micro-batch ", m, " (stage ", stage, ")"));
      if (m == 0 && chunk == 0 && s.faults->slow_ms() > 0)  // fault.slow_rank: an injected straggler
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(s.faults->slow_ms()));
      ComputeGuard compute(cfg_.precision, s.device);
      out = s.model->chunk(chunk).forward_stage(stage == 0 ? mb->input_ids.to(s.device) : input,
                                                stage == S - 1 ? mb->labels.to(s.device) : at::Tensor(),
                                                positions_on(mb, s.device));
      if (poison && stage == S - 1) out = out * std::numeric_limits<double>::quiet_NaN();  // fault.nan_step
    }
    if (stage < S - 1) return out;
    // out: mean over this micro-batch's counted labels. The step's loss is the mean over the
    // global batch's, so its gradient scale is count * dp / global count (the DP reduction
    // averages). Written as a division so that without masks it is exactly out / micro_batches.
    const double n = double(mb->num_counted);
    pass.loss.add_(batch.uniform ? out.detach().to(at::kDouble) : out.detach().to(at::kDouble) * n);
    if (mb->num_counted == 0) return out * 0.0;
    return out / (double(batch.global_counted) / (n * double(s.dims.dp)));
  };
  step.before_backward = [&](int64_t m, int64_t chunk) {
    if (m == s.micro_batches() - 1) s.model->arm_grad_reduce(chunk);
  };
  step.boundary = [&](int64_t) { return s.boundary(cfg_, cfg_.train.micro_batch_size); };
  pass.pipe = run_pipeline(s.schedule, s.pp(), step);
  return pass;
}

StepMetrics Trainer::agree(const Pass& pass, const Batch& batch, double lr, double grad_norm, double sync_ms) {
  auto& s = *s_;
  // This rank's part of the step loss: the last stage's TP rank 0 of each DP replica holds it.
  const bool reports = s.holds_stage(s.num_stages() - 1) && s.coord.tp == 0;
  double part = 0;
  if (reports && batch.global_counted > 0)
    part = pass.loss.item<double>() / double(batch.uniform ? s.micro_batches() : batch.global_counted);
  StepMetrics m;
  m.loss = part;
  m.peak_rss_mb = peak_rss_mb();
  bool stopping = stop_.load() || !s.save_error.empty();
  if (s.ctx && s.ctx->world_size() > 1) {
    // Agree on the loss and on stopping (a signal may reach ranks at different steps).
    auto sums = at::tensor({part, reports && !batch.uniform ? 1.0 : 0.0, stopping ? 1.0 : 0.0, pass.pipe.compute_ms},
                           at::kDouble);
    all_reduce(s.ctx->world(), sums);
    auto peaks = at::tensor({m.peak_rss_mb, pass.pipe.total_ms}, at::kDouble);
    all_reduce(s.ctx->world(), peaks, ReduceOp::kMax);
    const bool uniform = sums[1].item<double>() == 0;
    m.loss = uniform ? sums[0].item<double>() / double(s.dims.dp) : sums[0].item<double>();
    stopping = sums[2].item<double>() > 0;
    m.peak_rss_mb = peaks[0].item<double>();
    // Idle share of the pipeline: 1 - (compute summed over all ranks) / (ranks x the longest).
    if (s.dims.pp > 1)
      m.pipeline_bubble = 1.0 - sums[3].item<double>() / (double(s.ctx->world_size()) * peaks[1].item<double>());
  }
  s.stopping = stopping;
  m.step = s.step;
  m.lr = lr;
  m.grad_norm = grad_norm;
  m.consumed_samples = s.consumed_samples;
  m.dp_wait_ms = sync_ms;
  return m;
}

void Trainer::notify(const StepMetrics& m) {
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.step = m.step;
    status_.steps_run += 1;
    status_.last_loss = m.loss;
    status_.tokens_per_sec = m.tokens_per_sec;
    const double per_step = ms_since(s_->run_start) / 1000.0 / double(status_.steps_run);
    status_.eta_sec = per_step * double(std::max<int64_t>(0, cfg_.train.steps - m.step));
    if (s_->stopping) status_.state = TrainerState::kStopping;
  }
  std::vector<std::function<void(const StepMetrics&)>> callbacks;
  {
    std::lock_guard<std::mutex> lock(callbacks_mu_);
    callbacks = step_callbacks_;
  }
  for (auto& cb : callbacks) cb(m);
}

void Trainer::save() {
  auto& s = *s_;
  ProgressScope scope(OpKind::kCheckpoint, str("saving step ", s.step));
  s.faults->before_save(s.step);
  s.checkpointer->save(s.step, s.consumed_samples);
  report_saves(s.checkpointer->poll());
  s.last_saved = s.step;
}

double Trainer::evaluate_valid() {
  auto& s = *s_;
  const auto& t = cfg_.train;
  at::NoGradGuard no_grad;
  const int64_t total = s.valid_data->num_samples(), S = s.num_stages();
  // Each window once over the job: DP rank r evaluates micro-batches r, r + dp, ... of the pass
  // `weft eval` makes (the same windows, in the same micro-batches).
  std::vector<std::pair<int64_t, int64_t>> windows;  // (first, count)
  for (int64_t b = s.coord.dp; b < eval_batch_count(t.eval_batches, t.micro_batch_size, total); b += s.dims.dp)
    windows.push_back(eval_window(b, t.micro_batch_size, total));
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(s.device);
  auto loss_sum = at::zeros({}, opts), counted = at::zeros({}, opts);  // sum of loss x count, of count
  StageStep step;
  step.forward = [&](int64_t i, int64_t chunk, const at::Tensor& input) {
    const int64_t stage = s.stage_of(chunk);
    ProgressScope scope(OpKind::kCompute, str("validation forward of micro-batch ", i, " (stage ", stage, ")"));
    MicroBatch mb;
    if (stage == 0 || stage == S - 1 || s.valid_data->has_positions())
      mb = make_micro_batch(*s.valid_data, windows[i].first, windows[i].second, t.seq_len);
    ComputeGuard compute(cfg_.precision, s.device);
    auto out = s.model->chunk(chunk).forward_stage(stage == 0 ? mb.input_ids.to(s.device) : input,
                                                   stage == S - 1 ? mb.labels.to(s.device) : at::Tensor(),
                                                   positions_on(&mb, s.device));
    if (stage == S - 1) loss_sum.add_(out.to(at::kDouble) * double(mb.num_counted)), counted.add_(double(mb.num_counted));
    return out;
  };
  step.boundary = [&](int64_t i) { return s.boundary(cfg_, windows[i].second); };
  run_pipeline_forward(int64_t(windows.size()), s.dims.vpp, s.pp(), step);
  auto v = at::stack({loss_sum, counted}).to(at::kCPU);
  if (s.ctx && s.ctx->world_size() > 1) {
    if (!(s.holds_stage(S - 1) && s.coord.tp == 0)) v.zero_();
    all_reduce(s.ctx->world(), v);
  }
  WEFT_CHECK(v[1].item<double>() > 0, "validation counted no token: every target in the validation windows is ",
             "masked out by the dataset's loss mask (PREFIX.loss_mask); validate on data with targets or set ",
             "train.eval_interval=0");
  return v[0].item<double>() / v[1].item<double>();
}

}  // namespace weft

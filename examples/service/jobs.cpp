// JobManager: queue, job threads, records on disk, and the views the HTTP API returns.
#include "jobs.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "service_log.h"
#include "weft/error.h"
#include "weft/finetune.h"
#include "weft/trainer.h"

namespace service {

using json = nlohmann::json;

struct Job {
  std::string id;
  JobRequest request;
  std::string state = "queued";
  std::string error, last_checkpoint, output;
  int64_t step = 0, total_steps = 0, starts = 0;
  double loss = 0, tokens_per_sec = 0, eta_sec = -1, submitted_at = 0;
  bool has_loss = false;
  bool cancel_requested = false;  // DELETE seen: stop, and do not resume after a restart
  // The library object while the job's thread has one; guarded by JobManager::mu_.
  weft::Trainer* trainer = nullptr;
  weft::FinetuneJob* finetune = nullptr;
  std::thread thread;  // guarded by JobManager::mu_
  uint64_t seq = 0;    // record snapshots taken; guarded by JobManager::mu_
  std::mutex record_mu;
  uint64_t written_seq = 0;  // guarded by record_mu
};

namespace {

constexpr int64_t kRecordEverySteps = 10;
const char* const kStates[] = {"queued", "running", "stopping", "finished", "stopped", "failed", "cancelled", "interrupted"};

std::string format_id(int64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "j%06lld", (long long)n);
  return buf;
}

double now_sec() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

bool resumable(const std::string& state) {
  return state == "queued" || state == "running" || state == "stopping" || state == "interrupted";
}

// A Prometheus sample value: finite numbers as is, NaN/Inf spelled as the format wants.
std::string prom_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// A label value with backslash, quote and newline escaped (the exposition format's rule).
std::string prom_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// A record that could not be written, with the errno that said why (ENOSPC: the disk is full).
class WriteError : public std::runtime_error {
 public:
  WriteError(int err, const std::string& what) : std::runtime_error(what + ": " + std::strerror(err)), err_(err) {}
  int err() const { return err_; }

 private:
  int err_;
};

void write_file_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw WriteError(errno, "cannot write " + tmp.string());
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;  // a write of 0 bytes: no room
      ::close(fd);
      throw WriteError(err, "cannot write " + tmp.string());
    }
    done += size_t(n);
  }
  const int synced = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  if (synced != 0) throw WriteError(synced, "cannot sync " + tmp.string());
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw WriteError(ec.value(), "cannot rename " + tmp.string());
}

// The HTTP status for a record that could not be written: 507 when storage ran out, else 500.
int write_failure_status(const std::exception& e) {
  int err = 0;
  if (const auto* w = dynamic_cast<const WriteError*>(&e)) err = w->err();
  if (const auto* f = dynamic_cast<const fs::filesystem_error*>(&e)) err = f->code().value();
  return err == ENOSPC || err == EDQUOT || err == EFBIG ? 507 : 500;
}

}  // namespace

JobManager::JobManager(JobManagerOptions opts, const PathPolicy& paths) : opts_(std::move(opts)), paths_(paths) {
  fs::create_directories(opts_.state_dir / "jobs");
  load_records();
  scheduler_ = std::thread([this] { scheduler_loop(); });
}

JobManager::~JobManager() { shutdown(); }

fs::path JobManager::job_dir(const std::string& id) const { return opts_.state_dir / "jobs" / id; }

void JobManager::load_records() {
  std::vector<std::string> requeue;
  for (const auto& entry : fs::directory_iterator(opts_.state_dir / "jobs")) {
    // Every job directory, with a record or not, takes its id out of use (see submit()).
    const std::string name = entry.path().filename().string();
    if (name.size() > 1 && name[0] == 'j' && name.find_first_not_of("0123456789", 1) == std::string::npos)
      next_id_ = std::max(next_id_, int64_t(std::atoll(name.c_str() + 1)) + 1);
    const fs::path rec = entry.path() / "job.json";
    if (!fs::is_regular_file(rec)) continue;
    auto job = std::make_shared<Job>();
    try {
      std::ifstream in(rec);
      const json j = json::parse(in);
      job->id = j.at("id").get<std::string>();
      WEFT_CHECK(job->id == entry.path().filename().string(), "its id is ", job->id);
      job->request = job_request_from_json(j.at("request"));
      job->state = j.at("state").get<std::string>();
      job->error = j.value("error", "");
      job->last_checkpoint = j.value("last_checkpoint", "");
      job->output = j.value("output", "");
      job->step = j.value("step", int64_t(0));
      job->total_steps = j.value("total_steps", int64_t(0));
      job->starts = j.value("starts", int64_t(0));
      job->has_loss = j.contains("loss") && j["loss"].is_number();
      job->loss = job->has_loss ? j["loss"].get<double>() : 0.0;
      job->submitted_at = j.value("submitted_at", 0.0);
      job->cancel_requested = j.value("cancel_requested", false);
    } catch (const std::exception& e) {
      log("W", "skipping job record " + rec.string() + ": " + first_line(e.what()));
      continue;
    }
    const int64_t n = std::atoll(job->id.c_str() + 1);
    next_id_ = std::max(next_id_, n + 1);
    if (resumable(job->state)) {
      if (job->cancel_requested) {
        job->state = "stopped";  // it was being stopped on request; a stop is not undone
      } else {
        log("I", "job " + job->id + " was " + job->state + " when the service stopped; queued to resume");
        job->state = "queued";
        requeue.push_back(job->id);
      }
    }
    jobs_[job->id] = job;
  }
  std::sort(requeue.begin(), requeue.end());
  queue_.assign(requeue.begin(), requeue.end());
  for (const auto& [id, job] : jobs_) save_record(*job);
}

json JobManager::submit(const JobRequest& req) {
  std::string id;
  int64_t n = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutting_down_) throw RequestError(503, "the service is shutting down; submit the job again later");
    // Never an id whose directory exists (a record that was not written, files left by hand):
    // its files would be taken for the new job's.
    do {
      n = next_id_++;
      id = format_id(n);
    } while (fs::exists(job_dir(id)));
  }
  auto job = std::make_shared<Job>();
  job->id = id;
  job->request = req;
  job->submitted_at = now_sec();
  const fs::path dir = job_dir(id);
  try {
    plan_job(req, paths_, dir);  // 403 before anything is recorded; a bad config fails the job
  } catch (const RequestError&) {
    std::error_code ec;
    fs::remove_all(dir, ec);  // a finetune's inline config may have been written there
    std::lock_guard<std::mutex> lock(mu_);
    if (next_id_ == n + 1) next_id_ = n;  // refused requests leave no gaps in the ids
    throw;
  } catch (const std::exception& e) {
    job->state = "failed";
    job->error = first_line(e.what());
  }
  // The record is written before the job is known or queued: a job that cannot be recorded (disk
  // full) is refused, not answered 201 and then lost on a restart.
  try {
    fs::create_directories(dir);
    save_record(*job, /*must_write=*/true);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    log("E", "job " + id + " refused: its record cannot be written: " + first_line(e.what()));
    throw RequestError(write_failure_status(e), "the job could not be recorded (" + first_line(e.what()) +
                                                    "); free space under --state and submit it again");
  }
  json view;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_[id] = job;
    ++submitted_;
    if (job->state == "queued") queue_.push_back(id);
    view = view_locked(*job);
    cv_.notify_all();
  }
  log("I", "job " + id + " submitted (" + req.kind + ")" + (job->error.empty() ? "" : ": failed: " + job->error));
  return view;
}

void JobManager::refresh_locked(Job& job) const {
  weft::TrainerStatus st;
  if (job.trainer) st = job.trainer->status();
  else if (job.finetune) st = job.finetune->status();
  else return;
  // A fine-tuning job reports nothing until its training starts (it converts the model first).
  if (job.finetune && !st.running && st.state == weft::TrainerState::kCreated) return;
  job.step = st.step;  // a resumed job's Trainer reports its checkpoint's step from construction
  job.total_steps = st.total_steps;
  if (st.steps_run > 0) {  // this run() has trained: its loss and speed are current
    job.has_loss = true;
    job.loss = st.last_loss;
    job.tokens_per_sec = st.tokens_per_sec;
    job.eta_sec = st.eta_sec;
  }
  if (!st.last_checkpoint.empty()) job.last_checkpoint = st.last_checkpoint;
}

json JobManager::view_locked(const Job& job) const {
  json j = {{"id", job.id},
            {"kind", job.request.kind},
            {"state", job.state},
            {"step", job.step},
            {"total_steps", job.total_steps},
            {"loss", job.has_loss ? json(job.loss) : json(nullptr)},
            {"tokens_per_sec", job.tokens_per_sec},
            {"eta_sec", job.eta_sec},
            {"error", job.error},
            {"last_checkpoint", job.last_checkpoint},
            {"starts", job.starts},
            {"submitted_at", job.submitted_at},
            {"request", job.request.to_json()}};
  if (!job.output.empty()) j["output"] = job.output;
  return j;
}

void JobManager::save_record(Job& job, bool must_write) {
  json rec;
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lock(mu_);
    refresh_locked(job);
    rec = view_locked(job);
    rec["cancel_requested"] = job.cancel_requested;
    seq = ++job.seq;
  }
  std::lock_guard<std::mutex> lock(job.record_mu);
  if (seq <= job.written_seq) return;  // a newer snapshot is already on disk
  try {
    fs::create_directories(job_dir(job.id));
    write_file_atomically(job_dir(job.id) / "job.json", rec.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
    job.written_seq = seq;
  } catch (const std::exception& e) {
    if (must_write) throw;
    log("W", "job " + job.id + ": record not written: " + first_line(e.what()));
  }
}

json JobManager::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  json jobs = json::array();
  for (const auto& [id, job] : jobs_) {
    refresh_locked(*job);
    jobs.push_back(view_locked(*job));
  }
  return {{"jobs", jobs}};
}

std::optional<json> JobManager::get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  refresh_locked(*it->second);
  return view_locked(*it->second);
}

std::optional<json> JobManager::cancel(const std::string& id) {
  std::shared_ptr<Job> job;
  json view;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return std::nullopt;
    job = it->second;
    if (job->state == "queued") {
      queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
      job->state = "cancelled";
    } else if (job->state == "running" || job->state == "stopping") {
      job->cancel_requested = true;
      job->state = "stopping";
      if (job->trainer) job->trainer->request_stop();
      if (job->finetune) job->finetune->request_stop();
    } else {
      throw RequestError(409, "job " + id + " has already ended (" + job->state + "); nothing to stop");
    }
    refresh_locked(*job);
    view = view_locked(*job);
  }
  log("I", "job " + id + ": " + job->state + " on request");
  save_record(*job);
  return view;
}

void JobManager::scheduler_loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] {
      return !finished_threads_.empty() || (shutting_down_ && running_ == 0) ||
             (!shutting_down_ && !queue_.empty() && running_ < opts_.max_jobs);
    });
    if (!finished_threads_.empty()) {
      auto threads = std::move(finished_threads_);
      finished_threads_.clear();
      lk.unlock();
      for (auto& t : threads) t.join();
      lk.lock();
      continue;
    }
    if (shutting_down_) break;  // and running_ == 0
    while (!queue_.empty() && running_ < opts_.max_jobs) {
      auto job = jobs_.at(queue_.front());
      queue_.pop_front();
      job->state = "running";
      job->starts += 1;
      ++running_;
      job->thread = std::thread([this, job] { run_job(job); });
    }
  }
}

void JobManager::run_job(std::shared_ptr<Job> job) {
  set_thread_job(job->id);
  save_record(*job);
  execute(*job);
  save_record(*job);
  set_thread_job("");
  std::lock_guard<std::mutex> lock(mu_);
  --running_;
  finished_threads_.push_back(std::move(job->thread));
  cv_.notify_all();
}

// Runs one job on the calling thread, start to end; never throws.
void JobManager::execute(Job& job) {
  std::unique_ptr<weft::Trainer> trainer;
  std::unique_ptr<weft::FinetuneJob> finetune;
  std::string error;
  bool threw = false;
  try {
    const JobPlan plan = plan_job(job.request, paths_, job_dir(job.id));
    auto on_step = [this, &job](const weft::StepMetrics& m) {
      if (m.step % kRecordEverySteps == 0) save_record(job);
    };
    auto on_checkpoint = [this, &job](const weft::CheckpointEvent& e) {
      if (!e.ok) log("W", "checkpoint of step " + std::to_string(e.step) + " failed: " + e.error);
      save_record(job);
    };
    if (plan.kind == "train") {
      weft::TrainerOptions topts;
      topts.console = false;  // progress goes to the status and metrics endpoints
      trainer = std::make_unique<weft::Trainer>(plan.config, topts);
      trainer->on_step(on_step);
      trainer->on_checkpoint(on_checkpoint);
      {
        std::lock_guard<std::mutex> lock(mu_);
        job.trainer = trainer.get();
        if (job.cancel_requested || shutting_down_) trainer->request_stop();
      }
      trainer->run();
    } else {
      finetune = std::make_unique<weft::FinetuneJob>(plan.finetune);
      finetune->on_step(on_step);
      finetune->on_checkpoint(on_checkpoint);
      {
        std::lock_guard<std::mutex> lock(mu_);
        job.finetune = finetune.get();
        if (job.cancel_requested || shutting_down_) finetune->request_stop();
      }
      const std::string out = finetune->run();
      std::lock_guard<std::mutex> lock(mu_);
      job.output = out;
    }
  } catch (const std::exception& e) {
    threw = true;
    error = first_line(e.what());
  }
  std::lock_guard<std::mutex> lock(mu_);
  refresh_locked(job);
  weft::TrainerStatus st;
  if (trainer) st = trainer->status();
  if (finetune) st = finetune->status();
  job.trainer = nullptr;
  job.finetune = nullptr;
  if (threw) {
    job.state = "failed", job.error = error;
  } else if (st.finished || (finetune && !job.output.empty())) {
    job.state = "finished";
  } else if (job.cancel_requested || !shutting_down_) {
    job.state = "stopped";
  } else {
    job.state = "interrupted";  // resumes when the service starts again
  }
  log(job.state == "failed" ? "E" : "I", "job " + job.id + " " + job.state + " at step " + std::to_string(job.step) +
                                             (job.error.empty() ? "" : ": " + job.error));
  // The Trainer's destructor (joining a background save) runs after the lock is released: the
  // unique_ptrs are destroyed after `lock`.
}

std::string JobManager::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream os;
  std::map<std::string, int> by_state;
  for (const char* s : kStates) by_state[s] = 0;
  for (const auto& [id, job] : jobs_) by_state[job->state] += 1;
  os << "# HELP weft_service_jobs Jobs the service knows (earlier runs included), by state.\n"
     << "# TYPE weft_service_jobs gauge\n";
  for (const auto& [state, n] : by_state) os << "weft_service_jobs{state=\"" << prom_label(state) << "\"} " << n << "\n";
  os << "# HELP weft_service_jobs_submitted_total Jobs submitted since this service process started.\n"
     << "# TYPE weft_service_jobs_submitted_total counter\n"
     << "weft_service_jobs_submitted_total " << submitted_ << "\n";
  struct Gauge {
    const char *name, *help, *type;
    double (*value)(const Job&);
  };
  static const Gauge gauges[] = {
      {"weft_job_info", "A job's kind and state (always 1).", "gauge", [](const Job&) { return 1.0; }},
      {"weft_job_step", "Optimizer steps the job has completed.", "gauge", [](const Job& j) { return double(j.step); }},
      {"weft_job_total_steps", "The job's train.steps.", "gauge", [](const Job& j) { return double(j.total_steps); }},
      {"weft_job_loss", "The job's latest training loss (NaN before its first step).", "gauge",
       [](const Job& j) { return j.has_loss ? j.loss : std::nan(""); }},
      {"weft_job_tokens_per_second", "Training throughput of the job's latest step.", "gauge",
       [](const Job& j) { return j.tokens_per_sec; }},
      {"weft_job_eta_seconds", "Estimated seconds to the job's last step (-1: unknown).", "gauge",
       [](const Job& j) { return j.eta_sec; }},
      {"weft_job_starts_total", "Times the job has been started (more than 1: resumed).", "counter",
       [](const Job& j) { return double(j.starts); }},
  };
  for (const auto& [id, job] : jobs_) refresh_locked(*job);
  for (const auto& g : gauges) {
    const bool info = &g == &gauges[0];
    os << "# HELP " << g.name << " " << g.help << "\n# TYPE " << g.name << " " << g.type << "\n";
    for (const auto& [id, job] : jobs_) {
      os << g.name << "{job=\"" << prom_label(id) << "\",kind=\"" << prom_label(job->request.kind) << "\"";
      if (info) os << ",state=\"" << prom_label(job->state) << "\"";
      os << "} " << prom_number(g.value(*job)) << "\n";
    }
  }
  return os.str();
}

void JobManager::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!shutting_down_) {
      shutting_down_ = true;
      for (auto& [id, job] : jobs_) {
        if (job->trainer) job->trainer->request_stop();
        if (job->finetune) job->finetune->request_stop();
      }
      cv_.notify_all();
    }
  }
  if (scheduler_.joinable()) scheduler_.join();
}

}  // namespace service

// The service's jobs: a FIFO queue, at most max_jobs running at once (one std::thread each, the
// library's Trainer or FinetuneJob inside), and a record per job on disk so that a restarted
// service lists earlier jobs and resumes the ones it was running.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "job_plan.h"

namespace service {

struct JobManagerOptions {
  fs::path state_dir;  // job records: state_dir/jobs/<id>/job.json, the run in .../<id>/run
  int max_jobs = 1;    // jobs running at once; the rest wait in submission order
};

struct Job;

// Owns every job and the threads that run them. Thread-safe: every public method may be called
// from any HTTP worker thread at once. Errors: submit() throws RequestError (403 for a path
// outside the root); a bad config is not an error here but a job that ends "failed".
//
// States: queued -> running -> finished | stopped (DELETE) | failed; queued -> cancelled
// (DELETE); running -> interrupted (service shut down: resumes when the service starts again).
class JobManager {
 public:
  // Loads state_dir/jobs/*/job.json and re-queues the jobs that were queued, running or
  // interrupted (they resume from their run directory's checkpoint); starts the scheduler.
  JobManager(JobManagerOptions opts, const PathPolicy& paths);
  ~JobManager();  // shutdown()
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Records and queues a job; returns its view (see view()). A config that fails to load yields a
  // job in state "failed" (HTTP 201 all the same: the job exists, with its error). A record that
  // cannot be written: RequestError 507 (storage full) or 500, and no job.
  nlohmann::json submit(const JobRequest& req);
  nlohmann::json list() const;  // {"jobs": [view, ...]} by id
  // {id, kind, state, step, total_steps, loss, tokens_per_sec, eta_sec, error, last_checkpoint,
  //  starts, request}; nullopt for an unknown id.
  std::optional<nlohmann::json> get(const std::string& id) const;
  // DELETE: a queued job is cancelled; a running one stops after its current step and checkpoint
  // (state "stopping" until it has). Returns the view, or nullopt for an unknown id.
  std::optional<nlohmann::json> cancel(const std::string& id);
  // Prometheus text: job counts by state and per-job gauges labelled {job, kind}.
  std::string metrics() const;
  // Stops taking jobs, asks every running job to stop (each writes a checkpoint and is recorded
  // "interrupted"), and waits for them. Idempotent.
  void shutdown();

 private:
  void load_records();
  void scheduler_loop();
  void run_job(std::shared_ptr<Job> job);
  void execute(Job& job);
  nlohmann::json view_locked(const Job& job) const;
  void refresh_locked(Job& job) const;
  // Writes job.json atomically (temp file, fsync, rename); skips a snapshot older than one
  // already written. A failure is logged, or thrown when must_write. Call without mu_ held.
  void save_record(Job& job, bool must_write = false);
  fs::path job_dir(const std::string& id) const;

  JobManagerOptions opts_;
  const PathPolicy& paths_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // guarded by mu_
  std::deque<std::string> queue_;                     // guarded by mu_
  std::vector<std::thread> finished_threads_;         // guarded by mu_; joined by the scheduler
  int running_ = 0;                                   // guarded by mu_
  int64_t next_id_ = 1;                               // guarded by mu_
  uint64_t submitted_ = 0;                            // guarded by mu_
  bool shutting_down_ = false;                        // guarded by mu_
  std::thread scheduler_;
};

}  // namespace service

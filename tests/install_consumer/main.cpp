// A host program embedding an installed Weft (tests/integration/test_install.py drives it).
//   weft_consumer stop CONFIG DATA_PREFIX RUN_DIR STOP_AFTER
//     trains CONFIG in this process on a thread of its own and stops it from this thread once
//     STOP_AFTER steps are done; prints one "loss STEP VALUE" line per step, then the status.
//   weft_consumer concurrent CONFIG DATA_PREFIX RUN_DIR [KEY=VALUE...]
//     trains two jobs (seeds 1 and 2) one after another, then both at once on two threads, and
//     prints "same" when each concurrent job's losses equal its lone run's bit for bit.
// Library log records go to a sink that counts them (stdout carries only this program's lines).
#include <weft/config.h>
#include <weft/error.h>
#include <weft/log.h>
#include <weft/trainer.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<int> g_records{0};
std::vector<std::string> g_overrides;

weft::Config job_config(const char* config, const char* data, const std::string& run_dir, int seed) {
  weft::Config cfg = weft::load_config(config);
  for (const auto& kv : g_overrides) weft::apply_override(cfg, kv);
  weft::apply_override(cfg, std::string("data.prefix=") + data);
  weft::apply_override(cfg, "run.dir=" + run_dir);
  weft::apply_override(cfg, "train.seed=" + std::to_string(seed));
  return cfg;
}

// Runs a job to the end; its losses by step.
std::map<int64_t, double> train(const weft::Config& cfg) {
  std::map<int64_t, double> losses;
  std::mutex mu;
  weft::Trainer trainer(cfg);
  trainer.on_step([&](const weft::StepMetrics& m) {
    std::lock_guard<std::mutex> lock(mu);
    losses[m.step] = m.loss;
  });
  trainer.run();
  return losses;
}

int stop_mode(char** argv) {
  const int64_t stop_after = std::atoll(argv[5]);
  weft::Trainer trainer(job_config(argv[2], argv[3], argv[4], 1234));
  std::vector<std::pair<int64_t, double>> losses;
  std::mutex mu;
  int checkpoints = 0;
  trainer.on_step([&](const weft::StepMetrics& m) {
    std::lock_guard<std::mutex> lock(mu);
    losses.emplace_back(m.step, m.loss);
  });
  trainer.on_checkpoint([&](const weft::CheckpointEvent& e) { checkpoints += e.ok; });
  std::thread worker([&] {
    try {
      trainer.run();
    } catch (const weft::Error&) {
      // status() reports it
    }
  });
  while (trainer.status().step < stop_after && !trainer.status().finished && !trainer.status().failed)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  trainer.request_stop();
  worker.join();
  const weft::TrainerStatus st = trainer.status();
  for (const auto& [step, loss] : losses) std::printf("loss %lld %.17g\n", (long long)step, loss);
  std::printf("status %s step %lld of %lld checkpoints %d last_checkpoint %s log_records %d error '%s'\n",
              weft::trainer_state_name(st.state), (long long)st.step, (long long)st.total_steps, checkpoints,
              st.last_checkpoint.c_str(), g_records.load(), st.error.c_str());
  return st.failed ? 1 : 0;
}

int concurrent_mode(char** argv) {
  const std::string root = argv[4];
  const auto alone1 = train(job_config(argv[2], argv[3], root + "/alone1", 1));
  const auto alone2 = train(job_config(argv[2], argv[3], root + "/alone2", 2));
  std::map<int64_t, double> both1, both2;
  std::thread t1([&] { both1 = train(job_config(argv[2], argv[3], root + "/both1", 1)); });
  std::thread t2([&] { both2 = train(job_config(argv[2], argv[3], root + "/both2", 2)); });
  t1.join();
  t2.join();
  std::printf("steps %zu %zu; seeds differ: %s\n", alone1.size(), alone2.size(), alone1 != alone2 ? "yes" : "no");
  std::printf("%s\n", both1 == alone1 && both2 == alone2 && !alone1.empty() ? "same" : "DIFFERENT");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  weft::set_log_sink([](weft::LogSeverity, const std::string&, int, const std::string&) { g_records++; });
  try {
    if (argc == 6 && std::strcmp(argv[1], "stop") == 0) return stop_mode(argv);
    if (argc >= 5 && std::strcmp(argv[1], "concurrent") == 0) {
      g_overrides.assign(argv + 5, argv + argc);
      return concurrent_mode(argv);
    }
  } catch (const weft::Error& e) {
    std::fprintf(stderr, "weft_consumer: error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: weft_consumer stop CONFIG DATA RUN_DIR STOP_AFTER | concurrent CONFIG DATA ROOT [K=V...]\n");
  return 2;
}

// Embedding Weft in a service: build a Trainer from a config, watch it through callbacks and
// status(), and stop it from another thread (here: after a step budget, as a scheduler would).
//   weft_example_embed configs/llama-tiny.yaml data/corpus 5
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "weft/config.h"
#include "weft/error.h"
#include "weft/trainer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s CONFIG DATA_PREFIX [STOP_AFTER_STEPS]\n", argv[0]);
    return 2;
  }
  try {
    weft::Config cfg = weft::load_config(argv[1]);
    weft::apply_override(cfg, std::string("data.prefix=") + argv[2]);
    weft::apply_override(cfg, "run.dir=runs/embedded");
    const int64_t stop_after = argc > 3 ? std::atoll(argv[3]) : cfg.train.steps;

    weft::Trainer trainer(cfg);  // prints nothing itself: the service reports through on_step
    trainer.on_step([](const weft::StepMetrics& m) {
      std::printf("[service] step %lld loss %.4f (%.0f tokens/s)\n", (long long)m.step, m.loss, m.tokens_per_sec);
    });
    std::thread worker([&] { trainer.run(); });
    while (trainer.status().step < stop_after && !trainer.status().finished)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    trainer.request_stop();  // finishes the step in flight, checkpoints, returns
    worker.join();
    const auto st = trainer.status();
    std::printf("[service] stopped at step %lld of %lld\n", (long long)st.step, (long long)st.total_steps);
    return 0;
  } catch (const weft::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

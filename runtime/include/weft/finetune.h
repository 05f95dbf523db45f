// weft::FinetuneJob: a Hugging Face model and a JSONL file in, a fine-tuned Hugging Face model (or
// peft LoRA adapter) out; what `weft finetune` runs. Each step is idempotent, so running the same
// job again resumes it: the base checkpoint (run.dir/base) and the prepared examples
// (run.dir/data/sft) are reused while their sources are unchanged, and training resumes from the
// newest checkpoint in run.dir.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "weft/config.h"
#include "weft/trainer.h"

namespace weft {

struct FinetuneOptions {
  std::string model;                   // "hf:DIR": config.json, *.safetensors, the tokenizer files
  std::string data;                    // JSON Lines records
  std::string format = "chat";         // chat | prompt-completion | text
  int64_t lora_rank = 0;               // 0: full fine-tuning
  std::string lora_export = "merged";  // merged | adapter (a peft adapter; needs lora_rank > 0)
  std::string output;                  // the export's directory ("": run.dir/hf)
  bool skip_bad = false;               // skip (and count) bad records instead of failing
  std::string config;                  // a YAML config under the options ("": the defaults)
  std::vector<std::string> overrides;  // key=value, applied last (as --set)
  // Print what `weft finetune` prints (conversion, examples, progress, export) on stdout and bad
  // records on stderr; off: they go to the log (weft/log.h).
  bool console = false;
  // Fine-tuning defaults under `config` and `overrides`: run.dir runs/finetune, data.packing
  // packed, data.split 100,0, no evaluation, lr 2e-4 (LoRA) or 2e-5 (full), no weight decay or
  // warm-up, train.steps one epoch, train.seq_len at most the model's max_seq_len.
};

// Owns one fine-tuning job. Threads: prepare()/run() are called from one thread (the host's
// choice); request_stop(), status() and the on_* registrations from any thread, also during run().
// Callbacks run on the training thread. Errors: weft::Error (one line naming the option, file,
// record or key) from the constructor (options), prepare() (model, data, config) and run().
class FinetuneJob {
 public:
  explicit FinetuneJob(FinetuneOptions opts);
  ~FinetuneJob();
  FinetuneJob(const FinetuneJob&) = delete;
  FinetuneJob& operator=(const FinetuneJob&) = delete;

  // Converts the model into run.dir/base and the records into run.dir/data/sft (each only when
  // its source changed), writes run.dir/finetune.yaml and returns the training config. Takes
  // run.dir's lock for the job's lifetime: a second job on the same run.dir is refused.
  const Config& prepare();
  // prepare() if not done, trains in this process (resuming from run.dir's newest checkpoint)
  // and, once train.steps are done, writes the export. Returns the export directory, or "" when
  // request_stop() ended training early (the checkpoint is written; run again to resume).
  std::string run();
  // Writes the export of a job trained to train.steps (e.g. by `weft train --config
  // run.dir/finetune.yaml` on several ranks); returns its directory.
  std::string export_model();

  // Whether this process writes the export: true alone, and on rank 0 of a torchrun-style job
  // whose every rank runs the job (the others only train). After prepare().
  bool exports() const;
  // The step of the newest complete checkpoint in run.dir, -1 when there is none. After prepare().
  int64_t checkpoint_step() const;
  void request_stop();
  // The training's status; state kCreated until training starts.
  TrainerStatus status() const;
  void on_step(std::function<void(const StepMetrics&)> cb);
  void on_checkpoint(std::function<void(const CheckpointEvent&)> cb);
  const FinetuneOptions& options() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace weft

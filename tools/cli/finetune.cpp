// `weft finetune`: argument parsing over weft::FinetuneJob (weft/finetune.h). Training goes
// through `weft train` on finetune.yaml, so --nproc, signals and progress are train's.
#include <cstdio>
#include <filesystem>

#include "tools/cli/commands.h"
#include "weft/error.h"
#include "weft/finetune.h"

namespace weft {

int cmd_finetune(const CliArgs& a) {
  FinetuneOptions o;
  o.model = a.model;
  o.data = a.data;
  o.format = a.format.empty() ? "chat" : a.format;
  o.lora_rank = a.lora_rank;
  o.lora_export = a.lora_export.empty() ? "merged" : a.lora_export;
  WEFT_CHECK(a.lora_export.empty() || a.lora_export == "merged" || a.lora_export == "adapter",
             "--lora-export must be merged or adapter, got '", a.lora_export, "'");
  o.output = a.output;
  o.skip_bad = a.skip_bad;
  o.config = a.config;
  o.overrides = a.overrides;
  o.console = true;
  FinetuneJob job(o);
  const Config& cfg = job.prepare();
  const std::string config_path = (std::filesystem::path(cfg.run.dir) / "finetune.yaml").string();
  CliArgs t;
  t.config = config_path;
  t.nproc = a.nproc;
  t.argv = {"train", "--config", config_path};
  const int rc = cmd_train(t);
  if (rc != 0 || !job.exports()) return rc;  // under torchrun, rank 0 exports
  const int64_t step = job.checkpoint_step();
  if (step < cfg.train.steps) {
    std::printf("finetune: stopped at step %lld of %lld; no export written. Re-run the same command to resume.\n",
                (long long)step, (long long)cfg.train.steps);
    return 130;
  }
  job.export_model();
  return 0;
}

}  // namespace weft

// Subcommands: each parses its flags into library calls and prints the contract lines
// (eval_loss=, parameters=) that scripts and tests read.
#include "tools/cli/commands.h"

#include <cmath>
#include <cstdio>
#include <memory>

#include "weft/config.h"
#include "weft/convert.h"
#include "weft/error.h"
#include "weft/inference.h"
#include "weft/plan.h"
#include "weft/preprocess.h"
#include "weft/worker.h"
#include "tools/cli/launcher.h"
#include "tools/cli/worker.h"

namespace weft {
namespace {

Config job_config(const CliArgs& a) {
  WEFT_CHECK(!a.config.empty(), "--config FILE is required");
  Config cfg = load_config(a.config);
  for (const auto& o : a.overrides) apply_override(cfg, o);
  return cfg;
}

std::unique_ptr<CheckpointModel> load_model(const CliArgs& a) {
  WEFT_CHECK(!a.checkpoint.empty(), "--checkpoint DIR is required");
  return CheckpointModel::load(a.checkpoint, a.overrides);
}

}  // namespace

int cmd_train(const CliArgs& a) {
  Config cfg = job_config(a);
  if (a.nproc > 1) {
    LaunchOptions launch;
    launch.label = check_local_launch(cfg, a.nproc);
    launch.nproc = a.nproc;
    launch.args = strip_nproc_flag(a.argv);
    return launch_local_workers(launch);
  }
  return run_training_worker(cfg, cli_worker_options());
}

int cmd_eval(const CliArgs& a) {
  WEFT_CHECK(!a.data.empty(), "--data PREFIX is required (an indexed dataset: PREFIX.bin/.idx)");
  WEFT_CHECK(a.max_batches >= 0, "--max-batches must be >= 0 (0 = every window), got ", a.max_batches);
  auto model = load_model(a);
  EvalOptions opts;
  opts.max_batches = a.max_batches;
  opts.logits_out = a.logits_out;
  std::printf("eval_loss=%.6f\n", model->evaluate(a.data, opts).loss);
  return 0;
}

int cmd_plan(const CliArgs& a) {
  const Config cfg = job_config(a);
  // The model's lines first: they are printed even when the layout is then refused.
  std::fputs(render_model_plan(plan_model(cfg)).c_str(), stdout);
  std::fputs(render_layout_plan(plan_layout(cfg, a.nproc)).c_str(), stdout);
  return 0;
}

int cmd_convert(const CliArgs& a) {
  ConvertOptions opts;
  opts.overrides = a.overrides;
  opts.lora_export = a.lora_export;
  opts.nproc = a.nproc;
  opts.console = true;
  const ConvertResult result = convert(a.from, a.to, opts);
  if (result.processes > 1) {  // ckpt -> ckpt on several local ranks, each running this command
    LaunchOptions launch;
    launch.nproc = int(result.processes);
    launch.args = strip_nproc_flag(a.argv);
    launch.label = "convert";
    return launch_local_workers(launch);
  }
  if (!result.summary.empty()) std::printf("%s\n", result.summary.c_str());
  return 0;
}

int cmd_preprocess(const CliArgs& a) {
  WEFT_CHECK(!a.input.empty() && !a.output.empty(), "--input FILE and --output PREFIX are required");
  if (!a.format.empty()) {  // fine-tuning records: examples with loss masks
    WEFT_CHECK(!a.tokenizer.empty(), "--format needs the model's --tokenizer (hf:DIR, sp:FILE, gpt2:DIR)");
    const bool hf = a.tokenizer.rfind("hf:", 0) == 0;
    const std::string model_dir = a.model.rfind("hf:", 0) == 0 ? a.model.substr(3) : hf ? a.tokenizer.substr(3) : "";
    write_sft_data("preprocess", a.input, a.output, a.format, a.tokenizer, model_dir, a.max_tokens, a.skip_bad);
    return 0;
  }
  PreprocessOptions opts;
  opts.input = a.input;
  opts.tokenizer_spec = a.tokenizer.empty() ? "byte" : a.tokenizer;
  opts.output_prefix = a.output;
  opts.json_key = a.json_key;
  opts.add_special_tokens = a.add_special_tokens;
  auto stats = run_preprocess(opts);
  std::printf("preprocess: wrote %s.bin/.idx: documents=%lld tokens=%lld\n", a.output.c_str(),
              (long long)stats.documents, (long long)stats.tokens);
  return 0;
}

int cmd_generate(const CliArgs& a) {
  WEFT_CHECK(!a.prompt.empty(), "--prompt TEXT is required (and must not be empty)");
  WEFT_CHECK(std::isfinite(a.temperature) && a.temperature >= 0, "--temperature must be a finite number >= 0 ",
             "(0 = greedy), got ", a.temperature);
  WEFT_CHECK(a.top_k >= 0, "--top-k must be >= 0 (0 = the whole vocabulary), got ", a.top_k);
  WEFT_CHECK(a.max_new_tokens > 0, "--max-new-tokens must be > 0, got ", a.max_new_tokens);
  auto model = load_model(a);
  model->use_tokenizer(a.tokenizer);
  GenerationOptions g;
  g.max_new_tokens = a.max_new_tokens;
  g.temperature = a.temperature;
  g.top_k = a.top_k;
  g.seed = static_cast<uint64_t>(a.seed);
  // Text is bytes: written with their length, so a NUL byte (a valid token) is not an end.
  auto write = [](const std::string& bytes) {
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    std::fflush(stdout);
  };
  write(a.prompt);
  model->generate(a.prompt, g, write);
  write("\n");
  return 0;
}

}  // namespace weft

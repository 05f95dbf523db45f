// Subcommands: each parses its flags into library calls and prints the contract lines
// (eval_loss=, parameters=) that scripts and tests read.
#include "tools/cli/commands.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "weft/config.h"
#include "weft/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "models/transformer.h"
#include "parallel/device.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/topology.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/gpt_dataset.h"
#include "runtime/data/preprocess.h"
#include "runtime/data/tokenizer.h"
#include "runtime/generate.h"
#include "runtime/job.h"
#include "runtime/perf.h"
#include "weft/trainer.h"
#include "weft/convert.h"
#include "weft/worker.h"
#include "tools/cli/launcher.h"
#include "tools/cli/worker.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

Config job_config(const CliArgs& a) {
  WEFT_CHECK(!a.config.empty(), "--config FILE is required");
  Config cfg = load_config(a.config);
  for (const auto& o : a.overrides) apply_override(cfg, o);
  return cfg;
}

// A checkpoint's model, ready for inference; `overrides` apply to the saved config.
struct LoadedModel {
  Config cfg;
  std::string dir;
  Transformer model{nullptr};
  at::Device device{at::kCPU};
};

LoadedModel load_model(const CliArgs& a) {
  WEFT_CHECK(!a.checkpoint.empty(), "--checkpoint DIR is required");
  LoadedModel m;
  m.dir = resolve_checkpoint_dir(a.checkpoint);
  m.cfg = checkpoint_config(m.dir);
  for (const auto& o : a.overrides) apply_override(m.cfg, o);
  m.cfg.validate();
  m.device = select_device(m.cfg.device);
  if (m.cfg.train.threads > 0) at::set_num_threads(int(m.cfg.train.threads));
  m.model = load_checkpoint_model(m.cfg, m.dir);  // a LoRA checkpoint: its base and adapters
  m.model->to(m.device);
  m.model->eval();
  return m;
}

// The first evaluated micro-batch's input_ids (B, T) int64 and logits (B, T, vocab_size) fp32,
// as a safetensors file: what parity tests compare with a reference implementation's logits.
// Packed examples (data.packing) are computed apart and their positions (B, T) written too.
void write_first_logits(TransformerImpl& model, const SampleSource& data, const Config& cfg, const at::Device& device,
                        const std::string& path) {
  at::NoGradGuard no_grad;
  const auto [first, count] = eval_window(0, cfg.train.micro_batch_size, data.num_samples());
  const auto mb = make_micro_batch(data, first, count, cfg.train.seq_len);
  ComputeGuard compute(cfg.precision, device);
  const auto positions = mb.positions.defined() ? mb.positions.to(device) : at::Tensor();
  auto logits = model.forward(mb.input_ids.to(device), positions).to(at::kFloat).cpu();  // (B, T, V)
  NamedTensors out = {{"input_ids", mb.input_ids.to(at::kLong).contiguous()}, {"logits", logits.contiguous()}};
  if (mb.positions.defined()) out.emplace_back("positions", mb.positions.contiguous());
  write_safetensors(path, out);
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
  auto m = load_model(a);
  m.cfg.data.prefix = a.data;
  m.cfg.data.blend.clear();
  auto data = open_dataset(m.cfg, DataSplit::kAll);
  const double loss = evaluate(*m.model, *data, m.cfg.train.micro_batch_size, m.cfg.train.seq_len,
                               a.max_batches, m.cfg.precision, m.device);
  if (!a.logits_out.empty()) write_first_logits(*m.model, *data, m.cfg, m.device, a.logits_out);
  std::printf("eval_loss=%.6f\n", loss);
  return 0;
}

int cmd_plan(const CliArgs& a) {
  Config cfg = job_config(a);
  cfg.validate();
  // The published count, and what memory holds with the vocabulary padded (sizes below use it).
  const int64_t published = count_published_parameters(cfg.model), n = count_parameters(cfg.model);
  const double gib = 1024.0 * 1024 * 1024;
  // fp32 master weights + fp32 grads + two fp32 Adam moments.
  std::printf("model: %s, %lld layers, hidden %lld, heads %lld/%lld kv, ffn %lld, "
              "vocab %lld (padded to %lld)\n",
              cfg.model.family.c_str(), (long long)cfg.model.num_layers, (long long)cfg.model.hidden_size,
              (long long)cfg.model.num_heads, (long long)cfg.model.kv_heads(),
              (long long)cfg.model.ffn_hidden_size, (long long)cfg.model.vocab_size,
              (long long)cfg.model.padded_vocab_size());
  std::printf("parameters=%lld\nparameters_padded=%lld\n", (long long)published, (long long)n);
  std::printf("weights_gib=%.2f\ntraining_state_gib=%.2f\n", n * 4 / gib, n * 16 / gib);
  std::printf("flops_per_token=%.4g\n", training_flops_per_token(cfg.model, cfg.train.seq_len));
  // Per rank, for the layout of parallel.* on --nproc ranks (default tp × pp): what each holds,
  // sized on the meta device. DP replicas hold the same parameters.
  const int64_t world = a.nproc > 0 ? a.nproc : cfg.parallel.tp * cfg.parallel.pp;
  const ParallelDims dims = validate_layout(world, cfg);
  std::printf("layout: %s\n", dims.describe().c_str());
  // TP ranks of a stage hold the same number of parameters (the plan splits evenly); tp rank 0
  // stands for them.
  int64_t most = 0;
  for (int64_t pp = 0; pp < dims.pp; ++pp) {
    const auto rank = rank_training_state(cfg, dims, RankCoord{0, 0, pp});
    most = std::max(most, rank.parameters);
    std::printf("rank_parameters pp=%lld (each of %lld tp ranks) layers=%s: %lld (%.2f GiB training state)\n",
                (long long)pp, (long long)dims.tp, rank.layers.c_str(), (long long)rank.parameters,
                rank.bytes / gib);
  }
  std::printf("max_rank_parameters=%lld\n", (long long)most);
  if (dims.pp > 1) {
    const int64_t micro = cfg.train.global_batch_size / (cfg.train.micro_batch_size * dims.dp);
    const auto name = cfg.parallel.schedule.empty() ? default_schedule_name(dims.vpp) : cfg.parallel.schedule;
    const auto schedule = build_schedule(name, dims.pp, dims.vpp, micro);
    const auto in_flight = peak_in_flight(schedule);
    std::printf("pipeline: %s, %lld micro-batches per step, ideal bubble %.1f%%, at most %lld "
                "forward activations (micro-batch x chunk) held per rank\n",
                name.c_str(), (long long)micro, 100 * ideal_bubble_fraction(dims.pp, dims.vpp, micro),
                (long long)*std::max_element(in_flight.begin(), in_flight.end()));
  }
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
  auto m = load_model(a);
  std::string spec = a.tokenizer.empty() ? m.cfg.data.tokenizer : a.tokenizer;
  spec = resolve_checkpoint_tokenizer(spec, m.dir);  // "gpt2:." / "hf:.": files stored in the checkpoint
  auto tok = make_tokenizer(spec);
  WEFT_CHECK(tok->vocab_size() <= m.cfg.model.vocab_size, "tokenizer '", spec, "' has ",
             tok->vocab_size(), " tokens but the model only ", m.cfg.model.vocab_size,
             "; pass the tokenizer the model was trained with (--tokenizer)");
  GenerateOptions g;
  g.max_new_tokens = a.max_new_tokens;
  g.temperature = a.temperature;
  g.top_k = a.top_k;
  g.seed = static_cast<uint64_t>(a.seed);
  g.stop_token = tok->eos_id();
  g.vocab_limit = tok->vocab_size();  // the model's vocabulary may be padded past it
  // Text is bytes: written with their length, so a NUL byte (a valid token) is not an end.
  auto write = [](const std::string& bytes) {
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    std::fflush(stdout);
  };
  write(a.prompt);
  auto out = generate(*m.model, tok->encode(a.prompt), g, [&](int64_t t) {
    if (t != g.stop_token) write(tok->decode({t}));
  });
  write("\n");
  return 0;
}

}  // namespace weft

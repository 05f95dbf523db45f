// weft::convert: the `weft convert` conversions between Hugging Face directories and Weft
// checkpoints, and checkpoints written again for another layout.
#include "weft/convert.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "core/fileio.h"
#include "models/transformer.h"
#include "parallel/comm.h"
#include "parallel/topology.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/tokenizer.h"
#include "runtime/hf_convert.h"
#include "runtime/job.h"
#include "runtime/relayout.h"
#include "runtime/worker_job.h"
#include "weft/config.h"
#include "weft/error.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

std::pair<std::string, std::string> split_spec(const std::string& spec, const char* flag) {
  const auto colon = spec.find(':');
  WEFT_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < spec.size(), flag, " '", spec,
             "': expected hf:DIR or ckpt:DIR");
  const auto kind = spec.substr(0, colon);
  WEFT_CHECK(kind == "hf" || kind == "ckpt", flag, " '", spec, "': kind must be hf or ckpt");
  return {kind, spec.substr(colon + 1)};
}

// ckpt -> ckpt: the checkpoint written again for the layout the parallel.* overrides give, by
// that layout's ranks (opts.nproc, default the source's world size; or the torchrun environment).
ConvertResult convert_layout(const ConvertOptions& opts, const std::string& from, const std::string& to) {
  const auto dir = resolve_checkpoint_dir(from);
  // A new checkpoint root: writing into one that holds checkpoints (or anything else) would mix
  // runs, or make `latest` skip newer steps.
  std::error_code ec;
  WEFT_CHECK(!fs::exists(to) || (fs::is_directory(to) && fs::is_empty(to, ec)), "convert: --to ckpt:", to,
             " must be a new or empty directory (it is a file or already holds something); choose another");
  Config cfg = checkpoint_config(dir);
  for (const auto& o : opts.overrides) apply_override(cfg, o);
  ConvertResult result;
  auto job = [&](const ParallelContext* ctx) {
    const auto o = relayout_checkpoint(cfg, ctx, dir, to);
    if (!ctx || ctx->is_primary()) {
      char size[32];
      std::snprintf(size, sizeof(size), "%.1f", o.bytes / 1e6);
      result.summary = str("converted ", dir, " -> ", o.dir, " (step ", o.step, ", ", size, " MB)");
    }
    return 0;
  };
  const WorkerEnv env = worker_env_from_environment();
  if (env.world_size > 1) {
    WorkerOptions wopts;
    wopts.console = opts.console;
    run_worker(cfg, env, wopts, [&](const ParallelContext& ctx) { return job(&ctx); });
    return result;
  }
  const CheckpointLayout saved = CheckpointReader(dir).layout();
  const int64_t world = opts.nproc > 0 ? opts.nproc : saved.tp * saved.pp * saved.dp;
  cfg.validate();
  try {
    validate_layout(world, cfg);
  } catch (const Error& e) {
    fail(str("convert to ", world, " ranks (", opts.nproc > 0 ? "--nproc" : "the source checkpoint's world size",
             "): ", e.what(), "; pass --nproc N for another world size"));
  }
  if (world == 1) {
    job(nullptr);
    return result;
  }
  result.processes = world;
  return result;
}

std::string converted_line(const std::string& from, const std::string& to, const ModelConfig& model) {
  return str("converted ", from, " -> ", to, " (", model.family, ", ", count_parameters(model), " parameters)");
}

// hf -> hf or hf -> ckpt.
ConvertResult convert_hf(const ConvertOptions& opts, const std::string& from, const std::string& from_dir,
                         const std::string& to, const std::string& to_kind, const std::string& to_dir) {
  ModelConfig model_cfg;
  Config cfg;
  NamedTensors tensors;
  std::string tokenizer_spec;  // the tokenizer whose files go with the result, if any
  {
    auto hf = load_hf_model(from_dir);
    model_cfg = hf.config;
    tensors = std::move(hf.tensors);
    cfg.model = model_cfg;
    cfg.train.seq_len = std::min<int64_t>(cfg.train.seq_len, model_cfg.max_seq_len);
    if (!hf.tokenizer.empty()) cfg.data.tokenizer = tokenizer_spec = hf.tokenizer;
  }
  for (const auto& o : opts.overrides) apply_override(cfg, o);
  // Validate names and shapes against the model Weft would build from this config.
  Transformer check(model_cfg, at::TensorOptions().device(at::kMeta));
  for (const auto& [name, t] : tensors) {
    auto* p = check->named_parameters().find(name);
    WEFT_CHECK(p && p->sizes() == t.sizes(), from, ": tensor '", name, "' does not fit the model config");
  }
  const TokenizerFiles tok_files = tokenizer_spec.empty() ? TokenizerFiles{} : tokenizer_files(tokenizer_spec);
  if (to_kind == "hf") {
    save_hf_model(to_dir, model_cfg, tensors);
    for (const auto& [name, path] : tok_files.paths)
      if (fs::absolute(path) != fs::absolute(fs::path(to_dir) / name))
        fs::copy_file(path, fs::path(to_dir) / name, fs::copy_options::overwrite_existing);
  } else {
    CheckpointData data;
    data.model = std::move(tensors);
    for (const auto& [name, path] : tok_files.paths) data.extra_files[name] = read_file(path);
    if (!tok_files.paths.empty()) cfg.data.tokenizer = tok_files.own_spec;  // the checkpoint's own files
    data.config_yaml = to_yaml(cfg);
    data.trainer_state = {{"step", 0}, {"consumed_samples", 0}, {"converted_from", from}};
    save_checkpoint(to_dir, data);
  }
  return {converted_line(from, to, model_cfg), 0};
}

}  // namespace

ConvertResult convert(const std::string& from, const std::string& to, const ConvertOptions& opts) {
  WEFT_CHECK(!from.empty() && !to.empty(), "--from and --to are both required");
  auto [from_kind, from_dir] = split_spec(from, "--from");
  auto [to_kind, to_dir] = split_spec(to, "--to");
  const std::string& mode = opts.lora_export;
  WEFT_CHECK(mode.empty() || mode == "merged" || mode == "adapter", "--lora-export must be merged or adapter, got '",
             mode, "'");
  WEFT_CHECK(mode.empty() || (from_kind == "ckpt" && to_kind == "hf"),
             "--lora-export applies to --from ckpt:DIR --to hf:DIR only");
  if (from_kind == "ckpt" && to_kind == "ckpt") return convert_layout(opts, from_dir, to_dir);
  if (from_kind == "ckpt") {  // -> hf: the whole model (LoRA merged) or a peft adapter
    export_hf(from_dir, to_dir, mode == "adapter", opts.overrides);
    if (mode == "adapter") return {str("converted ", from, " -> ", to, " (peft LoRA adapter)"), 0};
    return {converted_line(from, to, checkpoint_config(resolve_checkpoint_dir(from_dir)).model), 0};
  }
  return convert_hf(opts, from, from_dir, to, to_kind, to_dir);
}

}  // namespace weft

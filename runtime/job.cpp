// Shared pieces of train/eval/generate/convert.
#include "runtime/job.h"

#include <ATen/autocast_mode.h>

#include <cstdio>
#include <filesystem>

#include "weft/error.h"
#include "core/fileio.h"
#include "models/lora.h"
#include "parallel/device.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/gpt_dataset.h"
#include "runtime/perf.h"

namespace weft {

Transformer build_model(const ModelConfig& cfg, const at::Device& device, uint64_t seed,
                        const ModelShard& shard, const LoraConfig& lora) {
  // Initialise on the CPU (the per-parameter generators are CPU generators), then move.
  Transformer model(cfg, at::TensorOptions().dtype(at::kFloat), shard, lora);
  model->init_weights(seed);
  if (!device.is_cpu()) model->to(device);
  return model;
}

ModelShard model_shard(const Config& cfg, const ParallelDims& dims, const RankCoord& coord,
                       int64_t chunk, const Group* tp_group) {
  const int64_t stage = chunk * dims.pp + coord.pp;
  ModelShard shard;
  shard.tp = dims.tp;
  shard.tp_rank = coord.tp;
  shard.tp_group = tp_group;
  shard.sequence_parallel = cfg.parallel.sequence_parallel && dims.tp > 1;
  std::tie(shard.first_layer, shard.last_layer) =
      stage_layers(dims, cfg.model.num_layers, cfg.parallel.pipeline_layers).at(stage);
  shard.embedding = stage == 0;
  shard.head = stage == dims.num_virtual_stages() - 1;
  return shard;
}

NamedTensors model_tensors(TransformerImpl& model) {
  NamedTensors out;
  for (const auto& item : model.named_parameters())
    out.emplace_back(item.key(), item.value().detach().to(at::kCPU));
  return out;
}

void load_model_tensors(TransformerImpl& model, const NamedTensors& tensors, const std::string& source) {
  at::NoGradGuard no_grad;
  auto params = model.named_parameters();
  size_t matched = 0;
  for (const auto& [name, t] : tensors) {
    auto* p = params.find(name);
    WEFT_CHECK(p, source, ": tensor '", name, "' is not a parameter of this model (",
               model.config().family, ", ", model.config().num_layers,
               " layers); is the checkpoint from another model config?");
    WEFT_CHECK(p->sizes() == t.sizes(), source, ": '", name, "' has shape ", t.sizes(),
               ", the model expects ", p->sizes(), "; check model.* keys against the checkpoint");
    p->copy_(t);
    ++matched;
  }
  for (const auto& item : params)
    WEFT_CHECK(std::any_of(tensors.begin(), tensors.end(),
                           [&](const auto& nt) { return nt.first == item.key(); }),
               source, ": parameter '", item.key(), "' is missing from the checkpoint");
}

std::string lora_base_dir(const Config& cfg) {
  const std::string& from = cfg.checkpoint.init_from;
  if (from.empty()) return "";
  std::string dir;
  try {
    dir = resolve_checkpoint_dir(from);
  } catch (const Error& e) {
    fail(str("checkpoint.init_from '", from, "' (the base model of this LoRA job; LoRA checkpoints hold only ",
             "the adapters) cannot be read: ", e.what(), "; restore the base there or pass --set checkpoint.init_from=DIR"));
  }
  WEFT_CHECK(checkpoint_config(dir).lora.rank == 0, "checkpoint.init_from '", from, "' is itself a LoRA checkpoint ",
             "(adapters only, no base weights); export it merged (weft convert --from ckpt:DIR --to hf:OUT), import ",
             "that (weft convert --from hf:OUT --to ckpt:BASE) and use BASE as checkpoint.init_from");
  return dir;
}

Transformer load_checkpoint_model(const Config& cfg, const std::string& dir) {
  auto data = load_checkpoint(dir, /*with_optimizer=*/false);
  if (cfg.lora.rank == 0) {
    Transformer model(cfg.model, at::TensorOptions().dtype(at::kFloat));
    load_model_tensors(*model, data.model, dir);
    return model;
  }
  Transformer model = build_model(cfg.model, at::kCPU, cfg.train.seed, ModelShard{}, cfg.lora);
  NamedTensors tensors;
  const std::string base = lora_base_dir(cfg);
  if (base.empty()) {  // the seeded initialisation is the base
    for (auto& [name, t] : model_tensors(*model))
      if (!is_lora_parameter(name)) tensors.emplace_back(name, t);
  } else {
    for (auto& [name, t] : load_checkpoint(base, false).model) tensors.emplace_back(name, t);
  }
  for (auto& [name, t] : data.model) {
    WEFT_CHECK(is_lora_parameter(name), dir, " holds base tensor '", name, "' but its config has lora.rank=",
               cfg.lora.rank, " (LoRA checkpoints hold adapters only); is lora.* overridden?");
    tensors.emplace_back(name, t);
  }
  load_model_tensors(*model, tensors, base.empty() ? dir : str(dir, " with base ", base));
  return model;
}

ComputeGuard::ComputeGuard(const std::string& precision, const at::Device& device) {
  if (precision != "bf16") return;
  type_ = device.type();
  prev_enabled_ = at::autocast::is_autocast_enabled(*type_);
  prev_dtype_ = at::autocast::get_autocast_dtype(*type_);
  at::autocast::set_autocast_enabled(*type_, true);
  at::autocast::set_autocast_dtype(*type_, at::kBFloat16);
  at::autocast::increment_nesting();
}

ComputeGuard::~ComputeGuard() {
  if (!type_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(*type_, prev_enabled_);
  at::autocast::set_autocast_dtype(*type_, prev_dtype_);
}

std::shared_ptr<SampleSource> open_dataset(const Config& cfg, DataSplit split) {
  GPTDatasetOptions opts;
  opts.seq_len = cfg.train.seq_len;
  opts.seed = cfg.train.seed;
  opts.split = cfg.data.split;
  opts.cache_dir = cfg.data.cache_dir;
  opts.packing = cfg.data.packing;
  opts.which = split == DataSplit::kTrain   ? SplitPart::kTrain
               : split == DataSplit::kValid ? SplitPart::kValid
                                            : SplitPart::kAll;
  opts.shuffle = split == DataSplit::kTrain;
  WEFT_CHECK(!cfg.data.prefix.empty() || !cfg.data.blend.empty(),
             "config: set data.prefix (an indexed dataset made by `weft preprocess`) or data.blend");
  return open_training_data(cfg.data.prefix, cfg.data.blend, opts, cfg.model.vocab_size);
}

int64_t eval_batch_count(int64_t max_batches, int64_t mbs, int64_t total) {
  const int64_t all = (total + mbs - 1) / mbs;
  return max_batches > 0 ? std::min(max_batches, all) : all;
}

std::pair<int64_t, int64_t> eval_window(int64_t b, int64_t mbs, int64_t total) {
  const int64_t first = b * mbs;
  WEFT_CHECK(b >= 0 && first < total, "eval_window: micro-batch ", b, " is past the ", total, " windows");
  return {first, std::min(mbs, total - first)};
}

double evaluate(TransformerImpl& model, const SampleSource& data, int64_t mbs, int64_t seq_len,
                int64_t batches, const std::string& precision, const at::Device& device) {
  at::NoGradGuard no_grad;
  const int64_t total = data.num_samples();
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(device);
  auto loss_sum = at::zeros({}, opts), counted = at::zeros({}, opts);  // sum of loss x count, of count
  for (int64_t b = 0; b < eval_batch_count(batches, mbs, total); ++b) {
    const auto [first, count] = eval_window(b, mbs, total);
    const auto mb = make_micro_batch(data, first, count, seq_len);
    ComputeGuard compute(precision, device);
    auto loss = model.loss(mb.input_ids.to(device), mb.labels.to(device),
                           mb.positions.defined() ? mb.positions.to(device) : at::Tensor());
    loss_sum.add_(loss.to(at::kDouble) * double(mb.num_counted)), counted.add_(double(mb.num_counted));
  }
  const double n = counted.item<double>();
  WEFT_CHECK(n > 0, "evaluation counted no token: every target in the evaluated windows is masked out by the ",
             "dataset's loss mask (PREFIX.loss_mask); evaluate data with targets");
  return loss_sum.item<double>() / n;
}

void check_memory_fits(const Config& cfg, const ParallelDims& dims, const std::vector<RankCoord>& ranks,
                       const at::Device& device) {
  auto gib = [](double bytes) {
    char buf[32];
    const double g = bytes / (1024.0 * 1024 * 1024);
    std::snprintf(buf, sizeof(buf), g >= 1 ? "%.2f" : "%.3g", g);
    return std::string(buf);
  };
  double need = 0;
  int64_t params = 0;
  for (const auto& coord : ranks) {
    const auto s = rank_training_state(cfg, dims, coord);
    need += s.bytes + (device.is_cpu() ? s.snapshot_bytes : 0);  // on a GPU the snapshot is host memory
    params += s.parameters;
  }
  std::string source = "run.memory_limit_gb";
  const double have = cfg.run.memory_limit_gb > 0 ? cfg.run.memory_limit_gb * 1024.0 * 1024 * 1024
                                                  : double(available_memory_bytes(device, &source));
  if (have <= 0 || need <= have) return;
  const std::string whose = ranks.size() == 1 ? "this rank" : str("the ", ranks.size(), " ranks on this host");
  fail(str("not enough memory: the model and optimizer state of ", whose, " (", params,
           " parameters; fp32 weights, grads and AdamW moments",
           cfg.checkpoint.async && device.is_cpu() ? ", and their copy for asynchronous checkpoints" : "", ") need ", gib(need), " GiB but ", device.str(), " has ", gib(have),
           " GiB available (", source, "); use a smaller model, split it over more ranks (parallel.tp, ",
           "parallel.pp), or shard optimizer state with parallel.zero=1 over dp > 1",
           cfg.checkpoint.async && device.is_cpu() ? "; checkpoint.async=false drops the checkpoint copy" : ""));
}

Config checkpoint_config(const std::string& step_dir) {
  const auto path = (std::filesystem::path(step_dir) / "config.yaml").string();
  Config cfg;
  merge_config_yaml(cfg, CheckpointReader(step_dir).config_yaml(), path);  // verified before it is parsed
  return cfg;
}

}  // namespace weft

// Saving and restoring a training job: parameter pieces by placement, optimizer state through the
// Optimizer interface, trainer state (step, data position, RNG) and the tokenizer files.
#include "runtime/checkpointer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <glog/logging.h>

#include <chrono>
#include <filesystem>

#include "core/error.h"
#include "core/fileio.h"
#include "parallel/comm.h"
#include "runtime/optim/optimizer.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

constexpr const char* kGpt2Files[] = {"vocab.json", "merges.txt"};

std::string bytes_to_hex(const at::Tensor& t) {
  static const char* digits = "0123456789abcdef";
  auto c = t.contiguous();
  const auto* p = c.data_ptr<uint8_t>();
  std::string s;
  for (int64_t i = 0; i < c.numel(); ++i) s += digits[p[i] >> 4], s += digits[p[i] & 15];
  return s;
}

at::Tensor hex_to_bytes(const std::string& s) {
  auto t = at::empty({int64_t(s.size() / 2)}, at::kByte);
  auto* p = t.data_ptr<uint8_t>();
  for (size_t i = 0; i + 1 < s.size(); i += 2) p[i / 2] = uint8_t(std::stoi(s.substr(i, 2), nullptr, 16));
  return t;
}

bool is_gpt2_spec(const std::string& spec) { return spec.rfind("gpt2:", 0) == 0; }

}  // namespace

Checkpointer::Checkpointer(const Config& cfg, const ParallelContext* ctx, const ParamList& params,
                           Optimizer& optimizer)
    : cfg_(cfg), ctx_(ctx), params_(params), optimizer_(optimizer) {
  // A tokenizer named by directory travels with every checkpoint, so the checkpoint is
  // self-contained ("gpt2:." = the checkpoint's own files, resolved in restore()).
  if (is_gpt2_spec(cfg_.data.tokenizer) && cfg_.data.tokenizer != "gpt2:.")
    take_tokenizer_files(cfg_.data.tokenizer.substr(5));
}

void Checkpointer::take_tokenizer_files(const std::string& dir) {
  for (const char* f : kGpt2Files) {
    const auto path = fs::path(dir) / f;
    WEFT_CHECK(fs::exists(path), "data.tokenizer '", cfg_.data.tokenizer, "': ", path.string(),
               " does not exist; point data.tokenizer at a directory with vocab.json and merges.txt");
    tokenizer_files_[f] = read_file(path.string());
  }
  cfg_.data.tokenizer = "gpt2:.";
}

std::optional<RestoredState> Checkpointer::restore() {
  std::optional<RestoredState> r;
  if (auto latest = find_latest_checkpoint(cfg_.checkpoint_dir())) {
    const auto meta = load_checkpoint_metadata(*latest);
    load_weights(*latest);
    load_optimizer(*latest, meta.step);
    r = RestoredState{*latest, true, meta.step, meta.trainer_state.at("consumed_samples").get<int64_t>()};
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(hex_to_bytes(meta.trainer_state.at("rng_cpu").get<std::string>()));
  } else if (!cfg_.checkpoint.init_from.empty()) {
    const auto dir = resolve_checkpoint_dir(cfg_.checkpoint.init_from);
    load_weights(dir);
    optimizer_.reload_params();
    r = RestoredState{dir, false, 0, 0};
  }
  if (cfg_.data.tokenizer == "gpt2:." && tokenizer_files_.empty()) {
    WEFT_CHECK(r, "data.tokenizer is 'gpt2:.' (a checkpoint's own tokenizer files) but there is no checkpoint ",
               "to take them from; set data.tokenizer=gpt2:DIR or checkpoint.init_from");
    take_tokenizer_files(r->dir);
  }
  return r;
}

void Checkpointer::load_weights(const std::string& dir) {
  at::NoGradGuard no_grad;
  std::vector<std::pair<std::string, ShardPlacement>> want;
  for (const auto& p : params_) want.emplace_back(p.name, placement_of(p.shard));
  auto model = load_shards(dir, "model", want);
  for (size_t k = 0; k < params_.size(); ++k) params_[k].tensor.copy_(model[k].second);
}

void Checkpointer::load_optimizer(const std::string& dir, int64_t step) {
  optimizer_.reload_params();
  optimizer_.load_state(load_shards(dir, "optim", optimizer_.wanted_state()), step);
}

Checkpointer::Saved Checkpointer::save(int64_t step, int64_t consumed_samples) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t dp_rank = ctx_ ? ctx_->coord().dp : 0;
  CheckpointData data;
  data.step = step;
  const auto& dims = ctx_ ? ctx_->dims() : ParallelDims{};
  data.layout = {dims.tp, dims.pp, dims.dp};
  // Each piece once: by its owner on DP rank 0 (replicas are identical). Frozen parameters are
  // saved with the weights like any other.
  if (dp_rank == 0)
    for (const auto& p : params_) {
      if (!p.owned) continue;
      data.model.emplace_back(p.name, p.tensor.detach().to(at::kCPU));
      data.model_placement[p.name] = placement_of(p.shard);
    }
  optimizer_.save_state(dp_rank, data.optimizer, data.optimizer_placement);
  data.trainer_state = {{"step", step},
                        {"consumed_samples", consumed_samples},
                        {"rng_cpu", bytes_to_hex(at::detail::getDefaultCPUGenerator().get_state())}};
  data.config_yaml = to_yaml(cfg_);
  data.extra_files = tokenizer_files_;
  Saved saved;
  saved.result = save_checkpoint(cfg_.checkpoint_dir(), data, cfg_.checkpoint.keep, ctx_ ? &ctx_->world() : nullptr);
  saved.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return saved;
}

}  // namespace weft

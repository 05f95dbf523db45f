// Pieces every command of a job shares (train, eval, generate, convert): choosing the device,
// building a model, moving its tensors in and out of checkpoints, the precision guard, data
// opening and evaluation.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "weft/config.h"
#include "models/transformer.h"
#include "parallel/topology.h"
#include "runtime/checkpoint/checkpoint.h"

namespace weft {

class SampleSource;

// A model (or one shard of it) with parameters in fp32 on `device`, initialised from `seed`
// (layout-independent: every shard holds its slice of the same model), with LoRA adapters when
// lora.rank > 0.
Transformer build_model(const ModelConfig& cfg, const at::Device& device, uint64_t seed,
                        const ModelShard& shard = {}, const LoraConfig& lora = {});

// LoRA checkpoints hold only the adapters; the base model is checkpoint.init_from's weights (the
// seeded initialisation when init_from is empty). Returns init_from resolved to a step directory,
// or "" when it is empty. Throws weft::Error naming checkpoint.init_from when it cannot be found
// or is itself a LoRA checkpoint (adapters only).
std::string lora_base_dir(const Config& cfg);

// The whole model of checkpoint `dir` (saved with config `cfg`, overrides applied), fp32 on the
// CPU, ready for inference or export: for a LoRA checkpoint the base from lora_base_dir(cfg) and
// the adapters from `dir`. Throws weft::Error naming the file, tensor or config key.
Transformer load_checkpoint_model(const Config& cfg, const std::string& dir);

// The part of the model chunk `chunk` of the rank at `coord` holds: its TP slice of the layers of
// virtual stage chunk * pp + coord.pp (parallel.pipeline_layers or balanced). `tp_group` may be
// null when only sizing.
ModelShard model_shard(const Config& cfg, const ParallelDims& dims, const RankCoord& coord,
                       int64_t chunk, const Group* tp_group);

NamedTensors model_tensors(TransformerImpl& model);  // CPU copies, by parameter name
// Copies `tensors` into the model; every parameter must be present with the right shape.
// `source` (a path) names where they came from in errors.
void load_model_tensors(TransformerImpl& model, const NamedTensors& tensors, const std::string& source);

// Mixed precision for the forward pass: bf16 compute on fp32 master weights (autocast); a no-op
// for fp32. RAII; not thread-safe (autocast state is thread-local).
class ComputeGuard {
 public:
  ComputeGuard(const std::string& precision, const at::Device& device);
  ~ComputeGuard();
  ComputeGuard(const ComputeGuard&) = delete;
  ComputeGuard& operator=(const ComputeGuard&) = delete;

 private:
  std::optional<at::DeviceType> type_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

enum class DataSplit { kTrain, kValid, kAll };
// The job's dataset (data.prefix or data.blend) for one split; kAll is unshuffled, in order.
std::shared_ptr<SampleSource> open_dataset(const Config& cfg, DataSplit split);

// Micro-batches in an evaluation pass over `num_samples` windows: the first `max_batches` (all
// when max_batches <= 0), never more than it takes to visit every window once.
int64_t eval_batch_count(int64_t max_batches, int64_t micro_batch_size, int64_t num_samples);
// Micro-batch b of an evaluation pass: (first sample, count); the last one may be short. Each
// window belongs to exactly one micro-batch. Throws weft::Error for b past the data.
std::pair<int64_t, int64_t> eval_window(int64_t b, int64_t micro_batch_size, int64_t num_samples);

// Mean next-token loss over the counted labels of the first `batches` micro-batches of windows
// in order from sample 0 (eval_batch_count). In-training validation evaluates the same windows.
// Runs without autograd.
double evaluate(TransformerImpl& model, const SampleSource& data, int64_t micro_batch_size,
                int64_t seq_len, int64_t batches, const std::string& precision, const at::Device& device);

// Refuses, before anything is allocated, a job whose model and optimizer state cannot fit: the
// training state of the ranks in `ranks` (rank_training_state in runtime/perf.h: fp32 weights,
// grads and AdamW moments; activations excluded) summed, against the memory they share on
// `device`: run.memory_limit_gb when set, else available_memory_bytes(device) (host MemAvailable
// or cgroup limit; free GPU memory). Pass every local rank for a CPU host, one rank per GPU.
// Throws weft::Error with needed vs available GiB and what to change; does nothing when the
// available figure is unknown. Call once per process, before building the model.
void check_memory_fits(const Config& cfg, const ParallelDims& dims, const std::vector<RankCoord>& ranks,
                       const at::Device& device);
inline void check_memory_fits(const Config& cfg, const ParallelDims& dims, const RankCoord& coord,
                              const at::Device& device) {
  check_memory_fits(cfg, dims, std::vector<RankCoord>{coord}, device);
}

// The config a checkpoint was written with, with `overrides` (key=value) applied.
Config checkpoint_config(const std::string& step_dir);

}  // namespace weft

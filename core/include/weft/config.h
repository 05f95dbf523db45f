// Typed job configuration. The structs below are the truth; YAML files and `--set key=value`
// overrides are parsed into them through one key table (for_each_field), which also produces the
// resolved YAML written to the run directory. Unknown keys and wrong types are weft::Error naming
// the file, line and nearest valid key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace weft {

// Llama-3.1-style RoPE frequency scaling; type "none" disables it.
struct RopeScalingConfig {
  std::string type = "none";  // none | llama3
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_seq_len = 8192;
};

struct ModelConfig {
  std::string family = "llama";  // llama | gpt2
  int64_t vocab_size = 32000;
  // Embedding and head rows are padded to a multiple of this (Megatron's
  // --make-vocab-size-divisible-by) so the vocabulary splits over tensor parallelism; it does not
  // depend on the layout, so checkpoints reshard between tp sizes. Padded ids are excluded from
  // the softmax and never generated. 1 = no padding.
  int64_t make_vocab_size_divisible_by = 1;
  int64_t hidden_size = 4096;
  int64_t num_layers = 32;
  int64_t num_heads = 32;
  int64_t num_kv_heads = 0;  // 0 = num_heads (no grouped-query attention)
  int64_t ffn_hidden_size = 11008;
  int64_t max_seq_len = 4096;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;
  double init_std = 0.02;
  RopeScalingConfig rope_scaling;

  int64_t kv_heads() const { return num_kv_heads > 0 ? num_kv_heads : num_heads; }
  int64_t head_dim() const { return hidden_size / num_heads; }
  // Rows of the embedding and output head: vocab_size rounded up to make_vocab_size_divisible_by.
  int64_t padded_vocab_size() const {
    const int64_t m = make_vocab_size_divisible_by > 0 ? make_vocab_size_divisible_by : 1;
    return (vocab_size + m - 1) / m * m;
  }

  // Checks every field and their combinations (positive sizes within bounds, heads dividing the
  // width, finite positive eps/theta...). Throws weft::Error "<source>: <key> must be ...", where
  // `key(field)` spells a field (the YAML key without "model.", e.g. "num_heads") as `source`
  // knows it: identity for YAML, HF names ("num_attention_heads") for a config.json.
  using KeyNamer = std::string (*)(const std::string& field);
  void validate(const std::string& source, KeyNamer key) const;
};

struct TrainConfig {
  int64_t steps = 100;
  int64_t global_batch_size = 8;  // sequences per optimizer step, over all DP ranks
  int64_t micro_batch_size = 1;   // sequences per forward/backward on one rank
  int64_t seq_len = 1024;
  int64_t seed = 1234;
  int64_t log_interval = 1;
  int64_t eval_interval = 0;  // steps between validation passes; 0 = never
  int64_t eval_batches = 4;   // micro-batches per validation pass
  int64_t threads = 0;        // intra-op threads; 0 = LibTorch's default
  // Parameters kept fixed: glob patterns (fnmatch) over parameter names, e.g. "embed.weight",
  // "layers.0.*". Frozen parameters get no gradient and no optimizer state.
  std::vector<std::string> freeze;
};

struct OptimConfig {
  double lr = 3e-4;
  double min_lr = 0.0;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  int64_t warmup_steps = 0;
  std::string decay = "cosine";  // cosine | linear | constant
  int64_t decay_steps = 0;       // steps from the start to reach min_lr; 0 = train.steps
  double clip_grad = 1.0;        // global grad-norm clip; 0 = off
  bool decay_norms_and_biases = false;
};

struct DataConfig {
  std::string prefix;              // indexed dataset path without .bin/.idx
  std::vector<std::string> blend;  // weight, prefix, weight, prefix, ... (instead of prefix)
  std::string split = "98,2";      // train,validation share of documents
  std::string tokenizer = "byte";  // byte | gpt2:DIR | hf:DIR | sp:FILE (see make_tokenizer); for generate
  std::string cache_dir;           // dataset index caches; empty = PREFIX.weft_cache/ beside each
  // stream: documents concatenated and cut into windows (pre-training); packed: whole documents
  // (fine-tuning examples) packed into rows without attending to each other; padded: one per row.
  std::string packing = "stream";
};

struct RunConfig {
  std::string dir = "runs/default";
  bool tensorboard = true;
  double peak_tflops = 0.0;  // for MFU; 0 = measure this machine's matmul peak at start
  // Memory (GiB) one rank may use for model and optimizer state; 0 = detect (host: MemAvailable
  // or the cgroup limit, GPU: free device memory). A job that cannot fit is refused at start.
  double memory_limit_gb = 0.0;
};

struct CheckpointConfig {
  std::string dir;       // empty = <run.dir>/checkpoints
  int64_t interval = 0;  // steps between checkpoints; 0 = only at the end
  int64_t keep = 2;      // complete checkpoints kept; 0 = all
  std::string init_from;  // fine-tuning: start from this checkpoint's weights (step 0, fresh
                          // optimizer) when checkpoint.dir holds no checkpoint yet
  bool async = true;      // snapshot, then write in the background (training waits for the copy only)
  bool fallback = false;  // resume from the newest readable checkpoint when the newest is damaged
  std::string on_error = "continue";  // a failed save: continue | stop training
};

struct ParallelConfig {
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t vpp = 1;
  int64_t zero = 0;
  bool sequence_parallel = false;
  int64_t timeout_sec = 300;  // rendezvous and collective timeout; a hung peer fails after this
  double grad_bucket_mb = 25.0;  // data-parallel gradient bucket size (reduced as each fills)
  // Reduce gradient buckets while backward runs (false: all after backward; for comparison).
  bool overlap_grad_reduce = true;
  // Pipeline schedule: 1f1b | interleaved_1f1b | gpipe; empty = interleaved_1f1b when vpp > 1,
  // else 1f1b.
  std::string schedule;
  // Layers of each virtual stage in order (pp × vpp numbers summing to model.num_layers);
  // empty = balanced (the first num_layers % stages stages get one more).
  std::vector<int64_t> pipeline_layers;
};

// Noticing failures inside the worker, and injecting them for tests (runtime/elastic/).
struct FaultConfig {
  double hang_timeout_s = 600;       // no progress for this long: log the rank and operation, exit; 0 = off
  double heartbeat_interval_s = 1;   // store heartbeat period of each rank (multi-rank); 0 = off
  double heartbeat_timeout_s = 10;   // a peer silent this long is dead or cut off: exit
  int64_t max_bad_steps = 3;         // consecutive non-finite steps before rolling back; 0 = only skip
  int64_t straggler_interval = 20;   // steps between straggler checks (multi-rank); 0 = off
  double straggler_factor = 1.5;     // a rank whose compute time exceeds this x the median
  // Injected faults: inert unless set; each fires once per job (first attempt, once per run.dir).
  int64_t kill_rank = -1, kill_step = 0;  // SIGKILL rank kill_rank during step kill_step
  int64_t hang_rank = -1, hang_step = 0;  // rank hang_rank stops making progress in step hang_step
  int64_t slow_rank = -1;                 // rank slow_rank sleeps slow_ms in every step's compute
  double slow_ms = 0;
  int64_t nan_step = 0, nan_count = 1;    // steps nan_step .. nan_step+nan_count-1 get a NaN loss
  // SIGKILL rank max(kill_rank, 0) while it writes a checkpoint: "true" (the first save), a step
  // (that step's save), or "" / "false" (off).
  std::string kill_during_checkpoint;

  // kill_during_checkpoint as a step: 0 = off, -1 = the first save. Throws weft::Error if malformed.
  int64_t checkpoint_kill_step() const;
};

// Low-rank adapters (LoRA, Hu et al. 2021, as Hugging Face peft implements it): each target
// projection y = x W^T gets + (alpha / rank) * B A dropout(x), A (rank, in), B (out, rank); the
// base model is frozen (no gradient, no optimizer state, not saved in checkpoints).
struct LoraConfig {
  int64_t rank = 0;  // peft's r; 0 = off
  // peft's lora_alpha; 0 = the rank (scaling 1, what peft's defaults r = 8, lora_alpha = 8
  // give), so changing --lora-rank does not change the adapter's scale or the LR that suits it.
  double alpha = 0.0;
  double dropout = 0.0;  // peft's lora_dropout, on the adapter's input only
  // Projections wrapped, by peft's names: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj.
  // Default: peft's default for Llama.
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};

  double scaling() const { return rank > 0 ? (alpha > 0 ? alpha : double(rank)) / double(rank) : 0.0; }
  double effective_alpha() const { return alpha > 0 ? alpha : double(rank); }
  // Checks rank, alpha, dropout and target_modules against the model `family`. Throws weft::Error
  // "config: lora.<key> ...".
  void validate(const std::string& family) const;
};

struct Config {
  ModelConfig model;
  LoraConfig lora;
  TrainConfig train;
  OptimConfig optim;
  DataConfig data;
  RunConfig run;
  CheckpointConfig checkpoint;
  ParallelConfig parallel;
  FaultConfig fault;
  std::string precision = "fp32";  // fp32 | bf16
  std::string device = "cpu";      // cpu | cuda

  // Checks values that are individually well-typed but jointly impossible. Throws weft::Error.
  void validate() const;
  std::string checkpoint_dir() const;
};

// Loads a YAML file into a default Config. `path` is used in every message. A file with no
// mapping (empty, only comments, or `null`) is an error: it would silently train the defaults.
Config load_config(const std::string& path);
// Parses YAML text into `cfg`, overriding the keys present. `source` names it in messages.
void merge_config_yaml(Config& cfg, const std::string& yaml_text, const std::string& source);
// Applies one `key=value` override (the value is YAML, so lists work: data.blend=[1,a]).
void apply_override(Config& cfg, const std::string& assignment);
// The resolved config, every key, as YAML.
std::string to_yaml(const Config& cfg);
// Every valid dotted key, in declaration order.
std::vector<std::string> config_keys();

}  // namespace weft

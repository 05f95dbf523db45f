// weft::CheckpointModel: a checkpoint's model for `weft eval` and `weft generate`.
#include "weft/inference.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "core/safetensors.h"
#include "models/transformer.h"
#include "parallel/device.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/gpt_dataset.h"
#include "runtime/data/tokenizer.h"
#include "runtime/generate.h"
#include "runtime/job.h"
#include "weft/error.h"

namespace weft {

struct CheckpointModel::State {
  Config cfg;
  std::string dir;
  Transformer model{nullptr};
  at::Device device{at::kCPU};
  std::unique_ptr<Tokenizer> tokenizer;  // generate()'s; loaded on first use
};

namespace {

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

CheckpointModel::CheckpointModel(std::unique_ptr<State> s) : s_(std::move(s)) {}
CheckpointModel::~CheckpointModel() = default;

std::unique_ptr<CheckpointModel> CheckpointModel::load(const std::string& dir,
                                                       const std::vector<std::string>& overrides) {
  auto s = std::make_unique<State>();
  s->dir = resolve_checkpoint_dir(dir);
  s->cfg = checkpoint_config(s->dir);
  for (const auto& o : overrides) apply_override(s->cfg, o);
  s->cfg.validate();
  s->device = select_device(s->cfg.device);
  if (s->cfg.train.threads > 0) at::set_num_threads(int(s->cfg.train.threads));
  s->model = load_checkpoint_model(s->cfg, s->dir);  // a LoRA checkpoint: its base and adapters
  s->model->to(s->device);
  s->model->eval();
  return std::unique_ptr<CheckpointModel>(new CheckpointModel(std::move(s)));
}

const Config& CheckpointModel::config() const { return s_->cfg; }
const std::string& CheckpointModel::dir() const { return s_->dir; }

EvalResult CheckpointModel::evaluate(const std::string& data_prefix, const EvalOptions& opts) {
  WEFT_CHECK(!data_prefix.empty(), "evaluate: no dataset given (an indexed dataset prefix: PREFIX.bin/.idx)");
  WEFT_CHECK(opts.max_batches >= 0, "evaluate: max_batches must be >= 0 (0 = every window), got ", opts.max_batches);
  Config cfg = s_->cfg;
  cfg.data.prefix = data_prefix;
  cfg.data.blend.clear();
  auto data = open_dataset(cfg, DataSplit::kAll);
  EvalResult r;
  r.loss = weft::evaluate(*s_->model, *data, cfg.train.micro_batch_size, cfg.train.seq_len, opts.max_batches,
                          cfg.precision, s_->device);
  if (!opts.logits_out.empty()) write_first_logits(*s_->model, *data, cfg, s_->device, opts.logits_out);
  return r;
}

void CheckpointModel::use_tokenizer(const std::string& spec_in) {
  std::string spec = spec_in.empty() ? s_->cfg.data.tokenizer : spec_in;
  spec = resolve_checkpoint_tokenizer(spec, s_->dir);  // "gpt2:." / "hf:.": files stored in the checkpoint
  auto tok = make_tokenizer(spec);
  WEFT_CHECK(tok->vocab_size() <= s_->cfg.model.vocab_size, "tokenizer '", spec, "' has ", tok->vocab_size(),
             " tokens but the model only ", s_->cfg.model.vocab_size,
             "; pass the tokenizer the model was trained with (--tokenizer)");
  s_->tokenizer = std::move(tok);
}

std::string CheckpointModel::generate(const std::string& prompt, const GenerationOptions& opts,
                                      const std::function<void(const std::string&)>& on_text) {
  WEFT_CHECK(!prompt.empty(), "generate: the prompt must not be empty");
  WEFT_CHECK(std::isfinite(opts.temperature) && opts.temperature >= 0,
             "generate: temperature must be a finite number >= 0 (0 = greedy), got ", opts.temperature);
  WEFT_CHECK(opts.top_k >= 0, "generate: top_k must be >= 0 (0 = the whole vocabulary), got ", opts.top_k);
  WEFT_CHECK(opts.max_new_tokens > 0, "generate: max_new_tokens must be > 0, got ", opts.max_new_tokens);
  if (!s_->tokenizer) use_tokenizer("");
  const Tokenizer& tok = *s_->tokenizer;
  GenerateOptions g;
  g.max_new_tokens = opts.max_new_tokens;
  g.temperature = opts.temperature;
  g.top_k = opts.top_k;
  g.seed = opts.seed;
  g.stop_token = tok.eos_id();
  g.vocab_limit = tok.vocab_size();  // the model's vocabulary may be padded past it
  std::string text;
  weft::generate(*s_->model, tok.encode(prompt), g, [&](int64_t t) {
    if (t == g.stop_token) return;
    const std::string piece = tok.decode({t});
    text += piece;
    if (on_text) on_text(piece);
  });
  return text;
}

}  // namespace weft

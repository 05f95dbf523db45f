// `weft finetune`: a Hugging Face model and a JSONL file in, a fine-tuned Hugging Face model (or
// peft adapter) out. It composes the steps a user would otherwise run by hand (convert, prepare
// the data, write a config, train, export), each idempotent so that re-running the same command
// resumes: the base checkpoint and the prepared data are reused while their sources are unchanged.
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/fileio.h"
#include "runtime/checkpoint/checkpoint.h"
#include "parallel/comm.h"
#include "runtime/data/chat_template.h"
#include "runtime/data/gpt_dataset.h"
#include "runtime/data/sft.h"
#include "runtime/data/tokenizer.h"
#include "runtime/job.h"
#include "tools/cli/commands.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace weft {
namespace {

bool overridden(const CliArgs& a, const std::string& key) {
  for (const auto& o : a.overrides)
    if (o.rfind(key + "=", 0) == 0) return true;
  return false;
}

// Holds an exclusive lock on PATH while alive: ranks of one job (--nproc or torchrun) prepare the
// base checkpoint and the data one after another, the later ones finding the work done.
class FileLock {
 public:
  explicit FileLock(const std::string& path) : fd_(::open(path.c_str(), O_CREAT | O_RDWR, 0644)) {
    WEFT_CHECK(fd_ >= 0, "cannot open lock file ", path);
    WEFT_CHECK(::flock(fd_, LOCK_EX) == 0, "cannot lock ", path);
  }
  ~FileLock() { ::close(fd_); }

 private:
  int fd_;
};

// What the prepared data depends on; a change rebuilds it.
json data_source(const CliArgs& a, const Config& cfg) {
  struct stat st {};
  WEFT_CHECK(::stat(a.data.c_str(), &st) == 0, "--data ", a.data, ": no such file (JSON Lines records)");
  return {{"input", fs::absolute(a.data).string()}, {"size", int64_t(st.st_size)},
          {"mtime_ns", int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec},
          {"format", a.format.empty() ? "chat" : a.format}, {"seq_len", cfg.train.seq_len},
          {"tokenizer", cfg.data.tokenizer}, {"skip_bad", a.skip_bad}, {"version", 1}};
}

// A token string of tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
std::string token_string(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"];
  return "";
}

void prepare_data(const CliArgs& a, const Config& cfg, const std::string& hf_dir, const std::string& prefix) {
  const json source = data_source(a, cfg);
  const std::string stamp = prefix + ".source.json";
  if (fs::exists(prefix + ".idx") && fs::exists(prefix + ".loss_mask.idx") && fs::exists(stamp) &&
      json::parse(read_file(stamp)) == source)
    return;
  fs::remove(stamp);
  write_sft_data("finetune", a.data, prefix, source["format"], cfg.data.tokenizer, hf_dir, cfg.train.seq_len,
                 a.skip_bad);
  write_file_atomic(stamp, source.dump(2));
}

}  // namespace

int64_t write_sft_data(const std::string& command, const std::string& input, const std::string& prefix,
                       const std::string& format, const std::string& tokenizer_spec, const std::string& model_dir,
                       int64_t max_tokens, bool skip_bad) {
  SftOptions o;
  o.input = input;
  o.output_prefix = prefix;
  o.format = parse_sft_format(format);
  o.max_tokens = max_tokens;
  if (command != "finetune") o.max_tokens_key = "--max-tokens";
  o.skip_bad = skip_bad;
  std::unique_ptr<ChatTemplate> chat;
  if (o.format == SftFormat::kChat) {
    WEFT_CHECK(!model_dir.empty(), "--format chat needs the model's chat template: pass --model hf:DIR or a ",
               "--tokenizer hf:DIR whose tokenizer_config.json has one");
    const std::string config_path = (fs::path(model_dir) / "tokenizer_config.json").string();
    json tc = json::object();
    if (fs::exists(config_path)) {
      try {
        tc = json::parse(read_file(config_path));
      } catch (const json::exception& e) {
        fail(str(config_path, " is not valid JSON: ", e.what()));
      }
    }
    o.bos_token = token_string(tc, "bos_token");
    o.eos_token = token_string(tc, "eos_token");
    chat = load_chat_template(model_dir);
    o.chat_template = chat.get();
  }
  auto tokenizer = make_tokenizer(tokenizer_spec);
  const SftStats st = build_sft_dataset(o, *tokenizer);
  if (!st.bad.empty() && !skip_bad) {
    for (const auto& line : st.bad) std::fprintf(stderr, "weft %s: error: %s\n", command.c_str(), line.c_str());
    fail(str(st.bad.size(), " of ", st.records, " records in ", input,
             " are bad (listed above); fix them or pass --skip-bad to skip them"));
  }
  for (const auto& line : st.bad) std::fprintf(stderr, "weft %s: skipped %s\n", command.c_str(), line.c_str());
  std::printf("%s: %lld examples, %lld tokens (%lld targets) from %s%s\n", command.c_str(), (long long)st.examples,
              (long long)st.tokens, (long long)st.targets, input.c_str(),
              st.bad.empty() ? "" : str("; skipped ", st.bad.size(), " bad records").c_str());
  return st.examples;
}

int cmd_finetune(const CliArgs& a) {
  WEFT_CHECK(a.model.rfind("hf:", 0) == 0 && a.model.size() > 3,
             "--model hf:DIR is required (a Hugging Face model directory: config.json, safetensors, tokenizer)");
  WEFT_CHECK(!a.data.empty(), "--data FILE.jsonl is required");
  WEFT_CHECK(a.lora_rank >= 0, "--lora-rank must be >= 0 (0 = full fine-tuning), got ", a.lora_rank);
  const std::string hf_dir = a.model.substr(3);
  WEFT_CHECK(fs::is_directory(hf_dir), "--model ", a.model, ": no such directory");

  // Defaults a fine-tuning run wants, under the user's --config and --set.
  Config cfg = a.config.empty() ? Config{} : load_config(a.config);
  cfg.run.dir = "runs/finetune";
  cfg.data.packing = "packed";
  cfg.data.split = "100,0";
  cfg.train.eval_interval = 0;
  cfg.optim.lr = a.lora_rank > 0 ? 2e-4 : 2e-5;
  cfg.optim.weight_decay = 0.0;
  cfg.optim.warmup_steps = 0;
  if (a.lora_rank > 0) apply_override(cfg, str("lora.rank=", a.lora_rank));
  for (const auto& o : a.overrides) apply_override(cfg, o);
  fs::create_directories(cfg.run.dir);
  const fs::path run(cfg.run.dir);
  const std::string base = (run / "base").string(), prefix = (run / "data" / "sft").string();
  {
    FileLock lock((run / ".finetune.lock").string());
    if (!fs::exists(fs::path(base) / "latest")) {
      CliArgs c;
      c.from = a.model;
      c.to = "ckpt:" + base;
      cmd_convert(c);
    }
    // The model as converted (vocabulary padding, sizes), with the user's settings on top.
    const std::string base_step = fs::absolute(resolve_checkpoint_dir(base)).string();
    Config converted = checkpoint_config(base_step);
    cfg.model = converted.model;
    // The model's own tokenizer, as the conversion found it (tokenizer.json, tokenizer.model or
    // vocab.json + merges.txt), read from the copy the base checkpoint carries.
    cfg.data.tokenizer = resolve_checkpoint_tokenizer(converted.data.tokenizer, base_step);
    for (const auto& o : a.overrides) apply_override(cfg, o);
    WEFT_CHECK(cfg.data.tokenizer != "byte", "--model ", a.model, " has no tokenizer (tokenizer.json, tokenizer.model ",
               "or vocab.json + merges.txt); add the model's tokenizer files or --set data.tokenizer=hf:DIR");
    if (!overridden(a, "train.seq_len")) cfg.train.seq_len = std::min<int64_t>(cfg.train.seq_len, cfg.model.max_seq_len);
    cfg.checkpoint.init_from = fs::absolute(base).string();
    cfg.data.prefix = fs::absolute(prefix).string();
    prepare_data(a, cfg, hf_dir, prefix);
  }
  if (!overridden(a, "train.steps")) {  // one epoch
    const int64_t rows = open_dataset(cfg, DataSplit::kTrain)->num_samples();
    cfg.train.steps = std::max<int64_t>(1, (rows + cfg.train.global_batch_size - 1) / cfg.train.global_batch_size);
  }
  cfg.validate();
  const std::string config_path = (run / "finetune.yaml").string();
  write_file_atomic(config_path, to_yaml(cfg));

  CliArgs t;
  t.config = config_path;
  t.nproc = a.nproc;
  t.argv = {"train", "--config", config_path};
  const int rc = cmd_train(t);
  if (rc != 0) return rc;
  if (worker_env_from_environment().rank != 0) return 0;  // one rank exports

  CliArgs e;
  e.from = "ckpt:" + cfg.checkpoint_dir();
  e.to = "hf:" + (a.output.empty() ? (run / "hf").string() : a.output);
  e.lora_export = a.lora_export.empty() ? "merged" : a.lora_export;
  return cmd_convert(e);
}

}  // namespace weft

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

#include "weft/config.h"
#include "weft/error.h"
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

// Holds an exclusive lock on PATH while alive. Waiting: ranks of one job (--nproc or torchrun)
// prepare the base checkpoint and the data one after another, the later ones finding the work
// done. Not waiting (`busy` set): a second command on the same run.dir fails with `busy`.
class FileLock {
 public:
  explicit FileLock(const std::string& path, const std::string& busy = "")
      : fd_(::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644)) {
    WEFT_CHECK(fd_ >= 0, "cannot open lock file ", path);
    const bool locked = ::flock(fd_, busy.empty() ? LOCK_EX : LOCK_EX | LOCK_NB) == 0;
    if (!locked) ::close(fd_);
    WEFT_CHECK(locked, busy.empty() ? str("cannot lock ", path) : busy);
  }
  ~FileLock() { ::close(fd_); }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

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

// The examples in run/data/sft, rebuilt when the JSONL, the options or the model's files (its
// tokenizer, its chat template) change.
void prepare_data(const CliArgs& a, const Config& cfg, const std::string& hf_dir, const std::string& prefix,
                  const json& model) {
  json source = data_source(a, cfg);
  source["model"] = model;
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

namespace {

// Size and mtime of every file of the model directory: what the base checkpoint and the prepared
// data were made from. A change (new weights or tokenizer at the same path) makes them stale.
json model_source(const std::string& hf_dir) {
  json files = json::object();
  for (const auto& e : fs::directory_iterator(hf_dir)) {
    struct stat st {};
    if (!e.is_regular_file() || ::stat(e.path().c_str(), &st) != 0) continue;
    files[e.path().filename().string()] = {int64_t(st.st_size),
                                           int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
  }
  return {{"model", fs::absolute(hf_dir).lexically_normal().string()}, {"files", files}};
}

// run/base: the model converted once. A run that has checkpoints keeps its model; a different
// --model (or changed files) in a run that has none is converted again.
void convert_base(const CliArgs& a, const Config& cfg, const fs::path& run, const json& source) {
  const std::string base = (run / "base").string(), stamp = (run / "base.source.json").string();
  if (fs::exists(fs::path(base) / "latest") && fs::exists(stamp) && json::parse(read_file(stamp)) == source) return;
  const bool trained = fs::exists(fs::path(cfg.checkpoint_dir()) / "latest");
  if (fs::exists(stamp) || fs::exists(base)) {
    const json old = fs::exists(stamp) ? json::parse(read_file(stamp)) : json::object();
    WEFT_CHECK(!trained, "run.dir ", cfg.run.dir, " holds a fine-tuning run of ", old.value("model", std::string("?")),
               old.value("model", std::string()) == source["model"].get<std::string>() ? " whose files have changed since"
                                                                                       : "",
               "; to fine-tune ", a.model, " use a new run.dir (or remove ", cfg.checkpoint_dir(), ")");
    fs::remove(stamp);
    fs::remove_all(base);
  }
  CliArgs c;
  c.from = a.model;
  c.to = "ckpt:" + base;
  cmd_convert(c);
  write_file_atomic(stamp, source.dump(2));
}

// Where the export goes, refused before any work if it would overwrite something that is not an
// earlier export (the model itself, a user's directory).
constexpr const char* kExportMarker = ".weft_export";
void check_output(const std::string& out, const std::string& hf_dir) {
  const fs::path p = fs::absolute(out).lexically_normal();
  WEFT_CHECK(p != fs::absolute(hf_dir).lexically_normal(), "--output ", out, " is the --model directory; export elsewhere");
  if (fs::exists(p)) {
    WEFT_CHECK(fs::is_directory(p) && (fs::is_empty(p) || fs::exists(p / kExportMarker)), "--output ", out,
               " exists and is not an earlier export of weft finetune; choose another directory or remove it");
  }
  std::error_code ec;
  fs::create_directories(p.parent_path(), ec);
  WEFT_CHECK(!ec && ::access(p.parent_path().c_str(), W_OK) == 0, "--output ", out, ": cannot write in ",
             p.parent_path().string(), " (", ec ? ec.message() : "permission denied", "); choose a writable place");
}

// Writes the export into a fresh directory beside `out` and puts it in place only when complete,
// so `out` never holds a half-written model or files of an earlier export.
int export_model(const Config& cfg, const std::string& out, const std::string& mode) {
  const fs::path p = fs::absolute(out).lexically_normal(), tmp = p.string() + ".weft-tmp", old = p.string() + ".weft-old";
  fs::remove_all(tmp);
  fs::remove_all(old);
  CliArgs e;
  e.from = "ckpt:" + cfg.checkpoint_dir();
  e.to = "hf:" + tmp.string();
  e.lora_export = mode;
  const int rc = cmd_convert(e);
  if (rc != 0) return rc;
  write_file_atomic((tmp / kExportMarker).string(), "weft finetune export\n");
  if (fs::exists(p)) fs::rename(p, old);
  fs::rename(tmp, p);
  fs::remove_all(old);
  std::printf("finetune: wrote %s (%s)\n", p.c_str(), mode == "adapter" ? "peft LoRA adapter" : "Hugging Face model");
  return 0;
}

// The step of the newest checkpoint in `dir` (its name is step_NNNNNNNN), or -1.
int64_t latest_step(const std::string& dir) {
  if (!fs::exists(fs::path(dir) / "latest")) return -1;
  const std::string name = fs::path(resolve_checkpoint_dir(dir)).filename().string();
  return name.rfind("step_", 0) == 0 ? std::stoll(name.substr(5)) : -1;
}

}  // namespace

int cmd_finetune(const CliArgs& a) {
  WEFT_CHECK(a.model.rfind("hf:", 0) == 0 && a.model.size() > 3,
             "--model hf:DIR is required (a Hugging Face model directory: config.json, safetensors, tokenizer)");
  WEFT_CHECK(!a.data.empty(), "--data FILE.jsonl is required");
  WEFT_CHECK(fs::is_regular_file(a.data), "--data ", a.data, ": not a file (expected JSON Lines records)");
  WEFT_CHECK(a.lora_rank >= 0, "--lora-rank must be >= 0 (0 = full fine-tuning), got ", a.lora_rank);
  parse_sft_format(a.format.empty() ? "chat" : a.format);
  const std::string mode = a.lora_export.empty() ? "merged" : a.lora_export;
  WEFT_CHECK(mode == "merged" || mode == "adapter", "--lora-export must be merged or adapter, got '", a.lora_export, "'");
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
  WEFT_CHECK(mode == "merged" || cfg.lora.rank > 0, "--lora-export adapter needs LoRA: pass --lora-rank R");
  const fs::path run(cfg.run.dir);
  const std::string output = a.output.empty() ? (run / "hf").string() : a.output;
  const bool exports = worker_env_from_environment().rank == 0;  // under torchrun, rank 0 exports
  if (exports) check_output(output, hf_dir);
  fs::create_directories(run);
  // Held for the whole command (under torchrun every rank runs it, so only the data lock applies).
  std::unique_ptr<FileLock> run_lock;
  if (worker_env_from_environment().world_size <= 1)
    run_lock = std::make_unique<FileLock>((run / ".finetune.run.lock").string(),
                                          str("run.dir ", run.string(), " is in use by another weft finetune; wait ",
                                              "for it or use another run.dir"));
  const std::string base = (run / "base").string(), prefix = (run / "data" / "sft").string();
  {
    FileLock lock((run / ".finetune.lock").string());
    const json source = model_source(hf_dir);
    convert_base(a, cfg, run, source);
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
    WEFT_CHECK(mode == "merged" || cfg.model.family == "llama", "--lora-export adapter needs a Llama-family model (",
               a.model, " is ", cfg.model.family, "); export merged instead");
    if (!overridden(a, "train.seq_len")) cfg.train.seq_len = std::min<int64_t>(cfg.train.seq_len, cfg.model.max_seq_len);
    cfg.checkpoint.init_from = fs::absolute(base).string();
    cfg.data.prefix = fs::absolute(prefix).string();
    cfg.validate();
    prepare_data(a, cfg, hf_dir, prefix, source);
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
  if (rc != 0 || !exports) return rc;
  const int64_t step = latest_step(cfg.checkpoint_dir());
  if (step < cfg.train.steps) {
    std::printf("finetune: stopped at step %lld of %lld; no export written. Re-run the same command to resume.\n",
                (long long)step, (long long)cfg.train.steps);
    return 130;
  }
  return export_model(cfg, output, mode);
}

}  // namespace weft

// weft::FinetuneJob (weft/finetune.h): the steps a user would otherwise run by hand (convert the
// model, prepare the data, write a config, train, export), each idempotent so that running the
// same job again resumes: the base checkpoint and the prepared data are reused while their
// sources are unchanged.
#include "weft/finetune.h"

#include <glog/logging.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>

#include "core/fileio.h"
#include "parallel/comm.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/chat_template.h"
#include "runtime/data/gpt_dataset.h"
#include "runtime/data/sft.h"
#include "runtime/data/tokenizer.h"
#include "runtime/job.h"
#include "weft/convert.h"
#include "weft/error.h"
#include "weft/preprocess.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace weft {
namespace {

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

// A token string of tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
std::string token_string(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"];
  return "";
}

}  // namespace

int64_t write_sft_data(const std::string& command, const std::string& input, const std::string& prefix,
                       const std::string& format, const std::string& tokenizer_spec, const std::string& model_dir,
                       int64_t max_tokens, bool skip_bad, bool console) {
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
    for (const auto& line : st.bad) {
      if (console) std::fprintf(stderr, "weft %s: error: %s\n", command.c_str(), line.c_str());
      else LOG(ERROR) << line;
    }
    fail(str(st.bad.size(), " of ", st.records, " records in ", input, " are bad (", console ? "listed above" : str("first: ", st.bad[0]),
             "); fix them or pass --skip-bad to skip them"));
  }
  for (const auto& line : st.bad) {
    if (console) std::fprintf(stderr, "weft %s: skipped %s\n", command.c_str(), line.c_str());
    else LOG(WARNING) << "skipped " << line;
  }
  if (!console) {
    LOG(INFO) << command << ": " << st.examples << " examples, " << st.tokens << " tokens (" << st.targets
              << " targets) from " << input << (st.bad.empty() ? "" : str("; skipped ", st.bad.size(), " bad records"));
    return st.examples;
  }
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

bool overridden(const FinetuneOptions& o, const std::string& key) {
  for (const auto& kv : o.overrides)
    if (kv.rfind(key + "=", 0) == 0) return true;
  return false;
}

// What the prepared data depends on; a change rebuilds it.
json data_source(const FinetuneOptions& o, const Config& cfg) {
  struct stat st {};
  WEFT_CHECK(::stat(o.data.c_str(), &st) == 0, "--data ", o.data, ": no such file (JSON Lines records)");
  return {{"input", fs::absolute(o.data).string()}, {"size", int64_t(st.st_size)},
          {"mtime_ns", int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec},
          {"format", o.format.empty() ? "chat" : o.format}, {"seq_len", cfg.train.seq_len},
          {"tokenizer", cfg.data.tokenizer}, {"skip_bad", o.skip_bad}, {"version", 1}};
}

// The examples in run/data/sft, rebuilt when the JSONL, the options or the model's files (its
// tokenizer, its chat template) change.
void prepare_data(const FinetuneOptions& o, const Config& cfg, const std::string& hf_dir, const std::string& prefix,
                  const json& model) {
  json source = data_source(o, cfg);
  source["model"] = model;
  const std::string stamp = prefix + ".source.json";
  if (fs::exists(prefix + ".idx") && fs::exists(prefix + ".loss_mask.idx") && fs::exists(stamp) &&
      json::parse(read_file(stamp)) == source)
    return;
  fs::remove(stamp);
  write_sft_data("finetune", o.data, prefix, source["format"], cfg.data.tokenizer, hf_dir, cfg.train.seq_len,
                 o.skip_bad, o.console);
  write_file_atomic(stamp, source.dump(2));
}

// run/base: the model converted once. A run that has checkpoints keeps its model; a different
// --model (or changed files) in a run that has none is converted again.
void convert_base(const FinetuneOptions& o, const Config& cfg, const fs::path& run, const json& source) {
  const std::string base = (run / "base").string(), stamp = (run / "base.source.json").string();
  if (fs::exists(fs::path(base) / "latest") && fs::exists(stamp) && json::parse(read_file(stamp)) == source) return;
  const bool trained = fs::exists(fs::path(cfg.checkpoint_dir()) / "latest");
  if (fs::exists(stamp) || fs::exists(base)) {
    const json old = fs::exists(stamp) ? json::parse(read_file(stamp)) : json::object();
    WEFT_CHECK(!trained, "run.dir ", cfg.run.dir, " holds a fine-tuning run of ", old.value("model", std::string("?")),
               old.value("model", std::string()) == source["model"].get<std::string>() ? " whose files have changed since"
                                                                                       : "",
               "; to fine-tune ", o.model, " use a new run.dir (or remove ", cfg.checkpoint_dir(), ")");
    fs::remove(stamp);
    fs::remove_all(base);
  }
  const ConvertResult r = convert(o.model, "ckpt:" + base);
  if (o.console) std::printf("%s\n", r.summary.c_str());
  else LOG(INFO) << r.summary;
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

// The step of the newest checkpoint in `dir` (its name is step_NNNNNNNN), or -1.
int64_t latest_step(const std::string& dir) {
  if (!fs::exists(fs::path(dir) / "latest")) return -1;
  const std::string name = fs::path(resolve_checkpoint_dir(dir)).filename().string();
  return name.rfind("step_", 0) == 0 ? std::stoll(name.substr(5)) : -1;
}

}  // namespace

struct FinetuneJob::State {
  FinetuneOptions o;
  std::string hf_dir, output;
  bool exports = true;  // rank 0 of a torchrun job (or the only process) writes the export
  Config cfg;
  bool prepared = false;
  std::unique_ptr<FileLock> run_lock;
  mutable std::mutex mu;
  std::unique_ptr<Trainer> trainer;  // guarded by mu (the pointer)
  bool stop = false;                 // guarded by mu
  std::string error;                 // guarded by mu: why prepare() or run() failed
  std::vector<std::function<void(const StepMetrics&)>> step_cbs;             // guarded by mu
  std::vector<std::function<void(const CheckpointEvent&)>> checkpoint_cbs;  // guarded by mu
};

FinetuneJob::FinetuneJob(FinetuneOptions opts) : s_(new State) {
  auto& o = s_->o;
  o = std::move(opts);
  if (o.format.empty()) o.format = "chat";
  if (o.lora_export.empty()) o.lora_export = "merged";
  WEFT_CHECK(o.model.rfind("hf:", 0) == 0 && o.model.size() > 3,
             "--model hf:DIR is required (a Hugging Face model directory: config.json, safetensors, tokenizer)");
  WEFT_CHECK(!o.data.empty(), "--data FILE.jsonl is required");
  WEFT_CHECK(fs::is_regular_file(o.data), "--data ", o.data, ": not a file (expected JSON Lines records)");
  WEFT_CHECK(o.lora_rank >= 0, "--lora-rank must be >= 0 (0 = full fine-tuning), got ", o.lora_rank);
  parse_sft_format(o.format);
  WEFT_CHECK(o.lora_export == "merged" || o.lora_export == "adapter", "--lora-export must be merged or adapter, got '",
             o.lora_export, "'");
  s_->hf_dir = o.model.substr(3);
  WEFT_CHECK(fs::is_directory(s_->hf_dir), "--model ", o.model, ": no such directory");
}

FinetuneJob::~FinetuneJob() = default;

const FinetuneOptions& FinetuneJob::options() const { return s_->o; }

const Config& FinetuneJob::prepare() {
  auto& s = *s_;
  if (s.prepared) return s.cfg;
  const auto& o = s.o;
  try {
    // Defaults a fine-tuning run wants, under the user's config and overrides: the config's keys
    // are merged onto them (load_config only checks the file: readable, not empty).
    Config cfg;
    cfg.run.dir = "runs/finetune";
    cfg.data.packing = "packed";
    cfg.data.split = "100,0";
    cfg.train.eval_interval = 0;
    cfg.optim.lr = o.lora_rank > 0 ? 2e-4 : 2e-5;
    cfg.optim.weight_decay = 0.0;
    cfg.optim.warmup_steps = 0;
    if (!o.config.empty()) {
      load_config(o.config);
      merge_config_yaml(cfg, read_file(o.config), o.config);
    }
    if (o.lora_rank > 0) apply_override(cfg, str("lora.rank=", o.lora_rank));
    for (const auto& kv : o.overrides) apply_override(cfg, kv);
    WEFT_CHECK(o.lora_export == "merged" || cfg.lora.rank > 0, "--lora-export adapter needs LoRA: pass --lora-rank R");
    const fs::path run(cfg.run.dir);
    s.output = o.output.empty() ? (run / "hf").string() : o.output;
    const WorkerEnv env = worker_env_from_environment();
    s.exports = env.rank == 0;
    if (s.exports) check_output(s.output, s.hf_dir);
    fs::create_directories(run);
    // Held for the job's lifetime (under torchrun every rank runs it, so only the data lock applies).
    if (env.world_size <= 1)
      s.run_lock = std::make_unique<FileLock>((run / ".finetune.run.lock").string(),
                                              str("run.dir ", run.string(), " is in use by another weft finetune; wait ",
                                                  "for it or use another run.dir"));
    const std::string base = (run / "base").string(), prefix = (run / "data" / "sft").string();
    {
      FileLock lock((run / ".finetune.lock").string());
      const json source = model_source(s.hf_dir);
      convert_base(o, cfg, run, source);
      // The model as converted (vocabulary padding, sizes), with the user's settings on top.
      const std::string base_step = fs::absolute(resolve_checkpoint_dir(base)).string();
      Config converted = checkpoint_config(base_step);
      cfg.model = converted.model;
      // The model's own tokenizer, as the conversion found it (tokenizer.json, tokenizer.model or
      // vocab.json + merges.txt), read from the copy the base checkpoint carries.
      cfg.data.tokenizer = resolve_checkpoint_tokenizer(converted.data.tokenizer, base_step);
      for (const auto& kv : o.overrides) apply_override(cfg, kv);
      WEFT_CHECK(cfg.data.tokenizer != "byte", "--model ", o.model, " has no tokenizer (tokenizer.json, tokenizer.model ",
                 "or vocab.json + merges.txt); add the model's tokenizer files or --set data.tokenizer=hf:DIR");
      WEFT_CHECK(o.lora_export == "merged" || cfg.model.family == "llama", "--lora-export adapter needs a Llama-family ",
                 "model (", o.model, " is ", cfg.model.family, "); export merged instead");
      if (!overridden(o, "train.seq_len")) cfg.train.seq_len = std::min<int64_t>(cfg.train.seq_len, cfg.model.max_seq_len);
      cfg.checkpoint.init_from = fs::absolute(base).string();
      cfg.data.prefix = fs::absolute(prefix).string();
      cfg.validate();
      prepare_data(o, cfg, s.hf_dir, prefix, source);
    }
    if (!overridden(o, "train.steps")) {  // one epoch
      const int64_t rows = open_dataset(cfg, DataSplit::kTrain)->num_samples();
      cfg.train.steps = std::max<int64_t>(1, (rows + cfg.train.global_batch_size - 1) / cfg.train.global_batch_size);
    }
    cfg.validate();
    write_file_atomic((run / "finetune.yaml").string(), to_yaml(cfg));
    s.cfg = std::move(cfg);
    s.prepared = true;
    return s.cfg;
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(s.mu);
    s.error = e.what();
    throw;
  }
}

std::string FinetuneJob::run() {
  auto& s = *s_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.trainer.reset();  // a previous run's: it holds run.dir
    s.error.clear();
  }
  try {
    prepare();
    // Built outside mu: the Trainer loads the model and its checkpoint (minutes for a large one),
    // and status(), request_stop() and the on_* registrations must answer meanwhile.
    TrainerOptions topts;
    topts.console = s.o.console;
    auto built = std::make_unique<Trainer>(s.cfg, topts);
    Trainer* trainer = built.get();
    {
      std::lock_guard<std::mutex> lock(s.mu);
      for (auto& cb : s.step_cbs) trainer->on_step(cb);
      for (auto& cb : s.checkpoint_cbs) trainer->on_checkpoint(cb);
      if (s.stop) trainer->request_stop();
      s.trainer = std::move(built);
    }
    trainer->run();
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(s.mu);
    s.error = e.what();  // status() reports it (a Trainer that ran reports its own failure)
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.stop = false;  // the stop ended this run; running the job again resumes it
  }
  if (latest_step(s.cfg.checkpoint_dir()) < s.cfg.train.steps) return "";
  return s.exports ? export_model() : "";
}

std::string FinetuneJob::export_model() {
  auto& s = *s_;
  prepare();
  const int64_t step = latest_step(s.cfg.checkpoint_dir());
  WEFT_CHECK(step >= s.cfg.train.steps, "the fine-tuning run in ", s.cfg.run.dir, " stopped at step ", step, " of ",
             s.cfg.train.steps, "; no export written. Run the job again to resume it");
  // Written into a fresh directory beside the output and put in place only when complete, so the
  // output never holds a half-written model or files of an earlier export.
  const fs::path p = fs::absolute(s.output).lexically_normal(), tmp = p.string() + ".weft-tmp", old = p.string() + ".weft-old";
  fs::remove_all(tmp);
  fs::remove_all(old);
  ConvertOptions c;
  c.lora_export = s.o.lora_export;
  const ConvertResult r = convert("ckpt:" + s.cfg.checkpoint_dir(), "hf:" + tmp.string(), c);
  write_file_atomic((tmp / kExportMarker).string(), "weft finetune export\n");
  if (fs::exists(p)) fs::rename(p, old);
  fs::rename(tmp, p);
  fs::remove_all(old);
  const std::string what = s.o.lora_export == "adapter" ? "peft LoRA adapter" : "Hugging Face model";
  if (s.o.console) {
    std::printf("%s\n", r.summary.c_str());
    std::printf("finetune: wrote %s (%s)\n", p.c_str(), what.c_str());
  } else {
    LOG(INFO) << "finetune: wrote " << p.string() << " (" << what << ")";
  }
  return p.string();
}

bool FinetuneJob::exports() const {
  WEFT_CHECK(s_->prepared, "FinetuneJob::exports() before prepare()");
  return s_->exports;
}

int64_t FinetuneJob::checkpoint_step() const {
  WEFT_CHECK(s_->prepared, "FinetuneJob::checkpoint_step() before prepare()");
  return latest_step(s_->cfg.checkpoint_dir());
}

void FinetuneJob::request_stop() {
  std::lock_guard<std::mutex> lock(s_->mu);
  s_->stop = true;
  if (s_->trainer) s_->trainer->request_stop();
}

TrainerStatus FinetuneJob::status() const {
  std::lock_guard<std::mutex> lock(s_->mu);
  if (s_->trainer) return s_->trainer->status();
  TrainerStatus st;
  if (!s_->error.empty()) st.state = TrainerState::kFailed, st.failed = true, st.error = s_->error;
  return st;
}

void FinetuneJob::on_step(std::function<void(const StepMetrics&)> cb) {
  std::lock_guard<std::mutex> lock(s_->mu);
  if (s_->trainer) s_->trainer->on_step(cb);
  s_->step_cbs.push_back(std::move(cb));
}

void FinetuneJob::on_checkpoint(std::function<void(const CheckpointEvent&)> cb) {
  std::lock_guard<std::mutex> lock(s_->mu);
  if (s_->trainer) s_->trainer->on_checkpoint(cb);
  s_->checkpoint_cbs.push_back(std::move(cb));
}

}  // namespace weft

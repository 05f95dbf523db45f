// Saving and restoring a training job: parameter pieces by placement, optimizer state through the
// Optimizer interface, trainer state (step, data position, RNG) and the tokenizer files; the
// snapshot, the background writer and the commit agreed through the store.
#include "runtime/checkpointer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <glog/logging.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <filesystem>
#include <thread>

#include "weft/error.h"
#include "core/fileio.h"
#include "models/lora.h"
#include "models/transformer.h"
#include "parallel/comm.h"
#include "parallel/device.h"
#include "runtime/checkpoint/fault.h"
#include "runtime/data/tokenizer.h"
#include "runtime/job.h"
#include "runtime/optim/optimizer.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

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

// The files of a checkpoint's own tokenizer spec ("gpt2:." / "hf:.") among a checkpoint's extra files;
// throws naming `dir` when the ones that spec needs are missing.
std::map<std::string, std::string> own_tokenizer_files(const std::string& spec, const std::string& dir,
                                                       const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> out;
  const bool gpt2 = spec == "gpt2:.";
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "tokenizer.model"}) {
    const bool mine = gpt2 == (std::string(f) == "vocab.json" || std::string(f) == "merges.txt");
    if (mine && extra.count(f)) out[f] = extra.at(f);
  }
  if (gpt2) {
    for (const char* f : {"vocab.json", "merges.txt"})
      WEFT_CHECK(out.count(f), dir, " has no ", f, " but data.tokenizer is 'gpt2:.' (the checkpoint's own files)");
  } else {
    WEFT_CHECK(out.count("tokenizer.json") || out.count("tokenizer.model"), dir, " has no tokenizer.json or ",
               "tokenizer.model but data.tokenizer is 'hf:.' (the checkpoint's own files)");
  }
  return out;
}

std::string error_text(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown error";
  }
}

// The error of the lowest rank of `world` that has one ("" when none has), on every rank: a MIN
// all-reduce of the failing ranks, then that rank's text (up to 1 KiB) summed over the group.
std::string lowest_rank_error(const Group& world, int64_t rank, const std::string& error) {
  auto who = at::tensor({double(error.empty() ? INT_MAX : rank)}, at::kDouble);
  all_reduce(world, who, ReduceOp::kMin);
  const int64_t failed = int64_t(who.item<double>());
  if (failed == INT_MAX) return "";
  constexpr int64_t kMax = 1024;
  auto text = at::zeros({kMax}, at::kLong);
  int64_t* c = text.data_ptr<int64_t>();
  if (failed == rank)
    for (int64_t i = 0; i < std::min<int64_t>(kMax, int64_t(error.size())); ++i) c[i] = uint8_t(error[i]);
  all_reduce(world, text);
  c = text.data_ptr<int64_t>();
  std::string out;
  for (int64_t i = 0; i < kMax && c[i] != 0; ++i) out += char(c[i]);
  return failed == rank ? error : str("rank ", failed, ": ", out);
}

// Where a resume may come from, newest first: the checkpoint `latest` names, then, with
// `fallback`, the older complete ones (a damaged `latest` is then recorded in `skipped`).
std::vector<std::string> resume_candidates(const std::string& root, bool fallback,
                                           std::vector<std::pair<std::string, std::string>>& skipped) {
  std::vector<std::string> candidates;
  try {
    if (auto latest = find_latest_checkpoint(root)) candidates.push_back(*latest);
  } catch (const Error& e) {
    if (!fallback) throw;
    LOG(ERROR) << "cannot resume from what " << root << "/latest names: " << e.what() << "; falling back to an older checkpoint";
    skipped.emplace_back(root + "/latest", e.what());
  }
  if (!fallback) return candidates;
  const auto all = complete_checkpoints(root);
  for (auto it = all.rbegin(); it != all.rend(); ++it)
    if (candidates.empty() || fs::path(*it).filename() < fs::path(candidates.front()).filename()) candidates.push_back(*it);
  return candidates;
}

}  // namespace

// One save: the snapshot, the writer thread and how it ended.
struct Checkpointer::InFlight {
  int64_t seq = 0;
  std::string root;
  CheckpointData data;  // its tensors are the host snapshot (async) or the live state (sync)
  HostCopy copy;
  std::thread writer;
  std::atomic<bool> written{false};
  bool copy_waited = false;  // the optimizer step has waited for the snapshot copy
  Clock::time_point start;
  SaveOutcome outcome;
};

Checkpointer::Checkpointer(const Config& cfg, const ParallelContext* ctx, const ParamList& params,
                           Optimizer& optimizer, at::Generator rng)
    : cfg_(cfg), ctx_(ctx), params_(params), optimizer_(optimizer), rng_(std::move(rng)) {
  fault::set_rank(ctx_ ? ctx_->rank() : 0);
  // A tokenizer named by its files travels with every checkpoint, so the checkpoint is
  // self-contained ("gpt2:." / "hf:." = the checkpoint's own files, resolved in restore()).
  if (!is_checkpoint_tokenizer(cfg_.data.tokenizer)) take_tokenizer_files(cfg_.data.tokenizer);
}

at::Tensor Checkpointer::rng_state() const {
  std::lock_guard<std::mutex> lock(rng_.mutex());
  return rng_.get_state();
}

Checkpointer::~Checkpointer() {
  // Destroyed mid-save (training failed): do not wait out the store timeout for peers that may
  // be gone; the save is abandoned (never committed without every rank).
  if (in_flight_ && !in_flight_->written.load()) cancel_ = true;
  try {
    for (const auto& o : finish())
      if (!o.ok) LOG(ERROR) << "checkpoint of step " << o.step << " failed: " << o.error;
  } catch (...) {
  }
}

void Checkpointer::take_tokenizer_files(const std::string& spec) {
  const TokenizerFiles files = tokenizer_files(spec);
  if (files.paths.empty()) return;  // "byte"
  for (const auto& [name, path] : files.paths) tokenizer_files_[name] = read_file(path);
  cfg_.data.tokenizer = files.own_spec;
}

// ---- Restoring ----------------------------------------------------------------------------------

std::optional<RestoredState> Checkpointer::restore() {
  const std::string root = cfg_.checkpoint_dir();
  const bool multi = ctx_ && ctx_->world_size() > 1;
  if (!ctx_ || ctx_->is_primary()) {
    for (const auto& p : clean_checkpoint_root(root)) LOG(WARNING) << "removed " << p << ", left by an interrupted checkpoint save or deletion";
  }
  if (multi) barrier(ctx_->world());  // nobody reads while leftovers are removed

  std::vector<std::pair<std::string, std::string>> skipped;
  const auto candidates = resume_candidates(root, cfg_.checkpoint.fallback, skipped);
  std::optional<RestoredState> r;
  for (const auto& dir : candidates) {
    std::string error;
    try {
      r = load(dir);
    } catch (const std::exception& e) {  // also a malformed record: every rank must reach the agreement
      error = e.what();
      if (error.empty()) error = str("cannot read ", dir);
    }
    // Every rank must resume from the same checkpoint: the lowest rank that failed speaks, and
    // every rank reports its words (file and tensor), not just that it failed.
    if (multi) error = lowest_rank_error(ctx_->world(), ctx_->rank(), error);
    if (error.empty()) break;
    r.reset();
    if (!cfg_.checkpoint.fallback) fail(error);
    LOG(ERROR) << "cannot resume from " << dir << ": " << error << "; falling back to an older checkpoint";
    skipped.emplace_back(dir, error);
  }
  WEFT_CHECK(r || skipped.empty(), "no readable checkpoint under ", root, ": ", skipped.back().second);
  if (!r && !cfg_.checkpoint.init_from.empty()) {
    std::string dir;
    try {
      dir = resolve_checkpoint_dir(cfg_.checkpoint.init_from);
    } catch (const Error& e) {
      fail(str("checkpoint.init_from: ", e.what()));
    }
    CheckpointReader reader(dir);
    load_weights(reader);
    optimizer_.reload_params();
    r = RestoredState{dir, false, 0, 0, {}};
  }
  if (is_checkpoint_tokenizer(cfg_.data.tokenizer) && tokenizer_files_.empty()) {
    WEFT_CHECK(r, "data.tokenizer is '", cfg_.data.tokenizer, "' (a checkpoint's own tokenizer files) but there ",
               "is no checkpoint to take them from; set data.tokenizer=gpt2:DIR, hf:DIR or sp:FILE, or ",
               "checkpoint.init_from");
    take_tokenizer_files(resolve_checkpoint_tokenizer(cfg_.data.tokenizer, r->dir));
  }
  if (r) r->skipped = std::move(skipped);
  return r;
}

RestoredState Checkpointer::load(const std::string& dir) {
  CheckpointReader reader(dir);
  const auto state = reader.trainer_state();
  WEFT_CHECK(state.is_object() && state.contains("consumed_samples") && state["consumed_samples"].is_number_integer() &&
                 state.contains("rng_cpu") && state["rng_cpu"].is_string(),
             dir, "/trainer_state.json lacks consumed_samples or rng_cpu; the checkpoint is damaged");
  WEFT_CHECK(state.value("step", int64_t(-1)) == reader.step(), dir, ": trainer_state.json says step ",
             state.value("step", int64_t(-1)), " but the manifest says ", reader.step(), "; the checkpoint is damaged");
  // Everything the checkpoint holds is checked now, as eval and convert would check it.
  (void)reader.config_yaml();
  const auto extra = reader.extra_files();
  load_weights(reader);
  optimizer_.reload_params();
  optimizer_.load_state(reader.read("optim", optimizer_.wanted_state(), cfg_.model.vocab_size), reader.step());
  {
    std::lock_guard<std::mutex> lock(rng_.mutex());
    rng_.set_state(hex_to_bytes(state.at("rng_cpu").get<std::string>()));
  }
  if (is_checkpoint_tokenizer(cfg_.data.tokenizer) && tokenizer_files_.empty())
    tokenizer_files_ = own_tokenizer_files(cfg_.data.tokenizer, dir, extra);
  return RestoredState{dir, true, reader.step(), state.at("consumed_samples").get<int64_t>(), {}};
}

void Checkpointer::load_weights(CheckpointReader& reader) {
  // A checkpoint tensor this model has no parameter for would be dropped silently (a smaller
  // model, tied instead of untied embeddings): refuse, as a strict state-dict load does.
  const Transformer meta(cfg_.model, at::TensorOptions().device(at::kMeta), ModelShard{}, cfg_.lora);
  const auto params = meta->named_parameters();
  bool has_adapters = false;
  for (const auto& name : reader.names("model")) {
    WEFT_CHECK(params.contains(name), reader.dir(), " holds model tensor '", name, "' but this model has no such ",
               "parameter (model.* or lora.* differs from the checkpoint's config.yaml); set the config the ",
               "checkpoint was saved with");
    has_adapters = has_adapters || is_lora_parameter(name);
  }
  at::NoGradGuard no_grad;
  // (params_ index, name, placement) read from one checkpoint.
  auto read_into = [&](CheckpointReader& from, const std::vector<size_t>& which) {
    std::vector<std::pair<std::string, ShardPlacement>> want;
    for (size_t k : which) want.emplace_back(params_[k].name, placement_of(params_[k].shard));
    auto got = from.read("model", want, cfg_.model.vocab_size);
    for (size_t i = 0; i < which.size(); ++i) params_[which[i]].tensor.copy_(got[i].second);
  };
  std::vector<size_t> base, adapters;
  for (size_t k = 0; k < params_.size(); ++k)
    (cfg_.lora.rank > 0 && is_lora_parameter(params_[k].name) ? adapters : base).push_back(k);
  if (cfg_.lora.rank == 0) return read_into(reader, base);
  // LoRA: the base from checkpoint.init_from (else the seeded init the model was built with);
  // the adapters from `reader` unless it is the base itself (a fresh start keeps their init).
  const std::string base_dir = lora_base_dir(cfg_);
  if (!base_dir.empty()) {
    CheckpointReader base_reader(base_dir);
    read_into(base_reader, base);
  }
  if (has_adapters) read_into(reader, adapters);
}

// ---- Saving -------------------------------------------------------------------------------------

void Checkpointer::snapshot(InFlight& job, int64_t step, int64_t consumed_samples) {
  const int64_t dp_rank = ctx_ ? ctx_->coord().dp : 0;
  CheckpointData& data = job.data;
  data.step = step;
  const auto& dims = ctx_ ? ctx_->dims() : ParallelDims{};
  data.layout = {dims.tp, dims.pp, dims.dp, dims.vpp, dims.dp > 1 ? cfg_.parallel.zero : 0};
  // Each piece once: by its owner on DP rank 0 (replicas are identical). Frozen parameters are
  // saved with the weights like any other, except a LoRA job's base: it is checkpoint.init_from's
  // (or the seeded init), never rewritten, so only the adapters are saved.
  const bool lora = cfg_.lora.rank > 0;
  if (dp_rank == 0)
    for (const auto& p : params_) {
      if (!p.owned || (lora && !is_lora_parameter(p.name))) continue;
      data.model.emplace_back(p.name, p.tensor.detach());
      data.model_placement[p.name] = placement_of(p.shard);
    }
  optimizer_.save_state(dp_rank, data.optimizer, data.optimizer_placement);
  data.trainer_state = {{"step", step},
                        {"consumed_samples", consumed_samples},
                        {"rng_cpu", bytes_to_hex(rng_state())}};
  data.config_yaml = to_yaml(cfg_);
  data.extra_files = tokenizer_files_;
  if (!cfg_.checkpoint.async) return;  // written from the live tensors before training goes on

  // Host buffers: allocated at the first save, reused while the state keeps its shapes.
  std::vector<at::Tensor> live;
  for (auto* list : {&data.model, &data.optimizer})
    for (const auto& [name, t] : *list) live.push_back(t);
  bool same = host_.size() == live.size();
  for (size_t i = 0; same && i < live.size(); ++i)
    same = host_[i].sizes() == live[i].sizes() && host_[i].dtype() == live[i].dtype();
  if (!same) {
    host_.clear();
    for (const auto& t : live) host_.push_back(pinned_empty_like(t));
  }
  size_t i = 0;
  for (auto* list : {&data.model, &data.optimizer})
    for (auto& [name, t] : *list) t = host_[i++];
  const size_t half = live.size() / 2;
  job.copy.start(live, host_, [half](size_t k) {
    if (k == half) fault::point("snapshot");
  });
}

void Checkpointer::save(int64_t step, int64_t consumed_samples, const std::string& root) {
  const auto t0 = Clock::now();
  // At most one save in flight: a save that comes due while one is writing waits for it.
  if (in_flight_) {
    in_flight_->copy_waited = true;
    if (in_flight_->writer.joinable()) in_flight_->writer.join();
    ended_.push_back(in_flight_->outcome);
    in_flight_.reset();
    // Every rank learns that outcome here, at the same save: with on_error=stop none starts another.
    if (!ended_.back().ok && cfg_.checkpoint.on_error == "stop") return;
  }
  fault::begin_save(step);
  auto job = std::make_unique<InFlight>();
  job->seq = ++saves_;
  job->root = root.empty() ? cfg_.checkpoint_dir() : root;
  job->start = t0;
  job->outcome.step = step;
  job->outcome.async = cfg_.checkpoint.async;
  snapshot(*job, step, consumed_samples);
  if (!cfg_.checkpoint.async) {
    write(*job);
    job->outcome.blocking_ms = job->outcome.total_ms = ms_since(t0);  // the loop waited for all of it
    ended_.push_back(job->outcome);
    return;
  }
  InFlight* j = job.get();
  job->writer = std::thread([this, j] { write(*j); });
  job->outcome.blocking_ms = ms_since(t0);
  in_flight_ = std::move(job);
}

void Checkpointer::before_optimizer_step() {
  if (!in_flight_ || in_flight_->copy_waited) return;
  in_flight_->outcome.blocking_ms += in_flight_->copy.before_update();
  in_flight_->copy_waited = true;
}

std::vector<SaveOutcome> Checkpointer::poll() {
  if (in_flight_ && in_flight_->copy_waited && in_flight_->written.load()) {
    if (in_flight_->writer.joinable()) in_flight_->writer.join();
    ended_.push_back(in_flight_->outcome);
    in_flight_.reset();
  }
  return std::exchange(ended_, {});
}

std::vector<SaveOutcome> Checkpointer::finish() {
  if (in_flight_) in_flight_->copy_waited = true;  // no optimizer step follows
  if (in_flight_ && in_flight_->writer.joinable()) in_flight_->writer.join();
  return poll();
}

// The writer: finish the snapshot copy, write this rank's pieces, commit (agreed over ranks).
void Checkpointer::write(InFlight& job) {
  SaveOutcome& o = job.outcome;
  try {
    if (cfg_.checkpoint.async) job.copy.finish();
    const SaveOutcome r = coordinate(job);
    o.ok = r.ok, o.dir = r.dir, o.error = r.error, o.bytes = r.bytes;
  } catch (...) {
    o.ok = false, o.error = error_text(std::current_exception());
  }
  o.total_ms = ms_since(job.start);
  job.data = CheckpointData();  // drop references to the buffers and the live state
  job.written = true;
}

// prepare (rank 0) → write_shards (every rank) → commit (rank 0), each rank's result and the
// commit's outcome passed through the store under "<seq>/...".
SaveOutcome Checkpointer::coordinate(InFlight& job) {
  SaveOutcome o;
  const bool multi = ctx_ && ctx_->world_size() > 1;
  const bool leader = !ctx_ || ctx_->is_primary();
  const int64_t rank = ctx_ ? ctx_->rank() : 0;
  const int64_t world = ctx_ ? ctx_->world_size() : 1;
  if (multi && !store_) {
    // Writing a rank's pieces may take much longer than a collective.
    const auto timeout = std::chrono::seconds(std::max<int64_t>(cfg_.parallel.timeout_sec, 1800));
    store_ = std::make_unique<StoreClient>(ctx_->env(), ctx_->store_root() + "/checkpoint/", timeout);
  }
  const std::string key = str(job.seq, "/");
  // Error texts may quote damaged bytes: never let them break the JSON.
  auto text = [](const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  auto attempt = [](auto&& fn) -> nlohmann::json {
    try {
      return fn();
    } catch (...) {
      return {{"error", error_text(std::current_exception())}};
    }
  };
  // 1. The temporary directory.
  nlohmann::json ready;
  if (leader) ready = attempt([&] { return nlohmann::json{{"dir", prepare_checkpoint(job.root, job.data.step)}}; });
  if (multi && leader) store_->set(key + "ready", text(ready));
  if (multi && !leader) ready = nlohmann::json::parse(store_->get(key + "ready", &cancel_));
  // 2. This rank's pieces.
  nlohmann::json mine = ready.contains("error")
                            ? nlohmann::json{{"error", "the checkpoint directory could not be prepared"}}
                            : attempt([&] { return write_shards(ready.at("dir"), rank, job.data); });
  fault::point("fragment");
  if (multi) store_->set(str(key, "rank", rank), text(mine));
  // 3. The commit, by rank 0 once every rank has written.
  nlohmann::json commit;
  if (leader) {
    std::vector<nlohmann::json> records;
    std::string error = ready.value("error", "");
    for (int64_t r = 0; r < world; ++r) {
      auto rec = r == rank ? mine : nlohmann::json::parse(store_->get(str(key, "rank", r), &cancel_));
      if (rec.contains("error") && error.empty()) error = multi ? str("rank ", r, ": ", rec["error"].get<std::string>()) : rec["error"].get<std::string>();
      records.push_back(std::move(rec));
    }
    commit = error.empty() ? attempt([&] {
      const auto res = commit_checkpoint(job.root, ready.at("dir"), job.data, records, cfg_.checkpoint.keep);
      return nlohmann::json{{"dir", res.dir}, {"bytes", res.bytes}};
    })
                           : nlohmann::json{{"error", error}};
    if (commit.contains("error") && ready.contains("dir")) abandon_checkpoint(ready.at("dir"));
    if (multi) store_->set(key + "commit", text(commit));
  } else {
    commit = nlohmann::json::parse(store_->get(key + "commit", &cancel_));
  }
  o.ok = !commit.contains("error");
  if (o.ok) o.dir = commit.at("dir"), o.bytes = commit.at("bytes");
  else o.error = commit.at("error");
  return o;
}

}  // namespace weft

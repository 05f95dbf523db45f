// Job requests: the POST body's schema, the data-root confinement of every path a request names,
// and the config (or fine-tuning options) a job runs with.
#include "job_plan.h"

#include <cstdlib>
#include <fstream>
#include <set>
#include <system_error>

#include "weft/error.h"

namespace service {
namespace {

const std::set<std::string> kTrainFields = {"kind", "config", "config_yaml", "overrides"};
const std::set<std::string> kFinetuneFields = {"model", "data", "format", "lora_rank", "lora_export", "skip_bad"};
constexpr size_t kMaxOverrides = 256;

[[noreturn]] void bad(const std::string& msg) { throw RequestError(400, msg); }

// Deepest nesting of arrays/objects in JSON text, counted without parsing, so that a hostile body
// ("[[[[...") is refused before any parser recurses into it.
int json_depth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

std::string get_string(const json& j, const char* key) {
  if (!j.contains(key)) return "";
  if (!j[key].is_string()) bad(std::string("field '") + key + "' must be a string");
  return j[key].get<std::string>();
}

bool is_number(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

std::string override_key(const std::string& assignment) {
  std::string key = assignment.substr(0, assignment.find('='));
  const auto b = key.find_first_not_of(" \t"), e = key.find_last_not_of(" \t");
  return b == std::string::npos ? "" : key.substr(b, e - b + 1);
}

// Fault injection kills, hangs or slows the process it runs in: here, the whole service.
void refuse_fault_injection(const weft::Config& cfg) {
  const weft::FaultConfig d;
  const auto& f = cfg.fault;
  if (f.kill_rank != d.kill_rank || f.hang_rank != d.hang_rank || f.slow_rank != d.slow_rank ||
      f.nan_step != d.nan_step || f.kill_during_checkpoint != d.kill_during_checkpoint)
    throw RequestError(403, "fault.* injection keys (kill_rank, hang_rank, slow_rank, nan_step, "
                            "kill_during_checkpoint) are not available through the service; remove them");
}

// A dataset prefix, its files and its default index cache must all stay inside the root.
std::string confine_prefix(const PathPolicy& paths, const std::string& prefix, const std::string& what) {
  const std::string p = paths.inside(prefix, what);
  for (const char* ext : {".bin", ".idx", ".weft_cache"}) paths.inside(p + ext, what + " (" + p + ext + ")");
  return p;
}

// Checks (and makes absolute) every path-valued key of `cfg`.
void confine_config(weft::Config& cfg, const PathPolicy& paths) {
  if (!cfg.data.prefix.empty()) cfg.data.prefix = confine_prefix(paths, cfg.data.prefix, "data.prefix");
  for (auto& entry : cfg.data.blend)
    if (!is_number(entry)) entry = confine_prefix(paths, entry, "data.blend entry '" + entry + "'");
  const std::string& tok = cfg.data.tokenizer;
  const size_t colon = tok.find(':');
  if (colon != std::string::npos) {
    const std::string kind = tok.substr(0, colon), path = tok.substr(colon + 1);
    if (kind == "sp") cfg.data.tokenizer = kind + ":" + paths.inside(path, "data.tokenizer");
    else cfg.data.tokenizer = kind + ":" + paths.inside_dir(path, "data.tokenizer");
  }
  if (!cfg.data.cache_dir.empty()) cfg.data.cache_dir = paths.inside(cfg.data.cache_dir, "data.cache_dir");
  if (!cfg.checkpoint.init_from.empty())
    cfg.checkpoint.init_from = paths.inside_dir(cfg.checkpoint.init_from, "checkpoint.init_from");
  refuse_fault_injection(cfg);
}

// The request's config, before the service's own keys: the file, or the inline text, then the
// overrides in order.
weft::Config read_config(const JobRequest& req, const PathPolicy& paths) {
  weft::Config cfg;
  if (!req.config.empty()) cfg = weft::load_config(paths.inside(req.config, "config"));
  else if (!req.config_yaml.empty()) weft::merge_config_yaml(cfg, req.config_yaml, "config_yaml");
  for (const auto& o : req.overrides) weft::apply_override(cfg, o);
  return cfg;
}

std::string quoted(const fs::path& p) { return json(p.string()).dump(); }  // a YAML double-quoted scalar

}  // namespace

json JobRequest::to_json() const {
  json j = {{"kind", kind}, {"overrides", overrides}};
  if (!config.empty()) j["config"] = config;
  if (!config_yaml.empty()) j["config_yaml"] = config_yaml;
  if (kind == "finetune") {
    j["model"] = model;
    j["data"] = data;
    j["format"] = format;
    j["lora_rank"] = lora_rank;
    j["lora_export"] = lora_export;
    j["skip_bad"] = skip_bad;
  }
  return j;
}

JobRequest job_request_from_json(const json& j) {
  if (!j.is_object()) bad("the request body must be a JSON object");
  for (const auto& [key, value] : j.items())
    if (!kTrainFields.count(key) && !kFinetuneFields.count(key))
      bad("unknown field '" + key + "'; expected kind, config, config_yaml, overrides (and for kind "
          "finetune: model, data, format, lora_rank, lora_export, skip_bad)");
  JobRequest r;
  if (j.contains("kind")) r.kind = get_string(j, "kind");
  if (r.kind != "train" && r.kind != "finetune") bad("field 'kind' must be \"train\" or \"finetune\"");
  r.config = get_string(j, "config");
  r.config_yaml = get_string(j, "config_yaml");
  if (j.contains("config") && j.contains("config_yaml")) bad("give one of 'config' and 'config_yaml', not both");
  if (j.contains("config") && r.config.empty()) bad("field 'config' must name a YAML file under the data root");
  if (j.contains("config_yaml") && r.config_yaml.find_first_not_of(" \t\r\n") == std::string::npos)
    bad("field 'config_yaml' is empty; give the job's YAML config");
  if (r.kind == "train" && r.config.empty() && r.config_yaml.empty())
    bad("a train job needs 'config' (a YAML file under the data root) or 'config_yaml' (inline YAML)");
  if (j.contains("overrides")) {
    const json& o = j["overrides"];
    if (!o.is_array()) bad("field 'overrides' must be an array of \"key=value\" strings");
    if (o.size() > kMaxOverrides) bad("field 'overrides' has more than " + std::to_string(kMaxOverrides) + " entries");
    for (const auto& e : o) {
      if (!e.is_string() || e.get<std::string>().find('=') == std::string::npos)
        bad("field 'overrides' must be an array of \"key=value\" strings");
      r.overrides.push_back(e.get<std::string>());
    }
  }
  for (const auto& key : kFinetuneFields)
    if (j.contains(key) && r.kind != "finetune") bad("field '" + key + "' is for kind \"finetune\" only");
  if (r.kind == "finetune") {
    r.model = get_string(j, "model");
    r.data = get_string(j, "data");
    if (r.model.empty() || r.data.empty()) bad("a finetune job needs 'model' (hf:DIR) and 'data' (a JSONL file)");
    if (j.contains("format")) r.format = get_string(j, "format");
    if (j.contains("lora_export")) r.lora_export = get_string(j, "lora_export");
    if (j.contains("lora_rank")) {
      if (!j["lora_rank"].is_number_integer() || j["lora_rank"].get<int64_t>() < 0)
        bad("field 'lora_rank' must be a non-negative integer");
      r.lora_rank = j["lora_rank"].get<int64_t>();
    }
    if (j.contains("skip_bad")) {
      if (!j["skip_bad"].is_boolean()) bad("field 'skip_bad' must be true or false");
      r.skip_bad = j["skip_bad"].get<bool>();
    }
  }
  return r;
}

JobRequest parse_job_request(const std::string& body) {
  if (json_depth(body) > kMaxJsonDepth)
    bad("malformed JSON: nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    bad(std::string("malformed JSON: ") + e.what());
  }
  return job_request_from_json(j);
}

PathPolicy::PathPolicy(const fs::path& root) {
  std::error_code ec;
  root_ = fs::canonical(root, ec);
  WEFT_CHECK(!ec && fs::is_directory(root_), "--root ", root.string(), " is not a directory; create it or pass another");
}

std::string PathPolicy::inside(const std::string& p, const std::string& what) const {
  if (p.empty()) throw RequestError(403, what + " is empty; name a path under the data root");
  if (p.find('\0') != std::string::npos) throw RequestError(403, what + " holds a NUL byte");
  std::error_code ec;
  const fs::path full = fs::path(p).is_absolute() ? fs::path(p) : root_ / p;
  const fs::path resolved = fs::weakly_canonical(full, ec);
  if (ec) throw RequestError(403, what + " '" + p + "' cannot be resolved (" + ec.message() + ")");
  // Component-wise: /data/rootx is not inside /data/root.
  auto r = root_.begin();
  auto q = resolved.begin();
  for (; r != root_.end(); ++r, ++q)
    if (q == resolved.end() || *q != *r)
      throw RequestError(403, what + " '" + p + "' resolves outside the data root " + root_.string() +
                                  " (symlinks and '..' included); name a path under it");
  return resolved.string();
}

std::string PathPolicy::inside_dir(const std::string& dir, const std::string& what) const {
  const std::string d = inside(dir, what);
  std::error_code ec;
  if (fs::is_directory(d, ec))
    for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec))
      inside(it->path().string(), what + " entry");
  return d;
}

JobPlan plan_job(const JobRequest& req, const PathPolicy& paths, const fs::path& job_dir) {
  for (const auto& o : req.overrides) {
    const std::string key = override_key(o);
    if (key == "run.dir" || key == "checkpoint.dir")
      throw RequestError(403, key + " is the service's own (" + (job_dir / "run").string() + "); remove the override");
  }
  JobPlan plan;
  plan.kind = req.kind;
  const fs::path run_dir = job_dir / "run";
  if (req.kind == "train") {
    plan.config = read_config(req, paths);
    confine_config(plan.config, paths);
    plan.config.run.dir = run_dir.string();
    plan.config.checkpoint.dir = (run_dir / "checkpoints").string();
    return plan;
  }
  // Fine-tuning builds its config itself (defaults, file, overrides); check what the request's
  // config and overrides name, then pass the confined paths and the service's run.dir.
  weft::Config cfg = read_config(req, paths);
  confine_config(cfg, paths);
  auto& o = plan.finetune;
  const std::string model_dir = req.model.rfind("hf:", 0) == 0 ? req.model.substr(3) : req.model;
  o.model = "hf:" + paths.inside_dir(model_dir, "model");
  o.data = paths.inside(req.data, "data");
  o.format = req.format;
  o.lora_rank = req.lora_rank;
  o.lora_export = req.lora_export;
  o.skip_bad = req.skip_bad;
  if (!req.config.empty()) {
    o.config = paths.inside(req.config, "config");
  } else if (!req.config_yaml.empty()) {
    fs::create_directories(job_dir);
    o.config = (job_dir / "request.yaml").string();
    std::ofstream(o.config) << req.config_yaml;
  }
  o.overrides = req.overrides;
  o.overrides.push_back("run.dir=" + quoted(run_dir));
  o.overrides.push_back("checkpoint.dir=" + quoted(run_dir / "checkpoints"));
  return plan;
}

}  // namespace service

// What a client may ask the training service for, and how a request becomes something the
// library runs: the POST /v1/jobs body is checked field by field, every path it names must resolve
// inside the data root, and the run directory is always the service's own.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "weft/config.h"
#include "weft/finetune.h"

namespace service {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A request the service refuses: `status` is the HTTP status (400 malformed, 403 forbidden path,
// 404 unknown job, 413 too large) and what() the one-line message sent back as {"error": ...}.
class RequestError : public std::runtime_error {
 public:
  RequestError(int status, const std::string& msg) : std::runtime_error(msg), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// The body of POST /v1/jobs, validated: exactly one of config (a YAML file under the root) or
// config_yaml (inline) for "train"; for "finetune", model and data are required and the config is
// optional. Overrides are `key=value` as `weft train --set`.
struct JobRequest {
  std::string kind = "train";  // train | finetune
  std::string config, config_yaml;
  std::vector<std::string> overrides;
  // finetune only
  std::string model, data, format = "chat", lora_export = "merged";
  int64_t lora_rank = 0;
  bool skip_bad = false;

  json to_json() const;
};

// Parses and checks a request body (JSON text, at most the server's payload limit). Throws
// RequestError(400) naming the field for malformed JSON, nesting deeper than kMaxJsonDepth, a
// wrong type, an unknown field or a missing one.
constexpr int kMaxJsonDepth = 32;
JobRequest parse_job_request(const std::string& body);
// The same checks on a request read back from a job record (throws RequestError).
JobRequest job_request_from_json(const json& j);

// Confines paths to the data root. Thread-safe (immutable).
class PathPolicy {
 public:
  // `root` must be an existing directory; it is canonicalized (symlinks resolved).
  explicit PathPolicy(const fs::path& root);
  // `p` with symlinks and ".." resolved (a relative `p` is taken under the root); throws
  // RequestError(403) naming `what` when that is not the root or below it.
  std::string inside(const std::string& p, const std::string& what) const;
  // inside(dir), and every entry directly in dir (a tokenizer or model directory) too.
  std::string inside_dir(const std::string& dir, const std::string& what) const;
  const fs::path& root() const { return root_; }

 private:
  fs::path root_;
};

// What a job runs, built from its request at submission and again when a restarted service
// re-queues it.
struct JobPlan {
  std::string kind;
  weft::Config config;             // train: the Trainer's config
  weft::FinetuneOptions finetune;  // finetune: the FinetuneJob's options
};

// Builds the plan for job directory `job_dir` (absolute): reads the config, applies the overrides,
// checks every path-valued key (data.prefix and its .bin/.idx, data.blend, data.tokenizer,
// data.cache_dir, checkpoint.init_from; for finetune also model and data) against `paths`, and
// sets run.dir to job_dir/run and checkpoint.dir below it.
// Throws RequestError(403) for a path outside the root, RequestError(403) for an override of
// run.dir/checkpoint.dir or of a fault.* injection key, and weft::Error (one line) for a bad config.
JobPlan plan_job(const JobRequest& req, const PathPolicy& paths, const fs::path& job_dir);

}  // namespace service

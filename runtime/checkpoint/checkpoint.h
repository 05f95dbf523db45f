// Checkpoints that can be trusted: each rank writes the tensors it owns into safetensors files, a
// manifest written last names every tensor's global shape and each shard's place, the layout, and
// a CRC32C per file; the step directory is committed by an atomic rename, and `latest` (itself
// replaced atomically) only ever names a complete checkpoint.
//
//   <root>/step_00000100/{model,optim}.rank00000.safetensors  tensors this rank owns
//   <root>/step_00000100/trainer_state.json                   step, data position, RNG, ...
//   <root>/step_00000100/config.yaml                          the resolved job config
//   <root>/step_00000100/manifest.json                        written last: the commit record
//   <root>/latest                                             "step_00000100"
#pragma once

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace weft {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The layout a checkpoint was written with (recorded in the manifest).
struct CheckpointLayout {
  int64_t tp = 1, pp = 1, dp = 1;
};

// What one rank saves or loads. In a single process this is the whole job.
struct CheckpointData {
  int64_t step = 0;
  NamedTensors model;      // full tensors, by model parameter name
  NamedTensors optimizer;  // exp_avg.<name>, exp_avg_sq.<name>; may be empty (model only)
  nlohmann::json trainer_state = nlohmann::json::object();
  std::string config_yaml;
  std::map<std::string, std::string> extra_files;  // e.g. tokenizer files, stored beside
  CheckpointLayout layout;
};

struct SaveResult {
  std::string dir;
  uint64_t bytes = 0;
};

// Writes `data` as <root>/step_<step>, commits it and points `latest` at it, then deletes all
// but the newest `keep` complete checkpoints (keep = 0 keeps all). Throws weft::Error naming the
// path on any I/O failure; a failed save never becomes visible as complete.
SaveResult save_checkpoint(const std::string& root, const CheckpointData& data, int64_t keep = 0);

// The newest complete checkpoint under `root`: the one `latest` names, verified. Returns nullopt
// when `root` holds no checkpoint at all. Throws weft::Error when `latest` names a missing or
// damaged checkpoint (the message says which file and what to do).
std::optional<std::string> find_latest_checkpoint(const std::string& root);

// Resolves DIR given by a user: a step directory (has manifest.json) or a root (has latest).
std::string resolve_checkpoint_dir(const std::string& dir);

// Loads a complete checkpoint directory, verifying every file's size and CRC32C against the
// manifest. With `with_optimizer` false the optimizer file is not read.
CheckpointData load_checkpoint(const std::string& step_dir, bool with_optimizer = true);

std::string checkpoint_name(int64_t step);  // "step_00000100"

}  // namespace weft

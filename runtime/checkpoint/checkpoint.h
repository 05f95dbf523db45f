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

// Where a saved tensor lies in its global tensor: the box [offsets, offsets + shape) of a tensor
// of global_shape, and, when only a flat slice of that box is saved (a ZeRO-1 optimizer shard),
// the range [flat_begin, flat_end) of the box's row-major elements. A tensor saved without a
// placement is the whole global tensor.
struct ShardPlacement {
  std::vector<int64_t> global_shape, offsets, shape;
  int64_t flat_begin = -1, flat_end = -1;  // -1: the whole box
  bool operator==(const ShardPlacement& o) const {
    return global_shape == o.global_shape && offsets == o.offsets && shape == o.shape &&
           flat_begin == o.flat_begin && flat_end == o.flat_end;
  }
  std::string describe() const;  // "offsets [0,32] shape [32,64] of [64,64]"
};

struct Group;

// What one rank saves or loads. In a single process this is the whole job.
struct CheckpointData {
  int64_t step = 0;
  NamedTensors model;      // by model parameter name: full tensors, or pieces with a placement
  NamedTensors optimizer;  // exp_avg.<name>, exp_avg_sq.<name>; may be empty (model only)
  std::map<std::string, ShardPlacement> model_placement, optimizer_placement;  // by tensor name
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
//
// With a `world` group of several ranks this is collective: every rank passes the tensors it
// owns (files model/optim.rank<global rank>.safetensors, skipped when empty), group rank 0 also
// writes trainer state, config and extra files, gathers the others' file and tensor records
// (through the shared directory) into the manifest and commits; all return after the commit.
SaveResult save_checkpoint(const std::string& root, const CheckpointData& data, int64_t keep = 0,
                           const Group* world = nullptr);

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

// Reads the pieces one rank needs from a complete checkpoint: for each wanted (name, placement)
// of `kind` ("model" or "optim"), its elements taken from a saved box that contains the wanted
// one (a whole tensor sliced into a TP piece, or the same piece), or put together from flat
// slices of the same box (ZeRO-1 state saved with another DP size or bucket layout). Files are
// checked against the manifest first. Throws weft::Error naming the tensor, the placement and
// the layout the checkpoint was saved with when the saved pieces do not cover it.
NamedTensors load_shards(const std::string& step_dir, const std::string& kind,
                         const std::vector<std::pair<std::string, ShardPlacement>>& wanted);
// Layout, step and trainer state of a checkpoint, without reading tensors.
CheckpointData load_checkpoint_metadata(const std::string& step_dir);

}  // namespace weft

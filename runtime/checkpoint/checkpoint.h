// Checkpoints that can be trusted and loaded into any layout. Each rank writes the tensor pieces
// it owns into safetensors files; a manifest written last names every tensor's global shape, each
// piece's place in it (a box, or a flat range of a box for ZeRO-1 state), the piece's byte range
// in its file and a CRC32C per 1 MiB block of those bytes; the step directory is committed by an
// atomic rename, and `latest` (itself replaced atomically) only ever names a complete checkpoint.
//
//   <root>/step_00000100/{model,optim}.rank00000.safetensors  tensors this rank owns
//   <root>/step_00000100/trainer_state.json                   step, data position, RNG, ...
//   <root>/step_00000100/config.yaml                          the resolved job config
//   <root>/step_00000100/manifest.json                        written last: the commit record
//   <root>/latest                                             "step_00000100"
//   <root>/step_00000200.tmp, step_00000050.deleting          being written / being deleted
//
// A reader assembles each piece it wants from the intersections of the saved pieces, so a
// checkpoint saved under any (tp, pp, dp, vpp, ZeRO, bucket size) loads into any other, and it
// reads and verifies only the blocks holding those bytes.
#pragma once

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace weft {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The layout a checkpoint was written with (recorded in the manifest, for messages).
struct CheckpointLayout {
  int64_t tp = 1, pp = 1, dp = 1, vpp = 1, zero = 0;
  std::string describe() const;  // "tp(2) × pp(2) × dp(2), ZeRO-1"
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
  int64_t numel() const;           // elements saved: the flat range's length, or the box's
  std::string describe() const;    // "offsets [0,32] shape [32,64] of [64,64]"
};

// What one rank saves. In a single process this is the whole job.
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

std::string checkpoint_name(int64_t step);  // "step_00000100"

// ---- Writing: one save is prepare → write_shards (every rank) → commit (one rank) -----------
// Each phase throws weft::Error naming the path and the OS reason (ENOSPC, EIO, ...); the caller
// then calls abandon_checkpoint. Thread-compatible: a save may run on a background thread.

// Creates the empty temporary directory <root>/step_N.tmp (removing a stale one) and returns it.
std::string prepare_checkpoint(const std::string& root, int64_t step);
// Writes this rank's model and optimizer pieces into `tmp_dir` (<kind>.rank<rank>.safetensors,
// fsynced; no file for an empty list) and returns their manifest records:
// {"files": {...}, "tensors": {"model": {...}, "optim": {...}}}.
nlohmann::json write_shards(const std::string& tmp_dir, int64_t rank, const CheckpointData& data);
// Writes trainer state, config, extra files and the manifest (from every rank's records) into
// `tmp_dir`, renames it to <root>/step_N, points `latest` at it and keeps the newest `keep`
// complete checkpoints (0 = all; deletion renames first, then removes). A complete checkpoint of
// the same step is replaced only once the new one is whole.
SaveResult commit_checkpoint(const std::string& root, const std::string& tmp_dir, const CheckpointData& data,
                             const std::vector<nlohmann::json>& rank_records, int64_t keep);
// Removes a save's temporary directory after a failure; never throws.
void abandon_checkpoint(const std::string& tmp_dir) noexcept;
// prepare + write_shards + commit in one process (tools and tests).
SaveResult save_checkpoint(const std::string& root, const CheckpointData& data, int64_t keep = 0);

// Removes what an interrupted save or deletion left under `root` (step_*.tmp, step_*.deleting,
// step directories without a manifest) and returns what it removed. Call on one rank before any
// save starts. Throws weft::Error when a leftover cannot be removed.
std::vector<std::string> clean_checkpoint_root(const std::string& root);

// ---- Finding ----------------------------------------------------------------------------------

// The checkpoint `latest` names under `root`, after checking that its manifest parses and its
// files exist with the sizes it lists (contents are verified as they are read). nullopt when
// `root` holds no checkpoint at all. Throws weft::Error when `latest` names a missing or damaged
// checkpoint (the message says which file and what to do).
std::optional<std::string> find_latest_checkpoint(const std::string& root);
// The complete checkpoints under `root` (those with a manifest), oldest first.
std::vector<std::string> complete_checkpoints(const std::string& root);
// Resolves DIR given by a user: a step directory (has manifest.json), a root (has latest), or a
// run directory (has checkpoints/latest).
std::string resolve_checkpoint_dir(const std::string& dir);

// ---- Reading ----------------------------------------------------------------------------------

// One complete checkpoint, its manifest parsed once. read() assembles any wanted piece from the
// saved pieces it intersects and verifies, block by block, only the bytes it reads; corrupt or
// truncated data is a weft::Error naming the file, the tensor and what to do. Not thread-safe.
class CheckpointReader {
 public:
  // Parses the manifest and checks that every file it lists exists with its size. Throws
  // weft::Error naming the path for a missing, uncommitted or damaged checkpoint.
  explicit CheckpointReader(const std::string& step_dir);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::string& dir() const { return dir_; }
  int64_t step() const { return step_; }
  const CheckpointLayout& layout() const { return layout_; }
  // Small files, verified against their CRC32C when read.
  nlohmann::json trainer_state() const;
  std::string config_yaml() const;
  std::map<std::string, std::string> extra_files() const;

  // Tensor names of `kind` ("model" or "optim"), in manifest order.
  std::vector<std::string> names(const std::string& kind) const;
  // For each wanted (name, placement) of `kind`: a tensor of the placement's shape (or, for a flat
  // range, 1-D of its length). Throws weft::Error naming the tensor, the wanted placement and the
  // saved layout when the saved pieces do not cover it.
  // `vocab_rows` > 0 (the model's real vocabulary size) lets a tensor whose first dimension
  // differs between the checkpoint and the wanted placement, both at least vocab_rows, load as
  // another vocabulary padding: rows from vocab_rows on are padding, read as zero where the
  // checkpoint has none and dropped where the model has none.
  NamedTensors read(const std::string& kind, const std::vector<std::pair<std::string, ShardPlacement>>& wanted,
                    int64_t vocab_rows = 0);
  // Every tensor of `kind`, whole.
  NamedTensors read_all(const std::string& kind);

 private:
  struct Impl;
  std::string dir_;
  int64_t step_ = 0;
  CheckpointLayout layout_;
  std::unique_ptr<Impl> impl_;
};

// Whole model (and optionally optimizer) tensors and the metadata of a checkpoint: for tools that
// hold the whole model in one process.
CheckpointData load_checkpoint(const std::string& step_dir, bool with_optimizer = true);

}  // namespace weft

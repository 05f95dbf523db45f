// Checkpoint commit protocol: round trip, `latest` only names complete checkpoints, damage is
// detected and named, retention keeps the newest.
#include "tests/unit/test_util.h"
#include "runtime/checkpoint/checkpoint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "weft/error.h"
#include "core/fileio.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

fs::path fresh_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("weft_ckpt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

CheckpointData sample(int64_t step) {
  CheckpointData d;
  d.step = step;
  d.model = {{"a.weight", at::arange(12, at::kFloat).view({3, 4}) * step}, {"b", at::ones({5}, at::kBFloat16)}};
  d.optimizer = {{"exp_avg.a.weight", at::full({3, 4}, 0.5)}};
  d.trainer_state = {{"consumed_samples", step * 8}};
  d.config_yaml = "model:\n  family: llama\n";
  return d;
}

using testing::error_of;

TEST(Checkpoint, RoundTripThroughLatest) {
  auto root = fresh_dir("roundtrip");
  EXPECT_FALSE(find_latest_checkpoint(root.string()).has_value());
  save_checkpoint(root.string(), sample(3));
  auto latest = find_latest_checkpoint(root.string());
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(fs::path(*latest).filename(), "step_00000003");
  auto d = load_checkpoint(*latest);
  const auto want = sample(3);
  EXPECT_EQ(d.step, 3);
  ASSERT_EQ(d.model.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(d.model[i].first, want.model[i].first);
    EXPECT_EQ(d.model[i].second.scalar_type(), want.model[i].second.scalar_type()) << want.model[i].first;
    EXPECT_TRUE(at::equal(d.model[i].second, want.model[i].second)) << want.model[i].first;
  }
  ASSERT_EQ(d.optimizer.size(), 1u);
  EXPECT_EQ(d.optimizer[0].first, "exp_avg.a.weight");
  EXPECT_TRUE(at::equal(d.optimizer[0].second, want.optimizer[0].second));
  EXPECT_EQ(d.trainer_state.at("consumed_samples"), 24);
  EXPECT_EQ(d.config_yaml, want.config_yaml);
  EXPECT_EQ(resolve_checkpoint_dir(root.string()), *latest);
  fs::remove_all(root);
}

TEST(Checkpoint, UncommittedDirectoryIsNeverTaken) {
  auto root = fresh_dir("uncommitted");
  save_checkpoint(root.string(), sample(1));
  // A crash mid-save leaves a temporary directory and no manifest: it must be ignored.
  fs::create_directories(root / "step_00000002.tmp.123");
  std::ofstream(root / "step_00000002.tmp.123" / "model.rank00000.safetensors") << "partial";
  EXPECT_EQ(fs::path(*find_latest_checkpoint(root.string())).filename(), "step_00000001");
  // A step directory without manifest is reported as incomplete when named directly.
  fs::create_directories(root / "step_00000005");
  EXPECT_NE(error_of([&] { load_checkpoint((root / "step_00000005").string()); }).find("incomplete"),
            std::string::npos);
  fs::remove_all(root);
}

TEST(Checkpoint, DamageIsDetectedAndNamed) {
  auto root = fresh_dir("damage");
  auto r = save_checkpoint(root.string(), sample(4));
  const auto file = fs::path(r.dir) / "model.rank00000.safetensors";
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);  // inside the data of "b", the file's last tensor
    f.put('\x7f');
  }
  // Finding the checkpoint only checks sizes; reading the damaged bytes names file and tensor.
  EXPECT_EQ(*find_latest_checkpoint(root.string()), r.dir);
  auto msg = error_of([&] { load_checkpoint(r.dir); });
  EXPECT_NE(msg.find("model.rank00000.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tensor 'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CRC32C"), std::string::npos) << msg;
  fs::resize_file(file, 10);
  msg = error_of([&] { load_checkpoint(r.dir); });
  EXPECT_NE(msg.find("model.rank00000.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bytes"), std::string::npos) << msg;
  fs::remove_all(root);
}

// Only the blocks a reader touches are verified: damage outside them does not stop it, damage
// inside them does.
TEST(Checkpoint, VerifiesExactlyTheBlocksItReads) {
  auto root = fresh_dir("blocks");
  CheckpointData d = sample(1);
  const auto big = at::arange(3 * 262144, at::kFloat).view({3, 262144});  // 3 rows of 1 MiB
  d.model = {{"big", big}};
  auto r = save_checkpoint(root.string(), d);
  const auto file = fs::path(r.dir) / "model.rank00000.safetensors";
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-8, std::ios::end);  // the last row's data
    f.put('\x7f');
  }
  ShardPlacement first_row{{3, 262144}, {0, 0}, {1, 262144}};
  CheckpointReader reader(r.dir);
  auto got = reader.read("model", {{"big", first_row}});
  EXPECT_TRUE(at::equal(got[0].second, big.narrow(0, 0, 1)));
  ShardPlacement last_row{{3, 262144}, {2, 0}, {1, 262144}};
  auto msg = error_of([&] { reader.read("model", {{"big", last_row}}); });
  EXPECT_NE(msg.find("tensor 'big'"), std::string::npos) << msg;
  fs::remove_all(root);
}

// The elements a placement names, taken from the whole tensor by plain slicing (the reference).
at::Tensor slice_of(const at::Tensor& full, const ShardPlacement& p) {
  at::Tensor box = full;
  for (size_t d = 0; d < p.shape.size(); ++d) box = box.narrow(int64_t(d), p.offsets[d], p.shape[d]);
  box = box.contiguous();
  if (p.flat_begin < 0) return box;
  return box.reshape({-1}).narrow(0, p.flat_begin, p.flat_end - p.flat_begin);
}

// Pieces of a [6, 10, 4] tensor: `parts` boxes along `dim`, each cut into `flats` flat ranges at
// uneven places (a ZeRO-1 shard boundary falls anywhere in a box).
std::vector<ShardPlacement> pieces(int64_t dim, int64_t parts, int64_t flats) {
  const std::vector<int64_t> global{6, 10, 4};
  std::vector<ShardPlacement> out;
  for (int64_t k = 0; k < parts; ++k) {
    ShardPlacement p;
    p.global_shape = global;
    p.shape = global;
    p.offsets = {0, 0, 0};
    p.shape[dim] = global[dim] / parts;
    p.offsets[dim] = k * p.shape[dim];
    const int64_t n = p.shape[0] * p.shape[1] * p.shape[2];
    for (int64_t f = 0; f < flats; ++f) {
      ShardPlacement q = p;
      if (flats > 1) q.flat_begin = f * n / flats + (f > 0 ? 3 : 0), q.flat_end = f + 1 == flats ? n : (f + 1) * n / flats + 3;
      out.push_back(q);
    }
  }
  return out;
}

// Any saved cut reads back as any wanted cut: boxes split along another dimension, flat ranges
// of other boxes (what tp, pp, dp, ZeRO and bucket changes produce), equal to slicing.
TEST(Checkpoint, ReadsAnyPlacementFromAnySavedPieces) {
  const auto full = at::randn({6, 10, 4});
  const std::vector<std::vector<int64_t>> layouts = {{0, 1, 1}, {0, 2, 1}, {1, 5, 1}, {1, 2, 3}, {0, 3, 4}, {2, 2, 2}};
  int64_t n = 0;
  for (const auto& saved : layouts) {
    auto root = fresh_dir("reshard" + std::to_string(n++));
    CheckpointData d = sample(1);
    d.model.clear();
    d.optimizer.clear();
    // Several ranks' records committed together, as a multi-rank save does.
    const std::string tmp = prepare_checkpoint(root.string(), 1);
    std::vector<nlohmann::json> records;
    int64_t rank = 0;
    for (const auto& p : pieces(saved[0], saved[1], saved[2])) {
      CheckpointData part;
      part.model = {{"w", slice_of(full, p)}};
      part.model_placement["w"] = p;
      records.push_back(write_shards(tmp, rank++, part));
    }
    const auto dir = commit_checkpoint(root.string(), tmp, d, records, 0).dir;
    CheckpointReader reader(dir);
    for (const auto& wanted : layouts)
      for (const auto& p : pieces(wanted[0], wanted[1], wanted[2])) {
        auto got = reader.read("model", {{"w", p}});
        EXPECT_TRUE(at::equal(got[0].second, slice_of(full, p)))
            << "saved " << saved[0] << "/" << saved[1] << "/" << saved[2] << " wanted " << p.describe();
      }
    EXPECT_TRUE(at::equal(reader.read_all("model")[0].second, full));
    fs::remove_all(root);
  }
}

TEST(Checkpoint, PiecesThatDoNotCoverAreRefused) {
  auto root = fresh_dir("cover");
  const auto full = at::randn({6, 10, 4});
  const std::string tmp = prepare_checkpoint(root.string(), 1);
  auto p = pieces(0, 2, 1)[0];  // only the first half is saved
  CheckpointData part;
  part.model = {{"w", slice_of(full, p)}};
  part.model_placement["w"] = p;
  const auto dir = commit_checkpoint(root.string(), tmp, sample(1), {write_shards(tmp, 0, part)}, 0).dir;
  CheckpointReader reader(dir);
  auto msg = error_of([&] { reader.read_all("model"); });
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cover"), std::string::npos) << msg;
  fs::remove_all(root);
}

// What interrupted saves and deletions leave is removed at start; complete checkpoints stay.
TEST(Checkpoint, LeftoversAreCleaned) {
  auto root = fresh_dir("clean");
  save_checkpoint(root.string(), sample(1));
  for (const char* d : {"step_00000002.tmp", "step_00000000.deleting", "step_00000003"})
    fs::create_directories(root / d), std::ofstream(root / d / "model.rank00000.safetensors") << "partial";
  std::ofstream(root / "latest.tmp.77") << "step_00000003\n";
  // Names Weft does not make are the user's: kept.
  fs::create_directories(root / "step_notes"), std::ofstream(root / "step_notes" / "todo.txt") << "mine";
  fs::create_directories(root / "step_00000004x");
  auto removed = clean_checkpoint_root(root.string());
  EXPECT_EQ(removed.size(), 4u);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(root)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"latest", "step_00000001", "step_00000004x", "step_notes"}));
  EXPECT_EQ(load_checkpoint((root / "step_00000001").string()).step, 1);
  fs::remove_all(root);
}

// Saving a step that already has a complete checkpoint replaces it whole.
TEST(Checkpoint, ResavingAStepReplacesItWhole) {
  auto root = fresh_dir("resave");
  save_checkpoint(root.string(), sample(2));
  auto again = sample(2);
  again.trainer_state["consumed_samples"] = 99;
  save_checkpoint(root.string(), again);
  EXPECT_EQ(load_checkpoint((root / "step_00000002").string()).trainer_state.at("consumed_samples"), 99);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(root)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left.size(), 2u);  // latest and the step: the old copy is gone
  fs::remove_all(root);
}

// The manifest and each shard's safetensors header are covered too: a flipped step number or a
// damaged header (which other tools read) is refused, naming the file.
TEST(Checkpoint, ManifestAndHeadersAreChecked) {
  auto root = fresh_dir("manifest");
  auto r = save_checkpoint(root.string(), sample(4));
  const auto manifest = fs::path(r.dir) / "manifest.json";
  std::string text = read_file(manifest.string());
  const auto at = text.find("\"step\": 4");
  ASSERT_NE(at, std::string::npos);
  text[at + 8] = '5';
  std::ofstream(manifest, std::ios::binary | std::ios::trunc) << text;
  auto msg = error_of([&] { CheckpointReader reader(r.dir); });
  EXPECT_NE(msg.find("manifest.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CRC32C"), std::string::npos) << msg;
  // A manifest of the previous format (no checksum) is named as such, not as damage.
  std::ofstream(manifest, std::ios::trunc) << R"({"format": "weft-checkpoint", "version": 1, "step": 4})";
  msg = error_of([&] { CheckpointReader reader(r.dir); });
  EXPECT_NE(msg.find("version 1"), std::string::npos) << msg;

  r = save_checkpoint(root.string(), sample(6));
  const auto shard = fs::path(r.dir) / "model.rank00000.safetensors";
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);  // inside the JSON header
    f.put('#');
  }
  msg = error_of([&] { load_checkpoint(r.dir); });
  EXPECT_NE(msg.find("model.rank00000.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("header"), std::string::npos) << msg;
  fs::remove_all(root);
}

TEST(Checkpoint, LatestNamingMissingDirectoryIsAnError) {
  auto root = fresh_dir("dangling");
  fs::create_directories(root);
  std::ofstream(root / "latest") << "step_00000009\n";
  auto msg = error_of([&] { find_latest_checkpoint(root.string()); });
  EXPECT_NE(msg.find("step_00000009"), std::string::npos) << msg;
  fs::remove_all(root);
}

TEST(Checkpoint, KeepRetainsNewest) {
  auto root = fresh_dir("keep");
  for (int s = 1; s <= 4; ++s) save_checkpoint(root.string(), sample(s), /*keep=*/2);
  EXPECT_FALSE(fs::exists(root / "step_00000001"));
  EXPECT_FALSE(fs::exists(root / "step_00000002"));
  EXPECT_TRUE(fs::exists(root / "step_00000003"));
  EXPECT_TRUE(fs::exists(root / "step_00000004"));
  fs::remove_all(root);
}

}  // namespace
}  // namespace weft

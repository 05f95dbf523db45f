// Checkpoint commit protocol: round trip, `latest` only names complete checkpoints, damage is
// detected and named, retention keeps the newest.
#include "tests/unit/test_util.h"
#include "runtime/checkpoint/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"

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
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  auto msg = error_of([&] { find_latest_checkpoint(root.string()); });
  EXPECT_NE(msg.find("model.rank00000.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CRC32C"), std::string::npos) << msg;
  fs::resize_file(file, 10);
  msg = error_of([&] { load_checkpoint(r.dir); });
  EXPECT_NE(msg.find("bytes"), std::string::npos) << msg;
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

// Checkpoint commit protocol: write everything into a temporary directory, fsync each file,
// write the manifest last, fsync, rename the directory into place, fsync the root, then replace
// `latest`. A reader trusts a checkpoint only if its manifest exists and every file matches it.
#include "runtime/checkpoint/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

constexpr const char* kFormat = "weft-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kManifest = "manifest.json";
constexpr const char* kStepPrefix = "step_";

std::string shard_file(const std::string& kind, int64_t rank) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s.rank%05lld.safetensors", kind.c_str(), (long long)rank);
  return buf;
}

std::string dtype_name(at::ScalarType t) { return c10::toString(t); }

// Records each tensor's global shape and the place of this rank's shard (the whole tensor here;
// sharded layouts add offsets per rank).
void describe_tensors(nlohmann::json& tensors, const NamedTensors& list, const std::string& file) {
  for (const auto& [name, t] : list) {
    auto shape = t.sizes().vec();
    tensors[name] = {{"dtype", dtype_name(t.scalar_type())},
                     {"global_shape", shape},
                     {"shards", {{{"file", file},
                                  {"offsets", std::vector<int64_t>(shape.size(), 0)},
                                  {"shape", shape}}}}};
  }
}

void write_text_file(const fs::path& path, const std::string& text, nlohmann::json& files) {
  FileWriter w(path.string());
  w.write(text.data(), text.size());
  w.close();
  files[path.filename().string()] = {{"bytes", w.bytes()}, {"crc32c", w.crc()}};
}

nlohmann::json read_manifest(const fs::path& dir) {
  const fs::path path = dir / kManifest;
  WEFT_CHECK(fs::exists(path), "checkpoint ", dir.string(), " is incomplete (no ", kManifest,
             "): it was not committed; delete it or point at another checkpoint");
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(read_file(path.string()));
  } catch (const nlohmann::json::exception& e) {
    fail(str(path.string(), ": corrupt manifest (", e.what(), "); delete this checkpoint"));
  }
  WEFT_CHECK(m.value("format", "") == kFormat && m.value("version", 0) == kVersion,
             path.string(), ": not a weft checkpoint manifest of version ", kVersion);
  return m;
}

// Checks every file the manifest lists: present, right size, right CRC32C.
void verify_files(const fs::path& dir, const nlohmann::json& manifest) {
  for (const auto& [name, info] : manifest.at("files").items()) {
    const fs::path path = dir / name;
    WEFT_CHECK(fs::exists(path), "checkpoint ", dir.string(), " is damaged: ", name,
               " is missing; delete it or resume from an older checkpoint");
    MappedFile f(path.string());
    WEFT_CHECK(f.size() == info.at("bytes").get<uint64_t>(), path.string(), " is damaged: ",
               f.size(), " bytes, manifest says ", info.at("bytes").get<uint64_t>(),
               "; delete this checkpoint or resume from an older one");
    WEFT_CHECK(crc32c(f.data(), f.size()) == info.at("crc32c").get<uint32_t>(), path.string(),
               " is damaged: CRC32C mismatch; delete this checkpoint or resume from an older one");
  }
}

NamedTensors read_shard(const fs::path& path) {
  SafetensorsReader reader(path.string());
  NamedTensors out;
  for (const auto& name : reader.names()) out.emplace_back(name, reader.get(name));
  return out;
}

std::vector<fs::path> complete_checkpoints(const fs::path& root) {
  std::vector<fs::path> out;
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root)) {
    const auto name = e.path().filename().string();
    if (e.is_directory() && name.rfind(kStepPrefix, 0) == 0 &&
        name.find('.') == std::string::npos && fs::exists(e.path() / kManifest))
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s%08lld", kStepPrefix, (long long)step);
  return buf;
}

SaveResult save_checkpoint(const std::string& root_str, const CheckpointData& data, int64_t keep) {
  const fs::path root(root_str);
  std::error_code ec;
  fs::create_directories(root, ec);
  WEFT_CHECK(!ec, "cannot create checkpoint directory ", root.string(), ": ", ec.message());
  const std::string name = checkpoint_name(data.step);
  const fs::path final_dir = root / name;
  const fs::path tmp = root / (name + ".tmp." + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);

  nlohmann::json files = nlohmann::json::object(), tensors = nlohmann::json::object();
  const int64_t rank = 0;
  auto write_shard = [&](const std::string& kind, const NamedTensors& list) {
    if (list.empty()) return;
    const std::string file = shard_file(kind, rank);
    auto r = write_safetensors((tmp / file).string(), list, {{"kind", kind}});
    files[file] = {{"bytes", r.bytes}, {"crc32c", r.crc32c}};
    describe_tensors(tensors[kind], list, file);
  };
  write_shard("model", data.model);
  write_shard("optim", data.optimizer);
  write_text_file(tmp / "trainer_state.json", data.trainer_state.dump(2), files);
  write_text_file(tmp / "config.yaml", data.config_yaml, files);
  for (const auto& [name, text] : data.extra_files) write_text_file(tmp / name, text, files);

  nlohmann::json manifest = {
      {"format", kFormat},
      {"version", kVersion},
      {"step", data.step},
      {"layout", {{"tp", data.layout.tp}, {"pp", data.layout.pp}, {"dp", data.layout.dp}}},
      {"files", files},
      {"tensors", tensors}};
  write_file_atomic((tmp / kManifest).string(), manifest.dump(2));
  fsync_path(tmp.string());

  // Commit: a checkpoint of the same step (a re-run) is replaced only after the new one is whole.
  if (fs::exists(final_dir)) fs::remove_all(final_dir);
  fs::rename(tmp, final_dir, ec);
  WEFT_CHECK(!ec, "cannot commit checkpoint ", final_dir.string(), ": ", ec.message());
  fsync_path(root.string());
  write_file_atomic((root / "latest").string(), name + "\n");

  if (keep > 0) {
    auto all = complete_checkpoints(root);
    for (size_t i = 0; i + keep < all.size(); ++i)
      if (all[i] != final_dir) fs::remove_all(all[i], ec);
  }
  uint64_t bytes = 0;
  for (const auto& [f, info] : files.items()) bytes += info.at("bytes").get<uint64_t>();
  return {final_dir.string(), bytes};
}

std::optional<std::string> find_latest_checkpoint(const std::string& root_str) {
  const fs::path root(root_str);
  const fs::path latest = root / "latest";
  if (!fs::exists(latest)) {
    auto all = complete_checkpoints(root);
    WEFT_CHECK(all.empty(), "checkpoint directory ", root.string(), " has checkpoints but no ",
               "'latest' file; write the newest step directory's name into ", latest.string());
    return std::nullopt;
  }
  std::string name = read_file(latest.string());
  name.erase(name.find_last_not_of(" \n\r\t") + 1);
  WEFT_CHECK(!name.empty() && name.find('/') == std::string::npos, latest.string(),
             " does not name a checkpoint directory");
  const fs::path dir = root / name;
  WEFT_CHECK(fs::is_directory(dir), latest.string(), " names ", name,
             " but that directory does not exist; fix 'latest' or remove it");
  verify_files(dir, read_manifest(dir));
  return dir.string();
}

std::string resolve_checkpoint_dir(const std::string& dir) {
  WEFT_CHECK(fs::is_directory(dir), "checkpoint directory '", dir, "' does not exist");
  if (fs::exists(fs::path(dir) / kManifest)) return dir;
  if (fs::exists(fs::path(dir) / "latest")) return *find_latest_checkpoint(dir);
  // A run directory: its checkpoints live one level down.
  if (fs::exists(fs::path(dir) / "checkpoints" / "latest"))
    return *find_latest_checkpoint((fs::path(dir) / "checkpoints").string());
  fail(str("'", dir, "' is not a checkpoint: it has neither ", kManifest,
           " (an incomplete checkpoint?) nor a 'latest' file"));
}

CheckpointData load_checkpoint(const std::string& step_dir, bool with_optimizer) {
  const fs::path dir(step_dir);
  const auto manifest = read_manifest(dir);
  verify_files(dir, manifest);
  CheckpointData data;
  data.step = manifest.at("step").get<int64_t>();
  const auto& layout = manifest.at("layout");
  data.layout = {layout.at("tp").get<int64_t>(), layout.at("pp").get<int64_t>(),
                 layout.at("dp").get<int64_t>()};
  const auto& files = manifest.at("files");
  for (const auto& [file, info] : files.items()) {
    if (file.rfind("model.", 0) == 0) {
      auto part = read_shard(dir / file);
      data.model.insert(data.model.end(), part.begin(), part.end());
    } else if (with_optimizer && file.rfind("optim.", 0) == 0) {
      auto part = read_shard(dir / file);
      data.optimizer.insert(data.optimizer.end(), part.begin(), part.end());
    }
  }
  data.trainer_state = nlohmann::json::parse(read_file((dir / "trainer_state.json").string()));
  data.config_yaml = read_file((dir / "config.yaml").string());
  for (const auto& [file, info] : files.items())
    if (file.find(".safetensors") == std::string::npos && file != "trainer_state.json" && file != "config.yaml")
      data.extra_files[file] = read_file((dir / file).string());
  return data;
}

}  // namespace weft

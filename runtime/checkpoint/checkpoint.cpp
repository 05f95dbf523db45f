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
#include "parallel/comm.h"

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

ShardPlacement whole(const at::Tensor& t) {
  ShardPlacement p;
  p.global_shape = p.shape = t.sizes().vec();
  p.offsets.assign(p.shape.size(), 0);
  return p;
}

nlohmann::json placement_json(const ShardPlacement& p, const std::string& file) {
  nlohmann::json j = {{"file", file}, {"offsets", p.offsets}, {"shape", p.shape}};
  if (p.flat_begin >= 0) j["flat_range"] = {p.flat_begin, p.flat_end};
  return j;
}

ShardPlacement placement_from_json(const nlohmann::json& tensor, const nlohmann::json& shard) {
  ShardPlacement p;
  p.global_shape = tensor.at("global_shape").get<std::vector<int64_t>>();
  p.offsets = shard.at("offsets").get<std::vector<int64_t>>();
  p.shape = shard.at("shape").get<std::vector<int64_t>>();
  if (shard.contains("flat_range")) {
    p.flat_begin = shard.at("flat_range").at(0).get<int64_t>();
    p.flat_end = shard.at("flat_range").at(1).get<int64_t>();
  }
  return p;
}

// Records each tensor's global shape and where this rank's shard of it lies.
void describe_tensors(nlohmann::json& tensors, const NamedTensors& list, const std::string& file,
                      const std::map<std::string, ShardPlacement>& placement) {
  for (const auto& [name, t] : list) {
    auto it = placement.find(name);
    const ShardPlacement p = it == placement.end() ? whole(t) : it->second;
    auto& entry = tensors[name];
    entry["dtype"] = dtype_name(t.scalar_type());
    entry["global_shape"] = p.global_shape;
    entry["shards"].push_back(placement_json(p, file));
  }
}

// Merges another rank's tensor records into the manifest's.
void merge_tensors(nlohmann::json& into, const nlohmann::json& from) {
  for (const auto& [kind, list] : from.items())
    for (const auto& [name, entry] : list.items()) {
      auto& dst = into[kind][name];
      if (dst.is_null()) {
        dst = entry;
      } else {
        for (const auto& shard : entry.at("shards")) dst["shards"].push_back(shard);
      }
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

// The box [offsets, offsets + shape) of `full`, as a view.
at::Tensor box_of(const at::Tensor& full, const std::vector<int64_t>& offsets, const std::vector<int64_t>& shape) {
  at::Tensor v = full;
  for (size_t d = 0; d < shape.size(); ++d) v = v.narrow(int64_t(d), offsets[d], shape[d]);
  return v;
}

// Whole tensors of one kind, put together from every rank's pieces (boxes, or flat slices of
// boxes for ZeRO-1 state).
NamedTensors assemble(const fs::path& dir, const nlohmann::json& manifest, const std::string& kind) {
  NamedTensors out;
  if (!manifest.at("tensors").contains(kind)) return out;
  std::map<std::string, std::unique_ptr<SafetensorsReader>> readers;
  auto reader = [&](const std::string& file) -> SafetensorsReader& {
    auto& r = readers[file];
    if (!r) r = std::make_unique<SafetensorsReader>((dir / file).string());
    return *r;
  };
  for (const auto& [name, entry] : manifest.at("tensors").at(kind).items()) {
    const auto global = entry.at("global_shape").get<std::vector<int64_t>>();
    at::Tensor full;
    std::map<std::vector<int64_t>, at::Tensor> flat_boxes;  // by offsets
    for (const auto& shard : entry.at("shards")) {
      const auto p = placement_from_json(entry, shard);
      auto piece = reader(shard.at("file").get<std::string>()).get(name);
      if (!full.defined()) full = at::zeros(global, piece.options());
      if (p.flat_begin < 0) {
        box_of(full, p.offsets, p.shape).copy_(piece.view(p.shape));
        continue;
      }
      auto& box = flat_boxes[p.offsets];
      if (!box.defined()) box = at::zeros(p.shape, piece.options());
      box.view({-1}).narrow(0, p.flat_begin, p.flat_end - p.flat_begin).copy_(piece.reshape({-1}));
      box_of(full, p.offsets, p.shape).copy_(box);
    }
    out.emplace_back(name, full);
  }
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

std::string ShardPlacement::describe() const {
  auto list = [](const std::vector<int64_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s + "]";
  };
  std::string s = "offsets " + list(offsets) + " shape " + list(shape) + " of " + list(global_shape);
  if (flat_begin >= 0) s += str(" elements [", flat_begin, ", ", flat_end, ")");
  return s;
}

SaveResult save_checkpoint(const std::string& root_str, const CheckpointData& data, int64_t keep,
                           const Group* world) {
  const bool multi = world && world->size() > 1;
  const int64_t rank = multi ? world->global_rank : 0;
  const bool leader = !multi || world->rank == 0;
  const fs::path root(root_str);
  const std::string name = checkpoint_name(data.step);
  const fs::path final_dir = root / name;
  // Every rank writes into the same temporary directory, so its name must not depend on the
  // process; only the leader creates (and clears) it.
  const fs::path tmp = root / (name + ".tmp");
  std::error_code ec;
  if (leader) {
    fs::create_directories(root, ec);
    WEFT_CHECK(!ec, "cannot create checkpoint directory ", root.string(), ": ", ec.message());
    fs::remove_all(tmp);
    fs::create_directories(tmp, ec);
    WEFT_CHECK(!ec, "cannot create ", tmp.string(), ": ", ec.message());
  }
  if (multi) barrier(*world);

  nlohmann::json files = nlohmann::json::object(), tensors = nlohmann::json::object();
  auto write_shard = [&](const std::string& kind, const NamedTensors& list,
                         const std::map<std::string, ShardPlacement>& placement) {
    if (list.empty()) return;
    const std::string file = shard_file(kind, rank);
    auto r = write_safetensors((tmp / file).string(), list, {{"kind", kind}});
    files[file] = {{"bytes", r.bytes}, {"crc32c", r.crc32c}};
    describe_tensors(tensors[kind], list, file, placement);
  };
  write_shard("model", data.model, data.model_placement);
  write_shard("optim", data.optimizer, data.optimizer_placement);
  if (multi) {
    // Hand this rank's records to the leader through the shared directory.
    const nlohmann::json fragment = {{"files", files}, {"tensors", tensors}};
    if (!leader) write_file_atomic((tmp / str("fragment.rank", rank, ".json")).string(), fragment.dump());
    barrier(*world);
    if (!leader) {
      barrier(*world);  // the leader commits
      uint64_t bytes = 0;
      for (const auto& [f, info] : files.items()) bytes += info.at("bytes").get<uint64_t>();
      return {final_dir.string(), bytes};
    }
    for (int64_t r : world->ranks) {
      if (r == rank) continue;
      const fs::path frag = tmp / str("fragment.rank", r, ".json");
      const auto other = nlohmann::json::parse(read_file(frag.string()));
      for (const auto& [f, info] : other.at("files").items()) files[f] = info;
      merge_tensors(tensors, other.at("tensors"));
      fs::remove(frag);
    }
  }
  try {
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
  } catch (...) {
    if (multi) barrier(*world);  // release the others; they see no commit
    throw;
  }
  if (multi) barrier(*world);
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
  data.model = assemble(dir, manifest, "model");
  if (with_optimizer) data.optimizer = assemble(dir, manifest, "optim");
  data.trainer_state = nlohmann::json::parse(read_file((dir / "trainer_state.json").string()));
  data.config_yaml = read_file((dir / "config.yaml").string());
  for (const auto& [file, info] : files.items())
    if (file.find(".safetensors") == std::string::npos && file != "trainer_state.json" && file != "config.yaml")
      data.extra_files[file] = read_file((dir / file).string());
  return data;
}

CheckpointData load_checkpoint_metadata(const std::string& step_dir) {
  const fs::path dir(step_dir);
  const auto manifest = read_manifest(dir);
  CheckpointData data;
  data.step = manifest.at("step").get<int64_t>();
  const auto& layout = manifest.at("layout");
  data.layout = {layout.at("tp").get<int64_t>(), layout.at("pp").get<int64_t>(),
                 layout.at("dp").get<int64_t>()};
  data.trainer_state = nlohmann::json::parse(read_file((dir / "trainer_state.json").string()));
  data.config_yaml = read_file((dir / "config.yaml").string());
  return data;
}

NamedTensors load_shards(const std::string& step_dir, const std::string& kind,
                         const std::vector<std::pair<std::string, ShardPlacement>>& wanted) {
  const fs::path dir(step_dir);
  const auto manifest = read_manifest(dir);
  const auto& layout = manifest.at("layout");
  const std::string saved = str("tp(", layout.at("tp"), ") × pp(", layout.at("pp"), ") × dp(", layout.at("dp"), ")");
  const auto& tensors = manifest.at("tensors");
  std::map<std::string, std::unique_ptr<SafetensorsReader>> readers;
  NamedTensors out;
  for (const auto& [name, want] : wanted) {
    WEFT_CHECK(tensors.contains(kind) && tensors.at(kind).contains(name), dir.string(), ": no ", kind,
               " tensor '", name, "' in the checkpoint (saved as ", saved,
               "); is it from another model config?");
    const auto& entry = tensors.at(kind).at(name);
    auto reader = [&](const nlohmann::json& shard) -> SafetensorsReader& {
      const auto file = shard.at("file").get<std::string>();
      auto& r = readers[file];
      if (!r) {
        const fs::path path = dir / file;
        const auto& info = manifest.at("files").at(file);
        MappedFile f(path.string());
        WEFT_CHECK(f.size() == info.at("bytes").get<uint64_t>() &&
                       crc32c(f.data(), f.size()) == info.at("crc32c").get<uint32_t>(),
                   path.string(), " is damaged (size or CRC32C differs from the manifest); delete this "
                   "checkpoint or resume from an older one");
        r = std::make_unique<SafetensorsReader>(path.string());
      }
      return *r;
    };
    // The wanted elements: box B = [offsets, offsets + shape), or its flat range [begin, end).
    int64_t box_numel = 1;
    for (int64_t d : want.shape) box_numel *= d;
    const int64_t begin = want.flat_begin < 0 ? 0 : want.flat_begin;
    const int64_t end = want.flat_begin < 0 ? box_numel : want.flat_end;
    at::Tensor result;  // flat (end - begin)
    int64_t covered = 0;
    for (const auto& shard : entry.at("shards")) {
      const auto p = placement_from_json(entry, shard);
      if (p.global_shape != want.global_shape || p.shape.size() != want.shape.size()) continue;
      if (p.flat_begin < 0) {
        // A whole saved box containing B (same layout, or whole tensors sliced into TP pieces).
        bool contains = true;
        std::vector<int64_t> from;
        for (size_t d = 0; contains && d < p.shape.size(); ++d) {
          contains = p.offsets[d] <= want.offsets[d] && want.offsets[d] + want.shape[d] <= p.offsets[d] + p.shape[d];
          from.push_back(want.offsets[d] - p.offsets[d]);
        }
        if (!contains) continue;
        auto box = box_of(reader(shard).get(name).view(p.shape), from, want.shape).reshape({-1});
        result = box.narrow(0, begin, end - begin).clone();
        covered = end - begin;
        break;
      }
      // Flat slices of the same box (ZeRO-1 state, possibly cut at other places by another DP
      // size or bucket layout): copy the overlap.
      if (p.offsets != want.offsets || p.shape != want.shape) continue;
      const int64_t lo = std::max(begin, p.flat_begin), hi = std::min(end, p.flat_end);
      if (lo >= hi) continue;
      auto piece = reader(shard).get(name).reshape({-1});
      if (!result.defined()) result = at::empty({end - begin}, piece.options());
      result.narrow(0, lo - begin, hi - lo).copy_(piece.narrow(0, lo - p.flat_begin, hi - lo));
      covered += hi - lo;  // saved flat slices of one box never overlap
    }
    WEFT_CHECK(result.defined() && covered == end - begin, dir.string(), ": no saved pieces of ", kind,
               " tensor '", name, "' cover ", want.describe(), "; the checkpoint was saved as ", saved,
               " and loads into layouts with the same tensor-parallel pieces until resharding lands");
    out.emplace_back(name, want.flat_begin < 0 ? result.view(want.shape) : result);
  }
  return out;
}

}  // namespace weft

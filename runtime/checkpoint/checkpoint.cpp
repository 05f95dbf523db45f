// Checkpoint commit protocol: write everything into <step>.tmp, fsync each file, write the
// manifest last, fsync, rename the directory into place, fsync the root, then replace `latest`.
// Deleting renames to <step>.deleting first, so a crash never leaves a manifest-less step
// directory that looks like a checkpoint. A reader trusts a checkpoint only if its manifest exists
// and the blocks it reads match their CRC32C.
#include "runtime/checkpoint/checkpoint.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <set>

#include "weft/error.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "runtime/checkpoint/fault.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

constexpr const char* kFormat = "weft-checkpoint";
constexpr int kVersion = 2;
constexpr const char* kManifest = "manifest.json";
constexpr const char* kStepPrefix = "step_";
constexpr uint64_t kBlockBytes = 1 << 20;  // CRC32C granularity of tensor data
constexpr const char* kDamagedHint =
    "use an older checkpoint (a training run resumes from the newest readable one with checkpoint.fallback=true) "
    "or delete ";

std::string shard_file(const std::string& kind, int64_t rank) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s.rank%05lld.safetensors", kind.c_str(), (long long)rank);
  return buf;
}

std::string crc_hex(const std::vector<uint32_t>& crcs) {
  std::string s;
  char buf[9];
  for (uint32_t c : crcs) std::snprintf(buf, sizeof(buf), "%08x", c), s += buf;
  return s;
}

ShardPlacement whole(const at::Tensor& t) {
  ShardPlacement p;
  p.global_shape = p.shape = t.sizes().vec();
  p.offsets.assign(p.shape.size(), 0);
  return p;
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
  bool ok = p.offsets.size() == p.global_shape.size() && p.shape.size() == p.global_shape.size();
  int64_t n = 1;
  for (size_t d = 0; ok && d < p.shape.size(); ++d)
    ok = p.offsets[d] >= 0 && p.shape[d] >= 0 && p.offsets[d] + p.shape[d] <= p.global_shape[d], n *= p.shape[d];
  ok = ok && (p.flat_begin < 0 || (p.flat_begin <= p.flat_end && p.flat_end <= n));
  WEFT_CHECK(ok, "a manifest piece (", p.describe(), ") does not fit its tensor; the manifest is damaged");
  return p;
}

void record_file(const fs::path& path, uint64_t bytes, uint32_t crc, nlohmann::json& files) {
  files[path.filename().string()] = {{"bytes", bytes}, {"crc32c", crc}};
}

void write_text_file(const fs::path& path, const std::string& text, nlohmann::json& files) {
  FileWriter w(path.string());
  w.write(text.data(), text.size());
  w.close();
  record_file(path, w.bytes(), w.crc(), files);
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

// "step_" and eight digits: the names Weft gives step directories.
bool is_step_name(const std::string& name) {
  return name.size() == 13 && name.rfind(kStepPrefix, 0) == 0 &&
         std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// What Weft leaves while writing (<step>.tmp) or deleting (<step>.deleting) a checkpoint.
bool is_leftover_name(const std::string& name) {
  for (const char* suffix : {".tmp", ".deleting"}) {
    const size_t n = std::strlen(suffix);
    if (name.size() > n && name.compare(name.size() - n, n, suffix) == 0 && is_step_name(name.substr(0, name.size() - n)))
      return true;
  }
  return false;
}

// `text` with bytes that are not printable ASCII shown as '?', for messages quoting damaged data.
std::string printable(std::string text) {
  for (char& c : text)
    if (c < 32 || c > 126) c = '?';
  return text;
}

// Renames `dir` to <dir>.deleting (durably), then removes it: a crash leaves a name that is
// never mistaken for a checkpoint and is cleaned at the next start.
void delete_checkpoint_dir(const fs::path& dir, bool fault_point) {
  const fs::path doomed = dir.string() + ".deleting";
  std::error_code ec;
  fs::remove_all(doomed, ec);
  fs::rename(dir, doomed, ec);
  WEFT_CHECK(!ec, "cannot delete old checkpoint ", dir.string(), " (rename to ", doomed.string(), "): ", ec.message());
  fsync_path(dir.parent_path().string());
  if (fault_point) {
    // Half-removed, as a crash mid-deletion would leave it.
    fs::remove(doomed / kManifest, ec);
    fault::point("retention");
  }
  fs::remove_all(doomed, ec);
  WEFT_CHECK(!ec, "cannot remove ", doomed.string(), ": ", ec.message());
}

nlohmann::json read_manifest(const fs::path& dir) {
  const fs::path path = dir / kManifest;
  WEFT_CHECK(fs::exists(path), "checkpoint ", dir.string(), " is incomplete (no ", kManifest,
             "): it was not committed; delete it or point at another checkpoint");
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(read_file(path.string()));
  } catch (const nlohmann::json::exception& e) {
    fail(str(path.string(), ": corrupt manifest (", printable(e.what()), "); delete this checkpoint"));
  }
  WEFT_CHECK(m.is_object() && m.value("format", "") == kFormat, path.string(), " is not a weft checkpoint manifest");
  // Version 1 (an older Weft) had no manifest checksum; anything else without one is damaged.
  const bool checked = m.contains("manifest_crc32c");
  WEFT_CHECK(checked || m.value("version", 0) == kVersion, path.string(), ": checkpoint format version ",
             m.value("version", 0), " cannot be read by this Weft (it reads version ", kVersion,
             "); load it with the Weft that wrote it and export it with `weft convert --to hf:DIR`");
  nlohmann::json body = m;
  body.erase("manifest_crc32c");
  const std::string text = body.dump(1);
  WEFT_CHECK(checked && m["manifest_crc32c"].is_number_unsigned() &&
                 m["manifest_crc32c"].get<uint32_t>() == crc32c(text.data(), text.size()),
             path.string(), " is damaged (its CRC32C does not match its contents); delete this checkpoint or use an "
             "older one");
  WEFT_CHECK(m.value("version", 0) == kVersion, path.string(), ": checkpoint format version ", m.value("version", 0),
             " cannot be read by this Weft (it reads version ", kVersion, ")");
  return m;
}

// ---- Boxes ------------------------------------------------------------------------------------

// A box of a tensor, with where its elements start in a flat row-major run of elements.
struct Box {
  std::vector<int64_t> offsets, shape;  // in the global tensor
  int64_t pos = 0;                      // index of its first element in the run
};

int64_t product(const std::vector<int64_t>& v, size_t from = 0) {
  int64_t n = 1;
  for (size_t i = from; i < v.size(); ++i) n *= v[i];
  return n;
}

// Splits the row-major elements [b, e) of the sub-array shape[d:] into boxes in order (at most
// 2 * (rank - d) - 1 of them): a partial leading row, whole rows, a partial trailing row.
void split_range(const std::vector<int64_t>& shape, size_t d, int64_t b, int64_t e, std::vector<Box>& out) {
  if (b >= e) return;
  const size_t nd = shape.size();
  if (d + 1 >= nd) {
    out.push_back({{b}, {e - b}, 0});
    return;
  }
  const int64_t row = product(shape, d + 1);
  auto nested = [&](int64_t r, int64_t lo, int64_t hi) {
    std::vector<Box> sub;
    split_range(shape, d + 1, lo, hi, sub);
    for (auto& s : sub) {
      s.offsets.insert(s.offsets.begin(), r);
      s.shape.insert(s.shape.begin(), 1);
      out.push_back(std::move(s));
    }
  };
  if (b / row == (e - 1) / row && (b % row != 0 || e % row != 0)) return nested(b / row, b % row, e - b / row * row);
  if (b % row != 0) nested(b / row, b % row, row), b = (b / row + 1) * row;
  if (e / row > b / row) {
    Box full{{b / row}, {e / row - b / row}, 0};
    for (size_t k = d + 1; k < nd; ++k) full.offsets.push_back(0), full.shape.push_back(shape[k]);
    out.push_back(std::move(full));
  }
  if (e % row != 0) nested(e / row, 0, e % row);
}

// The boxes, in global coordinates, that a placement's saved elements form, with their position
// in the piece's flat run.
std::vector<Box> boxes_of(const ShardPlacement& p) {
  std::vector<Box> out;
  if (p.shape.empty()) return {Box{{}, {}, 0}};  // a scalar
  const int64_t b = p.flat_begin < 0 ? 0 : p.flat_begin, e = p.flat_begin < 0 ? product(p.shape) : p.flat_end;
  split_range(p.shape, 0, b, e, out);
  int64_t pos = 0;
  for (auto& box : out) {
    for (size_t d = 0; d < box.offsets.size(); ++d) box.offsets[d] += p.offsets[d];
    box.pos = pos;
    pos += product(box.shape);
  }
  return out;
}

// The box both cover ([lo, lo + len) per dimension); false when they do not meet.
bool intersect(const Box& a, const Box& b, std::vector<int64_t>& lo, std::vector<int64_t>& len) {
  lo.resize(a.offsets.size()), len.resize(a.offsets.size());
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    lo[d] = std::max(a.offsets[d], b.offsets[d]);
    len[d] = std::min(a.offsets[d] + a.shape[d], b.offsets[d] + b.shape[d]) - lo[d];
    if (len[d] <= 0) return false;
  }
  return true;
}

std::vector<int64_t> row_major_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) s[d - 1] = s[d] * shape[d];
  return s;
}

}  // namespace

// ---- Small pieces -------------------------------------------------------------------------------

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s%08lld", kStepPrefix, (long long)step);
  return buf;
}

std::string CheckpointLayout::describe() const {
  std::string s = str("tp(", tp, ") × pp(", pp, ") × dp(", dp, ")");
  if (vpp > 1) s += str(" × vpp(", vpp, ")");
  if (zero > 0) s += str(", ZeRO-", zero);
  return s;
}

int64_t ShardPlacement::numel() const { return flat_begin >= 0 ? flat_end - flat_begin : product(shape); }

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

// ---- Writing ------------------------------------------------------------------------------------

std::string prepare_checkpoint(const std::string& root, int64_t step) {
  const fs::path tmp = fs::path(root) / (checkpoint_name(step) + ".tmp");
  std::error_code ec;
  fs::create_directories(root, ec);
  WEFT_CHECK(!ec, "cannot create checkpoint directory ", root, ": ", ec.message());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  WEFT_CHECK(!ec, "cannot create ", tmp.string(), ": ", ec.message());
  return tmp.string();
}

nlohmann::json write_shards(const std::string& tmp_dir, int64_t rank, const CheckpointData& data) {
  nlohmann::json rec = {{"files", nlohmann::json::object()}, {"tensors", nlohmann::json::object()}};
  bool first = true;
  auto write = [&](const std::string& kind, const NamedTensors& list,
                   const std::map<std::string, ShardPlacement>& placement) {
    if (list.empty()) return;
    const std::string file = shard_file(kind, rank);
    // The fault point sits inside this rank's first file: half of its tensors written.
    const size_t half = first ? list.size() / 2 : list.size();
    const auto r = write_safetensors((fs::path(tmp_dir) / file).string(), list, {{"kind", kind}}, kBlockBytes,
                                     [half](size_t i) {
                                       if (i == half) fault::point("write");
                                     });
    first = false;
    record_file(file, r.bytes, r.crc32c, rec["files"]);
    rec["files"][file]["header"] = {{"bytes", r.header_bytes}, {"crc32c", r.header_crc32c}};
    for (size_t i = 0; i < list.size(); ++i) {
      const auto& [name, t] = list[i];
      auto it = placement.find(name);
      const ShardPlacement p = it == placement.end() ? whole(t) : it->second;
      nlohmann::json shard = {{"file", file},
                              {"offsets", p.offsets},
                              {"shape", p.shape},
                              {"data", {r.tensors[i].begin, r.tensors[i].end}},
                              {"crc32c", crc_hex(r.tensors[i].block_crc32c)}};
      if (p.flat_begin >= 0) shard["flat_range"] = {p.flat_begin, p.flat_end};
      auto& entry = rec["tensors"][kind][name];
      entry["dtype"] = safetensors_dtype_name(t.scalar_type());
      entry["global_shape"] = p.global_shape;
      entry["shards"].push_back(std::move(shard));
    }
  };
  write("model", data.model, data.model_placement);
  write("optim", data.optimizer, data.optimizer_placement);
  if (first) fault::point("write");
  return rec;
}

SaveResult commit_checkpoint(const std::string& root_str, const std::string& tmp_str, const CheckpointData& data,
                             const std::vector<nlohmann::json>& rank_records, int64_t keep) {
  const fs::path root(root_str), tmp(tmp_str);
  const std::string name = checkpoint_name(data.step);
  const fs::path final_dir = root / name;
  nlohmann::json files = nlohmann::json::object(), tensors = nlohmann::json::object();
  for (const auto& r : rank_records) {
    for (const auto& [f, info] : r.at("files").items()) files[f] = info;
    merge_tensors(tensors, r.at("tensors"));
  }
  write_text_file(tmp / "trainer_state.json", data.trainer_state.dump(2), files);
  write_text_file(tmp / "config.yaml", data.config_yaml, files);
  for (const auto& [file, text] : data.extra_files) write_text_file(tmp / file, text, files);
  const auto& l = data.layout;
  nlohmann::json manifest = {
      {"format", kFormat},
      {"version", kVersion},
      {"step", data.step},
      {"layout", {{"tp", l.tp}, {"pp", l.pp}, {"dp", l.dp}, {"vpp", l.vpp}, {"zero", l.zero}}},
      {"block_bytes", kBlockBytes},
      {"files", files},
      {"tensors", tensors}};
  // The manifest checks itself: a CRC32C of its own text without this field.
  const std::string body = manifest.dump(1);
  manifest["manifest_crc32c"] = crc32c(body.data(), body.size());
  const std::string manifest_text = manifest.dump(1);
  write_file_atomic((tmp / kManifest).string(), manifest_text);
  fsync_path(tmp.string());
  fault::point("manifest");

  // Commit. A complete checkpoint of the same step (a re-run) is swapped out atomically, so one
  // whole checkpoint of this step exists at every moment.
  std::error_code ec;
  if (fs::exists(final_dir)) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
      // No RENAME_EXCHANGE on this filesystem: two renames; clean_checkpoint_root repairs a crash
      // between them.
      WEFT_CHECK(errno == EINVAL || errno == ENOSYS, "cannot commit checkpoint ", final_dir.string(), ": ",
                 std::strerror(errno));
      const fs::path old = final_dir.string() + ".deleting";
      fs::remove_all(old, ec);
      fs::rename(final_dir, old, ec);
      if (!ec) fs::rename(tmp, final_dir, ec);
      WEFT_CHECK(!ec, "cannot commit checkpoint ", final_dir.string(), ": ", ec.message());
      fs::rename(old, tmp, ec);
    }
    fsync_path(root.string());
    fs::remove_all(tmp, ec);  // now the old one
  } else {
    fs::rename(tmp, final_dir, ec);
    WEFT_CHECK(!ec, "cannot commit checkpoint ", final_dir.string(), ": ", ec.message());
    fsync_path(root.string());
  }
  fault::point("rename");
  write_file_atomic((root / "latest").string(), name + "\n");
  fault::point("latest");

  if (keep > 0) {
    const auto all = complete_checkpoints(root.string());
    bool first = true;
    for (size_t i = 0; i + keep < all.size(); ++i)
      if (all[i] != final_dir.string()) delete_checkpoint_dir(all[i], first), first = false;
  }
  uint64_t total = manifest_text.size();
  for (const auto& [f, info] : files.items()) total += info.at("bytes").get<uint64_t>();
  return {final_dir.string(), total};
}

void abandon_checkpoint(const std::string& tmp_dir) noexcept {
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  if (ec) LOG(WARNING) << "could not remove the failed checkpoint " << tmp_dir << ": " << ec.message();
}

SaveResult save_checkpoint(const std::string& root, const CheckpointData& data, int64_t keep) {
  const std::string tmp = prepare_checkpoint(root, data.step);
  try {
    return commit_checkpoint(root, tmp, data, {write_shards(tmp, 0, data)}, keep);
  } catch (...) {
    abandon_checkpoint(tmp);
    throw;
  }
}

std::vector<std::string> clean_checkpoint_root(const std::string& root_str) {
  const fs::path root(root_str);
  std::vector<std::string> removed;
  if (!fs::is_directory(root)) return removed;
  // A re-save interrupted between its two renames (on a filesystem without RENAME_EXCHANGE this
  // cannot happen; kept for directories copied from elsewhere): `latest` names a missing step
  // whose complete copy is <step>.deleting — put it back.
  std::string latest;
  if (fs::is_regular_file(root / "latest")) latest = read_file((root / "latest").string()), latest.erase(latest.find_last_not_of(" \n\r\t") + 1);
  if (!is_step_name(latest)) latest.clear();  // damage, reported when resuming
  std::error_code ec;
  if (!latest.empty() && !fs::exists(root / latest) && fs::exists(root / (latest + ".deleting") / kManifest))
    fs::rename(root / (latest + ".deleting"), root / latest, ec);
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(root)) {
    const auto name = e.path().filename().string();
    // Only names Weft makes: <step>.tmp, <step>.deleting, and a step directory without a manifest
    // (what an older Weft's interrupted deletion left) — but never the step `latest` names: that
    // is damage, reported when resuming (or passed over with checkpoint.fallback).
    const bool leftover = e.is_directory() && (is_leftover_name(name) || (is_step_name(name) && name != latest &&
                                                                          !fs::exists(e.path() / kManifest)));
    if (leftover || name.rfind("latest.tmp.", 0) == 0) doomed.push_back(e.path());
  }
  for (const auto& p : doomed) {
    fs::remove_all(p, ec);
    WEFT_CHECK(!ec, "cannot remove the leftover ", p.string(), " of an interrupted checkpoint: ", ec.message(),
               "; remove it by hand");
    removed.push_back(p.string());
  }
  return removed;
}

// ---- Finding ----------------------------------------------------------------------------------

std::vector<std::string> complete_checkpoints(const std::string& root_str) {
  std::vector<std::string> out;
  const fs::path root(root_str);
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root)) {
    const auto name = e.path().filename().string();
    if (e.is_directory() && is_step_name(name) && fs::exists(e.path() / kManifest)) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> find_latest_checkpoint(const std::string& root_str) {
  const fs::path root(root_str);
  const fs::path latest = root / "latest";
  WEFT_CHECK(!fs::exists(latest) || fs::is_regular_file(latest), latest.string(),
             " is not a file; remove it (it should hold the newest complete step's name)");
  if (!fs::exists(latest)) {
    WEFT_CHECK(complete_checkpoints(root_str).empty(), "checkpoint directory ", root.string(),
               " has checkpoints but no 'latest' file; write the newest step directory's name into ", latest.string());
    return std::nullopt;
  }
  std::string name = read_file(latest.string());
  name.erase(name.find_last_not_of(" \n\r\t") + 1);
  WEFT_CHECK(is_step_name(name), latest.string(), " does not name a checkpoint directory (it holds '",
             printable(name.substr(0, 40)), "', not step_NNNNNNNN); write the newest complete step's name into it");
  const fs::path dir = root / name;
  WEFT_CHECK(fs::is_directory(dir), latest.string(), " names ", name,
             " but that directory does not exist; fix 'latest' or remove it");
  WEFT_CHECK(fs::exists(dir / kManifest), "checkpoint ", dir.string(), " (named by ", latest.string(),
             ") has no ", kManifest, "; it is damaged: delete it and fix 'latest'");
  return dir.string();
}

std::string resolve_checkpoint_dir(const std::string& dir) {
  WEFT_CHECK(fs::exists(dir), "checkpoint directory '", dir, "' does not exist");
  WEFT_CHECK(fs::is_directory(dir), "'", dir, "' is a file, not a checkpoint directory; give a step directory, a ",
             "checkpoints directory (with 'latest') or a run directory");
  if (fs::exists(fs::path(dir) / kManifest)) return dir;
  if (fs::exists(fs::path(dir) / "latest")) return *find_latest_checkpoint(dir);
  // A run directory: its checkpoints live one level down.
  if (fs::exists(fs::path(dir) / "checkpoints" / "latest"))
    return *find_latest_checkpoint((fs::path(dir) / "checkpoints").string());
  fail(str("'", dir, "' is not a checkpoint: it has neither ", kManifest,
           " (an incomplete checkpoint?) nor a 'latest' file"));
}

// ---- Reading ------------------------------------------------------------------------------------

struct CheckpointReader::Impl {
  nlohmann::json manifest;
  uint64_t block_bytes = kBlockBytes;
  std::map<std::string, std::unique_ptr<MappedFile>> maps;   // by file name, opened on first use
  std::set<std::pair<const nlohmann::json*, uint64_t>> verified;  // (shard record, block index)

  const MappedFile& map(const fs::path& dir, const std::string& file) {
    auto& m = maps[file];
    if (m) return *m;
    m = std::make_unique<MappedFile>((dir / file).string());
    // The safetensors header is not read here, but other tools read it: it must be intact too.
    const auto& h = manifest.at("files").at(file).at("header");
    const uint64_t n = h.at("bytes").get<uint64_t>();
    WEFT_CHECK(n <= m->size() && crc32c(m->data(), n) == h.at("crc32c").get<uint32_t>(), m->path(),
               " is damaged (its safetensors header fails its CRC32C); ", kDamagedHint, dir.string());
    return *m;
  }

  // The bytes [from, to) of a saved piece (counted from its first data byte), each 1 MiB block
  // verified once against the manifest; returns the piece's first data byte.
  const uint8_t* piece_bytes(const fs::path& dir, const nlohmann::json& shard, const std::string& name, uint64_t from,
                             uint64_t to) {
    const uint64_t begin = shard.at("data").at(0).get<uint64_t>(), end = shard.at("data").at(1).get<uint64_t>();
    const std::string file = shard.at("file").get<std::string>();
    WEFT_CHECK(begin + to <= end, dir.string(), ": the manifest entry of tensor '", name, "' in ", file,
               " is inconsistent; delete this checkpoint");
    const MappedFile& mf = map(dir, file);
    const std::string crcs = shard.at("crc32c").get<std::string>();
    for (uint64_t k = from / block_bytes; k <= (to - 1) / block_bytes; ++k) {
      if (!verified.insert({&shard, k}).second) continue;
      const uint64_t at = begin + k * block_bytes, n = std::min(block_bytes, end - at);
      WEFT_CHECK(crcs.size() >= 8 * (k + 1) &&
                     crc32c(mf.data() + at, n) == uint32_t(std::stoul(crcs.substr(8 * k, 8), nullptr, 16)),
                 (dir / file).string(), ": tensor '", name, "' is damaged (CRC32C mismatch in bytes [", at, ", ",
                 at + n, ")); ", kDamagedHint, dir.string());
    }
    return mf.data() + begin;
  }
};

CheckpointReader::CheckpointReader(const std::string& step_dir) : dir_(step_dir), impl_(new Impl) {
  const fs::path dir(step_dir);
  auto& m = impl_->manifest;
  m = read_manifest(dir);
  try {
    step_ = m.at("step").get<int64_t>();
    const auto& l = m.at("layout");
    layout_ = {l.at("tp").get<int64_t>(), l.at("pp").get<int64_t>(), l.at("dp").get<int64_t>(),
               l.value("vpp", int64_t(1)), l.value("zero", int64_t(0))};
    impl_->block_bytes = m.at("block_bytes").get<uint64_t>();
    for (const auto& [name, info] : m.at("files").items()) {
      const fs::path path = dir / name;
      std::error_code ec;
      const auto size = fs::file_size(path, ec);
      WEFT_CHECK(!ec, "checkpoint ", dir.string(), " is damaged: ", name, " is missing; ", kDamagedHint, dir.string());
      WEFT_CHECK(size == info.at("bytes").get<uint64_t>(), path.string(), " is damaged: ", size, " bytes, the manifest says ",
                 info.at("bytes").get<uint64_t>(), " (truncated?); ", kDamagedHint, dir.string());
    }
  } catch (const nlohmann::json::exception& e) {
    fail(str((dir / kManifest).string(), ": malformed manifest (", e.what(), "); delete this checkpoint"));
  }
}

CheckpointReader::~CheckpointReader() = default;

namespace {
std::string read_verified(const fs::path& dir, const nlohmann::json& manifest, const std::string& file) {
  WEFT_CHECK(manifest.at("files").contains(file), dir.string(), ": the manifest lists no ", file);
  const auto& info = manifest.at("files").at(file);
  const std::string text = read_file((dir / file).string());
  WEFT_CHECK(text.size() == info.at("bytes").get<uint64_t>() &&
                 crc32c(text.data(), text.size()) == info.at("crc32c").get<uint32_t>(),
             (dir / file).string(), " is damaged (size or CRC32C differs from the manifest); ", kDamagedHint, dir.string());
  return text;
}
}  // namespace

nlohmann::json CheckpointReader::trainer_state() const {
  return nlohmann::json::parse(read_verified(dir_, impl_->manifest, "trainer_state.json"));
}

std::string CheckpointReader::config_yaml() const { return read_verified(dir_, impl_->manifest, "config.yaml"); }

std::map<std::string, std::string> CheckpointReader::extra_files() const {
  std::map<std::string, std::string> out;
  for (const auto& [file, info] : impl_->manifest.at("files").items())
    if (file.find(".safetensors") == std::string::npos && file != "trainer_state.json" && file != "config.yaml")
      out[file] = read_verified(dir_, impl_->manifest, file);
  return out;
}

std::vector<std::string> CheckpointReader::names(const std::string& kind) const {
  std::vector<std::string> out;
  const auto& t = impl_->manifest.at("tensors");
  if (t.contains(kind))
    for (const auto& [name, entry] : t.at(kind).items()) out.push_back(name);
  return out;
}

NamedTensors CheckpointReader::read(const std::string& kind,
                                    const std::vector<std::pair<std::string, ShardPlacement>>& wanted,
                                    int64_t vocab_rows) {
  const fs::path dir(dir_);
  const auto& tensors = impl_->manifest.at("tensors");
  NamedTensors out;
  for (const auto& [name, want] : wanted) {
    WEFT_CHECK(tensors.contains(kind) && tensors.at(kind).contains(name), dir_, ": no ", kind, " tensor '", name,
               "' in the checkpoint (saved as ", layout_.describe(), "); is it from another model config?");
    const auto& entry = tensors.at(kind).at(name);
    const auto global = entry.at("global_shape").get<std::vector<int64_t>>();
    // Another vocabulary padding (model.make_vocab_size_divisible_by): rows from vocab_rows on are
    // zero padding; missing ones read as zero, extra ones are dropped.
    const bool repadded = global != want.global_shape && vocab_rows > 0 && !global.empty() &&
                          global.size() == want.global_shape.size() &&
                          std::equal(global.begin() + 1, global.end(), want.global_shape.begin() + 1) &&
                          std::min(global[0], want.global_shape[0]) >= vocab_rows;
    WEFT_CHECK(global == want.global_shape || repadded, dir_, ": ", kind, " tensor '", name, "' has shape ",
               c10::IntArrayRef(global), " in the checkpoint but the model wants ", want.describe(),
               "; set model.* as in the checkpoint's config.yaml");
    const auto dtype = safetensors_dtype(entry.at("dtype").get<std::string>());
    const int64_t esize = int64_t(c10::elementSize(dtype));
    const auto want_boxes = boxes_of(want);
    at::Tensor result = repadded ? at::zeros({want.numel()}, at::TensorOptions().dtype(dtype))
                                 : at::empty({want.numel()}, at::TensorOptions().dtype(dtype));
    int64_t covered = 0;
    if (repadded)  // the padding rows past the saved ones count as read (zeros)
      for (const auto& wb : want_boxes)
        covered += std::max<int64_t>(0, wb.offsets[0] + wb.shape[0] - std::max(wb.offsets[0], global[0])) *
                   (product(wb.shape) / std::max<int64_t>(1, wb.shape[0]));
    for (const auto& shard : entry.at("shards")) {
      const auto p = placement_from_json(entry, shard);
      for (const auto& sb : boxes_of(p)) {
        const auto sub_strides = row_major_strides(sb.shape);
        for (const auto& wb : want_boxes) {
          std::vector<int64_t> lo, len;
          if (!intersect(sb, wb, lo, len)) continue;
          // Source: elements of the saved sub-box, laid out row-major from its position.
          int64_t first = sb.pos, last = sb.pos;
          for (size_t d = 0; d < global.size(); ++d)
            first += (lo[d] - sb.offsets[d]) * sub_strides[d], last += (lo[d] + len[d] - 1 - sb.offsets[d]) * sub_strides[d];
          const uint8_t* base = impl_->piece_bytes(dir, shard, name, uint64_t(first) * esize, uint64_t(last + 1) * esize);
          auto src = at::from_blob(const_cast<uint8_t*>(base) + first * esize, len, sub_strides,
                                   at::TensorOptions().dtype(dtype));
          at::Tensor dst = result.narrow(0, wb.pos, product(wb.shape)).view(wb.shape);
          for (size_t d = 0; d < global.size(); ++d) dst = dst.narrow(int64_t(d), lo[d] - wb.offsets[d], len[d]);
          dst.copy_(src);
          covered += product(len);
        }
      }
    }
    WEFT_CHECK(covered == want.numel(), dir_, ": the saved pieces of ", kind, " tensor '", name, "' cover ", covered,
               " of the ", want.numel(), " elements of ", want.describe(), " (saved as ", layout_.describe(),
               "); the checkpoint is incomplete or its manifest damaged");
    out.emplace_back(name, want.flat_begin < 0 ? result.view(want.shape) : result);
  }
  return out;
}

NamedTensors CheckpointReader::read_all(const std::string& kind) {
  std::vector<std::pair<std::string, ShardPlacement>> want;
  const auto& t = impl_->manifest.at("tensors");
  if (t.contains(kind))
    for (const auto& [name, entry] : t.at(kind).items()) {
      ShardPlacement p;
      p.global_shape = p.shape = entry.at("global_shape").get<std::vector<int64_t>>();
      p.offsets.assign(p.shape.size(), 0);
      want.emplace_back(name, p);
    }
  return read(kind, want);
}

CheckpointData load_checkpoint(const std::string& step_dir, bool with_optimizer) {
  CheckpointReader r(step_dir);
  CheckpointData data;
  data.step = r.step();
  data.layout = r.layout();
  data.model = r.read_all("model");
  if (with_optimizer) data.optimizer = r.read_all("optim");
  data.trainer_state = r.trainer_state();
  data.config_yaml = r.config_yaml();
  data.extra_files = r.extra_files();
  return data;
}

}  // namespace weft

// safetensors writer (header built from shapes first, then tensors streamed through FileWriter)
// and reader (mmap + strict header validation, so a corrupt shard fails with its name instead of
// loading garbage).
#include "core/safetensors.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "weft/error.h"

namespace weft {
namespace {

// The safetensors format caps the header at 100 MB; the reference reader rejects larger ones.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors is little-endian; a big-endian host would need byte swapping");

struct DtypeName {
  const char* name;
  at::ScalarType dtype;
};

const DtypeName kDtypes[] = {
    {"F64", at::kDouble},   {"F32", at::kFloat},       {"F16", at::kHalf},
    {"BF16", at::kBFloat16}, {"I64", at::kLong},       {"I32", at::kInt},
    {"I16", at::kShort},    {"I8", at::kChar},         {"U8", at::kByte},
    {"BOOL", at::kBool},    {"U16", at::kUInt16},      {"U32", at::kUInt32},
    {"U64", at::kUInt64},   {"C64", at::kComplexFloat}, {"F8_E4M3", at::kFloat8_e4m3fn},
    {"F8_E5M2", at::kFloat8_e5m2}, {"F8_E4M3FNUZ", at::kFloat8_e4m3fnuz},
    {"F8_E5M2FNUZ", at::kFloat8_e5m2fnuz},
};

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::string safetensors_dtype_name(at::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name;
  fail(str("dtype ", c10::toString(dtype), " cannot be stored in safetensors; convert the tensor "
           "to a supported dtype (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL, U16-U64, C64, F8_*)"),
       __FILE__, __LINE__);
}

at::ScalarType safetensors_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.dtype;
  fail(str("unknown safetensors dtype \"", name, "\""), __FILE__, __LINE__);
}

// ---- writing ------------------------------------------------------------------------------------

namespace {

// The padded header (without the 8-byte length) for tensors laid out back to back in order.
std::string build_header(const std::string& path,
                         const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header[kMetadataKey] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const std::string where = str(path, ": tensor '", name, "'");
    WEFT_CHECK(name != kMetadataKey, where, ": the name ", kMetadataKey,
               " is reserved for metadata; rename the tensor");
    WEFT_CHECK(!header.contains(name), where, " appears twice; tensor names must be unique");
    WEFT_CHECK(t.defined(), where, " is undefined; pass a tensor with data");
    WEFT_CHECK(t.layout() == at::kStrided && !t.is_quantized(), where, " has layout ", t.layout(),
               "; only dense tensors can be saved (call .to_dense() first)");
    WEFT_CHECK(!t.is_meta(), where, " is on the meta device and has no data; materialize it first");
    const std::string dtype = [&] {
      try {
        return safetensors_dtype_name(t.scalar_type());
      } catch (const Error& e) {
        fail(str(where, ": ", e.what()), __FILE__, __LINE__);
      }
    }();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(str(path, ": cannot encode the safetensors header (", e.what(),
             "); tensor names and metadata must be valid UTF-8"),
         __FILE__, __LINE__);
  }
  // The data buffer starts 8-byte aligned, so every tensor's start is aligned to its dtype when
  // the file is memory-mapped.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

// The tensor's bytes in row-major order, on the CPU. Copies only when needed.
at::Tensor host_contiguous(const at::Tensor& t) {
  at::Tensor c = t.is_cpu() ? t : t.to(at::kCPU);
  return c.resolve_conj().resolve_neg().contiguous();
}

}  // namespace

SafetensorsWriteResult write_safetensors(
    const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata, uint64_t block_bytes,
    const std::function<void(size_t)>& after_tensor) {
  const std::string header = build_header(path, tensors, metadata);
  SafetensorsWriteResult result;
  try {
    FileWriter w(path);
    uint8_t len[8];
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    w.write(len, sizeof len);
    w.write(header);
    result.header_bytes = w.bytes(), result.header_crc32c = w.crc();
    for (const auto& [name, t] : tensors) {
      const at::Tensor c = host_contiguous(t);
      SafetensorsTensorRecord rec{name, w.bytes(), w.bytes() + c.nbytes(), {}};
      const auto* bytes = static_cast<const uint8_t*>(c.data_ptr());
      for (uint64_t at = 0; block_bytes > 0 && at < c.nbytes(); at += block_bytes)
        rec.block_crc32c.push_back(crc32c(bytes + at, std::min<uint64_t>(block_bytes, c.nbytes() - at)));
      w.write(bytes, c.nbytes());
      result.tensors.push_back(std::move(rec));
      if (after_tensor) after_tensor(result.tensors.size() - 1);
    }
    w.close();
    result.bytes = w.bytes(), result.crc32c = w.crc();
    return result;
  } catch (...) {
    ::unlink(path.c_str());  // never leave a half-written file that looks like a shard
    throw;
  }
}

// ---- reading ------------------------------------------------------------------------------------

SafetensorsReader::SafetensorsReader(const std::string& path) : file_(path) { parse_header(); }

void SafetensorsReader::parse_header() {
  const std::string& path = file_.path();
  const std::string bad = str(path, " is not a valid safetensors file: ");
  const std::string fix = " (the file is truncated or corrupt; re-create or re-download it)";
  WEFT_CHECK(file_.size() >= 8, bad, "it has ", file_.size(), " bytes, fewer than the 8-byte "
             "header length", fix);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(file_.data()[i]) << (8 * i);
  WEFT_CHECK(n <= kMaxHeaderBytes, bad, "header length ", n, " exceeds the format's limit of ",
             kMaxHeaderBytes, fix);
  WEFT_CHECK(n <= file_.size() - 8, bad, "header length ", n, " runs past the end of the ",
             file_.size(), "-byte file", fix);
  data_start_ = 8 + n;
  const char* text = reinterpret_cast<const char*>(file_.data()) + 8;
  WEFT_CHECK(n > 0 && text[0] == '{', bad, "the header does not start with '{'", fix);

  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(text, text + n);
  } catch (const nlohmann::json::exception& e) {
    fail(str(bad, "header JSON does not parse: ", e.what(), fix), __FILE__, __LINE__);
  }
  WEFT_CHECK(header.is_object(), bad, "the header is not a JSON object", fix);

  const uint64_t buffer = file_.size() - data_start_;
  for (const auto& [name, info] : header.items()) {
    if (name == kMetadataKey) {
      WEFT_CHECK(info.is_object(), bad, kMetadataKey, " is not an object", fix);
      for (const auto& [k, v] : info.items()) {
        WEFT_CHECK(v.is_string(), bad, kMetadataKey, "['", k, "'] is not a string", fix);
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = str(bad, "tensor '", name, "': ");
    WEFT_CHECK(info.is_object(), where, "entry is not an object", fix);
    WEFT_CHECK(info.contains("dtype") && info["dtype"].is_string(), where, "no string \"dtype\"",
               fix);
    Entry e;
    try {
      e.dtype = safetensors_dtype(info["dtype"].get<std::string>());
    } catch (const Error& err) {
      fail(str(where, err.what(), "; Weft reads F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL U16 U32 "
               "U64 C64 F8_E4M3 F8_E5M2 F8_E4M3FNUZ F8_E5M2FNUZ"),
           __FILE__, __LINE__);
    }
    WEFT_CHECK(info.contains("shape") && info["shape"].is_array(), where, "no \"shape\" array",
               fix);
    uint64_t numel = 1;
    for (const auto& d : info["shape"]) {
      WEFT_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= (uint64_t{1} << 62), where,
                 "shape ", info["shape"].dump(), " has an entry that is not a size", fix);
      e.shape.push_back(d.get<int64_t>());
      WEFT_CHECK(!__builtin_mul_overflow(numel, d.get<uint64_t>(), &numel), where, "shape ",
                 info["shape"].dump(), " overflows", fix);
    }
    const auto& offs = info.contains("data_offsets") ? info["data_offsets"] : nlohmann::ordered_json();
    WEFT_CHECK(offs.is_array() && offs.size() == 2 && offs[0].is_number_unsigned() &&
                   offs[1].is_number_unsigned(),
               where, "\"data_offsets\" is not a pair of non-negative integers", fix);
    e.begin = offs[0].get<uint64_t>();
    e.end = offs[1].get<uint64_t>();
    WEFT_CHECK(e.begin <= e.end && e.end <= buffer, where, "data_offsets [", e.begin, ", ", e.end,
               "] lie outside the ", buffer, "-byte data buffer", fix);
    uint64_t expected = 0;
    WEFT_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(e.dtype)),
                                       &expected) &&
                   expected == e.end - e.begin,
               where, "data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin,
               " bytes but shape ", shape_str(e.shape), " of ", info["dtype"].get<std::string>(),
               " needs ", expected, fix);
    names_.push_back(name);
    entries_.emplace(name, std::move(e));
  }

  // File order; a stable sort keeps header order among empty tensors that share an offset.
  std::stable_sort(names_.begin(), names_.end(), [&](const std::string& a, const std::string& b) {
    return entries_.at(a).begin < entries_.at(b).begin;
  });
  uint64_t covered = 0;
  const std::string* prev = nullptr;
  for (const auto& name : names_) {
    const Entry& e = entries_.at(name);
    WEFT_CHECK(e.begin >= covered, bad, "tensor '", name, "' (bytes ", e.begin, "..", e.end,
               ") overlaps tensor '", *prev, "' (ending at ", covered, ")", fix);
    WEFT_CHECK(e.begin == covered, bad, "bytes ", covered, "..", e.begin, " of the data buffer "
               "before tensor '", name, "' belong to no tensor", fix);
    covered = e.end;
    prev = &name;
  }
  WEFT_CHECK(covered == buffer, bad, "the data buffer has ", buffer, " bytes but its tensors "
             "cover ", covered, fix);
}

const SafetensorsReader::Entry& SafetensorsReader::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    std::string some;
    for (size_t i = 0; i < names_.size() && i < 5; ++i) some += (i ? ", '" : "'") + names_[i] + "'";
    fail(str(path(), " has no tensor '", name, "' (it holds ", names_.size(), " tensors",
             names_.empty() ? "" : ", e.g. ", some, "); check the name or the file"),
         __FILE__, __LINE__);
  }
  return it->second;
}

const std::vector<int64_t>& SafetensorsReader::shape(const std::string& name) const {
  return entry(name).shape;
}

at::ScalarType SafetensorsReader::dtype(const std::string& name) const {
  return entry(name).dtype;
}

uint64_t SafetensorsReader::nbytes(const std::string& name) const {
  const Entry& e = entry(name);
  return e.end - e.begin;
}

at::Tensor SafetensorsReader::get(const std::string& name) const {
  const Entry& e = entry(name);
  at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
  if (e.end > e.begin) std::memcpy(t.data_ptr(), file_.data() + data_start_ + e.begin, e.end - e.begin);
  return t;
}

}  // namespace weft

// The Hugging Face safetensors container: an 8-byte little-endian header length N, N bytes of
// JSON ({"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}) padded with
// spaces to 8-byte alignment, then the tensors' bytes. Weft's checkpoint shards use it as well.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/fileio.h"

namespace weft {

// The safetensors dtype string for a tensor dtype ("F32", "BF16", …). Supported: F64 F32 F16
// BF16 I64 I32 I16 I8 U8 BOOL, and also U16 U32 U64 C64 F8_E4M3 F8_E5M2 F8_E4M3FNUZ F8_E5M2FNUZ.
// Throws weft::Error for any other dtype.
std::string safetensors_dtype_name(at::ScalarType dtype);
// The reverse; throws weft::Error naming the string for an unknown one.
at::ScalarType safetensors_dtype(const std::string& name);

// Where one written tensor's bytes lie in the file, and their checksums.
struct SafetensorsTensorRecord {
  std::string name;
  uint64_t begin = 0, end = 0;        // byte offsets in the file (not the data buffer)
  std::vector<uint32_t> block_crc32c; // CRC-32C of bytes [begin + k*B, min(end, begin + (k+1)*B))
};

struct SafetensorsWriteResult {
  uint64_t bytes = 0;   // size of the whole file
  uint32_t crc32c = 0;  // CRC-32C of the whole file, header included
  std::vector<SafetensorsTensorRecord> tensors;  // in file order; block CRCs only if asked for
  uint64_t header_bytes = 0;   // the 8-byte length and the JSON header: where the data starts
  uint32_t header_crc32c = 0;  // CRC-32C of those bytes
};

// Writes `tensors` to `path` (created or truncated) in the given order, with string metadata in
// "__metadata__", and fsyncs the file (not its directory: committing a checkpoint is the caller's
// job). Tensors may live on any device and have any strides: each is copied to contiguous CPU
// memory one at a time, so peak extra memory is one tensor. With `block_bytes` > 0 each tensor's
// bytes also get a CRC-32C per block of that many bytes (counted from the tensor's first byte),
// so a reader can verify just the part it reads. `after_tensor(i)`, when given, runs after tensor i
// is written (progress, fault injection). Throws weft::Error for a duplicate or
// reserved name, an undefined, sparse or meta tensor, an unsupported dtype, or an I/O error; on
// any error the partial file is removed. Thread-compatible (distinct paths may be written
// concurrently).
SafetensorsWriteResult write_safetensors(
    const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata = {}, uint64_t block_bytes = 0,
    const std::function<void(size_t)>& after_tensor = {});

// Reads a safetensors file through a read-only memory map it owns. The constructor validates the
// whole header — length sane, JSON well-formed, known dtypes, every tensor's byte range inside
// the data buffer and equal to numel × itemsize, ranges neither overlapping nor leaving gaps (as
// the format requires) — and throws weft::Error naming the path (and tensor) otherwise. Accessors
// for an unknown name throw weft::Error naming the path and the name. Const methods are safe to
// call from several threads. Movable, not copyable.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);

  // Tensor names in the order their data appears in the file (for weft-written files, the order
  // they were given to write_safetensors).
  const std::vector<std::string>& names() const { return names_; }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const std::vector<int64_t>& shape(const std::string& name) const;
  at::ScalarType dtype(const std::string& name) const;
  // Size of the tensor's data in bytes.
  uint64_t nbytes(const std::string& name) const;
  // A freshly allocated CPU tensor holding a copy of the data; independent of this reader.
  at::Tensor get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }
  // CRC-32C of the whole file, comparable with SafetensorsWriteResult::crc32c.
  uint32_t file_crc32c() const { return crc32c(file_.data(), file_.size()); }

 private:
  struct Entry {
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin;  // byte offsets relative to the data buffer
    uint64_t end;
  };
  const Entry& entry(const std::string& name) const;
  void parse_header();

  MappedFile file_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<std::string> names_;
  std::unordered_map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace weft

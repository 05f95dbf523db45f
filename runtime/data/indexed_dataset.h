// Megatron-LM's indexed dataset (PREFIX.bin + PREFIX.idx), read through mmap and written
// atomically, so Weft trains on the files users already have and Megatron reads Weft's output.
// The byte layout is documented in /work/shared/ANCHORS.md and in the .cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

namespace weft {

// Megatron's dtype codes for the tokens in .bin.
enum IndexedDtype : int {
  kDtypeUInt8 = 1,
  kDtypeInt8 = 2,
  kDtypeInt16 = 3,
  kDtypeInt32 = 4,
  kDtypeInt64 = 5,
  kDtypeFloat64 = 6,
  kDtypeFloat32 = 7,
  kDtypeUInt16 = 8,
};

// Bytes per token for a dtype code; throws weft::Error for an unknown code.
int64_t dtype_itemsize(int dtype_code);
// "uint16", "int32", ... for messages; "unknown" for a bad code.
const char* dtype_name(int dtype_code);
// Megatron's choice of token dtype: uint16 (8) when vocab_size < 65500, else int32 (4).
int dtype_for_vocab(int64_t vocab_size);

// A read-only, memory-mapped Megatron indexed dataset.
// Owns: the two mappings (released in the destructor); nothing is copied out of them, so an open
//   dataset costs O(1) memory beyond the pages read. Non-copyable, non-movable.
// Throws: weft::Error naming the file for a missing file, bad magic, wrong version, unknown
//   dtype, truncated .idx, a .bin shorter than the index claims, or bad document indices;
//   every bound is checked before the mapping is touched, so a corrupt file never crashes.
// Thread safety: all const methods are safe to call concurrently (max_token's scan is guarded by
//   a once-flag); check_all() and trust() are for the opening thread, before sharing.
class IndexedDataset {
 public:
  // kFull: the constructor checks every sequence and document entry (O(sequences)).
  // kDeferred: only the O(1) header checks run, and nothing may be read until check_all() or
  //   trust() has run; this is how a cached dataset opens in constant time.
  enum class Checks { kFull, kDeferred };
  // What the O(sequences) checks and the token scan found.
  struct Summary {
    int64_t num_tokens = 0, min_token = 0, max_token = 0;
  };

  explicit IndexedDataset(const std::string& prefix, Checks checks = Checks::kFull);
  ~IndexedDataset();
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;

  const std::string& prefix() const { return prefix_; }
  int dtype_code() const { return dtype_code_; }
  int64_t itemsize() const { return itemsize_; }
  int64_t num_sequences() const { return sequence_count_; }
  // Documents are ranges of sequences: document d is sequences
  // [document_index(d), document_index(d + 1)).
  int64_t num_documents() const { return document_count_ - 1; }
  // Entry i of the document-index array, 0 <= i <= num_documents().
  int64_t document_index(int64_t i) const;
  // The whole document-index array (num_documents() + 1 entries), copied out of the mapping.
  std::vector<int64_t> document_indices() const;
  int64_t sequence_length(int64_t seq) const;
  // Byte offset of the sequence in .bin.
  int64_t sequence_offset(int64_t seq) const;
  // Total tokens over all sequences (0 until the deferred checks ran or were trusted).
  int64_t num_tokens() const { return num_tokens_; }

  // Copies tokens [offset, offset + count) of sequence `seq` into out[0..count), widened to
  // int64 (float dtypes are truncated toward zero). Throws weft::Error if out of range.
  void read(int64_t seq, int64_t offset, int64_t count, int64_t* out) const;

  // Largest / smallest token over the whole dataset (a full scan on first call, then cached).
  // Both are 0 for a dataset without tokens.
  int64_t max_token() const;
  int64_t min_token() const;

  // Identity of the mapped files ("idx STAMP bin STAMP", see file_stamp): a cache entry built
  // for this text describes exactly these files.
  const std::string& stamp() const { return stamp_; }
  // Runs the deferred checks (if any) and the token scan; throws like the constructor.
  Summary check_all();
  // Takes the summary a previous check_all() of the files with this stamp() returned, instead
  // of checking again.
  void trust(const Summary& summary);

 private:
  struct Mapping {
    const unsigned char* data = nullptr;
    size_t size = 0;
  };
  static Mapping map_file(const std::string& path, std::string* stamp);
  static void unmap(Mapping& m);
  void validate_header();
  void validate_body();
  void scan_tokens() const;
  void require_checked() const;

  std::string prefix_, idx_path_, bin_path_, stamp_;
  Mapping idx_, bin_;
  bool checked_ = false;  // validate_body() ran or its result was trusted
  int dtype_code_ = 0;
  int64_t itemsize_ = 0;
  int64_t sequence_count_ = 0;
  int64_t document_count_ = 0;
  int64_t num_tokens_ = 0;
  // Byte positions of the three arrays inside the .idx mapping (they are not aligned).
  size_t lengths_at_ = 0, offsets_at_ = 0, docs_at_ = 0;

  mutable std::once_flag scan_once_;
  mutable int64_t max_token_ = 0, min_token_ = 0;
};

// Writes PREFIX.bin/.idx in Megatron's format, one sequence per document (what Megatron's
// preprocess_data.py writes without sentence splitting).
// Owns: two open temporary files, PREFIX.bin.tmp and PREFIX.idx.tmp, and the index in memory
//   (12 bytes per document). finalize() fsyncs them and renames .bin then .idx into place, after
//   removing any old .idx, so a crash never leaves a complete-looking pair; destroying an
//   unfinalized writer deletes the temporaries.
// Throws: weft::Error naming the file on I/O failure, or the document and value when a token does
//   not fit the dtype. Not thread-safe; non-copyable.
class IndexedDatasetWriter {
 public:
  IndexedDatasetWriter(const std::string& prefix, int dtype_code);
  ~IndexedDatasetWriter();
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;

  void add_document(const std::vector<int64_t>& tokens);
  void finalize();

  int64_t num_documents() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  void write_bin(const void* data, size_t bytes);
  void abandon() noexcept;

  std::string prefix_, bin_path_, idx_path_, bin_tmp_, idx_tmp_;
  int dtype_code_;
  int64_t itemsize_;
  std::FILE* bin_ = nullptr;
  std::vector<int32_t> lengths_;
  std::vector<unsigned char> buffer_;  // one document encoded in the dtype
  int64_t num_tokens_ = 0;
  bool finalized_ = false;
};

}  // namespace weft

// Megatron indexed dataset reader (mmap) and writer (temporary files + rename).
// .idx layout, little-endian: "MMIDIDX\0\0" | u64 version=1 | u8 dtype | u64 S | u64 D |
// i32[S] lengths | i64[S] byte offsets | i64[D] document indices (0 ... S) [| i8[S] modes].
#include "runtime/data/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "weft/error.h"
#include "runtime/data/data_cache.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the indexed dataset is little-endian and read in place");

namespace weft {
namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr size_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;  // magic, version, dtype, S, D

// The arrays in .idx start at byte 34, so nothing in it is aligned: every load is a memcpy
// (which compiles to a plain unaligned load).
template <typename T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <typename T>
int64_t to_token(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    // A float that is not an integer token is garbage; map it to a value every range check
    // rejects instead of invoking undefined behaviour in the cast.
    if (!(std::fabs(v) < 9.2e18)) return std::numeric_limits<int64_t>::min();
  }
  return static_cast<int64_t>(v);
}

template <typename T>
void widen(const unsigned char* p, int64_t n, int64_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = to_token(load<T>(p + i * sizeof(T)));
}

void widen_any(int code, const unsigned char* p, int64_t n, int64_t* out) {
  switch (code) {
    case kDtypeUInt8: return widen<uint8_t>(p, n, out);
    case kDtypeInt8: return widen<int8_t>(p, n, out);
    case kDtypeInt16: return widen<int16_t>(p, n, out);
    case kDtypeInt32: return widen<int32_t>(p, n, out);
    case kDtypeInt64: return widen<int64_t>(p, n, out);
    case kDtypeFloat64: return widen<double>(p, n, out);
    case kDtypeFloat32: return widen<float>(p, n, out);
    case kDtypeUInt16: return widen<uint16_t>(p, n, out);
  }
  fail(str("unknown dtype code ", code));
}

// Inclusive range of token values a dtype stores exactly.
std::pair<int64_t, int64_t> dtype_range(int code) {
  switch (code) {
    case kDtypeUInt8: return {0, 255};
    case kDtypeInt8: return {-128, 127};
    case kDtypeInt16: return {-32768, 32767};
    case kDtypeInt32:
      return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
    case kDtypeInt64:
      return {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()};
    case kDtypeFloat64: return {-(int64_t{1} << 53), int64_t{1} << 53};
    case kDtypeFloat32: return {-(int64_t{1} << 24), int64_t{1} << 24};
    case kDtypeUInt16: return {0, 65535};
  }
  fail(str("unknown dtype code ", code));
}

template <typename T>
void narrow(const std::vector<int64_t>& tokens, unsigned char* out) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    T v = static_cast<T>(tokens[i]);
    std::memcpy(out + i * sizeof(T), &v, sizeof(T));
  }
}

void narrow_any(int code, const std::vector<int64_t>& tokens, unsigned char* out) {
  switch (code) {
    case kDtypeUInt8: return narrow<uint8_t>(tokens, out);
    case kDtypeInt8: return narrow<int8_t>(tokens, out);
    case kDtypeInt16: return narrow<int16_t>(tokens, out);
    case kDtypeInt32: return narrow<int32_t>(tokens, out);
    case kDtypeInt64: return narrow<int64_t>(tokens, out);
    case kDtypeFloat64: return narrow<double>(tokens, out);
    case kDtypeFloat32: return narrow<float>(tokens, out);
    case kDtypeUInt16: return narrow<uint16_t>(tokens, out);
  }
  fail(str("unknown dtype code ", code));
}

void write_all(std::FILE* f, const void* data, size_t bytes, const std::string& path) {
  if (bytes == 0) return;
  WEFT_CHECK(std::fwrite(data, 1, bytes, f) == bytes, "cannot write ", path, ": ",
             std::strerror(errno), " (is the disk full?)");
}

void flush_sync_close(std::FILE*& f, const std::string& path) {
  bool ok = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  f = nullptr;
  WEFT_CHECK(ok, "cannot write ", path, ": ", std::strerror(err), " (is the disk full?)");
}

// Access-pattern hint for the kernel's read-ahead; advisory, so failure is ignored.
void advise(const unsigned char* data, size_t size, int advice) {
  if (data) ::madvise(const_cast<unsigned char*>(data), size, advice);
}

// Makes the renames themselves durable.
void sync_dir_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

int64_t dtype_itemsize(int code) {
  switch (code) {
    case kDtypeUInt8:
    case kDtypeInt8: return 1;
    case kDtypeInt16:
    case kDtypeUInt16: return 2;
    case kDtypeInt32:
    case kDtypeFloat32: return 4;
    case kDtypeInt64:
    case kDtypeFloat64: return 8;
  }
  fail(str("unknown indexed-dataset dtype code ", code, " (valid: 1..8)"));
}

const char* dtype_name(int code) {
  static const char* names[] = {"unknown", "uint8",   "int8",    "int16", "int32",
                                "int64",   "float64", "float32", "uint16"};
  return code >= 1 && code <= 8 ? names[code] : names[0];
}

int dtype_for_vocab(int64_t vocab_size) { return vocab_size < 65500 ? kDtypeUInt16 : kDtypeInt32; }

// ---- IndexedDataset ----------------------------------------------------------------------

IndexedDataset::Mapping IndexedDataset::map_file(const std::string& path, std::string* stamp) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  WEFT_CHECK(fd >= 0, "cannot open ", path, ": ", std::strerror(errno),
             " (an indexed dataset needs both PREFIX.bin and PREFIX.idx; create them with "
             "`weft preprocess`)");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(str("cannot stat ", path, ": ", std::strerror(err)));
  }
  try {
    *stamp = file_stamp(fd, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  Mapping m;
  m.size = static_cast<size_t>(st.st_size);
  if (m.size > 0) {  // mmap of length 0 is an error; an empty .bin is legal
    void* p = ::mmap(nullptr, m.size, PROT_READ, MAP_SHARED, fd, 0);
    int err = errno;
    ::close(fd);
    WEFT_CHECK(p != MAP_FAILED, "cannot mmap ", path, ": ", std::strerror(err));
    m.data = static_cast<const unsigned char*>(p);
    // Training reads samples at random: without this, each first touch of a cold page reads
    // ahead (megabytes on some disks) and maps all of it, so resident memory would grow by the
    // read-ahead window per sample rather than by the pages read. Scans switch to sequential.
    ::madvise(p, m.size, MADV_RANDOM);
  } else {
    ::close(fd);
  }
  return m;
}

void IndexedDataset::unmap(Mapping& m) {
  if (m.data) ::munmap(const_cast<unsigned char*>(m.data), m.size);
  m = Mapping{};
}

IndexedDataset::IndexedDataset(const std::string& prefix, Checks checks)
    : prefix_(prefix), idx_path_(prefix + ".idx"), bin_path_(prefix + ".bin") {
  try {
    std::string idx_stamp, bin_stamp;
    idx_ = map_file(idx_path_, &idx_stamp);
    bin_ = map_file(bin_path_, &bin_stamp);
    stamp_ = str("idx ", idx_stamp, " bin ", bin_stamp);
    validate_header();
    if (checks == Checks::kFull) validate_body();
  } catch (...) {
    unmap(idx_);
    unmap(bin_);
    throw;
  }
}

IndexedDataset::~IndexedDataset() {
  unmap(idx_);
  unmap(bin_);
}

// The O(1) checks: header fields, array sizes against the file size, the document index's
// first and last entries.
void IndexedDataset::validate_header() {
  const std::string& f = idx_path_;
  const unsigned char* p = idx_.data;
  const uint64_t size = idx_.size;
  WEFT_CHECK(size >= kHeaderBytes, f, " is truncated: ", size, " bytes, but the header alone is ",
             kHeaderBytes, "; regenerate the dataset");
  WEFT_CHECK(std::memcmp(p, kMagic, 9) == 0, f,
             " is not a Megatron indexed dataset index (bad magic; expected \"MMIDIDX\\0\\0\")");
  uint64_t version = load<uint64_t>(p + 9);
  WEFT_CHECK(version == 1, f, " has index version ", version, "; only version 1 is supported");
  dtype_code_ = p[17];
  WEFT_CHECK(dtype_code_ >= 1 && dtype_code_ <= 8, f, " has unknown dtype code ", dtype_code_,
             " (valid: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, "
             "8 uint16)");
  itemsize_ = dtype_itemsize(dtype_code_);
  uint64_t seqs = load<uint64_t>(p + 18);
  uint64_t docs = load<uint64_t>(p + 26);

  // Compare counts with the size before multiplying, so a garbage count cannot overflow.
  const uint64_t body = size - kHeaderBytes;
  uint64_t need = kHeaderBytes;
  bool fits = seqs <= body / 12 && docs <= body / 8;
  if (fits) need += seqs * 12 + docs * 8;
  if (!fits || size < need) {
    unsigned __int128 wanted = kHeaderBytes + static_cast<unsigned __int128>(seqs) * 12 +
                               static_cast<unsigned __int128>(docs) * 8;
    bool small = wanted <= std::numeric_limits<uint64_t>::max();
    fail(str(f, " is truncated: its header says ", seqs, " sequences and ", docs,
             " document-index entries, which need ",
             small ? str(static_cast<uint64_t>(wanted)) : std::string("over 2^64"),
             " bytes, but the file has ", size, " bytes; regenerate the dataset"));
  }
  // Megatron's multimodal datasets append one int8 mode per sequence; anything else is junk.
  WEFT_CHECK(size == need || size == need + seqs, f, " has ", size - need,
             " unexpected bytes after the index (expected 0, or ", seqs,
             " for multimodal modes); the file is corrupt");
  sequence_count_ = static_cast<int64_t>(seqs);
  document_count_ = static_cast<int64_t>(docs);
  lengths_at_ = kHeaderBytes;
  offsets_at_ = lengths_at_ + seqs * 4;
  docs_at_ = offsets_at_ + seqs * 8;

  WEFT_CHECK(docs >= 1 && document_index(0) == 0, f,
             " has a bad document index: it must start with 0 (", docs,
             " entries, first = ", docs ? document_index(0) : -1, "); the file is corrupt");
  WEFT_CHECK(document_index(document_count_ - 1) == sequence_count_, f,
             " has a bad document index: the last entry is ", document_index(document_count_ - 1),
             " but there are ", sequence_count_, " sequences; the file is corrupt");
}

// The O(sequences) checks: monotonic document indices, every sequence inside .bin.
void IndexedDataset::validate_body() {
  const std::string& f = idx_path_;
  advise(idx_.data, idx_.size, MADV_SEQUENTIAL);
  for (int64_t d = 1; d < document_count_; ++d) {
    WEFT_CHECK(document_index(d) >= document_index(d - 1), f,
               " has non-monotonic document indices: entry ", d, " = ", document_index(d),
               " < entry ", d - 1, " = ", document_index(d - 1), "; the file is corrupt");
  }

  const uint64_t bin_size = bin_.size;
  int64_t tokens = 0;
  for (int64_t s = 0; s < sequence_count_; ++s) {
    int64_t len = sequence_length(s);
    int64_t off = sequence_offset(s);
    WEFT_CHECK(len >= 0 && off >= 0, f, " has a negative length or offset for sequence ", s,
               " (length ", len, ", offset ", off, "); the file is corrupt");
    // len < 2^31 and itemsize <= 8, so the end cannot overflow once off is below the size.
    bool inside = static_cast<uint64_t>(off) <= bin_size &&
                  static_cast<uint64_t>(len * itemsize_) <= bin_size - off;
    WEFT_CHECK(inside, bin_path_, " is shorter than ", f, " claims: sequence ", s, " needs bytes [",
               off, ", ", off + len * itemsize_, ") but the file has ", bin_size,
               " bytes; the .bin is truncated or belongs to another index");
    tokens += len;
  }
  num_tokens_ = tokens;
  checked_ = true;
  advise(idx_.data, idx_.size, MADV_RANDOM);
}

void IndexedDataset::require_checked() const {
  WEFT_CHECK(checked_, prefix_, " was opened with deferred checks and read before check_all() or trust() (a bug)");
}

IndexedDataset::Summary IndexedDataset::check_all() {
  if (!checked_) validate_body();
  return Summary{num_tokens_, min_token(), max_token()};
}

void IndexedDataset::trust(const Summary& summary) {
  num_tokens_ = summary.num_tokens;
  checked_ = true;
  std::call_once(scan_once_, [&] {
    min_token_ = summary.min_token;
    max_token_ = summary.max_token;
  });
}

int64_t IndexedDataset::document_index(int64_t i) const {
  WEFT_CHECK(i >= 0 && i < document_count_, prefix_, ": document index entry ", i,
             " out of range [0, ", document_count_, ")");
  return load<int64_t>(idx_.data + docs_at_ + 8 * i);
}

std::vector<int64_t> IndexedDataset::document_indices() const {
  std::vector<int64_t> out(static_cast<size_t>(document_count_));
  std::memcpy(out.data(), idx_.data + docs_at_, out.size() * 8);
  return out;
}

int64_t IndexedDataset::sequence_length(int64_t seq) const {
  WEFT_CHECK(seq >= 0 && seq < sequence_count_, prefix_, ": sequence ", seq, " out of range [0, ",
             sequence_count_, ")");
  return load<int32_t>(idx_.data + lengths_at_ + 4 * seq);
}

int64_t IndexedDataset::sequence_offset(int64_t seq) const {
  WEFT_CHECK(seq >= 0 && seq < sequence_count_, prefix_, ": sequence ", seq, " out of range [0, ",
             sequence_count_, ")");
  return load<int64_t>(idx_.data + offsets_at_ + 8 * seq);
}

void IndexedDataset::read(int64_t seq, int64_t offset, int64_t count, int64_t* out) const {
  require_checked();
  int64_t len = sequence_length(seq);
  WEFT_CHECK(offset >= 0 && count >= 0 && offset <= len && count <= len - offset, prefix_,
             ": read of tokens [", offset, ", ", offset + count, ") is outside sequence ", seq,
             " of length ", len);
  if (count == 0) return;
  const unsigned char* p = bin_.data + sequence_offset(seq) + offset * itemsize_;
  widen_any(dtype_code_, p, count, out);
}

void IndexedDataset::scan_tokens() const {
  std::call_once(scan_once_, [this] {
    int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
    std::vector<int64_t> buf(1 << 16);
    // The scanned pages of .bin count toward this process's resident memory until unmapped;
    // dropping them every so often keeps a scan of a corpus larger than memory from pushing
    // out everything else (they are reread from the file if a sample needs them).
    constexpr int64_t kReleaseBytes = int64_t{256} << 20;
    int64_t since_release = 0;
    advise(bin_.data, bin_.size, MADV_SEQUENTIAL);
    for (int64_t s = 0; s < sequence_count_; ++s) {
      int64_t len = sequence_length(s);
      for (int64_t at = 0; at < len; at += static_cast<int64_t>(buf.size())) {
        int64_t n = std::min<int64_t>(static_cast<int64_t>(buf.size()), len - at);
        read(s, at, n, buf.data());
        auto mm = std::minmax_element(buf.begin(), buf.begin() + n);
        lo = std::min(lo, *mm.first);
        hi = std::max(hi, *mm.second);
        since_release += n * itemsize_;
        if (since_release >= kReleaseBytes) {
          ::madvise(const_cast<unsigned char*>(bin_.data), bin_.size, MADV_DONTNEED);
          since_release = 0;
        }
      }
    }
    advise(bin_.data, bin_.size, MADV_RANDOM);
    if (num_tokens_ == 0) lo = hi = 0;
    min_token_ = lo;
    max_token_ = hi;
  });
}

int64_t IndexedDataset::max_token() const {
  scan_tokens();
  return max_token_;
}

int64_t IndexedDataset::min_token() const {
  scan_tokens();
  return min_token_;
}

// ---- IndexedDatasetWriter ----------------------------------------------------------------

IndexedDatasetWriter::IndexedDatasetWriter(const std::string& prefix, int dtype_code)
    : prefix_(prefix),
      bin_path_(prefix + ".bin"),
      idx_path_(prefix + ".idx"),
      bin_tmp_(prefix + ".bin.tmp"),
      idx_tmp_(prefix + ".idx.tmp"),
      dtype_code_(dtype_code) {
  WEFT_CHECK(dtype_code >= 1 && dtype_code <= 8, "cannot write ", prefix, ": unknown dtype code ",
             dtype_code, " (valid: 1..8)");
  itemsize_ = dtype_itemsize(dtype_code);
  bin_ = std::fopen(bin_tmp_.c_str(), "wb");
  WEFT_CHECK(bin_ != nullptr, "cannot create ", bin_tmp_, ": ", std::strerror(errno),
             " (does the directory exist and is it writable?)");
  std::setvbuf(bin_, nullptr, _IOFBF, 1 << 20);
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (!finalized_) abandon();
}

void IndexedDatasetWriter::abandon() noexcept {
  if (bin_) std::fclose(bin_);
  bin_ = nullptr;
  std::remove(bin_tmp_.c_str());
  std::remove(idx_tmp_.c_str());
}

void IndexedDatasetWriter::write_bin(const void* data, size_t bytes) {
  write_all(bin_, data, bytes, bin_tmp_);
}

void IndexedDatasetWriter::add_document(const std::vector<int64_t>& tokens) {
  WEFT_CHECK(!finalized_, "cannot add a document to ", prefix_, " after finalize()");
  WEFT_CHECK(tokens.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()), "document ",
             lengths_.size(), " of ", prefix_, " has ", tokens.size(),
             " tokens; the index stores lengths as int32");
  auto range = dtype_range(dtype_code_);
  for (size_t i = 0; i < tokens.size(); ++i) {
    WEFT_CHECK(tokens[i] >= range.first && tokens[i] <= range.second, "document ", lengths_.size(),
               " of ", prefix_, " has token ", tokens[i], " at position ", i,
               ", which does not fit dtype ", dtype_name(dtype_code_), " [", range.first, ", ",
               range.second, "]; use a wider dtype (int32 or int64)");
  }
  buffer_.resize(tokens.size() * itemsize_);
  narrow_any(dtype_code_, tokens, buffer_.data());
  write_bin(buffer_.data(), buffer_.size());
  lengths_.push_back(static_cast<int32_t>(tokens.size()));
  num_tokens_ += static_cast<int64_t>(tokens.size());
}

void IndexedDatasetWriter::finalize() {
  WEFT_CHECK(!finalized_, "finalize() called twice for ", prefix_);
  try {
    flush_sync_close(bin_, bin_tmp_);

    std::FILE* idx = std::fopen(idx_tmp_.c_str(), "wb");
    WEFT_CHECK(idx != nullptr, "cannot create ", idx_tmp_, ": ", std::strerror(errno));
    std::setvbuf(idx, nullptr, _IOFBF, 1 << 20);
    try {
      const uint64_t n = lengths_.size();
      const uint64_t version = 1, docs = n + 1;
      const uint8_t code = static_cast<uint8_t>(dtype_code_);
      write_all(idx, kMagic, 9, idx_tmp_);
      write_all(idx, &version, 8, idx_tmp_);
      write_all(idx, &code, 1, idx_tmp_);
      write_all(idx, &n, 8, idx_tmp_);
      write_all(idx, &docs, 8, idx_tmp_);
      write_all(idx, lengths_.data(), n * 4, idx_tmp_);
      // Offsets and document indices are derived, so stream them in chunks rather than hold
      // another 16 bytes per document.
      std::vector<int64_t> chunk;
      chunk.reserve(1 << 16);
      int64_t offset = 0;
      for (uint64_t i = 0; i < n; ++i) {
        chunk.push_back(offset);
        offset += lengths_[i] * itemsize_;
        if (chunk.size() == chunk.capacity() || i + 1 == n) {
          write_all(idx, chunk.data(), chunk.size() * 8, idx_tmp_);
          chunk.clear();
        }
      }
      for (uint64_t i = 0; i <= n; ++i) {
        chunk.push_back(static_cast<int64_t>(i));
        if (chunk.size() == chunk.capacity() || i == n) {
          write_all(idx, chunk.data(), chunk.size() * 8, idx_tmp_);
          chunk.clear();
        }
      }
    } catch (...) {
      std::fclose(idx);
      throw;
    }
    flush_sync_close(idx, idx_tmp_);

    // Drop the old index first: between the two renames the new .bin then has no .idx (an
    // obviously incomplete pair) instead of sitting beside a stale index that still opens.
    WEFT_CHECK(std::remove(idx_path_.c_str()) == 0 || errno == ENOENT, "cannot replace ", idx_path_,
               ": ", std::strerror(errno));
    WEFT_CHECK(std::rename(bin_tmp_.c_str(), bin_path_.c_str()) == 0, "cannot rename ", bin_tmp_,
               " to ", bin_path_, ": ", std::strerror(errno));
    WEFT_CHECK(std::rename(idx_tmp_.c_str(), idx_path_.c_str()) == 0, "cannot rename ", idx_tmp_,
               " to ", idx_path_, ": ", std::strerror(errno));
    sync_dir_of(idx_path_);
  } catch (...) {
    abandon();
    finalized_ = true;  // the temporaries are gone; nothing left to clean up
    throw;
  }
  finalized_ = true;
}

}  // namespace weft

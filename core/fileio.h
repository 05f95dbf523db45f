// File I/O that checkpoints and metrics can trust: CRC-32C checksums, atomic whole-file writes,
// fsync, a checksumming streaming writer and read-only memory maps. POSIX only. Every failure
// throws weft::Error naming the path and the OS reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace weft {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4 and TFRecord.
// Extendable: crc32c(b, nb, crc32c(a, na)) == crc32c(a ++ b). Uses the SSE4.2 crc32 instruction
// when the CPU has it (checked once at run time), else a slice-by-8 table. Thread-safe.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

namespace detail {
// The two implementations behind crc32c(), exposed so tests can check they agree.
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc);
// Returns false (and computes nothing) when this CPU/build has no hardware CRC-32C.
bool crc32c_hardware(const void* data, size_t n, uint32_t crc, uint32_t* out);
}  // namespace detail

// The whole file as bytes. Throws weft::Error naming the path if it cannot be opened or read.
std::string read_file(const std::string& path);

// Replaces `path` with `contents` so that readers see either the old file or the complete new one,
// even across a crash: writes `path.tmp.<pid>`, fsyncs it, renames it over `path`, fsyncs the
// parent directory. The temporary file is removed on failure. Throws weft::Error.
void write_file_atomic(const std::string& path, const std::string& contents);

// fsync(2) on a file or directory, so its contents (or, for a directory, its entries) are durable.
void fsync_path(const std::string& path);

// Streams bytes to a new file, keeping a running CRC-32C and byte count of what was written.
// Owns its file descriptor. write() is unbuffered (one or more write(2) calls per call), so batch
// small writes. close() fsyncs and closes; the destructor of a writer that was not closed closes
// the descriptor without fsync and without throwing (the file is then not known to be durable).
// Errors (ENOSPC, EIO, …) throw weft::Error naming the path and errno text. Not thread-safe.
class FileWriter {
 public:
  enum class Mode {
    kTruncate,   // create or truncate
    kCreateNew,  // create; fail if the path exists (O_EXCL)
  };
  explicit FileWriter(const std::string& path, Mode mode = Mode::kTruncate);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  void write(const void* data, size_t n);
  void write(const std::string& s) { write(s.data(), s.size()); }
  // fsync + close. Idempotent; writing after close() throws.
  void close();

  uint32_t crc() const { return crc_; }
  uint64_t bytes() const { return bytes_; }
  const std::string& path() const { return path_; }
  bool is_open() const { return fd_ >= 0; }

 private:
  std::string path_;
  int fd_ = -1;
  uint32_t crc_ = 0;
  uint64_t bytes_ = 0;
};

// A read-only, private memory map of a whole file, valid for the object's lifetime. An empty
// file maps to data() == nullptr, size() == 0. Owns the mapping (the descriptor is closed right
// after mapping). Movable, not copyable. The constructor throws weft::Error naming the path.
// Reading data() concurrently from several threads is safe; the file must not be truncated by
// anyone while mapped (that would SIGBUS the reader).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void unmap() noexcept;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace weft

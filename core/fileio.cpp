// CRC-32C (hardware three-stream or slice-by-8), whole-file reads, atomic writes, fsync, the
// checksumming FileWriter and MappedFile. POSIX system calls, retried on EINTR and short writes.
#include "core/fileio.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "weft/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define WEFT_CRC32C_X86 1
#endif

namespace weft {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // Castagnoli, bit-reversed

// Slice-by-8 tables: t[0] is the byte-at-a-time table; t[k][b] is the CRC contribution of byte b
// followed by k zero bytes, so eight bytes fold in with eight lookups and no dependency chain.
struct SliceTables {
  uint32_t t[8][256];
};

constexpr SliceTables make_slice_tables() {
  SliceTables s{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    s.t[0][b] = c;
  }
  for (int k = 1; k < 8; ++k)
    for (uint32_t b = 0; b < 256; ++b)
      s.t[k][b] = (s.t[k - 1][b] >> 8) ^ s.t[0][s.t[k - 1][b] & 0xff];
  return s;
}

constexpr SliceTables kSlice = make_slice_tables();

inline uint64_t load_le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // x86/ARM hosts are little-endian; safetensors/TFRecord assume it too
  return v;
}

// Operates on the raw register (no pre/post inversion).
uint32_t portable_raw(const uint8_t* p, size_t n, uint32_t c) {
  while (n && (reinterpret_cast<uintptr_t>(p) & 7)) {
    c = kSlice.t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    --n;
  }
  const auto& t = kSlice.t;
  for (; n >= 8; n -= 8, p += 8) {
    const uint64_t w = load_le64(p) ^ c;
    c = t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff] ^ t[5][(w >> 16) & 0xff] ^
        t[4][(w >> 24) & 0xff] ^ t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff] ^
        t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];
  }
  while (n--) c = kSlice.t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;
}

#ifdef WEFT_CRC32C_X86
// The crc32 instruction has a latency of three cycles but a throughput of one, so the hardware
// path runs three independent streams over adjacent blocks and then merges them. Merging needs
// "advance a register over L zero bytes", a linear map on 32 bits: the register update is
// linear, so crc(A ++ B) = Z_|B|(crc(A)) ^ crc_from_zero(B). Z_L is tabulated per input byte.
struct ZeroShift {
  uint32_t t[4][256];
  uint32_t apply(uint32_t c) const {
    return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
  }
};

ZeroShift make_zero_shift(size_t len) {
  uint32_t basis[32];
  for (int bit = 0; bit < 32; ++bit) {
    uint32_t c = 1u << bit;
    for (size_t i = 0; i < len; ++i) c = kSlice.t[0][c & 0xff] ^ (c >> 8);
    basis[bit] = c;
  }
  ZeroShift z{};
  for (int k = 0; k < 4; ++k)
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t v = 0;
      for (int bit = 0; bit < 8; ++bit)
        if (b & (1u << bit)) v ^= basis[8 * k + bit];
      z.t[k][b] = v;
    }
  return z;
}

constexpr size_t kLongBlock = 8192;  // per stream; 24 KiB per round
constexpr size_t kShortBlock = 256;  // per stream; 768 B per round

struct HwShifts {
  ZeroShift long_shift = make_zero_shift(kLongBlock);
  ZeroShift short_shift = make_zero_shift(kShortBlock);
};

const HwShifts& hw_shifts() {
  static const HwShifts s;  // thread-safe one-time init, ~0.3 ms
  return s;
}

__attribute__((target("sse4.2"))) uint32_t hw_bytes(const uint8_t* p, size_t n, uint32_t c) {
  while (n--) c = _mm_crc32_u8(c, *p++);
  return c;
}

__attribute__((target("sse4.2"))) uint32_t hw_three_way(const uint8_t*& p, size_t& n, uint32_t c,
                                                        size_t block, const ZeroShift& shift) {
  while (n >= 3 * block) {
    uint64_t c0 = c, c1 = 0, c2 = 0;
    const uint8_t* end = p + block;
    for (; p < end; p += 8) {
      c0 = _mm_crc32_u64(c0, load_le64(p));
      c1 = _mm_crc32_u64(c1, load_le64(p + block));
      c2 = _mm_crc32_u64(c2, load_le64(p + 2 * block));
    }
    c = shift.apply(static_cast<uint32_t>(c0)) ^ static_cast<uint32_t>(c1);
    c = shift.apply(c) ^ static_cast<uint32_t>(c2);
    p += 2 * block;
    n -= 3 * block;
  }
  return c;
}

__attribute__((target("sse4.2"))) uint32_t hardware_raw(const uint8_t* p, size_t n, uint32_t c) {
  const size_t head = std::min(n, static_cast<size_t>((8 - (reinterpret_cast<uintptr_t>(p) & 7)) & 7));
  c = hw_bytes(p, head, c);
  p += head;
  n -= head;
  if (n >= 3 * kShortBlock) {
    const HwShifts& s = hw_shifts();
    c = hw_three_way(p, n, c, kLongBlock, s.long_shift);
    c = hw_three_way(p, n, c, kShortBlock, s.short_shift);
  }
  uint64_t c64 = c;
  for (; n >= 8; n -= 8, p += 8) c64 = _mm_crc32_u64(c64, load_le64(p));
  return hw_bytes(p, n, static_cast<uint32_t>(c64));
}

bool cpu_has_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

// "No space left on device (ENOSPC)": the text for people, the name for searching and scripts.
std::string errno_text(int err) {
  const char* name = strerrorname_np(err);
  return str(std::strerror(err), " (", name ? name : std::to_string(err).c_str(), ")");
}

int open_or_throw(const std::string& path, int flags, mode_t mode, const char* what) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  WEFT_CHECK(fd >= 0, "cannot open ", path, " for ", what, ": ", errno_text(errno),
             " (check that the path exists and is accessible)");
  return fd;
}

}  // namespace

namespace detail {

uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc) {
  return ~portable_raw(static_cast<const uint8_t*>(data), n, ~crc);
}

bool crc32c_hardware(const void* data, size_t n, uint32_t crc, uint32_t* out) {
#ifdef WEFT_CRC32C_X86
  if (!cpu_has_sse42()) return false;
  *out = ~hardware_raw(static_cast<const uint8_t*>(data), n, ~crc);
  return true;
#else
  (void)data, (void)n, (void)crc, (void)out;
  return false;
#endif
}

}  // namespace detail

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  uint32_t out;
  if (detail::crc32c_hardware(data, n, crc, &out)) return out;
  return detail::crc32c_portable(data, n, crc);
}

std::string read_file(const std::string& path) {
  const int fd = open_or_throw(path, O_RDONLY, 0, "reading");
  struct stat st;
  std::string out;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      fail(str("cannot read ", path, ": ", errno_text(err)), __FILE__, __LINE__);
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

void fsync_path(const std::string& path) {
  const int fd = open_or_throw(path, O_RDONLY, 0, "fsync");
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  WEFT_CHECK(rc == 0, "fsync of ", path, " failed: ", errno_text(err),
             " (the storage may be failing or full)");
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  const std::string tmp = str(path, ".tmp.", ::getpid());
  try {
    FileWriter w(tmp);
    w.write(contents);
    w.close();
    WEFT_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path, ": ",
               errno_text(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  fsync_path(parent.empty() ? "." : parent.string());
}

// ---- FileWriter ---------------------------------------------------------------------------------

FileWriter::FileWriter(const std::string& path, Mode mode) : path_(path) {
  const int flags = O_WRONLY | O_CREAT | (mode == Mode::kCreateNew ? O_EXCL : O_TRUNC);
  fd_ = open_or_throw(path, flags, 0644, "writing");
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void FileWriter::write(const void* data, size_t n) {
  WEFT_CHECK(fd_ >= 0, "write to ", path_, " after close()");
  const auto* p = static_cast<const uint8_t*>(data);
  crc_ = crc32c(p, n, crc_);
  size_t left = n;
  while (left > 0) {
    // Linux caps one write(2) at ~2 GiB; keep each call well below that.
    const ssize_t w = ::write(fd_, p, std::min(left, static_cast<size_t>(1) << 30));
    if (w < 0 && errno == EINTR) continue;
    WEFT_CHECK(w > 0, "cannot write ", path_, " (", bytes_ + (n - left), " bytes written so far): ",
               w < 0 ? errno_text(errno) : "write returned 0",
               " (free disk space or choose another directory)");
    p += w;
    left -= static_cast<size_t>(w);
  }
  bytes_ += n;
}

void FileWriter::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  fd_ = -1;
  int rc = ::fsync(fd);
  const int sync_err = errno;
  const int rc_close = ::close(fd);
  const int close_err = errno;
  WEFT_CHECK(rc == 0, "fsync of ", path_, " failed: ", errno_text(sync_err),
             " (the data may not be on disk; free disk space or check the device)");
  WEFT_CHECK(rc_close == 0, "close of ", path_, " failed: ", errno_text(close_err));
}

// ---- MappedFile ---------------------------------------------------------------------------------

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = open_or_throw(path, O_RDONLY, 0, "reading");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(str("cannot stat ", path, ": ", errno_text(err)), __FILE__, __LINE__);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(str("cannot map ", path, ": not a regular file"), __FILE__, __LINE__);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    WEFT_CHECK(p != MAP_FAILED, "cannot mmap ", path, " (", size_, " bytes): ", errno_text(err));
    data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
}

MappedFile::~MappedFile() { unmap(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    unmap();
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

void MappedFile::unmap() noexcept {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace weft

// Cache entries: NAME.i64 = "WEFTIDXC" | u64 version=1 | u64 key bytes K | u64 count N |
// key (K bytes, zero-padded to a multiple of 8) | u64 CRC-32C of everything before it |
// int64[N] values, little-endian; the values start 8-aligned so the mapping is read in place.
// The header checksum catches a damaged header; the size check catches a truncated file.
#include "runtime/data/data_cache.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <mutex>
#include <optional>
#include <random>
#include <set>

#include "weft/error.h"
#include "core/fileio.h"

namespace fs = std::filesystem;

namespace weft {
namespace {

constexpr char kMagic[8] = {'W', 'E', 'F', 'T', 'I', 'D', 'X', 'C'};
constexpr uint64_t kVersion = 1;
constexpr size_t kFixedHeader = 32;  // magic, version, key bytes, count
constexpr uint64_t kMaxKey = 1 << 16;

std::atomic<int64_t> g_builds{0};

uint64_t pad8(uint64_t n) { return (n + 7) / 8 * 8; }
uint64_t header_bytes(uint64_t key_bytes) { return kFixedHeader + pad8(key_bytes) + 8; }

std::string header_for(const std::string& key, int64_t count) {
  std::string h(header_bytes(key.size()), '\0');
  const uint64_t fields[3] = {kVersion, key.size(), static_cast<uint64_t>(count)};
  std::memcpy(h.data(), kMagic, 8);
  std::memcpy(h.data() + 8, fields, sizeof(fields));
  std::memcpy(h.data() + kFixedHeader, key.data(), key.size());
  const uint64_t crc = crc32c(h.data(), h.size() - 8);
  std::memcpy(h.data() + h.size() - 8, &crc, 8);
  return h;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// The entry at `path` if it is complete and was built for (key, count). Otherwise nullopt, with
// `why` empty for a missing file, else the reason it cannot be trusted.
std::optional<Int64Array> try_read(const std::string& path, const std::string& key, int64_t count,
                                   std::string& why) {
  why.clear();
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  std::shared_ptr<const MappedFile> file;
  try {
    file = std::make_shared<const MappedFile>(path);
  } catch (const Error& e) {
    return why = str("unreadable (", e.what(), ")"), std::nullopt;
  }
  const uint64_t size = file->size();
  const char* p = reinterpret_cast<const char*>(file->data());
  if (size < kFixedHeader) return why = str("damaged (", size, " bytes, shorter than its header)"), std::nullopt;
  uint64_t fields[3];
  std::memcpy(fields, p + 8, sizeof(fields));
  if (std::memcmp(p, kMagic, 8) != 0) return why = "damaged (bad magic)", std::nullopt;
  if (fields[0] != kVersion)
    return why = str("from another version (format ", fields[0], ", expected ", kVersion, ")"), std::nullopt;
  if (fields[1] > kMaxKey || size < header_bytes(fields[1])) return why = "damaged (truncated header)", std::nullopt;
  const uint64_t header = header_bytes(fields[1]);
  uint64_t stored_crc;
  std::memcpy(&stored_crc, p + header - 8, 8);
  if (stored_crc != crc32c(p, header - 8)) return why = "damaged (header checksum mismatch)", std::nullopt;
  if (fields[1] != key.size() || std::memcmp(p + kFixedHeader, key.data(), key.size()) != 0)
    return why = "stale (built for other dataset files or options)", std::nullopt;
  const uint64_t n = fields[2];
  if (n != static_cast<uint64_t>(count))
    return why = str("damaged (", n, " values where ", count, " belong)"), std::nullopt;
  if ((size - header) / 8 != n || (size - header) % 8 != 0)
    return why = str("damaged (", size, " bytes; its ", n, " values need ", header + 8 * n, ")"), std::nullopt;
  // Binary searches and shuffle lookups: no read-ahead.
  ::madvise(const_cast<uint8_t*>(file->data()), size, MADV_RANDOM);
  const auto* values = reinterpret_cast<const int64_t*>(p + header);
  return Int64Array(std::move(file), values, count);
}

// Writes the entry under a temporary name, fsyncs it and renames it into place.
void store(const std::string& dir, const std::string& path, const std::string& key,
           const std::vector<int64_t>& values) {
  // pid and a random tag: ranks on different machines can share a pid.
  const std::string tmp = str(path, ".tmp.", ::getpid(), ".", std::random_device{}());
  try {
    FileWriter w(tmp);
    w.write(header_for(key, static_cast<int64_t>(values.size())));
    w.write(values.data(), values.size() * sizeof(int64_t));
    w.close();
    WEFT_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path, ": ",
               std::strerror(errno));
    fsync_path(dir);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

// Temporaries of builders that were killed; only called with the directory's lock held, when no
// one else can be writing one.
void remove_temporaries(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename().string().find(".i64.tmp.") != std::string::npos) fs::remove(e.path(), ec);
  }
}

// 64-bit FNV-1a, for a short stable directory name.
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

Int64Array::Int64Array(std::vector<int64_t> values) {
  auto owned = std::make_shared<const std::vector<int64_t>>(std::move(values));
  data_ = owned->data();
  size_ = static_cast<int64_t>(owned->size());
  owner_ = std::move(owned);
}

std::string file_stamp(int fd, const std::string& path) {
  struct stat st;
  WEFT_CHECK(::fstat(fd, &st) == 0, "cannot stat ", path, ": ", std::strerror(errno));
  const int64_t mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return str(st.st_ino, ":", st.st_size, ":", mtime_ns);
}

int64_t data_cache_builds() { return g_builds.load(); }

DataCache::DataCache(std::string dir, std::string dataset, bool configured)
    : dir_(std::move(dir)), dataset_(std::move(dataset)), configured_(configured) {}

std::shared_ptr<DataCache> DataCache::for_dataset(const std::string& prefix, const std::string& cache_dir) {
  if (cache_dir.empty()) return std::shared_ptr<DataCache>(new DataCache(prefix + ".weft_cache", prefix, false));
  std::error_code ec;
  fs::path abs = fs::absolute(prefix, ec).lexically_normal();
  std::ostringstream name;
  name << fs::path(prefix).filename().string() << '-' << std::hex << std::setw(16) << std::setfill('0')
       << fnv1a(abs.string()) << ".weft_cache";
  return std::shared_ptr<DataCache>(new DataCache((fs::path(cache_dir) / name.str()).string(), prefix, true));
}

std::shared_ptr<DataCache> DataCache::in_memory() { return std::shared_ptr<DataCache>(new DataCache("", "", false)); }

std::vector<int64_t> DataCache::build_checked(const std::function<std::vector<int64_t>()>& build, int64_t count,
                                              const std::string& what) {
  std::vector<int64_t> values = build();
  WEFT_CHECK(static_cast<int64_t>(values.size()) == count, "data index cache of ", dataset_, ": ", what,
             " has ", values.size(), " values, expected ", count, " (a bug)");
  ++g_builds;
  return values;
}

Int64Array DataCache::get(const std::string& name, const std::string& key, int64_t count,
                          const std::function<std::vector<int64_t>()>& build, const std::string& what) {
  if (dir_.empty()) return Int64Array(build_checked(build, count, what));
  std::string why;
  if (auto hit = try_read(dir_ + "/" + name + ".i64", key, count, why)) return *hit;
  return build_and_store(name, key, count, build, what);
}

std::optional<Int64Array> DataCache::find(const std::string& name, const std::string& key, int64_t count) const {
  if (dir_.empty()) return std::nullopt;
  std::string why;
  return try_read(dir_ + "/" + name + ".i64", key, count, why);
}

Int64Array DataCache::build_and_store(const std::string& name, const std::string& key, int64_t count,
                                      const std::function<std::vector<int64_t>()>& build,
                                      const std::string& what) {
  const std::string path = dir_ + "/" + name + ".i64";
  std::error_code ec;
  fs::create_directories(dir_, ec);
  Fd lock;
  if (!ec) lock.fd = ::open((dir_ + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (ec || lock.fd < 0) {
    warn_unwritable(ec ? ec.message() : std::string(std::strerror(errno)));
    return Int64Array(build_checked(build, count, what));
  }
  int rc;
  while ((rc = ::flock(lock.fd, LOCK_EX)) != 0 && errno == EINTR) {
  }
  // Some shared file systems refuse locks; building without one could race another builder.
  if (rc != 0) {
    warn_unwritable(str("cannot lock ", dir_, "/lock: ", std::strerror(errno)));
    return Int64Array(build_checked(build, count, what));
  }
  // Another rank may have built the entry while this one waited for the lock.
  std::string why;
  if (auto hit = try_read(path, key, count, why)) return *hit;
  if (!why.empty()) LOG(WARNING) << "the data index cache " << path << " is " << why << "; rebuilding it";
  remove_temporaries(dir_);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int64_t> values = build_checked(build, count, what);
  try {
    store(dir_, path, key, values);
  } catch (const Error& e) {
    warn_unwritable(e.what());
    return Int64Array(std::move(values));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  LOG(INFO) << "built the data index cache for " << dataset_ << " (" << what << ") in " << std::fixed
            << std::setprecision(2) << s << " s: " << path;
  // Read back through the mapping, so the built copy's memory is returned now.
  if (auto mapped = try_read(path, key, count, why)) return *mapped;
  return Int64Array(std::move(values));
}

void DataCache::warn_unwritable(const std::string& why) const {
  static std::mutex mutex;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mutex);
  if (!warned.insert(dir_).second) return;
  LOG(WARNING) << "cannot write the data index cache " << dir_ << " (" << why << "); building the index of "
               << dataset_ << " in memory instead, which costs time and memory linear in its size at every start"
               << (configured_ ? "; point data.cache_dir at a writable directory"
                               : "; set data.cache_dir to a writable directory");
}

}  // namespace weft

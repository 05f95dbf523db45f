// The on-disk cache of what opening a dataset derives from it (token range, the split's token
// offsets, each epoch's shuffle), so that a restart opens a dataset of any size in O(1) time and
// memory: the arrays are built once, written beside the dataset and read back through mmap.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace weft {

// A read-only array of int64 values, either built in memory or a view into a mapped cache file
// (then only the pages read count toward the process's memory). Copies share the storage.
// Thread safety: immutable; safe to read concurrently.
class Int64Array {
 public:
  Int64Array() = default;
  explicit Int64Array(std::vector<int64_t> values);
  // A view of data[0, size) kept alive by `owner` (e.g. a mapping).
  Int64Array(std::shared_ptr<const void> owner, const int64_t* data, int64_t size)
      : owner_(std::move(owner)), data_(data), size_(size) {}

  int64_t size() const { return size_; }
  const int64_t* begin() const { return data_; }
  const int64_t* end() const { return data_ + size_; }
  int64_t operator[](int64_t i) const { return data_[i]; }
  int64_t back() const { return data_[size_ - 1]; }

 private:
  std::shared_ptr<const void> owner_;
  const int64_t* data_ = nullptr;
  int64_t size_ = 0;
};

// "ino:size:mtime_ns" of an open file, the identity a cache entry is keyed by (a rewritten file
// changes at least one of them; the device number is left out because a shared file system can
// show one file under different device numbers on different machines). Throws weft::Error.
std::string file_stamp(int fd, const std::string& path);

// One dataset's cache directory: files NAME.i64, each an int64 array behind a header with a
// magic, version, the key it was built for, its length and a CRC-32C of the header.
// Concurrency: any number of processes (ranks) may open the same directory at once. A missing,
// stale (other key) or damaged entry is built by exactly one of them, under an exclusive flock
// on DIR/lock; the others wait for the lock, then find the entry complete. Entries are written
// to a temporary name, fsynced and renamed, so a killed builder leaves nothing that reads as
// complete (its temporaries are removed by the next builder).
// A directory that cannot be created or written (read-only dataset directory and no
// data.cache_dir) is not an error: entries are then built in memory every time, with one warning
// per directory and process.
// Thread safety: get() may be called from any thread.
class DataCache {
 public:
  // The cache of dataset PREFIX: PREFIX.weft_cache/ beside it, or, when cache_dir is not empty,
  // cache_dir/BASENAME-HASH.weft_cache/ (HASH of PREFIX's absolute path, so that datasets with
  // the same file name do not share a directory).
  static std::shared_ptr<DataCache> for_dataset(const std::string& prefix, const std::string& cache_dir);
  // No files: get() always builds. For datasets opened without a cache.
  static std::shared_ptr<DataCache> in_memory();

  const std::string& dir() const { return dir_; }

  // Entry `name` (a file name without extension: letters, digits, '-', '_'), when it holds
  // `count` values and was built for `key` (any text naming everything the values depend on).
  // Otherwise runs build() (which must return `count` values and may throw; nothing is stored
  // then), stores the result and returns it. `what` describes the entry in the build's log line.
  Int64Array get(const std::string& name, const std::string& key, int64_t count,
                 const std::function<std::vector<int64_t>()>& build, const std::string& what);
  // Entry `name` if it is stored, complete and was built for (key, count); never builds, never
  // logs. Always nullopt in memory.
  std::optional<Int64Array> find(const std::string& name, const std::string& key, int64_t count) const;

 private:
  DataCache(std::string dir, std::string dataset, bool configured);
  Int64Array build_and_store(const std::string& name, const std::string& key, int64_t count,
                             const std::function<std::vector<int64_t>()>& build, const std::string& what);
  std::vector<int64_t> build_checked(const std::function<std::vector<int64_t>()>& build, int64_t count,
                                     const std::string& what);
  void warn_unwritable(const std::string& why) const;

  std::string dir_;      // empty: in memory only
  std::string dataset_;  // PREFIX, for messages
  bool configured_ = false;  // dir_ comes from data.cache_dir
};

// Number of cache entries built (not read back) in this process so far; tests use it to see
// that a second open reads instead of rebuilding. Thread-safe.
int64_t data_cache_builds();

}  // namespace weft

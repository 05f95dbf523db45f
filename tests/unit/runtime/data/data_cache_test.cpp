// The dataset index cache: built once and then read (not rebuilt, not rescanned), rebuilt when
// the dataset changes or a cache file is damaged, identical samples with and without it, one
// builder among concurrent openers, and the in-memory fallback for an unwritable directory.
#include "runtime/data/data_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "runtime/data/gpt_dataset.h"
#include "tests/unit/runtime/data/data_test_util.h"

namespace weft {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::read_file;
using testing::TempDir;
using testing::write_file;

constexpr int64_t kVocab = 512;

// Documents of pseudo-random tokens in [0, 500), lengths 1..40.
void write_dataset(const std::string& prefix, int docs, uint64_t seed) {
  IndexedDatasetWriter w(prefix, kDtypeUInt16);
  uint64_t x = seed * 2654435761u + 1;
  for (int d = 0; d < docs; ++d) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    std::vector<int64_t> doc(1 + (x >> 33) % 40);
    for (auto& t : doc) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      t = static_cast<int64_t>((x >> 33) % 500);
    }
    w.add_document(doc);
  }
  w.finalize();
}

GPTDatasetOptions options(int64_t seq_len = 7, const std::string& cache_dir = "") {
  GPTDatasetOptions o;
  o.seq_len = seq_len;
  o.split = "90,10";
  o.cache_dir = cache_dir;
  return o;
}

// Samples [first, first + n) as one flat vector.
std::vector<int64_t> samples(const SampleSource& s, int64_t first, int64_t n) {
  std::vector<int64_t> out(static_cast<size_t>(n * (s.seq_len() + 1)));
  for (int64_t i = 0; i < n; ++i) s.get(first + i, out.data() + i * (s.seq_len() + 1));
  return out;
}

// The same samples computed without any cache, from a freshly validated dataset.
std::vector<int64_t> reference_samples(const std::string& prefix, const GPTDatasetOptions& o, int64_t first,
                                       int64_t n) {
  GPTDataset ref(std::make_shared<const IndexedDataset>(prefix), o);
  return samples(ref, first, n);
}

// Overwrites the file in place (same inode and size) and restores its modification time, so its
// identity as the cache sees it is unchanged.
void overwrite_keeping_stamp(const std::string& path, const std::string& bytes) {
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  ASSERT_EQ(bytes.size(), static_cast<size_t>(st.st_size));
  write_file(path, bytes);
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

TEST(DataCacheTest, SecondOpenReadsTheCacheInsteadOfScanning) {
  TempDir dir;
  const std::string prefix = dir.file("corpus");
  write_dataset(prefix, 300, 1);
  const auto o = options();
  const int64_t before = data_cache_builds();
  auto first = open_training_data(prefix, {}, o, kVocab);
  const int64_t n = first->num_samples();
  auto expected = samples(*first, 0, 3 * n);  // three epochs
  // The token range + checks, the split's offsets and three epochs' shuffles.
  EXPECT_EQ(data_cache_builds() - before, 5);
  for (const char* f : {"tokens.i64", "offsets-0-270.i64", "shuffle-n", "lock"}) {
    bool found = false;
    for (const auto& e : fs::directory_iterator(prefix + ".weft_cache"))
      found |= e.path().filename().string().rfind(f, 0) == 0;
    EXPECT_TRUE(found) << f;
  }

  // A .bin now full of out-of-vocabulary tokens, but with the size and mtime the cache was built
  // for: a second open that scanned the tokens would refuse it; one that reads the cache does not.
  overwrite_keeping_stamp(prefix + ".bin", std::string(read_file(prefix + ".bin").size(), '\xff'));
  const int64_t mid = data_cache_builds();
  auto second = open_training_data(prefix, {}, o, kVocab);
  EXPECT_EQ(second->num_samples(), n);
  std::vector<int64_t> out(8);
  second->get(2 * n + 5, out.data());  // epoch 2's shuffle is read, not drawn again
  EXPECT_EQ(data_cache_builds(), mid);
  EXPECT_EQ(out[0], 65535);
}

TEST(DataCacheTest, SamplesMatchTheUncachedDatasetFromFilesAndFromMemory) {
  TempDir dir;
  const std::string prefix = dir.file("corpus");
  write_dataset(prefix, 200, 2);
  for (int64_t T : {1, 5, 16}) {
    for (auto which : {SplitPart::kTrain, SplitPart::kValid}) {
      auto o = options(T);
      o.which = which;
      o.shuffle = which == SplitPart::kTrain;
      const int64_t n = GPTDataset(std::make_shared<const IndexedDataset>(prefix), o).num_samples();
      auto want = reference_samples(prefix, o, 0, 2 * n + 3);
      auto built = open_training_data(prefix, {}, o, kVocab);   // builds the files
      auto mapped = open_training_data(prefix, {}, o, kVocab);  // reads them
      EXPECT_EQ(samples(*built, 0, 2 * n + 3), want) << T;
      EXPECT_EQ(samples(*mapped, 0, 2 * n + 3), want) << T;
    }
  }
}

TEST(DataCacheTest, RewrittenDatasetIsRebuilt) {
  TempDir dir;
  const std::string prefix = dir.file("corpus");
  write_dataset(prefix, 100, 3);
  const auto o = options();
  auto old = open_training_data(prefix, {}, o, kVocab);
  samples(*old, 0, 1);
  write_dataset(prefix, 150, 4);  // new files (new inodes), another size
  const int64_t before = data_cache_builds();
  auto fresh = open_training_data(prefix, {}, o, kVocab);
  EXPECT_EQ(data_cache_builds() - before, 2);  // token range and offsets; the shuffle has a new n
  EXPECT_EQ(samples(*fresh, 0, 20), reference_samples(prefix, o, 0, 20));

  // Same size, but a token out of the vocabulary and a new mtime: the scan runs again and sees it.
  std::string bin = read_file(prefix + ".bin");
  bin[0] = '\xff', bin[1] = '\xff';
  write_file(prefix + ".bin", bin);
  const struct timespec later[2] = {{0, UTIME_OMIT}, {1, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (prefix + ".bin").c_str(), later, 0), 0);
  std::string msg = error_of([&] { open_training_data(prefix, {}, o, kVocab); });
  EXPECT_NE(msg.find("65535"), std::string::npos) << msg;
}

TEST(DataCacheTest, DamagedCacheFilesAreRebuiltNeverTrusted) {
  TempDir dir;
  const std::string prefix = dir.file("corpus");
  write_dataset(prefix, 100, 5);
  const auto o = options();
  const auto want = reference_samples(prefix, o, 0, 30);
  samples(*open_training_data(prefix, {}, o, kVocab), 0, 1);
  const std::string cache = prefix + ".weft_cache/";
  const std::string offsets = cache + "offsets-0-90.i64";
  const std::string good = read_file(offsets);
  std::vector<std::pair<std::string, std::string>> damages = {
      {"truncated", good.substr(0, good.size() - 8)},
      {"header byte flipped", std::string(good).replace(40, 1, "\x7f")},
      {"bad magic", "XXXX" + good.substr(4)},
      {"empty", ""},
      {"longer", good + std::string(8, '\0')},
  };
  std::string version2 = good;
  version2[8] = 2;
  damages.emplace_back("other version", version2);
  for (const auto& [what, bytes] : damages) {
    write_file(offsets, bytes);
    const int64_t before = data_cache_builds();
    auto d = open_training_data(prefix, {}, o, kVocab);
    EXPECT_EQ(data_cache_builds() - before, 1) << what;
    EXPECT_EQ(samples(*d, 0, 30), want) << what;
    EXPECT_EQ(read_file(offsets), good) << what;
  }
  // A killed builder's temporary is never read as the entry, and the next builder removes it.
  fs::remove(offsets);
  write_file(offsets + ".tmp.12345", good);
  const int64_t before = data_cache_builds();
  open_training_data(prefix, {}, o, kVocab);
  EXPECT_EQ(data_cache_builds() - before, 1);
  EXPECT_FALSE(fs::exists(offsets + ".tmp.12345"));
}

TEST(DataCacheTest, ConcurrentOpenersBuildEachEntryOnce) {
  TempDir dir;
  const std::string prefix = dir.file("corpus");
  write_dataset(prefix, 2000, 6);
  const auto o = options(3);
  const auto want = reference_samples(prefix, o, 0, 50);
  const int64_t before = data_cache_builds();
  std::vector<std::vector<int64_t>> got(8);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < got.size(); ++t)
    threads.emplace_back([&, t] { got[t] = samples(*open_training_data(prefix, {}, o, kVocab), 0, 50); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(data_cache_builds() - before, 3);  // token range, offsets, epoch 0's shuffle
  for (const auto& g : got) EXPECT_EQ(g, want);
}

TEST(DataCacheTest, UnwritableCacheDirectoryFallsBackToMemory) {
  TempDir dir;
  const std::string prefix = dir.file("corpus");
  write_dataset(prefix, 100, 7);
  const auto o = options();
  const auto want = reference_samples(prefix, o, 0, 20);
  // Where the cache directory would go there is a file: it cannot be created, as in a read-only
  // dataset directory (a test running as root could write through a read-only mode bit).
  write_file(prefix + ".weft_cache", "not a directory");
  for (int round = 0; round < 2; ++round) {
    const int64_t before = data_cache_builds();
    auto d = open_training_data(prefix, {}, o, kVocab);
    EXPECT_EQ(samples(*d, 0, 20), want);
    EXPECT_EQ(data_cache_builds() - before, 3);  // built in memory every time
  }
  EXPECT_EQ(read_file(prefix + ".weft_cache"), "not a directory");

  // data.cache_dir moves the cache somewhere writable; the dataset's directory is not touched.
  const std::string elsewhere = dir.file("caches");
  auto d = open_training_data(prefix, {}, options(7, elsewhere), kVocab);
  EXPECT_EQ(samples(*d, 0, 20), want);
  ASSERT_TRUE(fs::is_directory(elsewhere));
  const auto entry = fs::directory_iterator(elsewhere)->path().filename().string();
  EXPECT_EQ(entry.rfind("corpus-", 0), 0u) << entry;
  const int64_t before = data_cache_builds();
  open_training_data(prefix, {}, options(7, elsewhere), kVocab);
  EXPECT_EQ(data_cache_builds(), before);
}

TEST(DataCacheTest, LossMaskCheckIsCachedAndStillRefusesMismatch) {
  TempDir dir;
  const std::string prefix = dir.file("corpus");
  write_dataset(prefix, 50, 8);
  IndexedDataset data(prefix);
  {
    IndexedDatasetWriter mask(prefix + ".loss_mask", kDtypeUInt8);
    for (int64_t s = 0; s < data.num_sequences(); ++s)
      mask.add_document(std::vector<int64_t>(static_cast<size_t>(data.sequence_length(s)), s % 2));
    mask.finalize();
  }
  const auto o = options();
  auto first = open_training_data(prefix, {}, o, kVocab);
  const int64_t before = data_cache_builds();
  auto second = open_training_data(prefix, {}, o, kVocab);
  EXPECT_EQ(data_cache_builds(), before);
  ASSERT_TRUE(second->has_loss_mask());
  std::vector<int64_t> a(8), b(8);
  first->get_loss_mask(3, a.data());
  second->get_loss_mask(3, b.data());
  EXPECT_EQ(a, b);

  {  // a mask with one document too few is refused, cache or not
    IndexedDatasetWriter mask(prefix + ".loss_mask", kDtypeUInt8);
    for (int64_t s = 0; s + 1 < data.num_sequences(); ++s)
      mask.add_document(std::vector<int64_t>(static_cast<size_t>(data.sequence_length(s)), 1));
    mask.finalize();
  }
  for (int round = 0; round < 2; ++round) {
    std::string msg = error_of([&] { open_training_data(prefix, {}, o, kVocab); });
    EXPECT_NE(msg.find("does not have the sequence lengths"), std::string::npos) << msg;
  }
}

TEST(DataCacheTest, BlendRestartFarAheadReadsStoredCountsAndMatchesMemory) {
  TempDir dir;
  write_dataset(dir.file("a"), 100, 10);
  write_dataset(dir.file("b"), 60, 11);
  const auto o = options();
  const std::vector<std::string> blend = {"0.3", dir.file("a"), "0.7", dir.file("b")};
  const int64_t block = BlendedDataset::kBlockChunks * BlendedDataset::kChunk;  // samples per block
  const std::vector<int64_t> probes = {0, 1, block - 1, block, 2 * block + 12345, 3 * block - 1, 7};
  auto in_memory = [&] {  // the same sources, counts replayed in memory
    auto src = [&](const std::string& p) -> std::shared_ptr<const SampleSource> {
      return std::make_shared<GPTDataset>(std::make_shared<const IndexedDataset>(p), o);
    };
    return BlendedDataset({src(dir.file("a")), src(dir.file("b"))}, {0.3, 0.7});
  }();
  std::vector<std::pair<int, int64_t>> want;
  for (int64_t i : probes) want.push_back(in_memory.locate(i));
  auto first = open_training_data("", blend, o, kVocab);
  const int64_t before = data_cache_builds();
  for (size_t p = 0; p < probes.size(); ++p)
    EXPECT_EQ(dynamic_cast<BlendedDataset&>(*first).locate(probes[p]), want[p]) << probes[p];
  EXPECT_EQ(data_cache_builds() - before, 3);  // blocks 0, 1, 2

  // A restart at sample 2 * block + 12345 reads block 2; nothing is replayed or built.
  auto second = open_training_data("", blend, o, kVocab);
  const int64_t mid = data_cache_builds();
  EXPECT_EQ(dynamic_cast<BlendedDataset&>(*second).locate(probes[4]), want[4]);
  EXPECT_EQ(data_cache_builds(), mid);
  // Other weights are another blend: their counts are built, not taken from these files.
  auto other = open_training_data("", {"0.5", dir.file("a"), "0.5", dir.file("b")}, o, kVocab);
  dynamic_cast<BlendedDataset&>(*other).locate(0);
  EXPECT_EQ(data_cache_builds() - mid, 1);
}

TEST(IndexedDatasetDeferredTest, OpensWithoutTheBodyChecksAndReadsNothingBeforeThem) {
  TempDir dir;
  const std::string prefix = dir.file("corpus");
  write_dataset(prefix, 20, 9);
  // Cut the .bin short: only the per-sequence check (O(sequences)) notices.
  std::string bin = read_file(prefix + ".bin");
  write_file(prefix + ".bin", bin.substr(0, bin.size() - 2));
  std::string full = error_of([&] { IndexedDataset d(prefix); });
  EXPECT_NE(full.find("is shorter than"), std::string::npos) << full;
  IndexedDataset deferred(prefix, IndexedDataset::Checks::kDeferred);
  std::vector<int64_t> out(1);
  std::string msg = error_of([&] { deferred.read(0, 0, 1, out.data()); });
  EXPECT_NE(msg.find("before check_all() or trust()"), std::string::npos) << msg;
  EXPECT_EQ(error_of([&] { deferred.check_all(); }), full);
}

}  // namespace
}  // namespace weft

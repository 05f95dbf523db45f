// Tests for core/fileio: CRC-32C against published vectors and across both implementations,
// atomic writes, FileWriter errors (a full disk via /dev/full) and MappedFile.
#include "tests/unit/test_util.h"
#include "core/fileio.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <vector>

#include "weft/error.h"

namespace fs = std::filesystem;
namespace weft {
namespace {

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            str("weft_", info->test_suite_name(), "_", info->name(), "_", ::getpid());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

using testing::error_of;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(Crc32c, KnownVectors) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32c(check.data(), check.size()), 0xE3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  // RFC 3720 (iSCSI) appendix B.4.
  std::vector<uint8_t> buf(32, 0);
  EXPECT_EQ(crc32c(buf.data(), buf.size()), 0x8A9136AAu);
  std::fill(buf.begin(), buf.end(), 0xFF);
  EXPECT_EQ(crc32c(buf.data(), buf.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(crc32c(buf.data(), buf.size()), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(crc32c(buf.data(), buf.size()), 0x113FDB5Cu);
  EXPECT_EQ(detail::crc32c_portable(check.data(), check.size(), 0), 0xE3069283u);
}

TEST(Crc32c, HardwareMatchesPortableAtEveryLengthAndAlignment) {
  const auto data = random_bytes(200 * 1024 + 13, 1);
  uint32_t hw = 0;
  if (!detail::crc32c_hardware(data.data(), 1, 0, &hw)) GTEST_SKIP() << "no hardware CRC-32C";
  std::vector<size_t> lengths;
  for (size_t n = 0; n < 1200; ++n) lengths.push_back(n);
  for (size_t n : {24575u, 24576u, 24577u, 49152u + 769u, 100000u, 200000u}) lengths.push_back(n);
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t n : lengths) {
      const uint8_t* p = data.data() + offset;
      ASSERT_TRUE(detail::crc32c_hardware(p, n, 0x12345678u, &hw));
      ASSERT_EQ(hw, detail::crc32c_portable(p, n, 0x12345678u)) << "n=" << n << " off=" << offset;
    }
  }
}

TEST(Crc32c, Extends) {
  const auto data = random_bytes(70000, 2);
  const uint32_t whole = crc32c(data.data(), data.size());
  for (size_t split : {0u, 1u, 7u, 8u, 100u, 24576u, 30001u, 69999u, 70000u}) {
    const uint32_t a = crc32c(data.data(), split);
    EXPECT_EQ(crc32c(data.data() + split, data.size() - split, a), whole) << "split " << split;
    const uint32_t pa = detail::crc32c_portable(data.data(), split, 0);
    EXPECT_EQ(detail::crc32c_portable(data.data() + split, data.size() - split, pa), whole);
  }
}

TEST(FileIO, ReadFileMissingNamesPath) {
  TempDir dir;
  const std::string p = dir.file("nope.txt");
  const std::string msg = error_of([&] { read_file(p); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST(FileIO, WriteFileAtomicReplacesAndLeavesNoTemp) {
  TempDir dir;
  const std::string p = dir.file("latest");
  write_file_atomic(p, "step_100");
  EXPECT_EQ(read_file(p), "step_100");
  write_file_atomic(p, std::string("step_2\0x", 8));
  EXPECT_EQ(read_file(p), std::string("step_2\0x", 8));
  write_file_atomic(p, "");
  EXPECT_EQ(read_file(p), "");
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) ++entries, (void)e;
  EXPECT_EQ(entries, 1);
}

TEST(FileIO, WriteFileAtomicIntoMissingDirectoryNamesPath) {
  TempDir dir;
  const std::string p = dir.file("missing/latest");
  const std::string msg = error_of([&] { write_file_atomic(p, "x"); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST(FileIO, FsyncPath) {
  TempDir dir;
  write_file_atomic(dir.file("a"), "a");
  fsync_path(dir.file("a"));
  fsync_path(dir.path().string());
  const std::string msg = error_of([&] { fsync_path(dir.file("b")); });
  EXPECT_NE(msg.find(dir.file("b")), std::string::npos) << msg;
}

TEST(FileWriter, CountsAndChecksumsWhatItWrites) {
  TempDir dir;
  const std::string p = dir.file("blob");
  const auto data = random_bytes(100000, 3);
  FileWriter w(p);
  w.write(data.data(), 10);
  w.write(data.data() + 10, data.size() - 10);
  w.write(std::string());
  EXPECT_EQ(w.bytes(), data.size());
  EXPECT_EQ(w.crc(), crc32c(data.data(), data.size()));
  w.close();
  w.close();  // idempotent
  EXPECT_FALSE(w.is_open());
  const std::string back = read_file(p);
  ASSERT_EQ(back.size(), data.size());
  EXPECT_EQ(crc32c(back.data(), back.size()), w.crc());
  EXPECT_NE(error_of([&] { w.write("x", 1); }).find(p), std::string::npos);
}

TEST(FileWriter, TruncatesOrRefusesExisting) {
  TempDir dir;
  const std::string p = dir.file("f");
  write_file_atomic(p, "old contents");
  {
    FileWriter w(p);
    w.write("new");
    w.close();
  }
  EXPECT_EQ(read_file(p), "new");
  const std::string msg = error_of([&] { FileWriter w(p, FileWriter::Mode::kCreateNew); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST(FileWriter, DiskFullNamesPathAndReason) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  FileWriter w("/dev/full");
  std::vector<uint8_t> buf(4096, 1);
  const std::string msg = error_of([&] { w.write(buf.data(), buf.size()); });
  EXPECT_NE(msg.find("/dev/full"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::strerror(ENOSPC)), std::string::npos) << msg;
}

TEST(FileWriter, DestructorWithoutCloseKeepsData) {
  TempDir dir;
  const std::string p = dir.file("f");
  { FileWriter(p).write("abc"); }
  EXPECT_EQ(read_file(p), "abc");
}

TEST(MappedFile, MapsContentsAndMoves) {
  TempDir dir;
  const std::string p = dir.file("m");
  const auto data = random_bytes(12345, 4);
  write_file_atomic(p, std::string(data.begin(), data.end()));
  MappedFile m(p);
  ASSERT_EQ(m.size(), data.size());
  EXPECT_EQ(std::memcmp(m.data(), data.data(), data.size()), 0);
  MappedFile moved(std::move(m));
  EXPECT_EQ(m.data(), nullptr);
  EXPECT_EQ(m.size(), 0u);
  EXPECT_EQ(moved.size(), data.size());
  EXPECT_EQ(moved.data()[5], data[5]);
  write_file_atomic(dir.file("empty"), "");
  MappedFile e(dir.file("empty"));
  EXPECT_EQ(e.size(), 0u);
  e = std::move(moved);
  EXPECT_EQ(e.size(), data.size());
  EXPECT_EQ(e.path(), p);
}

TEST(MappedFile, ErrorsNamePath) {
  TempDir dir;
  EXPECT_NE(error_of([&] { MappedFile m(dir.file("missing")); }).find(dir.file("missing")),
            std::string::npos);
  EXPECT_NE(error_of([&] { MappedFile m(dir.path().string()); }).find(dir.path().string()),
            std::string::npos);
}

}  // namespace
}  // namespace weft

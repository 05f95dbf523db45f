// Tests for core/tensorboard: the Event encoding against bytes produced by protobuf itself, the
// TFRecord framing against TensorBoard's masked CRC, and the file a writer leaves behind.
#include "core/tensorboard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "weft/error.h"
#include "core/fileio.h"

namespace fs = std::filesystem;
namespace weft {
namespace {

std::string hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) out += {digits[c >> 4], digits[c & 15]};
  return out;
}

// Expected bytes come from tensorboard.compat.proto.event_pb2.Event(...).SerializeToString().
TEST(TensorBoardEncoding, MatchesProtobuf) {
  EXPECT_EQ(hex(detail::encode_scalar_event(1.5, 7, "loss", 0.25f)),
            "09000000000000f83f10072a0d0a0b0a046c6f7373150000803e");
  EXPECT_EQ(hex(detail::encode_file_version_event(2.0)),
            "0900000000000000401a0d627261696e2e4576656e743a32");
  // step -1 is a ten-byte varint; no summary here, so compare the prefix only.
  EXPECT_EQ(hex(detail::encode_scalar_event(1.5, -1, "", 0.f)).substr(0, 40),
            "09000000000000f83f10ffffffffffffffffff01");
}

// Expected values from tensorboard's pywrap_tensorflow.masked_crc32c.
TEST(TensorBoardEncoding, MaskedCrc) {
  EXPECT_EQ(detail::masked_crc32c("", 0), 0xa282ead8u);
  EXPECT_EQ(detail::masked_crc32c("hello", 5), 0x191c1fbbu);
  const std::string r = detail::tfrecord("hello");
  ASSERT_EQ(r.size(), 8u + 4 + 5 + 4);
  uint64_t len;
  uint32_t len_crc, data_crc;
  std::memcpy(&len, r.data(), 8);
  std::memcpy(&len_crc, r.data() + 8, 4);
  std::memcpy(&data_crc, r.data() + 17, 4);
  EXPECT_EQ(len, 5u);
  EXPECT_EQ(len_crc, detail::masked_crc32c(r.data(), 8));
  EXPECT_EQ(r.substr(12, 5), "hello");
  EXPECT_EQ(data_crc, 0x191c1fbbu);
}

// Splits an event file into record payloads, checking every CRC.
std::vector<std::string> read_records(const std::string& bytes) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < bytes.size()) {
    uint64_t len;
    uint32_t c1, c2;
    EXPECT_LE(pos + 12, bytes.size());
    std::memcpy(&len, bytes.data() + pos, 8);
    std::memcpy(&c1, bytes.data() + pos + 8, 4);
    EXPECT_EQ(c1, detail::masked_crc32c(bytes.data() + pos, 8));
    std::string data = bytes.substr(pos + 12, len);
    std::memcpy(&c2, bytes.data() + pos + 12 + len, 4);
    EXPECT_EQ(c2, detail::masked_crc32c(data.data(), data.size()));
    out.push_back(data);
    pos += 12 + len + 4;
  }
  return out;
}

class TensorBoardWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / str("weft_tb_", ::getpid(), "/run/tb")).string();
    fs::remove_all(fs::path(dir_).parent_path().parent_path());
  }
  void TearDown() override { fs::remove_all(fs::path(dir_).parent_path().parent_path()); }
  std::string dir_;
};

TEST_F(TensorBoardWriterTest, WritesFramedEventsAndFlushes) {
  std::string path;
  {
    TensorBoardWriter w(dir_);  // creates the nested directory
    path = w.path();
    const std::string name = fs::path(path).filename().string();
    EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
    EXPECT_EQ(name.substr(name.size() - 5), ".weft") << name;
    EXPECT_NE(name.find(str(".", ::getpid(), ".")), std::string::npos) << name;
    EXPECT_EQ(read_records(read_file(path)).size(), 1u);  // file_version, written at once

    w.add_scalar("loss", 2.5, 1);
    w.add_scalar("lr", 3e-4, 1);
    EXPECT_EQ(read_records(read_file(path)).size(), 1u);  // buffered
    w.flush();
    EXPECT_EQ(read_records(read_file(path)).size(), 3u);
    w.add_scalar("loss", 2.0, 2);
  }
  const auto records = read_records(read_file(path));
  ASSERT_EQ(records.size(), 4u);
  EXPECT_NE(records[0].find("brain.Event:2"), std::string::npos);
  EXPECT_NE(records[3].find("loss"), std::string::npos);
}

// Two writers in one directory (a resumed run in the same process) must not share or clobber a
// file: each file holds its own file_version record and exactly its own writer's scalar.
TEST_F(TensorBoardWriterTest, TwoWritersGetTwoFiles) {
  std::string path_a, path_b;
  {
    TensorBoardWriter a(dir_), b(dir_);
    path_a = a.path(), path_b = b.path();
    EXPECT_NE(path_a, path_b);
    a.add_scalar("x", 1, 0);
    b.add_scalar("x", 2, 0);
  }
  // The files are the directory's only two entries.
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir_)) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  auto expected = std::vector<std::string>{path_a, path_b};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(files, expected);
  // Each record ends in the simple_value field: tag 0x15, then the float (1.0f = 0000803f,
  // 2.0f = 00000040, little-endian), as in the protobuf bytes of MatchesProtobuf.
  for (const auto& [path, value] : {std::pair{path_a, "150000803f"}, std::pair{path_b, "1500000040"}}) {
    SCOPED_TRACE(path);
    const auto records = read_records(read_file(path));
    ASSERT_EQ(records.size(), 2u);
    EXPECT_NE(records[0].find("brain.Event:2"), std::string::npos);
    const std::string h = hex(records[1]);
    EXPECT_EQ(h.substr(h.size() - 10), value) << h;
  }
}

TEST_F(TensorBoardWriterTest, LargeVolumeFlushesOnItsOwn) {
  TensorBoardWriter w(dir_);
  for (int i = 0; i < 5000; ++i) w.add_scalar("a/fairly/long/tag/name", i, i);
  EXPECT_GT(read_records(read_file(w.path())).size(), 1000u);
}

TEST(TensorBoardWriter, UnwritableDirectoryNamesIt) {
  const std::string dir = "/proc/weft_cannot_be_here/tb";
  try {
    TensorBoardWriter w(dir);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace weft

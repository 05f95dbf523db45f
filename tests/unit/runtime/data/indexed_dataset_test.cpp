// IndexedDataset / IndexedDatasetWriter: round trips for every dtype, and every kind of corrupt
// file producing a weft::Error that names the file (never a crash).
#include "runtime/data/indexed_dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>

#include "tests/unit/runtime/data/data_test_util.h"

namespace weft {
namespace {

using testing::error_of;
using testing::read_file;
using testing::TempDir;
using testing::write_file;

std::vector<std::vector<int64_t>> sample_docs(int code) {
  int64_t lo = 0, hi = 0;
  switch (code) {
    case kDtypeUInt8:
      lo = 0;
      hi = 255;
      break;
    case kDtypeInt8:
      lo = -128;
      hi = 127;
      break;
    case kDtypeInt16:
      lo = -32768;
      hi = 32767;
      break;
    case kDtypeInt32:
      lo = std::numeric_limits<int32_t>::min();
      hi = std::numeric_limits<int32_t>::max();
      break;
    case kDtypeInt64:
      lo = std::numeric_limits<int64_t>::min();
      hi = std::numeric_limits<int64_t>::max();
      break;
    case kDtypeFloat64:
      lo = -(int64_t{1} << 53);
      hi = int64_t{1} << 53;
      break;
    case kDtypeFloat32:
      lo = -(int64_t{1} << 24);
      hi = int64_t{1} << 24;
      break;
    case kDtypeUInt16:
      lo = 0;
      hi = 65535;
      break;
  }
  return {{lo, hi, 0, 1, 2}, {}, {7}, {3, 3, 3, 100, 5, 9, 11}, {hi, lo}};
}

std::vector<int64_t> read_all(const IndexedDataset& d, int64_t seq) {
  std::vector<int64_t> out(static_cast<size_t>(d.sequence_length(seq)));
  d.read(seq, 0, static_cast<int64_t>(out.size()), out.data());
  return out;
}

void write_docs(const std::string& prefix, int code,
                const std::vector<std::vector<int64_t>>& docs) {
  IndexedDatasetWriter w(prefix, code);
  for (const auto& d : docs) w.add_document(d);
  w.finalize();
}

TEST(IndexedDatasetTest, RoundTripEveryDtype) {
  TempDir dir;
  for (int code = 1; code <= 8; ++code) {
    SCOPED_TRACE(dtype_name(code));
    const std::string prefix = dir.file(std::string("ds_") + dtype_name(code));
    auto docs = sample_docs(code);
    write_docs(prefix, code, docs);
    EXPECT_FALSE(std::filesystem::exists(prefix + ".bin.tmp"));
    EXPECT_FALSE(std::filesystem::exists(prefix + ".idx.tmp"));

    IndexedDataset d(prefix);
    EXPECT_EQ(d.dtype_code(), code);
    EXPECT_EQ(d.itemsize(), dtype_itemsize(code));
    ASSERT_EQ(d.num_sequences(), 5);
    EXPECT_EQ(d.num_documents(), 5);
    EXPECT_EQ(d.document_indices(), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
    EXPECT_EQ(d.num_tokens(), 15);
    for (int64_t s = 0; s < 5; ++s) EXPECT_EQ(read_all(d, s), docs[s]);
    std::vector<int64_t> part(3);
    d.read(3, 2, 3, part.data());
    EXPECT_EQ(part, (std::vector<int64_t>{3, 100, 5}));
    EXPECT_EQ(d.max_token(), docs[0][1]);
    EXPECT_EQ(d.min_token(), docs[0][0]);
    EXPECT_EQ(static_cast<int64_t>(std::filesystem::file_size(prefix + ".bin")),
              15 * dtype_itemsize(code));
  }
}

TEST(IndexedDatasetTest, EmptyDatasetOpens) {
  TempDir dir;
  write_docs(dir.file("empty"), kDtypeUInt16, {});
  IndexedDataset d(dir.file("empty"));
  EXPECT_EQ(d.num_sequences(), 0);
  EXPECT_EQ(d.num_documents(), 0);
  EXPECT_EQ(d.max_token(), 0);
}

TEST(IndexedDatasetTest, DtypeForVocabFollowsMegatron) {
  EXPECT_EQ(dtype_for_vocab(257), kDtypeUInt16);
  EXPECT_EQ(dtype_for_vocab(50257), kDtypeUInt16);
  EXPECT_EQ(dtype_for_vocab(65499), kDtypeUInt16);
  EXPECT_EQ(dtype_for_vocab(65500), kDtypeInt32);
  EXPECT_EQ(dtype_for_vocab(128256), kDtypeInt32);
}

TEST(IndexedDatasetTest, WriterRejectsTokensOutsideDtype) {
  TempDir dir;
  const std::string prefix = dir.file("narrow");
  std::string msg = error_of([&] {
    IndexedDatasetWriter w(prefix, kDtypeUInt16);
    w.add_document({1, 2});
    w.add_document({5, 65536});
  });
  EXPECT_NE(msg.find(prefix), std::string::npos) << msg;
  EXPECT_NE(msg.find("65536"), std::string::npos) << msg;
  EXPECT_NE(msg.find("uint16"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { IndexedDatasetWriter(prefix, kDtypeUInt8).add_document({-1}); }), "");
  EXPECT_NE(error_of([&] { IndexedDatasetWriter(prefix, 9); }).find(prefix), std::string::npos);
  // The failed writers left nothing behind, complete-looking or not.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(IndexedDatasetTest, UnfinalizedWriterLeavesNothingAndOldDataSurvives) {
  TempDir dir;
  const std::string prefix = dir.file("keep");
  write_docs(prefix, kDtypeInt32, {{1, 2, 3}});
  {
    IndexedDatasetWriter w(prefix, kDtypeInt32);
    w.add_document({9, 9});
  }  // destroyed without finalize(), as after an exception mid-preprocess
  EXPECT_FALSE(std::filesystem::exists(prefix + ".bin.tmp"));
  IndexedDataset d(prefix);
  EXPECT_EQ(read_all(d, 0), (std::vector<int64_t>{1, 2, 3}));
}

TEST(IndexedDatasetTest, FinalizeReplacesExistingPair) {
  TempDir dir;
  const std::string prefix = dir.file("replace");
  write_docs(prefix, kDtypeInt32, {{1, 2, 3}});
  write_docs(prefix, kDtypeUInt8, {{4}, {5, 6}});
  IndexedDataset d(prefix);
  EXPECT_EQ(d.dtype_code(), kDtypeUInt8);
  EXPECT_EQ(d.num_documents(), 2);
  EXPECT_EQ(read_all(d, 1), (std::vector<int64_t>{5, 6}));
}

// ---- corrupt files ---------------------------------------------------------------------------

class CorruptIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix_ = dir_.file("c");
    write_docs(prefix_, kDtypeUInt16, {{1, 2, 3}, {4, 5}, {6}});
    idx_ = read_file(prefix_ + ".idx");
    bin_ = read_file(prefix_ + ".bin");
    ASSERT_EQ(idx_.size(), 34u + 3 * 12 + 4 * 8);
  }
  // Writes the given .idx bytes and returns the error message from opening the dataset.
  std::string open_with_idx(const std::string& idx) {
    write_file(prefix_ + ".idx", idx);
    return error_of([&] { IndexedDataset d(prefix_); });
  }
  template <typename T>
  std::string patched(size_t at, T value) const {
    std::string s = idx_;
    std::memcpy(s.data() + at, &value, sizeof(T));
    return s;
  }
  static constexpr size_t kLengths = 34, kOffsets = 34 + 3 * 4, kDocs = 34 + 3 * 12;

  TempDir dir_;
  std::string prefix_, idx_, bin_;
};

TEST_F(CorruptIndexTest, MissingFilesNameThePath) {
  std::filesystem::remove(prefix_ + ".bin");
  std::string msg = error_of([&] { IndexedDataset d(prefix_); });
  EXPECT_NE(msg.find(prefix_ + ".bin"), std::string::npos) << msg;
  std::filesystem::remove(prefix_ + ".idx");
  msg = error_of([&] { IndexedDataset d(prefix_); });
  EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << msg;
}

TEST_F(CorruptIndexTest, BadMagic) {
  std::string idx = idx_;
  idx[0] = 'X';
  std::string msg = open_with_idx(idx);
  EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("magic"), std::string::npos) << msg;
}

TEST_F(CorruptIndexTest, WrongVersion) {
  std::string msg = open_with_idx(patched<uint64_t>(9, 2));
  EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("version 2"), std::string::npos) << msg;
}

TEST_F(CorruptIndexTest, UnknownDtype) {
  for (uint8_t code : {0, 9, 255}) {
    std::string msg = open_with_idx(patched<uint8_t>(17, code));
    EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << msg;
    EXPECT_NE(msg.find("dtype code " + std::to_string(code)), std::string::npos) << msg;
  }
}

TEST_F(CorruptIndexTest, TruncatedIndexAtEveryLength) {
  for (size_t n = 0; n < idx_.size(); ++n) {
    std::string msg = open_with_idx(idx_.substr(0, n));
    EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << "length " << n << ": " << msg;
  }
}

TEST_F(CorruptIndexTest, HugeCountsDoNotOverflow) {
  std::string msg = open_with_idx(patched<uint64_t>(18, std::numeric_limits<uint64_t>::max()));
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  msg = open_with_idx(patched<uint64_t>(26, uint64_t{1} << 61));
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST_F(CorruptIndexTest, TrailingJunk) {
  std::string msg = open_with_idx(idx_ + "xy");
  EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << msg;
  // Megatron's multimodal layout (one int8 mode per sequence) is accepted.
  write_file(prefix_ + ".idx", idx_ + std::string(3, '\0'));
  IndexedDataset d(prefix_);
  EXPECT_EQ(d.num_sequences(), 3);
}

TEST_F(CorruptIndexTest, BinShorterThanIndexClaims) {
  for (size_t n : {size_t{0}, size_t{1}, bin_.size() - 1}) {
    write_file(prefix_ + ".bin", bin_.substr(0, n));
    std::string msg = error_of([&] { IndexedDataset d(prefix_); });
    EXPECT_NE(msg.find(prefix_ + ".bin"), std::string::npos) << msg;
    EXPECT_NE(msg.find("shorter"), std::string::npos) << msg;
  }
}

TEST_F(CorruptIndexTest, OffsetsAndLengthsOutOfRange) {
  EXPECT_NE(open_with_idx(patched<int64_t>(kOffsets + 8, 1000)).find(prefix_ + ".bin"),
            std::string::npos);
  EXPECT_NE(open_with_idx(patched<int64_t>(kOffsets, -2)).find(prefix_ + ".idx"),
            std::string::npos);
  EXPECT_NE(open_with_idx(patched<int32_t>(kLengths, -1)).find(prefix_ + ".idx"),
            std::string::npos);
  EXPECT_NE(open_with_idx(patched<int32_t>(kLengths, 1 << 30)).find(prefix_ + ".bin"),
            std::string::npos);
}

TEST_F(CorruptIndexTest, BadDocumentIndices) {
  std::string msg = open_with_idx(patched<int64_t>(kDocs + 16, 0));  // 0 1 0 3
  EXPECT_NE(msg.find("non-monotonic"), std::string::npos) << msg;
  EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << msg;
  msg = open_with_idx(patched<int64_t>(kDocs, 1));  // must start at 0
  EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << msg;
  msg = open_with_idx(patched<int64_t>(kDocs + 24, 2));  // must end at the sequence count
  EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << msg;
  msg = open_with_idx(patched<uint64_t>(26, 0));  // no document entries at all
  EXPECT_NE(msg.find(prefix_ + ".idx"), std::string::npos) << msg;
}

TEST_F(CorruptIndexTest, RandomCorruptionOpensOrThrowsNeverCrashes) {
  // Whatever the bytes, opening either validates (and then every read stays inside the
  // mapping) or throws weft::Error; a crash here would be a missing bounds check. An index that
  // validates must describe bytes that are really in .bin: each sequence lies inside the file,
  // and, for the original dtype, reads return exactly the .bin's tokens at that offset (checked
  // against the bytes read here, not through IndexedDataset).
  std::mt19937 rng(7);
  int opened = 0, rejected = 0;
  for (int trial = 0; trial < 500; ++trial) {
    std::string idx = idx_;
    if (trial % 2 == 0) {
      // Random bytes almost never validate; these trials give one length, offset or document
      // entry a small value instead, inside the 12-byte .bin or just past it, so that some
      // damaged indexes do open and the reads below are exercised.
      const size_t field = rng() % 10;  // 3 lengths (int32), 3 offsets, 4 document entries
      const uint64_t value = rng() % 16;
      const uint32_t narrow = static_cast<uint32_t>(value);
      if (field < 3) std::memcpy(idx.data() + kLengths + 4 * field, &narrow, 4);
      else if (field < 6) std::memcpy(idx.data() + kOffsets + 8 * (field - 3), &value, 8);
      else std::memcpy(idx.data() + kDocs + 8 * (field - 6), &value, 8);
    } else {
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) idx[rng() % idx.size()] = static_cast<char>(rng() & 0xFF);
      if (rng() % 8 == 0) idx.resize(rng() % idx.size());
    }
    write_file(prefix_ + ".idx", idx);
    try {
      IndexedDataset d(prefix_);
      std::vector<int64_t> out;
      int64_t largest = 0;  // the largest token read; 0 for no tokens, as max_token() says
      for (int64_t s = 0; s < d.num_sequences(); ++s) {
        const int64_t offset = d.sequence_offset(s), length = d.sequence_length(s);
        const bool inside =
            offset >= 0 && offset + length * d.itemsize() <= static_cast<int64_t>(bin_.size());
        EXPECT_TRUE(inside) << "sequence " << s << " at byte " << offset << ", " << length << " tokens";
        if (!inside) continue;  // reading it would leave the mapping
        out.resize(static_cast<size_t>(length));
        d.read(s, 0, length, out.data());
        if (d.dtype_code() != kDtypeUInt16) continue;
        for (int64_t i = 0; i < length; ++i) {
          uint16_t token;
          std::memcpy(&token, bin_.data() + offset + 2 * i, 2);
          EXPECT_EQ(out[static_cast<size_t>(i)], token) << "sequence " << s << " token " << i;
          largest = std::max<int64_t>(largest, token);
        }
      }
      if (d.dtype_code() == kDtypeUInt16) EXPECT_EQ(d.max_token(), largest);
      ++opened;
    } catch (const weft::Error& e) {
      EXPECT_NE(std::string(e.what()).find(prefix_), std::string::npos) << e.what();
      ++rejected;
    }
  }
  // Both outcomes happen, so both paths above are exercised.
  EXPECT_GT(opened, 0);
  EXPECT_GT(rejected, 0);
}

TEST_F(CorruptIndexTest, ReadsOutsideASequenceAreErrors) {
  IndexedDataset d(prefix_);
  std::vector<int64_t> out(8);
  EXPECT_NE(error_of([&] { d.read(0, 2, 2, out.data()); }).find(prefix_), std::string::npos);
  EXPECT_NE(error_of([&] { d.read(3, 0, 1, out.data()); }), "");
  EXPECT_NE(error_of([&] { d.read(-1, 0, 1, out.data()); }), "");
  EXPECT_NE(error_of([&] { d.read(1, -1, 1, out.data()); }), "");
  d.read(1, 2, 0, out.data());  // an empty read at the end is fine
}

}  // namespace
}  // namespace weft

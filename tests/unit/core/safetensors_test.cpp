// Tests for core/safetensors: roundtrips of every dtype and odd shapes, and that corrupt or
// malformed files fail with a weft::Error naming the file (and tensor) instead of loading.
#include "tests/unit/test_util.h"
#include "core/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "weft/error.h"
#include "core/fileio.h"

namespace fs = std::filesystem;
namespace weft {
namespace {

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / str("weft_st_", info->name(), "_", ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Writes a file whose header is `json` (padded) followed by `data_bytes` zero bytes.
  std::string raw_file(const std::string& json, size_t data_bytes, const std::string& name = "raw") {
    std::string h = json;
    h.append((8 - h.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    const uint64_t n = h.size();
    std::memcpy(out.data(), &n, 8);
    out += h;
    out.append(data_bytes, '\0');
    write_file_atomic(file(name), out);
    return file(name);
  }

  fs::path dir_;
};

using testing::error_of;

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return ca.nbytes() == cb.nbytes() && std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

TEST_F(SafetensorsTest, RoundtripsEveryDtypeAndShape) {
  at::manual_seed(0);
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f64", at::randn({3, 4}, at::kDouble)},
      {"f32", at::randn({2, 3, 5})},
      {"f16", at::randn({7}).to(at::kHalf)},
      {"bf16", at::randn({4, 4}).to(at::kBFloat16)},
      {"i64", at::randint(-(int64_t{1} << 40), int64_t{1} << 40, {5}, at::kLong)},
      {"i32", at::randint(-100000, 100000, {2, 2}, at::kInt)},
      {"i16", at::randint(-30000, 30000, {3}, at::kShort)},
      {"i8", at::randint(-128, 127, {9}, at::kChar)},
      {"u8", at::randint(0, 255, {3, 1}, at::kByte)},
      {"bool", at::randint(0, 2, {6}, at::kLong).to(at::kBool)},
      {"scalar", at::scalar_tensor(3.5, at::kFloat)},
      {"empty", at::empty({0, 3}, at::kFloat)},
      {"empty_bf16", at::empty({2, 0}, at::kBFloat16)},
      {"transposed", at::arange(12, at::kFloat).reshape({3, 4}).t()},
      {"sliced", at::arange(20, at::kInt).slice(0, 5, 15, 2)},
      {"u16", at::randint(0, 65535, {4}, at::kInt).to(at::kUInt16)},
      {"u32", at::randint(0, 1 << 30, {4}, at::kLong).to(at::kUInt32)},
      {"u64", at::randint(0, int64_t{1} << 50, {4}, at::kLong).to(at::kUInt64)},
      {"c64", at::randn({3}, at::kComplexFloat)},
      {"f8e4m3", at::randn({5}).to(at::kFloat8_e4m3fn)},
      {"f8e5m2", at::randn({5}).to(at::kFloat8_e5m2)},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "42"}, {"", "x"}};
  const std::string p = file("all.safetensors");
  const auto result = write_safetensors(p, tensors, meta);
  const std::string bytes = read_file(p);
  EXPECT_EQ(result.bytes, bytes.size());
  EXPECT_EQ(result.crc32c, crc32c(bytes.data(), bytes.size()));

  SafetensorsReader r(p);
  EXPECT_EQ(r.file_crc32c(), result.crc32c);
  EXPECT_EQ(r.metadata(), meta);
  ASSERT_EQ(r.names().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    EXPECT_EQ(r.names()[i], name);
    EXPECT_TRUE(r.has(name));
    EXPECT_EQ(r.dtype(name), t.scalar_type()) << name;
    EXPECT_EQ(r.shape(name), t.sizes().vec()) << name;
    EXPECT_EQ(r.nbytes(name), t.nbytes()) << name;
    EXPECT_TRUE(same_bytes(r.get(name), t)) << name;
  }
  EXPECT_TRUE(at::equal(r.get("transposed"), tensors[13].second));
  EXPECT_EQ(r.get("scalar").dim(), 0);
  EXPECT_FALSE(r.has("missing"));
}

TEST_F(SafetensorsTest, HeaderIsAlignedAndDataFollowsInOrder) {
  const std::string p = file("a.safetensors");
  write_safetensors(p, {{"b", at::ones({3}, at::kByte)}, {"a", at::zeros({1}, at::kDouble)}});
  const std::string bytes = read_file(p);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 3 + 8);
  EXPECT_EQ(bytes.substr(8 + n, 3), std::string(3, '\1'));
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json::array({0, 3}));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json::array({3, 11}));
  EXPECT_EQ(header["a"]["dtype"], "F64");
  EXPECT_FALSE(header.contains("__metadata__"));
}

TEST_F(SafetensorsTest, GetReturnsAnOwnedCopy) {
  const std::string p = file("c.safetensors");
  write_safetensors(p, {{"x", at::arange(4, at::kFloat)}});
  at::Tensor x;
  {
    SafetensorsReader r(p);
    x = r.get("x");
    x.add_(1);
    EXPECT_TRUE(at::equal(r.get("x"), at::arange(4, at::kFloat)));
  }
  EXPECT_TRUE(at::equal(x, at::arange(1, 5, at::kFloat)));
}

TEST_F(SafetensorsTest, EmptyFileSet) {
  const std::string p = file("none.safetensors");
  write_safetensors(p, {});
  SafetensorsReader r(p);
  EXPECT_TRUE(r.names().empty());
  EXPECT_TRUE(r.metadata().empty());
}

TEST_F(SafetensorsTest, WriterRejectsBadInputAndLeavesNoFile) {
  const std::string p = file("bad.safetensors");
  const auto x = at::ones({2});
  auto expect_error = [&](const std::vector<std::pair<std::string, at::Tensor>>& t,
                          const std::string& needle) {
    const std::string msg = error_of([&] { write_safetensors(p, t); });
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(p));
  };
  expect_error({{"a", x}, {"a", x}}, "'a'");
  expect_error({{"__metadata__", x}}, "reserved");
  expect_error({{"u", at::Tensor()}}, "'u'");
  expect_error({{"m", at::empty({2}, at::TensorOptions().device(at::kMeta))}}, "meta");
  expect_error({{"s", x.to_sparse()}}, "'s'");
  expect_error({{"c128", at::zeros({2}, at::kComplexDouble)}}, "'c128'");
  const std::string msg = error_of([&] { write_safetensors(file("no/such/dir.st"), {{"a", x}}); });
  EXPECT_NE(msg.find(file("no/such/dir.st")), std::string::npos) << msg;
}

TEST_F(SafetensorsTest, UnknownNameNamesFileAndTensor) {
  const std::string p = file("k.safetensors");
  write_safetensors(p, {{"w", at::ones({2})}});
  SafetensorsReader r(p);
  const std::string msg = error_of([&] { r.get("v"); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("'v'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
}

TEST_F(SafetensorsTest, CorruptFilesNameTheFile) {
  struct Case {
    std::string json;
    size_t data;
    std::string needle;  // besides the path
  };
  const std::vector<Case> cases = {
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]", 8, "parse"},
      {"[1,2]", 0, "{"},
      {"{\"a\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "F31"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "'a'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "'a'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "'a'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "'a'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "data_offsets"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlaps"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "belong to no"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16, "cover"},
      {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
       "'a'"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string p = raw_file(cases[i].json, cases[i].data, str("case", i));
    const std::string msg = error_of([&] { SafetensorsReader r(p); });
    EXPECT_NE(msg.find(p), std::string::npos) << "case " << i << ": " << msg;
    EXPECT_NE(msg.find(cases[i].needle), std::string::npos) << "case " << i << ": " << msg;
  }
}

TEST_F(SafetensorsTest, TruncatedAndTinyFilesNameTheFile) {
  const std::string p = file("t.safetensors");
  write_safetensors(p, {{"a", at::ones({100})}});
  std::string bytes = read_file(p);
  for (size_t keep : {size_t{0}, size_t{5}, size_t{8}, size_t{20}, bytes.size() - 1}) {
    write_file_atomic(p, bytes.substr(0, keep));
    const std::string msg = error_of([&] { SafetensorsReader r(p); });
    EXPECT_NE(msg.find(p), std::string::npos) << "keep " << keep << ": " << msg;
  }
  std::string huge = bytes;
  const uint64_t n = uint64_t{1} << 40;
  std::memcpy(huge.data(), &n, 8);
  write_file_atomic(p, huge);
  EXPECT_NE(error_of([&] { SafetensorsReader r(p); }).find("limit"), std::string::npos);
  EXPECT_NE(error_of([&] { SafetensorsReader r(file("missing")); }).find(file("missing")),
            std::string::npos);
}

TEST_F(SafetensorsTest, DtypeNames) {
  EXPECT_EQ(safetensors_dtype_name(at::kBFloat16), "BF16");
  EXPECT_EQ(safetensors_dtype("BOOL"), at::kBool);
  EXPECT_THROW(safetensors_dtype("Q4"), Error);
  EXPECT_THROW(safetensors_dtype_name(at::kComplexDouble), Error);
}

}  // namespace
}  // namespace weft

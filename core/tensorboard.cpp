// TensorBoardWriter and the hand-rolled protobuf encoding of the few Event fields it needs
// (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto).
#include "core/tensorboard.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "weft/error.h"

namespace weft {
namespace detail {
namespace {

// Protobuf wire types.
constexpr uint32_t kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_key(std::string& out, uint32_t field, uint32_t wire_type) {
  put_varint(out, (field << 3) | wire_type);
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

void put_bytes(std::string& out, uint32_t field, const std::string& s) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, s.size());
  out += s;
}

void put_double(std::string& out, uint32_t field, double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  put_key(out, field, kFixed64);
  put_le(out, bits, 8);
}

// Event fields: wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5.
std::string event_prefix(double wall_time, int64_t step) {
  std::string e;
  put_double(e, 1, wall_time);
  if (step != 0) {  // proto3 default; negative steps take ten bytes, as int64 varints do
    put_key(e, 2, kVarint);
    put_varint(e, static_cast<uint64_t>(step));
  }
  return e;
}

}  // namespace

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tfrecord(const std::string& data) {
  std::string out;
  out.reserve(data.size() + 16);
  put_le(out, data.size(), 8);
  put_le(out, masked_crc32c(out.data(), 8), 4);
  out += data;
  put_le(out, masked_crc32c(data.data(), data.size()), 4);
  return out;
}

std::string encode_file_version_event(double wall_time) {
  std::string e = event_prefix(wall_time, 0);
  put_bytes(e, 3, "brain.Event:2");
  return e;
}

std::string encode_scalar_event(double wall_time, int64_t step, const std::string& tag,
                                float value) {
  // Summary.Value: tag = 1 (string), simple_value = 2 (float).
  std::string v;
  put_bytes(v, 1, tag);
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  put_key(v, 2, kFixed32);
  put_le(v, bits, 4);
  std::string summary;  // Summary: repeated Value value = 1.
  put_bytes(summary, 1, v);
  std::string e = event_prefix(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

}  // namespace detail

namespace {

constexpr size_t kFlushBytes = 64 * 1024;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
  std::string h = buf;
  for (char& c : h)
    if (c == '/') c = '_';
  return h;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  WEFT_CHECK(!ec, "cannot create TensorBoard directory ", dir, ": ", ec.message(),
             " (choose a writable run directory)");
  const double now = now_seconds();
  const std::string stem = str(dir, "/events.out.tfevents.", static_cast<int64_t>(now), ".",
                               hostname(), ".", ::getpid());
  std::string path = stem + ".weft";
  for (int n = 1; std::filesystem::exists(path); ++n) path = str(stem, ".", n, ".weft");
  file_ = std::make_unique<FileWriter>(path, FileWriter::Mode::kCreateNew);
  append_record(detail::encode_file_version_event(now));
  flush();  // the file is a valid, empty event log from the start
}

TensorBoardWriter::~TensorBoardWriter() {
  try {
    flush();
    file_->close();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weft: TensorBoard events may be incomplete: %s\n", e.what());
  }
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  append_record(detail::encode_scalar_event(now_seconds(), step, tag, static_cast<float>(value)));
  if (buffer_.size() >= kFlushBytes) flush();
}

void TensorBoardWriter::flush() {
  if (buffer_.empty()) return;
  std::string pending;
  pending.swap(buffer_);  // on a write error the records are dropped, not written twice
  file_->write(pending);
}

void TensorBoardWriter::append_record(const std::string& event) {
  buffer_ += detail::tfrecord(event);
}

}  // namespace weft

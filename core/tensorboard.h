// Writes TensorBoard event files (scalars) without a protobuf library: Event messages are encoded
// by hand and framed as TFRecords, which TensorBoard's own reader checks record by record.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/fileio.h"

namespace weft {

// Appends scalar summaries to a new event file
// `<dir>/events.out.tfevents.<unix seconds>.<hostname>.<pid>.weft` (a `.<n>` is inserted before
// `.weft` if that name is taken). The directory is created if missing. Records are buffered in
// memory and written on flush(), when the buffer passes 64 KiB, and on destruction (which also
// fsyncs and never throws; a failure there is printed to stderr). Call flush() after each logging
// interval so a live TensorBoard sees the points. Owns its file. Constructor, add_scalar() and
// flush() throw weft::Error naming the path on I/O errors. Not thread-safe: use one writer per
// thread or serialize calls.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One point of the curve `tag`, stamped with the current wall time. TensorBoard stores scalars
  // as float32, so `value` is rounded to float.
  void add_scalar(const std::string& tag, double value, int64_t step);
  void flush();
  // The event file being written.
  const std::string& path() const { return file_->path(); }

 private:
  void append_record(const std::string& event);

  std::unique_ptr<FileWriter> file_;
  std::string buffer_;
};

namespace detail {
// TFRecord's checksum: CRC-32C rotated right by 15 bits plus a constant.
uint32_t masked_crc32c(const void* data, size_t n);
// len (u64 LE) | masked crc of len (u32 LE) | data | masked crc of data (u32 LE).
std::string tfrecord(const std::string& data);
// Serialized tensorflow.Event messages.
std::string encode_file_version_event(double wall_time);
std::string encode_scalar_event(double wall_time, int64_t step, const std::string& tag,
                                float value);
}  // namespace detail

}  // namespace weft

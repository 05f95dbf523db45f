// Where Weft's log lines go. By default the library logs through glog to stderr (never stdout);
// a host program that has its own logging installs a sink and gets every line instead.
#pragma once

#include <functional>
#include <string>

namespace weft {

enum class LogSeverity { kInfo, kWarning, kError };

// `message` is one log record without the glog prefix (it may hold newlines, e.g. the resolved
// config); `file`/`line` name its source. Called on the thread that logged, possibly several at
// once: the sink must be thread-safe and must not log through Weft itself. An exception it
// throws is swallowed (that record is lost).
using LogSink = std::function<void(LogSeverity severity, const std::string& file, int line,
                                   const std::string& message)>;

// Sends every later Weft log record to `sink` instead of stderr; an empty function restores
// stderr. Process-wide; thread-safe (records being logged while it changes go to one of the
// two). Records below `min_severity` are dropped.
void set_log_sink(LogSink sink, LogSeverity min_severity = LogSeverity::kInfo);

}  // namespace weft

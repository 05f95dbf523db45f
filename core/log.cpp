// set_log_sink: Weft logs through glog; a host's sink is a glog LogSink, and while one is set
// glog writes neither to stderr nor to log files.
#include "weft/log.h"

#include <gflags/gflags.h>
#include <glog/logging.h>

#include <memory>
#include <mutex>

namespace weft {
namespace {

class ForwardingSink : public google::LogSink {
 public:
  ForwardingSink(weft::LogSink sink, LogSeverity min) : sink_(std::move(sink)), min_(min) {}
  void send(google::LogSeverity severity, const char* full_filename, const char* base_filename, int line,
            const struct ::tm* tm_time, const char* message, size_t message_len) override {
    const LogSeverity s = severity >= google::GLOG_ERROR     ? LogSeverity::kError
                          : severity == google::GLOG_WARNING ? LogSeverity::kWarning
                                                             : LogSeverity::kInfo;
    if (s < min_) return;
    try {
      sink_(s, base_filename ? base_filename : "", line, std::string(message, message_len));
    } catch (...) {
      // A failing sink loses that record; it must not end the host's process from inside glog.
    }
  }

 private:
  weft::LogSink sink_;
  LogSeverity min_;
};

std::mutex g_mu;
std::unique_ptr<ForwardingSink> g_sink;  // guarded by g_mu

}  // namespace

void set_log_sink(LogSink sink, LogSeverity min_severity) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_sink) google::RemoveLogSink(g_sink.get());
  g_sink.reset();
  if (!sink) {
    FLAGS_logtostderr = true;  // glog's behaviour before it is initialised: everything to stderr
    return;
  }
  // Uninitialised glog writes every record to stderr whatever the flags say; initialised, it
  // writes to stderr only from FLAGS_stderrthreshold and to files only where a destination is set.
  if (!google::IsGoogleLoggingInitialized()) google::InitGoogleLogging("weft");
  for (int s = google::GLOG_INFO; s < google::NUM_SEVERITIES; ++s) google::SetLogDestination(s, "");
  FLAGS_logtostderr = false;
  FLAGS_alsologtostderr = false;
  FLAGS_stderrthreshold = google::NUM_SEVERITIES;  // above FATAL: never
  g_sink = std::make_unique<ForwardingSink>(std::move(sink), min_severity);
  google::AddLogSink(g_sink.get());
}

}  // namespace weft

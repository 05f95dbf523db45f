// The service's log lines and the sink that sends the library's records to them.
#include "service_log.h"

#include <cstdio>
#include <mutex>

#include "weft/log.h"

namespace service {
namespace {
std::mutex g_log_mu;
thread_local std::string t_job;
}  // namespace

void log(const std::string& level, const std::string& msg) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  if (t_job.empty()) std::fprintf(stderr, "weft_service: %s %s\n", level.c_str(), msg.c_str());
  else std::fprintf(stderr, "weft_service: [job %s] %s %s\n", t_job.c_str(), level.c_str(), msg.c_str());
  std::fflush(stderr);
}

void set_thread_job(const std::string& id) { t_job = id; }

void install_log_sink() {
  weft::set_log_sink([](weft::LogSeverity severity, const std::string&, int, const std::string& message) {
    const char* level = severity == weft::LogSeverity::kError ? "E" : severity == weft::LogSeverity::kWarning ? "W" : "I";
    log(level, message);
  });
}

std::string clip_error(const std::string& text) {
  if (text.size() <= kMaxErrorBytes) return text;
  size_t end = kMaxErrorBytes;
  // Back off continuation bytes (10xxxxxx) so a multi-byte character is not split.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end) + "\u2026";
}

std::string first_line(const std::string& text) {
  const size_t nl = text.find('\n');
  return clip_error(nl == std::string::npos ? text : text.substr(0, nl));
}

}  // namespace service

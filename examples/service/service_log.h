// The service's log: one stream (stderr) for its own lines and the library's, each naming the job
// whose thread wrote it. stdout is kept for the bound port alone.
#pragma once

#include <string>

namespace service {

// Writes "weft_service: [job ID] LEVEL message" to stderr. Thread-safe.
void log(const std::string& level, const std::string& msg);
// Names the job the calling thread runs ("" for none); log() and the library's records use it.
void set_thread_job(const std::string& id);
// Routes every Weft log record through log() (weft::set_log_sink). Call once, before any job.
void install_log_sink();
// Longest error text stored in a job record or sent in a response, in bytes (plus the ellipsis):
// an error may quote a client's 1 MiB body or a long path.
constexpr size_t kMaxErrorBytes = 2000;
// `text` cut to at most kMaxErrorBytes bytes, at a UTF-8 character boundary, ending in "…" when
// cut.
std::string clip_error(const std::string& text);
// The first line of `text`, clipped (clip_error): what LibTorch errors (with their stack) are cut
// to for a job's error.
std::string first_line(const std::string& text);

}  // namespace service

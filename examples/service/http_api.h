// The service's HTTP surface on cpp-httplib: bearer-token check, the /v1/jobs routes, /metrics,
// and JSON error bodies for everything refused (by the routes or by httplib itself).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace httplib {
class Server;
}

namespace service {

class JobManager;

constexpr size_t kMaxBodyBytes = 1 << 20;  // larger bodies: 413

// Responses sent, by status code (for /metrics). Thread-safe.
class HttpStats {
 public:
  void count(int status);
  std::string prometheus() const;

 private:
  mutable std::mutex mu_;
  std::map<int, uint64_t> by_status_;  // guarded by mu_
};

// True when `presented` equals `expected`. Every byte of `expected` is compared whatever the
// input, with no early exit, so the time taken does not tell how much of a guess was right.
bool token_equals(const std::string& presented, const std::string& expected);

// Registers the routes, the token check (every request; 401 without "Authorization: Bearer
// TOKEN"), the body limit and the error/exception handlers on `server`. `jobs`, `stats` and
// `token` must outlive the server.
void install_api(httplib::Server& server, JobManager& jobs, HttpStats& stats, const std::string& token);

}  // namespace service

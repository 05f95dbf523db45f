// Routes of the training service. Every response body is JSON ({"error": "..."} when refused)
// except /metrics, which is Prometheus text.
#include "http_api.h"

#include <httplib.h>

#include <functional>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "job_plan.h"
#include "jobs.h"
#include "service_log.h"

namespace service {
namespace {

using json = nlohmann::json;
const char* const kJobPath = R"(/v1/jobs/([A-Za-z0-9_-]{1,64}))";

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  // Messages may quote a client's bytes (a YAML error on a non-UTF-8 config): never throw on them.
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", "application/json");
}

void reply_error(httplib::Response& res, int status, const std::string& msg) {
  reply(res, status, {{"error", clip_error(msg)}});
}

// Runs a route body, turning what it throws into the matching error response.
void guarded(httplib::Response& res, const std::function<void()>& body) {
  try {
    body();
  } catch (const RequestError& e) {
    reply_error(res, e.status(), e.what());
  } catch (const std::exception& e) {
    log("E", std::string("request failed: ") + first_line(e.what()));
    reply_error(res, 500, "internal error: " + first_line(e.what()));
  }
}

// The token of the one "Authorization: Bearer ..." header, or "" when there is none, more than one
// or another scheme. Read from req.headers, not get_header_value(): that returns a C string, so a
// value would end at its first NUL and "TOKEN\0anything" would pass.
std::string bearer_token(const httplib::Request& req) {
  static const std::string kScheme = "Bearer ";
  const auto range = req.headers.equal_range("Authorization");
  if (range.first == range.second || std::next(range.first) != range.second) return "";
  const std::string& auth = range.first->second;
  return auth.compare(0, kScheme.size(), kScheme) == 0 ? auth.substr(kScheme.size()) : "";
}

}  // namespace

bool token_equals(const std::string& presented, const std::string& expected) {
  // volatile: the compiler may not turn the loop into an early-exit comparison.
  volatile unsigned char diff = presented.size() != expected.size() ? 1 : 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char p = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = diff | (p ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

void HttpStats::count(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  by_status_[status] += 1;
}

std::string HttpStats::prometheus() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream os;
  os << "# HELP weft_service_http_responses_total HTTP responses sent, by status code.\n"
     << "# TYPE weft_service_http_responses_total counter\n";
  for (const auto& [status, n] : by_status_) os << "weft_service_http_responses_total{code=\"" << status << "\"} " << n << "\n";
  return os.str();
}

void install_api(httplib::Server& server, JobManager& jobs, HttpStats& stats, const std::string& token) {
  server.set_payload_max_length(kMaxBodyBytes);
  // Before routing and before any body is read: an unauthenticated client costs a header parse.
  server.set_pre_routing_handler([&token](const httplib::Request& req, httplib::Response& res) {
    const std::string presented = bearer_token(req);
    if (!presented.empty() && token_equals(presented, token)) return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    const size_t headers = req.headers.count("Authorization");
    reply_error(res, 401, headers > 1    ? "more than one Authorization header; send one"
                          : headers == 1 ? "wrong bearer token"
                                         : "missing bearer token: send 'Authorization: Bearer <token>'");
    return httplib::Server::HandlerResponse::Handled;
  });
  // Responses httplib makes itself (400 bad request line, 404 no route, 413 too large) get a
  // JSON body too; routes' own errors already have one.
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string what = res.status == 404   ? "no such endpoint; see /v1/jobs and /metrics"
                             : res.status == 413 ? "request body larger than " + std::to_string(kMaxBodyBytes) + " bytes"
                                                 : "request refused (HTTP " + std::to_string(res.status) + ")";
    reply_error(res, res.status, what);
  });
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    reply_error(res, 500, "internal error");
  });
  server.set_logger([&stats](const httplib::Request&, const httplib::Response& res) { stats.count(res.status); });

  // A content reader, not req.body: httplib applies the payload limit to Content-Length bodies
  // only, so a chunked body is counted here and refused once it passes the limit, unread beyond.
  server.Post("/v1/jobs", [&jobs](const httplib::Request&, httplib::Response& res, const httplib::ContentReader& reader) {
    std::string body;
    bool too_large = false;
    const bool read = reader([&](const char* data, size_t n) {
      too_large = too_large || n > kMaxBodyBytes - body.size();
      if (!too_large) body.append(data, n);
      return !too_large;
    });
    if (too_large || (!read && res.status == 413)) {
      res.set_header("Connection", "close");  // the rest of the body is never read
      return reply_error(res, 413, "request body larger than " + std::to_string(kMaxBodyBytes) + " bytes");
    }
    if (!read) return reply_error(res, 400, "the request body could not be read (truncated or malformed chunks?)");
    guarded(res, [&] { reply(res, 201, jobs.submit(parse_job_request(body))); });
  });
  server.Get("/v1/jobs", [&jobs](const httplib::Request&, httplib::Response& res) {
    guarded(res, [&] { reply(res, 200, jobs.list()); });
  });
  server.Get(kJobPath, [&jobs](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      const auto view = jobs.get(req.matches[1]);
      if (view) reply(res, 200, *view);
      else reply_error(res, 404, "no job " + std::string(req.matches[1]));
    });
  });
  server.Delete(kJobPath, [&jobs](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      const auto view = jobs.cancel(req.matches[1]);
      if (view) reply(res, 200, *view);
      else reply_error(res, 404, "no job " + std::string(req.matches[1]));
    });
  });
  server.Get("/metrics", [&jobs, &stats](const httplib::Request&, httplib::Response& res) {
    guarded(res, [&] {
      res.status = 200;
      res.set_content(jobs.metrics() + stats.prometheus(), "text/plain; version=0.0.4; charset=utf-8");
    });
  });
}

}  // namespace service

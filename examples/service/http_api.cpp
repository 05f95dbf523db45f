// Routes of the training service. Every response body is JSON ({"error": "..."} when refused)
// except /metrics, which is Prometheus text.
#include "http_api.h"

#include <httplib.h>

#include <functional>
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

void reply_error(httplib::Response& res, int status, const std::string& msg) { reply(res, status, {{"error", msg}}); }

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

std::string bearer_token(const httplib::Request& req) {
  static const std::string kScheme = "Bearer ";
  const std::string auth = req.get_header_value("Authorization");
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
    reply_error(res, 401, req.has_header("Authorization") ? "wrong bearer token"
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

  server.Post("/v1/jobs", [&jobs](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] { reply(res, 201, jobs.submit(parse_job_request(req.body))); });
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

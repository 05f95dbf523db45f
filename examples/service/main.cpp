// weft_service: an HTTP training service embedding the Weft library. It takes training and
// fine-tuning jobs over a small JSON API, runs them on threads, and keeps their records on disk.
//   WEFT_SERVICE_TOKEN=secret weft_service --root data/ --state state/ --port 8080
// See README.md beside this file for the endpoints.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <httplib.h>

#include "http_api.h"
#include "job_plan.h"
#include "jobs.h"
#include "service_log.h"
#include "weft/error.h"

namespace {

const char* const kUsage =
    "usage: WEFT_SERVICE_TOKEN=TOKEN weft_service --root DIR --state DIR [--listen ADDR] [--port N] [--max-jobs N]\n"
    "  --root DIR      data root: every path a request names must resolve inside it\n"
    "  --state DIR     job records and run directories (DIR/jobs/<id>/)\n"
    "  --listen ADDR   address to listen on (default 127.0.0.1)\n"
    "  --port N        port (default 8080; 0 picks a free one); the bound port is printed on stdout\n"
    "  --max-jobs N    jobs trained at once (default 1); later ones wait in order\n"
    "Every request needs the header 'Authorization: Bearer TOKEN'.\n";

struct Flags {
  std::string listen = "127.0.0.1", root, state;
  int port = 8080, max_jobs = 1;
};

int to_int(const std::string& flag, const std::string& v, int lo, int hi) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  WEFT_CHECK(!v.empty() && *end == '\0' && n >= lo && n <= hi, flag, " must be an integer in [", lo, ", ", hi,
             "], got '", v, "'");
  return int(n);
}

Flags parse_flags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    const size_t eq = arg.find('=');
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stderr);
      std::exit(0);
    }
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1), arg = arg.substr(0, eq);
    } else {
      WEFT_CHECK(i + 1 < argc, arg, " needs a value (see --help)");
      value = argv[++i];
    }
    if (arg == "--listen") f.listen = value;
    else if (arg == "--port") f.port = to_int(arg, value, 0, 65535);
    else if (arg == "--root") f.root = value;
    else if (arg == "--state") f.state = value;
    else if (arg == "--max-jobs") f.max_jobs = to_int(arg, value, 1, 64);
    else weft::fail("unknown flag " + arg + " (see --help)");
  }
  WEFT_CHECK(!f.root.empty() && !f.state.empty(), "--root and --state are required (see --help)");
  return f;
}

// SIGINT/SIGTERM are taken by a thread of their own (sigwait), so no handler runs inside a job
// or inside httplib. The first stops the server; main then stops the jobs (each checkpoints).
// A second signal exits at once.
void start_signal_thread(const sigset_t& set, httplib::Server& server, const std::atomic<bool>& listen_done) {
  std::thread([set, &server, &listen_done] {
    int sig = 0;
    sigwait(&set, &sig);
    service::log("I", std::string("received ") + strsignal(sig) + ": stopping the server and every job (each checkpoints)");
    while (!listen_done.load()) {  // stop() is a no-op until listen has started: repeat it
      server.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    sigwait(&set, &sig);
    service::log("W", std::string("received ") + strsignal(sig) + " again: exiting without waiting for jobs");
    std::_Exit(1);
  }).detach();
}

// Holds an exclusive lock on STATE/.lock for the life of the process (the descriptor is never
// closed), so a second service on the same records refuses to start instead of corrupting them.
void lock_state_dir(const service::fs::path& state) {
  const std::string path = (state / ".lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  WEFT_CHECK(fd >= 0, "cannot open ", path, ": ", std::strerror(errno));
  WEFT_CHECK(::flock(fd, LOCK_EX | LOCK_NB) == 0, "--state ", state.string(), " is in use by another weft_service (",
             path, " is locked); stop it or pick another --state");
}

int serve(const Flags& flags, const std::string& token, const sigset_t& signals) {
  service::install_log_sink();
  const service::PathPolicy paths(flags.root);
  const service::fs::path state = service::fs::absolute(flags.state);
  service::fs::create_directories(state);
  lock_state_dir(state);
  // Relative paths anywhere (the library's included) now mean the same as the checks made.
  WEFT_CHECK(::chdir(paths.root().c_str()) == 0, "cannot enter --root ", paths.root().string(), ": ", std::strerror(errno));
  service::JobManager jobs({state, flags.max_jobs}, paths);

  httplib::Server server;
  // Enough workers that 32 polling clients and a few slow or hostile connections do not queue
  // behind one another.
  server.new_task_queue = [] { return new httplib::ThreadPool(64); };
  service::HttpStats stats;
  // SO_REUSEADDR alone: httplib's default adds SO_REUSEPORT, with which a second process binds a
  // port already in use and the kernel splits the connections between the two.
  server.set_socket_options([](int sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  service::install_api(server, jobs, stats, token);
  const int port = flags.port == 0 ? server.bind_to_any_port(flags.listen)
                                   : (server.bind_to_port(flags.listen, flags.port) ? flags.port : -1);
  WEFT_CHECK(port > 0, "cannot listen on ", flags.listen, ":", flags.port, " (address in use or not local?)");
  std::printf("%d\n", port);  // the one line on stdout: how a client finds a picked port
  std::fflush(stdout);
  service::log("I", "listening on " + flags.listen + ":" + std::to_string(port) + ", data root " +
                        paths.root().string() + ", state " + state.string());
  std::atomic<bool> listen_done{false};
  start_signal_thread(signals, server, listen_done);
  const bool ok = server.listen_after_bind();
  listen_done.store(true);
  jobs.shutdown();
  service::log("I", "stopped");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Blocked before any thread exists, so every thread (httplib's, the jobs', LibTorch's) inherits
  // the mask and the signals reach only sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up mid-response must not end the process
  ::signal(SIGXFSZ, SIG_IGN);  // a file-size limit (ulimit -f) is then a write error (EFBIG) reported, not a kill
  try {
    const Flags flags = parse_flags(argc, argv);
    const char* token = std::getenv("WEFT_SERVICE_TOKEN");
    WEFT_CHECK(token && *token, "set WEFT_SERVICE_TOKEN to the bearer token clients must send; refusing to start without one");
    return serve(flags, token, signals);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weft_service: error: %s\n", service::first_line(e.what()).c_str());
    return 2;
  }
}

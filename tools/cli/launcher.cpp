// fork/exec supervision for `weft train --nproc N`. One poll loop watches the workers' output
// pipes and a self-pipe written by the signal handlers (SIGCHLD, SIGINT, SIGTERM), so the
// launcher reacts to a dead worker or a forwarded signal at once, without threads.
#include "tools/cli/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "weft/error.h"

extern char** environ;

namespace weft {
namespace {

using Clock = std::chrono::steady_clock;

int g_signal_pipe_write = -1;  // the one thing a signal handler may touch

extern "C" void on_launcher_signal(int sig) {
  const int saved = errno;
  const unsigned char b = static_cast<unsigned char>(sig);
  (void)!write(g_signal_pipe_write, &b, 1);
  errno = saved;
}

struct Worker {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
  int fds[2] = {-1, -1};  // read ends of its stdout and stderr pipes
  std::string partial[2];
};

// A TCP socket bound to addr:port (0: any free port) and listening, for rank 0's store
// (WEFT_STORE_LISTEN_FD). Holding it from here on means no other process can take the port
// between this choice and the store opening, as a probe-and-close would allow. Close-on-exec:
// only rank 0 keeps it.
int listen_socket(const std::string& addr, int port, int* bound_port) {
  const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  WEFT_CHECK(s >= 0, "launcher: socket(): ", std::strerror(errno));
  const int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  const std::string host = addr == "localhost" ? "127.0.0.1" : addr;
  WEFT_CHECK(inet_pton(AF_INET, host.c_str(), &sa.sin_addr) == 1, "launcher: store address '", addr,
             "' is not an IPv4 address");
  socklen_t len = sizeof(sa);
  const bool ok = bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 && listen(s, SOMAXCONN) == 0 &&
                  getsockname(s, reinterpret_cast<sockaddr*>(&sa), &len) == 0;
  const int err = errno;
  if (!ok) close(s);
  WEFT_CHECK(ok, "launcher: cannot listen on ", addr, ":", port, " for the store: ", std::strerror(err),
             port ? " (choose another port)" : "");
  *bound_port = ntohs(sa.sin_port);
  return s;
}

// The environment of one worker: ours, with the torchrun variables replaced.
std::vector<std::string> worker_env(const LaunchOptions& o, int port, int rank, int listen_fd) {
  const std::vector<std::pair<std::string, std::string>> set = {
      {"RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(o.nproc)},
      {"LOCAL_RANK", std::to_string(rank)},
      {"LOCAL_WORLD_SIZE", std::to_string(o.nproc)},
      {"GROUP_RANK", "0"},
      {"MASTER_ADDR", o.master_addr},
      {"MASTER_PORT", std::to_string(port)},
      {"TORCHELASTIC_RESTART_COUNT", "0"},
      {"WEFT_STORE_LISTEN_FD", rank == 0 ? std::to_string(listen_fd) : ""}};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    bool replaced = key == "TORCHELASTIC_USE_AGENT_STORE";  // our workers serve their own store
    for (const auto& [k, v] : set) replaced |= key == k;
    if (!replaced) env.push_back(kv);
  }
  for (const auto& [k, v] : set)
    if (!v.empty()) env.push_back(k + "=" + v);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// fork + exec one worker. Between fork and exec the child calls only async-signal-safe functions.
// `listen_fd` is inherited by rank 0 only.
void spawn(Worker& w, const LaunchOptions& o, int port, int listen_fd, int devnull) {
  std::vector<std::string> argv_s = {o.exe};
  argv_s.insert(argv_s.end(), o.args.begin(), o.args.end());
  std::vector<std::string> env_s = worker_env(o, port, w.rank, listen_fd);
  auto argv = c_strings(argv_s);
  auto envp = c_strings(env_s);
  int out[2], err[2];
  WEFT_CHECK(pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0,
             "launcher: pipe(): ", std::strerror(errno));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  WEFT_CHECK(pid >= 0, "launcher: cannot start rank ", w.rank, ": fork(): ", std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);  // own group: a terminal's ^C reaches the launcher only, which forwards it
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(128 + SIGKILL);  // the launcher died before prctl
    dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (w.rank == 0) fcntl(listen_fd, F_SETFD, 0);  // keep it across exec
    execve(argv[0], argv.data(), envp.data());
    const char msg[] = "weft launcher: exec of the worker binary failed\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(127);
  }
  setpgid(pid, pid);  // also from here, so the group exists before we might signal it
  close(out[1]);
  close(err[1]);
  w.pid = pid;
  w.running = true;
  w.fds[0] = out[0];
  w.fds[1] = err[0];
}

void emit(FILE* to, int rank, const std::string& line) {
  std::fprintf(to, "[rank %d] %s\n", rank, line.c_str());
}

// Reads what is available; writes complete lines with the rank prefix. False at EOF.
bool pump(Worker& w, int which) {
  char buf[65536];
  const ssize_t n = read(w.fds[which], buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  FILE* to = which == 0 ? stdout : stderr;
  std::string& part = w.partial[which];
  if (n <= 0) {
    if (!part.empty()) emit(to, w.rank, part), part.clear();
    std::fflush(to);
    close(w.fds[which]);
    w.fds[which] = -1;
    return false;
  }
  part.append(buf, static_cast<size_t>(n));
  size_t start = 0;
  for (size_t nl; (nl = part.find('\n', start)) != std::string::npos; start = nl + 1)
    emit(to, w.rank, part.substr(start, nl - start));
  part.erase(0, start);
  std::fflush(to);
  return true;
}

void signal_all(std::vector<Worker>& workers, int sig) {
  for (auto& w : workers)
    if (w.running) kill(-w.pid, sig);  // the worker's whole process group
}

std::string describe_status(int status) {
  if (WIFSIGNALED(status))
    return str("was killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
  return str("exited with code ", WEXITSTATUS(status));
}

int exit_code(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

}  // namespace

std::vector<std::string> strip_nproc_flag(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--set" || a == "-set") {
      out.push_back(a);
      if (i + 1 < args.size()) out.push_back(args[++i]);
    } else if (a == "--nproc" || a == "-nproc") {
      ++i;  // and its value
    } else if (a.rfind("--nproc=", 0) != 0 && a.rfind("-nproc=", 0) != 0) {
      out.push_back(a);
    }
  }
  return out;
}

int launch_local_workers(const LaunchOptions& o) {
  WEFT_CHECK(o.nproc >= 1, "--nproc must be >= 1, got ", o.nproc);
  int port = 0;
  int listen_fd = listen_socket(o.master_addr, o.master_port, &port);

  int sp[2];
  WEFT_CHECK(pipe2(sp, O_CLOEXEC | O_NONBLOCK) == 0, "launcher: pipe(): ", std::strerror(errno));
  g_signal_pipe_write = sp[1];
  struct sigaction sa {};
  sa.sa_handler = on_launcher_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {
  }, old_term{}, old_chld{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGCHLD, &sa, &old_chld);

  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<Worker> workers(static_cast<size_t>(o.nproc));
  std::fprintf(stderr, "weft launcher: starting %d workers%s%s, store at %s:%d\n", o.nproc,
               o.label.empty() ? "" : " for ", o.label.c_str(), o.master_addr.c_str(), port);
  try {
    for (int r = 0; r < o.nproc; ++r) {
      workers[r].rank = r;
      spawn(workers[r], o, port, listen_fd, devnull);
      if (r == 0) close(listen_fd), listen_fd = -1;  // rank 0's alone: its death closes the store
    }
  } catch (...) {
    if (listen_fd >= 0) close(listen_fd);
    signal_all(workers, SIGKILL);
    throw;
  }
  close(devnull);

  int result = 0;
  bool failed = false, stopping = false;
  Clock::time_point kill_at = Clock::time_point::max(), drain_until = Clock::time_point::max();
  for (;;) {
    std::vector<pollfd> pfds = {{sp[0], POLLIN, 0}};
    std::vector<std::pair<Worker*, int>> owners = {{nullptr, 0}};
    for (auto& w : workers)
      for (int k = 0; k < 2; ++k)
        if (w.fds[k] >= 0) pfds.push_back({w.fds[k], POLLIN, 0}), owners.push_back({&w, k});
    bool any_running = false;
    for (auto& w : workers) any_running |= w.running;
    if (!any_running && pfds.size() == 1) break;
    poll(pfds.data(), pfds.size(), 100);

    if (pfds[0].revents & POLLIN) {
      unsigned char sigs[64];
      const ssize_t n = read(sp[0], sigs, sizeof(sigs));
      for (ssize_t i = 0; i < n; ++i) {
        if (sigs[i] != SIGINT && sigs[i] != SIGTERM) continue;
        std::fprintf(stderr, "weft launcher: got %s; forwarding it to the workers\n",
                     strsignal(sigs[i]));
        signal_all(workers, sigs[i]);
        if (!stopping) kill_at = std::min(kill_at, Clock::now() + o.signal_grace);
        stopping = true;
      }
    }
    for (size_t i = 1; i < pfds.size(); ++i)
      if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) pump(*owners[i].first, owners[i].second);

    for (auto& w : workers) {
      int status = 0;
      if (!w.running || waitpid(w.pid, &status, WNOHANG) != w.pid) continue;
      w.running = false;
      if (exit_code(status) == 0 || failed) continue;
      failed = true;
      result = exit_code(status);
      std::fprintf(stderr, "weft launcher: rank %d (pid %d) %s; stopping the other workers\n",
                   w.rank, static_cast<int>(w.pid), describe_status(status).c_str());
      signal_all(workers, SIGTERM);
      kill_at = std::min(kill_at, Clock::now() + o.failure_grace);
    }
    if (Clock::now() >= kill_at) {
      signal_all(workers, SIGKILL);
      kill_at = Clock::time_point::max();
    }
    // A pipe still open after its worker exited is held by the worker's own children: kill
    // them, and give up on the pipe if it still does not close.
    any_running = false;
    for (auto& w : workers) any_running |= w.running;
    if (!any_running && drain_until == Clock::time_point::max()) {
      drain_until = Clock::now() + std::chrono::seconds(2);
      for (auto& w : workers)
        if (w.fds[0] >= 0 || w.fds[1] >= 0) kill(-w.pid, SIGKILL);
    }
    if (Clock::now() >= drain_until)
      for (auto& w : workers)
        for (int k = 0; k < 2; ++k)
          if (w.fds[k] >= 0) close(w.fds[k]), w.fds[k] = -1;
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGCHLD, &old_chld, nullptr);
  close(sp[0]);
  close(sp[1]);
  g_signal_pipe_write = -1;
  if (!failed) std::fprintf(stderr, "weft launcher: all %d workers exited cleanly\n", o.nproc);
  return result;
}

}  // namespace weft

#include "tools/natterctl/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/daemon.h"

namespace natter {
namespace ctl {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};
void OnStop(int) { g_stop = true; }
std::atomic<bool> g_reload{false};
void OnReload(int) { g_reload = true; }

void WritePid(const std::string& path, pid_t pid) {
  std::ofstream(path, std::ios::trunc) << pid << "\n";
}

bool Spawn(const CellPaths& cell, Child* c, bool want_ready) {
  int fds[2] = {-1, -1};
  if (want_ready && ::pipe2(fds, O_CLOEXEC) != 0) return false;
  pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) {
    // A process group of its own: a Ctrl-C reaches natterctl only, which
    // stops the daemons in order; and if natterctl dies, so do they.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    int log =
        ::open(cell.Log(c->name).c_str(), O_WRONLY | O_CREAT | O_APPEND, 0640);
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
    }
    if (log >= 0) ::dup2(log, 2);
    if (want_ready) {
      int w = ::dup(fds[1]);  // dup drops O_CLOEXEC
      ::setenv("NATTER_READY_FD", std::to_string(w).c_str(), 1);
    }
    // The daemon writes its log itself (and opens it again on SIGHUP, for
    // logrotate); standard error goes to the same file for what a crash
    // prints.
    std::string log_flag = "--log-file=" + cell.Log(c->name);
    std::string control_flag = "--control=" + cell.Control(c->name);
    std::vector<char*> argv;
    for (auto& a : c->argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(const_cast<char*>(log_flag.c_str()));
    argv.push_back(const_cast<char*>(control_flag.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "natterctl: %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(EX_OSFILE);
  }
  if (want_ready) {
    ::close(fds[1]);
    c->ready_fd = fds[0];
  }
  c->pid = pid;
  c->ready = !want_ready;
  c->started = Clock::now();
  WritePid(cell.Pid(c->name), pid);
  return true;
}

void StopAll(std::vector<Child>& children) {
  // Front first, so no new work arrives while the shards finish theirs;
  // 15 s, past a frontd's drain-timeout (10 s by default).
  for (auto it = children.rbegin(); it != children.rend(); ++it) {
    if (it->pid > 0) ::kill(it->pid, SIGTERM);
  }
  auto deadline = Clock::now() + std::chrono::seconds(15);
  for (auto& c : children) {
    while (c.pid > 0) {
      int status;
      pid_t r = ::waitpid(c.pid, &status, WNOHANG);
      if (r == c.pid || (r < 0 && errno == ECHILD)) {
        c.pid = -1;
        break;
      }
      if (Clock::now() >= deadline) {
        ::kill(c.pid, SIGKILL);
        ::waitpid(c.pid, &status, 0);
        c.pid = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

// The stored children the shard map asks for: name and flags.  A replica's
// number is its name's last part (stored-N.K); join: it is being added to
// a running shard.
std::vector<std::pair<std::string, std::vector<std::string>>> StoredChildren(
    const CellPaths& cell, bool join) {
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  std::vector<std::vector<std::string>> stored = StoredNames(cell);
  for (size_t i = 0; i < stored.size(); ++i) {
    for (const std::string& name : stored[i]) {
      std::vector<std::string> flags = {"--shard", std::to_string(i)};
      size_t dot = name.find('.');
      if (dot != std::string::npos) {
        flags.insert(flags.end(), {"--replica", name.substr(dot + 1)});
        if (join) flags.insert(flags.end(), {"--join", "yes"});
      }
      out.emplace_back(name, flags);
    }
  }
  return out;
}

// Whether the shard map names the same shards as at the start, each
// replicated as it was (the daemons refuse any other change too); else
// says why on standard error.
bool SameShards(const std::vector<std::vector<std::string>>& started,
                const std::vector<std::vector<std::string>>& now) {
  const char* why = nullptr;
  if (now.size() != started.size()) {
    why = "its shards are not the ones the cell started with";
  }
  for (size_t i = 0; why == nullptr && i < now.size(); ++i) {
    auto replicated = [](const std::vector<std::string>& names) {
      return !names.empty() && names.front().find('.') != std::string::npos;
    };
    if (now[i].empty()) {
      why = "a shard has no replica left";
    } else if (replicated(now[i]) != replicated(started[i])) {
      why = "a shard of one replica became one of several, or back";
    }
  }
  if (why == nullptr) return true;
  std::cerr << "natterctl: reload: the shard map in natter.conf is not acted "
               "on: "
            << why << "\n";
  return false;
}

// natterctl reload: replicas added to the shard map are started (joining
// their shards), those removed from it stopped.
void ReloadChildren(const CellPaths& cell, const std::string& bin,
                    const std::vector<std::vector<std::string>>& started,
                    std::vector<Child>* children) {
  if (!SameShards(started, StoredNames(cell))) return;
  auto wanted = StoredChildren(cell, true);
  for (auto it = children->begin(); it != children->end();) {
    bool stored = it->name.rfind("stored-", 0) == 0;
    bool listed = std::any_of(wanted.begin(), wanted.end(), [&](const auto& w) {
      return w.first == it->name;
    });
    if (!stored || listed) {
      ++it;
      continue;
    }
    std::cerr << "natterctl: " << it->name
              << " is no longer in the shard map; stopping it\n";
    std::vector<Child> one = {*it};
    StopAll(one);
    ::unlink(cell.Pid(it->name).c_str());
    it = children->erase(it);
  }
  for (const auto& [name, flags] : wanted) {
    bool running = std::any_of(children->begin(), children->end(),
                               [&](const Child& c) { return c.name == name; });
    if (running) continue;
    Child c;
    c.name = name;
    c.argv = {bin + "/natter-stored", "-c", cell.Conf()};
    c.argv.insert(c.argv.end(), flags.begin(), flags.end());
    if (Spawn(cell, &c, false)) {
      std::cerr << "natterctl: " << name
                << " is new in the shard map; started\n";
    } else {
      // Kept, to be started again as a child that died is.
      std::cerr << "natterctl: cannot start " << name << ": "
                << std::strerror(errno) << "; trying again\n";
      c.pid = -1;
      c.restart_at = Clock::now() + c.backoff;
    }
    // Routed goes first among the others: frontd's requests wait behind
    // the shards (StopAll stops from the back).
    auto routed =
        std::find_if(children->begin(), children->end(),
                     [](const Child& x) { return x.name == "routed"; });
    children->insert(routed, std::move(c));
  }
}

std::string DescribeStatus(int status) {
  if (WIFEXITED(status))
    return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string("was killed by signal ") +
           std::to_string(WTERMSIG(status));
  return "stopped";
}

}  // namespace

int Supervise(const CellPaths& cell, const std::string& listen_override) {
  std::string lock_path = cell.Run() + "/natterctl.pid";
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0 || ::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    std::cerr << "natterctl: the cell in " << cell.dir
              << " is running already\n";
    return EX_TEMPFAIL;
  }
  if (::ftruncate(lock, 0) == 0) {
    std::string pid = std::to_string(::getpid()) + "\n";
    ssize_t n = ::write(lock, pid.data(), pid.size());
    (void)n;
  }

  CatchStopSignals(OnStop);
  struct sigaction hup = {};
  hup.sa_handler = OnReload;
  sigemptyset(&hup.sa_mask);
  sigaction(SIGHUP, &hup, nullptr);

  const std::string bin = ProgramDir();
  const std::string conf = cell.Conf();
  std::vector<Child> children;
  auto add = [&](const std::string& name, const std::string& program,
                 std::vector<std::string> extra) {
    Child c;
    c.name = name;
    c.argv = {bin + "/" + program, "-c", conf};
    c.argv.insert(c.argv.end(), extra.begin(), extra.end());
    children.push_back(std::move(c));
  };
  add("notifyd", "natter-notifyd", {});
  const std::vector<std::vector<std::string>> started = StoredNames(cell);
  for (const auto& [name, flags] : StoredChildren(cell, false))
    add(name, "natter-stored", flags);
  add("routed", "natter-routed", {});
  // One frontd, or several on consecutive endpoints after the first.
  const std::vector<std::string> frontds = FrontdNames(cell);
  const std::string listen =
      listen_override.empty() ? FrontdListenOf(cell) : listen_override;
  for (unsigned k = 0; k < frontds.size(); ++k) {
    if (frontds.size() == 1 && listen_override.empty()) {
      add(frontds[k], "natter-frontd", {});
    } else {
      add(frontds[k], "natter-frontd", {"--listen", FrontdListen(listen, k)});
    }
  }

  for (auto& c : children) {
    if (!Spawn(cell, &c, true)) {
      std::cerr << "natterctl: cannot start " << c.argv[0] << ": "
                << std::strerror(errno) << "\n";
      StopAll(children);
      return EX_OSERR;
    }
  }

  // Wait until every daemon says it serves.
  auto deadline = Clock::now() + std::chrono::seconds(30);
  size_t ready = 0;
  while (ready < children.size()) {
    if (g_stop || Clock::now() >= deadline) {
      std::cerr << "natterctl: the cell did not become ready"
                << (g_stop ? " (interrupted)" : " within 30s") << "\n";
      StopAll(children);
      return EX_UNAVAILABLE;
    }
    for (auto& c : children) {
      if (c.ready) continue;
      struct pollfd p = {c.ready_fd, POLLIN, 0};
      if (::poll(&p, 1, 10) > 0) {
        char buf[16];
        ssize_t n = ::read(c.ready_fd, buf, sizeof buf);
        ::close(c.ready_fd);
        c.ready_fd = -1;
        if (n > 0) {
          c.ready = true;
          ++ready;
          continue;
        }
        int status = 0;
        ::waitpid(c.pid, &status, 0);
        c.pid = -1;
        std::cerr << "natterctl: natter-"
                  << c.name.substr(0, c.name.find_first_of("-.")) << " ("
                  << c.name << ") " << DescribeStatus(status)
                  << " before it was ready; see " << cell.Log(c.name) << "\n";
        StopAll(children);
        return WIFEXITED(status) && WEXITSTATUS(status) == EX_CONFIG
                   ? EX_CONFIG
                   : EX_UNAVAILABLE;
      }
    }
  }
  std::cout << "ready" << std::endl;

  while (!g_stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (g_reload.exchange(false)) ReloadChildren(cell, bin, started, &children);
    int status;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (auto& c : children) {
        if (c.pid != pid) continue;
        c.pid = -1;
        if (Clock::now() - c.started >= std::chrono::seconds(10)) {
          c.backoff = std::chrono::milliseconds(100);
        }
        c.restart_at = Clock::now() + c.backoff;
        std::cerr << "natterctl: " << c.name << " " << DescribeStatus(status)
                  << "; restarting in " << c.backoff.count() << "ms\n";
        c.backoff = std::min(c.backoff * 2, std::chrono::milliseconds(10000));
      }
    }
    for (auto& c : children) {
      if (c.pid < 0 && !g_stop && Clock::now() >= c.restart_at)
        Spawn(cell, &c, false);
    }
  }
  StopAll(children);
  for (auto& c : children) ::unlink(cell.Pid(c.name).c_str());
  ::unlink(lock_path.c_str());
  return EX_OK;
}

}  // namespace ctl
}  // namespace natter

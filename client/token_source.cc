#include "client/token_source.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/proto.h"
#include "common/token.h"

extern char** environ;

namespace natter {
namespace {

// The first line of text, without a trailing \r or spaces.
std::string FirstLine(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  while (!line.empty() && (line.back() == '\r' || line.back() == ' '))
    line.pop_back();
  return line;
}

// Runs command through /bin/sh; fills *out with (the start of) its standard
// output and *status with its wait status.  False if it could not be run or
// was killed for running past timeout_ms.
bool RunShell(const std::string& command, int timeout_ms, std::string* out,
              int* status, std::string* why) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    *why = std::strerror(errno);
    return false;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  // Its own process group, so that a command that hangs goes whole; and
  // the signals natter ignores (SIGPIPE) back to their defaults.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  pid_t pid;
  int rc = posix_spawn(&pid, "/bin/sh", &actions, &attr,
                       const_cast<char**>(argv), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    *why = std::strerror(rc);
    return false;
  }
  // A token is one short line: more than a few of them is not read.
  const size_t kMaxOutput = 4 * kMaxTokenBytes;
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p = {fds[0], POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    ssize_t got = ::read(fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    if (out->size() < kMaxOutput) out->append(buf, static_cast<size_t>(got));
  }
  ::close(fds[0]);
  // Its output is over; its end must come within the time too.
  while (!timed_out) {
    pid_t done = ::waitpid(pid, status, WNOHANG);
    if (done == pid || (done < 0 && errno != EINTR)) break;
    timed_out = std::chrono::steady_clock::now() >= deadline;
    if (!timed_out) ::usleep(5000);
  }
  if (timed_out) {
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, status, 0) < 0 && errno == EINTR) {
    }
    *why = "gave no token within " + std::to_string(timeout_ms / 1000) + "s";
    return false;
  }
  return true;
}

}  // namespace

TokenSource TokenFile(const std::string& path) {
  return [path](std::string* token) {
    std::string line;
    if (!ReadFirstLine(path, &line)) {
      return Status(ErrorCode::kTokenMalformed,
                    "token file " + path + ": cannot read it");
    }
    if (line.empty()) {
      return Status(ErrorCode::kTokenMalformed,
                    "token file " + path + ": the first line is empty");
    }
    *token = line;
    return Status::Ok();
  };
}

TokenSource TokenCommand(const std::string& command, int timeout_ms) {
  return [command, timeout_ms](std::string* token) {
    std::string out, why;
    int status = 0;
    const std::string what = "token command '" + command + "': ";
    if (!RunShell(command, timeout_ms, &out, &status, &why)) {
      return Status(ErrorCode::kUnavailable, what + why);
    }
    if (WIFSIGNALED(status)) {
      return Status(
          ErrorCode::kUnavailable,
          what + "killed by signal " + std::to_string(WTERMSIG(status)));
    }
    if (WEXITSTATUS(status) != 0) {
      return Status(
          ErrorCode::kUnavailable,
          what + "exited with " + std::to_string(WEXITSTATUS(status)));
    }
    std::string line = FirstLine(out);
    if (line.empty())
      return Status(ErrorCode::kUnavailable, what + "printed no token");
    *token = line;
    return Status::Ok();
  };
}

}  // namespace natter

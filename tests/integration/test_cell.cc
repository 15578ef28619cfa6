#include "tests/integration/test_cell.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <stdexcept>

#include "common/shard.h"
#include "common/text.h"
#include "common/token.h"

namespace natter {

std::string BinPath(const std::string& program) {
  const char* bin = std::getenv("NATTER_BIN");
  return std::string(bin != nullptr && *bin ? bin : "bin") + "/" + program;
}

int RunCommand(const std::string& command, std::string* out) {
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    if (out != nullptr) out->append(buf, n);
  }
  int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TestCell::TestCell(unsigned shards, const std::string& extra_conf) {
  std::string init = BinPath("natterctl") + " init --dir " + dir() + " --shards " +
                     std::to_string(shards) + " --listen ipc://" + dir() +
                     "/run/frontd.sock 2>/dev/null";
  if (RunCommand(init) != 0) throw std::runtime_error("natterctl init failed");
  if (!extra_conf.empty()) {
    FILE* f = std::fopen((dir() + "/natter.conf").c_str(), "a");
    if (f == nullptr) throw std::runtime_error("natter.conf");
    std::fputs(("\n" + extra_conf + "\n").c_str(), f);
    std::fclose(f);
  }
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe");
  up_pid_ = ::fork();
  if (up_pid_ == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    std::string ctl = BinPath("natterctl");
    ::execl(ctl.c_str(), ctl.c_str(), "up", "--dir", dir().c_str(), nullptr);
    ::_exit(127);
  }
  ::close(fds[1]);
  // Wait for "ready".
  std::string seen;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (seen.find("ready\n") == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::close(fds[0]);
      throw std::runtime_error("the cell did not become ready");
    }
    struct pollfd p = {fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      char buf[64];
      ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) {
        ::close(fds[0]);
        throw std::runtime_error("natterctl up exited before ready");
      }
      seen.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fds[0]);
}

TestCell::~TestCell() {
  if (up_pid_ > 0) {
    ::kill(up_pid_, SIGTERM);
    int status;
    ::waitpid(up_pid_, &status, 0);
  }
}

std::string TestCell::Token(uint64_t user, long ttl_s,
                            const std::string& device) const {
  SigningKey key;
  if (!ReadSigningKey(dir() + "/keys/token", "", &key).ok()) {
    throw std::runtime_error("no signing key");
  }
  TokenClaims c;
  c.user = UserId(user);
  c.device = device;
  uint64_t now = static_cast<uint64_t>(std::time(nullptr));
  c.issued = ttl_s >= 0 ? now : now - 2 * static_cast<uint64_t>(-ttl_s);
  c.expires = static_cast<uint64_t>(static_cast<long>(now) + ttl_s);
  return SignToken(c, key);
}

ClientOptions TestCell::Options(uint64_t user, const std::string& device) const {
  ClientOptions o;
  o.server = "ipc://" + dir() + "/run/frontd.sock";
  ReadFirstLine(dir() + "/keys/frontd.pub", &o.server_key);
  o.token = Token(user);
  o.device = device;
  o.state_dir = dir() + "/state-" + std::to_string(user);
  o.timeout_ms = 20000;
  return o;
}

std::string TestCell::NatterArgs(uint64_t user) const {
  return BinPath("natter") + " -c " + dir() + "/client.conf -s ipc://" + dir() +
         "/run/frontd.sock --state-dir " + dir() + "/cli-state -t " + Token(user);
}

pid_t TestCell::DaemonPid(const std::string& name) const {
  std::string line;
  if (!ReadFirstLine(dir() + "/run/" + name + ".pid", &line)) return -1;
  auto v = ParseUint(line);
  return v ? static_cast<pid_t>(*v) : -1;
}

std::pair<UserId, UserId> TwoUsers(unsigned shards) {
  UserId a(101);
  for (uint64_t u = 202;; ++u) {
    if (shards < 2 || HomeShard(UserId(u), shards) != HomeShard(a, shards)) {
      return {a, UserId(u)};
    }
  }
}

}  // namespace natter

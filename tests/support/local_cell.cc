#include "tests/support/local_cell.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <stdexcept>

#include "common/daemon.h"
#include "common/text.h"
#include "common/token.h"

namespace natter {

LocalCell::LocalCell(const std::string& bin, const std::string& dir,
                     unsigned shards, const std::string& extra_conf,
                     const std::function<void(const std::string&)>& before_up,
                     const std::string& listen, unsigned replicas,
                     unsigned frontds)
    : dir_(dir),
      listen_(listen.empty() ? "ipc://" + dir + "/run/frontd.sock" : listen),
      frontds_(frontds) {
  std::string ctl = bin + "/natterctl";
  std::string init =
      ctl + " init --dir " + dir_ + " --shards " + std::to_string(shards) +
      " --replicas " + std::to_string(replicas) + " --frontds " +
      std::to_string(frontds) + " --listen " + listen_ + " 2>/dev/null";
  if (std::system(init.c_str()) != 0)
    throw std::runtime_error("natterctl init failed in " + dir_);
  if (!extra_conf.empty()) {
    FILE* f = std::fopen((dir_ + "/natter.conf").c_str(), "a");
    if (f == nullptr)
      throw std::runtime_error(dir_ + "/natter.conf: cannot append");
    std::fputs(("\n" + extra_conf + "\n").c_str(), f);
    std::fclose(f);
  }
  if (before_up) before_up(dir_);
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe");
  up_pid_ = ::fork();
  if (up_pid_ < 0) throw std::runtime_error("fork");
  if (up_pid_ == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execl(ctl.c_str(), ctl.c_str(), "up", "--dir", dir_.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string seen;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (seen.find("ready\n") == std::string::npos) {
    struct pollfd p = {fds[0], POLLIN, 0};
    ssize_t n = 0;
    char buf[64];
    if (std::chrono::steady_clock::now() >= deadline ||
        (::poll(&p, 1, 100) > 0 &&
         (n = ::read(fds[0], buf, sizeof buf)) <= 0)) {
      ::close(fds[0]);
      ::kill(up_pid_, SIGTERM);
      ::waitpid(up_pid_, nullptr, 0);
      up_pid_ = -1;
      throw std::runtime_error("the cell in " + dir_ + " did not become ready");
    }
    if (n > 0) seen.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
}

LocalCell::~LocalCell() {
  if (up_pid_ > 0) {
    ::kill(up_pid_, SIGTERM);
    ::waitpid(up_pid_, nullptr, 0);
  }
}

std::string LocalCell::Token(uint64_t user, long ttl_s,
                             const std::string& device) const {
  SigningKey key;
  if (!ReadSigningKey(dir_ + "/keys/token", "", &key).ok()) {
    throw std::runtime_error(dir_ + ": no signing key");
  }
  TokenClaims c;
  c.user = UserId(user);
  c.device = device;
  uint64_t now = static_cast<uint64_t>(std::time(nullptr));
  c.issued = ttl_s >= 0 ? now : now - 2 * static_cast<uint64_t>(-ttl_s);
  c.expires = static_cast<uint64_t>(static_cast<long>(now) + ttl_s);
  return SignToken(c, key);
}

ClientOptions LocalCell::Options(uint64_t user,
                                 const std::string& device) const {
  ClientOptions o;
  o.server = listen_;
  if (frontds_ > 1) {
    // Every frontd, as natterctl wrote them into client.conf.
    std::ifstream in(dir_ + "/client.conf");
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("server = ", 0) == 0) o.server = line.substr(9);
    }
  }
  ReadFirstLine(dir_ + "/keys/frontd.pub", &o.server_key);
  o.token = Token(user);
  o.device = device;
  o.state_dir = dir_ + "/state-" + std::to_string(user);
  o.timeout_ms = 20000;
  return o;
}

pid_t LocalCell::DaemonPid(const std::string& name) const {
  std::string line;
  if (!ReadFirstLine(dir_ + "/run/" + name + ".pid", &line)) return -1;
  auto v = ParseUint(line);
  return v ? static_cast<pid_t>(*v) : -1;
}

std::string TestBinDir() {
  const char* bin = std::getenv("NATTER_BIN");
  if (bin != nullptr && *bin != '\0') return bin;
  std::string build = ProgramDir();
  return build.substr(0, build.rfind('/')) + "/bin";
}

namespace {

// Binds a new socket to 127.0.0.1:port (0: any) and lets it go; the port
// it had, or 0 if it could not be bound.
int BindLoopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof a;
  int bound = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    bound = ntohs(a.sin_port);
  }
  ::close(fd);
  return bound;
}

}  // namespace

int FreeLoopbackPort() { return BindLoopback(0); }

int FreeLoopbackPorts(unsigned n) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    int port = FreeLoopbackPort();
    if (port == 0 || port + static_cast<int>(n) > 65535) continue;
    bool all = true;
    for (unsigned k = 1; k < n && all; ++k)
      all = BindLoopback(port + static_cast<int>(k)) != 0;
    if (all) return port;
  }
  return 0;
}

}  // namespace natter

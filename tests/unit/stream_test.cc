// frontd's StreamServer (daemons/frontd/stream.h): its clients'
// connections on loopback and Unix sockets, read and written from the
// caller's thread.
#include "daemons/frontd/stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "tests/support/local_cell.h"
#include "tests/support/temp_dir.h"

using namespace natter;
using namespace natter::frontd;

namespace {

using Clock = std::chrono::steady_clock;

int ConnectTcp(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(static_cast<uint16_t>(port));
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&in), sizeof in) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int ConnectUnix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&un), sizeof un) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// What the server reported, by connection.
struct Seen {
  std::map<uint64_t, std::string> address;
  std::map<uint64_t, std::string> bytes;
  std::vector<uint64_t> closed;
  StreamServer::Handlers handlers;
  Seen() {
    handlers.opened = [this](uint64_t id, const std::string& a) {
      address[id] = a;
    };
    handlers.data = [this](uint64_t id, std::string_view b) {
      bytes[id].append(b);
    };
    handlers.closed = [this](uint64_t id) { closed.push_back(id); };
  }
};

// Polls until done() or two seconds pass.
template <typename Done>
bool PollUntil(StreamServer& server, Seen& seen, Done done) {
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < until) {
    server.Poll(seen.handlers);
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// Binds server on a free loopback port, and says which.
int BindLoopback(StreamServer* server) {
  const int port = FreeLoopbackPort();
  REQUIRE(server->Bind("tcp://127.0.0.1:" + std::to_string(port)).ok());
  return port;
}

}  // namespace

TEST_CASE(
    "StreamServer: connections open with their address, bytes come both "
    "ways, and a peer's close is told once") {
  StreamServer server;
  const int port = BindLoopback(&server);
  Seen seen;
  int a = ConnectTcp(port), b = ConnectTcp(port);
  REQUIRE(a >= 0);
  REQUIRE(b >= 0);
  REQUIRE(PollUntil(server, seen, [&] { return seen.address.size() == 2; }));
  for (const auto& [id, address] : seen.address) CHECK(address == "127.0.0.1");
  const uint64_t first = seen.address.begin()->first;
  const uint64_t second = std::next(seen.address.begin())->first;
  CHECK(first != second);  // ids are not reused or shared

  REQUIRE(::send(a, "hello", 5, 0) == 5);
  REQUIRE(
      PollUntil(server, seen, [&] { return seen.bytes[first] == "hello"; }));
  CHECK(seen.bytes.count(second) == 0);  // nothing crosses connections
  CHECK(server.Write(second, "back", 4) == 4);
  char got[8] = {};
  REQUIRE(::recv(b, got, sizeof got, 0) == 4);
  CHECK(std::string(got, 4) == "back");

  ::close(a);
  REQUIRE(PollUntil(server, seen, [&] { return !seen.closed.empty(); }));
  CHECK(seen.closed == std::vector<uint64_t>{first});
  CHECK(server.Write(first, "x", 1) == -1);  // gone
  CHECK(server.connections() == 1);

  // Closed from this side: the peer sees the end, and no event follows.
  server.Close(second);
  CHECK(::recv(b, got, sizeof got, 0) == 0);
  server.Poll(seen.handlers);
  CHECK(seen.closed.size() == 1);
  ::close(b);
}

TEST_CASE(
    "StreamServer: a connection's reads are bounded a turn, so a fast "
    "sender does not crowd out the others") {
  StreamServer server;
  const int port = BindLoopback(&server);
  Seen seen;
  int fast = ConnectTcp(port);
  REQUIRE(PollUntil(server, seen, [&] { return seen.address.size() == 1; }));
  const std::string lot(4 * StreamServer::kReadBytes, 'x');
  REQUIRE(::send(fast, lot.data(), lot.size(), 0) ==
          static_cast<ssize_t>(lot.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  server.Poll(seen.handlers);
  CHECK(seen.bytes.begin()->second.size() <= StreamServer::kReadBytes);
  REQUIRE(PollUntil(server, seen, [&] {
    return seen.bytes.begin()->second.size() == lot.size();
  }));
  ::close(fast);
}

TEST_CASE("StreamServer: ipc:// is a Unix socket, left behind or not") {
  TempDir dir;
  const std::string path = dir.path() + "/frontd.sock";
  {
    StreamServer before;
    REQUIRE(before.Bind("ipc://" + path).ok());
  }
  // The file of a server before is still there; a new one binds anyway.
  StreamServer server;
  REQUIRE(server.Bind("ipc://" + path).ok());
  Seen seen;
  int c = ConnectUnix(path);
  REQUIRE(c >= 0);
  REQUIRE(PollUntil(server, seen, [&] { return seen.address.size() == 1; }));
  CHECK(seen.address.begin()->second.empty());  // no network address
  ::close(c);

  StreamServer bad;
  CHECK(bad.Bind("udp://127.0.0.1:1").code() == ErrorCode::kBadRequest);
  StreamServer taken;
  const int port = FreeLoopbackPort();
  StreamServer holder;
  REQUIRE(holder.Bind("tcp://127.0.0.1:" + std::to_string(port)).ok());
  Status s = taken.Bind("tcp://127.0.0.1:" + std::to_string(port));
  CHECK(s.code() == ErrorCode::kBadRequest);
  CHECK(s.message().find("in use") != std::string::npos);
}

TEST_CASE(
    "StreamServer: out of descriptors, it stops accepting for a while "
    "instead of spinning, and takes the waiting connection after") {
  // In a child process: its descriptor limit is lowered.
  const int port = FreeLoopbackPort();
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    StreamServer server;
    if (!server.Bind("tcp://127.0.0.1:" + std::to_string(port)).ok())
      ::_exit(10);
    int client = ConnectTcp(port);  // waits in the backlog
    if (client < 0) ::_exit(11);
    // No descriptor left for accept: fill every one up to the limit.
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    rlimit low = limit;
    low.rlim_cur = 64;
    if (::setrlimit(RLIMIT_NOFILE, &low) != 0) ::_exit(12);
    std::vector<int> filler;
    for (int fd; (fd = ::dup(0)) >= 0;) filler.push_back(fd);
    Seen seen;
    server.Poll(seen.handlers);
    if (server.accepting() || !seen.address.empty()) ::_exit(13);
    // While paused, polls do not see the listening socket (no spin).
    server.Poll(seen.handlers);
    if (!seen.address.empty()) ::_exit(14);
    for (int fd : filler) ::close(fd);
    std::this_thread::sleep_for(StreamServer::kAcceptPause +
                                std::chrono::milliseconds(20));
    // The loop's timer resumes it: its descriptor turns readable for the
    // connection waiting (nothing else would wake a poll on it).
    pollfd ready{server.fd(), POLLIN, 0};
    if (::poll(&ready, 1, 0) != 0) ::_exit(16);
    server.Resume();
    if (::poll(&ready, 1, 100) != 1) ::_exit(17);
    server.Poll(seen.handlers);
    if (!server.accepting() || seen.address.size() != 1) ::_exit(15);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

// frontd's ClientGate (daemons/frontd/gate.h) on a loopback port of its
// own, driven turn by turn as frontd drives it: its limits on connections
// without a session, on silence and on a client that does not read.
#include "daemons/frontd/gate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/metrics.h"
#include "common/net.h"
#include "tests/support/local_cell.h"
#include "tests/support/wait.h"

using namespace natter;
using namespace natter::frontd;

namespace {

using Clock = std::chrono::steady_clock;

struct TestGate {
  zmq::context_t ctx{1};
  int port = FreeLoopbackPort();
  ClientGate gate;
  std::vector<ClientGate::Request> requests;

  explicit TestGate(const ClientGate::Limits& limits)
      : gate(limits, CurveIdentity{}) {
    REQUIRE(port != 0);
    REQUIRE(gate.Bind("tcp://127.0.0.1:" + std::to_string(port)).ok());
  }
  // One turn of frontd's loop (waiting up to 10 ms).
  void TurnOnce() {
    std::vector<zmq::pollitem_t> items = {gate.PollItem()};
    Poll(items, 10);
    gate.Read(&requests);
    gate.Handshake(&requests);
    gate.Tick(Clock::now());
    gate.Flush();
  }
  // A turn that reads but makes no handshake, as while a storm's pile up.
  void ReadOnly() {
    std::vector<zmq::pollitem_t> items = {gate.PollItem()};
    Poll(items, 10);
    gate.Read(&requests);
    gate.Flush();
  }
  // A turn that makes one handshake at most (a deadline already past).
  void TurnOneHandshake() {
    std::vector<zmq::pollitem_t> items = {gate.PollItem()};
    Poll(items, 10);
    gate.Read(&requests);
    gate.Handshake(&requests, Clock::time_point{});
    gate.Tick(Clock::now());
    gate.Flush();
  }
  // Turns of frontd's loop for ms.
  void Turn(int ms) {
    auto until = Clock::now() + std::chrono::milliseconds(ms);
    do {
      TurnOnce();
    } while (Clock::now() < until);
  }
  // Turns until done() holds; if 10 s pass first, the test fails.
  void TurnUntil(const std::string& what, const std::function<bool()>& done) {
    WaitUntil(what, done, 10, [this] { TurnOnce(); });
  }
};

// A TCP connection from a loopback address of its own (127.0.0.N).
int ConnectFrom(int n, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7f000000u + static_cast<uint32_t>(n));
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) == 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
  return fd;
}

// Whether frontd closed the connection: its greeting read, then the end.
bool Closed(int fd) {
  char buf[256];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return true;
  }
}

}  // namespace

TEST_CASE(
    "the gate keeps max-pending-per-address connections without a session from "
    "an address") {
  ClientGate::Limits limits;
  limits.max_pending_per_address = 1;
  TestGate t(limits);
  int first = ConnectFrom(2, t.port);
  t.TurnUntil("the gate to take the connection",
              [&] { return t.gate.pending() == 1; });
  int second = ConnectFrom(2, t.port);
  t.TurnUntil("a second connection from the address to close the first",
              [&] { return Closed(first); });
  CHECK(t.gate.pending() == 1);
  CHECK_FALSE(Closed(second));
  // Another address has a place of its own.
  int other = ConnectFrom(3, t.port);
  t.TurnUntil("the gate to take a connection from another address",
              [&] { return t.gate.pending() == 2; });
  CHECK_FALSE(Closed(second));
  CHECK_FALSE(Closed(other));
  for (int fd : {first, second, other}) ::close(fd);
}

TEST_CASE(
    "the gate keeps max-pending connections without a session in all, the "
    "oldest going") {
  ClientGate::Limits limits;
  limits.max_pending = 2;
  TestGate t(limits);
  std::vector<int> fds;
  for (size_t n = 1; n <= 2; ++n) {
    fds.push_back(ConnectFrom(static_cast<int>(n) + 1, t.port));
    t.TurnUntil("the gate to take connection " + std::to_string(n),
                [&] { return t.gate.pending() == n; });
  }
  fds.push_back(ConnectFrom(4, t.port));
  t.TurnUntil("a third connection to close the oldest",
              [&] { return Closed(fds[0]); });
  CHECK(t.gate.pending() == 2);
  CHECK_FALSE(Closed(fds[1]));
  CHECK_FALSE(Closed(fds[2]));
  std::vector<ConnId> closed = t.gate.TakeClosed();
  CHECK(closed.size() == 1);
  for (int fd : fds) ::close(fd);
}

TEST_CASE(
    "a connection with no session within hello-timeout is closed; one with a "
    "session stays") {
  ClientGate::Limits limits;
  limits.hello_timeout = std::chrono::milliseconds(300);
  TestGate t(limits);
  int silent = ConnectFrom(2, t.port);
  // A client that finishes its handshake and is given a session.
  zmq::context_t ctx(1);
  zmq::socket_t client(ctx, zmq::socket_type::dealer);
  client.set(zmq::sockopt::linger, 0);
  client.connect("tcp://127.0.0.1:" + std::to_string(t.port));
  client.send(zmq::str_buffer("hello"), zmq::send_flags::none);
  t.TurnUntil("the client's first message",
              [&] { return !t.requests.empty(); });
  REQUIRE(t.requests.size() == 1);
  t.gate.SetSession(t.requests[0].conn, true);
  t.TurnUntil("hello-timeout to close the silent connection",
              [&] { return Closed(silent); });
  // Long past hello-timeout, on purpose: the connection with a session
  // stays.
  t.Turn(2000);
  CHECK(t.gate.connections() == 1);
  CHECK(t.gate.Has(t.requests[0].conn));
  ::close(silent);
}

TEST_CASE(
    "a client that reads nothing is cut off once max-queued bytes wait for "
    "it") {
  ClientGate::Limits limits;
  limits.max_queued = 64 * 1024;
  TestGate t(limits);
  zmq::context_t ctx(1);
  zmq::socket_t client(ctx, zmq::socket_type::dealer);
  client.set(zmq::sockopt::linger, 0);
  client.set(zmq::sockopt::rcvhwm, 1);
  client.set(zmq::sockopt::rcvbuf, 4096);
  client.connect("tcp://127.0.0.1:" + std::to_string(t.port));
  client.send(zmq::str_buffer("hello"), zmq::send_flags::none);
  t.TurnUntil("the client's first message",
              [&] { return !t.requests.empty(); });
  REQUIRE(t.requests.size() == 1);
  const ConnId conn = t.requests[0].conn;
  t.gate.SetSession(conn, true);
  const std::string page(100 * 1024, 'p');
  int sent = 0;
  while (t.gate.Send(conn, page) && sent < 1000) {
    ++sent;
    t.Turn(5);
  }
  // Bounded: what the socket holds and max-queued, then no more.
  CHECK(sent < 50);
  CHECK_FALSE(t.gate.Has(conn));
  std::vector<ConnId> closed = t.gate.TakeClosed();
  CHECK(std::find(closed.begin(), closed.end(), conn) != closed.end());
}

TEST_CASE(
    "the gate admits handshake-rate new connections a second; the rest are "
    "refused busy, and later ones are admitted again") {
  ClientGate::Limits limits;
  limits.handshake_rate = 2;
  limits.hello_timeout = std::chrono::milliseconds(300);
  TestGate t(limits);
  std::vector<int> fds;
  for (int n = 2; n <= 5; ++n) fds.push_back(ConnectFrom(n, t.port));
  t.TurnUntil("the gate to take the four connections",
              [&] { return t.gate.connections() == 4; });
  // Two admitted (waiting for a hello), two refused in their handshake
  // and closed after the grace.
  CHECK(t.gate.pending() == 2);
  t.TurnUntil("the refused connections to close",
              [&] { return Closed(fds[2]) && Closed(fds[3]); });
  MetricSet set;
  t.gate.Stats(&set);
  bool counted = false;
  for (const Metric& m : set.metrics()) {
    if (m.name == "natter_frontd_refused_rate_total") counted = m.value == 2;
  }
  CHECK(counted);
  // A second later the bucket is full again.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  int later = ConnectFrom(6, t.port);
  t.TurnUntil("a later connection to be admitted",
              [&] { return t.gate.pending() >= 1 && !Closed(later); });
  t.Turn(100);
  CHECK_FALSE(Closed(later));
  for (int fd : fds) ::close(fd);
  ::close(later);
}

TEST_CASE(
    "a connected client's request is served while the handshakes of newer "
    "clients wait their turn") {
  TestGate t(ClientGate::Limits{});
  zmq::context_t ctx(1);
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(t.port);
  zmq::socket_t connected(ctx, zmq::socket_type::dealer);
  connected.set(zmq::sockopt::linger, 0);
  connected.connect(endpoint);
  connected.send(zmq::str_buffer("hello"), zmq::send_flags::none);
  t.TurnUntil("the connected client's first message",
              [&] { return !t.requests.empty(); });
  const ConnId mine = t.requests[0].conn;
  t.requests.clear();
  // A crowd arrives, and its handshakes pile up.
  constexpr size_t kCrowd = 12;
  std::vector<zmq::socket_t> crowd;
  for (size_t i = 0; i < kCrowd; ++i) {
    crowd.emplace_back(ctx, zmq::socket_type::dealer);
    crowd.back().set(zmq::sockopt::linger, 0);
    crowd.back().connect(endpoint);
    crowd.back().send(zmq::str_buffer("hello"), zmq::send_flags::none);
  }
  auto turn = [&t] { t.TurnOneHandshake(); };
  auto read_only = [&t] { t.ReadOnly(); };
  WaitUntil(
      "the crowd's handshakes to wait",
      [&] { return t.gate.handshakes_waiting() == kCrowd; }, 10, read_only);
  connected.send(zmq::str_buffer("ping"), zmq::send_flags::none);
  auto served = [&] {
    for (const auto& r : t.requests) {
      if (r.conn == mine) return true;
    }
    return false;
  };
  WaitUntil("the connected client's request", served, 10, read_only);
  // Served with every handshake still waiting: none was made to get to it.
  CHECK(t.gate.handshakes_waiting() == kCrowd);
  CHECK(t.requests.size() == 1);
  // Then every newcomer gets through, a handshake a turn.
  WaitUntil(
      "every newcomer's hello", [&] { return t.requests.size() == kCrowd + 1; },
      10, turn);
  CHECK(t.gate.handshakes_waiting() == 0);
}

TEST_CASE(
    "a connection that sends more than a handshake's bytes before its "
    "handshake is done is closed") {
  TestGate t(ClientGate::Limits{});
  // A ZMTP 3 greeting (NULL), then a READY command longer than any.
  int fd = ConnectFrom(2, t.port);
  std::string greeting(64, '\0');
  greeting[0] = '\xff';
  greeting[9] = '\x7f';
  greeting[10] = '\x03';
  greeting[11] = '\x01';
  greeting.replace(12, 4, "NULL");
  REQUIRE(::send(fd, greeting.data(), greeting.size(), 0) ==
          static_cast<ssize_t>(greeting.size()));
  const std::string flood(ZmtpServer::kMaxHandshakeBytes, 'x');
  size_t sent = 0;
  // Turns without handshakes: the bytes pile up as a storm's would.
  auto read_only = [&t] { t.ReadOnly(); };
  WaitUntil(
      "the connection to close",
      [&] {
        if (sent < flood.size()) {
          ssize_t n = ::send(fd, flood.data() + sent, flood.size() - sent,
                             MSG_DONTWAIT);
          if (n > 0) sent += static_cast<size_t>(n);
        }
        return Closed(fd);
      },
      10, read_only);
  CHECK(t.gate.handshakes_waiting() <= 1);
  ::close(fd);
}

TEST_CASE(
    "a gate that stopped taking refuses new connections busy, counted as "
    "draining") {
  ClientGate::Limits limits;
  limits.handshake_rate = 1;
  TestGate t(limits);
  t.gate.StopTaking();
  int fd = ConnectFrom(2, t.port);
  t.TurnUntil("the refused connection to close", [&] { return Closed(fd); });
  MetricSet set;
  t.gate.Stats(&set);
  std::map<std::string, double> counts;
  for (const Metric& m : set.metrics()) counts[m.name] = m.value;
  CHECK(counts["natter_frontd_refused_draining_total"] == 1);
  CHECK(counts["natter_frontd_clients_refused_total"] == 0);
  CHECK(counts["natter_frontd_refused_rate_total"] == 0);
  ::close(fd);
}

TEST_CASE(
    "a client that sends PINGs and reads nothing is cut off once max-queued "
    "bytes of PONGs wait for it") {
  ClientGate::Limits limits;
  limits.max_queued = 64 * 1024;
  limits.hello_timeout = std::chrono::seconds(60);  // not what closes it
  TestGate t(limits);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(t.port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
  // ZMTP 3.1 with the NULL mechanism (the gate has no key): greeting,
  // READY, then PINGs with 16 bytes of context, read by nobody.
  std::string hello("\xff\0\0\0\0\0\0\0\0\x7f\x03\x01NULL", 16);
  hello.resize(64, '\0');
  const std::string ready_body = std::string(
                                     "\x05"
                                     "READY"
                                     "\x0b"
                                     "Socket-Type",
                                     18) +
                                 std::string(
                                     "\0\0\0\x06"
                                     "DEALER",
                                     10);
  hello += std::string("\x04", 1) + static_cast<char>(ready_body.size()) +
           ready_body;
  REQUIRE(::send(fd, hello.data(), hello.size(), 0) ==
          static_cast<ssize_t>(hello.size()));
  t.TurnUntil("the connection", [&] { return t.gate.connections() == 1; });
  std::string pings;
  const std::string ping = std::string(
                               "\x04\x17\x04"
                               "PING"
                               "\0\x0a",
                               9) +
                           std::string(16, 'c');
  for (int i = 0; i < 100; ++i) pings += ping;
  auto counted = [&] {
    MetricSet set;
    t.gate.Stats(&set);
    for (const Metric& m : set.metrics())
      if (m.name == "natter_frontd_closed_not_reading_total") return m.value;
    return -1.0;
  };
  // At most 20 MB of PINGs; the cut comes after the socket buffers and
  // max-queued are full (a few hundred KiB).
  for (int i = 0; i < 8000 && t.gate.connections() == 1; ++i) {
    ::send(fd, pings.data(), pings.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    t.TurnOnce();
  }
  CHECK(t.gate.connections() == 0);
  CHECK(counted() == 1);
  ::close(fd);
}

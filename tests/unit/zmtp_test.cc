// frontd's ZMTP server (daemons/frontd/zmtp.h) against libzmq's own DEALER:
// the test drives a ZmtpServer over a ZMQ_STREAM socket, as frontd does, and
// a real libzmq client talks to it over ipc://.
#include "daemons/frontd/zmtp.h"

#include <sodium.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/endian.h"
#include "common/net.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

using namespace natter;
using namespace natter::frontd;

namespace {

using Clock = std::chrono::steady_clock;

struct Keys {
  char pub[41], sec[41];
  Keys() { REQUIRE(zmq_curve_keypair(pub, sec) == 0); }
  CurveIdentity Identity() const {
    CurveIdentity id;
    id.enabled = true;
    zmq_z85_decode(id.secret.data(), sec);
    zmq_z85_decode(id.public_key.data(), pub);
    return id;
  }
};

// One STREAM socket and the ZmtpServer of the one connection it takes.
struct Server {
  TempDir dir;
  zmq::context_t ctx{1};
  zmq::socket_t stream{ctx, zmq::socket_type::stream};
  std::string endpoint = "ipc://" + dir.path() + "/s.sock";
  ZmtpServer::Options options;
  std::string id;
  std::unique_ptr<ZmtpServer> zmtp;
  std::vector<ZmtpMessage> messages;
  bool failed = false;
  bool closed = false;
  std::string last_fed;  // the bytes of the newest read, as they came
  std::string refusal;   // if set, the connection is refused as it opens

  explicit Server(const CurveIdentity& identity) {
    options.identity = identity;
    options.max_message = 16 * 1024;
    stream.set(zmq::sockopt::linger, 0);
    stream.bind(endpoint);
  }
  void Write(const std::string& bytes) {
    if (bytes.empty()) return;
    stream.send(zmq::buffer(id), zmq::send_flags::sndmore);
    stream.send(zmq::buffer(bytes), zmq::send_flags::none);
  }
  // One turn: what the socket has (waiting up to 10 ms), fed to the
  // server.
  void Turn() {
    std::vector<zmq::pollitem_t> items = {{stream.handle(), 0, ZMQ_POLLIN, 0}};
    Poll(items, 10);
    Parts parts;
    while (RecvParts(stream, &parts)) {
      REQUIRE(parts.size() == 2);
      if (parts[1].size() == 0) {
        if (!zmtp) {
          id = parts[0].to_string();
          zmtp = std::make_unique<ZmtpServer>(options);
          std::string greeting;
          zmtp->Start(&greeting);
          // As frontd does: refused when it opens, before any handshake
          // (later, the whole handshake may already be read in this turn).
          if (!refusal.empty()) zmtp->Refuse(refusal);
          Write(greeting);
        } else {
          closed = true;
        }
        continue;
      }
      last_fed = parts[1].to_string();
      std::string out;
      if (!zmtp->Feed(last_fed, &out, &messages)) failed = true;
      Write(out);
    }
  }
  // Serves until done() holds; if `seconds` pass first, the test fails.
  void ServeUntil(const std::string& what, const std::function<bool()>& done,
                  int seconds = 10) {
    WaitUntil(what, done, seconds, [this] { Turn(); });
  }
  // Serves for ms, whatever comes.
  void Serve(int ms) {
    auto until = Clock::now() + std::chrono::milliseconds(ms);
    while (Clock::now() < until) Turn();
  }
  void Send(const std::string& message) {
    std::string out;
    zmtp->Encode(message, &out);
    Write(out);
  }
};

// A libzmq DEALER, with CURVE when a server key is given.
struct Dealer {
  zmq::context_t ctx{1};
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  Keys keys;
  zmq::socket_t monitor;

  Dealer(const std::string& endpoint, const char* server_pub) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 2000);
    if (server_pub != nullptr) {
      s.set(zmq::sockopt::curve_serverkey, std::string(server_pub));
      s.set(zmq::sockopt::curve_publickey, std::string(keys.pub));
      s.set(zmq::sockopt::curve_secretkey, std::string(keys.sec));
    }
    static int n = 0;
    std::string name = "inproc://zmtp-test-monitor-" + std::to_string(++n);
    REQUIRE(zmq_socket_monitor(s.handle(), name.c_str(), ZMQ_EVENT_ALL) == 0);
    monitor = zmq::socket_t(ctx, zmq::socket_type::pair);
    monitor.connect(name);
    s.connect(endpoint);
  }
  // The socket monitor's events so far, as (id, value).
  std::vector<std::pair<uint16_t, uint32_t>> Events() {
    std::vector<std::pair<uint16_t, uint32_t>> out;
    uint16_t id;
    uint32_t value;
    while (RecvMonitorEvent(monitor, &id, &value)) out.emplace_back(id, value);
    return out;
  }
};

bool Has(const std::vector<std::pair<uint16_t, uint32_t>>& events,
         uint16_t id) {
  for (const auto& e : events) {
    if (e.first == id) return true;
  }
  return false;
}

}  // namespace

TEST_CASE(
    "a libzmq DEALER completes frontd's CURVE handshake and messages go both "
    "ways") {
  Keys server_keys;
  Server server(server_keys.Identity());
  Dealer client(server.endpoint, server_keys.pub);
  client.s.send(zmq::str_buffer("hello"), zmq::send_flags::none);
  const std::string long_text(5000, 'x');
  client.s.send(zmq::buffer(long_text), zmq::send_flags::none);
  server.ServeUntil("both messages",
                    [&] { return server.messages.size() == 2; });
  REQUIRE_FALSE(server.failed);
  REQUIRE(server.zmtp->ready());
  REQUIRE(server.messages.size() == 2);
  CHECK(server.messages[0].body == "hello");
  CHECK(server.messages[0].frames == 1);
  CHECK(server.messages[1].body == long_text);
  // The client's long-term key, as it proved it.
  CurveKey client_pub;
  zmq_z85_decode(client_pub.data(), client.keys.pub);
  CHECK(server.zmtp->client_key() == client_pub);

  for (const std::string& m :
       {std::string("welcome"), std::string(70000, 'y'), std::string()}) {
    server.Send(m);
    zmq::message_t got;
    REQUIRE(client.s.recv(got));
    CHECK(got.to_string() == m);
  }
}

TEST_CASE("the NULL mechanism works the same when frontd has no key") {
  Server server(CurveIdentity{});
  Dealer client(server.endpoint, nullptr);
  client.s.send(zmq::str_buffer("plain"), zmq::send_flags::none);
  server.ServeUntil("the message", [&] { return server.messages.size() == 1; });
  REQUIRE(server.messages.size() == 1);
  CHECK(server.messages[0].body == "plain");
  server.Send("back");
  zmq::message_t got;
  REQUIRE(client.s.recv(got));
  CHECK(got.to_string() == "back");
}

TEST_CASE("a multipart message arrives whole and says how many frames it had") {
  Keys server_keys;
  Server server(server_keys.Identity());
  Dealer client(server.endpoint, server_keys.pub);
  client.s.send(zmq::str_buffer("one"), zmq::send_flags::sndmore);
  client.s.send(zmq::str_buffer("two"), zmq::send_flags::none);
  server.ServeUntil("the message", [&] { return server.messages.size() == 1; });
  REQUIRE(server.messages.size() == 1);
  CHECK(server.messages[0].frames == 2);
  CHECK(server.messages[0].body == "onetwo");
}

TEST_CASE(
    "heartbeats: the client's PINGs are answered, and the client answers the "
    "server's") {
  Keys server_keys;
  Server server(server_keys.Identity());
  Dealer client(server.endpoint, server_keys.pub);
  // A client that pings every 100 ms and drops the connection when 300 ms
  // pass without an answer.
  client.s.set(zmq::sockopt::heartbeat_ivl, 100);
  client.s.set(zmq::sockopt::heartbeat_timeout, 300);
  client.s.send(zmq::str_buffer("hi"), zmq::send_flags::none);
  // 1.5 s, on purpose: the client's pings go and come back all along.
  server.Serve(1500);
  REQUIRE(server.zmtp->ready());
  REQUIRE(server.zmtp->heartbeats());
  CHECK_FALSE(server.failed);
  CHECK_FALSE(Has(client.Events(), ZMQ_EVENT_DISCONNECTED));
  // The server's PING: libzmq answers with a PONG by itself.
  std::string ping;
  server.zmtp->Ping(50, &ping);
  server.Write(ping);
  server.last_fed.clear();
  server.ServeUntil("the client's PONG",
                    [&] { return !server.last_fed.empty(); });
  CHECK_FALSE(server.last_fed.empty());
  CHECK_FALSE(server.failed);
}

TEST_CASE(
    "a client with another server key fails the handshake and sends nothing "
    "through") {
  Keys server_keys, other;
  Server server(server_keys.Identity());
  Dealer client(server.endpoint, other.pub);
  client.s.send(zmq::str_buffer("secret"), zmq::send_flags::dontwait);
  server.ServeUntil("the handshake to fail", [&] { return server.failed; });
  CHECK(server.failed);
  CHECK(server.messages.empty());
  CHECK(server.zmtp->error().find("HELLO does not open") != std::string::npos);
}

TEST_CASE(
    "a plain client is refused by a CURVE server, and a CURVE client by a "
    "plain one") {
  // libzmq drops the connection itself once it reads the server's
  // greeting, or frontd refuses the client's: either way no handshake.
  Keys server_keys;
  {
    Server server(server_keys.Identity());
    Dealer client(server.endpoint, nullptr);
    client.s.send(zmq::str_buffer("plain"), zmq::send_flags::dontwait);
    server.ServeUntil("the handshake to fail or the client to hang up",
                      [&] { return server.failed || server.closed; });
    CHECK((server.failed || server.closed));
    CHECK_FALSE(server.zmtp->ready());
    CHECK(server.messages.empty());
  }
  {
    Server server(CurveIdentity{});
    Dealer client(server.endpoint, server_keys.pub);
    client.s.send(zmq::str_buffer("curve"), zmq::send_flags::dontwait);
    server.ServeUntil("the handshake to fail or the client to hang up",
                      [&] { return server.failed || server.closed; });
    CHECK((server.failed || server.closed));
    CHECK_FALSE(server.zmtp->ready());
    CHECK(server.messages.empty());
  }
  // A client whose greeting names another mechanism is refused by frontd.
  ZmtpServer::Options curve;
  curve.identity = server_keys.Identity();
  ZmtpServer z(curve);
  std::string greeting, out;
  ZmtpServer(ZmtpServer::Options()).Start(&greeting);  // a NULL greeting
  std::vector<ZmtpMessage> messages;
  CHECK_FALSE(z.Feed(greeting, &out, &messages));
  CHECK(z.error().find("mechanism") != std::string::npos);
}

TEST_CASE(
    "a refused handshake reaches the client as a refusal with its status") {
  Keys server_keys;
  Server server(server_keys.Identity());
  server.refusal = "300";
  Dealer client(server.endpoint, server_keys.pub);
  server.ServeUntil("the refusal to end the handshake",
                    [&] { return server.failed; });
  CHECK(server.failed);
  WaitUntil(
      "the client to see its handshake refused with status 300",
      [&] {
        for (const auto& [id, value] : client.Events()) {
          if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && value == 300)
            return true;
        }
        return false;
      },
      10);
}

TEST_CASE("a replayed MESSAGE is refused: nonces must grow") {
  Keys server_keys;
  Server server(server_keys.Identity());
  Dealer client(server.endpoint, server_keys.pub);
  client.s.send(zmq::str_buffer("once"), zmq::send_flags::none);
  server.ServeUntil("the message", [&] { return server.messages.size() == 1; });
  REQUIRE(server.messages.size() == 1);
  // The newest bytes read were that message's MESSAGE command.
  std::string out;
  CHECK_FALSE(server.zmtp->Feed(server.last_fed, &out, &server.messages));
  CHECK(server.zmtp->error().find("nonce") != std::string::npos);
  CHECK(server.messages.size() == 1);
}

TEST_CASE(
    "what is not ZMTP 3 is refused at its first bytes, and sizes before the "
    "bytes come") {
  ZmtpServer::Options options;
  std::string out;
  std::vector<ZmtpMessage> messages;
  {
    ZmtpServer z(options);
    z.Start(&out);
    CHECK(out.size() == 64);
    CHECK_FALSE(z.Feed("GET / HTTP/1.0\r\n", &out, &messages));
  }
  {
    // A ZMTP 2 peer.
    ZmtpServer z(options);
    std::string g("\xff\0\0\0\0\0\0\0\x01\x7f\x01", 11);
    CHECK_FALSE(z.Feed(g, &out, &messages));
  }
  // A NULL greeting and READY, then a frame claiming 2^40 bytes: refused
  // at its header, nothing buffered.
  std::string greeting;
  ZmtpServer z(options);
  z.Start(&greeting);
  std::string hello =
      greeting;  // a client's greeting is the same but for as-server
  std::string ready(
      "\x05READY\x0bSocket-Type\0\0\0\x06"
      "DEALER",
      6 + 12 + 4 + 6);
  std::string frame("\x04", 1);
  frame.push_back(static_cast<char>(ready.size()));
  frame += ready;
  out.clear();
  REQUIRE(z.Feed(hello + frame, &out, &messages));
  REQUIRE(z.ready());
  std::string huge("\x02", 1);
  PutBigEndian(&huge, uint64_t{1} << 40);
  CHECK_FALSE(z.Feed(huge, &out, &messages));
  CHECK(z.error().find("bytes") != std::string::npos);
  // A message over max_message across frames: refused as well.
  ZmtpServer y(options);
  y.Start(&greeting);
  REQUIRE(y.Feed(hello + frame, &out, &messages));
  std::string part(1, '\x03');  // more, long
  PutBigEndian(&part, 9000);
  part += std::string(9000, 'a');
  CHECK(y.Feed(part, &out, &messages));
  CHECK_FALSE(y.Feed(part, &out, &messages));
  // A client that is not a DEALER is refused.
  ZmtpServer x(options);
  std::string pub(
      "\x05READY\x0bSocket-Type\0\0\0\x03"
      "PUB",
      6 + 12 + 4 + 3);
  std::string pub_frame("\x04", 1);
  pub_frame.push_back(static_cast<char>(pub.size()));
  pub_frame += pub;
  CHECK_FALSE(x.Feed(hello + pub_frame, &out, &messages));
  CHECK(x.error().find("DEALER") != std::string::npos);
}

// LinkWatch: the links of a connecting socket stay up whatever ends them.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <thread>

#include "common/net.h"
#include "tests/support/temp_dir.h"

using namespace natter;

namespace {

using Clock = std::chrono::steady_clock;

struct KeyPair {
  CurveKey public_key, secret;
};

KeyPair NewKeys() {
  char pub[41], sec[41];
  REQUIRE(zmq_curve_keypair(pub, sec) == 0);
  KeyPair k;
  zmq_z85_decode(k.public_key.data(), pub);
  zmq_z85_decode(k.secret.data(), sec);
  return k;
}

// A peer of the watched socket: a CURVE server with a key of its own.
zmq::socket_t Server(zmq::context_t& ctx, const KeyPair& keys, const std::string& address) {
  zmq::socket_t s(ctx, zmq::socket_type::router);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_server, 1);
  s.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(keys.secret.data(), 32));
  s.bind(address);
  return s;
}

// Waits (checking the watch) until server receives something from the
// watched socket, which keeps sending; returns its routing id there.
bool Reaches(LinkWatch& watch, zmq::socket_t& client, zmq::socket_t& server, int seconds,
             std::string* routing_id) {
  auto until = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < until) {
    watch.Check();
    Parts ping;
    ping.push_back(ToMessage("ping"));
    SendParts(client, ping);
    Parts got;
    for (int i = 0; i < 100 && RecvParts(server, &got); ++i) {
      if (routing_id != nullptr) *routing_id = got[0].to_string();
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace

TEST_CASE("a link that ended for a protocol error is connected again, with its own server key") {
  TempDir dir;
  zmq::context_t ctx(1);
  KeyPair a_keys = NewKeys(), b_keys = NewKeys(), mine = NewKeys();
  zmq::socket_t a = Server(ctx, a_keys, "ipc://" + dir.path() + "/a.sock");
  zmq::socket_t b = Server(ctx, b_keys, "ipc://" + dir.path() + "/b.sock");
  CurveIdentity me;
  me.enabled = true;
  me.public_key = mine.public_key;
  me.secret = mine.secret;

  zmq::socket_t client = MakeDaemonSocket(ctx, zmq::socket_type::dealer, 0);
  client.set(zmq::sockopt::immediate, 1);
  LinkWatch watch(ctx);
  watch.Add(client, "test");
  // Two peers with two keys: the socket's options hold b's key last, so
  // a's link comes back only if it is connected with a's own.
  REQUIRE(watch.Connect(client, me, "ipc://" + dir.path() + "/a.sock@" +
                                        CurveKeyHex(a_keys.public_key)).ok());
  REQUIRE(watch.Connect(client, me, "ipc://" + dir.path() + "/b.sock@" +
                                        CurveKeyHex(b_keys.public_key)).ok());
  auto until = Clock::now() + std::chrono::seconds(10);
  while (!watch.AllConnected() && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(watch.AllConnected());
  CHECK(watch.Waiting().empty());
  std::string id;
  REQUIRE(Reaches(watch, client, a, 10, &id));

  // a answers with a frame over the socket's limit: a protocol error, after
  // which ZeroMQ never connects to a again.
  Parts huge;
  huge.push_back(ToMessage(id));
  huge.push_back(ToMessage(std::string(kMaxDaemonFrameBytes + 1, 'x')));
  REQUIRE(SendParts(a, huge));
  // Whatever reached a before the drop does not count.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Parts stale;
  while (RecvParts(a, &stale)) {
  }
  CHECK(Reaches(watch, client, a, 15, nullptr));
  CHECK(watch.relinks() >= 1);
  // b served all along.
  CHECK(Reaches(watch, client, b, 5, nullptr));
}

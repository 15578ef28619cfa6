// LinkWatch: the links of a connecting socket stay up whatever ends them.
// Batches: the frames of a turn go a message a route.
#include "common/net.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <string>

#include "common/endian.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

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
zmq::socket_t Server(zmq::context_t& ctx, const KeyPair& keys,
                     const std::string& address) {
  zmq::socket_t s(ctx, zmq::socket_type::router);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_server, 1);
  s.set(zmq::sockopt::curve_secretkey,
        zmq::const_buffer(keys.secret.data(), 32));
  s.bind(address);
  return s;
}

// Waits (checking the watch) until server, named `name`, receives
// something from the watched socket, which keeps sending; sets its routing
// id there.
void AwaitReaches(LinkWatch& watch, zmq::socket_t& client,
                  zmq::socket_t& server, const std::string& name, int seconds,
                  std::string* routing_id = nullptr) {
  WaitUntil(
      "a ping to reach " + name,
      [&] {
        Parts got;
        if (!RecvParts(server, &got)) return false;
        if (routing_id != nullptr) *routing_id = got[0].to_string();
        return true;
      },
      seconds,
      [&] {
        watch.Check();
        Parts ping;
        ping.push_back(ToMessage("ping"));
        SendParts(client, ping);
        zmq::pollitem_t item = {server.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(20));
      });
}

}  // namespace

TEST_CASE(
    "a link that ended for a protocol error is connected again, with its own "
    "server key") {
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
  REQUIRE(watch
              .Connect(client, me,
                       "ipc://" + dir.path() + "/a.sock@" +
                           CurveKeyHex(a_keys.public_key))
              .ok());
  REQUIRE(watch
              .Connect(client, me,
                       "ipc://" + dir.path() + "/b.sock@" +
                           CurveKeyHex(b_keys.public_key))
              .ok());
  WaitUntil(
      "both links to be up", [&] { return watch.AllConnected(); }, 10, {},
      [&] { return "waiting: " + watch.Waiting(); });
  CHECK(watch.Waiting().empty());
  std::string id;
  AwaitReaches(watch, client, a, "a", 10, &id);

  // a answers with a frame over the socket's limit: a protocol error, after
  // which ZeroMQ never connects to a again.
  Parts huge;
  huge.push_back(ToMessage(id));
  huge.push_back(ToMessage(std::string(kMaxDaemonFrameBytes + 1, 'x')));
  REQUIRE(SendParts(a, huge));
  // The watch sees the link end and connects it again; whatever reached a
  // before that does not count.
  WaitUntil(
      "the watch to connect the ended link again",
      [&] {
        watch.Check();
        return watch.relinks() >= 1;
      },
      15);
  Parts stale;
  while (RecvParts(a, &stale)) {
  }
  AwaitReaches(watch, client, a, "a again", 15);
  // b served all along.
  AwaitReaches(watch, client, b, "b", 5);
}

TEST_CASE("Batches gathers a turn's frames into one batch a route, in order") {
  std::vector<std::pair<Batches::Route, std::string>> sent;
  Batches batches([&](const Batches::Route& route, const std::string& batch) {
    sent.emplace_back(route, batch);
  });
  batches.Flush();
  CHECK(sent.empty());  // nothing waiting: nothing sent
  batches.Add({"frontd-1"}, 7, "one");
  batches.Add({"frontd-2"}, 8, "two");
  batches.Add({"frontd-1"}, 9, "three");
  CHECK(sent.empty());  // nothing goes before the turn ends
  batches.Flush();
  REQUIRE(sent.size() == 2);
  CHECK(batches.empty());
  std::map<Batches::Route, std::vector<std::string>> got;
  for (const auto& [route, batch] : sent) {
    CHECK(ForEachBatchEntry(
        batch, [&, &r = route](std::string_view key, std::string_view frame) {
          got[r].push_back(std::to_string(GetBigEndian(key.data())) + ":" +
                           std::string(frame));
        }));
  }
  CHECK(got[{"frontd-1"}] == std::vector<std::string>{"7:one", "9:three"});
  CHECK(got[{"frontd-2"}] == std::vector<std::string>{"8:two"});
  sent.clear();
  batches.Flush();
  CHECK(sent.empty());
}

TEST_CASE(
    "Batches sends a batch at once when the next frame would pass "
    "kBatchBytes") {
  std::vector<std::string> sent;
  Batches batches([&](const Batches::Route&, const std::string& batch) {
    sent.push_back(batch);
  });
  const std::string frame(kBatchBytes / 3, 'x');
  for (int i = 0; i < 4; ++i) batches.Add({"r"}, i, frame);
  REQUIRE(sent.size() == 1);  // the fourth did not fit beside three
  CHECK(sent[0].size() <= kBatchBytes);
  batches.Flush();
  REQUIRE(sent.size() == 2);
  size_t entries = 0;
  for (const std::string& b : sent) {
    ForEachBatchEntry(b, [&](std::string_view, std::string_view f) {
      CHECK(f == frame);
      ++entries;
    });
  }
  CHECK(entries == 4);
}

TEST_CASE("SplitBatch makes each entry a request of its own with the route") {
  std::string batch;
  AppendBatchEntry(&batch, 1, "first");
  AppendBatchEntry(&batch, 2, "second");
  Parts parts;
  parts.push_back(ToMessage("routed"));
  parts.push_back(ToMessage("frontd"));
  parts.push_back(zmq::message_t());
  parts.push_back(ToMessage(batch));
  std::vector<Parts> out;
  REQUIRE(SplitBatch(parts, 2, &out));
  REQUIRE(out.size() == 2);
  CHECK(out[1].size() == 4);
  CHECK(out[1][0].to_string() == "routed");
  CHECK(out[1][1].to_string() == "frontd");
  CHECK(GetBigEndian(static_cast<const char*>(out[1][2].data())) == 2);
  CHECK(out[1][3].to_string() == "second");

  // Not a batch: a lone request ([routed, frontd, envelope, frame]).
  out.clear();
  parts[2] = ToMessage("envelope");
  CHECK_FALSE(SplitBatch(parts, 2, &out));
  CHECK(out.empty());
  // A batch cut short: the entries before the fault, and false.
  parts[2] = zmq::message_t();
  parts[3] = ToMessage(batch.substr(0, batch.size() - 3));
  CHECK_FALSE(SplitBatch(parts, 2, &out));
  CHECK(out.size() == 1);
}

// The message path through real daemons: every message processed, stored
// for both users, delivered exactly once to every device, in order, with
// each mailbox's seq free of gaps — with one shard and with three.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "client/client.h"
#include "common/shard.h"
#include "common/token.h"
#include "tests/integration/devices.h"
#include "tests/integration/test_cell.h"

using namespace natter;

namespace {

// Events reach the device in seq order and, per sender, in id order.
void CheckOrder(const Device& d) {
  uint64_t last_seq = 0;
  std::map<uint64_t, uint64_t> last_id_from;
  std::set<uint64_t> ids;
  for (const auto& e : d.Messages()) {
    REQUIRE(e.seq.value > last_seq);
    last_seq = e.seq.value;
    REQUIRE(ids.insert(e.id.value).second);  // never twice
    REQUIRE(e.id.value > last_id_from[e.from.value]);
    last_id_from[e.from.value] = e.id.value;
  }
}

void Exchange(unsigned shards) {
  TestCell cell(shards, kNoUserRate);  // 1000 messages a user, at full speed
  auto [alice, bob] = TwoUsers(shards);
  TwoByTwo devices = OpenTwoByTwo(cell, alice, bob, "a-phone", "a-laptop",
                                  "b-phone", "b-laptop");
  Device *a1 = devices.a1.get(), *a2 = devices.a2.get();
  Device *b1 = devices.b1.get(), *b2 = devices.b2.get();
  std::vector<Device*> all = devices.all();

  const size_t kMessages = 1000, kWindow = 64;
  size_t sent_a = 0, sent_b = 0;
  std::map<std::string, size_t> cmid_order_a, cmid_order_b;
  auto done = [&] {
    return a1->Count(Incoming::Kind::kProcessed) == kMessages &&
           b1->Count(Incoming::Kind::kProcessed) == kMessages &&
           a1->Messages().size() >= kMessages &&
           b1->Messages().size() >= kMessages &&
           a2->Messages().size() >= 2 * kMessages &&
           b2->Messages().size() >= 2 * kMessages;
  };
  WaitUntil(
      "every message processed and on every device", done, 120,
      [&] {
        while (sent_a < kMessages && a1->client->SendsInFlight() < kWindow) {
          cmid_order_a[a1->client->Send(
              bob, "a to b " + std::to_string(sent_a))] = sent_a;
          ++sent_a;
        }
        while (sent_b < kMessages && b1->client->SendsInFlight() < kWindow) {
          cmid_order_b[b1->client->Send(
              alice, "b to a " + std::to_string(sent_b))] = sent_b;
          ++sent_b;
        }
        for (Device* d : all) d->Poll(1);
      },
      [&] { return ErrorsOf(all); });
  // A moment more, so that a duplicate, if any, would arrive and be seen.
  PollFor(all, 1);

  for (Device* d : all) {
    CHECK(d->Count(Incoming::Kind::kError) == 0);
  }
  // Every message processed, once, with distinct ids.
  for (Device* d : {a1, b1}) {
    std::set<uint64_t> ids;
    std::set<std::string> cmids;
    for (const auto& in : d->got) {
      if (in.kind != Incoming::Kind::kProcessed) continue;
      REQUIRE(ids.insert(in.processed.id.value).second);
      REQUIRE(cmids.insert(in.processed.client_msg_id).second);
    }
    CHECK(ids.size() == kMessages);
  }
  // Each device got exactly what it should: the peer's messages, and on the
  // second device also its user's own, sent from the first.
  CHECK(a1->Messages().size() == kMessages);
  CHECK(b1->Messages().size() == kMessages);
  CHECK(a2->Messages().size() == 2 * kMessages);
  CHECK(b2->Messages().size() == 2 * kMessages);
  for (Device* d : all) CheckOrder(*d);
  for (Device* d : all) CheckSeqsComplete(*d, 2 * kMessages);
  // Texts arrive in the order they were sent.
  size_t next_a = 0, next_b = 0;
  for (const auto& e : b2->Messages()) {
    if (e.from == alice) {
      REQUIRE(e.text == "a to b " + std::to_string(next_a++));
    } else {
      REQUIRE(e.text == "b to a " + std::to_string(next_b++));
    }
  }
  for (Device* d : all) CHECK(d->client->Flush().ok());
}

}  // namespace

TEST_CASE(
    "1000 messages each way between two users with two devices each, one "
    "shard") {
  Exchange(1);
}

TEST_CASE(
    "1000 messages each way between two users with two devices each, three "
    "shards") {
  Exchange(3);
}

TEST_CASE(
    "a retried client_msg_id gets the first id and makes no second message") {
  TestCell cell(3);
  auto [alice, bob] = TwoUsers(3);
  auto a = Open(cell, alice, "phone");
  auto b = Open(cell, bob, "phone");
  PollUntil(
      {a.get(), b.get()}, "bob's phone to catch up",
      [&] { return b->client->CaughtUp(); }, 20);
  std::string cmid = a->client->Send(bob, "once");
  PollUntil(
      {a.get(), b.get()}, "the first send to be processed",
      [&] { return a->Count(Incoming::Kind::kProcessed) == 1; }, 20);
  a->client->Send(bob, "once", cmid);
  a->client->Send(bob, "once, a third time", cmid);
  PollUntil(
      {a.get(), b.get()}, "both retries to be answered",
      [&] { return a->Count(Incoming::Kind::kProcessed) == 3; }, 20);
  // A moment more: a second message, had a retry made one, would reach bob.
  PollFor({a.get(), b.get()}, 1);
  REQUIRE(a->Count(Incoming::Kind::kProcessed) == 3);
  std::set<uint64_t> ids;
  for (const auto& in : a->got) {
    if (in.kind == Incoming::Kind::kProcessed)
      ids.insert(in.processed.id.value);
  }
  CHECK(ids.size() == 1);
  REQUIRE(b->Messages().size() == 1);
  CHECK(b->Messages()[0].text == "once");
  CHECK(b->Messages()[0].id.value == *ids.begin());
}

TEST_CASE(
    "a device that comes back gets what it missed, marked, then live events") {
  TestCell cell(3);
  auto [alice, bob] = TwoUsers(3);
  auto a = Open(cell, alice, "phone");
  {
    auto b = Open(cell, bob, "phone");  // first connection: starts at the head
    PollUntil(
        {b.get()}, "bob's phone to catch up",
        [&] { return b->client->CaughtUp(); }, 20);
    REQUIRE(b->client->Flush().ok());
  }
  for (int i = 0; i < 5; ++i)
    a->client->Send(bob, "while away " + std::to_string(i));
  PollUntil(
      {a.get()}, "the five sends to be processed",
      [&] { return a->Count(Incoming::Kind::kProcessed) == 5; }, 20);
  WaitForMailbox(cell, bob, 5);
  auto b = Open(cell, bob, "phone");
  PollUntil(
      {a.get(), b.get()},
      "bob's phone, back, to get the five messages it missed",
      [&] { return b->Messages().size() == 5; }, 20);
  REQUIRE(b->Messages().size() == 5);
  for (const auto& in : b->got) {
    if (in.kind == Incoming::Kind::kEvent && in.event.message() != nullptr)
      CHECK(in.missed);
  }
  a->client->Send(bob, "live");
  PollUntil(
      {a.get(), b.get()}, "bob's phone to get the live message",
      [&] { return b->Messages().size() == 6; }, 20);
  REQUIRE(b->Messages().size() == 6);
  CHECK(b->Messages().back().text == "live");
  for (const auto& in : b->got) {
    const Message* m =
        in.kind == Incoming::Kind::kEvent ? in.event.message() : nullptr;
    if (m != nullptr && m->text == "live") CHECK_FALSE(in.missed);
  }
  // A device that never connected before starts at the head: no history.
  auto fresh = Open(cell, bob, "tablet");
  PollFor({fresh.get()}, 1);
  CHECK(fresh->Messages().empty());
}

TEST_CASE(
    "a device's mailbox begins at its first hello, even if it leaves without "
    "reading") {
  TestCell cell(2);
  auto [alice, bob] = TwoUsers(2);
  // bob's laptop says hello as a one-shot command does (it reads nothing,
  // acknowledges nothing) and goes.
  {
    ClientOptions o = cell.Options(bob.value, "laptop");
    o.receive = false;
    Client once(o);
    REQUIRE(once.Connect().ok());
  }
  auto a = Open(cell, alice, "phone");
  for (int i = 0; i < 3; ++i)
    a->client->Send(bob, "after hello " + std::to_string(i));
  PollUntil(
      {a.get()}, "alice's three sends to be processed",
      [&] { return a->Count(Incoming::Kind::kProcessed) == 3; }, 20);
  WaitForMailbox(cell, bob, 3);
  // When the laptop comes back, what arrived since its hello is what it
  // missed.
  auto laptop = Open(cell, bob, "laptop");
  PollUntil(
      {laptop.get()}, "bob's laptop to catch up on the three",
      [&] { return laptop->Messages().size() == 3; }, 20);
  REQUIRE(laptop->Messages().size() == 3);
  for (const auto& in : laptop->got) {
    if (in.kind == Incoming::Kind::kEvent) CHECK(in.missed);
  }
}

TEST_CASE("the sender is the token's user, whatever the frame says") {
  TestCell cell(1);
  ClientOptions o = cell.Options(7, "raw");
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  char pub[41], sec[41];
  zmq_curve_keypair(pub, sec);
  s.set(zmq::sockopt::curve_serverkey, o.server_key);
  s.set(zmq::sockopt::curve_publickey, pub);
  s.set(zmq::sockopt::curve_secretkey, sec);
  s.set(zmq::sockopt::rcvtimeo, 10000);
  s.connect(o.server);
  Header h;
  h.type = static_cast<uint8_t>(MsgType::kHello);
  h.corr = 1;
  Hello hello{o.token, "raw"};
  s.send(zmq::buffer(EncodeFrame(h, hello)));
  zmq::message_t reply;
  REQUIRE(s.recv(reply));
  auto bob = Open(cell, UserId(8), "phone");
  PollUntil(
      {bob.get()}, "bob's phone to catch up",
      [&] { return bob->client->CaughtUp(); }, 20);
  h.type = static_cast<uint8_t>(MsgType::kSend);
  h.corr = 2;
  h.user = UserId(9);  // claims to be user 9
  Send send{"spoof", UserId(8), "who am I"};
  s.send(zmq::buffer(EncodeFrame(h, send)));
  REQUIRE(s.recv(reply));
  PollUntil(
      {bob.get()}, "bob to get the message",
      [&] { return !bob->Messages().empty(); }, 20);
  REQUIRE(bob->Messages().size() == 1);
  CHECK(bob->Messages()[0].from == UserId(7));
}

TEST_CASE("expired, forged and malformed tokens are refused at hello") {
  TestCell cell(1);
  ClientOptions o = cell.Options(1, "phone");
  o.timeout_ms = 5000;
  SECTION("expired") {
    o.token = cell.Token(1, -3600);
    CHECK(Client(o).Connect().code() == ErrorCode::kTokenExpired);
  }
  SECTION("signed by a key the cell does not know") {
    TokenClaims c;
    c.user = UserId(1);
    c.issued = 0;
    c.expires = UINT32_MAX;
    o.token = SignToken(c, GenerateSigningKey());
    CHECK(Client(o).Connect().code() == ErrorCode::kTokenUnknownKey);
  }
  SECTION("garbage") {
    o.token = "nt1.garbage";
    CHECK(Client(o).Connect().code() == ErrorCode::kTokenMalformed);
  }
  SECTION("for another device") {
    o.token = cell.Token(1, 3600, "tablet");
    CHECK(Client(o).Connect().code() == ErrorCode::kForbidden);
  }
}

TEST_CASE("text that is not acceptable gets bad-data and nothing is stored") {
  TestCell cell(1);
  auto a = Open(cell, UserId(1), "phone");
  std::string bad_utf8 = a->client->Send(UserId(2), "\xff\xfe");
  std::string too_long = a->client->Send(UserId(2), std::string(5000, 'x'));
  PollUntil(
      {a.get()}, "both sends to be refused",
      [&] { return a->Count(Incoming::Kind::kError) == 2; }, 20);
  REQUIRE(a->Count(Incoming::Kind::kError) == 2);
  for (const auto& in : a->got) {
    CHECK(in.error.code() == ErrorCode::kBadData);
    CHECK((in.client_msg_id == bad_utf8 || in.client_msg_id == too_long));
  }
  // Nothing stored: no conversation, no message in it.
  Incoming chats = AwaitAnswer(a.get(), a->client->GetChats());
  REQUIRE(chats.kind == Incoming::Kind::kChats);
  CHECK(chats.chats.chats.empty());
  History q;
  q.peer = UserId(2);
  Incoming history = AwaitAnswer(a.get(), a->client->GetHistory(q));
  REQUIRE(history.kind == Incoming::Kind::kHistory);
  CHECK(history.history.messages.empty());
}

TEST_CASE("a server that is not there gives unavailable after the timeout") {
  TempDir dir;
  ClientOptions o;
  o.server = "ipc://" + dir.path() + "/nobody.sock";
  o.token = "nt1.x.y";
  o.timeout_ms = 1000;
  auto start = std::chrono::steady_clock::now();
  CHECK(Client(o).Connect().code() == ErrorCode::kUnavailable);
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >=
        std::chrono::milliseconds(o.timeout_ms));  // after it, not before
  CHECK(took < std::chrono::seconds(5));
}

TEST_CASE(
    "a hand-off waits for a shard that is down and arrives once it is back") {
  TestCell cell(3);
  auto [alice, bob] = TwoUsers(3);
  auto a = Open(cell, alice, "phone");
  auto b = Open(cell, bob, "phone");
  PollUntil(
      {a.get(), b.get()}, "bob's phone to catch up",
      [&] { return b->client->CaughtUp(); }, 20);
  // Bob's home shard dies; natterctl up restarts it after a short backoff.
  std::string bob_shard = "stored-" + std::to_string(HomeShard(bob, 3));
  pid_t pid = cell.DaemonPid(bob_shard);
  REQUIRE(pid > 0);
  REQUIRE(::kill(pid, SIGKILL) == 0);
  for (int i = 0; i < 50; ++i) a->client->Send(bob, "m" + std::to_string(i));
  PollUntil(
      {a.get(), b.get()},
      "the 50 sends processed, and on bob's phone once his shard is back",
      [&] {
        return a->Count(Incoming::Kind::kProcessed) == 50 &&
               b->Messages().size() == 50;
      },
      30);
  CHECK(a->Count(Incoming::Kind::kProcessed) == 50);
  // A moment more, so that a duplicate, if any, would arrive and be seen.
  PollFor({a.get(), b.get()}, 2);
  REQUIRE(b->Messages().size() == 50);
  std::set<uint64_t> ids;
  for (const auto& e : b->Messages()) ids.insert(e.id.value);
  CHECK(ids.size() == 50);
  CHECK(cell.DaemonPid(bob_shard) != pid);
}

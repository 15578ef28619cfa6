// CurveZMQ between daemons with the cell's allow-list and its roles (each
// socket admits only the daemons that talk to it; the operator's key only
// the control sockets), key rotation on SIGHUP, and cross-user access
// refused.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <regex>
#include <sstream>

#include "common/curve.h"
#include "common/text.h"
#include "common/token.h"
#include "tests/integration/devices.h"
#include "tests/integration/raw_client.h"
#include "tests/integration/test_cell.h"

using namespace natter;

namespace {

std::string ReadLine(const std::string& path) {
  std::string line;
  ReadFirstLine(path, &line);
  return line;
}

// A CURVE key pair, Z85.
struct KeyPair {
  std::string secret;
  std::string pub;
};

// One of the cell's keys: keys/NAME.key and keys/NAME.pub.
KeyPair CellKey(const TestCell& cell, const std::string& name) {
  return {ReadLine(cell.dir() + "/keys/" + name + ".key"),
          ReadLine(cell.dir() + "/keys/" + name + ".pub")};
}

KeyPair NewKey() {
  char pub[41], sec[41];
  zmq_curve_keypair(pub, sec);
  return {sec, pub};
}

// Connects s to the cell's run/SOCKET.sock as a client of the daemon whose
// key is keys/SERVER.pub, speaking CURVE with key (none: plain text).
void Dial(zmq::socket_t& s, const TestCell& cell, const std::string& socket,
          const std::string& server, const KeyPair* key) {
  s.set(zmq::sockopt::linger, 0);
  if (key != nullptr) {
    CurveKey server_key;
    REQUIRE(ReadCurveKey(cell.dir() + "/keys/" + server + ".pub", &server_key)
                .ok());
    s.set(zmq::sockopt::curve_serverkey,
          zmq::const_buffer(server_key.data(), server_key.size()));
    s.set(zmq::sockopt::curve_publickey, key->pub);
    s.set(zmq::sockopt::curve_secretkey, key->secret);
  }
  s.connect("ipc://" + cell.dir() + "/run/" + socket + ".sock");
}

// Asks for user 1's mailbox straight on a daemon's socket (routed's, or a
// shard's), as a daemon would, with key (none: plain text).  True if any
// answer came within wait_ms.
bool Answers(const TestCell& cell, const std::string& socket,
             const std::string& server, const KeyPair* key, int wait_ms) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::rcvtimeo, wait_ms);
  Dial(s, cell, socket, server, key);
  Header h;
  h.type = static_cast<uint8_t>(MsgType::kSync);
  h.corr = 1;
  h.user = UserId(1);
  h.device = "probe";
  Sync sync;
  sync.from_cursor = false;
  s.send(zmq::buffer(EncodeFrame(h, sync)), zmq::send_flags::dontwait);
  zmq::message_t reply;
  return s.recv(reply).has_value();
}

// A refusal is waited out for a second; a welcome for up to five.
constexpr int kRefusedWait = 1000;
constexpr int kWelcomeWait = 5000;

bool RoutedAnswers(const TestCell& cell, const KeyPair* key,
                   int wait_ms = kRefusedWait) {
  return Answers(cell, "routed", "routed", key, wait_ms);
}

bool ShardAnswers(const TestCell& cell, const KeyPair* key,
                  int wait_ms = kRefusedWait) {
  return Answers(cell, "stored-0", "stored", key, wait_ms);
}

// Whether an event pushed into notifyd as a shard does (with in_key)
// reaches a subscriber of notifyd's out socket (with out_key) within
// wait_ms.
bool EventPasses(const TestCell& cell, const KeyPair& in_key,
                 const KeyPair& out_key, int wait_ms = 2 * kRefusedWait) {
  zmq::context_t ctx(1);
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  zmq::socket_t push(ctx, zmq::socket_type::push);
  std::string topic = TopicOf(UserId(4242));
  sub.set(zmq::sockopt::subscribe, topic);
  Dial(sub, cell, "notifyd-out", "notifyd", &out_key);
  Dial(push, cell, "notifyd-in", "notifyd", &in_key);
  // Pushed again and again: a subscription takes a moment to reach
  // notifyd, and what is published before is not kept.
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    push.send(zmq::buffer(topic),
              zmq::send_flags::sndmore | zmq::send_flags::dontwait) &&
        push.send(zmq::str_buffer("probe"), zmq::send_flags::dontwait);
    zmq::pollitem_t item = {sub.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) > 0) return true;
  }
  return false;
}

// Waits for the daemon's log to have a line holding every one of parts.
void AwaitLogged(const TestCell& cell, const std::string& daemon,
                 const std::vector<std::string>& parts) {
  std::string what = daemon + ".log to have a line with";
  for (const std::string& p : parts) what += " " + p;
  WaitUntil(
      what,
      [&] {
        std::istringstream log(
            ReadFile(cell.dir() + "/log/" + daemon + ".log"));
        for (std::string line; std::getline(log, line);) {
          bool all = true;
          for (const std::string& p : parts)
            all = all && line.find(p) != std::string::npos;
          if (all) return true;
        }
        return false;
      },
      20, Pause(100));
}

// The key=value pairs of a log line, after "TIME program[pid]: ": a value
// is a word, or in double quotes with \" and \\ escaped.  A word without
// '=' comes back as a key with an empty value.
std::vector<std::pair<std::string, std::string>> KeyValues(
    const std::string& line) {
  std::vector<std::pair<std::string, std::string>> pairs;
  size_t i = line.find(": ");
  if (i == std::string::npos) return pairs;
  for (i += 2; i < line.size();) {
    size_t end = line.find_first_of("= ", i);
    if (end == std::string::npos) end = line.size();
    std::string key = line.substr(i, end - i), value;
    i = end;
    if (i < line.size() && line[i] == '=') {
      ++i;
      if (i < line.size() && line[i] == '"') {
        for (++i; i < line.size() && line[i] != '"'; ++i) {
          if (line[i] == '\\' && i + 1 < line.size()) ++i;
          value += line[i];
        }
        ++i;  // the closing quote
      } else {
        end = line.find(' ', i);
        if (end == std::string::npos) end = line.size();
        value = line.substr(i, end - i);
        i = end;
      }
    }
    pairs.emplace_back(key, value);
    while (i < line.size() && line[i] == ' ') ++i;
  }
  return pairs;
}

}  // namespace

TEST_CASE(
    "daemon sockets take only the cell's keys: not plain text, not another "
    "key") {
  TestCell cell(1);
  // A key of the cell whose role talks to routed (frontd's) is let in.
  KeyPair frontd = CellKey(cell, "frontd");
  CHECK(RoutedAnswers(cell, &frontd, kWelcomeWait));
  // Plain text gets nothing.
  CHECK_FALSE(RoutedAnswers(cell, nullptr));
  // Nor does a key the cell does not list.
  KeyPair other = NewKey();
  CHECK_FALSE(RoutedAnswers(cell, &other));
  // Listed under a name that names no role, it is a bad reload (SIGHUP):
  // logged, and the keys read before stay.
  {
    std::ofstream(cell.dir() + "/keys/peers/newhost.pub") << other.pub << "\n";
  }
  REQUIRE(RunCommand(BinPath("natterctl") + " reload --dir " + cell.dir()) ==
          0);
  AwaitLogged(cell, "routed", {"event=peer-keys-reload-failed", "newhost.pub"});
  CHECK_FALSE(RoutedAnswers(cell, &other));
  CHECK(RoutedAnswers(cell, &frontd, kWelcomeWait));
  // Named for its role and reloaded, it is let in where that role talks,
  // and nowhere else.
  REQUIRE(std::rename(
              (cell.dir() + "/keys/peers/newhost.pub").c_str(),
              (cell.dir() + "/keys/peers/frontd-newhost.pub").c_str()) == 0);
  REQUIRE(RunCommand(BinPath("natterctl") + " reload --dir " + cell.dir()) ==
          0);
  // (A refused key is waited out for a second each time.)
  WaitUntil(
      "routed to take the key named frontd-newhost",
      [&] { return RoutedAnswers(cell, &other); }, 30);
  CHECK_FALSE(ShardAnswers(cell, &other));
}

TEST_CASE(
    "each daemon socket admits only the roles that talk to it; the admin key "
    "reaches control sockets only") {
  TestCell cell(1);
  KeyPair frontd = CellKey(cell, "frontd");
  KeyPair routed = CellKey(cell, "routed");
  KeyPair stored = CellKey(cell, "stored");
  KeyPair notifyd = CellKey(cell, "notifyd");
  KeyPair admin = CellKey(cell, "admin");

  // routed: frontds and shards.
  CHECK(RoutedAnswers(cell, &frontd, kWelcomeWait));
  CHECK(RoutedAnswers(cell, &stored, kWelcomeWait));
  CHECK_FALSE(RoutedAnswers(cell, &admin));
  CHECK_FALSE(RoutedAnswers(cell, &notifyd));
  // A shard: routed.
  CHECK(ShardAnswers(cell, &routed, kWelcomeWait));
  CHECK_FALSE(ShardAnswers(cell, &admin));
  CHECK_FALSE(ShardAnswers(cell, &frontd));
  // notifyd takes events from shards and publishes them to frontds.
  CHECK(EventPasses(cell, stored, frontd, kWelcomeWait));
  CHECK_FALSE(EventPasses(cell, admin, frontd));
  CHECK_FALSE(EventPasses(cell, frontd, frontd));
  CHECK_FALSE(EventPasses(cell, stored, admin));
  CHECK_FALSE(EventPasses(cell, stored, stored));

  // The control sockets: the admin key, as natterctl status uses it ...
  std::string ctl = BinPath("natterctl") + " ";
  CHECK(RunCommand(ctl + "status --dir " + cell.dir() + " >/dev/null 2>&1") ==
        0);
  // ... and no daemon's key.
  CurveKey routed_pub;
  REQUIRE(ReadCurveKey(cell.dir() + "/keys/routed.pub", &routed_pub).ok());
  std::string control =
      "ipc://" + cell.dir() + "/run/routed.control@" + CurveKeyHex(routed_pub);
  CHECK(RunCommand(ctl + "status --dir " + cell.dir() + " --key " + cell.dir() +
                   "/keys/admin.key " + control + " >/dev/null 2>&1") == 0);
  CHECK(RunCommand(ctl + "status --dir " + cell.dir() + " --key " + cell.dir() +
                   "/keys/frontd.key " + control + " >/dev/null 2>&1") == 69);

  // Each refusal is logged with the key's role.
  AwaitLogged(
      cell, "routed",
      {"event=peer-refused", "domain=cell:frontd,stored", "role=admin"});
  AwaitLogged(cell, "stored-0",
              {"event=peer-refused", "domain=cell:routed", "role=frontd"});
  AwaitLogged(cell, "notifyd",
              {"event=peer-refused", "domain=cell:frontd", "role=stored"});
  AwaitLogged(cell, "routed",
              {"event=peer-refused", "domain=cell:admin", "role=frontd"});
}

TEST_CASE(
    "a peer key whose name names no role stops a daemon at start with exit "
    "78") {
  TempDir dir;
  std::string ctl = BinPath("natterctl") + " ";
  REQUIRE(RunCommand(ctl + "init --dir " + dir.path() + " >/dev/null 2>&1") ==
          0);
  {
    std::ofstream(dir.path() + "/keys/peers/newhost.pub")
        << NewKey().pub << "\n";
  }
  std::string routed = "timeout -k 2 10 " + BinPath("natter-routed") + " -c " +
                       dir.path() + "/natter.conf";
  std::string said;
  CHECK(RunCommand(routed + " -n", nullptr, &said) == 78);
  CHECK(RunCommand(routed, nullptr, &said) == 78);
  INFO(said);
  CHECK(said.find("newhost.pub") != std::string::npos);
  CHECK(said.find("no role") != std::string::npos);
  CHECK(std::count(said.begin(), said.end(), '\n') == 1);
}

TEST_CASE(
    "curve-ipc = no: the cell's ipc hops go in plain text, clients keep "
    "CURVE") {
  TestCell cell(2, "[cell]\ncurve-ipc = no");
  // routed's ipc socket answers plain text now, and a CURVE client no more.
  CHECK(RoutedAnswers(cell, nullptr, kWelcomeWait));
  KeyPair frontd = CellKey(cell, "frontd");
  CHECK_FALSE(RoutedAnswers(cell, &frontd));
  // Messages go through every hop (frontd, routed, both shards, notifyd).
  auto [alice, bob] = TwoUsers(2);
  auto a = Open(cell, alice, "a1");
  auto b = Open(cell, bob, "b1");
  PollUntil(
      {a.get(), b.get()}, "both devices to catch up",
      [&] { return a->client->CaughtUp() && b->client->CaughtUp(); }, 20);
  for (int i = 0; i < 100; ++i)
    a->client->Send(bob, "plain " + std::to_string(i));
  PollUntil(
      {a.get(), b.get()}, "bob to get the 100 messages",
      [&] { return b->Messages().size() == 100; }, 20);
  CHECK(b->Messages().size() == 100);
  // The client's connection to frontd is still CURVE: a plain client gets
  // no answer.
  ClientOptions plain = cell.Options(alice.value, "plain");
  plain.server_key.clear();
  plain.timeout_ms = 1500;
  CHECK(Client(plain).Connect().code() == ErrorCode::kUnavailable);
}

TEST_CASE(
    "signing keys rotate: a new key works after reload; a retired one stops, "
    "its sessions too") {
  TestCell cell(1);
  auto alice = Open(cell, UserId(1), "phone");  // a session made before it all
  std::string ctl = BinPath("natterctl") + " ";
  std::string id;
  REQUIRE(RunCommand(ctl + "token-key add --dir " + cell.dir() + " 2>/dev/null",
                     &id) == 0);
  id = id.substr(0, id.find('\n'));
  SigningKey newest;
  REQUIRE(ReadSigningKey(cell.dir() + "/keys/token", "", &newest).ok());
  CHECK(newest.id == id);

  ClientOptions o = cell.Options(2, "phone");
  o.timeout_ms = 5000;
  o.token = cell.Token(2);  // signed with the new key
  CHECK(Client(o).Connect().code() == ErrorCode::kTokenUnknownKey);
  REQUIRE(RunCommand(ctl + "reload --dir " + cell.dir()) == 0);
  Status s;
  WaitUntil(
      "frontd to take a token of the new key",
      [&] { return (s = Client(o).Connect()).ok(); }, 20, Pause(100),
      [&] { return s.ToString(); });
  auto bob = Open(cell, UserId(2), "laptop",
                  [&](ClientOptions* b) { b->token = o.token; });

  // Retire the first key: tokens it signed are refused after reload.
  std::string keys;
  REQUIRE(RunCommand(ctl + "token-key list --dir " + cell.dir(), &keys) == 0);
  std::string first;
  for (const auto& line : SplitList(keys)) {
    if (line != id && line != "signing") first = line;
  }
  REQUIRE(!first.empty());
  SigningKey retired;
  REQUIRE(ReadSigningKey(cell.dir() + "/keys/token", first, &retired).ok());
  TokenClaims c;
  c.user = UserId(3);
  c.issued = static_cast<uint64_t>(time(nullptr));
  c.expires = c.issued + 3600;
  std::string signed_by_retired = SignToken(c, retired);
  REQUIRE(RunCommand(ctl + "token-key retire --id " + first + " --dir " +
                     cell.dir() + " 2>/dev/null") == 0);
  REQUIRE(RunCommand(ctl + "reload --dir " + cell.dir()) == 0);
  o.token = signed_by_retired;
  WaitUntil(
      "frontd to refuse a token of the retired key",
      [&] {
        return (s = Client(o).Connect()).code() == ErrorCode::kTokenUnknownKey;
      },
      20, Pause(100), [&] { return s.ToString(); });
  // The session the retired key's token made ended with it: alice's next
  // send is refused, and nothing of it is stored.
  alice->client->Send(UserId(2), "too late");
  PollUntil(
      {alice.get()}, "alice's send to be refused",
      [&] { return alice->Count(Incoming::Kind::kError) > 0; }, 20);
  CHECK(alice->Count(Incoming::Kind::kProcessed) == 0);
  REQUIRE(alice->Count(Incoming::Kind::kError) > 0);
  for (const auto& in : alice->got) {
    if (in.kind == Incoming::Kind::kError)
      CHECK(in.error.code() == ErrorCode::kTokenUnknownKey);
  }
  // bob's session, made with the new key, goes on.
  bob->client->Send(UserId(1), "still here");
  PollUntil(
      {bob.get()}, "bob's send to be processed",
      [&] { return bob->Count(Incoming::Kind::kProcessed) == 1; }, 20);
  CHECK(bob->Count(Incoming::Kind::kProcessed) == 1);
  CHECK(bob->Count(Incoming::Kind::kError) == 0);
  // The last key cannot be retired.
  CHECK(RunCommand(ctl + "token-key retire --id " + id + " --dir " +
                   cell.dir() + " 2>/dev/null") == 64);
}

TEST_CASE(
    "every request is for the token's user: another user's data is out of "
    "reach") {
  unsigned shards = GENERATE(1u, 3u);
  TestCell cell(shards);
  // Users 8 and 9 talk; user 7 tries to read and change their conversation.
  auto eight = Open(cell, UserId(8), "phone");
  auto nine = Open(cell, UserId(9), "phone");
  PollUntil(
      {nine.get()}, "nine's phone to catch up",
      [&] { return nine->client->CaughtUp(); }, 20);
  eight->client->Send(UserId(9), "private");
  PollUntil(
      {eight.get(), nine.get()}, "nine to get the message",
      [&] { return nine->Messages().size() == 1; }, 20);
  REQUIRE(nine->Messages().size() == 1);
  MessageId id = nine->Messages()[0].id;

  RawClient seven(cell, 7);
  History q;
  q.peer = UserId(9);
  Frame f = seven.Ask(q, UserId(8));
  REQUIRE(f.type() == MsgType::kHistoryReply);
  HistoryReply h;
  REQUIRE(DecodeBody(f, &h).ok());
  CHECK(h.messages.empty());
  f = seven.Ask(Chats(), UserId(8));
  ChatsReply c;
  REQUIRE(DecodeBody(f, &c).ok());
  CHECK(c.chats.empty());
  Sync sync;
  sync.from_cursor = false;
  f = seven.Ask(sync, UserId(9));
  SyncReply mailbox;
  REQUIRE(DecodeBody(f, &mailbox).ok());
  CHECK(mailbox.events.empty());
  CHECK(mailbox.head == Seq(0));
  React react{UserId(8), id, std::string("😈")};
  f = seven.Ask(react, UserId(9));
  REQUIRE(f.type() == MsgType::kError);
  MarkSeen seen{UserId(8), id};
  f = seven.Ask(seen, UserId(9));
  REQUIRE(f.type() == MsgType::kError);
  // Nothing reached 8 or 9 (time for an event to come, were one sent).
  PollFor({eight.get(), nine.get()}, 1);
  for (Device* d : {eight.get(), nine.get()}) {
    CHECK(d->Reactions().empty());
    CHECK(d->Receipts(EventKind::kSeen).empty());
  }
}

TEST_CASE("a flooding client is told busy; the others are served as before") {
  TestCell cell(1);
  RawClient flood(cell, 5);
  Sync sync;
  sync.from_cursor = false;
  // Far past max-in-flight (256), without reading; within what frontd
  // queues for one client (1000), so every answer waits to be read.
  const int kFlood = 900;
  for (int i = 0; i < kFlood; ++i) flood.Send(sync, UserId());
  auto other = Open(cell, UserId(6), "phone");
  for (int i = 0; i < 20; ++i)
    other->client->Send(UserId(5), "fine " + std::to_string(i));
  PollUntil(
      {other.get()}, "the other user's 20 sends to be processed",
      [&] { return other->Count(Incoming::Kind::kProcessed) == 20; }, 20);
  CHECK(other->Count(Incoming::Kind::kProcessed) == 20);
  CHECK(other->Count(Incoming::Kind::kError) == 0);
  int busy = 0, answered = 0;
  for (int i = 0; i < kFlood; ++i) {
    Frame f = flood.NextReply();
    if (f.type() == MsgType::kError) {
      Error e;
      REQUIRE(DecodeBody(f, &e).ok());
      CHECK(e.code == ErrorCode::kBusy);
      ++busy;
    } else {
      ++answered;
    }
  }
  CHECK(busy > 0);
  CHECK(answered >= 256);
  CHECK(busy + answered == kFlood);  // every request got an answer
}

TEST_CASE(
    "malformed and oversized frames are refused and the daemon serves on") {
  TestCell cell(1);
  RawClient bad(cell, 5);
  for (const std::string& junk :
       {std::string("\xc1"), std::string("\x92\x01"),
        std::string("\xdd\xff\xff\xff\xff", 5), std::string(100, '\x00')}) {
    bad.s.send(zmq::buffer(junk), zmq::send_flags::none);
    Frame f = bad.NextReply();
    REQUIRE(f.type() == MsgType::kError);
    Error e;
    REQUIRE(DecodeBody(f, &e).ok());
    CHECK(e.code == ErrorCode::kMalformed);
  }
  // More than 256 KiB: the socket drops that connection, nobody else's.
  RawClient huge(cell, 6);
  Send too_big{"c", UserId(5), std::string(300 * 1024, 'x')};
  huge.Send(too_big, UserId());
  WaitUntil(
      "frontd to drop the connection of the oversized frame",
      [&] { return huge.Saw(ZMQ_EVENT_DISCONNECTED); }, 20);
  auto fine = Open(cell, UserId(7), "phone");
  fine->client->Send(UserId(5), "still served");
  PollUntil(
      {fine.get()}, "the other client's send to be processed",
      [&] { return fine->Count(Incoming::Kind::kProcessed) == 1; }, 20);
  CHECK(fine->Count(Incoming::Kind::kProcessed) == 1);
  Frame f = bad.Ask(Ping(), UserId());
  CHECK(f.type() == MsgType::kPong);
}

TEST_CASE(
    "a token whose key id holds a newline and escape codes leaves nothing raw "
    "in the logs") {
  TestCell cell(1);
  SigningKey stranger = GenerateSigningKey();
  stranger.id = "x\nuser=1 event=forged \x1b[2J";  // SignToken writes key.id
                                                   // into the claims
  TokenClaims c;
  c.user = UserId(1);
  c.issued = static_cast<uint64_t>(std::time(nullptr));
  c.expires = c.issued + 3600;
  ClientOptions o = cell.Options(1, "phone");
  o.token = SignToken(c, stranger);
  o.timeout_ms = 5000;
  Status refused = Client(o).Connect();
  CHECK(refused.code() == ErrorCode::kTokenUnknownKey);
  CHECK(refused.message().find_first_of("\n\x1b") == std::string::npos);

  // frontd logged the refusal before it answered.  Each line of each log of
  // the cell is one event: it begins with its time, holds no control
  // character, and is key=value pairs naming one event.
  size_t refusals = 0;
  for (const char* name : {"frontd", "routed", "stored-0", "notifyd"}) {
    std::ifstream in(cell.dir() + "/log/" + name + ".log");
    for (std::string line; std::getline(in, line);) {
      INFO(name << ": " << line);
      CHECK(std::regex_search(line, std::regex("^\\d{4}-\\d\\d-\\d\\dT")));
      CHECK(line.find_first_of("\x1b\r\x07") == std::string::npos);
      int events = 0;
      for (const auto& [key, value] : KeyValues(line)) {
        CHECK(std::regex_match(key, std::regex("[a-z][a-z_]*")));
        if (key == "event") ++events;
        if (key == "event" && value == "hello-refused") ++refusals;
      }
      CHECK(events == 1);
    }
  }
  CHECK(refusals == 1);
}

TEST_CASE(
    "a device name holding a no-break space or a line separator or a bidi "
    "control is refused at hello") {
  TestCell cell(1);
  for (const char* device : {"my\xC2\xA0phone", "my\xE2\x80\xA8phone",
                             "\xE2\x80\xAE"
                             "enohp"}) {
    INFO(device);
    ClientOptions o = cell.Options(1, device);
    o.timeout_ms = 5000;
    CHECK(Client(o).Connect().code() == ErrorCode::kBadRequest);
  }
  CHECK(Client(cell.Options(1, "téléphone")).Connect().ok());
}

TEST_CASE(
    "protocol 2: a client of version 1 is told why in its own version; an "
    "ack has no answer, and a sync after it shows the cursor") {
  TestCell cell(1);
  {
    RawClient::Options o;
    o.hello = false;
    RawClient old(cell, 1, o);
    ClientOptions co = cell.Options(1, "old");
    old.SendVersion(1, Hello{co.token, "old"});
    old.s.set(zmq::sockopt::rcvtimeo, 10000);
    zmq::message_t m;
    REQUIRE(old.s.recv(m));
    REQUIRE(m.size() > 2);
    CHECK(static_cast<const uint8_t*>(m.data())[2] == 1);  // its version
    Frame f;
    REQUIRE(DecodeFrame(m.data(), m.size(), &f).ok());
    REQUIRE(f.type() == MsgType::kError);
    Error e;
    REQUIRE(DecodeBody(f, &e).ok());
    CHECK(e.code == ErrorCode::kMalformed);
    CHECK(e.message.find("protocol version 1") != std::string::npos);
  }
  RawClient alice(cell, 1), bob(cell, 2);
  REQUIRE(alice.Ask(Send{"p1", UserId(2), "hi"}).type() == MsgType::kProcessed);
  std::optional<Frame> pushed = bob.Next();
  REQUIRE(pushed.has_value());
  REQUIRE(pushed->type() == MsgType::kEvent);
  Event ev;
  REQUIRE(DecodeBody(*pushed, &ev).ok());
  bob.Send(Ack{ev.seq});
  // Nothing comes back for the ack...
  CHECK_FALSE(bob.Next(1000).has_value());
  // ...but the shard has it: a sync after it says so, and Alice is told
  // her message was delivered.
  Frame reply = bob.Ask(Sync{false, ev.seq, 1});
  REQUIRE(reply.type() == MsgType::kSyncReply);
  SyncReply sync;
  REQUIRE(DecodeBody(reply, &sync).ok());
  CHECK(sync.cursor == ev.seq);
  bool delivered = false;
  for (std::optional<Frame> f = alice.Next(); f && !delivered;
       f = alice.Next()) {
    Event got;
    if (f->type() == MsgType::kEvent && DecodeBody(*f, &got).ok())
      delivered = got.kind() == EventKind::kDelivered;
  }
  CHECK(delivered);
}

TEST_CASE(
    "protocol 2: acks sent together count as their highest, are never "
    "answered, and a sync sent after them sees them") {
  TestCell cell(1);
  RawClient alice(cell, 1), bob(cell, 2);
  std::vector<Seq> seqs;
  for (int i = 0; i < 3; ++i) {
    REQUIRE(alice.Ask(Send{"b" + std::to_string(i), UserId(2), "hi"}).type() ==
            MsgType::kProcessed);
    std::optional<Frame> pushed = bob.Next();
    REQUIRE(pushed.has_value());
    Event ev;
    REQUIRE(DecodeBody(*pushed, &ev).ok());
    seqs.push_back(ev.seq);
  }
  // Written at once, so frontd takes them in one turn: the highest goes
  // on, not the last, and before the sync.
  bob.Send(Ack{seqs[2]});
  bob.Send(Ack{seqs[0]});
  bob.Send(Ack{seqs[1]});
  bob.Send(Sync{false, Seq(), 0});
  std::optional<Frame> first = bob.Next();
  REQUIRE(first.has_value());
  REQUIRE(first->type() == MsgType::kSyncReply);  // nothing for the acks
  SyncReply sync;
  REQUIRE(DecodeBody(*first, &sync).ok());
  CHECK(sync.cursor == seqs[2]);
  CHECK_FALSE(bob.Next(500).has_value());
}

// CurveZMQ between daemons with the cell's allow-list, key rotation on
// SIGHUP, and cross-user access refused.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <regex>
#include <thread>

#include "common/curve.h"
#include "common/text.h"
#include "common/token.h"
#include "tests/integration/devices.h"
#include "tests/integration/test_cell.h"

using namespace natter;

namespace {

// Asks routed for user 1's mailbox straight on its socket, as a daemon
// would, with the given CURVE keys (none: plain text).  True if any answer
// came within a second.
bool RoutedAnswers(const TestCell& cell, const char* secret_z85, const char* public_z85) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 1000);
  CurveKey routed;
  REQUIRE(ReadCurveKey(cell.dir() + "/keys/routed.pub", &routed).ok());
  if (secret_z85 != nullptr) {
    s.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(routed.data(), routed.size()));
    s.set(zmq::sockopt::curve_publickey, public_z85);
    s.set(zmq::sockopt::curve_secretkey, secret_z85);
  }
  s.connect("ipc://" + cell.dir() + "/run/routed.sock");
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

std::string ReadLine(const std::string& path) {
  std::string line;
  ReadFirstLine(path, &line);
  return line;
}


// The key=value pairs of a log line, after "TIME program[pid]: ": a value
// is a word, or in double quotes with \" and \\ escaped.  A word without
// '=' comes back as a key with an empty value.
std::vector<std::pair<std::string, std::string>> KeyValues(const std::string& line) {
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

TEST_CASE("daemon sockets take only the cell's keys: not plain text, not another key") {
  TestCell cell(1);
  // A key of the cell (frontd's) is let in.
  std::string fsec = ReadLine(cell.dir() + "/keys/frontd.key");
  std::string fpub = ReadLine(cell.dir() + "/keys/frontd.pub");
  CHECK(RoutedAnswers(cell, fsec.c_str(), fpub.c_str()));
  // Plain text gets nothing.
  CHECK_FALSE(RoutedAnswers(cell, nullptr, nullptr));
  // Nor does a key the cell does not list.
  char pub[41], sec[41];
  zmq_curve_keypair(pub, sec);
  CHECK_FALSE(RoutedAnswers(cell, sec, pub));
  // Once listed and reloaded (SIGHUP), it is let in.
  {
    std::ofstream(cell.dir() + "/keys/peers/newhost.pub") << pub << "\n";
  }
  std::string out;
  REQUIRE(RunCommand(BinPath("natterctl") + " reload --dir " + cell.dir()) == 0);
  bool in = false;
  for (int i = 0; i < 20 && !in; ++i) {
    in = RoutedAnswers(cell, sec, pub);
  }
  CHECK(in);
}

TEST_CASE("curve-ipc = no: the cell's ipc hops go in plain text, clients keep CURVE") {
  TestCell cell(2, "[cell]\ncurve-ipc = no");
  // routed's ipc socket answers plain text now, and a CURVE client no more.
  CHECK(RoutedAnswers(cell, nullptr, nullptr));
  // Messages go through every hop (frontd, routed, both shards, notifyd).
  auto [alice, bob] = TwoUsers(2);
  auto a = Open(cell, alice, "a1");
  auto b = Open(cell, bob, "b1");
  PollUntil({a.get(), b.get()}, [&] { return a->client->CaughtUp() && b->client->CaughtUp(); }, 10);
  for (int i = 0; i < 100; ++i) a->client->Send(bob, "plain " + std::to_string(i));
  PollUntil({a.get(), b.get()}, [&] { return b->Messages().size() == 100; }, 20);
  CHECK(b->Messages().size() == 100);
  // The client's connection to frontd is still CURVE: a plain client gets
  // no answer.
  ClientOptions plain = cell.Options(alice.value, "plain");
  plain.server_key.clear();
  plain.timeout_ms = 1500;
  CHECK(Client(plain).Connect().code() == ErrorCode::kUnavailable);
}

TEST_CASE("signing keys rotate: a new key works after reload, a retired one stops, sessions stay") {
  TestCell cell(1);
  auto alice = Open(cell, UserId(1), "phone");  // a session made before it all
  std::string ctl = BinPath("natterctl") + " ";
  std::string id;
  REQUIRE(RunCommand(ctl + "token-key add --dir " + cell.dir() + " 2>/dev/null", &id) == 0);
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
  for (int i = 0; i < 20; ++i) {
    s = Client(o).Connect();
    if (s.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(s.ok());

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
  REQUIRE(RunCommand(ctl + "token-key retire --id " + first + " --dir " + cell.dir() + " 2>/dev/null") == 0);
  REQUIRE(RunCommand(ctl + "reload --dir " + cell.dir()) == 0);
  o.token = signed_by_retired;
  ErrorCode code = ErrorCode::kOk;
  for (int i = 0; i < 20; ++i) {
    code = Client(o).Connect().code();
    if (code == ErrorCode::kTokenUnknownKey) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(code == ErrorCode::kTokenUnknownKey);
  // The session made before the rotation still works.
  alice->client->Send(UserId(2), "still here");
  PollUntil({alice.get()}, [&] { return alice->Count(Incoming::Kind::kProcessed) == 1; }, 10);
  CHECK(alice->Count(Incoming::Kind::kProcessed) == 1);
  CHECK(alice->Count(Incoming::Kind::kError) == 0);
  // The last key cannot be retired.
  CHECK(RunCommand(ctl + "token-key retire --id " + id + " --dir " + cell.dir() + " 2>/dev/null") == 64);
}

namespace {

// A raw client: CURVE to frontd, hello with a token, then frames as given.
struct RawClient {
  zmq::context_t ctx{1};
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  uint64_t corr = 1;

  RawClient(const TestCell& cell, uint64_t user) {
    ClientOptions o = cell.Options(user, "raw");
    char pub[41], sec[41];
    zmq_curve_keypair(pub, sec);
    CurveKey server;
    REQUIRE(ParseCurveKey(o.server_key, &server));
    s.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(server.data(), 32));
    s.set(zmq::sockopt::curve_publickey, pub);
    s.set(zmq::sockopt::curve_secretkey, sec);
    s.set(zmq::sockopt::rcvtimeo, 10000);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::sndhwm, 100000);
    s.connect(o.server);
    Hello hello{o.token, "raw"};
    REQUIRE(Ask(MsgType::kHello, hello, UserId()).type() == MsgType::kWelcome);
  }
  template <typename T>
  void Send(MsgType type, const T& body, UserId claimed) {
    Header h;
    h.type = static_cast<uint8_t>(type);
    h.corr = corr++;
    h.user = claimed;
    h.device = "someone-else";
    s.send(zmq::buffer(EncodeFrame(h, body)), zmq::send_flags::none);
  }
  Frame Next() {
    zmq::message_t m;
    REQUIRE(s.recv(m));
    Frame f;
    REQUIRE(DecodeFrame(m.data(), m.size(), &f).ok());
    f.handle = msgpack::unpack(static_cast<const char*>(m.data()), m.size());
    f.body = f.handle.get().via.array.ptr[1];
    return f;
  }
  // The next reply, past any live events pushed meanwhile.
  Frame NextReply() {
    for (;;) {
      Frame f = Next();
      if (f.type() != MsgType::kEvent) return f;
    }
  }
  template <typename T>
  Frame Ask(MsgType type, const T& body, UserId claimed) {
    Send(type, body, claimed);
    return NextReply();
  }
};

}  // namespace

TEST_CASE("every request is for the token's user: another user's data is out of reach") {
  unsigned shards = GENERATE(1u, 3u);
  TestCell cell(shards);
  // Users 8 and 9 talk; user 7 tries to read and change their conversation.
  auto eight = Open(cell, UserId(8), "phone");
  auto nine = Open(cell, UserId(9), "phone");
  PollUntil({nine.get()}, [&] { return nine->client->CaughtUp(); }, 5);
  eight->client->Send(UserId(9), "private");
  PollUntil({eight.get(), nine.get()}, [&] { return nine->Messages().size() == 1; }, 10);
  REQUIRE(nine->Messages().size() == 1);
  MessageId id = nine->Messages()[0].id;

  RawClient seven(cell, 7);
  History q;
  q.peer = UserId(9);
  Frame f = seven.Ask(MsgType::kHistory, q, UserId(8));
  REQUIRE(f.type() == MsgType::kHistoryReply);
  HistoryReply h;
  REQUIRE(DecodeBody(f, &h).ok());
  CHECK(h.messages.empty());
  f = seven.Ask(MsgType::kChats, Chats(), UserId(8));
  ChatsReply c;
  REQUIRE(DecodeBody(f, &c).ok());
  CHECK(c.chats.empty());
  Sync sync;
  sync.from_cursor = false;
  f = seven.Ask(MsgType::kSync, sync, UserId(9));
  SyncReply mailbox;
  REQUIRE(DecodeBody(f, &mailbox).ok());
  CHECK(mailbox.events.empty());
  CHECK(mailbox.head == Seq(0));
  React react{UserId(8), id, std::string("😈")};
  f = seven.Ask(MsgType::kReact, react, UserId(9));
  REQUIRE(f.type() == MsgType::kError);
  MarkSeen seen{UserId(8), id};
  f = seven.Ask(MsgType::kSeen, seen, UserId(9));
  REQUIRE(f.type() == MsgType::kError);
  // Nothing reached 8 or 9.
  PollUntil({eight.get(), nine.get()}, [] { return false; }, 1);
  CHECK(eight->Messages(EventKind::kReaction).empty());
  CHECK(eight->Messages(EventKind::kSeen).empty());
}

TEST_CASE("a flooding client is told busy; the others are served as before") {
  TestCell cell(1);
  RawClient flood(cell, 5);
  Sync sync;
  sync.from_cursor = false;
  // Far past max-in-flight (256), without reading; within what frontd
  // queues for one client (1000), so every answer waits to be read.
  const int kFlood = 900;
  for (int i = 0; i < kFlood; ++i) flood.Send(MsgType::kSync, sync, UserId());
  auto other = Open(cell, UserId(6), "phone");
  for (int i = 0; i < 20; ++i) other->client->Send(UserId(5), "fine " + std::to_string(i));
  PollUntil({other.get()}, [&] { return other->Count(Incoming::Kind::kProcessed) == 20; }, 20);
  CHECK(other->Count(Incoming::Kind::kProcessed) == 20);
  CHECK(other->Count(Incoming::Kind::kError) == 0);
  int busy = 0, answered = 0;
  for (int i = 0; i < kFlood; ++i) {
    Frame f = flood.NextReply();
    if (f.type() == MsgType::kError) {
      Error e;
      REQUIRE(DecodeBody(f, &e).ok());
      CHECK(e.code == static_cast<uint16_t>(ErrorCode::kBusy));
      ++busy;
    } else {
      ++answered;
    }
  }
  CHECK(busy > 0);
  CHECK(answered >= 256);
  CHECK(busy + answered == kFlood);  // every request got an answer
}

TEST_CASE("malformed and oversized frames are refused and the daemon serves on") {
  TestCell cell(1);
  RawClient bad(cell, 5);
  for (const std::string& junk : {std::string("\xc1"), std::string("\x92\x01"),
                                  std::string("\xdd\xff\xff\xff\xff", 5),
                                  std::string(100, '\x00')}) {
    bad.s.send(zmq::buffer(junk), zmq::send_flags::none);
    Frame f = bad.NextReply();
    REQUIRE(f.type() == MsgType::kError);
    Error e;
    REQUIRE(DecodeBody(f, &e).ok());
    CHECK(e.code == static_cast<uint16_t>(ErrorCode::kMalformed));
  }
  // More than 256 KiB: the socket drops that connection, nobody else's.
  RawClient huge(cell, 6);
  Send too_big{"c", UserId(5), std::string(300 * 1024, 'x')};
  huge.Send(MsgType::kSend, too_big, UserId());
  auto fine = Open(cell, UserId(7), "phone");
  fine->client->Send(UserId(5), "still served");
  PollUntil({fine.get()}, [&] { return fine->Count(Incoming::Kind::kProcessed) == 1; }, 10);
  CHECK(fine->Count(Incoming::Kind::kProcessed) == 1);
  Frame f = bad.Ask(MsgType::kPing, Empty(), UserId());
  CHECK(f.type() == MsgType::kPong);
}

TEST_CASE("a token whose key id holds a newline and escape codes leaves nothing raw in the logs") {
  TestCell cell(1);
  SigningKey stranger = GenerateSigningKey();
  stranger.id = "x\nuser=1 event=forged \x1b[2J";  // SignToken writes key.id into the claims
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

TEST_CASE("a device name holding a no-break space or a line separator or a bidi control is refused at hello") {
  TestCell cell(1);
  for (const char* device : {"my\xC2\xA0phone", "my\xE2\x80\xA8phone", "\xE2\x80\xAE" "enohp"}) {
    INFO(device);
    ClientOptions o = cell.Options(1, device);
    o.timeout_ms = 5000;
    CHECK(Client(o).Connect().code() == ErrorCode::kBadRequest);
  }
  CHECK(Client(cell.Options(1, "téléphone")).Connect().ok());
}

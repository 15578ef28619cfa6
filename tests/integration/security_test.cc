// CurveZMQ between daemons with the cell's allow-list, key rotation on
// SIGHUP, and cross-user access refused.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <fstream>
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

// A client given several frontds (natter(7), Clients and frontds): when
// the one it uses dies or hangs, it continues on another, and nothing is
// lost or doubled.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "common/text.h"
#include "tests/integration/devices.h"

using namespace natter;

namespace {

// The daemon name of the frontd at endpoint (natterctl init --frontds:
// frontd.sock is frontd-0's, frontd-K.sock frontd-K's).
std::string FrontdName(const std::string& endpoint) {
  size_t at = endpoint.rfind("/frontd");
  std::string file = endpoint.substr(at + 1);
  if (file == "frontd.sock") return "frontd-0";
  return file.substr(0, file.size() - 5);
}

}  // namespace

TEST_CASE(
    "a device given two frontds continues on the other when its frontd is "
    "killed and when it hangs; every message is received once and every "
    "send processed once") {
  TestCell cell(1, Frontds{2}, kNoUserRate);
  auto [alice, bob] = TwoUsers(1);
  // Bob listens as natter listen does (watching the connection), pinging
  // every second when idle so that a frontd that hangs is seen soon.
  auto [a, b] = OpenSenderAndReceiver(cell, alice, bob, [](ClientOptions* o) {
    o->watch_link = true;
    o->ping_ms = 1000;
    o->timeout_ms = 120000;
  });
  CHECK(SplitList(cell.Options(bob.value, "x").server).size() == 2);

  SentMessages sent;
  auto send = [&](int n) { SendNumbered(a.get(), bob, "through", n, &sent); };
  auto everything = [&](const std::string& what) {
    AwaitSentAndReceived(a.get(), b.get(), sent, what);
  };
  send(30);
  everything("the first 30 processed and received");

  // kill -9 of Bob's frontd: Bob continues on the other.
  const std::string first = b->client->current_server();
  ::kill(cell.DaemonPid(FrontdName(first)), SIGKILL);
  send(30);
  everything("60 processed and received, a frontd killed");
  CHECK(b->client->current_server() != first);
  CHECK(b->client->server_moves() >= 1);

  // The frontd Bob is on now hangs (SIGSTOP): Bob sees no answer to his
  // ping and leaves it; Alice's sends through it, if she is on it, are
  // sent again through the other.
  const std::string second = b->client->current_server();
  const pid_t hung = cell.DaemonPid(FrontdName(second));
  ::kill(hung, SIGSTOP);
  struct Thaw {
    pid_t pid;
    ~Thaw() { ::kill(pid, SIGCONT); }
  } thaw{hung};
  send(30);
  everything("90 processed and received, a frontd hung");
  CHECK(b->client->current_server() != second);
  ::kill(hung, SIGCONT);
  send(10);
  everything("every message processed and received");

  CHECK(b->Count(Incoming::Kind::kError) == 0);
  CheckSentOnce(a.get(), b.get(), sent);
}

TEST_CASE(
    "a rolling restart of two frontds under steady sending: each drains, "
    "its devices move to the other, no error reaches the application, and "
    "nothing is lost or doubled") {
  TestCell cell(1, Frontds{2}, kNoUserRate);
  auto [alice, bob] = TwoUsers(1);
  auto [a, b] = OpenSenderAndReceiver(cell, alice, bob, [](ClientOptions* o) {
    o->watch_link = true;
    o->timeout_ms = 120000;
  });
  SentMessages sent;
  SendNumbered(a.get(), bob, "rolling", 20, &sent);
  AwaitSentAndReceived(a.get(), b.get(), sent, "the first 20");

  // natterctl drain, one frontd after the other (each started again by
  // the supervisor before the next drains), while Alice sends.
  std::string drained;
  auto restart = std::async(std::launch::async, [&] {
    return RunCommand(BinPath("natterctl") + " drain --dir " + cell.dir() +
                          " frontd-0 frontd-1 2>&1",
                      &drained);
  });
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (restart.wait_for(std::chrono::milliseconds(0)) !=
             std::future_status::ready &&
         std::chrono::steady_clock::now() < until) {
    SendNumbered(a.get(), bob, "rolling", 2, &sent);
    PollFor({a.get(), b.get()}, 0.05);
  }
  REQUIRE(restart.get() == 0);
  INFO(drained);
  CHECK(CountOf(drained, "running again") == 2);
  SendNumbered(a.get(), bob, "rolling", 10, &sent);
  AwaitSentAndReceived(a.get(), b.get(), sent, "every message");
  // Both devices were on a frontd that drained, and moved.
  CHECK(a->client->server_moves() >= 1);
  CHECK(b->client->server_moves() >= 1);
  CHECK(b->Count(Incoming::Kind::kError) == 0);
  CheckSentOnce(a.get(), b.get(), sent);
  // Each frontd drained: its devices, told to move, left before it
  // exited (not cut off when it did).
  int sessions = 0;
  for (const char* name : {"frontd-0", "frontd-1"}) {
    std::string log = ReadFile(cell.dir() + "/log/" + name + ".log");
    INFO(name << ": " << log.substr(log.rfind("event=draining")));
    CHECK(CountOf(log, "event=drained sessions=0 ") == 1);
    size_t at = log.find("event=draining sessions=");
    REQUIRE(at != std::string::npos);
    sessions += std::stoi(log.substr(at + 24));
  }
  CHECK(sessions >= 2);  // Alice's and Bob's, wherever they were
}

TEST_CASE(
    "a device that polls seldom stays on its frontd: an answer waiting "
    "unread is not silence") {
  TestCell cell(1, Frontds{2}, kNoUserRate);
  auto [alice, bob] = TwoUsers(1);
  auto [a, b] = OpenSenderAndReceiver(
      cell, alice, bob, [](ClientOptions* o) { o->failover_ms = 400; });
  SentMessages sent;
  // Each send answered while Bob's device looks elsewhere for twice its
  // failover_ms (as one thread driving thousands of clients may).
  for (int round = 0; round < 3; ++round) {
    b->client->GetChats();
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    b->Poll(0);
  }
  SendNumbered(a.get(), bob, "seldom", 5, &sent);
  AwaitSentAndReceived(a.get(), b.get(), sent, "every message");
  CHECK(b->client->server_moves() == 0);
  CHECK(b->Count(Incoming::Kind::kError) == 0);
}

TEST_CASE(
    "a device refused busy by every frontd comes back later, doubling: at "
    "most 4 tries in 3 failover_ms-long waits") {
  // Each frontd takes one connection; one device holds it.
  TestCell cell(
      1, Frontds{2},
      std::string(kNoUserRate) + "\n[frontd]\n" + "max-clients = 1\n");
  std::vector<std::string> frontds = SplitList(cell.Options(1, "x").server);
  REQUIRE(frontds.size() == 2);
  std::vector<std::unique_ptr<Client>> holders;
  for (size_t k = 0; k < frontds.size(); ++k) {
    ClientOptions o = cell.Options(10 + k, "holder");
    o.server = frontds[k];
    holders.push_back(std::make_unique<Client>(o));
    REQUIRE(holders.back()->Connect().ok());
  }
  // A refusal waits failover_ms/2 to 3/2 failover_ms, then twice, four
  // times that: tries at 0, >= 0.2, >= 0.6, >= 1.4, >= 3.0 s.  (Before,
  // it waited 50 to 150 ms, doubling every two tries: 7 tries or more.)
  ClientOptions o = cell.Options(3, "late");
  o.failover_ms = 400;
  o.timeout_ms = 2900;
  Client late(o);
  Status s = late.Connect();
  CHECK(s.code() == ErrorCode::kBusy);
  CHECK(late.server_moves() >= 2);
  CHECK(late.server_moves() <= 4);
}

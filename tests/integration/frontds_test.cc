// A client given several frontds (natter(7), Clients and frontds): when
// the one it uses dies or hangs, it continues on another, and nothing is
// lost or doubled.
#include <signal.h>

#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <string>

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
  auto a = Open(cell, alice, "a1", Patient);
  // Bob listens as natter listen does (watching the connection), pinging
  // every second when idle so that a frontd that hangs is seen soon.
  auto b = Open(cell, bob, "b1", [](ClientOptions* o) {
    o->watch_link = true;
    o->ping_ms = 1000;
    o->timeout_ms = 120000;
  });
  AwaitCaughtUp({a.get(), b.get()});
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

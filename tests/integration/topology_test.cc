// A cell spread as across hosts (tools/topology/natter-topology): 2
// frontds, 2 routed, 3 shards and 2 notifyds on tcp:// with CURVE, in
// network namespaces when the test runs as root where they work (else on
// loopback ports); clients on both frontds; one host cut off and back.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <set>

#include "common/shard.h"
#include "tests/integration/devices.h"

using namespace natter;

namespace {

std::string TopologyScript() {
  std::string bin = BinPath("");
  return "NATTER_BIN=" + bin + " sh " + bin +
         "/../tools/topology/natter-topology";
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Three users whose home shards are the three shards.
std::vector<UserId> UsersOnEachShard() {
  std::vector<UserId> users(3);
  std::set<uint32_t> taken;
  for (uint64_t u = 1000; taken.size() < 3; ++u) {
    uint32_t shard = HomeShard(UserId(u), 3);
    if (taken.insert(shard).second) users[shard] = UserId(u);
  }
  return users;
}

}  // namespace

TEST_CASE(
    "a cell across hosts: two of each daemon, three shards, tcp:// with CURVE; "
    "a host cut off and back") {
  TempDir tmp;
  std::string dir = tmp.path() + "/cell";
  std::string topo = TopologyScript();
  struct Down {
    std::string command;
    ~Down() { RunCommand(command + " >/dev/null 2>&1"); }
  } down{topo + " down " + dir};
  std::string out;
  // NATTER_TOPOLOGY=loopback|netns forces one way (default: netns where it
  // works).
  const char* mode = std::getenv("NATTER_TOPOLOGY");
  REQUIRE(RunCommand(topo + " up " + dir + " " +
                         (mode != nullptr && *mode ? mode : "auto") + " 2>&1",
                     &out) == 0);
  std::string topology = ReadFile(dir + "/topology");
  bool netns = topology.find("MODE=netns") != std::string::npos;
  // Both ways are real; which one ran is in the test's output.
  WARN("topology in " << (netns ? "network namespaces" : "loopback ports"));

  std::string front[2];
  for (int i = 0; i < 2; ++i) {
    REQUIRE(
        RunCommand(topo + " endpoint " + dir + " frontd-" + std::to_string(i),
                   &front[i]) == 0);
    front[i] = Trim(front[i]);
  }
  std::string client_conf = ReadFile(dir + "/client.conf");
  size_t key_at = client_conf.find("server-key = ") + 13;
  std::string key =
      client_conf.substr(key_at, client_conf.find('\n', key_at) - key_at);
  auto open = [&](UserId user, int frontd, const std::string& device) {
    std::string token;
    REQUIRE(RunCommand(BinPath("natterctl") + " token --dir " + dir +
                           " --user " + std::to_string(user.value),
                       &token) == 0);
    ClientOptions o;
    o.server = front[frontd];
    o.server_key = key;
    o.token = Trim(token);
    o.device = device;
    o.timeout_ms = 60000;
    auto d = std::make_unique<Device>();
    d->client = std::make_unique<Client>(o);
    Status s = d->client->Connect();
    INFO(s.ToString());
    REQUIRE(s.ok());
    return d;
  };
  std::vector<UserId> users = UsersOnEachShard();
  UserId alice = users[0], bob = users[1], carol = users[2];
  auto a0 = open(alice, 0, "a0");
  auto a1 = open(alice, 1, "a1");
  auto b1 = open(bob, 1, "b1");
  auto c0 = open(carol, 0, "c0");
  std::vector<Device*> all = {a0.get(), a1.get(), b1.get(), c0.get()};
  PollUntil(
      all, "every device to catch up",
      [&] {
        for (Device* d : all) {
          if (!d->client->CaughtUp()) return false;
        }
        return true;
      },
      20);

  // Alice -> Bob from frontd-0 to frontd-1, Bob -> Carol back, Carol ->
  // Alice; n messages each, then wait for every receipt and copy.
  int sent_each = 0;
  auto round = [&](int n) {
    for (int i = 0; i < n; ++i) {
      a0->client->Send(bob, "a" + std::to_string(sent_each + i));
      b1->client->Send(carol, "b" + std::to_string(sent_each + i));
      c0->client->Send(alice, "c" + std::to_string(sent_each + i));
    }
    sent_each += n;
  };
  auto settled = [&] {
    size_t want = static_cast<size_t>(sent_each);
    return a0->Count(Incoming::Kind::kProcessed) == want &&
           b1->Count(Incoming::Kind::kProcessed) == want &&
           c0->Count(Incoming::Kind::kProcessed) == want &&
           b1->Messages().size() == want && c0->Messages().size() == want &&
           a0->Messages().size() == want &&
           // a1: Carol's messages and Alice's own from a0.
           a1->Messages().size() == 2 * want;
  };
  round(30);
  PollUntil(all, "every receipt and every copy of the first round", settled,
            30);
  REQUIRE(settled());

  // Bob's home shard is cut off mid-traffic, then comes back: what was
  // sent meanwhile is processed once it is back, none of it twice.
  round(10);
  REQUIRE(RunCommand(topo + " cut " + dir + " stored-1") == 0);
  round(20);
  // The cut lasts past the heartbeat timeout (3 s): its peers must find
  // the silent connections dead, which is what this is about.
  PollFor(all, 5);
  REQUIRE(RunCommand(topo + " restore " + dir + " stored-1") == 0);
  PollUntil(all, "every receipt and every copy, the cut shard back", settled,
            90);
  for (Device* d : {a0.get(), b1.get(), c0.get()}) {
    for (const auto& in : d->got) {
      if (in.kind == Incoming::Kind::kError) UNSCOPED_INFO(in.error.ToString());
    }
    CHECK(d->Count(Incoming::Kind::kError) == 0);
  }
  REQUIRE(settled());
  // Once each: every processed id and every copy on a device.
  for (Device* d : all) {
    std::set<uint64_t> ids;
    for (const auto& e : d->Messages()) CHECK(ids.insert(e.id.value).second);
    std::set<uint64_t> processed;
    for (const auto& in : d->got) {
      if (in.kind == Incoming::Kind::kProcessed)
        CHECK(processed.insert(in.processed.id.value).second);
    }
  }
  // And the histories agree: Bob's conversation with Alice has all of
  // Alice's messages, seen from either frontd.
  CHECK(WholeHistory(b1.get(), alice).size() == static_cast<size_t>(sent_each));
  CHECK(WholeHistory(a1.get(), bob).size() == static_cast<size_t>(sent_each));
}

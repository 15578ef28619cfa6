// A cell spread as across hosts (tools/topology/natter-topology): 2
// frontds, 2 routed, 3 shards of 3 replicas and 2 notifyds on tcp:// with
// CURVE, in network namespaces when the test runs as root where they work
// (else on loopback ports); clients on both frontds; a shard's leader cut
// off under steady sending, and back.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
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

// The ids a device's sends were given, from their processed receipts:
// each of `sent` processed once, each with an id of its own.
std::set<uint64_t> ProcessedOnce(const Device& d,
                                 const std::set<std::string>& sent) {
  std::set<uint64_t> ids;
  std::set<std::string> cmids;
  for (const auto& in : d.got) {
    if (in.kind != Incoming::Kind::kProcessed) continue;
    INFO("processed " << in.processed.id.value << " for "
                      << in.processed.client_msg_id);
    CHECK(sent.count(in.processed.client_msg_id) == 1);
    CHECK(cmids.insert(in.processed.client_msg_id).second);
    CHECK(ids.insert(in.processed.id.value).second);
  }
  CHECK(cmids == sent);
  return ids;
}

// The ids of the messages a device was handed, each once.
std::set<uint64_t> ReceivedOnce(const Device& d) {
  std::set<uint64_t> ids;
  for (const auto& e : d.Messages()) {
    INFO("message " << e.id.value);
    CHECK(ids.insert(e.id.value).second);
  }
  return ids;
}

// The ids of the conversation with peer as the device's frontd reads it,
// each once.
std::set<uint64_t> HistoryOnce(Device* d, UserId peer) {
  std::set<uint64_t> ids;
  for (MessageId id : WholeHistory(d, peer)) {
    INFO("history " << id.value);
    CHECK(ids.insert(id.value).second);
  }
  return ids;
}

}  // namespace

TEST_CASE(
    "a cell across hosts: two of each daemon, three shards of three "
    "replicas, tcp:// with CURVE; a shard's leader cut off under steady "
    "sending and back") {
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
  auto open_on = [&](UserId user, const std::string& servers,
                     const std::string& device, const Tweak& tweak) {
    std::string token;
    REQUIRE(RunCommand(BinPath("natterctl") + " token --dir " + dir +
                           " --user " + std::to_string(user.value),
                       &token) == 0);
    ClientOptions o;
    o.server = servers;
    o.server_key = key;
    o.token = Trim(token);
    o.device = device;
    o.timeout_ms = 60000;  // keep retrying through a leader change
    if (tweak) tweak(&o);
    auto d = std::make_unique<Device>();
    d->client = std::make_unique<Client>(o);
    Status s = d->client->Connect();
    INFO(s.ToString());
    REQUIRE(s.ok());
    return d;
  };
  auto open = [&](UserId user, int frontd, const std::string& device) {
    return open_on(user, front[frontd], device, {});
  };
  std::vector<UserId> users = UsersOnEachShard();
  UserId alice = users[0], bob = users[1], carol = users[2];
  auto a0 = open(alice, 0, "a0");
  auto a1 = open(alice, 1, "a1");
  auto b1 = open(bob, 1, "b1");
  auto c0 = open(carol, 0, "c0");
  std::vector<Device*> all = {a0.get(), a1.get(), b1.get(), c0.get()};
  AwaitCaughtUp(all);

  // Alice -> Bob from frontd-0 to frontd-1, Bob -> Carol back, Carol ->
  // Alice: a message of each at a time; at the end, every receipt and
  // every copy.
  std::set<std::string> sent_a, sent_b, sent_c;
  auto send_each = [&] {
    size_t n = sent_a.size();
    sent_a.insert(a0->client->Send(bob, "a" + std::to_string(n)));
    sent_b.insert(b1->client->Send(carol, "b" + std::to_string(n)));
    sent_c.insert(c0->client->Send(alice, "c" + std::to_string(n)));
  };
  // Ten of each a second, for `seconds`, the devices polled between.
  auto steady = [&](double seconds) {
    const auto until =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(seconds));
    while (Clock::now() < until) {
      send_each();
      PollFor(all, 0.1);
    }
  };
  auto settled = [&] {
    size_t want = sent_a.size();
    return a0->Count(Incoming::Kind::kProcessed) >= want &&
           b1->Count(Incoming::Kind::kProcessed) >= want &&
           c0->Count(Incoming::Kind::kProcessed) >= want &&
           b1->Messages().size() >= want && c0->Messages().size() >= want &&
           a0->Messages().size() >= want &&
           // a1: Carol's messages and Alice's own from a0.
           a1->Messages().size() >= 2 * want;
  };
  for (int i = 0; i < 30; ++i) send_each();
  PollUntil(all, "every receipt and every copy of the first messages", settled,
            30);

  // The leader of Bob's home shard is cut off while the three keep
  // sending: in namespaces its link goes down (its peers hear silence, not
  // a closed connection), on loopback it is stopped.  The other two elect
  // a leader; what was sent to the old one is sent again by its clients.
  auto leader_of_bob = [&] {
    std::string name;
    INFO("natter-topology leader " << dir << " 1");
    REQUIRE(RunCommand(topo + " leader " + dir + " 1", &name) == 0);
    name = Trim(name);
    REQUIRE(name.rfind("stored-1.", 0) == 0);
    return name;
  };
  const std::string old_leader = leader_of_bob();
  steady(1);
  REQUIRE(RunCommand(topo + " cut " + dir + " " + old_leader) == 0);
  // Past the election timeout (1 to 2 s) and the heartbeat timeout (3 s).
  steady(5);
  const std::string new_leader = leader_of_bob();
  CHECK(new_leader != old_leader);
  REQUIRE(RunCommand(topo + " restore " + dir + " " + old_leader) == 0);
  steady(1);
  PollUntil(all, "every receipt and every copy, the old leader back", settled,
            40);
  // A moment more, so that a duplicate, if any, would arrive and be seen.
  PollFor(all, 1);

  // Retryable errors (unavailable, not-leader) are retried by the client
  // until its timeout; none may come out.
  for (Device* d : all) {
    for (const auto& in : d->got) {
      if (in.kind == Incoming::Kind::kError) UNSCOPED_INFO(in.error.ToString());
    }
    CHECK(d->Count(Incoming::Kind::kError) == 0);
  }
  // Every send processed once, with an id of its own; every device handed
  // each of its messages once, and its mailbox's seqs without a gap.
  std::set<uint64_t> from_a = ProcessedOnce(*a0, sent_a);
  std::set<uint64_t> from_b = ProcessedOnce(*b1, sent_b);
  std::set<uint64_t> from_c = ProcessedOnce(*c0, sent_c);
  CHECK(ReceivedOnce(*b1) == from_a);
  CHECK(ReceivedOnce(*c0) == from_b);
  CHECK(ReceivedOnce(*a0) == from_c);
  std::set<uint64_t> to_alice = from_c;
  to_alice.insert(from_a.begin(), from_a.end());
  CHECK(ReceivedOnce(*a1) == to_alice);
  // (Each user's mailbox holds what the user sent and was sent.)
  for (Device* d : all) CheckSeqsComplete(*d, 2 * sent_a.size());
  // Both users' histories of each conversation hold its messages once,
  // read through either frontd.
  CHECK(HistoryOnce(a0.get(), bob) == from_a);    // frontd-0, shard 0
  CHECK(HistoryOnce(b1.get(), alice) == from_a);  // frontd-1, shard 1
  CHECK(HistoryOnce(b1.get(), carol) == from_b);  // frontd-1, shard 1
  CHECK(HistoryOnce(c0.get(), bob) == from_b);    // frontd-0, shard 2
  CHECK(HistoryOnce(c0.get(), alice) == from_c);  // frontd-0, shard 2
  CHECK(HistoryOnce(a1.get(), carol) == from_c);  // frontd-1, shard 0

  // Every shard's three replicas, the one cut off among them, hold the same
  // database at one log position.
  out.clear();
  int verified = RunCommand(
      BinPath("natterctl") + " verify --dir " + dir + " --timeout 30s", &out);
  INFO(out);
  CHECK(verified == 0);
  CHECK(CountOf(out, "3 replicas agree") == 3);

  // A frontd's host cut off: devices given both frontds continue on the
  // other (natter(7), several frontds).  They ping every second, so that
  // the silence of a frontd cut off (no closed connection in namespaces)
  // is heard soon.
  const UserId dave(7001), erin(7002);
  auto both = [](ClientOptions* o) {
    o->watch_link = true;
    o->ping_ms = 1000;
  };
  auto d = open_on(dave, front[0] + " " + front[1], "d", both);
  auto e = open_on(erin, front[0] + " " + front[1], "e", both);
  AwaitCaughtUp({d.get(), e.get()});
  SentMessages across;
  SendNumbered(d.get(), erin, "across", 10, &across);
  AwaitSentAndReceived(d.get(), e.get(), across, "the first 10 across");
  const std::string erins = e->client->current_server();
  const std::string cut = erins == front[0] ? "frontd-0" : "frontd-1";
  REQUIRE(RunCommand(topo + " cut " + dir + " " + cut) == 0);
  SendNumbered(d.get(), erin, "across", 10, &across);
  AwaitSentAndReceived(d.get(), e.get(), across,
                       "20 across, Erin's frontd cut off", 40);
  CHECK(e->client->current_server() != erins);
  CHECK(e->client->server_moves() >= 1);
  REQUIRE(RunCommand(topo + " restore " + dir + " " + cut) == 0);
  CHECK(e->Count(Incoming::Kind::kError) == 0);
  CheckSentOnce(d.get(), e.get(), across);
}

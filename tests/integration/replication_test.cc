// Shards of three replicas (natter-stored(8), Replication): the leader
// killed or frozen under steady sending, and nothing acknowledged lost,
// nothing twice.
#include <signal.h>
#include <sysexits.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "common/curve.h"
#include "common/net.h"
#include "common/shard.h"
#include "common/text.h"
#include "tests/integration/devices.h"

using namespace natter;

namespace {

// The replica of shard 0 that leads in the newest term its replicas have
// logged (event=leading ... term=T), and that term; -1 if none has led.
std::pair<int, uint64_t> LeaderOf(const TestCell& cell, unsigned replicas) {
  int leader = -1;
  uint64_t best = 0;
  for (unsigned k = 0; k < replicas; ++k) {
    std::string log =
        ReadFile(cell.dir() + "/log/stored-0." + std::to_string(k) + ".log");
    for (size_t at = log.find("event=leading"); at != std::string::npos;
         at = log.find("event=leading", at + 1)) {
      size_t t = log.find("term=", at);
      if (t == std::string::npos) break;
      std::optional<uint64_t> term =
          ParseUint(log.substr(t + 5, log.find_first_of("\n ", t) - t - 5));
      if (term && *term > best) {
        best = *term;
        leader = static_cast<int>(k);
      }
    }
  }
  return {leader, best};
}

// Sends a signal to a replica now and, for SIGSTOP, SIGCONT when it goes
// (so that a failed check never leaves it frozen).
class Frozen {
 public:
  explicit Frozen(pid_t pid) : pid_(pid) { ::kill(pid_, SIGSTOP); }
  ~Frozen() { Thaw(); }
  void Thaw() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
    pid_ = -1;
  }

 private:
  pid_t pid_;
};

// Every message Alice sent (sent: client_msg_id -> number) acknowledged
// once, received by Bob once, in both histories once; Bob's mailbox
// without a gap.
void CheckExactlyOnce(Device* a, Device* b, UserId alice, UserId bob,
                      const SentMessages& sent) {
  const std::set<uint64_t> ids = CheckSentOnce(a, b, sent);
  for (Device* d : {a, b}) {
    std::set<uint64_t> in_history;
    for (MessageId id : WholeHistory(d, d == a ? bob : alice)) {
      REQUIRE(in_history.insert(id.value).second);
    }
    CHECK(in_history == ids);
  }
}

// natterctl's words, and its exit status.
int Natterctl(const TestCell& cell, const std::string& args,
              std::string* out = nullptr) {
  std::string ignored;
  return RunCommand(
      BinPath("natterctl") + " " + args + " --dir " + cell.dir() + " 2>&1",
      out != nullptr ? out : &ignored);
}

// The cell's natter.conf with shard 0's entry made by edit from its
// replicas' endpoints.
void EditShardMap(const TestCell& cell,
                  const std::function<void(std::vector<std::string>*)>& edit) {
  const std::string path = cell.dir() + "/natter.conf";
  std::string conf = ReadFile(path);
  size_t at = conf.find("\nshards = ");
  REQUIRE(at != std::string::npos);
  at += 10;
  size_t end = conf.find('\n', at);
  std::vector<std::string> replicas =
      ReplicaEndpoints(conf.substr(at, end - at));
  edit(&replicas);
  std::string entry;
  for (const std::string& r : replicas)
    entry += (entry.empty() ? "" : ",") + (r.empty() ? "-" : r);
  conf.replace(at, end - at, entry);
  std::ofstream(path, std::ios::trunc) << conf;
}

}  // namespace

TEST_CASE(
    "a shard of three replicas loses nothing acknowledged, and writes "
    "nothing twice, when its leader is killed and when it is frozen for 10 "
    "s") {
  TestCell cell(1, Replicas{3}, kNoUserRate);
  auto [alice, bob] = TwoUsers(1);
  auto [a, b] = OpenSenderAndReceiver(cell, alice, bob);

  SentMessages sent;
  auto send = [&](int n) {
    SendNumbered(a.get(), bob, "replicated", n, &sent);
  };
  auto processed = [&](size_t n, const std::string& what) {
    PollUntil(
        {a.get(), b.get()}, what,
        [&] { return a->Count(Incoming::Kind::kProcessed) >= n; }, 60);
  };

  send(150);
  processed(150, "the first 150 messages to be processed");
  auto [first, first_term] = LeaderOf(cell, 3);
  REQUIRE(first >= 0);

  // kill -9 the leader while messages are on their way.
  send(150);
  ::kill(cell.DaemonPid("stored-0." + std::to_string(first)), SIGKILL);
  send(100);
  processed(400, "400 processed after the leader was killed");
  auto [second, second_term] = LeaderOf(cell, 3);
  CHECK(second_term > first_term);
  REQUIRE(second >= 0);

  // Freeze the new leader for 10 s: the others elect a third, and the
  // frozen one, thawed, serves nothing it was asked while it led.
  {
    auto stopped_at = std::chrono::steady_clock::now();
    Frozen frozen(cell.DaemonPid("stored-0." + std::to_string(second)));
    send(100);
    processed(500, "500 processed while the leader is frozen");
    auto [third, third_term] = LeaderOf(cell, 3);
    CHECK(third != second);
    CHECK(third_term > second_term);
    PollFor({a.get(), b.get()},
            10 - std::chrono::duration<double>(
                     std::chrono::steady_clock::now() - stopped_at)
                     .count());
  }
  send(100);
  processed(600, "600 processed after the old leader was thawed");
  PollUntil(
      {a.get(), b.get()}, "bob to get all 600 messages",
      [&] { return b->Messages().size() >= 600; }, 60);

  CheckExactlyOnce(a.get(), b.get(), alice, bob, sent);

  // The three replicas' databases are the same at one log position.
  std::string out;
  CHECK(RunCommand(BinPath("natterctl") + " verify --dir " + cell.dir(),
                   &out) == 0);
  CHECK(out.find("3 replicas agree") != std::string::npos);
}

TEST_CASE(
    "a replica behind its shard's compacted log gets the leader's database, "
    "and then agrees with the others") {
  // A log of ten entries at most: a replica frozen for a few dozen writes
  // is behind it.
  TestCell cell(1, Replicas{3}, "[stored]\nuser-rate = 0\nlog-entries = 10");
  auto [alice, bob] = TwoUsers(1);
  auto a = Open(cell, alice, "a1");
  auto b = Open(cell, bob, "b1");
  PollUntil(
      {a.get(), b.get()}, "both devices to catch up",
      [&] { return a->client->CaughtUp() && b->client->CaughtUp(); }, 30);
  auto send_one_by_one = [&](int n) {
    for (int i = 0; i < n; ++i) {
      const size_t before = a->Count(Incoming::Kind::kProcessed);
      a->client->Send(bob, "one by one " + std::to_string(i));
      PollUntil(
          {a.get(), b.get()}, "a send to be processed",
          [&] { return a->Count(Incoming::Kind::kProcessed) > before; }, 30);
    }
  };
  send_one_by_one(5);
  auto [leader, term] = LeaderOf(cell, 3);
  REQUIRE(leader >= 0);
  const int behind = (leader + 1) % 3;
  const std::string behind_log =
      cell.dir() + "/log/stored-0." + std::to_string(behind) + ".log";
  {
    Frozen frozen(cell.DaemonPid("stored-0." + std::to_string(behind)));
    send_one_by_one(60);  // an entry each: six times the log
  }
  PollUntil(
      {a.get(), b.get()}, "the thawed replica to install the leader's database",
      [&] {
        return CountOf(ReadFile(behind_log), "event=snapshot-installed") > 0;
      },
      30);
  const std::string leader_log =
      cell.dir() + "/log/stored-0." + std::to_string(leader) + ".log";
  CHECK(CountOf(ReadFile(leader_log), "event=snapshot-send") > 0);
  CHECK(CountOf(ReadFile(leader_log), "event=log-compacted") > 0);
  send_one_by_one(5);
  std::string out;
  CHECK(RunCommand(BinPath("natterctl") + " verify --dir " + cell.dir(),
                   &out) == 0);
  CHECK(out.find("3 replicas agree") != std::string::npos);
  CHECK(WholeHistory(b.get(), alice).size() == 70);
}

TEST_CASE(
    "a replica whose disk fills stops, its shard serves on without it and "
    "loses nothing, and it catches up when space returns") {
  if (::geteuid() != 0) {
    WARN("not root: cannot mount a small tmpfs; the test did not run");
    return;
  }
  // Replica 2's folder is a 1 MiB tmpfs; a short log, so that it comes
  // back behind it and takes the leader's database.
  std::string mounted;
  TestCell cell(
      1, "[stored]\nuser-rate = 0\nlog-entries = 50",
      [&](const std::string& dir) {
        std::string data = dir + "/data/shard-0.2";
        REQUIRE(RunCommand("mkdir -p " + data +
                           " && mount -t tmpfs -o size=1m natter-test " +
                           data) == 0);
        mounted = data;
      },
      [&] {
        if (!mounted.empty()) RunCommand("umount " + mounted);
      },
      Replicas{3});
  auto [alice, bob] = TwoUsers(1);
  auto [a, b] = OpenSenderAndReceiver(cell, alice, bob);
  const int kMessages = 3000;
  const std::string text(400, 'x');
  std::map<std::string, int> sent;
  for (int i = 0; i < kMessages; ++i) {
    sent[a->client->Send(bob, text + std::to_string(i))] = i;
  }
  const std::string full_log = cell.dir() + "/log/stored-0.2.log";
  PollUntil(
      {a.get(), b.get()}, "every message processed, the full replica down",
      [&] {
        return a->Count(Incoming::Kind::kProcessed) >=
                   static_cast<size_t>(kMessages) &&
               CountOf(ReadFile(full_log), "event=storage-down") > 0;
      },
      90);
  REQUIRE(RunCommand("mount -o remount,size=64m " + mounted) == 0);
  PollUntil(
      {a.get(), b.get()}, "the replica to come back",
      [&] { return CountOf(ReadFile(full_log), "event=storage-up") > 0; }, 30);
  std::string out;
  CHECK(RunCommand(
            BinPath("natterctl") + " verify --timeout 60s --dir " + cell.dir(),
            &out) == 0);
  CHECK(out.find("3 replicas agree") != std::string::npos);
  PollUntil(
      {a.get(), b.get()}, "bob to get every message",
      [&] { return b->Messages().size() >= static_cast<size_t>(kMessages); },
      60);
  CHECK(a->Count(Incoming::Kind::kError) == 0);
  std::set<uint64_t> ids;
  for (const auto& in : a->got) {
    if (in.kind == Incoming::Kind::kProcessed) {
      REQUIRE(ids.insert(in.processed.id.value).second);
    }
  }
  CHECK(ids.size() == sent.size());
  std::set<uint64_t> received;
  for (const auto& e : b->Messages()) {
    REQUIRE(received.insert(e.id.value).second);
  }
  CHECK(received == ids);
}

TEST_CASE(
    "a lost replica is replaced while its shard serves: removed, the shard "
    "map changed and reloaded, a new one added; it takes the leader's "
    "database, votes, and nothing is lost") {
  // A short log: the new replica comes after it is compacted, and takes
  // the leader's database.
  TestCell cell(1, Replicas{3}, "[stored]\nuser-rate = 0\nlog-entries = 10");
  auto [alice, bob] = TwoUsers(1);
  auto [a, b] = OpenSenderAndReceiver(cell, alice, bob);
  SentMessages sent;
  auto send = [&](int n) {
    SendNumbered(a.get(), bob, "membership", n, &sent);
  };
  auto processed = [&](const std::string& what) {
    PollUntil(
        {a.get(), b.get()}, what,
        [&] { return a->Count(Incoming::Kind::kProcessed) >= sent.size(); },
        60);
    REQUIRE(a->Count(Incoming::Kind::kProcessed) == sent.size());
  };
  send(100);
  processed("the first 100 processed");
  auto [leader, term] = LeaderOf(cell, 3);
  REQUIRE(leader >= 0);
  const int lost = (leader + 1) % 3;
  const int kept = (leader + 2) % 3;
  std::string out;

  // A follower's host is lost (frozen: the supervisor would restart a
  // killed one).  The shard serves on with two of three; the operator
  // removes the lost one.
  const pid_t lost_pid = cell.DaemonPid("stored-0." + std::to_string(lost));
  Frozen frozen(lost_pid);
  send(50);
  REQUIRE(
      Natterctl(cell,
                "replica remove --shard 0 --replica " + std::to_string(lost),
                &out) == 0);
  INFO(out);
  CHECK(out.find("voters") != std::string::npos);
  CHECK(out.find(" " + std::to_string(lost) + " ") == std::string::npos);
  // Removing it again changes nothing, and says so.
  std::string again;
  CHECK(Natterctl(cell,
                  "replica remove --shard 0 --replica " + std::to_string(lost),
                  &again) == 0);
  CHECK(again == out);
  // Adding one that is not in the shard map yet is refused too.
  CHECK(Natterctl(cell, "replica add --shard 0 --replica 3", &again) ==
        EX_USAGE);
  CHECK(again.find("no endpoint") != std::string::npos);
  processed("150 processed with a replica lost");

  // Its place in the shard map becomes -, a new replica's endpoint is
  // appended, and the cell reads it again: the supervisor stops the lost
  // one and starts the new one, which joins.
  EditShardMap(cell, [&](std::vector<std::string>* replicas) {
    std::string next = (*replicas)[kept];
    const std::string from = "stored-0." + std::to_string(kept);
    next.replace(next.find(from), from.size(), "stored-0.3");
    (*replicas)[lost].clear();
    replicas->push_back(next);
  });
  frozen.Thaw();
  REQUIRE(Natterctl(cell, "reload") == 0);
  const std::string new_log = cell.dir() + "/log/stored-0.3.log";
  PollUntil(
      {a.get(), b.get()}, "the new replica to start",
      [&] { return CountOf(ReadFile(new_log), "event=ready") > 0; }, 30);
  send(50);
  REQUIRE(Natterctl(cell, "replica add --shard 0 --replica 3", &out) == 0);
  CHECK(out.find(" 3\n") != std::string::npos);
  send(50);
  processed("250 processed, the new replica added");
  PollUntil(
      {a.get(), b.get()}, "the new replica to install the leader's database",
      [&] {
        return CountOf(ReadFile(new_log), "event=snapshot-installed") > 0;
      },
      30);

  // The new replica votes: with the leader frozen, the kept one and the
  // new one elect a leader between them and the shard serves on.
  {
    auto [now_leader, now_term] = LeaderOf(cell, 4);
    REQUIRE(now_leader >= 0);
    if (now_leader == 3) {
      // Freeze the other: the new one must still make a majority.
      now_leader = kept;
    }
    Frozen leader_frozen(
        cell.DaemonPid("stored-0." + std::to_string(now_leader)));
    send(50);
    processed("300 processed with one of the three old voters left");
    auto [next, next_term] = LeaderOf(cell, 4);
    CHECK(next != now_leader);
    CHECK(next_term > now_term);
  }
  send(20);
  processed("every message processed");
  PollUntil(
      {a.get(), b.get()}, "bob to get every message",
      [&] { return b->Messages().size() >= sent.size(); }, 60);
  CheckExactlyOnce(a.get(), b.get(), alice, bob, sent);
  CHECK(Natterctl(cell, "verify --timeout 60s", &out) == 0);
  INFO(out);
  CHECK(out.find("3 replicas agree") != std::string::npos);
  // The lost replica was stopped (and is not asked).
  CHECK(::kill(lost_pid, 0) != 0);
}

TEST_CASE(
    "a replica takes Raft messages only from a replica's key: routed's key "
    "cannot depose its leader") {
  TestCell cell(1, Replicas{3}, kNoUserRate);
  auto [alice, bob] = TwoUsers(1);
  auto a = Open(cell, alice, "a1");
  a->client->Send(bob, "before");
  PollUntil(
      {a.get()}, "a message processed",
      [&] { return a->Count(Incoming::Kind::kProcessed) == 1; }, 30);
  auto [leader, term] = LeaderOf(cell, 3);
  REQUIRE(leader >= 0);
  // With routed's key (it reaches every replica's socket), an append from
  // a made-up leader of a far later term: were it taken, the leader would
  // follow it into that term.
  CurveIdentity routed;
  REQUIRE(LoadCurveIdentity(cell.dir() + "/keys/routed.key", &routed).ok());
  zmq::context_t ctx(1);
  zmq::socket_t s = MakeDaemonSocket(ctx, zmq::socket_type::dealer);
  std::string conf = ReadFile(cell.dir() + "/natter.conf");
  size_t at = conf.find("\nshards = ") + 10;
  std::vector<std::string> replicas =
      ReplicaEndpoints(conf.substr(at, conf.find('\n', at) - at));
  REQUIRE(ConnectTo(s, routed, replicas[leader]).ok());
  Header h;
  h.type = static_cast<uint8_t>(MsgType::kRaft);
  h.device = "0";
  RaftMessage m;
  m.type = 4;  // an append (raft::MessageType::kAppend), of nothing
  m.from = static_cast<uint64_t>((leader + 1) % 3) + 1;
  m.to = static_cast<uint64_t>(leader) + 1;
  m.term = term + 1000;
  Parts parts;
  parts.push_back(ToMessage(EncodeFrame(h, m)));
  REQUIRE(SendParts(s, parts));
  const std::string log =
      cell.dir() + "/log/stored-0." + std::to_string(leader) + ".log";
  PollUntil(
      {a.get()}, "the leader to refuse it or follow it",
      [&] {
        const std::string text = ReadFile(log);
        return CountOf(text, "event=raft-refused") > 0 ||
               CountOf(text, "event=following") > 0;
      },
      30);
  CHECK(CountOf(ReadFile(log), "event=raft-refused") == 1);
  a->client->Send(bob, "after");
  PollUntil(
      {a.get()}, "a second message processed",
      [&] { return a->Count(Incoming::Kind::kProcessed) == 2; }, 30);
  auto [still, still_term] = LeaderOf(cell, 3);
  CHECK(still == leader);
  CHECK(still_term == term);
  CHECK(CountOf(ReadFile(log), "event=following") == 0);
}

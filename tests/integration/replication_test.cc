// Shards of three replicas (natter-stored(8), Replication): the leader
// killed or frozen under steady sending, and nothing acknowledged lost,
// nothing twice.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>

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

}  // namespace

TEST_CASE(
    "a shard of three replicas loses nothing acknowledged, and writes "
    "nothing twice, when its leader is killed and when it is frozen for 10 "
    "s") {
  TestCell cell(1, Replicas{3}, kNoUserRate);
  auto [alice, bob] = TwoUsers(1);
  ClientOptions ao = cell.Options(alice.value, "a1");
  ao.timeout_ms = 120000;  // keep retrying through a leader change
  Device a;
  a.client = std::make_unique<Client>(ao);
  REQUIRE(a.client->Connect().ok());
  auto b = Open(cell, bob, "b1");
  PollUntil(
      {&a, b.get()}, "both devices to catch up",
      [&] { return a.client->CaughtUp() && b->client->CaughtUp(); }, 30);

  std::map<std::string, int> sent;  // client_msg_id -> number
  auto send = [&](int n) {
    for (int i = 0; i < n; ++i) {
      int k = static_cast<int>(sent.size());
      sent[a.client->Send(bob, "replicated " + std::to_string(k))] = k;
    }
  };
  auto processed = [&](size_t n, const std::string& what) {
    PollUntil(
        {&a, b.get()}, what,
        [&] { return a.Count(Incoming::Kind::kProcessed) >= n; }, 60);
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
    PollFor({&a, b.get()},
            10 - std::chrono::duration<double>(
                     std::chrono::steady_clock::now() - stopped_at)
                     .count());
  }
  send(100);
  processed(600, "600 processed after the old leader was thawed");
  PollUntil(
      {&a, b.get()}, "bob to get all 600 messages",
      [&] { return b->Messages().size() >= 600; }, 60);

  // Every message acknowledged once, received once, in both histories
  // once; the recipient's mailbox without a gap.
  CHECK(a.Count(Incoming::Kind::kError) == 0);
  std::set<uint64_t> ids;
  for (const auto& in : a.got) {
    if (in.kind != Incoming::Kind::kProcessed) continue;
    REQUIRE(sent.count(in.processed.client_msg_id));
    REQUIRE(ids.insert(in.processed.id.value).second);
  }
  CHECK(ids.size() == sent.size());
  SeqsOnce(*b);
  std::set<uint64_t> received;
  for (const auto& e : b->Messages()) {
    REQUIRE(received.insert(e.id.value).second);
  }
  CHECK(received == ids);
  for (Device* d : {&a, b.get()}) {
    std::set<uint64_t> in_history;
    for (MessageId id : WholeHistory(d, d == &a ? bob : alice)) {
      REQUIRE(in_history.insert(id.value).second);
    }
    CHECK(in_history == ids);
  }

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
  ClientOptions ao = cell.Options(alice.value, "a1");
  ao.timeout_ms = 120000;
  Device a;
  a.client = std::make_unique<Client>(ao);
  REQUIRE(a.client->Connect().ok());
  auto b = Open(cell, bob, "b1");
  PollUntil(
      {&a, b.get()}, "both devices to catch up",
      [&] { return a.client->CaughtUp() && b->client->CaughtUp(); }, 30);
  const int kMessages = 3000;
  const std::string text(400, 'x');
  std::map<std::string, int> sent;
  for (int i = 0; i < kMessages; ++i) {
    sent[a.client->Send(bob, text + std::to_string(i))] = i;
  }
  const std::string full_log = cell.dir() + "/log/stored-0.2.log";
  PollUntil(
      {&a, b.get()}, "every message processed, the full replica down",
      [&] {
        return a.Count(Incoming::Kind::kProcessed) >=
                   static_cast<size_t>(kMessages) &&
               CountOf(ReadFile(full_log), "event=storage-down") > 0;
      },
      90);
  REQUIRE(RunCommand("mount -o remount,size=64m " + mounted) == 0);
  PollUntil(
      {&a, b.get()}, "the replica to come back",
      [&] { return CountOf(ReadFile(full_log), "event=storage-up") > 0; }, 30);
  std::string out;
  CHECK(RunCommand(
            BinPath("natterctl") + " verify --timeout 60s --dir " + cell.dir(),
            &out) == 0);
  CHECK(out.find("3 replicas agree") != std::string::npos);
  PollUntil(
      {&a, b.get()}, "bob to get every message",
      [&] { return b->Messages().size() >= static_cast<size_t>(kMessages); },
      60);
  CHECK(a.Count(Incoming::Kind::kError) == 0);
  std::set<uint64_t> ids;
  for (const auto& in : a.got) {
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

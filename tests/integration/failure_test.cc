// What happens when things run out: the disk, descriptors.  Nothing
// acknowledged is lost, and the cell serves again once the resource is back.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <string>

#include "daemons/frontd/frontd.h"
#include "tests/integration/devices.h"

using namespace natter;

TEST_CASE(
    "a full disk stops acknowledgements, loses nothing, and recovers when "
    "space returns") {
  if (::geteuid() != 0) {
    WARN(
        "not root: cannot mount a small tmpfs; the full-disk test did not run");
    return;
  }
  std::string mounted;
  // The shard's data folder is a 1 MiB tmpfs: LevelDB's log fills it after
  // a few hundred messages.  One user fills it, as fast as it can: without
  // its rate, which is not what this test is about.
  TestCell cell(
      1, kNoUserRate,
      [&](const std::string& dir) {
        std::string data = dir + "/data";
        REQUIRE(RunCommand("mount -t tmpfs -o size=1m natter-test " + data) ==
                0);
        mounted = data;
      },
      [&] {
        if (!mounted.empty()) RunCommand("umount " + mounted);
      });
  auto [alice, bob] = TwoUsers(1);
  auto [a, b] = OpenSenderAndReceiver(cell, alice, bob);

  const int kMessages = 3000;
  const std::string text(400, 'x');
  std::map<std::string, int> sent;  // client_msg_id -> index
  for (int i = 0; i < kMessages; ++i)
    sent[a->client->Send(bob, text + std::to_string(i))] = i;

  // Until the disk is full: progress stops, the shard says why, and
  // nothing it could not write was acknowledged.
  std::string log_path = cell.dir() + "/log/stored-0.log";
  PollUntil(
      {a.get(), b.get()}, "the shard to log event=storage-down",
      [&] { return CountOf(ReadFile(log_path), "event=storage-down") > 0; },
      60);
  REQUIRE(CountOf(ReadFile(log_path), "event=storage-down") > 0);
  size_t processed_while_full = a->Count(Incoming::Kind::kProcessed);
  INFO("processed before the disk was full: " << processed_while_full);
  REQUIRE(processed_while_full < static_cast<size_t>(kMessages));
  for (int i = 0; i < 20; ++i) {
    a->Poll(100);
    b->Poll(1);
  }
  CHECK(a->Count(Incoming::Kind::kError) == 0);  // retryable: the client waits

  // Space returns: the shard opens its database again and everything is
  // written, once.
  REQUIRE(RunCommand("mount -o remount,size=64m " + mounted) == 0);
  PollUntil(
      {a.get(), b.get()},
      "every message processed and delivered once space is back",
      [&] {
        return a->Count(Incoming::Kind::kProcessed) >=
                   static_cast<size_t>(kMessages) &&
               b->Messages().size() >= static_cast<size_t>(kMessages);
      },
      90);
  CHECK(a->Count(Incoming::Kind::kError) == 0);
  REQUIRE(a->Count(Incoming::Kind::kProcessed) ==
          static_cast<size_t>(kMessages));
  CHECK(CountOf(ReadFile(log_path), "event=storage-up") > 0);

  std::set<uint64_t> ids;
  for (const auto& in : a->got) {
    if (in.kind != Incoming::Kind::kProcessed) continue;
    REQUIRE(sent.count(in.processed.client_msg_id));
    REQUIRE(ids.insert(in.processed.id.value).second);  // one id per message
  }
  SeqsOnce(*b);
  std::set<uint64_t> received;
  for (const auto& e : b->Messages())
    REQUIRE(received.insert(e.id.value).second);
  CHECK(received == ids);
  for (Device* d : {a.get(), b.get()}) {
    std::vector<MessageId> history =
        WholeHistory(d, d == a.get() ? bob : alice);
    std::set<uint64_t> in_history;
    for (MessageId id : history) REQUIRE(in_history.insert(id.value).second);
    CHECK(in_history == ids);
  }
}

TEST_CASE(
    "a frontd at its descriptor limit refuses new clients and keeps the "
    "connected ones and its peers") {
  // The cell starts with 200 descriptors a process, so frontd takes
  // 200 - 64 clients; the test itself goes back to its own limit.
  struct rlimit saved;
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
  struct rlimit low = saved;
  low.rlim_cur = 200;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::unique_ptr<TestCell> cell;
  try {
    cell = std::make_unique<TestCell>(1);
  } catch (...) {
    ::setrlimit(RLIMIT_NOFILE, &saved);
    throw;
  }
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &saved) == 0);
  const size_t kMax = frontd::Frontd::DefaultMaxClients(200);
  REQUIRE(kMax == 136);

  zmq::context_t ctx(1);
  std::vector<std::unique_ptr<Device>> connected;
  size_t refused = 0;
  for (size_t i = 0; i < kMax + 24; ++i) {
    ClientOptions o = cell->Options(1000 + i, "d");
    o.timeout_ms = 5000;
    auto d = std::make_unique<Device>();
    d->client = std::make_unique<Client>(o, &ctx);
    Status s = d->client->Connect();
    if (s.ok()) {
      connected.push_back(std::move(d));
      continue;
    }
    INFO(s.ToString());
    REQUIRE(s.code() == ErrorCode::kBusy);
    CHECK(s.message().find("as many clients as it takes") != std::string::npos);
    ++refused;
  }
  CHECK(connected.size() == kMax);
  CHECK(refused == 24);

  // The command line says so in one line, with EX_UNAVAILABLE.
  std::string out;
  CHECK(RunCommand(cell->NatterArgs(1) + " send 2 hi 2>&1", &out) == 69);
  CHECK(out.find("as many clients as it takes") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);

  // Connected clients talk, also after routed is killed and restarted:
  // frontd's reserve lets it connect to the new routed.
  auto exchange = [&](int round) {
    Device& from = *connected[round];
    Device& to = *connected[round + 1];
    from.client->Send(to.client->user(), "hello " + std::to_string(round));
    PollUntil(
        {&from, &to}, "the message of round " + std::to_string(round),
        [&] { return !to.Messages().empty(); }, 30);
    REQUIRE(to.Messages().size() == 1);
    CHECK(to.Messages()[0].text == "hello " + std::to_string(round));
  };
  exchange(0);
  pid_t routed = cell->DaemonPid("routed");
  REQUIRE(routed > 0);
  ::kill(routed, SIGKILL);
  exchange(2);
  CHECK(cell->DaemonPid("routed") != routed);

  // A place that frees up is taken by the next client, once frontd has
  // seen the connections go.
  connected.resize(connected.size() - 5);
  ClientOptions late = cell->Options(5000, "d");
  late.timeout_ms = 5000;
  Status s;
  WaitUntil(
      "a client to connect in a place freed",
      [&] { return (s = Client(late, &ctx).Connect()).ok(); }, 20, {},
      [&] { return s.ToString(); });
}

TEST_CASE(
    "a device that stops reading holds bounded queues and loses nothing") {
  // 5000 messages from one user at once; frontd queues at most 64 KiB for
  // a client (beyond what its socket holds), a tenth of them.
  TestCell cell(1, std::string(kNoUserRate) + "\n[frontd]\nmax-queued = 65536");
  auto [alice, bob] = TwoUsers(1);
  auto a = Open(cell, alice, "a1");
  auto b = Open(cell, bob, "b1");
  auto other = Open(cell, UserId(7), "o1");
  PollUntil(
      {a.get(), b.get(), other.get()}, "the three devices to catch up",
      [&] {
        return a->client->CaughtUp() && b->client->CaughtUp() &&
               other->client->CaughtUp();
      },
      20);
  // Bob's device reads nothing while 5000 messages come for it.  Others
  // are served meanwhile.
  const size_t kMessages = 5000;
  for (size_t i = 0; i < kMessages; ++i)
    a->client->Send(bob, "m" + std::to_string(i));
  other->client->Send(alice, "still here");
  PollUntil(
      {a.get(), other.get()},
      "alice's 5000 sends and the other user's one to be processed",
      [&] {
        return a->Count(Incoming::Kind::kProcessed) == kMessages &&
               other->Count(Incoming::Kind::kProcessed) == 1;
      },
      60);
  REQUIRE(a->Count(Incoming::Kind::kProcessed) == kMessages);
  CHECK(other->Count(Incoming::Kind::kProcessed) == 1);
  // frontd's queue for bob's device is bounded: past max-queued the
  // device is cut off, not queued for.
  WaitUntil(
      "frontd to cut off bob's device, which reads nothing",
      [&] {
        return CellStatus(cell)["frontd"]["metrics"].value(
                   "natter_frontd_closed_not_reading_total", 0.0) >= 1;
      },
      30, Pause(100));
  // Bob reads again: what frontd dropped comes from the mailbox; every
  // message once, in order.
  PollUntil(
      {b.get()}, "bob's device, reading again, to get all 5000 messages",
      [&] { return b->Messages().size() >= kMessages; }, 60);
  auto got = b->Messages();
  REQUIRE(got.size() == kMessages);
  for (size_t i = 0; i < kMessages; ++i)
    CHECK(got[i].text == "m" + std::to_string(i));
  SeqsOnce(*b);
}

TEST_CASE(
    "SIGTERM under traffic: each daemon finishes its work and exits cleanly; "
    "nothing is lost") {
  TestCell cell(2, kNoUserRate);  // 1500 messages from one user in seconds
  auto [alice, bob] = TwoUsers(2);
  // Idle devices learn that frontd restarted at their next ping, and fetch
  // events notifyd lost while it restarted at their next look at the
  // mailbox (10 s and 30 s by default): shortened here.
  auto t = OpenTwoByTwo(cell, alice, bob, "a1", "a2", "b1", "b2",
                        [](ClientOptions* o) {
                          o->ping_ms = 1000;
                          o->resync_ms = 2000;
                        });
  size_t sent = 0;
  for (const char* name :
       {"stored-0", "stored-1", "routed", "frontd", "notifyd"}) {
    for (int i = 0; i < 300; ++i)
      t.a1->client->Send(bob, std::string(name) + " " + std::to_string(i));
    sent += 300;
    for (int i = 0; i < 5; ++i) t.a1->Poll(1);  // some of it under way
    pid_t pid = cell.DaemonPid(name);
    REQUIRE(pid > 0);
    REQUIRE(::kill(pid, SIGTERM) == 0);
    PollUntil(
        t.all(),
        std::string(name) +
            " to be restarted, and every message processed and on every device",
        [&] {
          return cell.DaemonPid(name) != pid &&
                 t.a1->Count(Incoming::Kind::kProcessed) == sent &&
                 t.b1->Messages().size() == sent &&
                 t.b2->Messages().size() == sent &&
                 t.a2->Messages().size() == sent;
        },
        60);
    INFO(name);
    REQUIRE(t.a1->Count(Incoming::Kind::kProcessed) == sent);
    CHECK(cell.DaemonPid(name) != pid);
    std::string log = ReadFile(cell.dir() + "/log/" + name + ".log");
    // The stopped daemon said goodbye (a shard after closing its database).
    std::string stopped =
        "[" + std::to_string(pid) + "]: level=info event=stopped";
    CHECK(log.find(stopped) != std::string::npos);
    if (std::string(name).rfind("stored", 0) == 0) {
      CHECK(log.find("[" + std::to_string(pid) +
                     "]: level=info event=closed") != std::string::npos);
    }
  }
  for (Device* d : {t.b1.get(), t.b2.get(), t.a2.get()}) {
    REQUIRE(d->Messages().size() == sent);
    SeqsOnce(*d);
  }
  CHECK(t.a1->Count(Incoming::Kind::kError) == 0);
}

TEST_CASE("SIGHUP makes a daemon open its log file again (for logrotate)") {
  TempDir dir;
  std::string conf = dir.path() + "/natter.conf";
  {
    std::ofstream f(conf);
    f << "[cell]\nnotifyd-in = ipc://" << dir.path() << "/in.sock\n"
      << "notifyd-out = ipc://" << dir.path() << "/out.sock\n";
  }
  std::string log = dir.path() + "/notifyd.log";
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::string bin = BinPath("natter-notifyd");
    ::execl(bin.c_str(), bin.c_str(), "-c", conf.c_str(), "--log-file",
            log.c_str(), nullptr);
    ::_exit(127);
  }
  auto await_logged = [&](const std::string& what) {
    WaitUntil(
        "notifyd.log to say " + what,
        [&] { return ReadFile(log).find(what) != std::string::npos; }, 20);
  };
  await_logged("event=ready");
  REQUIRE(::rename(log.c_str(), (log + ".1").c_str()) == 0);  // logrotate
  ::kill(pid, SIGHUP);
  await_logged("event=reload");
  CHECK(ReadFile(log + ".1").find("event=reload") == std::string::npos);
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(ReadFile(log).find("event=stopped") != std::string::npos);
}

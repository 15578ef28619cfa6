// What an operator relies on: natterctl status (metrics from each daemon's
// control socket), the Prometheus endpoint, trace ids through every hop
// (natterctl trace) and natterctl backup with its restore.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "common/text.h"
#include "tests/integration/devices.h"

using namespace natter;

namespace {

struct Output {
  int code;
  std::string out;
  std::string err;
};

Output Ctl(const std::string& args) {
  Output r;
  r.code = RunCommand(BinPath("natterctl") + " " + args, &r.out, &r.err);
  return r;
}

// One HTTP request over a plain TCP socket; the whole response.
std::string HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  REQUIRE(::send(fd, request.data(), request.size(), 0) ==
          static_cast<ssize_t>(request.size()));
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    response.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return response;
}

// Sends n messages from a to b and waits for every processed receipt and
// for b to have them all.
void Exchange(Device* a, Device* b, UserId to, int n) {
  // A new device's mailbox starts where it first synced.
  PollUntil(
      {a, b}, "both devices to catch up",
      [&] { return a->client->CaughtUp() && b->client->CaughtUp(); }, 20);
  for (int i = 0; i < n; ++i)
    a->client->Send(to, "message " + std::to_string(i));
  PollUntil(
      {a, b}, "every send processed and on the recipient's device",
      [&] {
        return a->Count(Incoming::Kind::kProcessed) >= static_cast<size_t>(n) &&
               b->Messages().size() >= static_cast<size_t>(n);
      },
      20);
  REQUIRE(a->Count(Incoming::Kind::kProcessed) == static_cast<size_t>(n));
  REQUIRE(b->Messages().size() == static_cast<size_t>(n));
}

}  // namespace

TEST_CASE(
    "natterctl status shows every daemon's counters, and they count what the "
    "cell did") {
  TestCell cell(2);
  auto [alice, bob] = TwoUsers(2);
  auto a = Open(cell, alice, "a");
  auto b = Open(cell, bob, "b");
  Exchange(a.get(), b.get(), bob, 30);

  Output st = Ctl("status --json --dir " + cell.dir());
  INFO(st.err);
  REQUIRE(st.code == 0);
  nlohmann::json j = nlohmann::json::parse(st.out);
  for (const char* name :
       {"frontd", "routed", "notifyd", "stored-0", "stored-1"}) {
    INFO(name);
    REQUIRE(j[name]["state"] == "running");
    REQUIRE(j[name]["metrics"].contains("process_cpu_seconds_total"));
    CHECK(j[name]["metrics"]["process_resident_memory_bytes"].get<double>() >
          0);
  }
  const auto& f = j["frontd"]["metrics"];
  CHECK(f["natter_frontd_sessions"].get<double>() >= 2);
  CHECK(f["natter_frontd_requests_total"].get<double>() >= 30);
  CHECK(f["natter_frontd_events_total"].get<double>() >= 30);
  CHECK(f["natter_frontd_answer_seconds"]["count"].get<double>() >= 30);
  CHECK(f["natter_frontd_answer_seconds"]["p50"].get<double>() > 0);
  CHECK(f["natter_frontd_answer_seconds"]["p99"].get<double>() >=
        f["natter_frontd_answer_seconds"]["p50"].get<double>());
  // Alice's and Bob's home shards differ: each send is stored on one and
  // handed off to the other.
  double stored =
      j["stored-0"]["metrics"]["natter_stored_requests_total"].get<double>() +
      j["stored-1"]["metrics"]["natter_stored_requests_total"].get<double>();
  CHECK(stored >= 60);
  double handoffs =
      j["stored-0"]["metrics"]["natter_stored_handoffs_sent_total"]
          .get<double>() +
      j["stored-1"]["metrics"]["natter_stored_handoffs_sent_total"]
          .get<double>();
  CHECK(handoffs >= 30);
  CHECK(j["stored-0"]["metrics"]["natter_stored_storage_up"] == 1);
  // Each shard's Raft log: one segment file so far, with entries in it.
  CHECK(j["stored-0"]["metrics"]["natter_stored_raft_log_segments"] == 1);
  CHECK(j["stored-0"]["metrics"]["natter_stored_raft_log_bytes"].get<double>() >
        0);
  CHECK(j["routed"]["metrics"]["natter_routed_requests_total"].get<double>() >=
        60);
  CHECK(j["notifyd"]["metrics"]["natter_notifyd_events_total"].get<double>() >=
        60);
  // The 30 sends went out at once: between the daemons, what one turn
  // took in went on together, many requests or answers in a message.
  const auto& r = j["routed"]["metrics"];
  const double routed_batches = r["natter_routed_batches_total"].get<double>();
  CHECK(routed_batches > 0);
  CHECK(routed_batches < r["natter_routed_requests_total"].get<double>() +
                             r["natter_routed_answers_total"].get<double>());
  double batches_in = 0, batches_out = 0;
  for (const char* shard : {"stored-0", "stored-1"}) {
    batches_in += j[shard]["metrics"]["natter_stored_request_batches_total"]
                      .get<double>();
    batches_out +=
        j[shard]["metrics"]["natter_stored_answer_batches_total"].get<double>();
  }
  CHECK(batches_in > 0);
  CHECK(batches_in < stored);
  CHECK(batches_out > 0);
  CHECK(batches_out < stored);

  // The same as a table for people; a stopped daemon makes it exit 69.
  Output table = Ctl("status --dir " + cell.dir());
  CHECK(table.code == 0);
  CHECK(table.out.find("natter_stored_batch_seconds") != std::string::npos);
  ::kill(cell.DaemonPid("notifyd"), SIGSTOP);
  Output stuck = Ctl("status --json --dir " + cell.dir());
  ::kill(cell.DaemonPid("notifyd"), SIGCONT);
  CHECK(stuck.code == 69);
  CHECK(stuck.err.find("notifyd") != std::string::npos);
}

TEST_CASE(
    "a daemon's metrics endpoint answers GET /metrics in the Prometheus text "
    "format") {
  int port = FreeLoopbackPort();
  REQUIRE(port != 0);
  TestCell cell(1, "[routed]\nmetrics-listen = tcp://127.0.0.1:" +
                       std::to_string(port) + "\n");
  auto [alice, bob] = TwoUsers(1);
  auto a = Open(cell, alice, "a");
  auto b = Open(cell, bob, "b");
  Exchange(a.get(), b.get(), bob, 5);
  std::string r = HttpGet(port, "/metrics");
  INFO(r);
  CHECK(r.rfind("HTTP/1.0 200 OK\r\n", 0) == 0);
  CHECK(r.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
  CHECK(r.find("# TYPE natter_routed_requests_total counter\n") !=
        std::string::npos);
  CHECK(r.find("natter_routed_requests_total{daemon=\"routed\"} ") !=
        std::string::npos);
  CHECK(
      r.find(
          "natter_routed_turn_seconds{daemon=\"routed\",quantile=\"0.99\"} ") !=
      std::string::npos);
  CHECK(r.find("natter_routed_turn_seconds_count{daemon=\"routed\"} ") !=
        std::string::npos);
  // The body is as long as it says.
  size_t head = r.find("\r\n\r\n");
  size_t len_at = r.find("Content-Length: ");
  REQUIRE(head != std::string::npos);
  REQUIRE(len_at != std::string::npos);
  size_t len_end = r.find("\r\n", len_at);
  REQUIRE(len_end != std::string::npos);
  CHECK(ParseUint(std::string_view(r).substr(
            len_at + 16, len_end - len_at - 16)) == r.size() - head - 4);
  CHECK(HttpGet(port, "/nothing").rfind("HTTP/1.0 404", 0) == 0);
  // A peer that says nothing and one that sends garbage do not stop it.
  int idle = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(idle, reinterpret_cast<sockaddr*>(&addr), sizeof addr) ==
          0);
  std::string junk(20000, 'x');
  CHECK(::send(idle, junk.data(), junk.size(), MSG_NOSIGNAL) > 0);
  CHECK(HttpGet(port, "/metrics").rfind("HTTP/1.0 200 OK", 0) == 0);
  ::close(idle);
}

TEST_CASE(
    "natter send --trace: natterctl trace shows the message's path through "
    "every daemon") {
  TestCell cell(2);
  auto [alice, bob] = TwoUsers(2);
  auto b = Open(cell, bob, "phone");
  std::string out;
  REQUIRE(RunCommand(cell.NatterArgs(alice.value) + " --json send --trace " +
                         std::to_string(bob.value) + " traced hello",
                     &out) == 0);
  nlohmann::json sent = nlohmann::json::parse(out);
  REQUIRE(sent.contains("trace"));
  std::string id = sent["id"];
  std::string trace = sent["trace"];
  CHECK(trace.size() == 16);
  PollUntil(
      {b.get()}, "bob to get the traced message",
      [&] { return !b->Messages().empty(); }, 20);
  REQUIRE(b->Messages().size() == 1);

  Output path;
  // The last hops (the recipient's device, and notifyd's line for it,
  // written after it passed the event on) may still be on their way to
  // the log files.
  WaitUntil(
      "natterctl trace to show the event reaching bob",
      [&] {
        path = Ctl("trace --dir " + cell.dir() + " " + id);
        const std::string user = "user=" + std::to_string(bob.value);
        return path.out.find("event=event " + user) != std::string::npos &&
               path.out.find("event=fan-out " + user) != std::string::npos;
      },
      20, Pause(100), [&] { return "it shows: " + path.out + path.err; });
  INFO(path.out << path.err);
  REQUIRE(path.code == 0);
  // Every line is of this trace, in time order, from every daemon.
  std::istringstream lines(path.out);
  std::string line, previous;
  std::set<std::string> programs;
  while (std::getline(lines, line)) {
    CHECK(line.find("trace=" + trace) != std::string::npos);
    CHECK(previous <= line);
    previous = line;
    programs.insert(
        line.substr(line.find(' ') + 1, line.find('[') - line.find(' ') - 1));
  }
  CHECK(programs == std::set<std::string>{"natter-frontd", "natter-routed",
                                          "natter-stored", "natter-notifyd"});
  CHECK(path.out.find("event=request type=send") != std::string::npos);
  CHECK(path.out.find("event=stored id=" + id) != std::string::npos);
  CHECK(path.out.find("event=handoff kind=0 target=" +
                      std::to_string(bob.value)) !=
        std::string::npos);  // to Bob's shard
  CHECK(path.out.find("event=answer type=processed") != std::string::npos);
  // The same by trace id; and a message nobody traced is not there.
  CHECK(Ctl("trace --dir " + cell.dir() + " " + trace).out == path.out);
  Output none = Ctl("trace --dir " + cell.dir() + " 12345");
  CHECK(none.code == 66);
  CHECK(none.err.find("no trace of 12345") != std::string::npos);
  CHECK(Ctl("trace --dir " + cell.dir() + " not-an-id").code == 64);
}

TEST_CASE(
    "natterctl backup copies each shard while messages flow, and the copy "
    "restores") {
  TempDir scratch;
  std::string backup = scratch.path() + "/backup";
  auto [alice, bob] = TwoUsers(2);
  std::vector<MessageId> before;
  size_t acknowledged_during = 0;
  {
    TestCell cell(2);
    auto a = Open(cell, alice, "a");
    auto b = Open(cell, bob, "b");
    Exchange(a.get(), b.get(), bob, 40);
    for (const auto& in : a->got) {
      if (in.kind == Incoming::Kind::kProcessed)
        before.push_back(in.processed.id);
    }
    // More messages while the backup runs.
    std::atomic<bool> done{false};
    std::thread sender([&] {
      for (int i = 0; i < 200 && !done; ++i) {
        a->client->Send(bob, "during " + std::to_string(i));
        a->Poll(5);
      }
    });
    Output r = Ctl("backup --dir " + cell.dir() + " --to " + backup);
    done = true;
    sender.join();
    INFO(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("shard-0 " + backup + "/shard-0 ") != std::string::npos);
    CHECK(r.out.find("shard-1 " + backup + "/shard-1 ") != std::string::npos);
    acknowledged_during = a->Count(Incoming::Kind::kProcessed) - 40;
    // The folder is not overwritten, and --to is required.
    CHECK(Ctl("backup --dir " + cell.dir() + " --to " + backup).code == 73);
    CHECK(Ctl("backup --dir " + cell.dir()).code == 64);
  }
  // Restore, as natter(7) says: a cell whose data folder holds the copies.
  TestCell restored(2, "",
                    [&](const std::string& dir) {
                      for (int i = 0; i < 2; ++i) {
                        std::string shard = "/shard-" + std::to_string(i);
                        REQUIRE(RunCommand("rm -rf " + dir + "/data" + shard +
                                           " && cp -a " + backup + shard + " " +
                                           dir + "/data" + shard) == 0);
                      }
                    },
                    {});
  auto a = Open(restored, alice, "a");
  auto b = Open(restored, bob, "b");
  std::vector<MessageId> alice_sees = WholeHistory(a.get(), bob);
  std::vector<MessageId> bob_sees = WholeHistory(b.get(), alice);
  std::set<uint64_t> a_ids, b_ids;
  for (MessageId id : alice_sees) CHECK(a_ids.insert(id.value).second);
  for (MessageId id : bob_sees) CHECK(b_ids.insert(id.value).second);
  // Everything acknowledged before the backup began is in the copy; what
  // came during it is there as a whole message or not at all.
  for (MessageId id : before) {
    CHECK(a_ids.count(id.value) == 1);
    CHECK(b_ids.count(id.value) == 1);
  }
  CHECK(a_ids.size() >= 40);
  CHECK(a_ids.size() <= 40 + acknowledged_during + 200);
  // The restored cell takes new messages after the old ones.
  a->got.clear();
  b->got.clear();
  Exchange(a.get(), b.get(), bob, 3);
  CHECK(WholeHistory(a.get(), bob).size() == a_ids.size() + 3);
}

TEST_CASE(
    "frontd holds back resends of a request still on its way, and lets one "
    "through later") {
  TestCell cell(1);
  auto [alice, bob] = TwoUsers(1);
  // Resends every 150 ms, then 300 and 600: far more often than frontd's
  // hold (1 s while answers take milliseconds).
  auto a = Open(cell, alice, "a", [](ClientOptions* o) {
    o->retry_ms = 150;
    o->timeout_ms = 30000;
  });
  auto b = Open(cell, bob, "b");
  Exchange(a.get(), b.get(), bob, 1);
  pid_t shard = cell.DaemonPid("stored-0");
  ::kill(shard, SIGSTOP);  // the request waits at the shard: slow, not lost
  // Traced, so that frontd logs each copy of it that it passes on.
  a->client->set_trace(true);
  a->client->Send(bob, "held");
  const std::string log = cell.dir() + "/log/frontd.log";
  PollUntil(
      {a.get()}, "frontd to let a resend of the held request through",
      [&] { return CountOf(ReadFile(log), "event=request type=send") >= 2; },
      20);
  Output st = Ctl("status --json --dir " + cell.dir());
  ::kill(shard, SIGCONT);
  nlohmann::json j = nlohmann::json::parse(st.out);
  const auto& f = j["frontd"]["metrics"];
  INFO(st.out);
  // Several resends (every 150 ms, then 300 and 600) before one is let
  // through (frontd's hold is a second while answers take milliseconds).
  CHECK(f["natter_frontd_resends_held_total"].get<double>() >= 2);
  PollUntil(
      {a.get(), b.get()},
      "the held message processed and delivered once the shard runs again",
      [&] {
        return a->Count(Incoming::Kind::kProcessed) == 2 &&
               b->Messages().size() == 2;
      },
      20);
  CHECK(a->Count(Incoming::Kind::kProcessed) == 2);
  CHECK(a->Count(Incoming::Kind::kError) == 0);
  REQUIRE(b->Messages().size() == 2);
  CHECK(b->Messages()[1].text == "held");
}

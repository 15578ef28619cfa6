// What happens when things run out: the disk, descriptors.  Nothing
// acknowledged is lost, and the cell serves again once the resource is back.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "tests/integration/devices.h"

using namespace natter;

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t CountOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos;
       at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("a full disk stops acknowledgements, loses nothing, and recovers when space returns") {
  if (::geteuid() != 0) {
    WARN("not root: cannot mount a small tmpfs; the full-disk test did not run");
    return;
  }
  std::string mounted;
  // The shard's data folder is a 1 MiB tmpfs: LevelDB's log fills it after
  // a few hundred messages.
  TestCell cell(1, "",
                [&](const std::string& dir) {
                  std::string data = dir + "/data";
                  REQUIRE(RunCommand("mount -t tmpfs -o size=1m natter-test " + data) == 0);
                  mounted = data;
                },
                [&] {
                  if (!mounted.empty()) RunCommand("umount " + mounted);
                });
  auto [alice, bob] = TwoUsers(1);
  ClientOptions ao = cell.Options(alice.value, "a1");
  ao.timeout_ms = 120000;  // keep retrying through the outage
  Device a;
  a.client = std::make_unique<Client>(ao);
  REQUIRE(a.client->Connect().ok());
  auto b = Open(cell, bob, "b1");
  // A new device's mailbox starts where it first synced: wait for that.
  PollUntil({&a, b.get()}, [&] {
    return a.client->CaughtUp() && b->client->CaughtUp();
  }, 10);

  const int kMessages = 3000;
  const std::string text(400, 'x');
  std::map<std::string, int> sent;  // client_msg_id -> index
  for (int i = 0; i < kMessages; ++i) sent[a.client->Send(bob, text + std::to_string(i))] = i;

  // Until the disk is full: progress stops, the shard says why, and
  // nothing it could not write was acknowledged.
  std::string log_path = cell.dir() + "/log/stored-0.log";
  PollUntil({&a, b.get()}, [&] {
    return CountOf(ReadAll(log_path), "event=storage-down") > 0;
  }, 60);
  REQUIRE(CountOf(ReadAll(log_path), "event=storage-down") > 0);
  size_t processed_while_full = a.Count(Incoming::Kind::kProcessed);
  INFO("processed before the disk was full: " << processed_while_full);
  REQUIRE(processed_while_full < static_cast<size_t>(kMessages));
  for (int i = 0; i < 20; ++i) {
    a.Poll(100);
    b->Poll(1);
  }
  CHECK(a.Count(Incoming::Kind::kError) == 0);  // retryable: the client waits

  // Space returns: the shard opens its database again and everything is
  // written, once.
  REQUIRE(RunCommand("mount -o remount,size=64m " + mounted) == 0);
  PollUntil({&a, b.get()}, [&] {
    return a.Count(Incoming::Kind::kProcessed) >= static_cast<size_t>(kMessages) &&
           b->Messages().size() >= static_cast<size_t>(kMessages);
  }, 90);
  CHECK(a.Count(Incoming::Kind::kError) == 0);
  REQUIRE(a.Count(Incoming::Kind::kProcessed) == static_cast<size_t>(kMessages));
  CHECK(CountOf(ReadAll(log_path), "event=storage-up") > 0);

  std::set<uint64_t> ids;
  for (const auto& in : a.got) {
    if (in.kind != Incoming::Kind::kProcessed) continue;
    REQUIRE(sent.count(in.processed.client_msg_id));
    REQUIRE(ids.insert(in.processed.id.value).second);  // one id per message
  }
  SeqsOnce(*b);
  std::set<uint64_t> received;
  for (const Event& e : b->Messages()) REQUIRE(received.insert(e.id.value).second);
  CHECK(received == ids);
  for (Device* d : {&a, b.get()}) {
    std::vector<MessageId> history = WholeHistory(d, d == &a ? bob : alice);
    std::set<uint64_t> in_history;
    for (MessageId id : history) REQUIRE(in_history.insert(id.value).second);
    CHECK(in_history == ids);
  }
}

// Pages of long messages (issue 14): a sync, history or chats page ends
// within its byte budget and says `more`, so no reply is ever refused by a
// socket between the shard and the client — and a link that was cut all
// the same comes back by itself.  Each attack of the issue used to cut the
// shard off for every user until routed was restarted.
#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemons/routed/routed.h"
#include "tests/integration/devices.h"

using namespace natter;

namespace {

// A text of the longest kind, different for each i.
std::string LongText(const std::string& prefix, int i) {
  std::string text = prefix + std::to_string(i) + " ";
  text.resize(kMaxTextBytes, 'x');
  return text;
}

// Sends a long message to each of to, in order, and waits until all are
// processed; returns their ids in that order.
std::vector<MessageId> SendLong(Device* from, const std::vector<UserId>& to,
                                const std::string& prefix) {
  std::vector<std::string> cmids;
  for (size_t i = 0; i < to.size(); ++i) {
    cmids.push_back(
        from->client->Send(to[i], LongText(prefix, static_cast<int>(i))));
  }
  std::map<std::string, MessageId> processed;
  PollUntil(
      {from}, "every long message to be processed",
      [&] {
        for (const auto& in : from->got) {
          if (in.kind == Incoming::Kind::kProcessed) {
            processed[in.processed.client_msg_id] = in.processed.id;
          }
        }
        return processed.size() >= cmids.size();
      },
      120);
  REQUIRE(processed.size() == cmids.size());
  std::vector<MessageId> ids;
  for (const auto& c : cmids) ids.push_back(processed[c]);
  return ids;
}

std::vector<UserId> Times(UserId user, int n) {
  return std::vector<UserId>(n, user);
}

// Another user of the (one) shard still gets a message processed.
void CheckServed(const TestCell& cell, UserId user) {
  auto d = Open(cell, user, "bystander");
  d->client->Send(UserId(1), "still served");
  PollUntil(
      {d.get()}, "the bystander's send to be processed",
      [&] { return d->Count(Incoming::Kind::kProcessed) == 1; }, 20);
  CHECK(d->Count(Incoming::Kind::kProcessed) == 1);
  CHECK(d->Count(Incoming::Kind::kError) == 0);
}

}  // namespace

TEST_CASE(
    "64 notes-to-self of 4 KB come back page by page, and the shard serves "
    "on") {
  TestCell cell(1);
  UserId self(11);
  auto me = Open(cell, self, "phone");
  AwaitCaughtUp({me.get()});
  SendLong(me.get(), Times(self, 64), "note");
  std::vector<Event> all;
  Seq after;
  int pages = 0;
  for (;;) {
    Incoming in =
        AwaitAnswer(me.get(), me->client->GetMailbox(after, kMaxSyncPage));
    REQUIRE(in.kind == Incoming::Kind::kMailbox);
    REQUIRE_FALSE(in.mailbox.events.empty());
    ++pages;
    all.insert(all.end(), in.mailbox.events.begin(), in.mailbox.events.end());
    if (!in.mailbox.more) break;
    after = in.mailbox.events.back().seq;
  }
  REQUIRE(all.size() == 64);
  for (size_t i = 0; i < all.size(); ++i) CHECK(all[i].seq == Seq(i + 1));
  CHECK(pages >= 2);
  CheckServed(cell, UserId(12));
}

TEST_CASE(
    "70 conversations of long messages list page by page, and the shard serves "
    "on") {
  TestCell cell(1);
  UserId self(21);
  auto me = Open(cell, self, "phone");
  // Made-up users, written to in an order unlike their ids'.
  std::vector<UserId> peers;
  for (uint64_t i = 0; i < 70; ++i)
    peers.push_back(UserId(5000 + (i * 37) % 70));
  SendLong(me.get(), peers, "hello");
  std::vector<UserId> newest_first(peers.rbegin(), peers.rend());

  std::vector<UserId> got;
  int pages = 0;
  Chats query;
  for (;;) {
    Incoming in = AwaitAnswer(me.get(), me->client->GetChats(query));
    REQUIRE(in.kind == Incoming::Kind::kChats);
    REQUIRE_FALSE(in.chats.chats.empty());
    ++pages;
    for (const ChatItem& c : in.chats.chats) got.push_back(c.peer);
    if (!in.chats.more) break;
    query = NextChatsPage(in.chats);
  }
  CHECK(got == newest_first);
  CHECK(pages >= 2);

  // natter chats shows every page.
  std::string out;
  int code = RunCommand(cell.NatterArgs(self.value) + " --json chats", &out);
  REQUIRE(code == 0);
  std::vector<UserId> listed;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    listed.push_back(
        UserId(nlohmann::json::parse(line).at("peer").get<uint64_t>()));
  }
  CHECK(listed == newest_first);
  CheckServed(cell, UserId(22));
}

TEST_CASE(
    "a device that missed 64 long messages catches up on all of them, and the "
    "shard serves on") {
  TestCell cell(1);
  UserId victim(31), sender(32);
  {
    // The device's first connection: its mailbox begins here.
    auto v = Open(cell, victim, "phone");
    AwaitCaughtUp({v.get()});
    REQUIRE(v->client->Flush().ok());
  }
  auto s = Open(cell, sender, "phone");
  std::vector<MessageId> ids = SendLong(s.get(), Times(victim, 64), "long");
  WaitForMailbox(cell, victim, 64);
  auto v = Open(cell, victim, "phone");
  PollUntil(
      {v.get()}, "the device to catch up on the 64 long messages",
      [&] { return v->client->CaughtUp() && v->Messages().size() >= 64; }, 30);
  auto got = v->Messages();
  REQUIRE(got.size() == 64);
  size_t missed = 0;
  for (const auto& in : v->got)
    missed += in.kind == Incoming::Kind::kEvent && in.missed;
  CHECK(missed == 64);
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i].id == ids[i]);
  CheckServed(cell, UserId(33));
}

TEST_CASE("a history of 500 long messages reads page by page, both ways") {
  TestCell cell(1, kNoUserRate);
  UserId alice(41), bob(42);
  auto a = Open(cell, alice, "phone");
  std::vector<MessageId> ids = SendLong(a.get(), Times(bob, 500), "h");
  auto reader =
      Open(cell, bob, "reader", [](ClientOptions* o) { o->receive = false; });
  // Forward, asking for 500 a page.
  CHECK(WholeHistory(reader.get(), alice) == ids);
  // Back from the newest, as natter chat's /more goes.
  std::vector<MessageId> back;
  int pages = 0;
  History q;
  q.peer = alice;
  q.limit = kMaxHistoryPage;
  for (;;) {
    Incoming in = AwaitAnswer(reader.get(), reader->client->GetHistory(q));
    REQUIRE(in.kind == Incoming::Kind::kHistory);
    REQUIRE_FALSE(in.history.messages.empty());
    ++pages;
    std::vector<MessageId> page;
    for (const auto& item : in.history.messages)
      page.push_back(item.message.id);
    back.insert(back.begin(), page.begin(), page.end());
    if (!in.history.more) break;
    q.mode = HistoryMode::kBefore;
    q.bound = page.front().value;
  }
  CHECK(back == ids);
  CHECK(pages >= 10);  // 2 MB of text
  CheckServed(cell, UserId(43));
}

TEST_CASE(
    "routed connects again to a shard whose link ended for a protocol error") {
  TempDir dir;
  zmq::context_t ctx(1);
  std::string shard_endpoint = "ipc://" + dir.path() + "/shard-0.sock";
  // The test stands in for the shard ...
  zmq::socket_t shard(ctx, zmq::socket_type::router);
  shard.set(zmq::sockopt::linger, 0);
  shard.bind(shard_endpoint);
  Config config = Config::FromMap(
      "routed", {{"shards", shard_endpoint},
                 {"routed", "ipc://" + dir.path() + "/routed.sock"},
                 {"id-lease", ""}});
  std::unique_ptr<routed::Routed> routed;
  REQUIRE(routed::Routed::Create(config, ctx, &routed).ok());
  REQUIRE(routed->Start().ok());
  // routed's loop in a thread of its own, stopped at the end (or when a
  // wait below fails the test).
  struct Loop {
    std::atomic<bool> stop{false};
    std::thread thread;
    void Stop() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
    ~Loop() { Stop(); }
  } loop;
  loop.thread = std::thread([&] {
    while (!loop.stop) routed->RunOnce(20);
  });
  // ... and for a frontd.
  zmq::socket_t front(ctx, zmq::socket_type::dealer);
  front.set(zmq::sockopt::linger, 0);
  front.connect("ipc://" + dir.path() + "/routed.sock");
  uint64_t corr = 0;
  auto ask = [&] {
    Header h;
    h.type = static_cast<uint8_t>(MsgType::kChats);
    h.corr = ++corr;
    h.user = UserId(5);
    Parts out;
    out.push_back(ToMessage(EncodeFrame(h, Chats())));
    SendParts(front, out);
  };
  // Waits up to ms for something to read on s.
  auto readable = [](zmq::socket_t& s, int ms) {
    zmq::pollitem_t item = {s.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(ms));
  };
  // Asks until a request reaches the shard; the shard answers it with
  // answer(request's header).
  auto serve = [&](const std::string& what, int seconds,
                   const std::function<std::string(const Header&)>& answer) {
    WaitUntil(
        what,
        [&] {
          Parts got;
          if (!RecvParts(shard, &got)) return false;
          REQUIRE(got.size() == 3);  // routed's identity, frontd's, the frame
          Frame f;
          REQUIRE(DecodeFrame(got.back().data(), got.back().size(), &f).ok());
          SendRouted(shard, got, 2, answer(f.header));
          return true;
        },
        seconds,
        [&] {
          ask();
          readable(shard, 50);
        });
  };

  // A reply over routed's frame limit: a protocol error on routed's link,
  // after which ZeroMQ never connects that link again.
  serve("a request to reach the shard", 10, [](const Header&) {
    return std::string(kMaxDaemonFrameBytes + 1, 'x');
  });
  // routed finds out and connects again; the shard then serves.
  serve("a request to reach the shard again, routed having connected again", 20,
        [](const Header& h) { return EncodeReply(h, ChatsReply()); });
  bool answered = false;
  WaitUntil(
      "the shard's reply to come through routed",
      [&] {
        Parts reply;
        while (RecvParts(front, &reply)) {
          Frame f;
          answered =
              answered ||
              (DecodeFrame(reply.back().data(), reply.back().size(), &f).ok() &&
               f.type() == MsgType::kChatsReply);
        }
        return answered;
      },
      10, [&] { readable(front, 20); });
  loop.Stop();
  MetricSet metrics;
  routed->Stats(&metrics);
  double relinks = -1;
  for (const Metric& m : metrics.metrics()) {
    if (m.name == "natter_routed_relinks_total") relinks = m.value;
  }
  CHECK(relinks >= 1);
}

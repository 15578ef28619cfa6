// Everything after sending: missed events of every kind, gap repair,
// history, reactions, delivered and seen, chats — each with one shard and
// with three, through real daemons.
#include <signal.h>

#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <thread>

#include "common/shard.h"
#include "tests/integration/devices.h"
#include "tests/integration/test_cell.h"

using namespace natter;

namespace {

// Sends n messages and waits until each is processed and has reached every
// device of `others`; returns their ids.
std::vector<MessageId> SendAll(Device* from, std::vector<Device*> others,
                               UserId to, int n, const std::string& prefix) {
  // The others' mailboxes must have begun before the sends, or the
  // messages are rightly not theirs (and the wait below would run out).
  AwaitCaughtUp(others);
  std::vector<std::string> cmids;
  for (int i = 0; i < n; ++i)
    cmids.push_back(from->client->Send(to, prefix + std::to_string(i)));
  std::vector<Device*> all = others;
  all.push_back(from);
  PollUntil(
      all, "every send processed and on every other device",
      [&] {
        size_t done = 0;
        for (const auto& in : from->got) {
          for (const auto& c : cmids) {
            if (in.kind == Incoming::Kind::kProcessed &&
                in.processed.client_msg_id == c)
              ++done;
          }
        }
        if (done != cmids.size()) return false;
        // And every other device has them (a recipient's copy comes through
        // a hand-off, after the sender's receipt).
        for (Device* d : others) {
          size_t has = 0;
          for (const auto& e : d->Messages()) {
            for (const auto& c : cmids) has += e.client_msg_id == c;
          }
          if (has < cmids.size()) return false;
        }
        return true;
      },
      30);
  std::vector<MessageId> ids;
  for (const auto& c : cmids) {
    for (const auto& in : from->got) {
      if (in.kind == Incoming::Kind::kProcessed &&
          in.processed.client_msg_id == c) {
        ids.push_back(in.processed.id);
        break;
      }
    }
  }
  REQUIRE(ids.size() == cmids.size());
  return ids;
}

HistoryReply GetHistory(Device* d, UserId peer, HistoryMode mode,
                        uint64_t bound, uint32_t limit) {
  History q;
  q.peer = peer;
  q.mode = mode;
  q.bound = bound;
  q.limit = limit;
  Incoming a = AwaitAnswer(d, d->client->GetHistory(q));
  REQUIRE(a.kind == Incoming::Kind::kHistory);
  return a.history;
}

// Each event once, seqs without a gap from the first one seen.
void CheckExactlyOnce(const Device& d) {
  std::set<uint64_t> seqs = SeqsOnce(d);
  if (seqs.empty()) return;
  CHECK(*seqs.rbegin() - *seqs.begin() + 1 == seqs.size());
}

size_t CountKind(const Device& d, EventKind kind, bool missed) {
  size_t n = 0;
  for (const auto& in : d.got) {
    n += in.kind == Incoming::Kind::kEvent && in.event.kind() == kind &&
         in.missed == missed;
  }
  return n;
}

}  // namespace

TEST_CASE(
    "a device that comes back gets every kind of event it missed, in order") {
  unsigned shards = GENERATE(1u, 3u);
  TestCell cell(shards);
  auto [alice, bob] = TwoUsers(shards);
  {  // The tablets connect once, so they have cursors to come back to.
    auto at = Open(cell, alice, "tablet");
    auto bt = Open(cell, bob, "tablet");
    PollUntil(
        {at.get(), bt.get()}, "both tablets to catch up",
        [&] { return at->client->CaughtUp() && bt->client->CaughtUp(); }, 20);
  }
  auto ap = Open(cell, alice, "phone");
  auto bp = Open(cell, bob, "phone");
  PollUntil(
      {ap.get(), bp.get()}, "bob's phone to catch up",
      [&] { return bp->client->CaughtUp(); }, 20);
  auto ids = SendAll(ap.get(), {bp.get()}, bob, 3, "m");
  PollUntil(
      {ap.get(), bp.get()}, "bob's phone to get the three messages",
      [&] { return bp->Messages().size() == 3; }, 20);
  AwaitAnswer(bp.get(), bp->client->React(alice, ids[1], std::string("👍")));
  AwaitAnswer(bp.get(), bp->client->MarkSeen(alice, ids[2]));
  SendAll(bp.get(), {ap.get()}, alice, 1, "reply");
  PollUntil(
      {ap.get(), bp.get()},
      "alice's phone to get bob's reply, reaction and seen, and delivered",
      [&] {
        return ap->Receipts(EventKind::kSeen).size() == 1 &&
               ap->Reactions().size() == 1 &&
               !ap->Receipts(EventKind::kDelivered).empty() &&
               ap->Messages().size() == 1;
      },
      20);
  REQUIRE(ap->Receipts(EventKind::kSeen).size() == 1);
  REQUIRE(bp->client->Flush().ok());
  REQUIRE(ap->client->Flush().ok());

  // Bob's tablet: the messages received, its user's reaction and seen, the
  // message its user sent from the phone — all missed, in seq order.
  auto bt = Open(cell, bob, "tablet");
  PollUntil(
      {bt.get()}, "bob's tablet to catch up on the four messages it missed",
      [&] { return bt->client->CaughtUp() && bt->Messages().size() == 4; }, 20);
  CHECK(CountKind(*bt, EventKind::kMessage, true) == 4);
  CHECK(CountKind(*bt, EventKind::kReaction, true) == 1);
  CHECK(CountKind(*bt, EventKind::kSeen, true) == 1);
  CheckExactlyOnce(*bt);
  // Alice's tablet: her own messages sent from the phone, bob's reply, and
  // delivered, reaction and seen.
  auto at = Open(cell, alice, "tablet");
  PollUntil(
      {at.get()}, "alice's tablet to catch up on the four messages it missed",
      [&] { return at->client->CaughtUp() && at->Messages().size() == 4; }, 20);
  CHECK(CountKind(*at, EventKind::kMessage, true) == 4);
  CHECK(CountKind(*at, EventKind::kReaction, true) == 1);
  CHECK(CountKind(*at, EventKind::kSeen, true) == 1);
  CHECK(CountKind(*at, EventKind::kDelivered, true) >= 1);
  CheckExactlyOnce(*at);
  uint64_t last = 0;
  for (const auto& in : at->got) {
    REQUIRE(in.event.seq.value > last);
    last = in.event.seq.value;
  }
  // Then live events, not marked.
  SendAll(ap.get(), {bt.get(), at.get()}, bob, 1, "live");
  PollUntil(
      {bt.get(), ap.get()}, "bob's tablet to get the live message",
      [&] { return bt->Messages().size() == 5; }, 20);
  CHECK(CountKind(*bt, EventKind::kMessage, false) == 1);
}

TEST_CASE(
    "a catch-up while new messages keep arriving loses none and repeats none") {
  TestCell cell(3, kNoUserRate);  // 1500 messages from one user at once
  auto [alice, bob] = TwoUsers(3);
  {
    auto bt = Open(cell, bob, "tablet");
    PollUntil(
        {bt.get()}, "bob's tablet to catch up",
        [&] { return bt->client->CaughtUp(); }, 20);
  }
  auto ap = Open(cell, alice, "phone");
  const int kMissed = 1200, kLive = 300;
  SendAll(ap.get(), {}, bob, kMissed, "old ");
  // "Missed" means: in his mailbox before his device came back.
  WaitForMailbox(cell, bob, kMissed);
  auto bt = Open(cell, bob, "tablet");
  for (int i = 0; i < kLive; ++i)
    ap->client->Send(bob, "new " + std::to_string(i));
  PollUntil(
      {ap.get(), bt.get()},
      "bob's tablet to get every missed and every live message",
      [&] {
        return bt->Messages().size() >= static_cast<size_t>(kMissed + kLive);
      },
      60);
  // A moment more, so that a duplicate, if any, would arrive and be seen.
  PollFor({ap.get(), bt.get()}, 1);
  auto got = bt->Messages();
  REQUIRE(got.size() == static_cast<size_t>(kMissed + kLive));
  CheckExactlyOnce(*bt);
  for (size_t i = 0; i < got.size(); ++i) {
    std::string want = i < kMissed ? "old " + std::to_string(i)
                                   : "new " + std::to_string(i - kMissed);
    REQUIRE(got[i].text == want);
  }
  for (const auto& in : bt->got) {
    const Message* m =
        in.kind == Incoming::Kind::kEvent ? in.event.message() : nullptr;
    if (m != nullptr && m->text.rfind("old ", 0) == 0) REQUIRE(in.missed);
  }
}

namespace {

// Two users, two devices each, both ways; every device must end with every
// event once, whatever the live path dropped.
void ExchangeWithLosses(TestCell& cell, unsigned shards, int messages,
                        const std::function<void(int)>& during) {
  auto [alice, bob] = TwoUsers(shards);
  TwoByTwo devices = OpenTwoByTwo(cell, alice, bob, "a1", "a2", "b1", "b2");
  Device *a1 = devices.a1.get(), *a2 = devices.a2.get();
  Device *b1 = devices.b1.get(), *b2 = devices.b2.get();
  std::vector<Device*> all = devices.all();
  for (int i = 0; i < messages; ++i) {
    a1->client->Send(bob, "a" + std::to_string(i));
    b1->client->Send(alice, "b" + std::to_string(i));
    if (i % 20 == 0) {
      for (Device* d : all) d->Poll(1);
      during(i);
    }
  }
  size_t n = static_cast<size_t>(messages);
  PollUntil(
      all, "every device to have every message",
      [&] {
        return a1->Messages().size() == n && b1->Messages().size() == n &&
               a2->Messages().size() == 2 * n && b2->Messages().size() == 2 * n;
      },
      60);
  // A moment more, so that a duplicate, if any, would arrive and be seen.
  PollFor(all, 1);
  CHECK(a1->Count(Incoming::Kind::kProcessed) == n);
  CHECK(b1->Count(Incoming::Kind::kProcessed) == n);
  CHECK(a1->Messages().size() == n);
  CHECK(b1->Messages().size() == n);
  CHECK(a2->Messages().size() == 2 * n);
  CHECK(b2->Messages().size() == 2 * n);
  for (Device* d : all) CheckExactlyOnce(*d);
}

}  // namespace

TEST_CASE("devices repair the gaps when notifyd drops every third event") {
  unsigned shards = GENERATE(1u, 3u);
  TestCell cell(shards, "[notifyd]\ndrop-every = 3");
  ExchangeWithLosses(cell, shards, 200, [](int) {});
}

TEST_CASE("restarting notifyd under traffic loses nothing") {
  TestCell cell(3);
  bool killed = false;
  ExchangeWithLosses(cell, 3, 300, [&](int i) {
    if (!killed && i >= 100) {
      pid_t pid = cell.DaemonPid("notifyd");
      REQUIRE(pid > 0);
      ::kill(pid, SIGKILL);
      killed = true;
    }
  });
  CHECK(killed);
}

TEST_CASE(
    "history pages cover the conversation exactly once, both ways, from any "
    "time") {
  unsigned shards = GENERATE(1u, 3u);
  TestCell cell(shards);
  auto [alice, bob] = TwoUsers(shards);
  auto a = Open(cell, alice, "phone");
  auto b = Open(cell, bob, "phone");
  std::vector<MessageId> ids;
  for (int round = 0; round < 4; ++round) {
    auto part =
        SendAll(a.get(), {b.get()}, bob, 10, "a" + std::to_string(round) + "-");
    ids.insert(ids.end(), part.begin(), part.end());
    part = SendAll(b.get(), {a.get()}, alice, 5,
                   "b" + std::to_string(round) + "-");
    ids.insert(ids.end(), part.begin(), part.end());
    // Rounds some milliseconds apart, so that the messages' times differ
    // and a page `at` a time has messages on both sides of it.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(ids.size() == 60);
  std::vector<MessageId> sorted = ids;
  std::sort(sorted.begin(), sorted.end());

  for (Device* d : {a.get(), b.get()}) {
    UserId peer = d == a.get() ? bob : alice;
    // Backwards from the latest page.
    std::vector<MessageId> back;
    HistoryReply page = GetHistory(d, peer, HistoryMode::kLatest, 0, 7);
    for (int guard = 0; guard < 20; ++guard) {
      REQUIRE(!page.messages.empty());
      for (size_t i = 1; i < page.messages.size(); ++i) {
        REQUIRE(page.messages[i - 1].message.id < page.messages[i].message.id);
      }
      std::vector<MessageId> older;
      for (const auto& m : page.messages) older.push_back(m.message.id);
      back.insert(back.begin(), older.begin(), older.end());
      if (!page.more) break;
      page = GetHistory(d, peer, HistoryMode::kBefore,
                        page.messages.front().message.id.value, 7);
    }
    CHECK(back == sorted);
    // Forwards from the start.
    std::vector<MessageId> fwd;
    page = GetHistory(d, peer, HistoryMode::kAfter, 0, 7);
    for (int guard = 0; guard < 20; ++guard) {
      for (const auto& m : page.messages) fwd.push_back(m.message.id);
      if (!page.more) break;
      page = GetHistory(d, peer, HistoryMode::kAfter, fwd.back().value, 7);
    }
    CHECK(fwd == sorted);
  }
  // At a time: the page ends with the last message at or before it.
  HistoryReply all = GetHistory(a.get(), bob, HistoryMode::kLatest, 0, 500);
  REQUIRE(all.messages.size() == 60);
  uint64_t t = all.messages[29].message.ts;
  HistoryReply at = GetHistory(a.get(), bob, HistoryMode::kAt, t, 10);
  REQUIRE(at.messages.size() == 10);
  CHECK(at.messages.back().message.ts <= t);
  size_t last_index = 0;
  for (size_t i = 0; i < all.messages.size(); ++i) {
    if (all.messages[i].message.ts <= t) last_index = i;
  }
  CHECK(at.messages.back().message.id == all.messages[last_index].message.id);
  CHECK(at.more);
  // The limit is clamped to 500 and defaults to 50.
  CHECK(GetHistory(a.get(), bob, HistoryMode::kLatest, 0, 0).messages.size() ==
        50);
}

TEST_CASE(
    "reactions: one per user, replaced, removed, seen by both users, in "
    "history") {
  unsigned shards = GENERATE(1u, 3u);
  TestCell cell(shards);
  auto [alice, bob] = TwoUsers(shards);
  auto a = Open(cell, alice, "phone");
  auto b1 = Open(cell, bob, "phone");
  auto b2 = Open(cell, bob, "laptop");
  std::vector<Device*> all = {a.get(), b1.get(), b2.get()};
  PollUntil(
      all, "both of bob's devices to catch up",
      [&] { return b2->client->CaughtUp() && b1->client->CaughtUp(); }, 20);
  MessageId id =
      SendAll(a.get(), {b1.get(), b2.get()}, bob, 1, "react to me")[0];

  auto reactions_of = [&](Device* d, UserId peer) {
    std::map<uint64_t, std::string> out;
    HistoryReply h = GetHistory(d, peer, HistoryMode::kLatest, 0, 10);
    REQUIRE(h.messages.size() == 1);
    for (const auto& r : h.messages[0].reactions) out[r.user.value] = r.emoji;
    return out;
  };
  REQUIRE(AwaitAnswer(b1.get(), b1->client->React(alice, id, std::string("👍")))
              .kind == Incoming::Kind::kOk);
  PollUntil(
      all, "alice and bob's laptop to hear of bob's reaction",
      [&] { return a->Reactions().size() == 1 && b2->Reactions().size() == 1; },
      20);
  REQUIRE(a->Reactions().size() == 1);
  CHECK(a->Reactions()[0].emoji == std::optional<std::string>("👍"));
  CHECK(a->Reactions()[0].by == bob);
  CHECK(b2->Reactions().size() == 1);
  CHECK(b1->Reactions().empty());  // the device that did it

  // Replaced: still one reaction of bob's.
  AwaitAnswer(b1.get(), b1->client->React(alice, id, std::string("❤️")));
  AwaitAnswer(a.get(), a->client->React(bob, id, std::string("😂")));
  PollUntil(
      all, "alice to hear of bob's new reaction",
      [&] { return a->Reactions().size() == 2; }, 20);
  std::map<uint64_t, std::string> want = {{bob.value, "❤️"},
                                          {alice.value, "😂"}};
  PollUntil(
      all, "bob's history to show both reactions",
      [&] { return reactions_of(b1.get(), alice) == want; }, 20);
  CHECK(reactions_of(a.get(), bob) == want);
  CHECK(reactions_of(b1.get(), alice) == want);
  // Removed.
  AwaitAnswer(b1.get(), b1->client->React(alice, id, std::nullopt));
  PollUntil(
      all, "alice to hear that bob took his reaction back",
      [&] { return a->Reactions().size() == 3; }, 20);
  REQUIRE(a->Reactions().size() == 3);
  CHECK_FALSE(a->Reactions()[2].emoji.has_value());
  want = {{alice.value, "😂"}};
  PollUntil(
      all, "bob's history to show alice's reaction alone",
      [&] { return reactions_of(b1.get(), alice) == want; }, 20);
  CHECK(reactions_of(a.get(), bob) == want);
  CHECK(reactions_of(b1.get(), alice) == want);
  // Setting what is there already changes nothing and tells nobody: time
  // for an event to come, were one sent.
  const size_t before_a = a->Reactions().size();
  const size_t before_b1 = b1->Reactions().size();
  const size_t before_b2 = b2->Reactions().size();
  AwaitAnswer(a.get(), a->client->React(bob, id, std::string("😂")));
  PollFor(all, 1);
  CHECK(a->Reactions().size() == before_a);
  CHECK(b1->Reactions().size() == before_b1);
  CHECK(b2->Reactions().size() == before_b2);

  // Only on a message of one's own conversation, and only with an emoji.
  auto carol = Open(cell, UserId(999), "phone");
  Incoming refused = AwaitAnswer(
      carol.get(), carol->client->React(alice, id, std::string("👎")));
  CHECK(refused.kind == Incoming::Kind::kError);
  CHECK(refused.error.code() == ErrorCode::kNotFound);
  Incoming bad =
      AwaitAnswer(a.get(), a->client->React(bob, id, std::string(65, 'x')));
  CHECK(bad.error.code() == ErrorCode::kBadData);
}

TEST_CASE(
    "delivered when a device of the recipient acknowledges, seen when marked, "
    "in history and chats") {
  unsigned shards = GENERATE(1u, 3u);
  TestCell cell(shards);
  auto [alice, bob] = TwoUsers(shards);
  auto a1 = Open(cell, alice, "phone");
  auto a2 = Open(cell, alice, "laptop");
  auto ids = SendAll(a1.get(), {a2.get()}, bob, 5, "m");
  // Nobody of bob's has them yet.
  HistoryReply h = GetHistory(a1.get(), bob, HistoryMode::kLatest, 0, 10);
  for (const auto& m : h.messages) CHECK_FALSE(m.delivered);
  CHECK(a1->Receipts(EventKind::kDelivered).empty());

  // Bob's phone connects after them: a first connection starts at the head,
  // so it is the second device, which has a cursor, that takes them.
  {
    auto b = Open(cell, bob, "phone");
    PollUntil(
        {b.get()}, "bob's phone to catch up",
        [&] { return b->client->CaughtUp(); }, 20);
  }
  auto b = Open(cell, bob, "tablet-first");  // head: sees none of the five
  PollUntil(
      {b.get()}, "bob's tablet to catch up",
      [&] { return b->client->CaughtUp(); }, 20);
  auto more = SendAll(a1.get(), {a2.get(), b.get()}, bob, 3, "n");
  PollUntil(
      {a1.get(), a2.get(), b.get()},
      "bob's tablet to get the three newer messages",
      [&] { return b->Messages().size() == 3; }, 20);
  REQUIRE(b->client->Flush().ok());
  // The device acknowledges as it goes, so delivered may come in steps;
  // the last step covers the last message.
  PollUntil(
      {a1.get(), a2.get()},
      "both of alice's devices to hear that the last message was delivered",
      [&] {
        for (Device* d : {a1.get(), a2.get()}) {
          auto marks = d->Receipts(EventKind::kDelivered);
          if (marks.empty() || marks.back().id != more.back()) return false;
        }
        return true;
      },
      20);
  REQUIRE(!a1->Receipts(EventKind::kDelivered).empty());
  CHECK(a1->Receipts(EventKind::kDelivered).back().id == more.back());
  CHECK(a1->Receipts(EventKind::kDelivered).back().by == bob);
  CHECK(a2->Receipts(EventKind::kDelivered).back().id == more.back());
  h = GetHistory(a1.get(), bob, HistoryMode::kLatest, 0, 10);
  REQUIRE(h.messages.size() == 8);
  for (const auto& m : h.messages) CHECK(m.delivered);

  // Seen up to the second of the newer three covers every earlier one.
  AwaitAnswer(b.get(), b->client->MarkSeen(alice, more[1]));
  PollUntil(
      {a1.get(), a2.get()}, "alice's laptop to hear that bob saw",
      [&] { return a2->Receipts(EventKind::kSeen).size() == 1; }, 20);
  REQUIRE(a2->Receipts(EventKind::kSeen).size() == 1);
  CHECK(a2->Receipts(EventKind::kSeen)[0].id == more[1]);
  h = GetHistory(a1.get(), bob, HistoryMode::kLatest, 0, 10);
  for (size_t i = 0; i < h.messages.size(); ++i)
    CHECK(h.messages[i].seen == (i < 7));
  // Marking one's own message seen is refused.
  Incoming own = AwaitAnswer(a1.get(), a1->client->MarkSeen(bob, more[2]));
  CHECK(own.kind == Incoming::Kind::kError);

  // Chats: alice sees the marks, bob one unread.
  Incoming ac = AwaitAnswer(a1.get(), a1->client->GetChats());
  REQUIRE(ac.chats.chats.size() == 1);
  CHECK(ac.chats.chats[0].peer == bob);
  CHECK(ac.chats.chats[0].last_id == more.back());
  CHECK(ac.chats.chats[0].last_text == "n2");
  CHECK(ac.chats.chats[0].delivered == more.back());
  CHECK(ac.chats.chats[0].seen == more[1]);
  CHECK(ac.chats.chats[0].unread == 0);
  Incoming bc = AwaitAnswer(b.get(), b->client->GetChats());
  REQUIRE(bc.chats.chats.size() == 1);
  CHECK(bc.chats.chats[0].unread == 1);
  CHECK(bc.chats.chats[0].last_from == alice);
  (void)ids;
}

TEST_CASE(
    "chats lists each conversation, the most recent first, with unread "
    "counts") {
  unsigned shards = GENERATE(1u, 3u);
  TestCell cell(shards);
  auto me = Open(cell, UserId(1), "phone");
  auto p2 = Open(cell, UserId(2), "phone");
  auto p3 = Open(cell, UserId(3), "phone");
  SendAll(p2.get(), {me.get()}, UserId(1), 4, "from 2: ");
  SendAll(me.get(), {p3.get()}, UserId(3), 1, "to 3");
  SendAll(p3.get(), {me.get()}, UserId(1), 2, "from 3: ");
  Incoming c = AwaitAnswer(me.get(), me->client->GetChats());
  REQUIRE(c.chats.chats.size() == 2);
  CHECK(c.chats.chats[0].peer == UserId(3));
  CHECK(c.chats.chats[0].last_text == "from 3: 1");
  CHECK(c.chats.chats[0].unread == 2);
  CHECK(c.chats.chats[1].peer == UserId(2));
  CHECK(c.chats.chats[1].unread == 4);
  HistoryReply h = GetHistory(me.get(), UserId(2), HistoryMode::kLatest, 0, 10);
  AwaitAnswer(me.get(),
              me->client->MarkSeen(UserId(2), h.messages[1].message.id));
  c = AwaitAnswer(me.get(), me->client->GetChats());
  CHECK(c.chats.chats[1].unread == 2);
}

// The order in which a device hands out its mailbox, driven by hand: events
// and pages made here, time a number of milliseconds.
#include "client/mailbox_order.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace natter;

namespace {

using Kind = MailboxOrder::Next::Kind;

MailboxOrder::Time At(int ms) {
  return MailboxOrder::Time(std::chrono::milliseconds(ms));
}

const UserId kMe(1), kPeer(2);

// A message in my mailbox: from the peer, or (origin_device given) sent by
// one of my devices.
Event Msg(uint64_t seq, const std::string& origin_device = "") {
  Message m;
  m.id = MessageId(1000 + seq);
  m.from = origin_device.empty() ? kPeer : kMe;
  m.to = origin_device.empty() ? kMe : kPeer;
  m.text = "m" + std::to_string(seq);
  return Event{kMe, Seq(seq), origin_device, MessageEvent{m}};
}

SyncReply Page(uint64_t cursor, uint64_t head, std::vector<uint64_t> seqs,
               bool more) {
  SyncReply page;
  page.cursor = Seq(cursor);
  page.head = Seq(head);
  for (uint64_t seq : seqs) page.events.push_back(Msg(seq));
  page.more = more;
  return page;
}

struct Taken {
  Kind kind;
  uint64_t seq;
  bool missed;
  bool operator==(const Taken& o) const {
    return kind == o.kind && seq == o.seq && missed == o.missed;
  }
};

std::ostream& operator<<(std::ostream& os, const Taken& t) {
  return os << "{" << static_cast<int>(t.kind) << ", " << t.seq
            << (t.missed ? ", missed}" : "}");
}

// Everything there is to take now.
std::vector<Taken> Drain(MailboxOrder* m) {
  std::vector<Taken> out;
  for (;;) {
    uint64_t before = m->last_seq().value;
    MailboxOrder::Next next = m->TakeNext();
    if (next.kind == Kind::kNone) return out;
    CHECK(m->last_seq().value == before + 1);
    out.push_back({next.kind, m->last_seq().value, next.missed});
  }
}

// A client whose first page (cursor 0, nothing missed) has come at 0 ms.
MailboxOrder Synced(MailboxOrder::Options options = {}) {
  MailboxOrder m(options);
  REQUIRE(m.Begin("phone", Seq(), At(0)));
  REQUIRE_FALSE(m.TakePage(Page(0, 0, {}, false), At(0)));
  return m;
}

}  // namespace

TEST_CASE("events are handed out in seq order, each once") {
  MailboxOrder m = Synced();
  CHECK(m.caught_up());
  m.TakeLive(Msg(2));
  CHECK(Drain(&m).empty());  // 1 has not come
  m.TakeLive(Msg(1));
  m.TakeLive(Msg(2));
  m.TakeLive(Msg(3));
  CHECK(Drain(&m) == (std::vector<Taken>{{Kind::kEvent, 1, false},
                                         {Kind::kEvent, 2, false},
                                         {Kind::kEvent, 3, false}}));
  // Again, live or in a page: dropped.
  m.TakeLive(Msg(2));
  m.TakeLive(Msg(3));
  CHECK(Drain(&m).empty());
  CHECK(m.last_seq() == Seq(3));
}

TEST_CASE(
    "a gap older than gap_grace asks for a repair after the last seq handed "
    "out") {
  MailboxOrder m = Synced({200, 30000});
  m.TakeLive(Msg(1));
  m.TakeLive(Msg(3));
  CHECK(Drain(&m).size() == 1);
  m.NoteGap(At(100));
  CHECK_FALSE(m.Tick(At(299)));
  auto repair = m.Tick(At(300));
  REQUIRE(repair);
  CHECK_FALSE(repair->from_cursor);
  CHECK(repair->after == Seq(1));
  // One sync at a time.
  CHECK_FALSE(m.Tick(At(600)));
  CHECK_FALSE(m.TakePage(Page(0, 3, {2, 3}, false), At(610)));
  CHECK(Drain(&m) == (std::vector<Taken>{{Kind::kEvent, 2, false},
                                         {Kind::kEvent, 3, false}}));
  m.NoteGap(At(620));
  CHECK_FALSE(m.Tick(At(1000)));  // the gap is closed
}

TEST_CASE("a sync that failed is asked again") {
  MailboxOrder m = Synced({200, 30000});
  m.TakeLive(Msg(2));
  m.NoteGap(At(0));
  REQUIRE(m.Tick(At(200)));
  CHECK_FALSE(m.Tick(At(400)));
  m.SyncFailed();
  auto again = m.Tick(At(600));
  REQUIRE(again);
  CHECK(again->after == Seq(0));
}

TEST_CASE(
    "the seqs of the device's own changes fill their places and are not handed "
    "out") {
  MailboxOrder m = Synced();
  m.TakeOwn(Seq(1));  // a send's processed
  m.TakeLive(Msg(2));
  m.TakeOwn(Seq(3));  // a reaction's ok
  CHECK(Drain(&m) == (std::vector<Taken>{{Kind::kOwnSeq, 1, false},
                                         {Kind::kEvent, 2, false},
                                         {Kind::kOwnSeq, 3, false}}));
  m.TakeOwn(Seq(2));  // already taken
  m.TakeOwn(Seq(0));  // changed nothing
  CHECK(Drain(&m).empty());
  m.NoteGap(At(0));
  CHECK_FALSE(m.Tick(At(300)));  // no gap to repair
  // One ahead of what came leaves a gap.
  m.TakeOwn(Seq(6));
  m.NoteGap(At(300));
  auto repair = m.Tick(At(500));
  REQUIRE(repair);
  CHECK(repair->after == Seq(3));
}

TEST_CASE(
    "a device skips its own events; the user's other devices' are handed out") {
  MailboxOrder m = Synced();
  m.TakeLive(Msg(1, "phone"));
  m.TakeLive(Msg(2, "laptop"));
  m.TakeLive(Msg(3));
  std::vector<Taken> taken = Drain(&m);
  CHECK(taken == (std::vector<Taken>{{Kind::kOwnEvent, 1, false},
                                     {Kind::kEvent, 2, false},
                                     {Kind::kEvent, 3, false}}));
}

TEST_CASE(
    "the catch-up pages until more is false and marks what it read missed") {
  MailboxOrder m({});
  auto first = m.Begin("phone", Seq(), At(0));
  REQUIRE(first);
  CHECK(first->from_cursor);
  CHECK(first->limit == MailboxOrder::kSyncPage);
  CHECK_FALSE(m.synced());
  auto next = m.TakePage(Page(10, 14, {11, 12}, true), At(10));
  REQUIRE(next);
  CHECK_FALSE(next->from_cursor);
  CHECK(next->after == Seq(12));
  CHECK(m.synced());
  CHECK_FALSE(m.caught_up());
  m.TakeLive(Msg(15));  // live meanwhile
  m.TakeLive(Msg(9));   // before the cursor
  CHECK_FALSE(m.TakePage(Page(10, 15, {13, 14}, false), At(20)));
  CHECK(m.caught_up());
  CHECK(Drain(&m) == (std::vector<Taken>{{Kind::kEvent, 11, true},
                                         {Kind::kEvent, 12, true},
                                         {Kind::kEvent, 13, true},
                                         {Kind::kEvent, 14, true},
                                         {Kind::kEvent, 15, false}}));
}

TEST_CASE(
    "the catch-up starts after what this device saved when its ack did not "
    "reach the "
    "shard") {
  MailboxOrder m({});
  REQUIRE(m.Begin("phone", Seq(12), At(0)));
  CHECK_FALSE(m.TakePage(Page(10, 14, {11, 12, 13, 14}, false), At(0)));
  CHECK(Drain(&m) == (std::vector<Taken>{{Kind::kEvent, 13, true},
                                         {Kind::kEvent, 14, true}}));

  // A saved cursor beyond the mailbox's head (another cell's) is not
  // believed.
  MailboxOrder other({});
  REQUIRE(other.Begin("phone", Seq(99), At(0)));
  CHECK_FALSE(other.TakePage(Page(10, 12, {11, 12}, false), At(0)));
  CHECK(Drain(&other).size() == 2);
}

TEST_CASE(
    "a session looks at the mailbox kSettleMs after it began, a later one at "
    "once too, "
    "and every resync_ms") {
  MailboxOrder m = Synced({200, 30000});
  CHECK_FALSE(m.Tick(At(MailboxOrder::kSettleMs - 1)));
  auto settle = m.Tick(At(MailboxOrder::kSettleMs));
  REQUIRE(settle);
  CHECK(settle->after == Seq(0));
  m.TakePage(Page(0, 0, {}, false), At(510));
  CHECK_FALSE(m.Tick(At(500 + 29999)));
  CHECK(m.Tick(At(500 + 30000)));
  m.TakePage(Page(0, 0, {}, false), At(40000));

  m.TakeLive(Msg(1));
  Drain(&m);
  auto resumed = m.Resume(At(50000));
  REQUIRE(resumed);
  CHECK(resumed->after == Seq(1));
  m.TakePage(Page(0, 1, {}, false), At(50010));
  CHECK_FALSE(m.Tick(At(50000 + MailboxOrder::kSettleMs - 1)));
  CHECK(m.Tick(At(50000 + MailboxOrder::kSettleMs)));
}

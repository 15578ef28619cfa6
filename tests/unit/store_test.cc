#include "daemons/stored/store.h"

#include <leveldb/iterator.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "common/shard.h"
#include "common/text.h"
#include "daemons/stored/keys.h"
#include "daemons/stored/stored.h"
#include "tests/support/temp_dir.h"

using namespace natter;
using namespace natter::stored;

namespace {

uint64_t g_next_id = 1000;

Request MakeRequest(const std::string& body) {
  Request r;
  REQUIRE(DecodeFrame(body.data(), body.size(), &r.frame).ok());
  return r;
}

template <typename T>
Request Make(MsgType type, UserId user, const std::string& device,
             const T& body) {
  Header h;
  h.type = static_cast<uint8_t>(type);
  h.corr = g_next_id;
  h.user = user;
  h.device = device;
  return MakeRequest(EncodeFrame(h, body));
}

Request StoreMsg(UserId from, UserId to, const std::string& cmid,
                 const std::string& text = "hi") {
  StoreMessage sm;
  sm.message.id = MessageId(++g_next_id);
  sm.message.from = from;
  sm.message.to = to;
  sm.message.ts = 1;
  sm.message.client_msg_id = cmid;
  sm.message.text = text;
  return Make(MsgType::kStoreMessage, from, "phone", sm);
}

template <typename T>
T ReplyAs(const Request& r, MsgType expect) {
  Frame f;
  REQUIRE(DecodeFrame(r.reply.data(), r.reply.size(), &f).ok());
  REQUIRE(f.type() == expect);
  T body;
  REQUIRE(DecodeBody(f, &body).ok());
  return body;
}

// Applies one request, alone in its batch; a page it answers with fits
// its byte budget.
Request ApplyOne(Store& store, Request r) {
  std::vector<Request> batch;
  batch.push_back(std::move(r));
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  CHECK(batch[0].reply.size() <= kMaxPageBytes + 1024);
  return std::move(batch[0]);
}

SyncReply SyncFrom(Store& store, UserId user, const std::string& device,
                   bool from_cursor, Seq after, uint32_t limit = 100) {
  Sync s;
  s.from_cursor = from_cursor;
  s.after = after;
  s.limit = limit;
  return ReplyAs<SyncReply>(
      ApplyOne(store, Make(MsgType::kSync, user, device, s)),
      MsgType::kSyncReply);
}

// Two users that live on different shards of a map of n.
std::pair<UserId, UserId> UsersOnTwoShards(uint32_t n) {
  UserId a(1);
  for (uint64_t u = 2;; ++u) {
    if (HomeShard(UserId(u), n) != HomeShard(a, n)) return {a, UserId(u)};
  }
}

}  // namespace

TEST_CASE("a stored message is processed, in both mailboxes, and published") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  std::vector<Request> batch;
  batch.push_back(StoreMsg(UserId(1), UserId(2), "c1"));
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  Processed p = ReplyAs<Processed>(batch[0], MsgType::kProcessed);
  CHECK(p.client_msg_id == "c1");
  CHECK(p.seq == Seq(1));
  CHECK(store.Head(UserId(1)) == Seq(1));
  CHECK(store.Head(UserId(2)) == Seq(1));
  REQUIRE(e.publish.size() == 2);
  CHECK(e.publish[0].user == UserId(1));
  CHECK(e.publish[0].origin_device == "phone");
  CHECK(e.publish[1].user == UserId(2));
  CHECK(e.publish[1].origin_device.empty());
  CHECK(e.handoff.empty());
}

TEST_CASE("a retried client_msg_id returns the first id and creates nothing") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  std::vector<Request> first;
  first.push_back(StoreMsg(UserId(1), UserId(2), "same"));
  Effects e;
  REQUIRE(store.Apply(&first, &e).ok());
  Processed p1 = ReplyAs<Processed>(first[0], MsgType::kProcessed);

  SECTION("in a later batch") {
    std::vector<Request> retry;
    retry.push_back(StoreMsg(UserId(1), UserId(2), "same"));
    Effects e2;
    REQUIRE(store.Apply(&retry, &e2).ok());
    Processed p2 = ReplyAs<Processed>(retry[0], MsgType::kProcessed);
    CHECK(p2.id == p1.id);
    CHECK(p2.seq == p1.seq);
    CHECK(e2.publish.empty());
    CHECK(e2.handoff.empty());
    CHECK(store.Head(UserId(1)) == Seq(1));  // no second mailbox entry
    CHECK(store.Head(UserId(2)) == Seq(1));
  }
  SECTION("twice in the same batch") {
    std::vector<Request> batch;
    batch.push_back(StoreMsg(UserId(1), UserId(2), "twice"));
    batch.push_back(StoreMsg(UserId(1), UserId(2), "twice"));
    Effects e2;
    REQUIRE(store.Apply(&batch, &e2).ok());
    CHECK(ReplyAs<Processed>(batch[0], MsgType::kProcessed).id ==
          ReplyAs<Processed>(batch[1], MsgType::kProcessed).id);
    CHECK(e2.publish.size() == 2);  // one message: sender's and recipient's
  }
  SECTION("after the shard was closed and opened again") {
    store.Close();
    Store again(0, 1);
    REQUIRE(again.Open(dir.path() + "/db").ok());
    std::vector<Request> retry;
    retry.push_back(StoreMsg(UserId(1), UserId(2), "same"));
    Effects e2;
    REQUIRE(again.Apply(&retry, &e2).ok());
    CHECK(ReplyAs<Processed>(retry[0], MsgType::kProcessed).id == p1.id);
    CHECK(again.Head(UserId(2)) == Seq(1));
  }
  SECTION("from another sender it is another message") {
    std::vector<Request> other;
    other.push_back(StoreMsg(UserId(3), UserId(2), "same"));
    Effects e3;
    REQUIRE(store.Apply(&other, &e3).ok());
    CHECK(ReplyAs<Processed>(other[0], MsgType::kProcessed).id != p1.id);
  }
}

TEST_CASE("a closed shard refuses work with a retryable error") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  store.Close();
  std::vector<Request> batch;
  batch.push_back(StoreMsg(UserId(1), UserId(2), "c"));
  Effects e;
  CHECK(store.Apply(&batch, &e).code() == ErrorCode::kStorage);
  Error err = ReplyAs<Error>(batch[0], MsgType::kError);
  CHECK(IsRetryable(static_cast<ErrorCode>(err.code)));
}

TEST_CASE("every synced write is there after close and reopen") {
  TempDir dir;
  {
    Store store(0, 1);
    REQUIRE(store.Open(dir.path() + "/db").ok());
    for (int b = 0; b < 10; ++b) {
      std::vector<Request> batch;
      for (int i = 0; i < 50; ++i) {
        batch.push_back(StoreMsg(UserId(1), UserId(2),
                                 "m" + std::to_string(b * 50 + i),
                                 "text " + std::to_string(b * 50 + i)));
      }
      Effects e;
      REQUIRE(store.Apply(&batch, &e).ok());
    }
  }
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  CHECK(store.Head(UserId(1)) == Seq(500));
  CHECK(store.Head(UserId(2)) == Seq(500));
  SyncReply r = SyncFrom(store, UserId(2), "tablet", false, Seq(0), 1000);
  REQUIRE(r.events.size() == 500);
  for (size_t i = 0; i < r.events.size(); ++i) {
    REQUIRE(r.events[i].seq == Seq(i + 1));
    REQUIRE(r.events[i].message() != nullptr);
    REQUIRE(r.events[i].message()->text == "text " + std::to_string(i));
  }
  // And the numbering goes on without a gap.
  std::vector<Request> batch;
  batch.push_back(StoreMsg(UserId(2), UserId(1), "reply"));
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  CHECK(ReplyAs<Processed>(batch[0], MsgType::kProcessed).seq == Seq(501));
}

TEST_CASE("a device starts at the head, and its cursor follows its acks") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  std::vector<Request> batch;
  for (int i = 0; i < 5; ++i)
    batch.push_back(StoreMsg(UserId(1), UserId(2), "a" + std::to_string(i)));
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());

  SyncReply first = SyncFrom(store, UserId(2), "new", true, Seq());
  CHECK(first.events.empty());
  CHECK(first.cursor == Seq(5));
  CHECK(first.head == Seq(5));

  batch.clear();
  for (int i = 5; i < 8; ++i)
    batch.push_back(StoreMsg(UserId(1), UserId(2), "a" + std::to_string(i)));
  REQUIRE(store.Apply(&batch, &e).ok());
  SyncReply missed = SyncFrom(store, UserId(2), "new", true, Seq());
  REQUIRE(missed.events.size() == 3);
  CHECK(missed.events[0].seq == Seq(6));

  Ack ack;
  ack.seq = Seq(7);
  std::vector<Request> acks;
  acks.push_back(Make(MsgType::kAck, UserId(2), "new", ack));
  ack.seq = Seq(6);  // an older ack never moves the cursor back
  acks.push_back(Make(MsgType::kAck, UserId(2), "new", ack));
  ack.seq = Seq(99);  // nor beyond the head
  acks.push_back(Make(MsgType::kAck, UserId(2), "other", ack));
  REQUIRE(store.Apply(&acks, &e).ok());
  // An ack has no answer (protocol 2): the cursors tell.
  for (const Request& r : acks) CHECK(r.reply.empty());
  CHECK(SyncFrom(store, UserId(2), "new", false, Seq(), 0).cursor == Seq(7));
  CHECK(SyncFrom(store, UserId(2), "other", false, Seq(), 0).cursor == Seq(8));
  SyncReply after = SyncFrom(store, UserId(2), "new", true, Seq());
  REQUIRE(after.events.size() == 1);
  CHECK(after.events[0].seq == Seq(8));
}

TEST_CASE("a message between shards goes to the outbox until acknowledged") {
  auto [alice, bob] = UsersOnTwoShards(2);
  TempDir dir;
  uint32_t alice_shard = HomeShard(alice, 2);
  Store home(alice_shard, 2);
  Store away(1 - alice_shard, 2);
  REQUIRE(home.Open(dir.path() + "/home").ok());
  REQUIRE(away.Open(dir.path() + "/away").ok());
  std::vector<Request> batch;
  batch.push_back(StoreMsg(alice, bob, "x"));
  Effects e;
  REQUIRE(home.Apply(&batch, &e).ok());
  REQUIRE(e.handoff.size() == 1);
  CHECK(home.Head(bob) == Seq(0));  // not bob's shard

  // The hand-off survives a restart of the home shard.
  home.Close();
  Store home2(alice_shard, 2);
  REQUIRE(home2.Open(dir.path() + "/home").ok());
  auto pending = home2.PendingHandoffs();
  REQUIRE(pending.size() == 1);
  CHECK(pending[0].id() == e.handoff[0].id());

  // Handed off twice (a retry): stored once.
  for (int i = 0; i < 2; ++i) {
    std::vector<Request> d;
    d.push_back(Make(MsgType::kHandoff, bob, "", pending[0]));
    Effects de;
    REQUIRE(away.Apply(&d, &de).ok());
    HandoffAck ack = ReplyAs<HandoffAck>(d[0], MsgType::kHandoffAck);
    CHECK(ack.outbox == pending[0].outbox);
    CHECK(de.publish.size() == (i == 0 ? 1u : 0u));
    REQUIRE(home2.AckHandoff(ack).ok() == (i == 0));
  }
  CHECK(away.Head(bob) == Seq(1));
  CHECK(home2.PendingHandoffs().empty());
}

TEST_CASE(
    "an acknowledgement for another hand-off with the same number deletes "
    "nothing") {
  auto [alice, bob] = UsersOnTwoShards(2);
  TempDir dir;
  Store home(HomeShard(alice, 2), 2);
  REQUIRE(home.Open(dir.path() + "/home").ok());
  std::vector<Request> batch;
  batch.push_back(StoreMsg(alice, bob, "x"));
  Effects e;
  REQUIRE(home.Apply(&batch, &e).ok());
  HandoffAck stale;
  stale.outbox = e.handoff[0].outbox;
  stale.id = MessageId(e.handoff[0].id().value + 1);
  CHECK_FALSE(home.AckHandoff(stale).ok());
  CHECK(home.PendingHandoffs().size() == 1);
}

TEST_CASE("sync pages through a mailbox in order") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  std::vector<Request> batch;
  for (int i = 0; i < 250; ++i)
    batch.push_back(StoreMsg(UserId(5), UserId(6), std::to_string(i)));
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  Seq after;
  size_t total = 0;
  for (int page = 0; page < 10; ++page) {
    SyncReply r = SyncFrom(store, UserId(6), "d", false, after, 100);
    for (const Event& ev : r.events) REQUIRE(ev.seq == Seq(++after.value));
    total += r.events.size();
    if (!r.more) break;
  }
  CHECK(total == 250);
}

TEST_CASE(
    "the shard writes every request waiting on its socket in one synced "
    "batch") {
  TempDir dir;
  zmq::context_t ctx(1);
  Config config =
      Config::FromMap("stored", {{"shards", "inproc://shard-0"},
                                 {"routed", "inproc://routed"},
                                 {"notifyd-in", "inproc://notifyd-in"},
                                 {"data-dir", dir.path()}});
  std::unique_ptr<Stored> stored;
  REQUIRE(Stored::Create(config, ctx, &stored).ok());
  REQUIRE(stored->Start().ok());
  const uint64_t syncs_before = stored->log_syncs();
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.connect("inproc://shard-0");
  const int kRequests = 300;
  for (int i = 0; i < kRequests; ++i) {
    Request r = StoreMsg(UserId(1), UserId(2), "g" + std::to_string(i));
    StoreMessage sm;
    REQUIRE(DecodeBody(r.frame, &sm).ok());
    std::string frame = EncodeFrame(r.frame.header, sm);
    dealer.send(zmq::buffer(frame), zmq::send_flags::none);
  }
  // inproc://: each request is on the shard's socket once its send returns.
  stored->RunOnce(1000);
  CHECK(stored->log_syncs() - syncs_before == 1);
  CHECK(stored->logged_requests() == kRequests);
  int processed = 0;
  zmq::message_t msg;
  dealer.set(zmq::sockopt::rcvtimeo, 1000);
  while (processed < kRequests && dealer.recv(msg)) {
    Frame f;
    REQUIRE(DecodeFrame(msg.data(), msg.size(), &f).ok());
    CHECK(f.type() == MsgType::kProcessed);
    ++processed;
  }
  CHECK(processed == kRequests);
  stored->Stop();
}

namespace {

template <typename T>
Request Ask(MsgType type, UserId user, const std::string& device,
            const T& body) {
  return Make(type, user, device, body);
}

Request ReactTo(UserId user, UserId peer, MessageId id,
                std::optional<std::string> emoji) {
  React r;
  r.peer = peer;
  r.id = id;
  r.emoji = std::move(emoji);
  return Ask(MsgType::kReact, user, "phone", r);
}

Handoff ReactionChange(UserId target, UserId by, MessageId id,
                       std::optional<std::string> emoji, uint64_t version) {
  Handoff d;
  d.target = target;
  d.what = ReactionHandoff{by, id, std::move(emoji), version};
  return d;
}

HistoryReply HistoryOf(Store& store, UserId user, UserId peer, HistoryMode mode,
                       uint64_t bound, uint32_t limit) {
  History q;
  q.peer = peer;
  q.mode = mode;
  q.bound = bound;
  q.limit = limit;
  return ReplyAs<HistoryReply>(
      ApplyOne(store, Ask(MsgType::kHistory, user, "phone", q)),
      MsgType::kHistoryReply);
}

MessageId SendOne(Store& store, UserId from, UserId to, const std::string& cmid,
                  const std::string& text = "hi") {
  std::vector<Request> batch;
  batch.push_back(StoreMsg(from, to, cmid, text));
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  return ReplyAs<Processed>(batch[0], MsgType::kProcessed).id;
}

}  // namespace

TEST_CASE("a late, older reaction change never undoes a newer one") {
  auto [alice, bob] = UsersOnTwoShards(2);
  TempDir dir;
  Store home(HomeShard(alice, 2), 2), away(HomeShard(bob, 2), 2);
  REQUIRE(home.Open(dir.path() + "/a").ok());
  REQUIRE(away.Open(dir.path() + "/b").ok());
  std::vector<Request> batch;
  batch.push_back(StoreMsg(alice, bob, "x"));
  Effects e;
  REQUIRE(home.Apply(&batch, &e).ok());
  MessageId id = e.handoff[0].id();
  std::vector<Request> d;
  d.push_back(Make(MsgType::kHandoff, bob, "", e.handoff[0]));
  REQUIRE(away.Apply(&d, &e).ok());

  // Alice removed her reaction (version 9) after setting it (version 5);
  // the hand-offs arrive the other way round.
  for (const Handoff& h :
       {ReactionChange(bob, alice, id, std::nullopt, 9),
        ReactionChange(bob, alice, id, std::string("👍"), 5)}) {
    std::vector<Request> r;
    r.push_back(Make(MsgType::kHandoff, bob, "", h));
    Effects re;
    REQUIRE(away.Apply(&r, &re).ok());
    CHECK(re.publish.empty());  // nothing visible changed either time
  }
  HistoryReply h = HistoryOf(away, bob, alice, HistoryMode::kLatest, 0, 10);
  REQUIRE(h.messages.size() == 1);
  CHECK(h.messages[0].reactions.empty());
}

TEST_CASE(
    "a reaction on a message outside the user's conversations is refused") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  MessageId id = SendOne(store, UserId(1), UserId(2), "x");
  std::vector<Request> batch;
  batch.push_back(ReactTo(UserId(3), UserId(1), id, std::string("👍")));
  batch.push_back(ReactTo(UserId(2), UserId(1), id, std::string("👍")));
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  CHECK(ReplyAs<Error>(batch[0], MsgType::kError).code == ErrorCode::kNotFound);
  Done done = ReplyAs<Done>(batch[1], MsgType::kOk);
  CHECK(done.seq == Seq(2));  // bob's mailbox: the message, then his reaction
  REQUIRE(e.publish.size() == 2);  // to bob's mailbox and alice's
}

TEST_CASE(
    "the first acknowledgement delivers, seen covers earlier messages, unread "
    "follows") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  std::vector<MessageId> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(
        SendOne(store, UserId(1), UserId(2), "m" + std::to_string(i)));
  // Bob's device acknowledges the first three events of his mailbox.
  Ack ack;
  ack.seq = Seq(3);
  std::vector<Request> batch;
  batch.push_back(Make(MsgType::kAck, UserId(2), "phone", ack));
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  REQUIRE(e.publish.size() == 1);
  CHECK(e.publish[0].kind() == EventKind::kDelivered);
  CHECK(e.publish[0].user == UserId(1));
  CHECK(e.publish[0].id() == ids[2]);
  // Another device acknowledging the same says nothing new.
  batch.clear();
  batch.push_back(Make(MsgType::kAck, UserId(2), "tablet", ack));
  Effects e2;
  REQUIRE(store.Apply(&batch, &e2).ok());
  CHECK(e2.publish.empty());

  MarkSeen seen;
  seen.peer = UserId(1);
  seen.id = ids[1];
  batch.clear();
  batch.push_back(Make(MsgType::kSeen, UserId(2), "phone", seen));
  Effects e3;
  REQUIRE(store.Apply(&batch, &e3).ok());
  HistoryReply h =
      HistoryOf(store, UserId(1), UserId(2), HistoryMode::kLatest, 0, 10);
  REQUIRE(h.messages.size() == 5);
  for (size_t i = 0; i < 5; ++i) {
    CHECK(h.messages[i].delivered == (i < 3));
    CHECK(h.messages[i].seen == (i < 2));
  }
  std::vector<Request> chats;
  chats.push_back(Make(MsgType::kChats, UserId(2), "phone", Chats()));
  REQUIRE(store.Apply(&chats, &e3).ok());
  ChatsReply c = ReplyAs<ChatsReply>(chats[0], MsgType::kChatsReply);
  REQUIRE(c.chats.size() == 1);
  CHECK(c.chats[0].unread == 3);
  CHECK(c.chats[0].last_id == ids[4]);
}

TEST_CASE("history answers each mode from the right place") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  std::vector<MessageId> ids;
  for (int i = 0; i < 20; ++i)
    ids.push_back(
        SendOne(store, UserId(1), UserId(2), "h" + std::to_string(i)));
  SendOne(store, UserId(1), UserId(3), "elsewhere");  // another conversation
  auto page_ids = [](const HistoryReply& r) {
    std::vector<MessageId> v;
    for (const auto& m : r.messages) v.push_back(m.message.id);
    return v;
  };
  HistoryReply latest =
      HistoryOf(store, UserId(1), UserId(2), HistoryMode::kLatest, 0, 5);
  CHECK(page_ids(latest) == std::vector<MessageId>(ids.end() - 5, ids.end()));
  CHECK(latest.more);
  HistoryReply before = HistoryOf(store, UserId(1), UserId(2),
                                  HistoryMode::kBefore, ids[3].value, 5);
  CHECK(page_ids(before) ==
        std::vector<MessageId>(ids.begin(), ids.begin() + 3));
  CHECK_FALSE(before.more);
  HistoryReply after = HistoryOf(store, UserId(1), UserId(2),
                                 HistoryMode::kAfter, ids[15].value, 10);
  CHECK(page_ids(after) == std::vector<MessageId>(ids.begin() + 16, ids.end()));
  CHECK_FALSE(after.more);
  HistoryReply none =
      HistoryOf(store, UserId(1), UserId(2), HistoryMode::kAt, 1000, 5);
  CHECK(none.messages.empty());
  HistoryReply bob =
      HistoryOf(store, UserId(2), UserId(1), HistoryMode::kLatest, 0, 100);
  CHECK(page_ids(bob) == ids);
}

TEST_CASE("a full head cache never makes a batch hand out a seq twice") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  store.set_max_cached_heads(2);  // far fewer than the users of a batch
  std::vector<Request> batch;
  for (int round = 0; round < 3; ++round) {
    for (uint64_t u = 1; u <= 5; ++u) {
      batch.push_back(
          StoreMsg(UserId(u), UserId(u),
                   "c" + std::to_string(round) + "-" + std::to_string(u)));
    }
  }
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  std::map<uint64_t, std::set<uint64_t>> seqs;  // user -> seqs of its sends
  for (const Request& r : batch) {
    Processed p = ReplyAs<Processed>(r, MsgType::kProcessed);
    std::optional<uint64_t> user =
        ParseUint(p.client_msg_id.substr(p.client_msg_id.find('-') + 1));
    REQUIRE(user);
    CHECK(seqs[*user].insert(p.seq.value).second);
  }
  for (const auto& [user, s] : seqs) CHECK(s == std::set<uint64_t>{1, 2, 3});
  // The next batch starts with the cache emptied and reads the heads back.
  std::vector<Request> next;
  next.push_back(StoreMsg(UserId(1), UserId(1), "later"));
  REQUIRE(store.Apply(&next, &e).ok());
  CHECK(ReplyAs<Processed>(next[0], MsgType::kProcessed).seq == Seq(4));
}

namespace {

ChatsReply ChatsOf(Store& store, UserId user, const Chats& query = Chats()) {
  return ReplyAs<ChatsReply>(
      ApplyOne(store, Make(MsgType::kChats, user, "phone", query)),
      MsgType::kChatsReply);
}

const std::string kLongText(kMaxTextBytes, 'x');

}  // namespace

TEST_CASE("a sync page ends within its byte budget and says more") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  // 64 notes-to-self of 4 KB: 256 KiB of text, more than a client takes.
  std::vector<Request> batch;
  for (int i = 0; i < 64; ++i) {
    batch.push_back(
        StoreMsg(UserId(5), UserId(5), "n" + std::to_string(i), kLongText));
  }
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  Seq after;
  int pages = 0;
  for (;;) {
    SyncReply page =
        SyncFrom(store, UserId(5), "d", false, after, kMaxSyncPage);
    REQUIRE_FALSE(page.events.empty());
    ++pages;
    for (const Event& ev : page.events) CHECK(ev.seq == Seq(++after.value));
    if (!page.more) break;
  }
  CHECK(after == Seq(64));
  CHECK(pages >= 2);
}

TEST_CASE("a history page ends within its byte budget, in both directions") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  std::vector<MessageId> ids;
  std::vector<Request> batch;
  for (int i = 0; i < 100; ++i) {
    batch.push_back(
        StoreMsg(UserId(1), UserId(2), "h" + std::to_string(i), kLongText));
  }
  Effects e;
  REQUIRE(store.Apply(&batch, &e).ok());
  for (const Request& r : batch)
    ids.push_back(ReplyAs<Processed>(r, MsgType::kProcessed).id);
  auto page = [&](HistoryMode mode, uint64_t bound) {
    return HistoryOf(store, UserId(1), UserId(2), mode, bound, kMaxHistoryPage);
  };
  // Back from the newest: each page is the one before the last's oldest.
  std::vector<MessageId> back;
  int pages = 0;
  for (HistoryReply p = page(HistoryMode::kLatest, 0);;) {
    REQUIRE_FALSE(p.messages.empty());
    ++pages;
    std::vector<MessageId> these;
    for (const auto& item : p.messages) these.push_back(item.message.id);
    back.insert(back.begin(), these.begin(), these.end());
    if (!p.more) break;
    p = page(HistoryMode::kBefore, these.front().value);
  }
  CHECK(back == ids);
  CHECK(pages >= 3);  // 400 KiB of text
  // Forward from the start.
  std::vector<MessageId> forward;
  for (HistoryReply p = page(HistoryMode::kAfter, 0);;) {
    REQUIRE_FALSE(p.messages.empty());
    for (const auto& item : p.messages) forward.push_back(item.message.id);
    if (!p.more) break;
    p = page(HistoryMode::kAfter, forward.back().value);
  }
  CHECK(forward == ids);
}

TEST_CASE("chats come most recent first, page by page within the byte budget") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  // 70 conversations of long messages, begun in an order unlike the peers'.
  std::vector<UserId> peers;
  for (uint64_t i = 0; i < 70; ++i)
    peers.push_back(UserId(1000 + (i * 37) % 70));
  for (UserId p : peers)
    SendOne(store, UserId(9), p, "to" + std::to_string(p.value), kLongText);
  // Then an old one becomes the most recent again.
  SendOne(store, UserId(9), peers[3], "again", kLongText);
  std::vector<UserId> expect(peers.rbegin(), peers.rend());
  expect.erase(std::find(expect.begin(), expect.end(), peers[3]));
  expect.insert(expect.begin(), peers[3]);

  std::vector<UserId> got;
  int pages = 0;
  Chats query;
  for (;;) {
    ChatsReply page = ChatsOf(store, UserId(9), query);
    REQUIRE_FALSE(page.chats.empty());
    ++pages;
    for (const ChatItem& c : page.chats) got.push_back(c.peer);
    if (!page.more) break;
    query.before_id = page.chats.back().last_id;
    query.before_peer = page.chats.back().peer;
  }
  CHECK(got == expect);
  CHECK(pages >= 2);
  // A request without a cursor (an older client's []) is the newest page.
  Header h;
  h.type = static_cast<uint8_t>(MsgType::kChats);
  h.user = UserId(9);
  h.device = "phone";
  msgpack::sbuffer raw;
  msgpack::packer<msgpack::sbuffer> packer(raw);
  packer.pack_array(2);
  packer.pack(h);
  packer.pack_array(0);
  ChatsReply first = ReplyAs<ChatsReply>(
      ApplyOne(store, MakeRequest(std::string(raw.data(), raw.size()))),
      MsgType::kChatsReply);
  REQUIRE_FALSE(first.chats.empty());
  CHECK(first.chats[0].peer == peers[3]);
  CHECK(first.more);
}

TEST_CASE(
    "a database from before the chats' recency index gets it when opened") {
  TempDir dir;
  std::string path = dir.path() + "/db";
  {
    Store store(0, 1);
    REQUIRE(store.Open(path).ok());
    for (uint64_t p = 1; p <= 5; ++p)
      SendOne(store, UserId(9), UserId(100 + p), "c" + std::to_string(p));
    // Make it as an older natter-stored left it: no r keys, no format.
    leveldb::WriteBatch older;
    std::unique_ptr<leveldb::Iterator> it(store.db()->NewIterator({}));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      char prefix = it->key()[0];
      if (prefix == 'r' || prefix == 'v') older.Delete(it->key());
    }
    REQUIRE(store.db()->Write({}, &older).ok());
    CHECK(ChatsOf(store, UserId(9)).chats.empty());
  }
  Store store(0, 1);
  REQUIRE(store.Open(path).ok());
  std::vector<UserId> got;
  for (const ChatItem& c : ChatsOf(store, UserId(9)).chats)
    got.push_back(c.peer);
  CHECK(got == std::vector<UserId>{UserId(105), UserId(104), UserId(103),
                                   UserId(102), UserId(101)});
}

TEST_CASE(
    "replicas that apply the same entries have the same digest at the same "
    "log position; one more write changes it") {
  TempDir dir;
  Store one(0, 1), two(0, 1);
  REQUIRE(one.Open(dir.path() + "/one").ok());
  REQUIRE(two.Open(dir.path() + "/two").ok());
  // One request, twice: as each replica decodes the entry's frame.
  Request r = StoreMsg(UserId(1), UserId(2), "d1");
  StoreMessage sm;
  REQUIRE(DecodeBody(r.frame, &sm).ok());
  const std::string frame = EncodeFrame(r.frame.header, sm);
  std::vector<Request> first(1), same(1);
  REQUIRE(DecodeFrame(frame.data(), frame.size(), &first[0].frame).ok());
  REQUIRE(DecodeFrame(frame.data(), frame.size(), &same[0].frame).ok());
  Effects e;
  REQUIRE(one.Apply(&first, &e, {7, 2}).ok());
  REQUIRE(two.Apply(&same, &e, {7, 2}).ok());
  std::string a, b;
  uint64_t records_a = 0, records_b = 0;
  LogPosition at_a, at_b;
  REQUIRE(one.Digest(&a, &records_a, &at_a).ok());
  REQUIRE(two.Digest(&b, &records_b, &at_b).ok());
  CHECK(a == b);
  CHECK(a.size() == 64);
  CHECK(records_a == records_b);
  CHECK(at_a.index == 7);
  CHECK(at_a.term == 2);
  std::vector<Request> more;
  more.push_back(StoreMsg(UserId(1), UserId(2), "d2"));
  REQUIRE(two.Apply(&more, &e, {8, 2}).ok());
  REQUIRE(two.Digest(&b, &records_b, &at_b).ok());
  CHECK(a != b);
  CHECK(at_b.index == 8);
  // The position is where the database is in the log after a reopen too.
  two.Close();
  REQUIRE(two.Open(dir.path() + "/two").ok());
  CHECK(two.applied().index == 8);
  CHECK(two.applied().term == 2);
}

namespace {

// The values of the database that hold `text`.
size_t ValuesHolding(Store& store, const std::string& text) {
  size_t n = 0;
  std::unique_ptr<leveldb::Iterator> it(store.db()->NewIterator({}));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->value().ToString().find(text) != std::string::npos) ++n;
  }
  return n;
}

std::string FormatOf(Store& store) {
  std::string v;
  if (!store.db()->Get({}, FormatKey(), &v).ok() || v.size() != 8) return "?";
  return std::to_string(GetBigEndian(v.data()));
}

}  // namespace

TEST_CASE(
    "a message's text is written once for each user, in their copies; the "
    "mailbox and the chats read it from there") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  const std::string text = "a text that is nowhere else 8c1f";
  MessageId id = SendOne(store, UserId(1), UserId(2), "t1", text);
  // The two copies, nothing else: not the mailbox events, not the chats.
  CHECK(ValuesHolding(store, text) == 2);
  for (UserId u : {UserId(1), UserId(2)}) {
    SyncReply got = SyncFrom(store, u, "tablet", false, Seq(0));
    REQUIRE(got.events.size() == 1);
    const Message* m = got.events[0].message();
    REQUIRE(m != nullptr);
    CHECK(m->id == id);
    CHECK(m->text == text);
    CHECK(got.events[0].user == u);
    CHECK(got.events[0].seq == Seq(1));
    CHECK(got.events[0].origin_device == (u == UserId(1) ? "phone" : ""));
    ChatsReply chats = ChatsOf(store, u);
    REQUIRE(chats.chats.size() == 1);
    CHECK(chats.chats[0].last_text == text);
  }
}

TEST_CASE(
    "a format 1 database's whole message events are read as before, and it "
    "is marked format 2; a newer format is refused") {
  TempDir dir;
  const std::string path = dir.path() + "/db";
  const std::string text = "written whole by an older natter";
  {
    Store store(0, 1);
    REQUIRE(store.Open(path).ok());
    std::vector<Request> batch;
    batch.push_back(StoreMsg(UserId(1), UserId(2), "w1", text));
    Effects e;
    REQUIRE(store.Apply(&batch, &e).ok());
    // As format 1 kept them: each mailbox event whole, the format 1.
    leveldb::WriteBatch older;
    for (const Event& ev : e.publish) {
      msgpack::sbuffer whole;
      msgpack::pack(whole, ev);
      older.Put(MailboxKey(ev.user, ev.seq),
                leveldb::Slice(whole.data(), whole.size()));
    }
    std::string one;
    PutBigEndian(&one, 1);
    older.Put(FormatKey(), one);
    REQUIRE(store.db()->Write({}, &older).ok());
    CHECK(ValuesHolding(store, text) == 4);
  }
  {
    Store store(0, 1);
    REQUIRE(store.Open(path).ok());
    CHECK(FormatOf(store) == "2");
    SyncReply got = SyncFrom(store, UserId(2), "tablet", false, Seq(0));
    REQUIRE(got.events.size() == 1);
    REQUIRE(got.events[0].message() != nullptr);
    CHECK(got.events[0].message()->text == text);
    std::string three;
    PutBigEndian(&three, 3);
    REQUIRE(store.db()->Put({}, FormatKey(), three).ok());
  }
  Store store(0, 1);
  Status s = store.Open(path);
  CHECK_FALSE(s.ok());
  CHECK(s.message().find("newer") != std::string::npos);
}

TEST_CASE(
    "the records a send reads come from memory once written, and are "
    "right after a reopen too") {
  TempDir dir;
  Store store(0, 1);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  std::vector<Request> batch;
  Effects e;
  batch.push_back(StoreMsg(UserId(1), UserId(2), "r0"));
  REQUIRE(store.Apply(&batch, &e).ok());
  const uint64_t hits = store.records().hits();
  CHECK(store.records().bytes() > 0);  // both conversations' records
  for (int i = 1; i < 4; ++i) {
    batch.clear();
    batch.push_back(StoreMsg(UserId(1), UserId(2), "r" + std::to_string(i)));
    REQUIRE(store.Apply(&batch, &e).ok());
  }
  // Each later send read both conversations from memory.
  CHECK(store.records().hits() >= hits + 6);
  ChatsReply chats = ChatsOf(store, UserId(2));
  REQUIRE(chats.chats.size() == 1);
  CHECK(chats.chats[0].unread == 4);

  store.Close();
  CHECK(store.records().bytes() == 0);
  REQUIRE(store.Open(dir.path() + "/db").ok());
  const uint64_t misses = store.records().misses();
  batch.clear();
  batch.push_back(StoreMsg(UserId(1), UserId(2), "r4"));
  REQUIRE(store.Apply(&batch, &e).ok());
  CHECK(store.records().misses() >= misses + 2);  // read from LevelDB again
  chats = ChatsOf(store, UserId(2));
  REQUIRE(chats.chats.size() == 1);
  CHECK(chats.chats[0].unread == 5);
}

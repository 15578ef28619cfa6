#include "daemons/stored/store.h"

#include <algorithm>

#include <leveldb/iterator.h>
#include <leveldb/options.h>

#include "common/log.h"
#include "common/shard.h"
#include "daemons/stored/keys.h"

namespace natter {
namespace stored {
namespace {

template <typename T>
std::string Pack(const T& value) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, value);
  return std::string(buf.data(), buf.size());
}

// Values on disk were written by this program, but a damaged disk or an old
// version may hold anything: a bad value is a Status, never a crash.
template <typename T>
bool Unpack(const std::string& bytes, T* out) {
  try {
    msgpack::object_handle h = msgpack::unpack(bytes.data(), bytes.size());
    h.get().convert(*out);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

bool HasPrefix(const leveldb::Slice& s, const std::string& prefix) {
  return s.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), s.data());
}

}  // namespace

Store::Store(uint32_t shard, uint32_t shard_count)
    : shard_(shard), shard_count_(shard_count == 0 ? 1 : shard_count) {}

Store::~Store() { Close(); }

bool Store::Owns(UserId user) const {
  return HomeShard(user, shard_count_) == shard_;
}

Status Store::Open(const std::string& path) {
  leveldb::Options options;
  options.create_if_missing = true;
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, path, &db);
  if (!s.ok()) return Status(ErrorCode::kStorage, path + ": " + s.ToString());
  db_.reset(db);
  heads_.clear();
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  it->Seek(OutboxKey(UINT64_MAX));
  if (it->Valid()) {
    it->Prev();
  } else {
    it->SeekToLast();
  }
  if (it->Valid() && HasPrefix(it->key(), "o") && it->key().size() == 9) {
    next_outbox_ = GetBigEndian(it->key().data() + 1) + 1;
  }
  return Status::Ok();
}

void Store::Close() { db_.reset(); }

Seq Store::Head(UserId user) {
  auto cached = heads_.find(user);
  if (cached != heads_.end()) return cached->second;
  Seq head;
  std::string prefix = MailboxPrefix(user);
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  it->Seek(MailboxKey(user, Seq(UINT64_MAX)));
  if (it->Valid()) {
    it->Prev();
  } else {
    it->SeekToLast();
  }
  if (it->Valid() && HasPrefix(it->key(), prefix) &&
      it->key().size() == prefix.size() + 8) {
    head = Seq(GetBigEndian(it->key().data() + prefix.size()));
  }
  heads_[user] = head;
  return head;
}

Seq Store::NextSeq(UserId user) {
  Seq next(Head(user).value + 1);
  heads_[user] = next;
  return next;
}

bool Store::Exists(const std::string& key, const BatchState& b) {
  if (b.messages.count(key)) return true;
  std::string value;
  return db_->Get({}, key, &value).ok();
}

bool Store::ReadCursor(UserId user, const std::string& device,
                       const BatchState& b, Seq* out) {
  std::string key = CursorKey(user, device);
  auto pending = b.cursors.find(key);
  if (pending != b.cursors.end()) {
    *out = pending->second;
    return true;
  }
  std::string value;
  if (!db_->Get({}, key, &value).ok() || value.size() != 8) return false;
  *out = Seq(GetBigEndian(value.data()));
  return true;
}

Event Store::MessageEvent(const Message& m, UserId owner, Seq seq,
                          const std::string& origin_device) {
  Event ev;
  ev.user = owner;
  ev.seq = seq;
  ev.kind = static_cast<uint8_t>(EventKind::kMessage);
  ev.id = m.id;
  ev.from = m.from;
  ev.to = m.to;
  ev.ts = m.ts;
  ev.text = m.text;
  ev.client_msg_id = m.client_msg_id;
  ev.origin_device = origin_device;
  return ev;
}

bool Store::AddRecipientCopy(const Message& m, BatchState* b, Effects* e) {
  std::string key = MessageKey(m.to, m.from, m.id);
  if (Exists(key, *b)) return false;
  b->writes.Put(key, Pack(m));
  b->messages.insert(key);
  AppendEvent(MessageEvent(m, m.to, NextSeq(m.to), ""), b, e);
  return true;
}

void Store::AppendEvent(const Event& event, BatchState* b, Effects* e) {
  b->writes.Put(MailboxKey(event.user, event.seq), Pack(event));
  e->publish.push_back(event);
}

Status Store::Apply(std::vector<Request>* batch, Effects* effects) {
  if (!db_) {
    Status closed(ErrorCode::kStorage, "the shard's database is closed");
    for (Request& r : *batch) r.reply = EncodeError(r.frame.header, closed);
    return closed;
  }
  BatchState b;
  std::vector<Seq> sync_cursor(batch->size());
  for (size_t i = 0; i < batch->size(); ++i) {
    Request& r = (*batch)[i];
    switch (r.frame.type()) {
      case MsgType::kStoreMessage:
        HandleStoreMessage(&r, &b, effects);
        break;
      case MsgType::kDeliver:
        HandleDeliver(&r, &b, effects);
        break;
      case MsgType::kAck:
        HandleAck(&r, &b);
        break;
      case MsgType::kSync:
        PrepareSync(&r, &b, &sync_cursor[i]);
        break;
      default:
        r.reply = EncodeError(
            r.frame.header,
            Status(ErrorCode::kBadRequest,
                   std::string("a shard does not take ") +
                       MsgTypeName(r.frame.type())));
    }
  }
  if (b.writes.ApproximateSize() > leveldb::WriteBatch().ApproximateSize()) {
    leveldb::WriteOptions options;
    options.sync = b.needs_sync;
    leveldb::Status s = db_->Write(options, &b.writes);
    if (!s.ok()) {
      // Nothing of this batch is acknowledged; forget what it counted.
      heads_.clear();
      effects->publish.clear();
      effects->handoff.clear();
      Status err(ErrorCode::kStorage, "the shard could not write: " +
                                          s.ToString());
      for (Request& r : *batch) r.reply = EncodeError(r.frame.header, err);
      NLOG_ERROR("event=write-failed shard=%u requests=%zu error=\"%s\"",
                 shard_, batch->size(), s.ToString().c_str());
      return err;
    }
    if (options.sync) {
      ++syncs_;
      synced_requests_ += batch->size();
    }
  }
  for (size_t i = 0; i < batch->size(); ++i) {
    Request& r = (*batch)[i];
    if (r.frame.type() == MsgType::kSync && r.reply.empty()) {
      FinishSync(&r, sync_cursor[i]);
    }
  }
  return Status::Ok();
}

void Store::HandleStoreMessage(Request* r, BatchState* b, Effects* e) {
  const Header& h = r->frame.header;
  StoreMessage sm;
  Status s = DecodeBody(r->frame, &sm);
  Message& m = sm.message;
  if (s.ok() && (m.from != h.user || !Owns(h.user))) {
    s = Status(ErrorCode::kInternal, "message routed to the wrong shard");
  }
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  // A retried client_msg_id gets the first answer back and creates nothing.
  auto batch_key = std::make_pair(h.user.value, m.client_msg_id);
  SendRecord rec;
  auto earlier = b->sends.find(batch_key);
  std::string dedup_key = DedupKey(h.user, m.client_msg_id);
  std::string value;
  bool duplicate = false;
  if (earlier != b->sends.end()) {
    rec = earlier->second;
    duplicate = true;
  } else if (db_->Get({}, dedup_key, &value).ok() && Unpack(value, &rec)) {
    duplicate = true;
  }
  if (!duplicate) {
    rec.id = m.id;
    rec.to = m.to;
    rec.ts = m.ts;
    rec.seq = NextSeq(h.user);
    b->writes.Put(MessageKey(h.user, m.to, m.id), Pack(m));
    b->messages.insert(MessageKey(h.user, m.to, m.id));
    b->writes.Put(dedup_key, Pack(rec));
    b->sends[batch_key] = rec;
    AppendEvent(MessageEvent(m, h.user, rec.seq, h.device), b, e);
    if (m.to != m.from) {
      if (Owns(m.to)) {
        AddRecipientCopy(m, b, e);
      } else {
        Deliver d;
        d.message = m;
        d.outbox = next_outbox_++;
        b->writes.Put(OutboxKey(d.outbox), Pack(d));
        e->handoff.push_back(std::move(d));
      }
    }
    b->needs_sync = true;
    NLOG_DEBUG("event=stored id=%llu from=%llu to=%llu seq=%llu",
               static_cast<unsigned long long>(m.id.value),
               static_cast<unsigned long long>(m.from.value),
               static_cast<unsigned long long>(m.to.value),
               static_cast<unsigned long long>(rec.seq.value));
  }
  Processed p;
  p.id = rec.id;
  p.client_msg_id = m.client_msg_id;
  p.to = rec.to;
  p.ts = rec.ts;
  p.seq = rec.seq;
  r->reply = EncodeReply(h, MsgType::kProcessed, p);
}

void Store::HandleDeliver(Request* r, BatchState* b, Effects* e) {
  const Header& h = r->frame.header;
  Deliver d;
  Status s = DecodeBody(r->frame, &d);
  const Message& m = d.message;
  if (s.ok() && !Owns(m.to)) {
    s = Status(ErrorCode::kInternal, "hand-off routed to the wrong shard");
  }
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  // A repeated hand-off is acknowledged, not stored again.
  if (AddRecipientCopy(m, b, e)) b->needs_sync = true;
  DeliverAck ack;
  ack.outbox = d.outbox;
  ack.id = m.id;
  r->reply = EncodeReply(h, MsgType::kDeliverAck, ack);
}

void Store::HandleAck(Request* r, BatchState* b) {
  const Header& h = r->frame.header;
  Ack a;
  Status s = DecodeBody(r->frame, &a);
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  Seq cursor;
  ReadCursor(h.user, h.device, *b, &cursor);
  Seq target(std::min(a.seq.value, Head(h.user).value));
  if (target > cursor) {
    std::string key = CursorKey(h.user, h.device);
    std::string value;
    PutBigEndian(&value, target.value);
    b->writes.Put(key, value);
    b->cursors[key] = target;
    cursor = target;
  }
  AckReply reply;
  reply.cursor = cursor;
  r->reply = EncodeReply(h, MsgType::kAckReply, reply);
}

void Store::PrepareSync(Request* r, BatchState* b, Seq* cursor) {
  const Header& h = r->frame.header;
  Sync sync;
  Status s = DecodeBody(r->frame, &sync);
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  if (!sync.from_cursor) {
    *cursor = sync.after;
    return;
  }
  if (!ReadCursor(h.user, h.device, *b, cursor)) {
    // A device's first connection starts at the head of the mailbox.
    *cursor = Head(h.user);
    std::string key = CursorKey(h.user, h.device);
    std::string value;
    PutBigEndian(&value, cursor->value);
    b->writes.Put(key, value);
    b->cursors[key] = *cursor;
    b->needs_sync = true;
  }
}

void Store::FinishSync(Request* r, Seq after) {
  const Header& h = r->frame.header;
  Sync sync;
  DecodeBody(r->frame, &sync);
  uint32_t limit = std::clamp<uint32_t>(sync.limit, 1, kMaxSyncPage);
  SyncReply reply;
  BatchState none;
  ReadCursor(h.user, h.device, none, &reply.cursor);
  reply.head = Head(h.user);
  std::string prefix = MailboxPrefix(h.user);
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  for (it->Seek(MailboxKey(h.user, Seq(after.value + 1)));
       it->Valid() && HasPrefix(it->key(), prefix); it->Next()) {
    if (reply.events.size() >= limit) {
      reply.more = true;
      break;
    }
    Event ev;
    if (!Unpack(it->value().ToString(), &ev)) {
      r->reply = EncodeError(
          h, Status(ErrorCode::kInternal, "a mailbox entry is unreadable"));
      NLOG_ERROR("event=corrupt-value shard=%u user=%llu", shard_,
                 static_cast<unsigned long long>(h.user.value));
      return;
    }
    reply.events.push_back(std::move(ev));
  }
  r->reply = EncodeReply(h, MsgType::kSyncReply, reply);
}

std::vector<Deliver> Store::PendingHandoffs() const {
  std::vector<Deliver> out;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  for (it->Seek("o"); it->Valid() && HasPrefix(it->key(), "o"); it->Next()) {
    Deliver d;
    if (Unpack(it->value().ToString(), &d)) out.push_back(std::move(d));
  }
  return out;
}

Status Store::AckHandoff(const DeliverAck& ack) {
  std::string key = OutboxKey(ack.outbox), value;
  Deliver d;
  if (!db_->Get({}, key, &value).ok() || !Unpack(value, &d) ||
      d.message.id != ack.id) {
    return Status(ErrorCode::kNotFound, "no such hand-off");
  }
  leveldb::Status s = db_->Delete({}, key);
  if (!s.ok()) return Status(ErrorCode::kStorage, s.ToString());
  return Status::Ok();
}

}  // namespace stored
}  // namespace natter

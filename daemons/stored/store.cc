#include "daemons/stored/store.h"

#include <algorithm>
#include <set>

#include <leveldb/filter_policy.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>

#include "common/ids.h"
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

template <typename T>
bool Unpack(const std::string& bytes, T* out) {
  return UnpackValue(bytes, out);
}

bool HasPrefix(const leveldb::Slice& s, const std::string& prefix) {
  return s.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), s.data());
}

std::string Visible(const StoredMessage& copy, UserId user) {
  for (const ReactionRecord& r : copy.reactions) {
    if (r.user == user) return r.emoji;
  }
  return "";
}

// The items of one reply page (sync, history, chats): the page ends before
// their encoding would pass kMaxPageBytes, so that any reply fits a
// client's frame; the first item always goes in (one is far smaller).
class PageBudget {
 public:
  template <typename T>
  bool Fits(const T& item) {
    size_t bytes = EncodedSize(item);
    if (used_ > 0 && used_ + bytes > kMaxPageBytes) return false;
    used_ += bytes;
    return true;
  }

 private:
  size_t used_ = 0;
};

Event ChangeEvent(EventKind kind, UserId owner, Seq seq, const Message& m) {
  Event ev;
  ev.user = owner;
  ev.seq = seq;
  ev.kind = static_cast<uint8_t>(kind);
  ev.id = m.id;
  ev.from = m.from;
  ev.to = m.to;
  return ev;
}

}  // namespace

Store::Store(uint32_t shard, uint32_t shard_count)
    : shard_(shard), shard_count_(shard_count == 0 ? 1 : shard_count) {}

Store::~Store() { Close(); }

bool Store::Owns(UserId user) const {
  return HomeShard(user, shard_count_) == shard_;
}

Status Store::Open(const std::string& path, int max_open_files) {
  Close();
  leveldb::Options options;
  options.create_if_missing = true;
  options.max_open_files = std::max(max_open_files, 16);
  // Most reads of a send look for what is not there (a client_msg_id not
  // seen before): a Bloom filter per table answers those without reading
  // the table.
  if (!filter_) filter_.reset(leveldb::NewBloomFilterPolicy(10));
  options.filter_policy = filter_.get();
  // Messages are short and mostly unique: compressing tables costs CPU on
  // a busy shard for little disk saved.
  options.compression = leveldb::kNoCompression;
  // A larger memtable: fewer, larger level-0 tables, so a read looks in
  // fewer files and compaction rewrites less often.
  options.write_buffer_size = 32 << 20;
  options.max_file_size = 8 << 20;
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, path, &db);
  if (!s.ok()) return Status(ErrorCode::kStorage, path + ": " + s.ToString());
  db_.reset(db);
  Status upgraded = Upgrade();
  if (!upgraded.ok()) {
    Close();
    return Status(ErrorCode::kStorage, path + ": " + upgraded.message());
  }
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

Status Store::Upgrade() {
  std::string format;
  if (db_->Get({}, FormatKey(), &format).ok()) return Status::Ok();
  // Format 0: conversations have no r keys yet.
  leveldb::WriteBatch batch;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  leveldb::Status s;
  size_t chats = 0;
  for (it->Seek("c"); s.ok() && it->Valid() && HasPrefix(it->key(), "c"); it->Next()) {
    ChatRecord c;
    if (it->key().size() != 17 || !Unpack(it->value().ToString(), &c)) continue;
    UserId owner(GetBigEndian(it->key().data() + 1));
    UserId peer(GetBigEndian(it->key().data() + 9));
    batch.Put(RecentChatKey(owner, c.last_id, peer), "");
    ++chats;
    if (batch.ApproximateSize() >= (1 << 20)) {
      s = db_->Write({}, &batch);
      batch.Clear();
    }
  }
  if (s.ok()) s = it->status();
  PutBigEndian(&format, kFormat);
  batch.Put(FormatKey(), format);
  leveldb::WriteOptions synced;
  synced.sync = true;
  if (s.ok()) s = db_->Write(synced, &batch);
  if (!s.ok()) return Status(ErrorCode::kStorage, "upgrading the format: " + s.ToString());
  if (chats > 0) NLOG_INFO("event=upgraded shard=%u format=%llu chats=%zu", shard_,
                           static_cast<unsigned long long>(kFormat), chats);
  return Status::Ok();
}

Status Store::Backup(const std::string& path, uint64_t* records, uint64_t* bytes) {
  *records = *bytes = 0;
  if (!db_) return Status(ErrorCode::kStorage, "the shard's database is closed");
  leveldb::Options options;
  options.create_if_missing = true;
  options.error_if_exists = true;
  options.compression = leveldb::kNoCompression;
  std::unique_ptr<const leveldb::FilterPolicy> filter(leveldb::NewBloomFilterPolicy(10));
  options.filter_policy = filter.get();
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, path, &raw);
  if (!s.ok()) return Status(ErrorCode::kStorage, path + ": " + s.ToString());
  std::unique_ptr<leveldb::DB> copy(raw);
  const leveldb::Snapshot* snapshot = db_->GetSnapshot();
  leveldb::ReadOptions read;
  read.snapshot = snapshot;
  read.fill_cache = false;  // a backup should not push the working set out
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(read));
  leveldb::WriteBatch batch;
  for (it->SeekToFirst(); s.ok() && it->Valid(); it->Next()) {
    batch.Put(it->key(), it->value());
    ++*records;
    *bytes += it->key().size() + it->value().size();
    if (batch.ApproximateSize() >= (1 << 20)) {
      s = copy->Write({}, &batch);
      batch.Clear();
    }
  }
  if (s.ok()) s = it->status();
  leveldb::WriteOptions synced;
  synced.sync = true;
  if (s.ok()) s = copy->Write(synced, &batch);
  it.reset();
  db_->ReleaseSnapshot(snapshot);
  if (!s.ok()) return Status(ErrorCode::kStorage, "backup to " + path + ": " + s.ToString());
  return Status::Ok();
}

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

bool Store::Read(const std::string& key, const BatchState& b,
                 std::string* value) {
  auto it = b.written.find(key);
  if (it != b.written.end()) {
    *value = it->second;
    return true;
  }
  return db_->Get({}, key, value).ok();
}

template <typename T>
bool Store::ReadRecord(const std::string& key, const BatchState& b, T* out) {
  std::string value;
  return Read(key, b, &value) && Unpack(value, out);
}

void Store::Write(const std::string& key, std::string value, BatchState* b) {
  b->writes.Put(key, value);
  b->written[key] = std::move(value);
}

template <typename T>
void Store::WriteRecord(const std::string& key, const T& value, BatchState* b) {
  Write(key, Pack(value), b);
}

bool Store::ReadSeq(const std::string& key, const BatchState& b, Seq* out) {
  std::string value;
  if (!Read(key, b, &value) || value.size() != 8) return false;
  *out = Seq(GetBigEndian(value.data()));
  return true;
}

void Store::WriteSeq(const std::string& key, Seq seq, BatchState* b) {
  std::string value;
  PutBigEndian(&value, seq.value);
  Write(key, std::move(value), b);
}

void Store::AppendEvent(const Event& event, BatchState* b, Effects* e) {
  b->writes.Put(MailboxKey(event.user, event.seq), Pack(event));
  e->publish.push_back(event);
  e->publish_trace.push_back(trace_);
}

Event Store::MessageEvent(const Message& m, UserId owner, Seq seq,
                          const std::string& origin_device) {
  Event ev = ChangeEvent(EventKind::kMessage, owner, seq, m);
  ev.ts = m.ts;
  ev.text = m.text;
  ev.client_msg_id = m.client_msg_id;
  ev.origin_device = origin_device;
  return ev;
}

Status Store::Apply(std::vector<Request>* batch, Effects* effects) {
  if (!db_) {
    Status closed(ErrorCode::kStorage, "the shard's database is closed");
    for (Request& r : *batch) r.reply = EncodeError(r.frame.header, closed);
    return closed;
  }
  // The cache is bounded, and emptied only between batches: within one it
  // holds the seqs handed out but not yet on disk.
  if (heads_.size() >= max_cached_heads_) heads_.clear();
  BatchState b;
  b.written.reserve(batch->size() * 8);  // about what a send writes
  std::vector<Seq> sync_cursor(batch->size());
  for (size_t i = 0; i < batch->size(); ++i) {
    Request& r = (*batch)[i];
    trace_ = r.frame.header.trace;
    switch (r.frame.type()) {
      case MsgType::kStoreMessage: HandleStoreMessage(&r, &b, effects); break;
      case MsgType::kDeliver: HandleDeliver(&r, &b, effects); break;
      case MsgType::kAck: HandleAck(&r, &b, effects); break;
      case MsgType::kReact: HandleReact(&r, &b, effects); break;
      case MsgType::kSeen: HandleSeen(&r, &b, effects); break;
      case MsgType::kSync: PrepareSync(&r, &b, &sync_cursor[i]); break;
      case MsgType::kHistory:
      case MsgType::kChats:
        break;  // reads, after the commit
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
      effects->publish_trace.clear();
      effects->handoff.clear();
      Status err(ErrorCode::kStorage, "the shard could not write: " +
                                          s.ToString());
      for (Request& r : *batch) r.reply = EncodeError(r.frame.header, err);
      NLOG_ERROR("event=write-failed shard=%u requests=%zu error=%s",
                 shard_, batch->size(), LogValue(s.ToString()).c_str());
      return err;
    }
    if (options.sync) {
      ++syncs_;
      synced_requests_ += batch->size();
    }
  }
  for (size_t i = 0; i < batch->size(); ++i) {
    Request& r = (*batch)[i];
    if (!r.reply.empty()) continue;
    switch (r.frame.type()) {
      case MsgType::kSync: FinishSync(&r, sync_cursor[i]); break;
      case MsgType::kHistory: ReadHistory(&r); break;
      case MsgType::kChats: ReadChats(&r); break;
      default: break;
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
  std::string dedup_key = DedupKey(h.user, m.client_msg_id);
  SendRecord rec;
  if (!ReadRecord(dedup_key, *b, &rec)) {
    rec.id = m.id;
    rec.to = m.to;
    rec.ts = m.ts;
    rec.seq = NextSeq(h.user);
    WriteRecord(dedup_key, rec, b);
    WriteRecord(MessageKey(h.user, m.to, m.id), StoredMessage{m, {}}, b);
    NoteMessageInChat(h.user, m.to, m, b);
    AppendEvent(MessageEvent(m, h.user, rec.seq, h.device), b, e);
    if (m.to != m.from) {
      Deliver d;
      d.message = m;
      d.kind = static_cast<uint8_t>(HandoffKind::kMessage);
      d.target = m.to;
      Propagate(std::move(d), b, e);
    }
    b->needs_sync = true;
    NLOG_TRACE(h.trace, "event=stored id=%llu from=%llu to=%llu seq=%llu",
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

void Store::Propagate(Deliver d, BatchState* b, Effects* e) {
  if (Owns(d.target)) {
    ApplyHandoff(d, b, e);
    return;
  }
  d.outbox = next_outbox_++;
  d.trace = trace_;
  WriteRecord(OutboxKey(d.outbox), d, b);
  e->handoff.push_back(std::move(d));
}

bool Store::AddRecipientCopy(const Message& m, BatchState* b, Effects* e) {
  std::string key = MessageKey(m.to, m.from, m.id), ignored;
  if (Read(key, *b, &ignored)) return false;
  WriteRecord(key, StoredMessage{m, {}}, b);
  NoteMessageInChat(m.to, m.from, m, b);
  AppendEvent(MessageEvent(m, m.to, NextSeq(m.to), ""), b, e);
  return true;
}

void Store::NoteMessageInChat(UserId owner, UserId peer, const Message& m,
                              BatchState* b) {
  std::string key = ChatKey(owner, peer);
  ChatRecord c;
  ReadRecord(key, *b, &c);
  if (m.id > c.last_id) {
    c.last_id = m.id;
    c.last_ts = m.ts;
    c.last_from = m.from;
    c.last_text = m.text;
  }
  if (m.from != owner && m.id > c.read_upto) ++c.unread;
  WriteChat(owner, peer, c, b);
}

void Store::WriteChat(UserId owner, UserId peer, const ChatRecord& c, BatchState* b) {
  std::string key = ChatKey(owner, peer);
  ChatRecord before;
  bool existed = ReadRecord(key, *b, &before);
  if (!existed || before.last_id != c.last_id) {
    // The r keys are read only after the commit (ReadChats), never through
    // the batch's own view.
    if (existed) b->writes.Delete(RecentChatKey(owner, before.last_id, peer));
    b->writes.Put(RecentChatKey(owner, c.last_id, peer), "");
  }
  WriteRecord(key, c, b);
}

bool Store::SetReaction(StoredMessage* copy, UserId user,
                        const std::optional<std::string>& emoji,
                        uint64_t version) {
  for (ReactionRecord& r : copy->reactions) {
    if (r.user != user) continue;
    if (version <= r.version) return false;  // older than what is here
    r.emoji = emoji.value_or("");
    r.version = version;
    return true;
  }
  copy->reactions.push_back(ReactionRecord{user, emoji.value_or(""), version});
  return true;
}

bool Store::ApplyHandoff(const Deliver& d, BatchState* b, Effects* e) {
  switch (static_cast<HandoffKind>(d.kind)) {
    case HandoffKind::kMessage:
      return AddRecipientCopy(d.message, b, e);
    case HandoffKind::kReaction: {
      std::string key = MessageKey(d.target, d.by, d.id);
      StoredMessage copy;
      if (!ReadRecord(key, *b, &copy)) return false;
      std::string before = Visible(copy, d.by);
      if (!SetReaction(&copy, d.by, d.emoji, d.version)) return false;
      WriteRecord(key, copy, b);
      if (Visible(copy, d.by) != before) {
        Event ev = ChangeEvent(EventKind::kReaction, d.target,
                               NextSeq(d.target), copy.message);
        ev.by = d.by;
        ev.emoji = d.emoji;
        AppendEvent(ev, b, e);
      }
      return true;
    }
    case HandoffKind::kDelivered:
    case HandoffKind::kSeen: {
      bool seen = d.kind == static_cast<uint8_t>(HandoffKind::kSeen);
      std::string key = ChatKey(d.target, d.by);
      ChatRecord c;
      ReadRecord(key, *b, &c);
      MessageId& mark = seen ? c.seen_upto : c.delivered_upto;
      if (d.id <= mark) return false;
      mark = d.id;
      if (seen && c.delivered_upto < d.id) c.delivered_upto = d.id;
      WriteChat(d.target, d.by, c, b);
      Message about;
      about.id = d.id;
      about.from = d.target;
      about.to = d.by;
      Event ev = ChangeEvent(seen ? EventKind::kSeen : EventKind::kDelivered,
                             d.target, NextSeq(d.target), about);
      ev.by = d.by;
      AppendEvent(ev, b, e);
      return true;
    }
  }
  return false;
}

void Store::HandleDeliver(Request* r, BatchState* b, Effects* e) {
  const Header& h = r->frame.header;
  Deliver d;
  Status s = DecodeBody(r->frame, &d);
  if (s.ok() && d.target.value == 0) d.target = d.message.to;
  if (s.ok() && !Owns(d.target)) {
    s = Status(ErrorCode::kInternal, "hand-off routed to the wrong shard");
  }
  if (s.ok() && d.kind == static_cast<uint8_t>(HandoffKind::kReaction)) {
    // The copy comes first through the same outbox; if a retry reordered
    // them, ask for this one again later.
    std::string ignored;
    if (!Read(MessageKey(d.target, d.by, d.id), *b, &ignored)) {
      s = Status(ErrorCode::kUnavailable, "the message of this reaction is not here yet");
    }
  }
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  // A repeated hand-off is acknowledged and changes nothing.
  bool changed = ApplyHandoff(d, b, e);
  if (changed) b->needs_sync = true;
  NLOG_TRACE(h.trace, "event=handoff kind=%u target=%llu id=%llu changed=%s", d.kind,
             static_cast<unsigned long long>(d.target.value),
             static_cast<unsigned long long>(
                 d.kind == static_cast<uint8_t>(HandoffKind::kMessage) ? d.message.id.value
                                                                       : d.id.value),
             changed ? "yes" : "no");
  DeliverAck ack;
  ack.outbox = d.outbox;
  ack.id = d.kind == static_cast<uint8_t>(HandoffKind::kMessage) ? d.message.id : d.id;
  r->reply = EncodeReply(h, MsgType::kDeliverAck, ack);
}

void Store::HandleAck(Request* r, BatchState* b, Effects* e) {
  const Header& h = r->frame.header;
  Ack a;
  Status s = DecodeBody(r->frame, &a);
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  Seq cursor;
  std::string cursor_key = CursorKey(h.user, h.device);
  ReadSeq(cursor_key, *b, &cursor);
  Seq target(std::min(a.seq.value, Head(h.user).value));
  if (target > cursor) {
    WriteSeq(cursor_key, target, b);
    cursor = target;
  }
  // The first acknowledgement by any device of the user delivers what it
  // covers: tell each sender, once per sender, up to the newest message.
  Seq mark;
  std::string mark_key = AckMarkKey(h.user);
  ReadSeq(mark_key, *b, &mark);
  if (target > mark) {
    std::map<uint64_t, MessageId> newest;  // sender -> newest message
    std::string prefix = MailboxPrefix(h.user);
    std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
    for (it->Seek(MailboxKey(h.user, Seq(mark.value + 1)));
         it->Valid() && HasPrefix(it->key(), prefix); it->Next()) {
      if (GetBigEndian(it->key().data() + prefix.size()) > target.value) break;
      Event ev;
      if (!Unpack(it->value().ToString(), &ev)) continue;
      if (ev.kind != static_cast<uint8_t>(EventKind::kMessage) || ev.from == h.user) {
        continue;
      }
      MessageId& n = newest[ev.from.value];
      if (ev.id > n) n = ev.id;
    }
    WriteSeq(mark_key, target, b);
    for (const auto& [sender, id] : newest) {
      Deliver d;
      d.kind = static_cast<uint8_t>(HandoffKind::kDelivered);
      d.target = UserId(sender);
      d.by = h.user;
      d.id = id;
      Propagate(std::move(d), b, e);
    }
    if (!newest.empty()) b->needs_sync = true;
  }
  AckReply reply;
  reply.cursor = cursor;
  r->reply = EncodeReply(h, MsgType::kAckReply, reply);
}

Status Store::ReadOwnCopy(UserId user, UserId peer, MessageId id,
                          const BatchState& b, StoredMessage* copy) {
  if (ReadRecord(MessageKey(user, peer, id), b, copy)) return Status::Ok();
  return Status(ErrorCode::kNotFound, "message " + std::to_string(id.value) +
                                          " is not in your conversation with user " +
                                          std::to_string(peer.value));
}

void Store::HandleReact(Request* r, BatchState* b, Effects* e) {
  const Header& h = r->frame.header;
  React rq;
  Status s = DecodeBody(r->frame, &rq);
  std::string key = MessageKey(h.user, rq.peer, rq.id);
  StoredMessage copy;
  if (s.ok()) s = ReadOwnCopy(h.user, rq.peer, rq.id, *b, &copy);
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  Done done;
  if (Visible(copy, h.user) != rq.emoji.value_or("")) {
    Seq seq = NextSeq(h.user);  // also the change's version
    SetReaction(&copy, h.user, rq.emoji, seq.value);
    WriteRecord(key, copy, b);
    Event ev = ChangeEvent(EventKind::kReaction, h.user, seq, copy.message);
    ev.by = h.user;
    ev.emoji = rq.emoji;
    ev.origin_device = h.device;
    AppendEvent(ev, b, e);
    if (rq.peer != h.user) {
      Deliver d;
      d.kind = static_cast<uint8_t>(HandoffKind::kReaction);
      d.target = rq.peer;
      d.by = h.user;
      d.id = rq.id;
      d.emoji = rq.emoji;
      d.version = seq.value;
      Propagate(std::move(d), b, e);
    }
    b->needs_sync = true;
    done.seq = seq;
  }
  r->reply = EncodeReply(h, MsgType::kOk, done);
}

uint64_t Store::CountUnread(UserId user, UserId peer, MessageId after,
                            const BatchState& b) {
  std::string prefix = MessagePrefix(user, peer);
  std::set<std::string> keys;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  for (it->Seek(MessageKey(user, peer, MessageId(after.value + 1)));
       it->Valid() && HasPrefix(it->key(), prefix); it->Next()) {
    keys.insert(it->key().ToString());
  }
  std::string from = MessageKey(user, peer, MessageId(after.value + 1));
  for (const auto& [key, value] : b.written) {
    if (key.compare(0, prefix.size(), prefix) == 0 && key >= from) keys.insert(key);
  }
  uint64_t unread = 0;
  for (const std::string& key : keys) {
    StoredMessage m;
    if (ReadRecord(key, b, &m) && m.message.from == peer) ++unread;
  }
  return unread;
}

void Store::HandleSeen(Request* r, BatchState* b, Effects* e) {
  const Header& h = r->frame.header;
  MarkSeen rq;
  Status s = DecodeBody(r->frame, &rq);
  StoredMessage copy;
  if (s.ok()) s = ReadOwnCopy(h.user, rq.peer, rq.id, *b, &copy);
  if (s.ok() && copy.message.from != rq.peer) {
    s = Status(ErrorCode::kBadData, "only the peer's messages can be marked seen");
  }
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  std::string key = ChatKey(h.user, rq.peer);
  ChatRecord c;
  ReadRecord(key, *b, &c);
  Done done;
  if (rq.id > c.read_upto) {
    c.read_upto = rq.id;
    c.unread = CountUnread(h.user, rq.peer, rq.id, *b);
    WriteChat(h.user, rq.peer, c, b);
    // The user's other devices learn it too (they may show unread counts).
    done.seq = NextSeq(h.user);
    Event ev = ChangeEvent(EventKind::kSeen, h.user, done.seq, copy.message);
    ev.id = rq.id;
    ev.by = h.user;
    ev.origin_device = h.device;
    AppendEvent(ev, b, e);
    if (rq.peer != h.user) {
      Deliver d;
      d.kind = static_cast<uint8_t>(HandoffKind::kSeen);
      d.target = rq.peer;
      d.by = h.user;
      d.id = rq.id;
      Propagate(std::move(d), b, e);
    }
    b->needs_sync = true;
  }
  r->reply = EncodeReply(h, MsgType::kOk, done);
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
  std::string key = CursorKey(h.user, h.device);
  if (!ReadSeq(key, *b, cursor)) {
    // A device's first connection starts at the head of the mailbox.
    *cursor = Head(h.user);
    WriteSeq(key, *cursor, b);
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
  ReadSeq(CursorKey(h.user, h.device), none, &reply.cursor);
  reply.head = Head(h.user);
  std::string prefix = MailboxPrefix(h.user);
  PageBudget budget;
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
    if (!budget.Fits(ev)) {
      reply.more = true;
      break;
    }
    reply.events.push_back(std::move(ev));
  }
  r->reply = EncodeReply(h, MsgType::kSyncReply, reply);
}

void Store::ReadHistory(Request* r) {
  const Header& h = r->frame.header;
  History q;
  Status s = DecodeBody(r->frame, &q);
  if (s.ok() && q.mode > static_cast<uint8_t>(HistoryMode::kAfter)) {
    s = Status(ErrorCode::kBadRequest, "unknown history mode");
  }
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  uint32_t limit = q.limit == 0 ? kDefaultHistoryPage
                                : std::min(q.limit, kMaxHistoryPage);
  HistoryReply reply;
  BatchState none;
  ChatRecord chat;
  ReadRecord(ChatKey(h.user, q.peer), none, &chat);
  std::string prefix = MessagePrefix(h.user, q.peer);
  PageBudget budget;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  // Adds the message under the iterator to the page; false if the page is
  // full (another message lies beyond it: more).
  auto take = [&]() -> bool {
    if (reply.messages.size() >= limit) return false;
    StoredMessage copy;
    if (!Unpack(it->value().ToString(), &copy)) return true;
    HistoryItem item;
    item.message = std::move(copy.message);
    for (const ReactionRecord& rr : copy.reactions) {
      if (!rr.emoji.empty()) item.reactions.push_back(Reaction{rr.user, rr.emoji});
    }
    const MessageId id = item.message.id;
    if (item.message.from == h.user) {
      item.delivered = id <= chat.delivered_upto;
      item.seen = id <= chat.seen_upto;
    } else {
      item.delivered = true;
      item.seen = id <= chat.read_upto;
    }
    if (!budget.Fits(item)) return false;
    reply.messages.push_back(std::move(item));
    return true;
  };
  auto mode = static_cast<HistoryMode>(q.mode);
  if (mode == HistoryMode::kAfter) {
    if (q.bound < UINT64_MAX) {
      for (it->Seek(MessageKey(h.user, q.peer, MessageId(q.bound + 1)));
           it->Valid() && HasPrefix(it->key(), prefix); it->Next()) {
        if (!take()) {
          reply.more = true;
          break;
        }
      }
    }
  } else {
    // Backwards from just below an upper bound, then turned oldest first.
    uint64_t upper = UINT64_MAX;  // exclusive
    if (mode == HistoryMode::kAt) upper = LastIdAt(q.bound).value + 1;
    if (mode == HistoryMode::kBefore) upper = q.bound;
    it->Seek(MessageKey(h.user, q.peer, MessageId(upper)));
    if (it->Valid()) {
      it->Prev();
    } else {
      it->SeekToLast();
    }
    // The key at `upper` itself (UINT64_MAX) is never a message id.
    for (; it->Valid() && HasPrefix(it->key(), prefix); it->Prev()) {
      if (GetBigEndian(it->key().data() + prefix.size()) >= upper) continue;
      if (!take()) {
        reply.more = true;
        break;
      }
    }
    std::reverse(reply.messages.begin(), reply.messages.end());
  }
  r->reply = EncodeReply(h, MsgType::kHistoryReply, reply);
}

void Store::ReadChats(Request* r) {
  const Header& h = r->frame.header;
  Chats q;
  Status s = DecodeBody(r->frame, &q);
  if (!s.ok()) {
    r->reply = EncodeError(h, s);
    return;
  }
  ChatsReply reply;
  PageBudget budget;
  BatchState none;
  // Backwards through the r keys from just below the cursor: the most
  // recent conversation first.
  std::string prefix = RecentChatPrefix(h.user);
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  it->Seek(RecentChatKey(h.user, q.before_id, q.before_peer));
  if (it->Valid()) {
    it->Prev();
  } else {
    it->SeekToLast();
  }
  for (; it->Valid() && HasPrefix(it->key(), prefix); it->Prev()) {
    if (it->key().size() != prefix.size() + 16) continue;
    MessageId last_id(GetBigEndian(it->key().data() + prefix.size()));
    UserId peer(GetBigEndian(it->key().data() + prefix.size() + 8));
    ChatRecord c;
    if (!ReadRecord(ChatKey(h.user, peer), none, &c) || c.last_id != last_id) {
      continue;  // not where the conversation is now
    }
    ChatItem item;
    item.peer = peer;
    item.last_id = c.last_id;
    item.last_ts = c.last_ts;
    item.last_from = c.last_from;
    item.last_text = std::move(c.last_text);
    item.unread = c.unread;
    item.delivered = c.delivered_upto;
    item.seen = c.seen_upto;
    if (reply.chats.size() >= kMaxChatsPage || !budget.Fits(item)) {
      reply.more = true;
      break;
    }
    reply.chats.push_back(std::move(item));
  }
  r->reply = EncodeReply(h, MsgType::kChatsReply, reply);
}

std::vector<Deliver> Store::PendingHandoffs(uint64_t after, size_t limit) const {
  std::vector<Deliver> out;
  if (!db_) return out;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  for (it->Seek(OutboxKey(after + 1));
       out.size() < limit && it->Valid() && HasPrefix(it->key(), "o");
       it->Next()) {
    Deliver d;
    if (Unpack(it->value().ToString(), &d)) out.push_back(std::move(d));
  }
  return out;
}

Status Store::AckHandoff(const DeliverAck& ack) {
  if (!db_) return Status(ErrorCode::kStorage, "the shard's database is closed");
  std::string key = OutboxKey(ack.outbox), value;
  Deliver d;
  if (!db_->Get({}, key, &value).ok() || !Unpack(value, &d)) {
    return Status(ErrorCode::kNotFound, "no such hand-off");
  }
  MessageId id = d.kind == static_cast<uint8_t>(HandoffKind::kMessage) ? d.message.id : d.id;
  if (id != ack.id) return Status(ErrorCode::kNotFound, "no such hand-off");
  leveldb::Status s = db_->Delete({}, key);
  if (!s.ok()) return Status(ErrorCode::kStorage, s.ToString());
  return Status::Ok();
}

}  // namespace stored
}  // namespace natter

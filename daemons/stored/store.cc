#include "daemons/stored/store.h"

#include <leveldb/filter_policy.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <sodium.h>

#include <algorithm>
#include <set>

#include "common/ids.h"
#include "common/log.h"
#include "common/overloaded.h"
#include "common/shard.h"
#include "common/text.h"
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

}  // namespace

std::string PackMailboxEntry(const Event& event) {
  const Message* m = event.message();
  if (m == nullptr) return Pack(event);
  return kMessageRefTag +
         Pack(MessageRef{event.origin_device, m->from, m->to, m->id});
}

MailboxEntry UnpackMailboxEntry(const std::string& bytes, Event* whole,
                                MessageRef* ref) {
  if (bytes.empty() || bytes[0] != kMessageRefTag)
    return Unpack(bytes, whole) ? MailboxEntry::kWhole : MailboxEntry::kBad;
  return Unpack(bytes.substr(1), ref) ? MailboxEntry::kRef : MailboxEntry::kBad;
}

namespace {

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

// A receipt in target's mailbox: `by` received or saw target's messages to
// it up to id.
template <typename Kind>
Event ReceiptEntry(UserId target, Seq seq, UserId by, MessageId id,
                   std::string origin = "") {
  return Event{target, seq, std::move(origin), Kind{{id, target, by, by}}};
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
  records_.Clear();
  std::string applied;
  applied_ = {};
  if (db_->Get({}, AppliedIndexKey(), &applied).ok() && applied.size() == 16) {
    applied_ = {GetBigEndian(applied.data()), GetBigEndian(applied.data() + 8)};
  }
  voters_.clear();
  db_->Get({}, VotersKey(), &voters_);
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  it->Seek(OutboxKey(UINT64_MAX));
  if (it->Valid()) {
    it->Prev();
  } else {
    it->SeekToLast();
  }
  // The next outbox number as the database records it (the same on every
  // replica); a database from before the record: after its last hand-off.
  next_outbox_ = 1;
  std::string next;
  if (db_->Get({}, NextOutboxKey(), &next).ok() && next.size() == 8) {
    next_outbox_ = GetBigEndian(next.data());
  } else if (it->Valid() && HasPrefix(it->key(), "o") &&
             it->key().size() == 9) {
    next_outbox_ = GetBigEndian(it->key().data() + 1) + 1;
  }
  return Status::Ok();
}

void Store::Close() {
  db_.reset();
  records_.Clear();
}

Status Store::Upgrade() {
  std::string format;
  if (db_->Get({}, FormatKey(), &format).ok()) {
    if (format.size() != 8) {
      return Status(ErrorCode::kStorage,
                    "the database's format mark is not 8 bytes (damaged?)");
    }
    const uint64_t was = GetBigEndian(format.data());
    if (was > kFormat) {
      return Status(ErrorCode::kStorage,
                    "the database's format (" + std::to_string(was) +
                        ") is newer than this natter-stored's (" +
                        std::to_string(kFormat) + ")");
    }
    if (was == kFormat) return Status::Ok();
    // Format 1 to 2: whole message events stay readable; new ones are
    // references.  Only the mark changes.
    format.clear();
    PutBigEndian(&format, kFormat);
    leveldb::WriteOptions synced;
    synced.sync = true;
    leveldb::Status s = db_->Put(synced, FormatKey(), format);
    if (!s.ok())
      return Status(ErrorCode::kStorage,
                    "upgrading the format: " + s.ToString());
    NLOG_INFO("event=upgraded shard=%u format=%llu from=%llu", shard_,
              static_cast<unsigned long long>(kFormat),
              static_cast<unsigned long long>(was));
    return Status::Ok();
  }
  // Format 0: conversations have no r keys yet.
  leveldb::WriteBatch batch;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  leveldb::Status s;
  size_t chats = 0;
  for (it->Seek("c"); s.ok() && it->Valid() && HasPrefix(it->key(), "c");
       it->Next()) {
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
  if (!s.ok())
    return Status(ErrorCode::kStorage, "upgrading the format: " + s.ToString());
  if (chats > 0)
    NLOG_INFO("event=upgraded shard=%u format=%llu chats=%zu", shard_,
              static_cast<unsigned long long>(kFormat), chats);
  return Status::Ok();
}

Status Store::SyncWrites() {
  if (!db_)
    return Status(ErrorCode::kStorage, "the shard's database is closed");
  leveldb::WriteOptions synced;
  synced.sync = true;
  leveldb::WriteBatch nothing;
  leveldb::Status s = db_->Write(synced, &nothing);
  if (!s.ok()) return Status(ErrorCode::kStorage, s.ToString());
  ++syncs_;
  return Status::Ok();
}

Store::SnapshotReader::~SnapshotReader() {
  it_.reset();
  if (db_ != nullptr && snapshot_ != nullptr) db_->ReleaseSnapshot(snapshot_);
}

bool Store::SnapshotReader::Next(size_t max_bytes, size_t max_pairs,
                                 std::vector<std::string>* records) {
  records->clear();
  size_t bytes = 0;
  for (;
       it_->Valid() && (records->empty() ||
                        (bytes < max_bytes && records->size() < 2 * max_pairs));
       it_->Next()) {
    records->push_back(it_->key().ToString());
    records->push_back(it_->value().ToString());
    bytes += it_->key().size() + it_->value().size();
  }
  if (!it_->status().ok()) {
    status_ = Status(ErrorCode::kStorage, it_->status().ToString());
    return false;
  }
  return !records->empty();
}

std::unique_ptr<Store::SnapshotReader> Store::ReadSnapshot() {
  if (!db_) return nullptr;
  std::unique_ptr<SnapshotReader> r(new SnapshotReader());
  r->db_ = db_.get();
  r->snapshot_ = db_->GetSnapshot();
  leveldb::ReadOptions read;
  read.snapshot = r->snapshot_;
  read.fill_cache = false;
  r->it_.reset(db_->NewIterator(read));
  r->it_->SeekToFirst();
  return r;
}

Status Store::Digest(std::string* hex, uint64_t* records, LogPosition* at) {
  *records = 0;
  *at = {};
  if (!db_)
    return Status(ErrorCode::kStorage, "the shard's database is closed");
  const leveldb::Snapshot* snapshot = db_->GetSnapshot();
  leveldb::ReadOptions read;
  read.snapshot = snapshot;
  read.fill_cache = false;
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, crypto_generichash_BYTES);
  const std::string applied_key = AppliedIndexKey();
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(read));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key() == applied_key) {
      if (it->value().size() == 16) {
        *at = {GetBigEndian(it->value().data()),
               GetBigEndian(it->value().data() + 8)};
      }
      continue;
    }
    std::string lengths;
    PutBigEndian(&lengths, it->key().size(), 4);
    PutBigEndian(&lengths, it->value().size(), 4);
    crypto_generichash_update(
        &state, reinterpret_cast<const unsigned char*>(lengths.data()),
        lengths.size());
    crypto_generichash_update(
        &state, reinterpret_cast<const unsigned char*>(it->key().data()),
        it->key().size());
    crypto_generichash_update(
        &state, reinterpret_cast<const unsigned char*>(it->value().data()),
        it->value().size());
    ++*records;
  }
  leveldb::Status s = it->status();
  it.reset();
  db_->ReleaseSnapshot(snapshot);
  if (!s.ok()) return Status(ErrorCode::kStorage, s.ToString());
  unsigned char digest[crypto_generichash_BYTES];
  crypto_generichash_final(&state, digest, sizeof digest);
  *hex = ToHex(digest, sizeof digest);
  return Status::Ok();
}

Status Store::Backup(const std::string& path, uint64_t* records,
                     uint64_t* bytes) {
  *records = *bytes = 0;
  if (!db_)
    return Status(ErrorCode::kStorage, "the shard's database is closed");
  leveldb::Options options;
  options.create_if_missing = true;
  options.error_if_exists = true;
  options.compression = leveldb::kNoCompression;
  std::unique_ptr<const leveldb::FilterPolicy> filter(
      leveldb::NewBloomFilterPolicy(10));
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
  if (!s.ok())
    return Status(ErrorCode::kStorage,
                  "backup to " + path + ": " + s.ToString());
  return Status::Ok();
}

Seq Store::Head(UserId user) {
  auto cached = heads_.find(user);
  if (cached != heads_.end()) return cached->second;
  Seq head;
  std::string prefix = MailboxPrefix(user);
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  // An empty mailbox is told going forward: stepping back from the next
  // key would walk every version of the keys before it ("n" and "l" are
  // rewritten at each batch, "o" keys deleted), thousands while they are
  // in the memtable.
  it->Seek(prefix);
  if (!it->Valid() || !HasPrefix(it->key(), prefix)) {
    heads_[user] = head;
    return head;
  }
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
  if (!RecordCache::Keeps(key)) return db_->Get({}, key, value).ok();
  if (records_.Get(key, value)) return true;
  if (!db_->Get({}, key, value).ok()) return false;
  records_.Put(key, *value);
  return true;
}

template <typename T>
bool Store::ReadRecord(const std::string& key, const BatchState& b, T* out) {
  std::string value;
  return Read(key, b, &value) && Unpack(value, out);
}

void Store::Write(const std::string& key, std::string value, BatchState* b) {
  // Into the batch at the commit, once: a key written twice in a batch (a
  // conversation's record, a cursor) goes once.
  b->written.insert_or_assign(key, std::move(value));
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
  b->writes.Put(MailboxKey(event.user, event.seq), PackMailboxEntry(event));
  e->publish.push_back(event);
  e->publish_trace.push_back(trace_);
}

// The second pass over a batch, after the commit: the reads.
class Store::Reader {
 public:
  Reader(Store* store, Request* r, Seq sync_cursor)
      : store_(store), r_(r), sync_cursor_(sync_cursor) {}
  Status operator()(const Sync& q) {
    return store_->FinishSync(r_, q, sync_cursor_);
  }
  Status operator()(const History& q) { return store_->ReadHistory(r_, q); }
  Status operator()(const Chats& q) { return store_->ReadChats(r_, q); }
  template <typename Written>
  Status operator()(const Written&) {
    return Status::Ok();  // answered in the first pass
  }

 private:
  Store* store_;
  Request* r_;
  Seq sync_cursor_;
};

// The first pass over a batch: each request as its body, before the
// commit; reads wait for the second (after it).
class Store::Writer {
 public:
  Writer(Store* store, Request* r, BatchState* b, Effects* e, Seq* sync_cursor)
      : store_(store), r_(r), b_(b), e_(e), sync_cursor_(sync_cursor) {}
  Status operator()(const StoreMessage& m) {
    return store_->HandleStoreMessage(r_, m, b_, e_);
  }
  Status operator()(const Handoff& d) {
    return store_->HandleHandoff(r_, d, b_, e_);
  }
  Status operator()(const Ack& a) { return store_->HandleAck(r_, a, b_, e_); }
  Status operator()(const React& q) {
    return store_->HandleReact(r_, q, b_, e_);
  }
  Status operator()(const MarkSeen& q) {
    return store_->HandleSeen(r_, q, b_, e_);
  }
  Status operator()(const Sync& q) {
    return store_->PrepareSync(r_, q, b_, sync_cursor_);
  }
  Status operator()(const Attach& q) { return store_->HandleAttach(r_, q, b_); }
  Status operator()(const History&) { return Status::Ok(); }
  Status operator()(const Chats&) { return Status::Ok(); }
  template <typename Other>
  Status operator()(const Other&) {
    return Status(ErrorCode::kBadRequest,
                  std::string("a shard does not take ") +
                      MsgTypeName(FrameOf<Other>::kType));
  }

 private:
  Store* store_;
  Request* r_;
  BatchState* b_;
  Effects* e_;
  Seq* sync_cursor_;
};

Status Store::Apply(std::vector<Request>* batch, Effects* effects,
                    LogPosition at, const std::string* voters) {
  if (!db_) {
    Status closed(ErrorCode::kStorage, "the shard's database is closed");
    for (Request& r : *batch) r.reply = EncodeError(r.frame.header, closed);
    return closed;
  }
  // The cache is bounded, and emptied only between batches: within one it
  // holds the seqs handed out but not yet on disk.
  if (heads_.size() >= max_cached_heads_) heads_.clear();
  const uint64_t outbox_before = next_outbox_;
  BatchState b;
  b.written.reserve(batch->size() * 8);  // about what a send writes
  std::vector<Seq> sync_cursor(batch->size());
  for (size_t i = 0; i < batch->size(); ++i) {
    Request& r = (*batch)[i];
    trace_ = r.frame.header.trace;
    Status s =
        VisitBody(r.frame, Writer(this, &r, &b, effects, &sync_cursor[i]));
    if (!s.ok()) r.reply = EncodeError(r.frame.header, s);
  }
  // The records read back within the batch (Write), beside those written
  // straight into it (their keys never meet).
  for (const auto& [key, value] : b.written) b.writes.Put(key, value);
  if (next_outbox_ != outbox_before) {
    std::string v;
    PutBigEndian(&v, next_outbox_);
    b.writes.Put(NextOutboxKey(), v);
  }
  if (at.index > 0) {
    std::string v;
    PutBigEndian(&v, at.index);
    PutBigEndian(&v, at.term);
    b.writes.Put(AppliedIndexKey(), v);
    b.needs_sync = false;  // the log on disk has it
  }
  if (voters != nullptr) b.writes.Put(VotersKey(), *voters);
  if (b.writes.ApproximateSize() > leveldb::WriteBatch().ApproximateSize()) {
    leveldb::WriteOptions options;
    options.sync = b.needs_sync;
    leveldb::Status s = db_->Write(options, &b.writes);
    if (!s.ok()) {
      // Nothing of this batch is acknowledged; forget what it counted.
      heads_.clear();
      records_.Clear();
      next_outbox_ = outbox_before;
      effects->publish.clear();
      effects->publish_trace.clear();
      effects->handoff.clear();
      Status err(ErrorCode::kStorage,
                 "the shard could not write: " + s.ToString());
      for (Request& r : *batch) r.reply = EncodeError(r.frame.header, err);
      NLOG_ERROR("event=write-failed shard=%u requests=%zu error=%s", shard_,
                 batch->size(), LogValue(s.ToString()).c_str());
      return err;
    }
    if (options.sync) {
      ++syncs_;
      synced_requests_ += batch->size();
    }
    if (at.index > 0) applied_ = at;
    if (voters != nullptr) voters_ = *voters;
    // On disk now: the records a later batch reads come from memory.
    for (const auto& [key, value] : b.written) {
      if (RecordCache::Keeps(key)) records_.Put(key, value);
    }
  }
  for (size_t i = 0; i < batch->size(); ++i) {
    Request& r = (*batch)[i];
    if (!r.reply.empty()) continue;
    Status s = VisitBody(r.frame, Reader(this, &r, sync_cursor[i]));
    if (!s.ok()) r.reply = EncodeError(r.frame.header, s);
  }
  return Status::Ok();
}

Status Store::HandleStoreMessage(Request* r, const StoreMessage& sm,
                                 BatchState* b, Effects* e) {
  const Header& h = r->frame.header;
  const Message& m = sm.message;
  if (m.from != h.user || !Owns(h.user)) {
    return Status(ErrorCode::kInternal, "message routed to the wrong shard");
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
    AppendEvent(Event{h.user, rec.seq, h.device, MessageEvent{m}}, b, e);
    if (m.to != m.from && Owns(m.to)) {
      // A send seen for the first time (no dedup record) has an id routed
      // gave it just now: the recipient's copy cannot be here, so it is
      // not looked for (a hand-off from another shard may come twice).
      AddRecipientCopy(m, b, e, /*fresh=*/true);
    } else if (m.to != m.from) {
      Propagate(m.to, CopyHandoff{m}, b, e);
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
  r->reply = EncodeReply(h, p);
  return Status::Ok();
}

void Store::Propagate(UserId target, HandoffWhat what, BatchState* b,
                      Effects* e) {
  Handoff d;
  d.target = target;
  d.what = std::move(what);
  if (Owns(target)) {
    ApplyHandoff(d, b, e);
    return;
  }
  d.outbox = next_outbox_++;
  d.trace = trace_;
  WriteRecord(OutboxKey(d.outbox), d, b);
  e->handoff.push_back(std::move(d));
}

bool Store::AddRecipientCopy(const Message& m, BatchState* b, Effects* e,
                             bool fresh) {
  std::string key = MessageKey(m.to, m.from, m.id), ignored;
  if (!fresh && Read(key, *b, &ignored)) return false;
  WriteRecord(key, StoredMessage{m, {}}, b);
  NoteMessageInChat(m.to, m.from, m, b);
  AppendEvent(Event{m.to, NextSeq(m.to), "", MessageEvent{m}}, b, e);
  return true;
}

void Store::NoteMessageInChat(UserId owner, UserId peer, const Message& m,
                              BatchState* b) {
  ChatRecord c;
  const std::optional<MessageId> was = ReadChat(owner, peer, *b, &c);
  if (m.id > c.last_id) {
    c.last_id = m.id;
    c.last_ts = m.ts;
    c.last_from = m.from;
    // The text is the copy's (m owner peer last_id): not written again.
    c.last_text.clear();
  }
  if (m.from != owner && m.id > c.read_upto) ++c.unread;
  WriteChat(owner, peer, c, was, b);
}

std::optional<MessageId> Store::ReadChat(UserId owner, UserId peer,
                                         const BatchState& b, ChatRecord* c) {
  if (!ReadRecord(ChatKey(owner, peer), b, c)) return std::nullopt;
  return c->last_id;
}

void Store::WriteChat(UserId owner, UserId peer, const ChatRecord& c,
                      std::optional<MessageId> was, BatchState* b) {
  if (was != c.last_id) {
    // The r keys are read only after the commit (ReadChats), never through
    // the batch's own view.
    if (was) b->writes.Delete(RecentChatKey(owner, *was, peer));
    b->writes.Put(RecentChatKey(owner, c.last_id, peer), "");
  }
  WriteRecord(ChatKey(owner, peer), c, b);
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

bool Store::ApplyHandoff(const Handoff& d, BatchState* b, Effects* e) {
  return std::visit(
      Overloaded{
          [&](const CopyHandoff& c) {
            return AddRecipientCopy(c.message, b, e);
          },
          [&](const ReactionHandoff& x) {
            std::string key = MessageKey(d.target, x.by, x.id);
            StoredMessage copy;
            if (!ReadRecord(key, *b, &copy)) return false;
            std::string before = Visible(copy, x.by);
            if (!SetReaction(&copy, x.by, x.emoji, x.version)) return false;
            WriteRecord(key, copy, b);
            if (Visible(copy, x.by) != before) {
              const Message& m = copy.message;
              AppendEvent(
                  Event{d.target, NextSeq(d.target), "",
                        ReactionEvent{m.id, m.from, m.to, x.by, x.emoji}},
                  b, e);
            }
            return true;
          },
          [&](const DeliveredHandoff& x) {
            return ApplyReceipt(d.target, x.by, x.id, false, b, e);
          },
          [&](const SeenHandoff& x) {
            return ApplyReceipt(d.target, x.by, x.id, true, b, e);
          },
      },
      d.what);
}

bool Store::ApplyReceipt(UserId target, UserId by, MessageId id, bool seen,
                         BatchState* b, Effects* e) {
  ChatRecord c;
  const std::optional<MessageId> was = ReadChat(target, by, *b, &c);
  MessageId& mark = seen ? c.seen_upto : c.delivered_upto;
  if (id <= mark) return false;
  mark = id;
  if (seen && c.delivered_upto < id) c.delivered_upto = id;
  WriteChat(target, by, c, was, b);
  Seq seq = NextSeq(target);
  AppendEvent(seen ? ReceiptEntry<SeenEvent>(target, seq, by, id)
                   : ReceiptEntry<DeliveredEvent>(target, seq, by, id),
              b, e);
  return true;
}

Status Store::HandleHandoff(Request* r, const Handoff& d, BatchState* b,
                            Effects* e) {
  const Header& h = r->frame.header;
  if (!Owns(d.target))
    return Status(ErrorCode::kInternal, "hand-off routed to the wrong shard");
  if (const ReactionHandoff* x = std::get_if<ReactionHandoff>(&d.what)) {
    // The copy comes first through the same outbox; if a retry reordered
    // them, ask for this one again later.
    std::string ignored;
    if (!Read(MessageKey(d.target, x->by, x->id), *b, &ignored)) {
      return Status(ErrorCode::kUnavailable,
                    "the message of this reaction is not here yet");
    }
  }
  // A repeated hand-off is acknowledged and changes nothing.
  bool changed = ApplyHandoff(d, b, e);
  if (changed) b->needs_sync = true;
  NLOG_TRACE(h.trace, "event=handoff kind=%u target=%llu id=%llu changed=%s",
             static_cast<unsigned>(d.kind()),
             static_cast<unsigned long long>(d.target.value),
             static_cast<unsigned long long>(d.id().value),
             changed ? "yes" : "no");
  HandoffAck ack;
  ack.outbox = d.outbox;
  ack.id = d.id();
  r->reply = EncodeReply(h, ack);
  return Status::Ok();
}

Status Store::HandleAck(Request* r, const Ack& a, BatchState* b, Effects* e) {
  const Header& h = r->frame.header;
  Seq cursor;
  std::string cursor_key = CursorKey(h.user, h.device);
  ReadSeq(cursor_key, *b, &cursor);
  Seq target(std::min(a.seq.value, Head(h.user).value));
  if (target > cursor) WriteSeq(cursor_key, target, b);
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
      MessageRef ref;
      switch (UnpackMailboxEntry(it->value().ToString(), &ev, &ref)) {
        case MailboxEntry::kWhole:
          if (const Message* m = ev.message()) {
            ref.from = m->from;
            ref.id = m->id;
            break;
          }
          continue;
        case MailboxEntry::kRef:
          break;
        case MailboxEntry::kBad:
          continue;
      }
      if (ref.from == h.user) continue;
      MessageId& n = newest[ref.from.value];
      if (ref.id > n) n = ref.id;
    }
    WriteSeq(mark_key, target, b);
    for (const auto& [sender, id] : newest) {
      Propagate(UserId(sender), DeliveredHandoff{h.user, id}, b, e);
    }
    if (!newest.empty()) b->needs_sync = true;
  }
  // No answer (protocol 2): a device learns its cursor from a sync.
  return Status::Ok();
}

Status Store::ReadOwnCopy(UserId user, UserId peer, MessageId id,
                          const BatchState& b, StoredMessage* copy) {
  if (ReadRecord(MessageKey(user, peer, id), b, copy)) return Status::Ok();
  return Status(ErrorCode::kNotFound,
                "message " + std::to_string(id.value) +
                    " is not in your conversation with user " +
                    std::to_string(peer.value));
}

Status Store::HandleReact(Request* r, const React& rq, BatchState* b,
                          Effects* e) {
  const Header& h = r->frame.header;
  std::string key = MessageKey(h.user, rq.peer, rq.id);
  StoredMessage copy;
  Status s = ReadOwnCopy(h.user, rq.peer, rq.id, *b, &copy);
  if (!s.ok()) return s;
  Done done;
  if (Visible(copy, h.user) != rq.emoji.value_or("")) {
    Seq seq = NextSeq(h.user);  // also the change's version
    SetReaction(&copy, h.user, rq.emoji, seq.value);
    WriteRecord(key, copy, b);
    const Message& m = copy.message;
    AppendEvent(Event{h.user, seq, h.device,
                      ReactionEvent{m.id, m.from, m.to, h.user, rq.emoji}},
                b, e);
    if (rq.peer != h.user) {
      Propagate(rq.peer, ReactionHandoff{h.user, rq.id, rq.emoji, seq.value}, b,
                e);
    }
    b->needs_sync = true;
    done.seq = seq;
  }
  r->reply = EncodeReply(h, done);
  return Status::Ok();
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
    if (key.compare(0, prefix.size(), prefix) == 0 && key >= from)
      keys.insert(key);
  }
  uint64_t unread = 0;
  for (const std::string& key : keys) {
    StoredMessage m;
    if (ReadRecord(key, b, &m) && m.message.from == peer) ++unread;
  }
  return unread;
}

Status Store::HandleSeen(Request* r, const MarkSeen& rq, BatchState* b,
                         Effects* e) {
  const Header& h = r->frame.header;
  StoredMessage copy;
  Status s = ReadOwnCopy(h.user, rq.peer, rq.id, *b, &copy);
  if (!s.ok()) return s;
  if (copy.message.from != rq.peer) {
    return Status(ErrorCode::kBadData,
                  "only the peer's messages can be marked seen");
  }
  ChatRecord c;
  const std::optional<MessageId> was = ReadChat(h.user, rq.peer, *b, &c);
  Done done;
  if (rq.id > c.read_upto) {
    c.read_upto = rq.id;
    c.unread = CountUnread(h.user, rq.peer, rq.id, *b);
    WriteChat(h.user, rq.peer, c, was, b);
    // The user's other devices learn it too (they may show unread counts).
    done.seq = NextSeq(h.user);
    AppendEvent(Event{h.user, done.seq, h.device,
                      SeenEvent{{rq.id, rq.peer, h.user, h.user}}},
                b, e);
    if (rq.peer != h.user) Propagate(rq.peer, SeenHandoff{h.user, rq.id}, b, e);
    b->needs_sync = true;
  }
  r->reply = EncodeReply(h, done);
  return Status::Ok();
}

Status Store::HandleAttach(Request* r, const Attach&, BatchState* b) {
  const Header& h = r->frame.header;
  Attached reply;
  reply.cursor = StartCursor(h.user, h.device, b);
  r->reply = EncodeReply(h, reply);
  return Status::Ok();
}

Seq Store::StartCursor(UserId user, const std::string& device, BatchState* b) {
  std::string key = CursorKey(user, device);
  Seq cursor;
  if (!ReadSeq(key, *b, &cursor)) {
    // A device's first connection starts at the head of the mailbox (it
    // reads the past with history).
    cursor = Head(user);
    WriteSeq(key, cursor, b);
    b->needs_sync = true;
  }
  return cursor;
}

Status Store::PrepareSync(Request* r, const Sync& sync, BatchState* b,
                          Seq* cursor) {
  const Header& h = r->frame.header;
  // A device frontd did not attach (a frontd of an older version) gets
  // its cursor here, as at its hello.
  *cursor = sync.from_cursor ? StartCursor(h.user, h.device, b) : sync.after;
  return Status::Ok();
}

Status Store::FinishSync(Request* r, const Sync& sync, Seq after) {
  const Header& h = r->frame.header;
  uint32_t limit = std::clamp<uint32_t>(sync.limit, 1, kMaxSyncPage);
  SyncReply reply;
  BatchState none;
  ReadSeq(CursorKey(h.user, h.device), none, &reply.cursor);
  reply.head = Head(h.user);
  std::string prefix = MailboxPrefix(h.user);
  PageBudget budget;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  // Where the messages the events refer to are read.
  std::unique_ptr<leveldb::Iterator> copies(db_->NewIterator({}));
  for (it->Seek(MailboxKey(h.user, Seq(after.value + 1)));
       it->Valid() && HasPrefix(it->key(), prefix); it->Next()) {
    if (reply.events.size() >= limit) {
      reply.more = true;
      break;
    }
    Event ev;
    const Seq seq(GetBigEndian(it->key().data() + prefix.size()));
    if (!ReadMailboxEntry(h.user, seq, it->value().ToString(), copies.get(),
                          &ev)) {
      NLOG_ERROR("event=corrupt-value shard=%u user=%llu seq=%llu", shard_,
                 static_cast<unsigned long long>(h.user.value),
                 static_cast<unsigned long long>(seq.value));
      return Status(ErrorCode::kInternal, "a mailbox entry is unreadable");
    }
    if (!budget.Fits(ev)) {
      reply.more = true;
      break;
    }
    reply.events.push_back(std::move(ev));
  }
  r->reply = EncodeReply(h, reply);
  return Status::Ok();
}

bool Store::ReadMailboxEntry(UserId user, Seq seq, const std::string& bytes,
                             leveldb::Iterator* copies, Event* out) {
  MessageRef ref;
  switch (UnpackMailboxEntry(bytes, out, &ref)) {
    case MailboxEntry::kWhole:
      return true;
    case MailboxEntry::kBad:
      return false;
    case MailboxEntry::kRef:
      break;
  }
  // A page's events follow their conversations' copies in order, so the
  // next copy is mostly the one after the last: a step, not a seek.
  const UserId peer = ref.from == user ? ref.to : ref.from;
  const std::string key = MessageKey(user, peer, ref.id);
  if (copies->Valid()) copies->Next();
  if (!copies->Valid() || copies->key() != key) copies->Seek(key);
  StoredMessage copy;
  if (!copies->Valid() || copies->key() != key ||
      !Unpack(copies->value().ToString(), &copy))
    return false;
  out->user = user;
  out->seq = seq;
  out->origin_device = std::move(ref.origin_device);
  out->what = MessageEvent{std::move(copy.message)};
  return true;
}

Status Store::ReadHistory(Request* r, const History& q) {
  const Header& h = r->frame.header;
  uint32_t limit =
      q.limit == 0 ? kDefaultHistoryPage : std::min(q.limit, kMaxHistoryPage);
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
      if (!rr.emoji.empty())
        item.reactions.push_back(Reaction{rr.user, rr.emoji});
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
  const HistoryMode mode = q.mode;
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
  r->reply = EncodeReply(h, reply);
  return Status::Ok();
}

Status Store::ReadChats(Request* r, const Chats& q) {
  const Header& h = r->frame.header;
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
    // From the copy; a format 1 record still has its own.
    StoredMessage last;
    item.last_text =
        ReadRecord(MessageKey(h.user, peer, c.last_id), none, &last)
            ? std::move(last.message.text)
            : std::move(c.last_text);
    item.unread = c.unread;
    item.delivered = c.delivered_upto;
    item.seen = c.seen_upto;
    if (reply.chats.size() >= kMaxChatsPage || !budget.Fits(item)) {
      reply.more = true;
      break;
    }
    reply.chats.push_back(std::move(item));
  }
  r->reply = EncodeReply(h, reply);
  return Status::Ok();
}

std::vector<Handoff> Store::PendingHandoffs(uint64_t after,
                                            size_t limit) const {
  std::vector<Handoff> out;
  if (!db_) return out;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator({}));
  for (it->Seek(OutboxKey(after + 1));
       out.size() < limit && it->Valid() && HasPrefix(it->key(), "o");
       it->Next()) {
    Handoff d;
    if (Unpack(it->value().ToString(), &d)) out.push_back(std::move(d));
  }
  return out;
}

Status Store::AckHandoff(const HandoffAck& ack, LogPosition at) {
  if (!db_)
    return Status(ErrorCode::kStorage, "the shard's database is closed");
  std::string key = OutboxKey(ack.outbox), value;
  Handoff d;
  leveldb::WriteBatch writes;
  Status found = Status::Ok();
  if (!db_->Get({}, key, &value).ok() || !Unpack(value, &d) ||
      d.id() != ack.id) {
    found = Status(ErrorCode::kNotFound, "no such hand-off");
  } else {
    writes.Delete(key);
  }
  if (at.index > 0) {
    std::string v;
    PutBigEndian(&v, at.index);
    PutBigEndian(&v, at.term);
    writes.Put(AppliedIndexKey(), v);
  }
  leveldb::Status s = db_->Write({}, &writes);
  if (!s.ok()) return Status(ErrorCode::kStorage, s.ToString());
  if (at.index > 0) applied_ = at;
  return found;
}

}  // namespace stored
}  // namespace natter

// Store: one shard's durable state in LevelDB, and the rules that change it.
// It knows nothing of sockets: the shard's service (stored.h) decodes
// requests, hands a batch to Apply, and sends what Apply says to send only
// after Apply returns ok — that is, after the batch is synced to disk.
//
// Group commit: Apply writes every request of a batch in one WriteBatch and
// one sync, so durability costs latency, not throughput.  Within a batch,
// a request sees what earlier requests of the same batch wrote.
//
// Not thread-safe; one thread owns a Store.
#ifndef NATTER_DAEMONS_STORED_STORE_H_
#define NATTER_DAEMONS_STORED_STORE_H_

#include <leveldb/db.h>
#include <leveldb/filter_policy.h>
#include <leveldb/write_batch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/proto.h"
#include "common/status.h"
#include "daemons/stored/record_cache.h"

namespace natter {
namespace stored {

// What the shard keeps per client_msg_id, so a retried send returns the
// first answer.
struct SendRecord {
  MessageId id;
  UserId to;
  uint64_t ts = 0;
  Seq seq;
  NATTER_WIRE(4, id, to, ts, seq)
};

// A user's reaction on a copy.  An empty emoji is a removal, kept so that
// an older change arriving late cannot bring the reaction back.
struct ReactionRecord {
  UserId user;
  std::string emoji;
  uint64_t version = 0;
  NATTER_WIRE(3, user, emoji, version)
};

// A user's copy of a message.
struct StoredMessage {
  Message message;
  std::vector<ReactionRecord> reactions;
  NATTER_WIRE(2, message, reactions)
};

// A user's conversation with a peer.
struct ChatRecord {
  MessageId last_id;
  uint64_t last_ts = 0;
  UserId last_from;
  std::string last_text;
  uint64_t unread = 0;       // the peer's messages after read_upto
  MessageId delivered_upto;  // the user's messages the peer has received
  MessageId seen_upto;       // the user's messages the peer has seen
  MessageId read_upto;       // the peer's messages the user has seen
  NATTER_WIRE(8, last_id, last_ts, last_from, last_text, unread, delivered_upto,
              seen_upto, read_upto)
};

// A message event as a mailbox keeps it (format 2): which of the user's
// copies it is about (m user peer id, the peer being from or to), not the
// message again, so a message's text is written once per user.  Its bytes
// are kMessageRefTag, then this; every other event is kept whole, as is a
// message event of a format 1 database.
struct MessageRef {
  std::string origin_device;
  UserId from;
  UserId to;
  MessageId id;
  NATTER_WIRE(4, origin_device, from, to, id)
};
// 0xc1: a byte MessagePack never uses, so no whole event starts with it.
constexpr char kMessageRefTag = '\xc1';

// Reads a value from the disk.  Values were written by this program, but a
// damaged disk or an old version may hold anything: a bad value is a failed
// read, never a crash.
template <typename T>
bool UnpackValue(const std::string& bytes, T* out) {
  try {
    size_t offset = 0;
    msgpack::object_handle h =
        msgpack::unpack(bytes.data(), bytes.size(), offset, nullptr, nullptr,
                        msgpack::unpack_limit(4096, 256, kMaxDaemonFrameBytes,
                                              kMaxDaemonFrameBytes, 0, 8));
    if (offset != bytes.size()) return false;
    h.get().convert(*out);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

// A mailbox entry's bytes for an event: a MessageRef for a message.
std::string PackMailboxEntry(const Event& event);
// What a mailbox entry's bytes hold: a whole event (in whole), a
// reference (in ref; the event's user and seq are the key's), or nothing
// readable.
enum class MailboxEntry { kBad, kWhole, kRef };
MailboxEntry UnpackMailboxEntry(const std::string& bytes, Event* whole,
                                MessageRef* ref);

// One request of a batch: its decoded frame.  The reply, if any, is filled
// in by Apply (an encoded frame with the request's correlation id).
struct Request {
  Frame frame;
  std::string reply;
};

// What a committed batch makes the shard send besides replies.
struct Effects {
  std::vector<Event> publish;           // to notifyd, one topic per user
  std::vector<uint64_t> publish_trace;  // each event's trace id
  std::vector<Handoff> handoff;         // new outbox entries, to other shards
};

// Where a replicated shard's database is in its Raft log: the last entry
// applied, and its term.
struct LogPosition {
  uint64_t index = 0;
  uint64_t term = 0;
};

class Store {
 public:
  Store(uint32_t shard, uint32_t shard_count);
  ~Store();

  // max_open_files: the most table files LevelDB keeps open (each takes a
  // descriptor; the daemon sizes it to its open-files limit).
  Status Open(const std::string& path, int max_open_files = 1000);
  void Close();
  // Makes what was written so far durable (a synced empty write): before
  // the Raft log may forget the entries it applied.
  Status SyncWrites();
  bool is_open() const { return db_ != nullptr; }

  // Applies the batch in one synced write.  On ok, every request has its
  // reply and effects says what else to send.  On a write error nothing
  // is acknowledged: every request gets a retryable kStorage error reply,
  // and the in-memory state is reset from disk.
  //
  // With a log index (a replicated shard's committed entry), the index is
  // written in the same batch, unsynced: the Raft log on disk holds the
  // entry, and after a crash the replica applies again what follows the
  // index the database holds (applied_index()).
  // A configuration entry's voters (raft::EncodeVoters), if given, are
  // written too (voters()).
  Status Apply(std::vector<Request>* batch, Effects* effects,
               LogPosition at = {}, const std::string* voters = nullptr);
  // The last log index applied (0: none, or not replicated).
  uint64_t applied_index() const { return applied_.index; }
  LogPosition applied() const { return applied_; }
  // The shard's voters as of applied() (raft::EncodeVoters), as the last
  // configuration applied or the database taken from the leader says;
  // empty if the database does not record them.
  const std::string& voters() const { return voters_; }

  // Up to limit hand-offs not yet acknowledged, from the outbox on disk,
  // in outbox order, starting after outbox number `after`.
  std::vector<Handoff> PendingHandoffs(uint64_t after = 0,
                                       size_t limit = SIZE_MAX) const;

  // The other shard acknowledged a hand-off: forget it.
  // With a log index: as for Apply.
  Status AckHandoff(const HandoffAck& ack, LogPosition at = {});

  // Counters: synced writes, and the requests they carried.
  uint64_t syncs() const { return syncs_; }
  uint64_t synced_requests() const { return synced_requests_; }

  // A consistent copy of the database as it is now (a LevelDB snapshot),
  // into a new database in folder path; safe to call from another thread
  // while this one serves.
  Status Backup(const std::string& path, uint64_t* records, uint64_t* bytes);

  // Every key and value of the database as it is now (a LevelDB snapshot),
  // read in pieces: a replica's database streamed to another.
  class SnapshotReader {
   public:
    ~SnapshotReader();
    // The next pieces, up to about max_bytes and at most max_pairs (one at
    // least), as key, value, key, value ...; false when there are no more.
    bool Next(size_t max_bytes, size_t max_pairs,
              std::vector<std::string>* records);
    Status status() const { return status_; }

   private:
    friend class Store;
    leveldb::DB* db_ = nullptr;
    const leveldb::Snapshot* snapshot_ = nullptr;
    std::unique_ptr<leveldb::Iterator> it_;
    Status status_ = Status::Ok();
  };
  std::unique_ptr<SnapshotReader> ReadSnapshot();

  // A digest (BLAKE2b-256, hex) of every key and value of the database as
  // it is now (a LevelDB snapshot), but the applied-entry record, and the
  // log position it is at: replicas at one position hold the same.  Safe
  // from another thread, as Backup.
  Status Digest(std::string* hex, uint64_t* records, LogPosition* at);

  // The records of the send path kept in memory (record_cache.h): at most
  // this many bytes.
  static constexpr size_t kRecordCacheBytes = 32 << 20;
  const RecordCache& records() const { return records_; }

  // For tests and tools.
  void set_max_cached_heads(size_t n) { max_cached_heads_ = n; }
  Seq Head(UserId user);
  bool Owns(UserId user) const;
  leveldb::DB* db() { return db_.get(); }

 private:
  // Per-batch scratch: every value written so far in this batch, by key,
  // so that later requests of the batch read them.
  struct BatchState {
    leveldb::WriteBatch writes;
    // Records a later request of the batch may read (Write), put into
    // writes at the commit; the rest (mailbox entries, r keys) go
    // straight into writes.
    std::unordered_map<std::string, std::string> written;
    bool needs_sync = false;
  };

  // The two passes over a batch (store.cc): a visitor of each request's
  // body before the commit, and one after it.
  class Writer;
  class Reader;
  using HandoffWhat = decltype(Handoff::what);

  // Requests that write (before the commit).  An error returned is the
  // request's reply.
  Status HandleStoreMessage(Request* r, const StoreMessage& sm, BatchState* b,
                            Effects* e);
  Status HandleHandoff(Request* r, const Handoff& d, BatchState* b, Effects* e);
  Status HandleAck(Request* r, const Ack& a, BatchState* b, Effects* e);
  Status HandleReact(Request* r, const React& q, BatchState* b, Effects* e);
  Status HandleSeen(Request* r, const MarkSeen& q, BatchState* b, Effects* e);
  // Sync is in two parts: the cursor (a write, for a new device) before the
  // commit, the read of events after it.
  Status PrepareSync(Request* r, const Sync& q, BatchState* b, Seq* cursor);
  // A device's hello (through frontd): its cursor begins now if it has none.
  Status HandleAttach(Request* r, const Attach& q, BatchState* b);
  // The device's cursor, made at the head of the mailbox if it has none.
  Seq StartCursor(UserId user, const std::string& device, BatchState* b);
  // Requests that only read (after the commit).
  Status FinishSync(Request* r, const Sync& q, Seq cursor);
  Status ReadHistory(Request* r, const History& q);
  Status ReadChats(Request* r, const Chats& q);

  // A hand-off's change, applied to a user of this shard.  Returns false if
  // it changed nothing (it was applied before).
  bool ApplyHandoff(const Handoff& d, BatchState* b, Effects* e);
  // The target's messages to `by` were received (or seen) up to id.
  bool ApplyReceipt(UserId target, UserId by, MessageId id, bool seen,
                    BatchState* b, Effects* e);
  // Applies a change about target here if target lives here, else puts it
  // in the outbox for target's shard.
  void Propagate(UserId target, HandoffWhat what, BatchState* b, Effects* e);

  // The recipient's copy of m, its conversation and mailbox event; false
  // if the copy is here already (a hand-off again).  fresh: m cannot be
  // here (a send just stored), so its copy is not looked for.
  bool AddRecipientCopy(const Message& m, BatchState* b, Effects* e,
                        bool fresh = false);
  // The user's own copy of message id in its conversation with peer: what
  // a reaction or a seen mark may touch (kNotFound for anything else).
  // The event of user's mailbox entry seq (a reference made whole from
  // the user's copy, read with copies: an iterator the caller keeps for a
  // page); false if unreadable.
  bool ReadMailboxEntry(UserId user, Seq seq, const std::string& bytes,
                        leveldb::Iterator* copies, Event* out);
  Status ReadOwnCopy(UserId user, UserId peer, MessageId id,
                     const BatchState& b, StoredMessage* copy);
  void NoteMessageInChat(UserId owner, UserId peer, const Message& m,
                         BatchState* b);
  // Writes the owner's conversation with peer and keeps its place among
  // the owner's conversations by recency (the r keys).
  // The conversation's record (its last_id then), or none yet.
  std::optional<MessageId> ReadChat(UserId owner, UserId peer,
                                    const BatchState& b, ChatRecord* c);
  // Writes c, and moves its r key if its last_id is not `was` (what it
  // had; none: it did not exist).
  void WriteChat(UserId owner, UserId peer, const ChatRecord& c,
                 std::optional<MessageId> was, BatchState* b);
  // Gives a database of an older format what this one needs (at Open).
  Status Upgrade();
  bool SetReaction(StoredMessage* copy, UserId user,
                   const std::optional<std::string>& emoji, uint64_t version);
  uint64_t CountUnread(UserId user, UserId peer, MessageId after,
                       const BatchState& b);

  Seq NextSeq(UserId user);
  void AppendEvent(const Event& event, BatchState* b, Effects* e);

  // Reads a key as this batch sees it (the batch first, then the disk).
  bool Read(const std::string& key, const BatchState& b, std::string* value);
  template <typename T>
  bool ReadRecord(const std::string& key, const BatchState& b, T* out);
  void Write(const std::string& key, std::string value, BatchState* b);
  template <typename T>
  void WriteRecord(const std::string& key, const T& value, BatchState* b);
  bool ReadSeq(const std::string& key, const BatchState& b, Seq* out);
  void WriteSeq(const std::string& key, Seq seq, BatchState* b);

  uint32_t shard_;
  uint32_t shard_count_;
  // Declared before db_, which uses it, so that it goes after.
  std::unique_ptr<const leveldb::FilterPolicy> filter_;
  std::unique_ptr<leveldb::DB> db_;
  // Cache of each user's head seq; emptied before a batch once it holds
  // max_cached_heads_ users (a miss costs one seek).
  size_t max_cached_heads_ = 1000000;
  std::unordered_map<UserId, Seq> heads_;
  RecordCache records_{kRecordCacheBytes};
  uint64_t next_outbox_ = 1;
  uint64_t trace_ = 0;  // the trace id of the request being applied
  uint64_t syncs_ = 0;
  LogPosition applied_;
  std::string voters_;
  uint64_t synced_requests_ = 0;
};

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_STORE_H_

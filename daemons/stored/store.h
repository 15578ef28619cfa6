// Store: one shard's durable state in LevelDB, and the rules that change it.
// It knows nothing of sockets: the shard's service (stored.h) decodes
// requests, hands a batch to Apply, and sends what Apply says to send only
// after Apply returns ok — that is, after the batch is synced to disk.
//
// Group commit: Apply writes every request of a batch in one WriteBatch and
// one sync, so durability costs latency, not throughput.
//
// Not thread-safe; one thread owns a Store.
#ifndef NATTER_DAEMONS_STORED_STORE_H_
#define NATTER_DAEMONS_STORED_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <leveldb/db.h>
#include <leveldb/write_batch.h>

#include "common/proto.h"
#include "common/status.h"

namespace natter {
namespace stored {

// What the shard keeps per client_msg_id, so a retried send returns the
// first answer.
struct SendRecord {
  MessageId id;
  UserId to;
  uint64_t ts = 0;
  Seq seq;
  MSGPACK_DEFINE_ARRAY(id, to, ts, seq);
};

// One request of a batch: its decoded frame.  The reply, if any, is filled
// in by Apply (an encoded frame with the request's correlation id).
struct Request {
  Frame frame;
  std::string reply;
};

// What a committed batch makes the shard send besides replies.
struct Effects {
  std::vector<Event> publish;    // to notifyd, one topic per user
  std::vector<Deliver> handoff;  // new outbox entries, to other shards
};

class Store {
 public:
  Store(uint32_t shard, uint32_t shard_count);
  ~Store();

  Status Open(const std::string& path);
  void Close();

  // Applies the batch in one synced write.  On ok, every request has its
  // reply and effects says what else to send.  On a write error nothing
  // is acknowledged: every request that needed the write gets a retryable
  // kStorage error reply, and the in-memory state is reset from disk.
  Status Apply(std::vector<Request>* batch, Effects* effects);

  // The hand-offs not yet acknowledged, as found on disk at Open.
  std::vector<Deliver> PendingHandoffs() const;

  // The recipient's shard acknowledged a hand-off: forget it.
  Status AckHandoff(const DeliverAck& ack);

  // Counters: synced writes, and the requests they carried.
  uint64_t syncs() const { return syncs_; }
  uint64_t synced_requests() const { return synced_requests_; }

  // For tests and tools.
  Seq Head(UserId user);
  bool Owns(UserId user) const;
  leveldb::DB* db() { return db_.get(); }

 private:
  // Per-batch scratch: what earlier requests of the same batch wrote.
  struct BatchState {
    leveldb::WriteBatch writes;
    std::map<std::pair<uint64_t, std::string>, SendRecord> sends;
    std::set<std::string> messages;  // MessageKeys written
    std::map<std::string, Seq> cursors;
    bool needs_sync = false;
  };

  void HandleStoreMessage(Request* r, BatchState* b, Effects* e);
  void HandleDeliver(Request* r, BatchState* b, Effects* e);
  void HandleAck(Request* r, BatchState* b);
  // Sync is in two parts: the cursor (a write, for a new device) before the
  // commit, the read of events after it.
  void PrepareSync(Request* r, BatchState* b, Seq* cursor);
  void FinishSync(Request* r, Seq cursor);

  Seq NextSeq(UserId user);
  bool Exists(const std::string& key, const BatchState& b);
  bool ReadCursor(UserId user, const std::string& device, const BatchState& b,
                  Seq* out);
  void AppendEvent(const Event& event, BatchState* b, Effects* e);
  static Event MessageEvent(const Message& m, UserId owner, Seq seq,
                            const std::string& origin_device);
  // The recipient's copy and mailbox event; false if it is there already.
  bool AddRecipientCopy(const Message& m, BatchState* b, Effects* e);

  uint32_t shard_;
  uint32_t shard_count_;
  std::unique_ptr<leveldb::DB> db_;
  std::unordered_map<UserId, Seq> heads_;  // cache of each user's head seq
  uint64_t next_outbox_ = 1;
  uint64_t syncs_ = 0;
  uint64_t synced_requests_ = 0;
};

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_STORE_H_

// One replica of a shard: the Raft node (raft.h) of the shard's replica
// set, its log on disk (raft_log.h) and its links to the other replicas.
//
// A shard of R replicas (the shard's entry in [cell] shards: R endpoints
// joined by commas) is one Raft group; replica K is node K + 1.  Every
// write the shard takes is an entry of the log, applied by every replica
// to its own database in log order once a majority has it on disk; the
// leader alone answers, publishes and hands off.  A shard of one replica
// is a group of one: the same path, committed as soon as its own log has
// the entry.
//
// Raft messages go out on a DEALER to each other replica's ROUTER (the
// shard's request socket) as kRaft frames, and come in on this replica's
// ROUTER; Stored passes them to Step.
#ifndef NATTER_DAEMONS_STORED_REPLICA_H_
#define NATTER_DAEMONS_STORED_REPLICA_H_

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/net.h"
#include "common/proto.h"
#include "common/shard.h"
#include "common/status.h"
#include "daemons/stored/raft.h"
#include "daemons/stored/raft_log.h"
#include "daemons/stored/store.h"

namespace natter {
namespace stored {

// What a replica does with what its log commits and what its reads wait
// for (Stored).
class ReplicaHandler {
 public:
  virtual ~ReplicaHandler() = default;
  // A committed entry, in log order, each once (also the no-ops and
  // configuration entries, which change nothing in the database).
  // An error stops the applying: the same entry comes again later.
  virtual Status ApplyEntry(const raft::Entry& entry) = 0;
  // The read asked with context may be served now.
  virtual void ServeRead(uint64_t context) = 0;
  // Makes the database durable up to what was applied: the log is about
  // to forget those entries.
  virtual Status SyncApplied() = 0;
  // The database as it is now, to stream to a replica behind the log.
  virtual std::unique_ptr<Store::SnapshotReader> ReadDatabase() = 0;
};

class Replica {
 public:
  struct Settings {
    uint32_t shard = 0;
    uint32_t replica = 0;  // this one: 0 .. R-1
    // Every replica's, with its key, by replica number; "" in the place of
    // one removed (the shard map's "-").
    std::vector<std::string> endpoints;
    std::string log_path;  // the Raft log's folder
    int tick_ms = 100;
    int election_ticks = 10;
    uint64_t log_entries = 100000;  // compacted past this many
    // Added to a running shard (natter-stored --join): a new replica with
    // no voters of its own, which waits for the leader's log.  Otherwise a
    // new shard's voters are its replicas in the shard map.
    bool join = false;
  };

  // What the shard's database says of itself.
  struct Database {
    LogPosition applied;           // where it is in the log
    std::vector<uint64_t> voters;  // as of applied, by node id; empty if
                                   // the database does not record them
    bool installed = false;        // just taken from the leader
  };

  // Opens the log (a kStorage error if it cannot be read) and makes the
  // node.  A log that ends before the database (lost, a crash while a
  // database was being installed, or the database restored from a backup)
  // starts again after it, as after a snapshot there, with the voters the
  // database records (else the shard map's); so does the log of a
  // database just installed, whatever it held.
  static Status Create(const Settings& settings, zmq::context_t& ctx,
                       const CurveIdentity& me, const Database& db,
                       std::unique_ptr<Replica>* out);

  // Connects to the other replicas (their links are kept up by a watch of
  // their own: a replica down does not keep this one from serving).
  Status Start();

  // A kRaft frame that came in on the shard's ROUTER.
  void Step(const RaftMessage& m);
  // Ticks the node as time passes; the ms until the next tick is due.
  int TickDue();
  // Appends data to the log; its index, or 0 if this replica does not
  // lead.
  uint64_t Propose(const std::string& data);
  // Proposes replica `replica` added to the shard's voters (it must have
  // an endpoint) or removed from them: the configuration's index in the
  // log.  If the voters are so already, and committed, done is set and
  // index is that configuration's.  kUnavailable off the leader; kBusy
  // while another change, or this leader's first entry, is not committed.
  Status ProposeMembership(bool add, uint32_t replica, uint64_t* index,
                           bool* done);
  // The voters now, by replica number.
  std::vector<uint64_t> Voters() const;
  // The shard map was read again: links to the replicas added (new places
  // at the end) and none to those removed; a place whose endpoint changed
  // otherwise is refused (a replica keeps its endpoint).
  Status SetEndpoints(const std::vector<std::string>& endpoints);
  // Asks to read: ServeRead(context) once every entry up to now (this
  // replica's own proposals too) is applied and this replica is confirmed
  // the leader.  False if it does not lead.
  bool Read(uint64_t context);
  // Persists, sends and applies what the node has ready.  A failed write
  // of the log is returned: the replica must then be made again from its
  // log on disk (nothing unsaved went out).
  Status Process(ReplicaHandler* handler);

  bool leading() const { return node_->role() == raft::Role::kLeader; }
  // The leader's replica number + 1, 0 if none is known.
  uint32_t leader() const { return static_cast<uint32_t>(node_->leader()); }
  uint64_t term() const { return node_->term(); }
  const raft::Node& node() const { return *node_; }
  const RaftLog& log() const { return *log_; }
  uint64_t elections() const { return node_->elections(); }
  uint64_t messages_dropped() const { return dropped_; }
  uint64_t compactions() const { return compactions_; }
  uint64_t snapshots_sent() const { return snapshots_sent_; }
  // A database is being streamed to a replica: come back soon.
  bool streaming() const { return !streams_.empty(); }

  // The log is compacted when it holds more than kCompactBytes or
  // Settings::log_entries, down to the last kKeepBytes or tenth of those
  // applied (for followers a little behind).
  static constexpr uint64_t kCompactBytes = 64 << 20;
  static constexpr uint64_t kKeepBytes = 16 << 20;
  // Nor past the place of a database streamed to a replica, until it has
  // said it holds it (else it may need another, and another, while writes
  // go on), for at most kHoldFor, and while the log holds at most
  // kHoldBytes.
  static constexpr std::chrono::seconds kHoldFor{300};
  static constexpr uint64_t kHoldBytes = 256 << 20;

 private:
  Replica(zmq::context_t& ctx, const Settings& s) : ctx_(ctx), settings_(s) {}
  void Send(const raft::Message& m);
  Status MaybeCompact(ReplicaHandler* handler);
  // Sends what it can of the databases being streamed to replicas.
  void PumpSnapshots();

  // The database streamed to a replica behind the compacted log, in
  // chunks of kChunkBytes, a few a turn.
  struct Stream {
    SnapshotChunk next;  // meta filled; records and seq of the next chunk
    std::unique_ptr<Store::SnapshotReader> reader;
    std::string frame;  // a chunk the peer's queue did not take yet
    bool finished = false;
  };
  static constexpr size_t kChunkBytes = 256 * 1024;
  static constexpr int kPeerQueue = 256;
  // The frame decoder takes arrays of up to 2 * kMaxSyncPage elements.
  static constexpr size_t kChunkPairs = kMaxSyncPage - 100;

  struct PendingRead {
    uint64_t context = 0;
    uint64_t index = 0;      // served once applied reaches it
    bool confirmed = false;  // the node confirmed the leadership
  };

  zmq::context_t& ctx_;
  Settings settings_;
  CurveIdentity me_;
  std::unique_ptr<RaftLog> log_;
  std::unique_ptr<raft::Node> node_;
  uint64_t skip_through_ = 0;  // entries the database has applied already
  // Links peers_[k] to replica k (none to itself or a removed one).
  Status LinkPeer(size_t k);

  std::vector<zmq::socket_t> peers_;  // DEALER to replica k (none to self)
  std::unique_ptr<LinkWatch> watch_;
  std::chrono::steady_clock::time_point next_tick_;
  std::vector<PendingRead> reads_;
  uint64_t dropped_ = 0;
  uint64_t compactions_ = 0;
  uint64_t snapshots_sent_ = 0;
  ReplicaHandler* handler_ = nullptr;   // during Process
  std::map<uint64_t, Stream> streams_;  // by peer node id
  // Databases streamed whole, by peer node id: their index, and until when
  // the log keeps what follows it.
  std::map<uint64_t, std::pair<uint64_t, std::chrono::steady_clock::time_point>>
      streamed_;
};

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_REPLICA_H_

// natter-stored: one shard.  A ROUTER takes requests from routed; each turn
// drains every request waiting (up to batch-max) into one Store::Apply —
// one write batch, one sync — and only then replies, publishes the events
// to notifyd and hands recipients' copies to their shards.
//
// Hand-offs go out on a DEALER to routed and stay in the outbox (on disk
// and here) until the other shard acknowledges; unacknowledged ones are
// sent again every handoff-retry.  At most kMaxPendingInMemory are kept
// here; past that (another shard down for long) the rest wait on disk
// only and are read back as the ones here are acknowledged.
//
// A failed write (a full disk, an I/O error) closes the database: nothing
// of that batch is acknowledged, every request gets a retryable storage
// error, and the shard tries to open the database again every second;
// once it opens, it serves again from what is on disk.
#ifndef NATTER_DAEMONS_STORED_STORED_H_
#define NATTER_DAEMONS_STORED_STORED_H_

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/config.h"
#include "common/control.h"
#include "common/curve.h"
#include "common/daemon.h"
#include "common/metrics.h"
#include "common/net.h"
#include "daemons/stored/rate_limit.h"
#include "daemons/stored/replica.h"
#include "daemons/stored/store.h"

namespace natter {
namespace stored {

// What natter-stored's main hands to DaemonMain: the daemon's name is
// stored-N, N its shard.
DaemonSpec Spec();

class Stored : public Service, private ReplicaHandler {
 public:
  // Reads and checks the configuration and makes the shard (its database
  // opens in Start); a bad value is a kBadRequest Status that names its
  // key.
  static Status Create(const Config& config, zmq::context_t& ctx,
                       std::unique_ptr<Stored>* out);
  // Waits for a backup still running (its thread reads the database).
  ~Stored() override;

  Status Start() override;
  void RunOnce(int timeout_ms) override;
  bool Ready() override { return watch_->AllConnected(); }
  std::string Waiting() override { return watch_->Waiting(); }
  void Stop() override;
  static constexpr size_t kMaxPendingInMemory = 100000;
  // The most requests (or acknowledgements) in one log entry: its frames
  // decode as an array of at most 4096.
  static constexpr size_t kMaxBatch = 2000;
  // SIGHUP: the keys, and replicas added to or removed from this shard.
  void Reload(const Config* config) override;
  const CurveIdentity* Identity() override { return &keys_.identity(); }
  void Stats(MetricSet* set) override;
  // natterctl backup: a copy of the shard as it is now, made by a thread
  // of its own while the shard serves; the answer comes when it is done.
  bool Control(const Frame& request,
               const ControlServer::Reply& reply) override;

  const Store& store() const { return *store_; }
  // This replica's Raft part; null while its storage is down.
  const Replica* replica() const { return replica_.get(); }
  // Synced writes of the Raft log, ever (what a batch costs), and the
  // requests that went into its entries.
  uint64_t log_syncs() const {
    return retired_syncs_ + (replica_ ? replica_->log().syncs() : 0);
  }
  uint64_t logged_requests() const { return logged_requests_; }

 private:
  using Clock = std::chrono::steady_clock;
  explicit Stored(zmq::context_t& ctx) : ctx_(ctx) {}

  struct Pending {
    std::string frame;
    Clock::time_point next_try;
  };
  // A log entry this replica proposed: answered when it is applied, if
  // the entry there is still this term's.
  struct Proposal {
    uint64_t term = 0;
    Clock::time_point proposed;
    std::vector<Parts> routes;  // one per request, in the entry's order
  };
  struct ReadJob {
    std::vector<Parts> routes;
    std::vector<Request> batch;
  };

  // Takes what is waiting on the request socket: Raft messages to the
  // replica, requests into the log (writes) or to read (reads), then lets
  // the replica persist, send and apply; false if nothing was waiting.
  bool ServeBatch();
  // The next request from the socket, a batch's entries one by one
  // ([routed, frontd, envelope, frame], as if each came alone); false
  // when none is waiting.
  bool NextRequest(Parts* out);
  // Answers a request that came by route (its first n parts): in the
  // turn's batch for its frontd when it is a client's, else alone.
  void Answer(const Parts& route, size_t n, const std::string& reply);
  void SendAnswers(const Batches::Route& route, const std::string& batch);
  // Answers a frame that is not a request to serve (a Raft message, a
  // leader query, any request while this replica does not lead); false
  // if it is one to serve.
  bool TakeOther(const Parts& route, const Frame& frame);
  void Propose(std::vector<Parts>* routes, std::vector<std::string>* frames);
  void Read(std::vector<Parts>* routes, std::vector<Request>* batch);
  Status ApplyEntry(const raft::Entry& entry) override;
  Status ApplyRequests(const raft::Entry& entry,
                       std::vector<std::string>* frames);
  Status ApplyAcks(const raft::Entry& entry, std::vector<std::string>* frames);
  void ServeRead(uint64_t context) override;
  Status SyncApplied() override { return store_->SyncWrites(); }
  void ProcessReplica();
  // Leadership came or went: hand-offs are the leader's to send.
  void LeadershipChanged();
  // Answers every request waiting on the log or a read with error.
  void FailWaiting(const Status& error);
  // Makes the replica from its log and the database (installed: just
  // taken from the leader).
  Status OpenReplica(bool installed = false);
  // A chunk of the leader's database (the replica is behind its log).
  void TakeChunk(SnapshotChunk* chunk);
  void InstallSnapshot(const SnapshotChunk& last);
  Status SwapDatabase();
  std::unique_ptr<Store::SnapshotReader> ReadDatabase() override {
    return store_->ReadSnapshot();
  }
  // Sends a committed batch's events to notifyd, in as few messages as
  // kBatchBytes allows.
  void Publish(const Effects& effects);
  // Starts `work` on a thread of its own for a control request; answered
  // by FinishBackup once it is done.
  struct BackupJob;
  BackupJob* StartJob(const Frame& request, const ControlServer::Reply& reply,
                      std::function<void(BackupJob*)> work);
  // natterctl verify: a digest of the database, made as a backup is.
  bool StartDigest(const Frame& request, const ControlServer::Reply& reply);
  // natterctl replica add|remove: answered once the change is applied.
  bool ChangeMembership(const Frame& request,
                        const ControlServer::Reply& reply);
  // Answers the change of membership waiting at entry's index, if any.
  void AnswerMembership(const raft::Entry& entry);
  // Answers a finished backup (or digest); with wait, waits for a running
  // one first (before the database closes under it).
  void FinishBackup(bool wait);
  void AddPending(uint64_t outbox, const Handoff& d);
  void SendHandoff(uint64_t outbox, Pending* pending);
  void TakeAcks();
  void RetryHandoffs();
  // Reads hand-offs the memory had no room for back from the outbox.
  void RefillPending();
  // After a failed write: close, and try to open again from time to time.
  void StorageFailed();
  void TryReopen();

  zmq::context_t& ctx_;
  DaemonKeys keys_;
  uint32_t shard_ = 0;
  uint32_t shard_count_ = 1;
  Replica::Settings replica_settings_;
  std::unique_ptr<Replica> replica_;
  bool leading_ = false;
  std::map<uint64_t, Proposal> proposals_;  // by log index
  std::map<uint64_t, ReadJob> reads_;       // by read context
  uint64_t next_read_ = 1;
  uint64_t retired_syncs_ = 0;  // of replicas made again since
  // The leader's database coming in, beside this one's.
  struct Incoming {
    std::unique_ptr<leveldb::DB> db;
    uint64_t from = 0;
    uint64_t index = 0;
    uint64_t next_seq = 0;
  };
  std::unique_ptr<Incoming> incoming_;
  uint64_t snapshots_installed_ = 0;
  uint64_t logged_requests_ = 0;
  std::string listen_;
  std::string data_path_;
  std::vector<std::string> routed_;
  std::vector<std::string> notifyd_;
  size_t batch_max_ = 1024;
  std::chrono::milliseconds retry_{1000};

  std::unique_ptr<Store> store_;
  // Each user's writes, in the order they arrive; a request over its
  // user's rate is answered busy and never reaches the batch.
  UserRateLimiter limiter_{0, 0};
  zmq::socket_t requests_;  // ROUTER, from routed
  // The rest of a batch of requests taken in part (at most one batch).
  std::deque<Parts> unbatched_;
  // The turn's answers, batched by routed and frontd (proto.h); sent at
  // the end of the turn.
  Batches answers_{
      [this](const Batches::Route& route, const std::string& batch) {
        SendAnswers(route, batch);
      }};
  bool curve_requests_ = false;  // requests_ is a CURVE server
  zmq::socket_t handoff_;        // DEALER, to routed
  zmq::socket_t events_;         // PUSH, to notifyd
  int max_open_files_ = 1000;
  std::map<uint64_t, Pending> pending_;
  // When each pending hand-off is due, in order (retry_ is fixed, so
  // appending keeps it sorted); entries whose hand-off went are skipped.
  std::deque<std::pair<Clock::time_point, uint64_t>> due_;
  bool spilled_ = false;  // the outbox holds hand-offs not in pending_
  Clock::time_point next_reopen_{};
  std::unique_ptr<LinkWatch> watch_;  // the links to routed and notifyd

  struct BackupJob {
    std::thread thread;
    std::atomic<bool> done{false};
    std::string path;     // a digest's hex, for a digest
    bool digest = false;  // natterctl verify's, not a backup
    LogPosition at;
    Status status;
    uint64_t records = 0, bytes = 0;
    Header header;
    ControlServer::Reply reply;
  };
  std::unique_ptr<BackupJob> backup_;
  struct MembershipJob {
    uint64_t index = 0, term = 0;
    MembershipRequest request;
    // Who asked (natterctl may ask again while it waits).
    std::vector<std::pair<Header, ControlServer::Reply>> replies;
    void Answer(const std::function<std::string(const Header&)>& frame) {
      for (const auto& [header, reply] : replies) reply(frame(header));
    }
  };
  std::unique_ptr<MembershipJob> membership_;

  // Counters and latencies, for Stats.
  uint64_t batches_ = 0;
  uint64_t request_batches_ = 0;  // messages of many requests, taken
  uint64_t answer_batches_ = 0;   // messages of many answers, sent
  uint64_t requests_served_ = 0;
  uint64_t write_failures_ = 0;
  uint64_t published_ = 0;
  uint64_t publish_dropped_ = 0;
  uint64_t handoffs_sent_ = 0;
  uint64_t backups_ = 0;
  uint64_t foreign_raft_ = 0;        // Raft frames from a key not a replica's
  LatencyHistogram commit_latency_;  // proposed to applied
  LatencyHistogram batch_latency_;   // Apply: the batch's work and its sync
  LatencyHistogram batch_size_;      // requests a batch (recorded as "µs")
};

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_STORED_H_

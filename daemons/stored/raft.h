// Raft consensus for a shard's replicas (Ongaro and Ousterhout, "In Search
// of an Understandable Consensus Algorithm", and Ongaro's dissertation for
// pre-vote, check-quorum, read index and single-server membership
// changes), shaped after etcd-io/raft: a pure state machine with no I/O,
// no clock and no threads inside.  Its driver
//
//   - calls Tick() at a fixed pace (election and heartbeat timeouts are
//     counted in ticks) and Step() with each message from a peer;
//   - calls Propose() with what is to be replicated (on the leader);
//   - whenever HasReady(), takes a Ready and, in this order: persists its
//     snapshot, hard state and entries (synced), sends its messages,
//     restores its snapshot and applies its committed entries to the state
//     machine, serves its reads once they are applied, and calls
//     Advance(ready).
//
// Nothing else may happen to the node between TakeReady() and Advance().
// Randomness (the election timeouts) comes from a seed, so a run is the
// same given the same seed and the same inputs: the simulation in
// tests/raft_sim depends on it.
#ifndef NATTER_DAEMONS_STORED_RAFT_H_
#define NATTER_DAEMONS_STORED_RAFT_H_

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace natter {
namespace raft {

// A replica's id, above 0; 0 is none.
using NodeId = uint64_t;

enum class EntryType : uint8_t {
  kNormal = 0,  // the application's data
  kConfig = 1,  // the set of voters from here on: EncodeVoters
  kNoop = 2,    // a new leader's first entry, committed to learn its commit
};

struct Entry {
  uint64_t term = 0;
  uint64_t index = 0;
  EntryType type = EntryType::kNormal;
  std::string data;
  bool operator==(const Entry& o) const {
    return term == o.term && index == o.index && type == o.type &&
           data == o.data;
  }
};

// What must be on disk before anything the node says is sent.
struct HardState {
  uint64_t term = 0;
  NodeId vote = 0;
  uint64_t commit = 0;
  bool operator==(const HardState& o) const {
    return term == o.term && vote == o.vote && commit == o.commit;
  }
};

// A snapshot's place in the log and the voters as of that place; its data
// (the state machine at index) travels beside it.
struct SnapshotMeta {
  uint64_t index = 0;
  uint64_t term = 0;
  std::vector<NodeId> voters;
};

enum class MessageType : uint8_t {
  kPreVote = 0,  // would you vote for me at term + 1?  (term not taken yet)
  kPreVoteReply = 1,
  kVote = 2,  // index, log_term: the candidate's last entry
  kVoteReply = 3,
  kAppend = 4,       // index, log_term: the entry before `entries`; commit
  kAppendReply = 5,  // index: the last matching entry, or when rejected the
                     // one the leader asked about, hint: the follower's last
  kHeartbeat = 6,    // commit, context (a read index's round)
  kHeartbeatReply = 7,
  kSnapshot = 8,    // snapshot (and its data, attached by the driver)
  kTimeoutNow = 9,  // the leader hands over: campaign now
};

struct Message {
  MessageType type = MessageType::kAppend;
  NodeId from = 0;
  NodeId to = 0;
  uint64_t term = 0;
  uint64_t index = 0;
  uint64_t log_term = 0;
  uint64_t commit = 0;
  bool reject = false;
  uint64_t hint = 0;
  uint64_t context = 0;
  std::vector<Entry> entries;
  SnapshotMeta snapshot;
  std::string snapshot_data;  // kSnapshot: filled by the driver
};

// A read index confirmed: once the state machine has applied `index`, the
// read asked with `context` may be served and sees every write
// acknowledged before it was asked.
struct ReadState {
  uint64_t context = 0;
  uint64_t index = 0;
};

struct Ready {
  std::optional<HardState> hard_state;  // changed since the last Ready
  // Received from the leader: persist it, with `entries` after it as the
  // whole log on disk (everything else there goes), and restore the state
  // machine from snapshot_data.
  std::optional<SnapshotMeta> snapshot;
  std::string snapshot_data;
  // To append to the log on disk; any entry there at or after
  // entries.front().index is replaced.
  std::vector<Entry> entries;
  std::vector<Entry> committed;   // to apply, in order
  std::vector<Message> messages;  // to send once the above is on disk
  std::vector<ReadState> reads;   // to serve once applied
  bool empty() const {
    return !hard_state && !snapshot && entries.empty() && committed.empty() &&
           messages.empty() && reads.empty();
  }
};

enum class Role : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };
const char* RoleName(Role role);

struct Options {
  NodeId id = 0;
  // The voters when the log holds no configuration yet (a new shard): the
  // same on every replica.  A replica joining an existing shard starts
  // with none and learns them from the leader's snapshot or log.
  std::vector<NodeId> voters;
  int election_ticks = 10;  // a follower waits election..2*election-1
  int heartbeat_ticks = 1;
  size_t max_append_bytes = 512 * 1024;  // entries in one kAppend
  // and at most this many (the frame decoder takes arrays of up to 2000)
  size_t max_append_entries = 1000;
  size_t max_inflight = 64;  // kAppends ahead of their replies, a peer
  uint64_t seed = 0;         // the election timeouts' randomness
};

// What survived a restart: the hard state, the last snapshot's meta (its
// data is the driver's) and the log after it.
struct Restored {
  HardState hard_state;
  SnapshotMeta snapshot;
  std::vector<Entry> entries;  // snapshot.index + 1, + 2, ...
};

class Node {
 public:
  explicit Node(const Options& options, const Restored& restored = {});

  // One tick of the clock.
  void Tick();
  // A message from a peer (to must be this node; others are dropped).
  void Step(const Message& m);
  // Appends data to the log if this node is the leader; its index, or 0
  // (and no change) if not: then leader() may name the one that is.
  uint64_t Propose(const std::string& data);
  // Proposes a new set of voters: one added or one removed, and only
  // when no other change is under way; 0 if refused.
  uint64_t ProposeVoters(const std::vector<NodeId>& voters);
  // Asks for a read index; answered in a Ready's reads (with context), or
  // never if leadership is lost first (the driver times the read out).
  // False if this node is not the leader.
  bool ReadIndex(uint64_t context);
  // The leader hands leadership to `to` (an up-to-date voter); false if it
  // cannot now.
  bool TransferLeadership(NodeId to);
  // Starts an election now (as if the timeout had run out).
  void Campaign();

  bool HasReady() const;
  Ready TakeReady();
  void Advance(const Ready& ready);

  // The driver compacted its log: entries up to index (applied, at most)
  // are in a snapshot now and leave the node's memory.
  void Compact(uint64_t index);

  NodeId id() const { return id_; }
  Role role() const { return role_; }
  uint64_t term() const { return term_; }
  NodeId leader() const { return leader_; }
  NodeId vote() const { return vote_; }
  uint64_t commit() const { return commit_; }
  uint64_t applied() const { return applied_; }
  uint64_t last_index() const { return LastIndex(); }
  uint64_t first_index() const { return snapshot_.index + 1; }
  // On the leader: the last entry a voter is known to hold (0 if none, or
  // not leading).
  uint64_t match(NodeId id) const {
    auto p = progress_.find(id);
    return role_ == Role::kLeader && p != progress_.end() ? p->second.match : 0;
  }
  const SnapshotMeta& snapshot() const { return snapshot_; }
  const std::vector<NodeId>& voters() const { return voters_; }
  // The index of the configuration the voters come from (0: the shard's
  // first voters, not in the log).
  uint64_t config_index() const {
    return configs_.empty() ? 0 : configs_.back().first;
  }
  // The term of the entry at index (0 if unknown: compacted or past the
  // end, except the snapshot's own index).
  uint64_t TermAt(uint64_t index) const;
  // Entries lo..hi (inclusive) still held in memory.
  std::vector<Entry> EntriesBetween(uint64_t lo, uint64_t hi) const;
  // The leader's view of a peer: the last entry known to match there.
  uint64_t MatchOf(NodeId peer) const;
  uint64_t elections() const { return elections_; }

 private:
  struct Progress {
    uint64_t match = 0;
    uint64_t next = 1;
    bool probing = true;        // one kAppend a heartbeat until it matches
    bool probe_sent = false;    // a probe is out this heartbeat
    size_t inflight = 0;        // kAppends not yet answered (replicating)
    bool active = false;        // heard from since the last quorum check
    bool snapshotting = false;  // a kSnapshot is out
    uint64_t acked_context = 0;
    uint64_t match_at_heartbeat = 0;  // match at the last heartbeat reply
    int snapshot_heartbeats = 0;      // heartbeats since the kSnapshot went
  };
  struct PendingRead {
    uint64_t context = 0;
    uint64_t index = 0;
    uint64_t round = 0;
  };

  uint64_t LastIndex() const;
  uint64_t LastTerm() const;
  bool IsVoter(NodeId id) const;
  size_t Quorum() const { return voters_.size() / 2 + 1; }
  void ResetTimeout();

  void BecomeFollower(uint64_t term, NodeId leader);
  void BecomePreCandidate();
  void BecomeCandidate();
  void BecomeLeader();
  // forced: after kTimeoutNow, voters answer within their leader's lease.
  void StartElection(bool pre, bool forced = false);
  // A message from the leader of this term: follow it.
  void Follow(NodeId leader);
  void TickLeader();

  void Send(Message m);
  void SendAppend(NodeId to, bool allow_empty);
  void SendHeartbeats(uint64_t context);
  void BroadcastAppend();

  void StepVoteRequest(const Message& m);
  void StepVoteReply(const Message& m);
  void StepLeader(const Message& m);
  void HandleAppend(const Message& m);
  void HandleHeartbeat(const Message& m);
  void HandleSnapshot(const Message& m);
  void HandleAppendReply(const Message& m);
  void HandleHeartbeatReply(const Message& m);

  // Appends after (prev_index, prev_term) if they match; the last new
  // index, or nullopt if they do not.
  std::optional<uint64_t> TryAppend(uint64_t prev_index, uint64_t prev_term,
                                    const std::vector<Entry>& entries);
  void AppendLocal(Entry e);
  void TruncateFrom(uint64_t index);
  bool MaybeCommit();
  void CommitTo(uint64_t index);
  void ReleaseReads();
  void ConfigChanged();
  void SetVoters(std::vector<NodeId> voters);
  // The configurations: first (the snapshot's voters), then every one the
  // log holds; the voters are the last.
  void LoadConfigs(std::vector<NodeId> first);
  std::vector<NodeId> VotersAt(uint64_t index) const;

  // Options.
  NodeId id_;
  int election_ticks_;
  int heartbeat_ticks_;
  size_t max_append_bytes_;
  size_t max_append_entries_;
  size_t max_inflight_;
  std::mt19937_64 random_;

  // Persistent state.
  uint64_t term_ = 0;
  NodeId vote_ = 0;
  uint64_t commit_ = 0;
  SnapshotMeta snapshot_;
  std::vector<Entry> log_;  // snapshot_.index + 1, ...
  // Volatile.
  uint64_t stable_ = 0;   // the last index on disk
  uint64_t applied_ = 0;  // the last index the driver applied
  uint64_t handed_ = 0;   // the last index handed out to apply
  Role role_ = Role::kFollower;
  NodeId leader_ = 0;
  std::vector<NodeId> voters_;
  // (index, voters) of each configuration the log holds, in order, and the
  // one of the snapshot first.
  std::vector<std::pair<uint64_t, std::vector<NodeId>>> configs_;
  int elapsed_ = 0;  // ticks since the last reset (election or heartbeat)
  int timeout_ = 0;  // this term's randomized election timeout
  int quorum_elapsed_ = 0;
  std::map<NodeId, bool> votes_;
  std::map<NodeId, Progress> progress_;
  uint64_t pending_config_ = 0;  // the last config entry's index
  NodeId transferee_ = 0;
  uint64_t read_round_ = 0;
  std::vector<PendingRead> reads_;
  std::vector<ReadState> ready_reads_;
  std::vector<Message> outbox_;
  std::optional<SnapshotMeta> incoming_snapshot_;
  std::string incoming_snapshot_data_;
  HardState last_hard_state_;
  uint64_t elections_ = 0;
};

// The voters of a kConfig entry, and back.
std::string EncodeVoters(const std::vector<NodeId>& voters);
bool DecodeVoters(const std::string& data, std::vector<NodeId>* voters);

}  // namespace raft
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_RAFT_H_

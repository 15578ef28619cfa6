// natter-raft-sim: daemons/stored/raft.h's Node in a seeded, simulated
// world, as FoundationDB simulates its cluster and TigerBeetle's VOPR its
// replicas.  One seed is one run: 3 or 5 replicas driven exactly as
// raft.h's driver contract says, a network that loses, delays, duplicates
// and reorders messages and is cut into partitions (random splits, the
// leader alone, one-way links), disks that hold only what a Ready said to
// sync, crashes (also between TakeReady and the sync, and between the sync
// and the sends), paused processes and clock jumps, clients that propose
// and read, compaction, membership changes and leadership transfers.
//
//   build/natter-raft-sim                      the default runs (make check)
//   build/natter-raft-sim --seeds 100000       a long run
//   build/natter-raft-sim --first-seed S --seeds 1 --verbose
//                                              run S again, with a trace
//
// Checked as the run goes: election safety (one leader a term), log
// matching (an entry's index and term fix its data and every entry before
// it), leader completeness (a leader holds every acknowledged entry
// committed in an earlier term than its own), state machine safety (one entry
// an index, whoever applies it), reads (a read sees every write acknowledged
// before it was asked), and what the driver can see of the contract (a Ready's
// entries follow the log on disk, committed entries come in order, a hard
// state's vote does not change within its term).  At the end the network is
// healed and crashes stop; a leader must emerge, a new write must commit, and
// every voter must have applied every acknowledged write once, in the same
// order.
//
// Everything comes from the seed: one std::mt19937_64 a run, no clock, no
// threads, no unordered containers.  A failing seed is printed with the
// command that runs it again.  The last line is "N runs ..., V
// violations; ..."; the exit status is 0 only without violations.
#include <inttypes.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/flags.h"
#include "daemons/stored/raft.h"

namespace natter {
namespace {

using raft::Entry;
using raft::EntryType;
using raft::HardState;
using raft::Message;
using raft::MessageType;
using raft::NodeId;
using raft::ReadState;
using raft::Ready;
using raft::Role;
using raft::SnapshotMeta;

// The same numbers from a seed with any standard library: the
// distributions of <random> are not specified to the bit.
class Random {
 public:
  explicit Random(uint64_t seed) : engine_(seed) {}
  uint64_t Next() { return engine_(); }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : engine_() % n; }
  uint64_t Between(uint64_t lo, uint64_t hi) { return lo + Below(hi - lo + 1); }
  bool Chance(double p) { return (engine_() >> 11) * 0x1.0p-53 < p; }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Below(v.size())];
  }
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (size_t i = v->size(); i > 1; --i)
      std::swap((*v)[i - 1], (*v)[Below(i)]);
  }

 private:
  std::mt19937_64 engine_;
};

struct Settings {
  uint64_t seeds = 2000;
  uint64_t first_seed = 1;
  uint64_t steps = 3000;  // ticks of faults, before the network is healed
  unsigned nodes = 0;     // 0: 3 or 5, by seed
  bool verbose = false;
};

// A run's world, drawn from its seed.  Rates are chances per tick unless
// said otherwise.
struct Profile {
  unsigned nodes = 3;
  int election_ticks = 10;
  int heartbeat_ticks = 1;
  size_t max_append_bytes = 512 * 1024;
  size_t max_inflight = 64;
  double loss = 0;       // a message is lost
  double duplicate = 0;  // a message arrives twice
  double slow = 0;       // a message takes 5..40 ticks more
  double crash = 0;
  double partition = 0;
  double pause = 0;
  double clock_jump = 0;
  double propose = 0;
  double read = 0;
  double compact = 0;
  double transfer = 0;
  double campaign = 0;
  double membership = 0;
  double batch = 1;  // a Ready is handled right after its event (else later)
  double slow_disk = 0;  // a replica's Readies wait for the next tick
};

// Each message type's name, for the trace.
const char* TypeName(MessageType type) {
  switch (type) {
    case MessageType::kPreVote:
      return "PreVote";
    case MessageType::kPreVoteReply:
      return "PreVoteReply";
    case MessageType::kVote:
      return "Vote";
    case MessageType::kVoteReply:
      return "VoteReply";
    case MessageType::kAppend:
      return "Append";
    case MessageType::kAppendReply:
      return "AppendReply";
    case MessageType::kHeartbeat:
      return "Heartbeat";
    case MessageType::kHeartbeatReply:
      return "HeartbeatReply";
    case MessageType::kSnapshot:
      return "Snapshot";
    case MessageType::kTimeoutNow:
      return "TimeoutNow";
  }
  return "?";
}

std::string Describe(const Message& m) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%s n%" PRIu64 "->n%" PRIu64 " term=%" PRIu64 " index=%" PRIu64
                " log_term=%" PRIu64 " commit=%" PRIu64 "%s hint=%" PRIu64
                " ctx=%" PRIu64,
                TypeName(m.type), m.from, m.to, m.term, m.index, m.log_term,
                m.commit, m.reject ? " reject" : "", m.hint, m.context);
  std::string s = buf;
  if (!m.entries.empty()) {
    s += " entries=" + std::to_string(m.entries.front().index) + ".." +
         std::to_string(m.entries.back().index);
  }
  if (m.type == MessageType::kSnapshot) {
    s += " snapshot=" + std::to_string(m.snapshot.index) + "/" +
         std::to_string(m.snapshot.term);
  }
  return s;
}

std::string Join(const std::vector<NodeId>& ids) {
  std::string s;
  for (NodeId id : ids) s += (s.empty() ? "n" : ",n") + std::to_string(id);
  return s.empty() ? "none" : s;
}

std::vector<NodeId> Sorted(std::vector<NodeId> ids) {
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<NodeId> DecodedVoters(const std::string& data) {
  std::vector<NodeId> voters;
  raft::DecodeVoters(data, &voters);
  return voters;
}

// The replicated state machine: every entry applied, in order from index
// 1 (kNoop and kConfig too, so any index applied has its term and its
// voters).  Its snapshot at an index is the text of the entries up to it.
class StateMachine {
 public:
  uint64_t index() const { return entries_.size(); }
  uint64_t term() const { return TermAt(index()); }
  uint64_t TermAt(uint64_t index) const {
    return index == 0 ? 0 : entries_[index - 1].term;
  }
  const Entry& At(uint64_t index) const { return entries_[index - 1]; }
  const std::vector<Entry>& entries() const { return entries_; }

  // e.index must be index() + 1.
  void Apply(const Entry& e) {
    if (e.type == EntryType::kConfig) configs_.push_back(e.index);
    entries_.push_back(e);
  }

  // The voters as of index: its last kConfig entry's, else the shard's
  // first ones.
  std::vector<NodeId> VotersAt(uint64_t index,
                               const std::vector<NodeId>& initial) const {
    auto it = std::upper_bound(configs_.begin(), configs_.end(), index);
    if (it == configs_.begin()) return initial;
    std::vector<NodeId> voters;
    if (!raft::DecodeVoters(At(*(it - 1)).data, &voters)) return {};
    return voters;
  }

  std::string Serialize(uint64_t upto) const {
    std::string out;
    for (uint64_t i = 1; i <= upto; ++i) {
      const Entry& e = At(i);
      out += std::to_string(e.term) + ' ' +
             std::to_string(static_cast<int>(e.type)) + ' ' +
             std::to_string(e.data.size()) + ':' + e.data;
    }
    return out;
  }

  bool Restore(const std::string& text) {
    StateMachine sm;
    size_t pos = 0;
    while (pos < text.size()) {
      uint64_t term, type, size;
      if (!ReadNumber(text, &pos, ' ', &term) ||
          !ReadNumber(text, &pos, ' ', &type) ||
          !ReadNumber(text, &pos, ':', &size) || type > 2 ||
          size > text.size() - pos) {
        return false;
      }
      Entry e;
      e.index = sm.index() + 1;
      e.term = term;
      e.type = static_cast<EntryType>(type);
      e.data = text.substr(pos, size);
      pos += size;
      sm.Apply(e);
    }
    *this = std::move(sm);
    return true;
  }

 private:
  static bool ReadNumber(const std::string& text, size_t* pos, char end,
                         uint64_t* out) {
    size_t stop = text.find(end, *pos);
    if (stop == std::string::npos || stop == *pos) return false;
    uint64_t v = 0;
    for (size_t i = *pos; i < stop; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
      v = v * 10 + static_cast<uint64_t>(text[i] - '0');
    }
    *out = v;
    *pos = stop + 1;
    return true;
  }

  std::vector<Entry> entries_;  // entries_[i] is index i + 1
  std::vector<uint64_t> configs_;
};

// What a replica's disk holds: only what a Ready said to sync.
struct Disk {
  HardState hard_state;
  SnapshotMeta snapshot;
  std::string snapshot_data;
  std::vector<Entry> log;  // snapshot.index + 1, ...

  uint64_t LastIndex() const { return snapshot.index + log.size(); }
  uint64_t TermAt(uint64_t index) const {
    if (index == snapshot.index) return snapshot.term;
    if (index < snapshot.index || index > LastIndex()) return 0;
    return log[index - snapshot.index - 1].term;
  }
};

// What a replica accepted from a client: the entry it appended at an
// index, in its term.
struct Proposal {
  uint64_t term = 0;
  EntryType type = EntryType::kNormal;
  std::string data;
};

struct PendingRead {
  // The acknowledged write with the highest index when the read was asked:
  // the read must see it (and so every other acknowledged before).
  uint64_t must_see = 0;
  std::string must_see_value;
  bool confirmed = false;
  uint64_t index = 0;
};

enum class CrashPlan { kNone, kBeforeSync, kAfterSync };

struct Replica {
  NodeId id = 0;
  // Options::voters: the shard's first ones, or none for one that joins.
  std::vector<NodeId> initial_voters;
  std::unique_ptr<raft::Node> node;  // null while down
  Disk disk;
  StateMachine sm;
  bool retired = false;     // removed from the voters and stopped for good
  uint64_t restart_at = 0;  // while down
  uint64_t retire_at = 0;   // removed: stopped then
  uint64_t paused_until = 0;
  CrashPlan crash = CrashPlan::kNone;      // at its next Ready
  std::map<uint64_t, Proposal> proposals;  // by index
  std::map<uint64_t, PendingRead> reads;   // by context
  uint64_t leader_term = 0;  // the term it was last seen leading, or 0
};

struct Acked {
  uint64_t index = 0;
  uint64_t term = 0;
  uint64_t commit_term = 0;  // of the leader that committed it, or above
  std::string value;
};

struct Stats {
  uint64_t runs = 0;
  uint64_t ticks = 0;
  uint64_t messages = 0;
  uint64_t acked = 0;
  uint64_t leaders = 0;
  uint64_t crashes = 0;
  uint64_t partitions = 0;
  uint64_t snapshots = 0;
  uint64_t compactions = 0;
  uint64_t reads = 0;
  uint64_t config_changes = 0;
  uint64_t transfers = 0;

  void Add(const Stats& o) {
    runs += o.runs;
    ticks += o.ticks;
    messages += o.messages;
    acked += o.acked;
    leaders += o.leaders;
    crashes += o.crashes;
    partitions += o.partitions;
    snapshots += o.snapshots;
    compactions += o.compactions;
    reads += o.reads;
    config_changes += o.config_changes;
    transfers += o.transfers;
  }
};

// One run.  Run() returns false at the first violation, which violation()
// then describes.
class Sim {
 public:
  Sim(uint64_t seed, const Settings& settings);
  bool Run();
  const std::string& violation() const { return violation_; }
  const Stats& stats() const { return stats_; }
  unsigned nodes() const { return profile_.nodes; }

 private:
  // What the log-matching check knows of an (index, term): the entry's
  // content and the term of the entry before it.
  struct LogRecord {
    EntryType type;
    std::string data;
    bool prev_known;
    uint64_t prev_term;
  };

  bool ok() const { return violation_.empty(); }
  void Fail(const char* format, ...) __attribute__((format(printf, 2, 3)));
  void Trace(const char* format, ...) __attribute__((format(printf, 2, 3)));
  bool tracing() const { return settings_.verbose; }

  void MakeProfile();
  Replica& AddReplica(NodeId id, const std::vector<NodeId>& voters);
  void Start(Replica& r);
  void Crash(Replica& r, const char* how);
  void Retire(Replica& r);
  bool Running(const Replica& r) const {
    return r.node && r.paused_until <= now_;
  }
  std::vector<Replica*> Leaders();
  std::string NewValue();

  void Step();
  void Deliver();
  void Enqueue(const Message& m, uint64_t at);
  void AfterEvent(Replica& r);

  // The driver: a Ready persisted, sent, applied, its reads served.
  void HandleReadies(Replica& r);
  void Persist(Replica& r, const Ready& rd);
  void Send(Replica& r, const Message& m);
  void Apply(Replica& r, const Ready& rd);
  void RestoreSnapshot(Replica& r, const SnapshotMeta& meta,
                       const std::string& data);
  void ServeReads(Replica& r);
  void Compact(Replica& r, uint64_t index);

  // Faults and clients.
  void Chaos();
  void CrashSome();
  void Partition();
  void Propose();
  void ProposeTo(Replica& r);
  void Read();
  void ReadFrom(Replica& r);
  void CompactSome();
  void Transfer();
  void CampaignSome();
  void ChangeMembership();

  // Invariants.
  void CheckRole(Replica& r);
  void CheckApplied(const Replica& r, const Entry& e);
  void CheckHardState(const Replica& r, const HardState& old,
                      const HardState& now);
  void CheckVoters(const Replica& r, const char* what, uint64_t index,
                   const std::vector<NodeId>& voters);
  void ChainEntries(const char* where, NodeId id, uint64_t prev_index,
                    uint64_t prev_term, bool prev_known,
                    const std::vector<Entry>& entries);
  void CheckAllLogs();
  bool Holds(const raft::Node& n, uint64_t index, uint64_t term) const;
  void Accepted(Replica& r, uint64_t index, Proposal p);
  void ResolveProposals(Replica& r, uint64_t upto);
  void Acknowledge(Replica& r, const Entry& e);
  void ConfigApplied(const Replica& r, const Entry& e);

  // The end: healed, a leader, a write, everything on every voter.
  void Heal();
  Replica* Settled();
  void Finish();
  void CheckEnd(const Replica& leader);
  std::string State();

  const uint64_t seed_;
  const Settings settings_;
  Random random_;
  Profile profile_;
  uint64_t now_ = 0;
  bool healed_ = false;
  std::string violation_;

  std::map<NodeId, Replica> replicas_;
  std::vector<NodeId> initial_voters_;
  NodeId next_id_ = 0;
  NodeId spare_ = 0;  // started to be added, not proposed yet

  // The network: messages by (delivery tick, sequence), links cut.
  std::map<std::pair<uint64_t, uint64_t>, Message> flights_;
  uint64_t flight_seq_ = 0;
  std::set<std::pair<NodeId, NodeId>> cut_;  // (from, to)
  uint64_t heal_at_ = 0;

  // What the checks remember.
  std::map<uint64_t, NodeId> leaders_;  // term: its leader
  std::map<std::pair<uint64_t, uint64_t>, LogRecord> records_;
  std::vector<Entry> applied_;  // the entry applied at each index, first seen
  std::vector<NodeId> applied_voters_;  // as of applied_'s last entry
  std::vector<Acked> acked_;
  std::vector<uint64_t> commit_terms_;  // [i - 1]: who committed index i
  std::set<std::string> acked_values_;
  uint64_t max_acked_ = 0;  // index of the acknowledged write highest up
  std::string max_acked_value_;

  uint64_t values_ = 0;
  uint64_t contexts_ = 0;
  bool change_pending_ = false;
  NodeId change_proposer_ = 0;
  uint64_t change_index_ = 0;

  Stats stats_;
};

Sim::Sim(uint64_t seed, const Settings& settings)
    : seed_(seed), settings_(settings), random_(seed) {
  MakeProfile();
  const Profile& p = profile_;
  Trace("seed %" PRIu64
        ": %u nodes, election %d, heartbeat %d, append "
        "bytes %zu, inflight %zu, loss %.3f, duplicate %.3f, slow %.3f, "
        "crash %.4f, partition %.4f, pause %.4f, clock jump %.4f, propose "
        "%.2f, read %.2f, compact %.3f, transfer %.4f, campaign %.4f, "
        "membership %.4f, batch %.1f, slow disk %.1f",
        seed_, p.nodes, p.election_ticks, p.heartbeat_ticks, p.max_append_bytes,
        p.max_inflight, p.loss, p.duplicate, p.slow, p.crash, p.partition,
        p.pause, p.clock_jump, p.propose, p.read, p.compact, p.transfer,
        p.campaign, p.membership, p.batch, p.slow_disk);
  for (NodeId id = 1; id <= profile_.nodes; ++id) initial_voters_.push_back(id);
  applied_voters_ = initial_voters_;
  next_id_ = profile_.nodes + 1;
  for (NodeId id : initial_voters_) Start(AddReplica(id, initial_voters_));
}

void Sim::MakeProfile() {
  Profile& p = profile_;
  p.nodes = settings_.nodes ? settings_.nodes : random_.Chance(0.5) ? 3 : 5;
  p.election_ticks = static_cast<int>(random_.Pick<uint64_t>({5, 10, 10, 20}));
  p.heartbeat_ticks = p.election_ticks >= 10 && random_.Chance(0.3) ? 2 : 1;
  p.max_append_bytes = random_.Pick<size_t>({64, 300, 4096, 512 * 1024});
  p.max_inflight = random_.Pick<size_t>({1, 2, 8, 64});
  p.loss = random_.Pick<double>({0, 0.01, 0.05, 0.2});
  p.duplicate = random_.Pick<double>({0, 0.01, 0.05});
  p.slow = random_.Pick<double>({0, 0.02, 0.1});
  p.crash = random_.Pick<double>({0, 1 / 400.0, 1 / 100.0, 1 / 40.0});
  p.partition = random_.Pick<double>({0, 1 / 500.0, 1 / 150.0});
  p.pause = random_.Pick<double>({0, 1 / 300.0});
  p.clock_jump = random_.Pick<double>({0, 1 / 300.0});
  p.propose = random_.Pick<double>({0.1, 0.3, 0.8});
  p.read = random_.Pick<double>({0, 0.05, 0.2});
  p.compact = random_.Pick<double>({0.005, 0.03});
  p.transfer = random_.Pick<double>({0, 1 / 200.0});
  p.campaign = random_.Pick<double>({0, 1 / 500.0});
  p.membership =
      random_.Chance(0.3) ? random_.Pick<double>({1 / 300.0, 1 / 100.0}) : 0;
  p.batch = random_.Pick<double>({1.0, 0.5, 0.1});
  p.slow_disk = random_.Pick<double>({0, 0, 0.5, 0.9});
}

void Sim::Fail(const char* format, ...) {
  if (!ok()) return;
  char buf[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof buf, format, args);
  va_end(args);
  violation_ = "tick " + std::to_string(now_) + ": " + buf;
  if (tracing()) std::printf("%6" PRIu64 " VIOLATION %s\n", now_, buf);
}

void Sim::Trace(const char* format, ...) {
  if (!tracing()) return;
  std::printf("%6" PRIu64 " ", now_);
  va_list args;
  va_start(args, format);
  std::vprintf(format, args);
  va_end(args);
  std::putchar('\n');
}

Replica& Sim::AddReplica(NodeId id, const std::vector<NodeId>& voters) {
  Replica& r = replicas_[id];
  r.id = id;
  r.initial_voters = voters;
  return r;
}

// Starts r from its disk: a new replica's is empty.
void Sim::Start(Replica& r) {
  raft::Options options;
  options.id = r.id;
  options.voters = r.initial_voters;
  options.election_ticks = profile_.election_ticks;
  options.heartbeat_ticks = profile_.heartbeat_ticks;
  options.max_append_bytes = profile_.max_append_bytes;
  options.max_inflight = profile_.max_inflight;
  options.seed = random_.Next();
  raft::Restored restored;
  restored.hard_state = r.disk.hard_state;
  restored.snapshot = r.disk.snapshot;
  restored.entries = r.disk.log;
  r.node = std::make_unique<raft::Node>(options, restored);
  r.crash = CrashPlan::kNone;
  r.restart_at = 0;
  r.paused_until = 0;
  r.leader_term = 0;
  if (!r.sm.Restore(r.disk.snapshot_data) ||
      r.sm.index() != r.disk.snapshot.index) {
    Fail("n%" PRIu64 "'s snapshot on disk does not restore", r.id);
  }
  Trace("n%" PRIu64 " starts: term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64
        " snapshot=%" PRIu64 "/%" PRIu64 " log=%" PRIu64 "..%" PRIu64
        " voters=%s",
        r.id, r.disk.hard_state.term, r.disk.hard_state.vote,
        r.disk.hard_state.commit, r.disk.snapshot.index, r.disk.snapshot.term,
        r.disk.snapshot.index + 1, r.disk.LastIndex(),
        Join(r.node->voters()).c_str());
  CheckRole(r);
}

// Everything volatile is lost: the node, the state machine, what clients
// were waiting for there.
void Sim::Crash(Replica& r, const char* how) {
  Trace("n%" PRIu64 " crashes %s", r.id, how);
  r.node.reset();
  r.sm = StateMachine();
  r.proposals.clear();
  r.reads.clear();
  r.crash = CrashPlan::kNone;
  r.leader_term = 0;
  r.restart_at = now_ + random_.Between(5, 150);
  if (change_pending_ && change_proposer_ == r.id) change_pending_ = false;
  ++stats_.crashes;
}

void Sim::Retire(Replica& r) {
  Trace("n%" PRIu64 " stops for good (removed from the voters)", r.id);
  r.node.reset();
  r.proposals.clear();
  r.reads.clear();
  r.retired = true;
  r.retire_at = 0;
  if (change_pending_ && change_proposer_ == r.id) change_pending_ = false;
}

std::vector<Replica*> Sim::Leaders() {
  std::vector<Replica*> leaders;
  for (auto& [id, r] : replicas_) {
    if (Running(r) && r.node->role() == Role::kLeader) leaders.push_back(&r);
  }
  return leaders;
}

// A write no other has: the seed and a count, some with a longer tail so
// that max_append_bytes splits appends.
std::string Sim::NewValue() {
  std::string value =
      "s" + std::to_string(seed_) + "." + std::to_string(++values_);
  if (random_.Chance(0.2)) value += std::string(random_.Between(50, 200), 'x');
  return value;
}

void Sim::Step() {
  ++now_;
  if (!healed_) Chaos();
  for (auto& [id, r] : replicas_) {
    if (!ok()) return;
    if (r.retire_at != 0 && r.retire_at <= now_) Retire(r);
    if (!r.node && !r.retired && r.restart_at != 0 && r.restart_at <= now_) {
      Start(r);
    }
    if (!Running(r)) continue;
    // A leader back from a pause still believes it leads, and the clients
    // that waited for it ask at once.
    if (!healed_ && r.paused_until == now_ && r.node->role() == Role::kLeader) {
      ReadFrom(r);
      if (Running(r)) ProposeTo(r);
      if (!Running(r)) continue;
    }
    r.node->Tick();
    AfterEvent(r);
  }
  Deliver();
  for (auto& [id, r] : replicas_) {
    if (Running(r) && (healed_ || !random_.Chance(profile_.slow_disk))) {
      HandleReadies(r);
    }
  }
  if (now_ % 500 == 0) CheckAllLogs();
}

void Sim::Deliver() {
  while (ok() && !flights_.empty() && flights_.begin()->first.first <= now_) {
    Message m = std::move(flights_.begin()->second);
    flights_.erase(flights_.begin());
    auto it = replicas_.find(m.to);
    if (it == replicas_.end() || !it->second.node) {
      if (tracing()) Trace("drop (down) %s", Describe(m).c_str());
      continue;
    }
    Replica& r = it->second;
    if (cut_.count({m.from, m.to})) {
      if (tracing()) Trace("drop (cut) %s", Describe(m).c_str());
      continue;
    }
    if (r.paused_until > now_) {  // waits in the socket
      Enqueue(m, r.paused_until);
      continue;
    }
    if (tracing()) Trace("recv %s", Describe(m).c_str());
    r.node->Step(m);
    AfterEvent(r);
  }
}

void Sim::Enqueue(const Message& m, uint64_t at) {
  flights_.emplace(std::make_pair(at, ++flight_seq_), m);
}

void Sim::AfterEvent(Replica& r) {
  CheckRole(r);
  if (random_.Chance(profile_.batch)) HandleReadies(r);
}

void Sim::HandleReadies(Replica& r) {
  for (int rounds = 0; ok() && r.node && r.node->HasReady(); ++rounds) {
    if (rounds == 1000) {
      Fail("n%" PRIu64 " has a Ready after 1000 in a row", r.id);
      return;
    }
    Ready rd = r.node->TakeReady();
    if (r.crash == CrashPlan::kBeforeSync) {
      Crash(r, "with its Ready not synced");
      return;
    }
    // Every entry enters a log through a Ready: the log-matching check
    // sees each as it comes, with the term of the entry before it.
    if (!rd.entries.empty()) {
      uint64_t prev = rd.entries.front().index - 1;
      uint64_t prev_term = r.node->TermAt(prev);
      ChainEntries("Ready entries", r.id, prev, prev_term,
                   prev == 0 || prev_term != 0, rd.entries);
    }
    Persist(r, rd);
    if (!ok()) return;
    if (r.crash == CrashPlan::kAfterSync) {
      Crash(r, "after the sync, before sending");
      return;
    }
    for (const Message& m : rd.messages) Send(r, m);
    Apply(r, rd);
    ServeReads(r);
    if (!ok()) return;
    r.node->Advance(rd);
    CheckRole(r);
  }
}

void Sim::Persist(Replica& r, const Ready& rd) {
  Disk& disk = r.disk;
  if (rd.snapshot) {
    const SnapshotMeta& s = *rd.snapshot;
    if (s.index <= disk.snapshot.index) {
      Fail("n%" PRIu64 " is handed snapshot %" PRIu64
           " to persist, older than its own at %" PRIu64,
           r.id, s.index, disk.snapshot.index);
      return;
    }
    // With the entries after it, the whole log on disk (raft.h).
    disk.log.clear();
    disk.snapshot = s;
    disk.snapshot_data = rd.snapshot_data;
  }
  if (rd.hard_state) {
    CheckHardState(r, disk.hard_state, *rd.hard_state);
    disk.hard_state = *rd.hard_state;
  }
  if (!rd.entries.empty()) {
    uint64_t first = rd.entries.front().index;
    if (first <= disk.snapshot.index || first > disk.LastIndex() + 1) {
      Fail("n%" PRIu64 "'s Ready appends from %" PRIu64
           " to a disk with snapshot %" PRIu64 " and log up to %" PRIu64,
           r.id, first, disk.snapshot.index, disk.LastIndex());
      return;
    }
    disk.log.resize(first - disk.snapshot.index - 1);
    disk.log.insert(disk.log.end(), rd.entries.begin(), rd.entries.end());
  }
  if (disk.hard_state.commit > disk.LastIndex()) {
    Fail("n%" PRIu64 "'s hard state commits %" PRIu64
         " but its disk holds up to %" PRIu64,
         r.id, disk.hard_state.commit, disk.LastIndex());
  }
}

void Sim::Send(Replica& r, const Message& sent) {
  ++stats_.messages;
  Message m = sent;
  if (m.from != r.id) {
    Fail("n%" PRIu64 " sends %s", r.id, Describe(m).c_str());
    return;
  }
  if (m.type == MessageType::kSnapshot) {
    ++stats_.snapshots;
    if (m.snapshot.index != r.sm.index() || m.snapshot.term != r.sm.term()) {
      Fail("n%" PRIu64 " sends a snapshot at %" PRIu64 "/%" PRIu64
           " but its state machine is at %" PRIu64 "/%" PRIu64,
           r.id, m.snapshot.index, m.snapshot.term, r.sm.index(), r.sm.term());
      return;
    }
    CheckVoters(r, "an outgoing snapshot", m.snapshot.index, m.snapshot.voters);
    m.snapshot_data = r.sm.Serialize(m.snapshot.index);
  }
  if (m.type == MessageType::kAppend) {
    ChainEntries("an Append", r.id, m.index, m.log_term, true, m.entries);
  }
  if (tracing()) Trace("send %s", Describe(m).c_str());
  if (!healed_ && random_.Chance(profile_.loss)) {
    Trace("lost");
    return;
  }
  int copies = !healed_ && random_.Chance(profile_.duplicate) ? 2 : 1;
  for (int i = 0; i < copies; ++i) {
    uint64_t delay = random_.Between(1, 3);
    if (!healed_ && random_.Chance(profile_.slow)) {
      delay += random_.Between(5, 40);
    }
    Enqueue(m, now_ + delay);
  }
}

void Sim::Apply(Replica& r, const Ready& rd) {
  if (rd.snapshot) RestoreSnapshot(r, *rd.snapshot, rd.snapshot_data);
  for (const Entry& e : rd.committed) {
    if (!ok()) return;
    if (e.index != r.sm.index() + 1 || e.index > r.node->commit()) {
      Fail("n%" PRIu64 " is handed index %" PRIu64 " to apply after %" PRIu64
           " (commit %" PRIu64 ")",
           r.id, e.index, r.sm.index(), r.node->commit());
      return;
    }
    CheckApplied(r, e);
    r.sm.Apply(e);
    if (e.type == EntryType::kConfig) ConfigApplied(r, e);
    ResolveProposals(r, e.index);
  }
  for (const ReadState& rs : rd.reads) {
    auto it = r.reads.find(rs.context);
    if (it == r.reads.end() || it->second.confirmed) {
      Fail("n%" PRIu64 " answers read %" PRIu64 " it was not asked, or twice",
           r.id, rs.context);
      return;
    }
    PendingRead& read = it->second;
    if (rs.index < read.must_see) {
      Fail("n%" PRIu64 " gives read %" PRIu64 " index %" PRIu64
           ", before the write acknowledged at %" PRIu64 " when it was asked",
           r.id, rs.context, rs.index, read.must_see);
      return;
    }
    read.confirmed = true;
    read.index = rs.index;
  }
}

void Sim::RestoreSnapshot(Replica& r, const SnapshotMeta& meta,
                          const std::string& data) {
  if (meta.index <= r.sm.index()) {
    Fail("n%" PRIu64 " is handed snapshot %" PRIu64
         " to restore, having applied %" PRIu64,
         r.id, meta.index, r.sm.index());
    return;
  }
  StateMachine sm;
  if (!sm.Restore(data) || sm.index() != meta.index || sm.term() != meta.term) {
    Fail("n%" PRIu64 "'s snapshot %" PRIu64 "/%" PRIu64
         " comes with other data (%zu bytes)",
         r.id, meta.index, meta.term, data.size());
    return;
  }
  for (const Entry& e : sm.entries()) CheckApplied(r, e);
  uint64_t from = r.sm.index() + 1;
  r.sm = std::move(sm);
  Trace("n%" PRIu64 " restores snapshot %" PRIu64 "/%" PRIu64 " voters=%s",
        r.id, meta.index, meta.term, Join(meta.voters).c_str());
  CheckVoters(r, "a received snapshot", meta.index, meta.voters);
  for (uint64_t i = from; i <= meta.index; ++i) {
    if (r.sm.At(i).type == EntryType::kConfig) ConfigApplied(r, r.sm.At(i));
  }
  ResolveProposals(r, meta.index);
}

void Sim::ServeReads(Replica& r) {
  for (auto it = r.reads.begin(); ok() && it != r.reads.end();) {
    const PendingRead& read = it->second;
    if (!read.confirmed || read.index > r.sm.index()) {
      ++it;
      continue;
    }
    if (read.must_see != 0 &&
        r.sm.At(read.must_see).data != read.must_see_value) {
      Fail("n%" PRIu64 "'s read %" PRIu64 " (applied %" PRIu64
           ") misses %s at %" PRIu64,
           r.id, it->first, r.sm.index(), read.must_see_value.c_str(),
           read.must_see);
      return;
    }
    Trace("n%" PRIu64 " serves read %" PRIu64 " at index %" PRIu64
          " (applied %" PRIu64 ")",
          r.id, it->first, read.index, r.sm.index());
    ++stats_.reads;
    it = r.reads.erase(it);
  }
}

// The driver's compaction: a snapshot of the state machine at index, and
// the log up to it dropped, in the node and on disk.
void Sim::Compact(Replica& r, uint64_t index) {
  r.node->Compact(index);
  const SnapshotMeta& s = r.node->snapshot();
  Trace("n%" PRIu64 " compacts to %" PRIu64, r.id, index);
  if (s.index != index || s.term != r.sm.TermAt(index)) {
    Fail("n%" PRIu64 " compacted to %" PRIu64 "/%" PRIu64
         " says its snapshot is %" PRIu64 "/%" PRIu64,
         r.id, index, r.sm.TermAt(index), s.index, s.term);
    return;
  }
  CheckVoters(r, "a compaction", index, s.voters);
  Disk& disk = r.disk;
  uint64_t drop =
      std::min<uint64_t>(index - disk.snapshot.index, disk.log.size());
  disk.log.erase(disk.log.begin(), disk.log.begin() + drop);
  disk.snapshot = s;
  disk.snapshot_data = r.sm.Serialize(index);
  ++stats_.compactions;
}

void Sim::Chaos() {
  const Profile& p = profile_;
  if (random_.Chance(p.crash)) CrashSome();
  if (!cut_.empty() && now_ >= heal_at_) {
    cut_.clear();
    Trace("the partition heals");
  } else if (cut_.empty() && random_.Chance(p.partition)) {
    Partition();
  }
  if (random_.Chance(p.pause)) {
    std::vector<Replica*> up;
    for (auto& [id, r] : replicas_) {
      if (Running(r)) up.push_back(&r);
    }
    if (!up.empty()) {
      Replica& r = *random_.Pick(up);
      r.paused_until = now_ + random_.Between(5, 60);
      Trace("n%" PRIu64 " pauses until %" PRIu64, r.id, r.paused_until);
    }
  }
  if (random_.Chance(p.clock_jump)) {
    std::vector<Replica*> up;
    for (auto& [id, r] : replicas_) {
      if (Running(r)) up.push_back(&r);
    }
    if (!up.empty()) {
      Replica& r = *random_.Pick(up);
      uint64_t ticks = random_.Between(p.election_ticks, 2 * p.election_ticks);
      Trace("n%" PRIu64 "'s clock jumps %" PRIu64 " ticks", r.id, ticks);
      for (uint64_t i = 0; i < ticks && r.node; ++i) {
        r.node->Tick();
        AfterEvent(r);
      }
    }
  }
  if (random_.Chance(p.propose)) Propose();
  if (random_.Chance(p.read)) Read();
  if (random_.Chance(p.compact)) CompactSome();
  if (random_.Chance(p.transfer)) Transfer();
  if (random_.Chance(p.campaign)) CampaignSome();
  if (random_.Chance(p.membership)) ChangeMembership();
}

void Sim::CrashSome() {
  std::vector<Replica*> up;
  for (auto& [id, r] : replicas_) {
    if (r.node) up.push_back(&r);
  }
  std::vector<Replica*> leaders = Leaders();
  if (up.empty()) return;
  Replica& r = !leaders.empty() && random_.Chance(0.3) ? *random_.Pick(leaders)
                                                       : *random_.Pick(up);
  switch (random_.Below(5)) {
    case 0:
      r.crash = CrashPlan::kBeforeSync;
      Trace("n%" PRIu64 " will crash before syncing its next Ready", r.id);
      break;
    case 1:
      r.crash = CrashPlan::kAfterSync;
      Trace("n%" PRIu64 " will crash after syncing its next Ready", r.id);
      break;
    default:
      Crash(r, "now");
  }
}

void Sim::Partition() {
  std::vector<NodeId> ids;
  for (auto& [id, r] : replicas_) {
    if (!r.retired) ids.push_back(id);
  }
  std::vector<Replica*> leaders = Leaders();
  auto cut_both = [this](NodeId a, NodeId b) {
    cut_.insert({a, b});
    cut_.insert({b, a});
  };
  switch (random_.Below(4)) {
    case 0: {  // two sides
      random_.Shuffle(&ids);
      size_t side = random_.Between(1, ids.size() / 2);
      for (size_t i = 0; i < side; ++i) {
        for (size_t j = side; j < ids.size(); ++j) cut_both(ids[i], ids[j]);
      }
      break;
    }
    case 1: {  // the leader alone, or any one
      NodeId alone =
          leaders.empty() ? random_.Pick(ids) : random_.Pick(leaders)->id;
      for (NodeId id : ids) {
        if (id != alone) cut_both(alone, id);
      }
      break;
    }
    default: {  // one-way links
      uint64_t links = random_.Between(1, 3);
      for (uint64_t i = 0; i < links; ++i) {
        NodeId a = random_.Pick(ids), b = random_.Pick(ids);
        if (a != b) cut_.insert({a, b});
      }
    }
  }
  heal_at_ = now_ + random_.Between(20, 300);
  ++stats_.partitions;
  if (tracing()) {
    std::string links;
    for (const auto& [from, to] : cut_) {
      links += " n" + std::to_string(from) + "->n" + std::to_string(to);
    }
    Trace("partition until %" PRIu64 ", cut:%s", heal_at_, links.c_str());
  }
}

void Sim::ProposeTo(Replica& r) {
  std::string value = NewValue();
  uint64_t index = r.node->Propose(value);
  Trace("n%" PRIu64 " proposes %s: index %" PRIu64, r.id, value.c_str(), index);
  if (index != 0) {
    if (index != r.node->last_index()) {
      Fail("n%" PRIu64 "'s proposal has index %" PRIu64
           ", its last is %" PRIu64,
           r.id, index, r.node->last_index());
    }
    Accepted(r, index, {r.node->term(), EntryType::kNormal, value});
  }
  AfterEvent(r);
}

void Sim::Propose() {
  std::vector<Replica*> leaders = Leaders();
  if (!leaders.empty()) ProposeTo(*random_.Pick(leaders));
  // A replica that does not lead takes nothing.
  if (random_.Chance(0.1)) {
    std::vector<Replica*> others;
    for (auto& [id, r] : replicas_) {
      if (Running(r) && r.node->role() != Role::kLeader) others.push_back(&r);
    }
    if (!others.empty()) {
      Replica& r = *random_.Pick(others);
      uint64_t index = r.node->Propose("refused");
      if (index != 0) {
        Fail("n%" PRIu64 " (%s) took a proposal at %" PRIu64, r.id,
             raft::RoleName(r.node->role()), index);
      }
    }
  }
}

void Sim::Read() {
  std::vector<Replica*> leaders = Leaders();
  if (!leaders.empty()) ReadFrom(*random_.Pick(leaders));
}

void Sim::ReadFrom(Replica& r) {
  uint64_t context = ++contexts_;
  bool taken = r.node->ReadIndex(context);
  Trace("n%" PRIu64 " is asked read %" PRIu64 " (must see %" PRIu64 "): %s",
        r.id, context, max_acked_, taken ? "taken" : "refused");
  if (taken) {
    PendingRead& read = r.reads[context];
    read.must_see = max_acked_;
    read.must_see_value = max_acked_value_;
  }
  AfterEvent(r);
}

void Sim::CompactSome() {
  std::vector<Replica*> up;
  for (auto& [id, r] : replicas_) {
    if (Running(r)) up.push_back(&r);
  }
  if (up.empty()) return;
  Replica& r = *random_.Pick(up);
  uint64_t lo = std::max(r.node->snapshot().index, r.disk.snapshot.index) + 1;
  uint64_t hi = r.sm.index();
  if (lo > hi) return;
  Compact(r, random_.Between(lo, hi));
}

void Sim::Transfer() {
  std::vector<Replica*> leaders = Leaders();
  if (leaders.empty()) return;
  Replica& r = *random_.Pick(leaders);
  std::vector<NodeId> others;
  for (NodeId id : r.node->voters()) {
    if (id != r.id) others.push_back(id);
  }
  if (others.empty()) return;
  NodeId to = random_.Pick(others);
  bool taken = r.node->TransferLeadership(to);
  Trace("n%" PRIu64 " hands leadership to n%" PRIu64 ": %s", r.id, to,
        taken ? "taken" : "refused");
  if (taken) ++stats_.transfers;
  AfterEvent(r);
}

void Sim::CampaignSome() {
  std::vector<Replica*> others;
  for (auto& [id, r] : replicas_) {
    if (Running(r) && r.node->role() != Role::kLeader) others.push_back(&r);
  }
  if (others.empty()) return;
  Replica& r = *random_.Pick(others);
  Trace("n%" PRIu64 " campaigns", r.id);
  r.node->Campaign();
  AfterEvent(r);
}

// One voter added (a new replica, started with no voters: it learns them
// from the leader) or one removed (stopped once that is applied; now and
// then the leader itself, which steps down once that is committed), never
// below three.
void Sim::ChangeMembership() {
  std::vector<Replica*> leaders = Leaders();
  if (leaders.empty()) return;
  Replica& leader = *random_.Pick(leaders);
  // A change under way at this leader (appended in its term, not yet
  // committed): it must refuse another.
  bool under_way = false;
  if (change_pending_) {
    auto it = leader.proposals.find(change_index_);
    under_way = change_proposer_ == leader.id && it != leader.proposals.end() &&
                it->second.type == EntryType::kConfig &&
                it->second.term == leader.node->term() &&
                leader.node->commit() < change_index_;
    if (!under_way) return;
  }
  std::vector<NodeId> voters = leader.node->voters();
  bool add = voters.size() <= 3   ? true
             : voters.size() >= 6 ? false
                                  : random_.Chance(0.5);
  if (add) {
    if (spare_ == 0) {
      spare_ = next_id_++;
      Start(AddReplica(spare_, {}));
    }
    voters.push_back(spare_);
  } else {
    std::vector<NodeId> others;
    for (NodeId id : voters) {
      if (id != leader.id) others.push_back(id);
    }
    bool self = others.size() < voters.size() && random_.Chance(0.25);
    NodeId gone = self ? leader.id : random_.Pick(others);
    voters.erase(std::find(voters.begin(), voters.end(), gone));
  }
  uint64_t index = leader.node->ProposeVoters(voters);
  Trace("n%" PRIu64 " proposes voters %s: index %" PRIu64, leader.id,
        Join(voters).c_str(), index);
  if (under_way) {
    if (index != 0) {
      Fail("n%" PRIu64 " takes a configuration change at %" PRIu64
           " while the one at %" PRIu64 " is not committed",
           leader.id, index, change_index_);
    }
    return;
  }
  if (index != 0) {
    if (add) spare_ = 0;
    Accepted(
        leader, index,
        {leader.node->term(), EntryType::kConfig, raft::EncodeVoters(voters)});
    change_pending_ = true;
    change_proposer_ = leader.id;
    change_index_ = index;
  }
  AfterEvent(leader);
}

// After any event of r's: one leader a term, and a new leader holds every
// acknowledged entry.
void Sim::CheckRole(Replica& r) {
  if (!r.node || !ok()) return;
  const raft::Node& n = *r.node;
  if (n.commit() > n.last_index()) {
    Fail("n%" PRIu64 " commits %" PRIu64 " past its last index %" PRIu64, r.id,
         n.commit(), n.last_index());
    return;
  }
  // Who committed each index first: a leader counting replicas, in its
  // term.  A follower learns a commit from a leader of its term, so its
  // term is at least the committer's, should a leader's step escape.
  if (n.commit() > commit_terms_.size()) {
    commit_terms_.resize(n.commit(), n.term());
  }
  if (n.role() != Role::kLeader) {
    r.leader_term = 0;
    return;
  }
  auto [it, first] = leaders_.emplace(n.term(), r.id);
  if (it->second != r.id) {
    Fail("election safety: n%" PRIu64 " and n%" PRIu64
         " both lead term %" PRIu64,
         it->second, r.id, n.term());
    return;
  }
  if (r.leader_term == n.term()) return;
  r.leader_term = n.term();
  ++stats_.leaders;
  Trace("n%" PRIu64 " leads term %" PRIu64 " (last %" PRIu64 ", commit %" PRIu64
        ", voters %s)",
        r.id, n.term(), n.last_index(), n.commit(), Join(n.voters()).c_str());
  for (const Acked& a : acked_) {
    if (a.commit_term < n.term() && !Holds(n, a.index, a.term)) {
      Fail("leader completeness: n%" PRIu64 " leads term %" PRIu64
           " without %s acknowledged at %" PRIu64 "/%" PRIu64
           ", committed in term %" PRIu64 " (it has term %" PRIu64 " there)",
           r.id, n.term(), a.value.c_str(), a.index, a.term, a.commit_term,
           n.TermAt(a.index));
      return;
    }
  }
}

bool Sim::Holds(const raft::Node& n, uint64_t index, uint64_t term) const {
  return index <= n.snapshot().index || n.TermAt(index) == term;
}

// State machine safety: whoever applies index i applies the same entry.
void Sim::CheckApplied(const Replica& r, const Entry& e) {
  if (e.index <= applied_.size()) {
    const Entry& first = applied_[e.index - 1];
    if (!(first == e)) {
      Fail("state machine safety: n%" PRIu64 " applies %" PRIu64 "/%" PRIu64
           " %s where %" PRIu64 "/%" PRIu64 " %s was applied",
           r.id, e.index, e.term, e.data.c_str(), first.index, first.term,
           first.data.c_str());
    }
    return;
  }
  if (e.index != applied_.size() + 1) {
    Fail("n%" PRIu64 " applies %" PRIu64 ", none has applied %zu", r.id,
         e.index, applied_.size() + 1);
    return;
  }
  applied_.push_back(e);
  if (e.type == EntryType::kConfig) {
    std::vector<NodeId> voters = Sorted(DecodedVoters(e.data));
    if (voters != applied_voters_) ++stats_.config_changes;
    applied_voters_ = voters;
  }
}

void Sim::CheckHardState(const Replica& r, const HardState& old,
                         const HardState& now) {
  if (now.term < old.term || now.commit < old.commit ||
      (now.term == old.term && old.vote != 0 && now.vote != old.vote)) {
    Fail("n%" PRIu64 "'s hard state goes from term=%" PRIu64 " vote=%" PRIu64
         " commit=%" PRIu64 " to term=%" PRIu64 " vote=%" PRIu64
         " commit=%" PRIu64,
         r.id, old.term, old.vote, old.commit, now.term, now.vote, now.commit);
  }
}

void Sim::CheckVoters(const Replica& r, const char* what, uint64_t index,
                      const std::vector<NodeId>& voters) {
  std::vector<NodeId> want = Sorted(r.sm.VotersAt(index, initial_voters_));
  if (Sorted(voters) != want) {
    Fail("n%" PRIu64 ": %s at %" PRIu64 " names voters %s, the log says %s",
         r.id, what, index, Join(voters).c_str(), Join(want).c_str());
  }
}

// Log matching, from what the logs show: an (index, term) has one content
// and one term before it, so two logs that share an entry share every
// entry before it too.
void Sim::ChainEntries(const char* where, NodeId id, uint64_t prev_index,
                       uint64_t prev_term, bool prev_known,
                       const std::vector<Entry>& entries) {
  for (const Entry& e : entries) {
    if (!ok()) return;
    if (e.index != prev_index + 1 || (prev_known && e.term < prev_term)) {
      Fail("%s of n%" PRIu64 ": %" PRIu64 "/%" PRIu64 " follows %" PRIu64
           "/%" PRIu64,
           where, id, e.index, e.term, prev_index, prev_term);
      return;
    }
    auto [it, fresh] =
        records_.emplace(std::make_pair(e.index, e.term),
                         LogRecord{e.type, e.data, prev_known, prev_term});
    LogRecord& rec = it->second;
    if (!fresh) {
      if (rec.type != e.type || rec.data != e.data) {
        Fail("log matching: %s of n%" PRIu64 " has %s at %" PRIu64 "/%" PRIu64
             ", another log %s",
             where, id, e.data.c_str(), e.index, e.term, rec.data.c_str());
        return;
      }
      if (prev_known && rec.prev_known && rec.prev_term != prev_term) {
        Fail("log matching: %s of n%" PRIu64 " has %" PRIu64 "/%" PRIu64
             " after term %" PRIu64 ", another log after term %" PRIu64,
             where, id, e.index, e.term, prev_term, rec.prev_term);
        return;
      }
      if (prev_known && !rec.prev_known) {
        rec.prev_known = true;
        rec.prev_term = prev_term;
      }
    }
    prev_index = e.index;
    prev_term = e.term;
    prev_known = true;
  }
}

// The same for every log whole, in memory and on disk.
void Sim::CheckAllLogs() {
  for (auto& [id, r] : replicas_) {
    if (!r.node || !ok()) continue;
    const raft::Node& n = *r.node;
    ChainEntries("the log in memory", id, n.snapshot().index, n.snapshot().term,
                 true, n.EntriesBetween(n.first_index(), n.last_index()));
    ChainEntries("the log on disk", id, r.disk.snapshot.index,
                 r.disk.snapshot.term, true, r.disk.log);
  }
}

// r took a client's request at index.  One it took there before, in an
// earlier term, was dropped when its log was cut back.
void Sim::Accepted(Replica& r, uint64_t index, Proposal p) {
  if (change_pending_ && change_proposer_ == r.id && change_index_ == index) {
    change_pending_ = false;
  }
  r.proposals[index] = std::move(p);
}

// r's client requests appended up to index are settled: acknowledged if
// the entry applied there is the one r appended, else dropped.
void Sim::ResolveProposals(Replica& r, uint64_t upto) {
  while (ok() && !r.proposals.empty() && r.proposals.begin()->first <= upto) {
    uint64_t index = r.proposals.begin()->first;
    Proposal p = std::move(r.proposals.begin()->second);
    r.proposals.erase(r.proposals.begin());
    if (change_pending_ && change_proposer_ == r.id && change_index_ == index) {
      change_pending_ = false;
    }
    const Entry& e = r.sm.At(index);
    if (e.term != p.term) {
      Trace("n%" PRIu64 "'s proposal at %" PRIu64 "/%" PRIu64 " is dropped",
            r.id, index, p.term);
      continue;
    }
    bool same = e.type == p.type && e.data == p.data;
    if (e.type == EntryType::kConfig && p.type == EntryType::kConfig) {
      std::vector<NodeId> a, b;
      same = raft::DecodeVoters(e.data, &a) && raft::DecodeVoters(p.data, &b) &&
             Sorted(a) == Sorted(b);
    }
    if (!same) {
      Fail("n%" PRIu64 " appended %s at %" PRIu64 "/%" PRIu64
           ", %s is applied there",
           r.id, p.data.c_str(), index, p.term, e.data.c_str());
      return;
    }
    if (e.type == EntryType::kNormal) Acknowledge(r, e);
  }
}

void Sim::Acknowledge(Replica& r, const Entry& e) {
  if (!acked_values_.insert(e.data).second) {
    Fail("%s is acknowledged twice", e.data.c_str());
    return;
  }
  const uint64_t commit_term = commit_terms_.at(e.index - 1);
  acked_.push_back({e.index, e.term, commit_term, e.data});
  if (e.index > max_acked_) {
    max_acked_ = e.index;
    max_acked_value_ = e.data;
  }
  ++stats_.acked;
  Trace("n%" PRIu64 " acknowledges %s at %" PRIu64 "/%" PRIu64, r.id,
        e.data.c_str(), e.index, e.term);
  for (Replica* leader : Leaders()) {
    const raft::Node& n = *leader->node;
    if (n.term() > commit_term && !Holds(n, e.index, e.term)) {
      Fail("leader completeness: n%" PRIu64 " leads term %" PRIu64
           " without %s acknowledged at %" PRIu64 "/%" PRIu64
           ", committed in term %" PRIu64,
           leader->id, n.term(), e.data.c_str(), e.index, e.term, commit_term);
      return;
    }
  }
}

// A committed configuration: the voters it removes stop soon after.
void Sim::ConfigApplied(const Replica& r, const Entry& e) {
  std::vector<NodeId> now;
  if (!raft::DecodeVoters(e.data, &now)) {
    Fail("n%" PRIu64 " applies a config entry at %" PRIu64
         " that does not decode",
         r.id, e.index);
    return;
  }
  for (NodeId id : r.sm.VotersAt(e.index - 1, initial_voters_)) {
    if (std::find(now.begin(), now.end(), id) != now.end()) continue;
    Replica& gone = replicas_[id];
    if (!gone.retired && gone.retire_at == 0) {
      gone.retire_at = now_ + random_.Between(1, 30);
    }
  }
}

void Sim::Heal() {
  healed_ = true;
  cut_.clear();
  Trace("the network heals; no more faults");
  for (auto& [id, r] : replicas_) {
    r.crash = CrashPlan::kNone;
    r.paused_until = std::min(r.paused_until, now_);
    if (!r.node && !r.retired) Start(r);
  }
}

// A leader whose every entry is committed and applied by every voter.
Replica* Sim::Settled() {
  for (Replica* leader : Leaders()) {
    const raft::Node& n = *leader->node;
    if (n.commit() != n.last_index() || n.TermAt(n.commit()) != n.term()) {
      continue;
    }
    bool all = true;
    for (NodeId id : n.voters()) {
      auto it = replicas_.find(id);
      all = all && it != replicas_.end() && Running(it->second) &&
            it->second.sm.index() == n.last_index();
    }
    if (all) return leader;
  }
  return nullptr;
}

void Sim::Finish() {
  Heal();
  uint64_t limit = now_ + 5000;
  while (ok() && now_ < limit && !Settled()) Step();
  if (!ok()) return;
  if (!Settled()) {
    Fail(
        "liveness: no leader with every voter caught up, 5000 ticks after "
        "the network healed: %s",
        State().c_str());
    return;
  }
  // A new write commits.
  std::string value;
  NodeId proposer = 0;
  uint64_t index = 0;
  limit = now_ + 3000;
  while (ok() && (value.empty() || !acked_values_.count(value))) {
    if (now_ >= limit) {
      Fail("liveness: a write after the network healed did not commit: %s",
           State().c_str());
      return;
    }
    Replica* p = proposer ? &replicas_[proposer] : nullptr;
    if (!p || !p->proposals.count(index)) {
      if (Replica* leader = Settled()) {
        value = NewValue();
        index = leader->node->Propose(value);
        proposer = leader->id;
        Trace("n%" PRIu64 " proposes %s (the last): index %" PRIu64, proposer,
              value.c_str(), index);
        if (index != 0) {
          Accepted(*leader, index,
                   {leader->node->term(), EntryType::kNormal, value});
        }
        AfterEvent(*leader);
      }
    }
    Step();
  }
  Replica* leader = nullptr;
  limit = now_ + 3000;
  while (ok() && now_ < limit && !(leader = Settled())) Step();
  if (!ok()) return;
  if (!leader) {
    Fail("liveness: the voters do not catch up after the last write: %s",
         State().c_str());
    return;
  }
  CheckAllLogs();
  CheckEnd(*leader);
}

// Every voter has applied every acknowledged write once, and they all
// applied the same.
void Sim::CheckEnd(const Replica& leader) {
  const Replica* first = nullptr;
  for (NodeId id : leader.node->voters()) {
    const Replica& r = replicas_[id];
    std::set<std::string> seen;
    for (const Entry& e : r.sm.entries()) {
      if (e.type == EntryType::kNormal && !seen.insert(e.data).second) {
        Fail("n%" PRIu64 " applied %s twice", id, e.data.c_str());
        return;
      }
    }
    for (const Acked& a : acked_) {
      if (!seen.count(a.value)) {
        Fail("n%" PRIu64 " lost %s, acknowledged at %" PRIu64 "/%" PRIu64, id,
             a.value.c_str(), a.index, a.term);
        return;
      }
    }
    if (first && r.sm.entries() != first->sm.entries()) {
      Fail("n%" PRIu64 " and n%" PRIu64 " applied different entries", id,
           first->id);
      return;
    }
    first = &r;
  }
  Trace("end: %zu acknowledged, all on %s", acked_.size(),
        Join(leader.node->voters()).c_str());
}

std::string Sim::State() {
  std::string s;
  for (auto& [id, r] : replicas_) {
    s += " n" + std::to_string(id) + "=";
    if (r.retired) {
      s += "retired";
    } else if (!r.node) {
      s += "down";
    } else {
      const raft::Node& n = *r.node;
      s += std::string(raft::RoleName(n.role())) + "/t" +
           std::to_string(n.term()) + "/last" + std::to_string(n.last_index()) +
           "/commit" + std::to_string(n.commit()) + "/applied" +
           std::to_string(r.sm.index()) + "/voters:" + Join(n.voters());
    }
  }
  return s;
}

bool Sim::Run() {
  while (ok() && now_ < settings_.steps) Step();
  if (ok()) CheckAllLogs();
  if (ok()) Finish();
  stats_.runs = 1;
  stats_.ticks = now_;
  return ok();
}

// A crash of the simulation itself (a failed assertion in the module, a
// bad access) still names the seed that caused it.
volatile uint64_t g_seed = 0;

void OnFatalSignal(int sig) {
  char buf[64] = "natter-raft-sim: died in seed ";
  size_t len = 30;
  char digits[24];
  size_t n = 0;
  uint64_t s = g_seed;
  do {
    digits[n++] = static_cast<char>('0' + s % 10);
    s /= 10;
  } while (s != 0);
  while (n > 0) buf[len++] = digits[--n];
  buf[len++] = '\n';
  ssize_t ignored = write(2, buf, len);
  (void)ignored;
  signal(sig, SIG_DFL);
  raise(sig);
}

int RunAll(const Settings& settings) {
  // A trace is read up to where the run died.
  if (settings.verbose) std::setvbuf(stdout, nullptr, _IOLBF, 0);
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) {
    signal(sig, OnFatalSignal);
  }
  Stats total;
  uint64_t failed = 0;
  std::set<unsigned> sizes;
  std::string again;
  if (settings.steps != Settings().steps) {
    again += " --steps " + std::to_string(settings.steps);
  }
  if (settings.nodes != 0)
    again += " --nodes " + std::to_string(settings.nodes);
  for (uint64_t i = 0; i < settings.seeds; ++i) {
    uint64_t seed = settings.first_seed + i;
    g_seed = seed;
    std::string violation;
    Sim sim(seed, settings);
    sizes.insert(sim.nodes());
    try {
      if (!sim.Run()) violation = sim.violation();
    } catch (const std::exception& e) {
      violation = std::string("exception: ") + e.what();
    }
    total.Add(sim.stats());
    if (violation.empty()) continue;
    ++failed;
    std::fprintf(stderr,
                 "natter-raft-sim: seed %" PRIu64
                 ": %s\n"
                 "  again: natter-raft-sim --first-seed %" PRIu64
                 " --seeds 1%s --verbose\n",
                 seed, violation.c_str(), seed, again.c_str());
  }
  std::string nodes;
  for (unsigned n : sizes)
    nodes += (nodes.empty() ? "" : ",") + std::to_string(n);
  std::printf("%" PRIu64 " runs (seeds %" PRIu64 "..%" PRIu64
              ", %s nodes, %" PRIu64 " ticks each and the end): %" PRIu64
              " violations; %" PRIu64 " writes acknowledged, %" PRIu64
              " leaders, %" PRIu64 " crashes, %" PRIu64 " partitions, %" PRIu64
              " compactions, %" PRIu64 " snapshots sent, %" PRIu64
              " reads, %" PRIu64 " membership changes, %" PRIu64
              " transfers, %" PRIu64 " messages, %" PRIu64 " ticks\n",
              total.runs, settings.first_seed,
              settings.first_seed + settings.seeds - 1, nodes.c_str(),
              settings.steps, failed, total.acked, total.leaders, total.crashes,
              total.partitions, total.compactions, total.snapshots, total.reads,
              total.config_changes, total.transfers, total.messages,
              total.ticks);
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace natter

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  natter::Settings st;
  po::options_description opts("natter-raft-sim options");
  opts.add_options()("seeds", natter::UintValue("seeds", &st.seeds),
                     "runs, one a seed (default 2000)")(
      "first-seed", natter::UintValue("first-seed", &st.first_seed),
      "the first run's seed (default 1)")(
      "steps", natter::UintValue("steps", &st.steps),
      "ticks of faults a run, before the network heals (default 3000)")(
      "nodes", natter::UintValue("nodes", &st.nodes),
      "replicas at the start, 3 or 5 (default: by seed)")(
      "verbose", po::bool_switch(&st.verbose), "trace every event")(
      "help,h", "show this");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "natter-raft-sim: %s\n", e.what());
    return 64;
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  if (st.seeds == 0 || (st.nodes != 0 && st.nodes != 3 && st.nodes != 5)) {
    std::fprintf(stderr,
                 "natter-raft-sim: seeds must be above 0, nodes 3 or 5\n");
    return 64;
  }
  return natter::RunAll(st);
}

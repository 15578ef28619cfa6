#include "daemons/stored/raft.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "common/text.h"

namespace natter {
namespace raft {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "pre-candidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "?";
}

std::string EncodeVoters(const std::vector<NodeId>& voters) {
  std::string out;
  for (NodeId v : voters) {
    if (!out.empty()) out += ',';
    out += std::to_string(v);
  }
  return out;
}

bool DecodeVoters(const std::string& data, std::vector<NodeId>* voters) {
  voters->clear();
  if (data.empty()) return true;
  size_t at = 0;
  while (at <= data.size()) {
    size_t comma = data.find(',', at);
    if (comma == std::string::npos) comma = data.size();
    std::optional<uint64_t> v = ParseUint(data.substr(at, comma - at));
    if (!v || *v == 0) return false;
    voters->push_back(*v);
    at = comma + 1;
  }
  std::sort(voters->begin(), voters->end());
  return std::adjacent_find(voters->begin(), voters->end()) == voters->end();
}

Node::Node(const Options& options, const Restored& restored)
    : id_(options.id),
      election_ticks_(std::max(options.election_ticks, 2)),
      heartbeat_ticks_(std::max(options.heartbeat_ticks, 1)),
      max_append_bytes_(options.max_append_bytes),
      max_append_entries_(std::max<size_t>(options.max_append_entries, 1)),
      max_inflight_(std::max<size_t>(options.max_inflight, 1)),
      random_(options.seed ^ (options.id * 0x9e3779b97f4a7c15ull)) {
  if (id_ == 0) throw std::invalid_argument("raft: a node's id is above 0");
  term_ = restored.hard_state.term;
  vote_ = restored.hard_state.vote;
  snapshot_ = restored.snapshot;
  log_ = restored.entries;
  for (size_t i = 0; i < log_.size(); ++i) {
    if (log_[i].index != snapshot_.index + 1 + i) {
      throw std::invalid_argument("raft: the restored log is not contiguous");
    }
  }
  stable_ = LastIndex();
  commit_ = std::min(std::max(restored.hard_state.commit, snapshot_.index),
                     LastIndex());
  applied_ = handed_ = snapshot_.index;
  last_hard_state_ = {term_, vote_, commit_};
  // The configurations: the snapshot's, else the options' (a new shard),
  // then every one the log holds.
  std::vector<NodeId> first = snapshot_.index > 0 || !snapshot_.voters.empty()
                                  ? snapshot_.voters
                                  : options.voters;
  LoadConfigs(std::move(first));
  ResetTimeout();
}

void Node::LoadConfigs(std::vector<NodeId> first) {
  std::sort(first.begin(), first.end());
  configs_.clear();
  configs_.push_back({snapshot_.index, first});
  pending_config_ = 0;
  for (const Entry& e : log_) {
    std::vector<NodeId> v;
    if (e.type == EntryType::kConfig && DecodeVoters(e.data, &v)) {
      configs_.push_back({e.index, v});
      pending_config_ = e.index;
    }
  }
  SetVoters(configs_.back().second);
}

// --- the log ---------------------------------------------------------------

uint64_t Node::LastIndex() const { return snapshot_.index + log_.size(); }

uint64_t Node::LastTerm() const {
  return log_.empty() ? snapshot_.term : log_.back().term;
}

uint64_t Node::TermAt(uint64_t index) const {
  if (index == snapshot_.index) return snapshot_.term;
  if (index < snapshot_.index || index > LastIndex()) return 0;
  return log_[index - snapshot_.index - 1].term;
}

std::vector<Entry> Node::EntriesBetween(uint64_t lo, uint64_t hi) const {
  std::vector<Entry> out;
  lo = std::max(lo, snapshot_.index + 1);
  hi = std::min(hi, LastIndex());
  for (uint64_t i = lo; i <= hi; ++i)
    out.push_back(log_[i - snapshot_.index - 1]);
  return out;
}

void Node::AppendLocal(Entry e) {
  e.index = LastIndex() + 1;
  if (e.type == EntryType::kConfig) {
    std::vector<NodeId> v;
    if (DecodeVoters(e.data, &v)) {
      configs_.push_back({e.index, v});
      pending_config_ = e.index;
      SetVoters(v);
    }
  }
  log_.push_back(std::move(e));
}

void Node::TruncateFrom(uint64_t index) {
  // Never below what is committed: a leader never asks for that.
  if (index <= commit_)
    throw std::logic_error("raft: truncating committed entries");
  log_.resize(index - snapshot_.index - 1);
  stable_ = std::min(stable_, index - 1);
  bool changed = false;
  while (configs_.size() > 1 && configs_.back().first >= index) {
    configs_.pop_back();
    changed = true;
  }
  if (changed) {
    pending_config_ = configs_.size() > 1 ? configs_.back().first : 0;
    SetVoters(configs_.back().second);
  }
}

std::optional<uint64_t> Node::TryAppend(uint64_t prev_index, uint64_t prev_term,
                                        const std::vector<Entry>& entries) {
  if (prev_index < snapshot_.index) {
    // What the leader sends from before our snapshot is committed here
    // already: skip it.
    std::vector<Entry> rest;
    for (const Entry& e : entries) {
      if (e.index > snapshot_.index) rest.push_back(e);
    }
    if (rest.empty()) return prev_index + entries.size();
    if (rest.front().index != snapshot_.index + 1) return std::nullopt;
    return TryAppend(snapshot_.index, snapshot_.term, rest);
  }
  if (prev_index > LastIndex() || TermAt(prev_index) != prev_term)
    return std::nullopt;
  for (const Entry& e : entries) {
    if (e.index <= LastIndex()) {
      if (TermAt(e.index) == e.term) continue;  // have it already
      TruncateFrom(e.index);
    }
    AppendLocal(e);
  }
  return prev_index + entries.size();
}

void Node::SetVoters(std::vector<NodeId> voters) {
  std::sort(voters.begin(), voters.end());
  voters_ = std::move(voters);
  if (role_ != Role::kLeader) return;
  // Progress for new voters; gone ones dropped.
  for (NodeId v : voters_) {
    if (v != id_ && !progress_.count(v)) {
      Progress p;
      p.next = LastIndex() + 1;
      p.active = true;
      progress_[v] = p;
    }
  }
  for (auto it = progress_.begin(); it != progress_.end();) {
    it = IsVoter(it->first) ? std::next(it) : progress_.erase(it);
  }
}

std::vector<NodeId> Node::VotersAt(uint64_t index) const {
  std::vector<NodeId> v = configs_.front().second;
  for (const auto& [at, voters] : configs_) {
    if (at <= index) v = voters;
  }
  return v;
}

bool Node::IsVoter(NodeId id) const {
  return std::binary_search(voters_.begin(), voters_.end(), id);
}

void Node::Compact(uint64_t index) {
  index = std::min(index, applied_);
  if (index <= snapshot_.index) return;
  SnapshotMeta meta;
  meta.index = index;
  meta.term = TermAt(index);
  meta.voters = VotersAt(index);
  log_.erase(log_.begin(), log_.begin() + (index - snapshot_.index));
  snapshot_ = meta;
  // Configurations at or below the snapshot collapse into its own.
  while (configs_.size() > 1 && configs_[1].first <= index)
    configs_.erase(configs_.begin());
  configs_.front() = {index, meta.voters};
}

// --- roles -----------------------------------------------------------------

void Node::ResetTimeout() {
  elapsed_ = 0;
  std::uniform_int_distribution<int> d(election_ticks_,
                                       2 * election_ticks_ - 1);
  timeout_ = d(random_);
}

void Node::BecomeFollower(uint64_t term, NodeId leader) {
  if (term != term_) {
    term_ = term;
    vote_ = 0;
  }
  role_ = Role::kFollower;
  leader_ = leader;
  transferee_ = 0;
  reads_.clear();
  progress_.clear();
  votes_.clear();
  ResetTimeout();
}

void Node::BecomePreCandidate() {
  // The term does not change: a node cut off does not raise it for
  // nothing and then depose the leader when it comes back.
  role_ = Role::kPreCandidate;
  leader_ = 0;
  votes_.clear();
  votes_[id_] = true;
  ResetTimeout();
}

void Node::BecomeCandidate() {
  role_ = Role::kCandidate;
  ++term_;
  vote_ = id_;
  leader_ = 0;
  votes_.clear();
  votes_[id_] = true;
  ResetTimeout();
  ++elections_;
}

void Node::BecomeLeader() {
  role_ = Role::kLeader;
  leader_ = id_;
  transferee_ = 0;
  votes_.clear();
  progress_.clear();
  reads_.clear();
  quorum_elapsed_ = 0;
  elapsed_ = 0;
  SetVoters(voters_);
  for (auto& [peer, p] : progress_) {
    p.next = LastIndex() + 1;
    p.match = 0;
    p.probing = true;
  }
  // A no-op of its own term: once it commits, so has everything before it
  // (a leader counts replicas only for entries of its own term).  A new
  // shard's first entry is its voters instead, so that they are in the
  // log: a replica that joins later (with no voters of its own) learns
  // them there, and its snapshots name them.
  Entry first;
  first.term = term_;
  first.type = EntryType::kNoop;
  if (LastIndex() == 0) {
    first.type = EntryType::kConfig;
    first.data = EncodeVoters(voters_);
  }
  AppendLocal(first);
  if (pending_config_ <= commit_) pending_config_ = 0;
  BroadcastAppend();
  MaybeCommit();
}

void Node::Campaign() {
  if (!IsVoter(id_) || role_ == Role::kLeader) return;
  // Nothing to campaign with while committed configuration changes are
  // still to be applied (the voters may not be what they seem).
  StartElection(false);
}

void Node::Follow(NodeId leader) {
  if (role_ != Role::kFollower) BecomeFollower(term_, leader);
  leader_ = leader;
  elapsed_ = 0;
}

void Node::StartElection(bool pre, bool forced) {
  if (pre) {
    BecomePreCandidate();
  } else {
    BecomeCandidate();
  }
  if (votes_.size() >= Quorum()) {
    if (pre) {
      StartElection(false);
    } else {
      BecomeLeader();
    }
    return;
  }
  for (NodeId v : voters_) {
    if (v == id_) continue;
    Message m;
    m.type = pre ? MessageType::kPreVote : MessageType::kVote;
    m.to = v;
    m.term = pre ? term_ + 1 : term_;
    m.index = LastIndex();
    m.log_term = LastTerm();
    m.context = forced ? 1 : 0;
    Send(m);
  }
}

// --- the clock -------------------------------------------------------------

void Node::Tick() {
  ++elapsed_;
  if (role_ == Role::kLeader) {
    TickLeader();
    return;
  }
  if (elapsed_ >= timeout_ && IsVoter(id_)) StartElection(true);
}

void Node::TickLeader() {
  // Check quorum: a leader that has not heard from a majority within an
  // election timeout steps down, so a cut-off leader stops taking writes
  // it could never commit and its reads stop being served.
  if (++quorum_elapsed_ >= election_ticks_) {
    quorum_elapsed_ = 0;
    size_t active = IsVoter(id_) ? 1 : 0;
    for (auto& [peer, p] : progress_) {
      if (p.active) ++active;
      p.active = false;
    }
    if (active < Quorum()) {
      BecomeFollower(term_, 0);
      return;
    }
    transferee_ = 0;  // a transfer that did not happen in time
  }
  if (elapsed_ >= heartbeat_ticks_) {
    elapsed_ = 0;
    for (auto& [peer, p] : progress_) {
      p.probe_sent = false;
      // A snapshot unanswered for an election timeout is taken as lost.
      if (p.snapshotting &&
          ++p.snapshot_heartbeats > election_ticks_ / heartbeat_ticks_) {
        p.snapshotting = false;
        p.probing = true;
        p.next = p.match + 1;
      }
    }
    SendHeartbeats(read_round_);
  }
}

// --- sending ---------------------------------------------------------------

void Node::Send(Message m) {
  m.from = id_;
  if (m.type != MessageType::kPreVote && m.type != MessageType::kPreVoteReply &&
      m.term == 0) {
    m.term = term_;
  }
  outbox_.push_back(std::move(m));
}

void Node::SendAppend(NodeId to, bool allow_empty) {
  Progress& p = progress_[to];
  if (p.snapshotting) return;
  if (p.probing ? p.probe_sent : p.inflight >= max_inflight_) return;
  uint64_t prev = p.next - 1;
  if (p.next <= snapshot_.index) {
    // What it needs is compacted: the driver sends its state instead.
    Message m;
    m.type = MessageType::kSnapshot;
    m.to = to;
    m.snapshot.index = applied_;
    m.snapshot.term = TermAt(applied_);
    m.snapshot.voters = VotersAt(applied_);
    p.snapshotting = true;
    p.snapshot_heartbeats = 0;
    Send(m);
    return;
  }
  std::vector<Entry> entries;
  size_t bytes = 0;
  for (uint64_t i = p.next; i <= LastIndex(); ++i) {
    const Entry& e = log_[i - snapshot_.index - 1];
    if (!entries.empty() && (bytes + e.data.size() > max_append_bytes_ ||
                             entries.size() >= max_append_entries_)) {
      break;
    }
    bytes += e.data.size() + 32;
    entries.push_back(e);
  }
  if (entries.empty() && !allow_empty) return;
  Message m;
  m.type = MessageType::kAppend;
  m.to = to;
  m.index = prev;
  m.log_term = TermAt(prev);
  m.commit = commit_;
  m.entries = std::move(entries);
  if (p.probing) {
    p.probe_sent = true;
  } else {
    if (!m.entries.empty()) p.next = m.entries.back().index + 1;
    ++p.inflight;
  }
  Send(m);
}

void Node::BroadcastAppend() {
  for (auto& [peer, p] : progress_) SendAppend(peer, true);
}

void Node::SendHeartbeats(uint64_t context) {
  for (auto& [peer, p] : progress_) {
    Message m;
    m.type = MessageType::kHeartbeat;
    m.to = peer;
    // Never past what the peer is known to hold: its log may still differ
    // after that.
    m.commit = std::min(p.match, commit_);
    m.context = context;
    Send(m);
  }
}

// --- receiving -------------------------------------------------------------

void Node::Step(const Message& m) {
  if (m.to != id_ || m.from == id_ || m.from == 0) return;
  bool vote_request =
      m.type == MessageType::kPreVote || m.type == MessageType::kVote;
  if (m.term > term_) {
    if (vote_request) {
      // Lease: a node that heard from its leader within the election
      // timeout ignores a call for votes (a disruptive one, or one from a
      // node that was cut off), unless the leader handed over.
      bool in_lease = leader_ != 0 && elapsed_ < election_ticks_;
      bool forced = m.context == 1;  // after kTimeoutNow
      if (in_lease && !forced) return;
    }
    if (m.type == MessageType::kPreVote) {
      // Answered without taking the term.
    } else if (m.type == MessageType::kPreVoteReply && !m.reject) {
      // Granted pre-votes carry the future term; ours stays.
    } else {
      bool from_leader = m.type == MessageType::kAppend ||
                         m.type == MessageType::kHeartbeat ||
                         m.type == MessageType::kSnapshot;
      BecomeFollower(m.term, from_leader ? m.from : 0);
    }
  } else if (m.term < term_) {
    if (m.type == MessageType::kAppend || m.type == MessageType::kHeartbeat ||
        m.type == MessageType::kSnapshot) {
      // A deposed leader: tell it the term, so it steps down.
      Message r;
      r.type = MessageType::kAppendReply;
      r.to = m.from;
      r.reject = true;
      r.index = m.index;
      r.hint = LastIndex();
      Send(r);
    } else if (m.type == MessageType::kPreVote) {
      Message r;
      r.type = MessageType::kPreVoteReply;
      r.to = m.from;
      r.term = term_;
      r.reject = true;
      Send(r);
    }
    return;
  }

  switch (m.type) {
    case MessageType::kPreVote:
    case MessageType::kVote:
      StepVoteRequest(m);
      return;
    case MessageType::kPreVoteReply:
    case MessageType::kVoteReply:
      StepVoteReply(m);
      return;
    case MessageType::kAppend:
      Follow(m.from);
      HandleAppend(m);
      return;
    case MessageType::kHeartbeat:
      Follow(m.from);
      HandleHeartbeat(m);
      return;
    case MessageType::kSnapshot:
      Follow(m.from);
      HandleSnapshot(m);
      return;
    case MessageType::kTimeoutNow:
      // Forced: voters answer even within their leader's lease.
      if (IsVoter(id_) && role_ != Role::kLeader) StartElection(false, true);
      return;
    case MessageType::kAppendReply:
    case MessageType::kHeartbeatReply:
      if (role_ == Role::kLeader) StepLeader(m);
      return;
  }
}

void Node::StepVoteRequest(const Message& m) {
  bool pre = m.type == MessageType::kPreVote;
  // Figure 2: grant if we have not voted for another this term (a
  // pre-vote binds nothing) and the candidate's log is at least as
  // up-to-date as ours (section 5.4.1).
  bool can_vote =
      pre ? (m.term > term_ || (vote_ == 0 && leader_ == 0) || vote_ == m.from)
          : (vote_ == 0 && leader_ == 0) || vote_ == m.from;
  bool up_to_date = m.log_term > LastTerm() ||
                    (m.log_term == LastTerm() && m.index >= LastIndex());
  Message r;
  r.type = pre ? MessageType::kPreVoteReply : MessageType::kVoteReply;
  r.to = m.from;
  if (can_vote && up_to_date) {
    // A pre-vote is answered with the term asked about, so the
    // pre-candidate can count it.
    r.term = m.term;
    if (!pre) {
      vote_ = m.from;
      elapsed_ = 0;
    }
  } else {
    r.term = term_;
    r.reject = true;
  }
  Send(r);
}

void Node::StepVoteReply(const Message& m) {
  bool pre = m.type == MessageType::kPreVoteReply;
  if ((pre && role_ != Role::kPreCandidate) ||
      (!pre && role_ != Role::kCandidate))
    return;
  if (pre && m.term != term_ + 1 && !m.reject) return;  // an old round's
  if (!IsVoter(m.from)) return;
  votes_.emplace(m.from, !m.reject);
  size_t granted = 0, rejected = 0;
  for (const auto& [v, yes] : votes_) (yes ? granted : rejected) += 1;
  if (granted >= Quorum()) {
    if (pre) {
      StartElection(false);
    } else {
      BecomeLeader();
    }
  } else if (rejected >= Quorum()) {
    BecomeFollower(term_, 0);
  }
}

void Node::HandleAppend(const Message& m) {
  Message r;
  r.type = MessageType::kAppendReply;
  r.to = m.from;
  if (m.index < commit_) {
    // All of it up to our commit is committed already; say where we are.
    r.index = commit_;
    Send(r);
    return;
  }
  std::optional<uint64_t> last = TryAppend(m.index, m.log_term, m.entries);
  if (!last) {
    r.reject = true;
    r.index = m.index;
    r.hint = std::min(m.index, LastIndex());
    Send(r);
    return;
  }
  CommitTo(std::min(m.commit, *last));
  r.index = *last;
  Send(r);
}

void Node::HandleHeartbeat(const Message& m) {
  CommitTo(std::min(m.commit, LastIndex()));
  Message r;
  r.type = MessageType::kHeartbeatReply;
  r.to = m.from;
  r.context = m.context;
  Send(r);
}

void Node::HandleSnapshot(const Message& m) {
  Message r;
  r.type = MessageType::kAppendReply;
  r.to = m.from;
  const SnapshotMeta& s = m.snapshot;
  if (s.index <= commit_) {
    r.index = commit_;
    Send(r);
    return;
  }
  // Entries after the snapshot are kept if the log agrees at its index;
  // otherwise the whole log goes.
  if (TermAt(s.index) == s.term && s.index <= LastIndex()) {
    log_.erase(log_.begin(), log_.begin() + (s.index - snapshot_.index));
  } else {
    log_.clear();
  }
  snapshot_ = s;
  std::sort(snapshot_.voters.begin(), snapshot_.voters.end());
  LoadConfigs(snapshot_.voters);
  commit_ = s.index;
  applied_ = handed_ = s.index;
  // The log on disk is replaced by the snapshot and what follows it here.
  stable_ = s.index;
  incoming_snapshot_ = snapshot_;
  incoming_snapshot_data_ = m.snapshot_data;
  r.index = s.index;
  Send(r);
}

void Node::StepLeader(const Message& m) {
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;
  it->second.active = true;
  if (m.type == MessageType::kAppendReply) {
    HandleAppendReply(m);
  } else {
    HandleHeartbeatReply(m);
  }
}

void Node::HandleAppendReply(const Message& m) {
  Progress& p = progress_[m.from];
  if (p.inflight > 0) --p.inflight;
  if (m.reject) {
    // Old news: about an entry below what is known to match, or (while
    // probing) about another probe than the one out.
    if (m.index < p.match || (p.probing && m.index + 1 != p.next)) return;
    p.snapshotting = false;
    p.probing = true;
    p.probe_sent = false;
    p.inflight = 0;
    // Back to the follower's last entry if that is before the one asked
    // about, else one before it.
    p.next = std::max<uint64_t>(p.match + 1, std::min(m.index, m.hint + 1));
    SendAppend(m.from, true);
    return;
  }
  p.snapshotting = false;
  if (m.index > p.match) p.match = m.index;
  if (p.next <= p.match) p.next = p.match + 1;
  if (p.probing) {
    p.probing = false;
    p.probe_sent = false;
    p.inflight = 0;
  }
  if (MaybeCommit()) {
    BroadcastAppend();
  } else if (p.next <= LastIndex()) {
    SendAppend(m.from, false);
  }
  if (transferee_ == m.from && p.match == LastIndex()) {
    Message t;
    t.type = MessageType::kTimeoutNow;
    t.to = m.from;
    Send(t);
  }
}

void Node::HandleHeartbeatReply(const Message& m) {
  Progress& p = progress_[m.from];
  if (m.context > p.acked_context) p.acked_context = m.context;
  if (p.match < LastIndex()) {
    // No progress for a whole heartbeat while behind: what was sent may be
    // lost, so probe again from what is known to match.
    if (!p.probing && p.match == p.match_at_heartbeat) {
      p.probing = true;
      p.inflight = 0;
      p.next = p.match + 1;
    }
    p.probe_sent = false;
    SendAppend(m.from, false);
  }
  p.match_at_heartbeat = p.match;
  ReleaseReads();
}

// --- commit and reads ------------------------------------------------------

bool Node::MaybeCommit() {
  if (role_ != Role::kLeader) return false;
  std::vector<uint64_t> matches;
  for (NodeId v : voters_) {
    matches.push_back(v == id_ ? stable_ : progress_[v].match);
  }
  if (matches.empty()) return false;
  std::sort(matches.begin(), matches.end(), std::greater<uint64_t>());
  uint64_t n = matches[Quorum() - 1];
  if (n <= commit_ || TermAt(n) != term_) return false;
  CommitTo(n);
  return true;
}

void Node::CommitTo(uint64_t index) {
  if (index <= commit_) return;
  commit_ = index;
  if (role_ == Role::kLeader) {
    if (pending_config_ != 0 && pending_config_ <= commit_) {
      pending_config_ = 0;
      // A leader removed from the voters steps down once that is
      // committed (dissertation, 4.2.2).
      if (!IsVoter(id_)) BecomeFollower(term_, 0);
    }
    ReleaseReads();
  }
}

bool Node::ReadIndex(uint64_t context) {
  if (role_ != Role::kLeader) return false;
  PendingRead r;
  r.context = context;
  r.index = commit_;
  r.round = ++read_round_;
  reads_.push_back(r);
  SendHeartbeats(read_round_);
  ReleaseReads();
  return true;
}

void Node::ReleaseReads() {
  if (role_ != Role::kLeader || reads_.empty()) return;
  // Not before this term's first entry is committed: until then the
  // leader's commit may be behind what was acknowledged.
  if (TermAt(commit_) != term_) return;
  // The highest round a majority has answered.
  std::vector<uint64_t> acked;
  for (NodeId v : voters_) {
    acked.push_back(v == id_ ? read_round_ : progress_[v].acked_context);
  }
  std::sort(acked.begin(), acked.end(), std::greater<uint64_t>());
  uint64_t confirmed = acked[Quorum() - 1];
  size_t done = 0;
  for (PendingRead& r : reads_) {
    if (r.round > confirmed) break;
    ready_reads_.push_back({r.context, std::max(r.index, commit_)});
    ++done;
  }
  reads_.erase(reads_.begin(), reads_.begin() + done);
}

// --- proposals -------------------------------------------------------------

uint64_t Node::Propose(const std::string& data) {
  if (role_ != Role::kLeader || transferee_ != 0) return 0;
  Entry e;
  e.term = term_;
  e.data = data;
  AppendLocal(e);
  BroadcastAppend();
  return LastIndex();
}

uint64_t Node::ProposeVoters(const std::vector<NodeId>& voters) {
  // One change at a time, each of one voter (dissertation, 4.1), and not
  // before this leader has committed an entry of its own term (the fix to
  // single-server changes Ongaro gave on raft-dev in 2015).
  if (role_ != Role::kLeader || transferee_ != 0 || pending_config_ != 0 ||
      TermAt(commit_) != term_) {
    return 0;
  }
  std::vector<NodeId> next = voters;
  std::sort(next.begin(), next.end());
  if (std::adjacent_find(next.begin(), next.end()) != next.end() ||
      next.empty())
    return 0;
  std::vector<NodeId> added, removed;
  std::set_difference(next.begin(), next.end(), voters_.begin(), voters_.end(),
                      std::back_inserter(added));
  std::set_difference(voters_.begin(), voters_.end(), next.begin(), next.end(),
                      std::back_inserter(removed));
  if (added.size() + removed.size() != 1) return 0;
  if (std::find(next.begin(), next.end(), 0) != next.end()) return 0;
  Entry e;
  e.term = term_;
  e.type = EntryType::kConfig;
  e.data = EncodeVoters(next);
  AppendLocal(e);
  BroadcastAppend();
  MaybeCommit();
  return LastIndex();
}

bool Node::TransferLeadership(NodeId to) {
  if (role_ != Role::kLeader || to == id_ || !IsVoter(to) || transferee_ != 0)
    return false;
  transferee_ = to;
  quorum_elapsed_ = 0;
  Progress& p = progress_[to];
  if (p.match == LastIndex()) {
    Message t;
    t.type = MessageType::kTimeoutNow;
    t.to = to;
    Send(t);
  } else {
    SendAppend(to, false);
  }
  return true;
}

uint64_t Node::MatchOf(NodeId peer) const {
  if (peer == id_) return stable_;
  auto it = progress_.find(peer);
  return it == progress_.end() ? 0 : it->second.match;
}

// --- Ready -----------------------------------------------------------------

bool Node::HasReady() const {
  HardState hs{term_, vote_, commit_};
  return !(hs == last_hard_state_) || incoming_snapshot_ ||
         stable_ < LastIndex() || !outbox_.empty() || !ready_reads_.empty() ||
         handed_ < std::min(commit_, LastIndex());
}

Ready Node::TakeReady() {
  Ready rd;
  HardState hs{term_, vote_, commit_};
  if (!(hs == last_hard_state_)) rd.hard_state = hs;
  if (incoming_snapshot_) {
    rd.snapshot = incoming_snapshot_;
    rd.snapshot_data = std::move(incoming_snapshot_data_);
  }
  rd.entries = EntriesBetween(stable_ + 1, LastIndex());
  // Only what will be on disk once this Ready is: a follower's commit may
  // run ahead of its log for a moment, never past it.
  rd.committed = EntriesBetween(handed_ + 1, std::min(commit_, LastIndex()));
  rd.messages = std::move(outbox_);
  outbox_.clear();
  rd.reads = std::move(ready_reads_);
  ready_reads_.clear();
  return rd;
}

void Node::Advance(const Ready& rd) {
  if (rd.hard_state) last_hard_state_ = *rd.hard_state;
  if (rd.snapshot) {
    incoming_snapshot_.reset();
    incoming_snapshot_data_.clear();
    applied_ = std::max(applied_, rd.snapshot->index);
    handed_ = std::max(handed_, rd.snapshot->index);
  }
  if (!rd.entries.empty()) {
    const Entry& last = rd.entries.back();
    // Still ours (not replaced meanwhile): then it is on disk.
    if (TermAt(last.index) == last.term)
      stable_ = std::max(stable_, last.index);
  }
  if (!rd.committed.empty()) {
    handed_ = std::max(handed_, rd.committed.back().index);
    applied_ = std::max(applied_, rd.committed.back().index);
  }
  if (role_ == Role::kLeader) {
    // Its own entries on disk may complete a majority.
    if (MaybeCommit()) BroadcastAppend();
    ReleaseReads();
  }
}

}  // namespace raft
}  // namespace natter

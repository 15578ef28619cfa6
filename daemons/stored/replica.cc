#include "daemons/stored/replica.h"

#include <algorithm>

#include "common/log.h"

namespace natter {
namespace stored {
namespace {

using Clock = std::chrono::steady_clock;

RaftMessage ToWire(const raft::Message& m) {
  RaftMessage w;
  w.type = static_cast<uint8_t>(m.type);
  w.from = m.from;
  w.to = m.to;
  w.term = m.term;
  w.index = m.index;
  w.log_term = m.log_term;
  w.commit = m.commit;
  w.reject = m.reject;
  w.hint = m.hint;
  w.context = m.context;
  for (const raft::Entry& e : m.entries) {
    w.entries.push_back(
        {e.term, e.index, static_cast<uint8_t>(e.type), e.data});
  }
  w.snapshot_index = m.snapshot.index;
  w.snapshot_term = m.snapshot.term;
  w.snapshot_voters = m.snapshot.voters;
  w.snapshot_data = m.snapshot_data;
  return w;
}

bool FromWire(const RaftMessage& w, raft::Message* m) {
  if (w.type > static_cast<uint8_t>(raft::MessageType::kTimeoutNow))
    return false;
  m->type = static_cast<raft::MessageType>(w.type);
  m->from = w.from;
  m->to = w.to;
  m->term = w.term;
  m->index = w.index;
  m->log_term = w.log_term;
  m->commit = w.commit;
  m->reject = w.reject;
  m->hint = w.hint;
  m->context = w.context;
  for (const RaftEntry& e : w.entries) {
    if (e.type > static_cast<uint8_t>(raft::EntryType::kNoop)) return false;
    m->entries.push_back(
        {e.term, e.index, static_cast<raft::EntryType>(e.type), e.data});
  }
  m->snapshot.index = w.snapshot_index;
  m->snapshot.term = w.snapshot_term;
  m->snapshot.voters = w.snapshot_voters;
  m->snapshot_data = w.snapshot_data;
  return true;
}

}  // namespace

Status Replica::Create(const Settings& settings, zmq::context_t& ctx,
                       const CurveIdentity& me, const Database& db,
                       std::unique_ptr<Replica>* out) {
  const LogPosition applied = db.applied;
  if (settings.replica >= settings.endpoints.size() ||
      settings.endpoints[settings.replica].empty()) {
    return Status(ErrorCode::kBadRequest,
                  "replica " + std::to_string(settings.replica) +
                      " is not among the shard's " +
                      std::to_string(settings.endpoints.size()));
  }
  std::unique_ptr<Replica> r(new Replica(ctx, settings));
  r->me_ = me;
  Status s = RaftLog::Open(settings.log_path, &r->log_);
  if (!s.ok()) return s;
  raft::Options o;
  o.id = settings.replica + 1;
  raft::Restored restored = r->log_->restored();
  const bool empty = restored.snapshot.index == 0 && restored.entries.empty();
  if (settings.join && empty && !r->log_->joining()) {
    s = r->log_->MarkJoining();
    if (!s.ok()) return s;
  }
  // A new shard's voters: its replicas in the shard map (one joining a
  // running shard has none of its own).
  for (size_t k = 0; k < settings.endpoints.size() && !r->log_->joining();
       ++k) {
    if (!settings.endpoints[k].empty()) o.voters.push_back(k + 1);
  }
  if (db.installed || r->log_->last_index() < applied.index) {
    // The database is ahead of the log: what it holds is a snapshot at
    // applied, and the log goes on after it, with the voters the database
    // records (else, a database from before it recorded them, the shard
    // map's).
    raft::Ready reset;
    reset.snapshot = raft::SnapshotMeta{
        applied.index, applied.term, db.voters.empty() ? o.voters : db.voters};
    reset.hard_state = restored.hard_state;
    reset.hard_state->term = std::max(reset.hard_state->term, applied.term);
    reset.hard_state->commit = applied.index;
    if (reset.hard_state->term != restored.hard_state.term)
      reset.hard_state->vote = 0;
    s = r->log_->Save(reset);
    if (!s.ok()) return s;
    NLOG_WARN(
        "event=log-behind-database shard=%u replica=%u log_last=%llu "
        "applied=%llu",
        settings.shard, settings.replica,
        static_cast<unsigned long long>(restored.entries.empty()
                                            ? restored.snapshot.index
                                            : restored.entries.back().index),
        static_cast<unsigned long long>(applied.index));
    restored = raft::Restored{*reset.hard_state, *reset.snapshot, {}};
  }
  if (applied.index < restored.snapshot.index) {
    // The log forgot entries the database never applied (a database older
    // than its log: put back from elsewhere, or its synced writes lost).
    return Status(
        ErrorCode::kStorage,
        "the database is at entry " + std::to_string(applied.index) +
            " but the Raft log starts after " +
            std::to_string(restored.snapshot.index) +
            ": the entries between are in neither; replace this replica "
            "(natterctl replica remove, then add a new one)");
  }
  o.election_ticks = settings.election_ticks;
  o.heartbeat_ticks = 1;
  o.seed = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  r->node_ = std::make_unique<raft::Node>(o, restored);
  r->skip_through_ = applied.index;
  // A group of one needs no election timeout to find its leader.
  if (r->node_->voters().size() == 1 && r->node_->voters()[0] == o.id)
    r->node_->Campaign();
  *out = std::move(r);
  return Status::Ok();
}

Status Replica::Start() {
  watch_ = std::make_unique<LinkWatch>(ctx_);
  peers_.clear();
  for (size_t k = 0; k < settings_.endpoints.size(); ++k) {
    peers_.push_back(MakeDaemonSocket(ctx_, zmq::socket_type::dealer, 0));
    Status s = LinkPeer(k);
    if (!s.ok()) return s;
  }
  next_tick_ = Clock::now();
  return Status::Ok();
}

Status Replica::LinkPeer(size_t k) {
  if (k == settings_.replica || settings_.endpoints[k].empty())
    return Status::Ok();
  zmq::socket_t& p = peers_[k];
  p.set(zmq::sockopt::immediate, 1);
  // Bounded: a database streamed to a replica waits here at most
  // kPeerQueue chunks (64 MiB); Raft's own messages may be lost beyond.
  p.set(zmq::sockopt::sndhwm, kPeerQueue);
  watch_->Add(p, "replica-" + std::to_string(k));
  return watch_->Connect(p, me_, settings_.endpoints[k]);
}

Status Replica::SetEndpoints(const std::vector<std::string>& endpoints) {
  Status valid =
      CheckReplicaChange(settings_.shard, settings_.endpoints, endpoints);
  if (!valid.ok()) return valid;
  for (size_t k = 0; k < endpoints.size(); ++k) {
    if (k < settings_.endpoints.size()) {
      if (endpoints[k] == settings_.endpoints[k]) continue;
      // Removed.
      if (k != settings_.replica)
        watch_->Disconnect(peers_[k], settings_.endpoints[k]);
      streams_.erase(k + 1);
      settings_.endpoints[k].clear();
      NLOG_INFO("event=replica-unlisted shard=%u replica=%zu", settings_.shard,
                k);
      continue;
    }
    settings_.endpoints.push_back(endpoints[k]);
    peers_.push_back(MakeDaemonSocket(ctx_, zmq::socket_type::dealer, 0));
    // Checked: it parses.  Kept even if the link fails now (it is the
    // shard map's), so that the next reload compares with it.
    Status s = LinkPeer(k);
    if (!s.ok()) {
      NLOG_ERROR("event=replica-link-failed shard=%u replica=%zu error=%s",
                 settings_.shard, k, LogValue(s.ToString()).c_str());
      continue;
    }
    NLOG_INFO("event=replica-listed shard=%u replica=%zu", settings_.shard, k);
  }
  return Status::Ok();
}

Status Replica::ProposeMembership(bool add, uint32_t replica, uint64_t* index,
                                  bool* done) {
  *done = false;
  if (!leading()) return Status(ErrorCode::kUnavailable, "not the leader");
  std::vector<raft::NodeId> voters = node_->voters();
  const raft::NodeId id = replica + 1;
  const bool voter =
      std::find(voters.begin(), voters.end(), id) != voters.end();
  const std::string which = "replica " + std::to_string(replica) +
                            " of shard " + std::to_string(settings_.shard);
  if (voter == add) {
    // So already (a request asked again): done once that is committed.
    if (node_->config_index() > node_->commit()) {
      return Status(ErrorCode::kBusy,
                    "a change of the voters is not committed yet; try again");
    }
    *index = node_->config_index();
    *done = true;
    return Status::Ok();
  }
  if (add) {
    if (replica >= settings_.endpoints.size() ||
        settings_.endpoints[replica].empty()) {
      return Status(ErrorCode::kBadRequest,
                    which +
                        " has no endpoint in the leader's shard map (list it "
                        "in [cell] shards and reload)");
    }
    // A voter added counts in every majority at once: one that is not
    // there would leave the shard one failure from stopping.
    if (!watch_->Up(peers_[replica], settings_.endpoints[replica])) {
      return Status(ErrorCode::kUnavailable,
                    which +
                        " is not connected to the leader (start it with "
                        "--join yes; its key must be in peer-keys)");
    }
    voters.push_back(id);
  } else {
    if (voters.size() == 1)
      return Status(ErrorCode::kBadRequest, which + " is the only voter");
    voters.erase(std::find(voters.begin(), voters.end(), id));
  }
  *index = node_->ProposeVoters(voters);
  if (*index == 0) {
    return Status(ErrorCode::kBusy,
                  "another change of the voters, or the new leader's first "
                  "entry, is not committed yet; try again");
  }
  NLOG_INFO("event=membership-proposed shard=%u %s=%u index=%llu",
            settings_.shard, add ? "add" : "remove", replica,
            static_cast<unsigned long long>(*index));
  return Status::Ok();
}

std::vector<uint64_t> Replica::Voters() const {
  std::vector<uint64_t> out;
  for (raft::NodeId v : node_->voters()) out.push_back(v - 1);
  return out;
}

void Replica::Step(const RaftMessage& w) {
  raft::Message m;
  if (!FromWire(w, &m)) {
    NLOG_WARN("event=bad-raft-message shard=%u type=%u", settings_.shard,
              static_cast<unsigned>(w.type));
    return;
  }
  node_->Step(m);
}

int Replica::TickDue() {
  auto now = Clock::now();
  while (now >= next_tick_) {
    node_->Tick();
    next_tick_ += std::chrono::milliseconds(settings_.tick_ms);
    if (now - next_tick_ > std::chrono::seconds(1))
      next_tick_ = now;  // a long stall
  }
  if (watch_) watch_->Check();
  return static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(next_tick_ - now)
          .count() +
      1);
}

uint64_t Replica::Propose(const std::string& data) {
  return node_->Propose(data);
}

bool Replica::Read(uint64_t context) {
  if (!node_->ReadIndex(context)) return false;
  // Not before this replica's own entries so far are applied: a read comes
  // after the writes the same client sent before it.
  reads_.push_back({context, node_->last_index(), false});
  return true;
}

void Replica::Send(const raft::Message& m) {
  if (m.to == 0 || m.to > peers_.size() || m.to == settings_.replica + 1)
    return;
  if (m.type == raft::MessageType::kSnapshot) {
    // The database as it is now is the state at the message's index (the
    // entries of this Ready are applied after its messages go): streamed
    // in chunks (PumpSnapshots); one stream to a replica at a time.
    if (streams_.count(m.to) || handler_ == nullptr) return;
    Stream st;
    st.reader = handler_->ReadDatabase();
    if (!st.reader) return;
    st.next.from = m.from;
    st.next.to = m.to;
    st.next.term = m.term;
    st.next.index = m.snapshot.index;
    st.next.snapshot_term = m.snapshot.term;
    st.next.voters = m.snapshot.voters;
    NLOG_INFO("event=snapshot-send shard=%u to=%llu index=%llu",
              settings_.shard, static_cast<unsigned long long>(m.to - 1),
              static_cast<unsigned long long>(m.snapshot.index));
    streams_.emplace(m.to, std::move(st));
    ++snapshots_sent_;
    return;
  }
  Header h;
  h.type = static_cast<uint8_t>(MsgType::kRaft);
  h.device = std::to_string(settings_.shard);
  Parts parts;
  parts.push_back(ToMessage(EncodeFrame(h, ToWire(m))));
  // A message the peer's queue does not take is lost, as Raft allows: it
  // is sent again in some form at the next heartbeat.
  if (!SendParts(peers_[m.to - 1], parts)) ++dropped_;
}

Status Replica::Process(ReplicaHandler* handler) {
  handler_ = handler;
  while (node_->HasReady()) {
    raft::Ready rd = node_->TakeReady();
    Status s = log_->Save(rd);
    if (!s.ok()) return s;
    for (const raft::Message& m : rd.messages) Send(m);
    for (const raft::Entry& e : rd.committed) {
      if (e.index <= skip_through_) continue;
      s = handler->ApplyEntry(e);
      if (!s.ok()) return s;
    }
    for (const raft::ReadState& r : rd.reads) {
      for (PendingRead& p : reads_) {
        if (p.context == r.context) {
          p.index = std::max(p.index, r.index);
          p.confirmed = true;
        }
      }
    }
    node_->Advance(rd);
  }
  // Reads whose leadership is confirmed and whose entries are applied.
  uint64_t applied = node_->applied();
  auto served = std::stable_partition(
      reads_.begin(), reads_.end(), [&](const PendingRead& p) {
        return !(p.confirmed && p.index <= applied);
      });
  std::vector<PendingRead> ready(served, reads_.end());
  reads_.erase(served, reads_.end());
  for (const PendingRead& p : ready) handler->ServeRead(p.context);
  if (!leading()) reads_.clear();  // never confirmed now; the asker times out
  PumpSnapshots();
  Status s = MaybeCompact(handler);
  handler_ = nullptr;
  return s;
}

void Replica::PumpSnapshots() {
  if (!leading()) {
    streams_.clear();
    streamed_.clear();
  }
  for (auto it = streams_.begin(); it != streams_.end();) {
    const auto& voters = node_->voters();
    if (!std::binary_search(voters.begin(), voters.end(), it->first)) {
      it = streams_.erase(it);  // removed from the shard meanwhile
      continue;
    }
    Stream& st = it->second;
    zmq::socket_t& peer = peers_[it->first - 1];
    for (int n = 0; n < 4 && !st.finished; ++n) {
      if (st.frame.empty()) {
        bool more = st.reader->Next(kChunkBytes, kChunkPairs, &st.next.records);
        if (!st.reader->status().ok()) {
          NLOG_ERROR("event=snapshot-failed shard=%u error=%s", settings_.shard,
                     LogValue(st.reader->status().ToString()).c_str());
          st.finished = true;
          break;
        }
        st.next.last = !more;
        Header h;
        h.type = static_cast<uint8_t>(MsgType::kSnapshotChunk);
        h.device = std::to_string(settings_.shard);
        st.frame = EncodeFrame(h, st.next);
        ++st.next.seq;
      }
      Parts parts;
      parts.push_back(ToMessage(st.frame));
      if (!SendParts(peer, parts)) break;  // its queue is full: next turn
      st.frame.clear();
      if (st.next.last) {
        st.finished = true;
        streamed_[it->first] = {st.next.index, Clock::now() + kHoldFor};
      }
    }
    it = st.finished ? streams_.erase(it) : std::next(it);
  }
}

Status Replica::MaybeCompact(ReplicaHandler* handler) {
  const uint64_t applied = node_->applied();
  const uint64_t first = node_->first_index();
  if (applied < first) return Status::Ok();
  if (log_->bytes() <= kCompactBytes &&
      applied - first + 1 <= settings_.log_entries) {
    return Status::Ok();
  }
  // Keep the newest applied entries, by count and by bytes.
  const uint64_t keep = std::max<uint64_t>(settings_.log_entries / 10, 1);
  uint64_t keep_from = applied > keep ? applied - keep : 1;
  uint64_t bytes = 0;
  for (uint64_t i = applied; i > first && i > keep_from; --i) {
    bytes += node_->EntriesBetween(i, i).front().data.size();
    if (bytes >= kKeepBytes) {
      keep_from = i;
      break;
    }
  }
  // What a replica that is taking the leader's database will need next.
  const auto now = Clock::now();
  for (auto it = streamed_.begin(); it != streamed_.end();) {
    if (now >= it->second.second || node_->match(it->first) >= it->second.first)
      it = streamed_.erase(it);
    else
      ++it;
  }
  if (log_->bytes() <= kHoldBytes) {
    for (const auto& [peer, st] : streams_)
      keep_from = std::min(keep_from, st.next.index + 1);
    for (const auto& [peer, held] : streamed_)
      keep_from = std::min(keep_from, held.first + 1);
  }
  if (keep_from <= first) return Status::Ok();
  Status s = handler->SyncApplied();
  if (!s.ok()) return s;
  node_->Compact(keep_from - 1);
  s = log_->Compact(node_->snapshot());
  if (!s.ok()) return s;
  ++compactions_;
  NLOG_INFO("event=log-compacted shard=%u through=%llu log_bytes=%llu",
            settings_.shard, static_cast<unsigned long long>(keep_from - 1),
            static_cast<unsigned long long>(log_->bytes()));
  return Status::Ok();
}

}  // namespace stored
}  // namespace natter

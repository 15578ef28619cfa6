#include "daemons/stored/stored.h"

#include <fcntl.h>
#include <leveldb/write_batch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "common/endian.h"
#include "common/log.h"
#include "daemons/stored/disk.h"
#include "daemons/stored/keys.h"

namespace natter {
namespace stored {

DaemonSpec Spec() {
  DaemonSpec spec("natter-stored", "stored", &MakeService<Stored>);
  // stored-N; stored-N.K for replica K of a shard of several.
  spec.name = [](const Config& config) {
    std::string name = "stored-" + config.Get("shard");
    uint64_t shard = 0;
    std::vector<std::string> shards = config.GetShardMap();
    if (config.GetUint("shard", &shard).ok() && shard < shards.size() &&
        ReplicaEndpoints(shards[shard]).size() > 1) {
      name += "." + config.Get("replica");
    }
    return name;
  };
  return spec;
}

Status Stored::Create(const Config& config, zmq::context_t& ctx,
                      std::unique_ptr<Stored>* out) {
  std::unique_ptr<Stored> st(new Stored(ctx));
  Status s = DaemonKeys::Create(config, &st->keys_);
  if (!s.ok()) return s;
  uint64_t shard = 0, batch = 0, retry_s = 0, user_rate = 0, user_burst = 0;
  uint64_t replica = 0, tick_ms = 0, election_ticks = 0, log_entries = 0;
  s = config.GetUint("shard", &shard);
  if (s.ok()) s = config.GetUint("replica", &replica);
  if (s.ok()) s = config.GetUint("raft-tick", &tick_ms);
  if (s.ok()) s = config.GetUint("election-ticks", &election_ticks);
  if (s.ok()) s = config.GetUint("log-entries", &log_entries);
  if (s.ok()) s = config.GetUint("batch-max", &batch);
  if (s.ok()) s = config.GetDuration("handoff-retry", &retry_s);
  if (s.ok()) s = config.GetUint("user-rate", &user_rate);
  if (s.ok()) s = config.GetUint("user-burst", &user_burst);
  if (s.ok()) s = UserRateLimiter::CheckSettings(user_rate, user_burst);
  if (!s.ok()) return s;
  std::vector<std::string> shards = config.GetShardMap();
  if (shards.empty())
    return Status(ErrorCode::kBadRequest, "shards: the shard map is empty");
  if (shard >= shards.size()) {
    return Status(ErrorCode::kBadRequest, "shard " + std::to_string(shard) +
                                              " is not in the shard map of " +
                                              std::to_string(shards.size()));
  }
  if (batch == 0 || batch > kMaxBatch) {
    return Status(ErrorCode::kBadRequest,
                  "batch-max: 1 to " + std::to_string(kMaxBatch));
  }
  st->shard_ = static_cast<uint32_t>(shard);
  st->shard_count_ = static_cast<uint32_t>(shards.size());
  Replica::Settings& rs = st->replica_settings_;
  rs.shard = st->shard_;
  rs.endpoints = ReplicaEndpoints(shards[st->shard_]);
  if (replica >= rs.endpoints.size()) {
    return Status(ErrorCode::kBadRequest,
                  "replica " + std::to_string(replica) + " is not among the " +
                      std::to_string(rs.endpoints.size()) +
                      " replicas of shard " + std::to_string(shard));
  }
  if (rs.endpoints[replica].empty()) {
    return Status(ErrorCode::kBadRequest,
                  "replica " + std::to_string(replica) + " of shard " +
                      std::to_string(shard) +
                      " is removed (- in the shard map)");
  }
  const std::string join = config.Get("join");
  if (join != "yes" && join != "no")
    return Status(ErrorCode::kBadRequest,
                  "join: '" + join + "' is not yes or no");
  rs.join = join == "yes";
  if (tick_ms < 10 || tick_ms > 10000) {
    return Status(ErrorCode::kBadRequest, "raft-tick: 10 to 10000 (ms)");
  }
  if (election_ticks < 3 || election_ticks > 1000) {
    return Status(ErrorCode::kBadRequest, "election-ticks: 3 to 1000");
  }
  rs.replica = static_cast<uint32_t>(replica);
  rs.tick_ms = static_cast<int>(tick_ms);
  rs.election_ticks = static_cast<int>(election_ticks);
  if (log_entries < 10) {
    return Status(ErrorCode::kBadRequest, "log-entries: at least 10");
  }
  rs.log_entries = log_entries;
  const std::string listen = config.Get("listen");
  st->listen_ = BindAddress(listen.empty() ? rs.endpoints[rs.replica] : listen);
  st->data_path_ =
      config.Get("data-dir") + "/shard-" + std::to_string(st->shard_);
  if (rs.endpoints.size() > 1) {
    // A shard of one replica keeps its database in shard-N; listed with
    // more, its replicas' are shard-N.K, and that one is not found there.
    const std::string single = st->data_path_;
    st->data_path_ += "." + std::to_string(replica);
    std::error_code ec;
    if (std::filesystem::exists(single + "/CURRENT", ec) &&
        !std::filesystem::exists(st->data_path_, ec)) {
      return Status(ErrorCode::kBadRequest,
                    single +
                        " holds the shard's database of one replica, "
                        "but the shard map lists " +
                        std::to_string(rs.endpoints.size()) +
                        " replicas, whose folders are " + single +
                        ".K: move it to " + single + ".0 first");
    }
  }
  rs.log_path = st->data_path_ + "/raft";
  st->routed_ = config.GetList("routed");
  st->notifyd_ = config.GetList("notifyd-in");
  if (st->routed_.empty())
    return Status(ErrorCode::kBadRequest, "routed: no endpoint");
  if (st->notifyd_.empty())
    return Status(ErrorCode::kBadRequest, "notifyd-in: no endpoint");
  st->batch_max_ = batch;
  st->retry_ = std::chrono::seconds(retry_s == 0 ? 1 : retry_s);
  st->store_ = std::make_unique<Store>(st->shard_, st->shard_count_);
  st->limiter_ = UserRateLimiter(user_rate, user_burst);
  // LevelDB's table files share the open-files limit with the sockets;
  // keep a reserve for those (see natter-stored(8)).
  st->max_open_files_ =
      static_cast<int>(std::clamp<uint64_t>(OpenFilesLimit() / 2, 16, 1000));
  *out = std::move(st);
  return Status::Ok();
}

Stored::~Stored() {
  if (backup_ && backup_->thread.joinable()) backup_->thread.join();
}

Status Stored::Start() {
  {
    Status swapped = SwapDatabase();  // a swap a crash cut short
    if (!swapped.ok()) return swapped;
  }
  ::mkdir(data_path_.substr(0, data_path_.rfind('/')).c_str(), 0700);
  Status s = store_->Open(data_path_, max_open_files_);
  if (!s.ok()) return s;
  s = keys_.Start(ctx_);
  if (!s.ok()) return s;
  requests_ = MakeDaemonSocket(ctx_, zmq::socket_type::router);
  curve_requests_ =
      SetCurveServer(requests_, keys_.identity(), kZapDomainShard, listen_);
  handoff_ = MakeDaemonSocket(ctx_, zmq::socket_type::dealer);
  events_ = MakeDaemonSocket(ctx_, zmq::socket_type::push, 0);
  handoff_.set(zmq::sockopt::immediate, 1);
  events_.set(zmq::sockopt::immediate, 1);
  watch_ = std::make_unique<LinkWatch>(ctx_);
  watch_->Add(handoff_, "routed");
  watch_->Add(events_, "notifyd");
  try {
    PrepareEndpoint(listen_);
    requests_.bind(listen_);
    for (const auto& ep : routed_) {
      s = watch_->Connect(handoff_, keys_.identity(), ep);
      if (!s.ok()) return s;
    }
    for (const auto& ep : notifyd_) {
      s = watch_->Connect(events_, keys_.identity(), ep);
      if (!s.ok()) return s;
    }
  } catch (const zmq::error_t& e) {
    return Status(ErrorCode::kBadRequest, listen_ + ": " + e.what());
  }
  s = OpenReplica();
  if (!s.ok()) return s;
  NLOG_INFO(
      "event=open shard=%u of=%u replica=%u of=%zu path=%s listen=%s "
      "applied=%llu",
      shard_, shard_count_, replica_settings_.replica,
      replica_settings_.endpoints.size(), LogValue(data_path_).c_str(),
      LogValue(listen_).c_str(),
      static_cast<unsigned long long>(store_->applied_index()));
  return Status::Ok();
}

namespace {

// LevelDB's own files in a database folder (db/filename.cc): what a
// database swapped in replaces, and nothing else of the folder.
bool IsLevelDbFile(const std::string& name) {
  auto ends = [&](const char* suffix) {
    size_t n = std::strlen(suffix);
    return name.size() > n && name.compare(name.size() - n, n, suffix) == 0;
  };
  return name == "CURRENT" || name == "LOCK" || name == "LOG" ||
         name == "LOG.old" || name.rfind("MANIFEST-", 0) == 0 || ends(".log") ||
         ends(".ldb") || ends(".sst") || ends(".dbtmp");
}

// An empty file, synced, and its folder: a step of SwapDatabase done.
Status WriteMark(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status(ErrorCode::kStorage, path + ": " + std::strerror(errno));
  }
  bool ok = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!ok)
    return Status(ErrorCode::kStorage, path + ": " + std::strerror(error));
  return SyncFolder(path.substr(0, path.rfind('/')));
}

}  // namespace

void Stored::TakeChunk(SnapshotChunk* chunk) {
  const std::string path = data_path_ + "/incoming";
  // Only from the leader of this replica's term: a deposed leader's
  // stream must not cut a log that the new leader's entries are in.
  if (chunk->term != replica_->term() || chunk->from != replica_->leader() ||
      chunk->to != replica_settings_.replica + 1) {
    return;
  }
  if (chunk->seq == 0) {
    incoming_.reset();
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
    leveldb::Options options;
    options.create_if_missing = true;
    options.error_if_exists = true;
    options.compression = leveldb::kNoCompression;
    leveldb::DB* db = nullptr;
    leveldb::Status s = leveldb::DB::Open(options, path, &db);
    if (!s.ok()) {
      NLOG_ERROR("event=snapshot-receive-failed shard=%u error=%s", shard_,
                 LogValue(s.ToString()).c_str());
      return;
    }
    incoming_ = std::make_unique<Incoming>();
    incoming_->db.reset(db);
    incoming_->from = chunk->from;
    incoming_->index = chunk->index;
    NLOG_INFO("event=snapshot-receive shard=%u replica=%u index=%llu", shard_,
              replica_settings_.replica,
              static_cast<unsigned long long>(chunk->index));
  }
  // Chunks of another stream, or after one lost: wait for a new stream.
  if (!incoming_ || incoming_->from != chunk->from ||
      incoming_->index != chunk->index || incoming_->next_seq != chunk->seq) {
    return;
  }
  leveldb::WriteBatch batch;
  for (size_t i = 0; i + 1 < chunk->records.size(); i += 2) {
    batch.Put(chunk->records[i], chunk->records[i + 1]);
  }
  if (chunk->last) {
    // The database is the shard's at the snapshot's position.
    std::string at;
    PutBigEndian(&at, chunk->index);
    PutBigEndian(&at, chunk->snapshot_term);
    batch.Put(AppliedIndexKey(), at);
    batch.Put(VotersKey(), raft::EncodeVoters(chunk->voters));
  }
  leveldb::WriteOptions options;
  options.sync = chunk->last;
  leveldb::Status s = incoming_->db->Write(options, &batch);
  if (!s.ok()) {
    NLOG_ERROR("event=snapshot-receive-failed shard=%u error=%s", shard_,
               LogValue(s.ToString()).c_str());
    incoming_.reset();
    return;
  }
  ++incoming_->next_seq;
  if (chunk->last) InstallSnapshot(*chunk);
}

void Stored::InstallSnapshot(const SnapshotChunk& last) {
  incoming_.reset();  // closes it
  // Tells the node, as the snapshot message would have: it answers the
  // leader (which sends the database again until it hears).
  RaftMessage m;
  m.type = static_cast<uint8_t>(raft::MessageType::kSnapshot);
  m.from = last.from;
  m.to = replica_settings_.replica + 1;
  m.term = last.term;
  m.snapshot_index = last.index;
  m.snapshot_term = last.snapshot_term;
  m.snapshot_voters = last.voters;
  if (replica_->node().commit() >= last.index) {
    // Caught up anyway (or installed before, and the answer was lost).
    std::error_code ec;
    std::filesystem::remove_all(data_path_ + "/incoming", ec);
    replica_->Step(m);
    ProcessReplica();
    return;
  }
  Status marked = WriteMark(data_path_ + "/incoming/COMPLETE");
  if (!marked.ok()) {
    NLOG_ERROR("event=snapshot-install-failed shard=%u error=%s", shard_,
               LogValue(marked.ToString()).c_str());
    return;
  }
  FinishBackup(true);
  FailWaiting(Status(ErrorCode::kUnavailable,
                     "the replica is taking its leader's database"));
  replica_.reset();
  leading_ = false;
  pending_.clear();
  due_.clear();
  spilled_ = false;
  store_->Close();
  // The new database in place of the old, the Raft log (term and vote)
  // kept: SwapDatabase.  A crash midway is finished at the next start.
  Status s = SwapDatabase();
  if (s.ok()) s = store_->Open(data_path_, max_open_files_);
  if (s.ok() && store_->applied().index != last.index) {
    // Never a log that says more than the database holds.
    s = Status(ErrorCode::kStorage,
               "the database taken holds entry " +
                   std::to_string(store_->applied().index) + ", not " +
                   std::to_string(last.index));
  }
  if (s.ok()) s = OpenReplica(/*installed=*/true);
  if (!s.ok()) {
    NLOG_ERROR("event=snapshot-install-failed shard=%u error=%s", shard_,
               LogValue(s.ToString()).c_str());
    StorageFailed();
    return;
  }
  ++snapshots_installed_;
  NLOG_INFO("event=snapshot-installed shard=%u replica=%u index=%llu", shard_,
            replica_settings_.replica,
            static_cast<unsigned long long>(last.index));
  replica_->Step(m);
  ProcessReplica();
}

// The leader's database, complete in data_path_/incoming (its COMPLETE
// mark written), takes the place of this one's files in data_path_ (raft/
// stays): the old files go, SWAPPING is marked, the new ones move up, the
// marks go.  Renames within the folder, which may be a mount point; a
// crash midway is finished here at the next start (or an incomplete
// incoming dropped).
Status Stored::SwapDatabase() {
  namespace fs = std::filesystem;
  const fs::path data = data_path_, incoming = data / "incoming";
  const fs::path complete = incoming / "COMPLETE", swapping = data / "SWAPPING";
  std::error_code ec;
  if (!fs::exists(complete, ec) && !fs::exists(swapping, ec)) {
    fs::remove_all(incoming, ec);
    return Status::Ok();
  }
  auto failed = [&](const std::string& what) {
    return Status(ErrorCode::kStorage, what + ": " + ec.message());
  };
  if (!fs::exists(swapping, ec)) {
    for (const auto& entry : fs::directory_iterator(data, ec)) {
      const std::string name = entry.path().filename();
      if (!IsLevelDbFile(name)) continue;  // raft/, incoming/, lost+found ...
      fs::remove_all(entry.path(), ec);
      if (ec) return failed("removing the old database");
    }
    Status marked = WriteMark(swapping.string());
    if (!marked.ok()) return marked;
  }
  if (fs::exists(incoming, ec)) {
    for (const auto& entry : fs::directory_iterator(incoming, ec)) {
      if (entry.path().filename() == "COMPLETE") continue;
      fs::rename(entry.path(), data / entry.path().filename(), ec);
      if (ec) return failed("moving the new database");
    }
  }
  // The moves durable before the mark goes: else a crash could leave
  // neither the old database nor the new one, and no mark to finish by.
  Status synced = SyncFolder(data.string());
  if (!synced.ok()) return synced;
  fs::remove_all(incoming, ec);
  fs::remove(swapping, ec);
  return SyncFolder(data.string());
}

Status Stored::OpenReplica(bool installed) {
  Replica::Database db;
  db.applied = store_->applied();
  db.installed = installed;
  std::vector<raft::NodeId> voters;
  if (raft::DecodeVoters(store_->voters(), &voters)) {
    db.voters.assign(voters.begin(), voters.end());
  }
  std::unique_ptr<Replica> r;
  Status s = Replica::Create(replica_settings_, ctx_, keys_.identity(), db, &r);
  if (s.ok()) s = r->Start();
  if (!s.ok()) return s;
  replica_ = std::move(r);
  leading_ = false;
  ProcessReplica();
  return Status::Ok();
}

void Stored::RunOnce(int timeout_ms) {
  std::vector<zmq::pollitem_t> items = {
      {requests_.handle(), 0, ZMQ_POLLIN, 0},
      {handoff_.handle(), 0, ZMQ_POLLIN, 0},
  };
  if (!pending_.empty() || !replica_) timeout_ms = std::min(timeout_ms, 100);
  if (replica_) timeout_ms = std::min(timeout_ms, replica_->TickDue());
  if (replica_ && replica_->streaming()) timeout_ms = std::min(timeout_ms, 5);
  if (!unbatched_.empty()) timeout_ms = 0;
  Poll(items, timeout_ms);
  if (!replica_) TryReopen();
  if ((items[0].revents & ZMQ_POLLIN) || !unbatched_.empty()) ServeBatch();
  if (items[1].revents & ZMQ_POLLIN) TakeAcks();
  if (replica_) {
    replica_->TickDue();
    ProcessReplica();
  }
  if (replica_ && leading_) RetryHandoffs();
  if (backup_) FinishBackup(false);
  // The turn's answers go, a batch a frontd.
  answers_.Flush();
  watch_->Check();
}

void Stored::Reload(const Config* config) {
  keys_.Reload();
  if (config == nullptr) return;  // natter.conf could not be read again
  std::vector<std::string> shards = config->GetShardMap();
  std::vector<std::string> now;
  Status s = Status::Ok();
  if (shards.size() != shard_count_) {
    s = Status(ErrorCode::kBadRequest,
               "the shard map has " + std::to_string(shards.size()) +
                   " shards, not " + std::to_string(shard_count_) +
                   " (shards are never added or removed while the cell runs)");
  } else {
    now = ReplicaEndpoints(shards[shard_]);
    s = CheckReplicaChange(shard_, replica_settings_.endpoints, now);
  }
  try {
    // With the database closed, the replica is made with these when it
    // opens again.
    if (s.ok() && replica_) s = replica_->SetEndpoints(now);
  } catch (const zmq::error_t& e) {
    s = Status(ErrorCode::kInternal, e.what());
  }
  if (!s.ok()) {
    NLOG_ERROR("event=shard-map-reload-failed shard=%u error=%s", shard_,
               LogValue(s.message()).c_str());
    return;
  }
  replica_settings_.endpoints = now;
  if (now[replica_settings_.replica].empty()) {
    NLOG_WARN(
        "event=replica-removed shard=%u replica=%u: its place in the shard "
        "map is -; stop it",
        shard_, replica_settings_.replica);
  }
}

bool Stored::ChangeMembership(const Frame& request,
                              const ControlServer::Reply& reply) {
  MembershipRequest m;
  Status s = DecodeBody(request, &m);
  if (s.ok() && (!replica_ || !leading_)) {
    NotLeader not_leader{shard_, replica_ ? replica_->leader() : 0,
                         replica_ ? replica_->term() : 0};
    reply(EncodeReply(request.header, not_leader));
    return true;
  }
  if (s.ok() && membership_) {
    if (membership_->request.add == m.add &&
        membership_->request.replica == m.replica) {
      membership_->replies.emplace_back(request.header, reply);  // again
      return true;
    }
    s = Status(ErrorCode::kBusy, "another change of the voters is under way");
  }
  uint64_t index = 0;
  bool done = false;
  if (s.ok()) s = replica_->ProposeMembership(m.add, m.replica, &index, &done);
  if (!s.ok()) {
    reply(EncodeError(request.header, s));
    return true;
  }
  if (done) {
    MembershipReply r;
    r.index = index;
    r.replicas = replica_->Voters();
    reply(EncodeReply(request.header, r));
    return true;
  }
  membership_ = std::make_unique<MembershipJob>();
  membership_->index = index;
  membership_->term = replica_->term();
  membership_->request = m;
  membership_->replies.emplace_back(request.header, reply);
  ProcessReplica();
  return true;
}

void Stored::AnswerMembership(const raft::Entry& entry) {
  if (!membership_ || entry.index < membership_->index) return;
  if (entry.index == membership_->index && entry.term == membership_->term &&
      entry.type == raft::EntryType::kConfig) {
    MembershipReply r;
    r.index = entry.index;
    std::vector<raft::NodeId> voters;
    raft::DecodeVoters(entry.data, &voters);
    for (raft::NodeId v : voters) r.replicas.push_back(v - 1);
    NLOG_INFO("event=membership-changed shard=%u index=%llu voters=%zu", shard_,
              static_cast<unsigned long long>(entry.index), voters.size());
    membership_->Answer([&](const Header& h) { return EncodeReply(h, r); });
  } else {
    const Status lost(ErrorCode::kUnavailable,
                      "the shard's leader changed before the change was "
                      "committed; it did not take effect");
    membership_->Answer([&](const Header& h) { return EncodeError(h, lost); });
  }
  membership_.reset();
}

bool Stored::Control(const Frame& request, const ControlServer::Reply& reply) {
  if (request.type() == MsgType::kDigest) return StartDigest(request, reply);
  if (request.type() == MsgType::kMembership)
    return ChangeMembership(request, reply);
  if (request.type() != MsgType::kBackup) return false;
  BackupRequest b;
  Status s = DecodeBody(request, &b);
  struct stat st;
  if (s.ok() && (b.path.empty() || b.path[0] != '/')) {
    s = Status(ErrorCode::kBadRequest, "backup: the path must be absolute");
  }
  if (s.ok() && ::stat(b.path.c_str(), &st) == 0) {
    s = Status(ErrorCode::kBadRequest, "backup: " + b.path + " exists already");
  }
  if (s.ok() && backup_)
    s = Status(ErrorCode::kBusy, "a backup of this shard is under way");
  if (s.ok() && !store_->is_open()) {
    s = Status(ErrorCode::kStorage, "the shard's database is closed");
  }
  if (!s.ok()) {
    reply(EncodeError(request.header, s));
    return true;
  }
  NLOG_INFO("event=backup-started shard=%u path=%s", shard_,
            LogValue(b.path).c_str());
  BackupJob* job =
      StartJob(request, reply, [this, path = b.path](BackupJob* j) {
        j->status = store_->Backup(path, &j->records, &j->bytes);
      });
  job->path = b.path;  // for the answer, read once the thread is done
  return true;
}

Stored::BackupJob* Stored::StartJob(const Frame& request,
                                    const ControlServer::Reply& reply,
                                    std::function<void(BackupJob*)> work) {
  backup_ = std::make_unique<BackupJob>();
  BackupJob* job = backup_.get();
  job->header = request.header;
  job->reply = reply;
  // The snapshot is taken by the thread at once; the shard serves on.
  job->thread = std::thread([job, work = std::move(work)] {
    work(job);
    job->done = true;
  });
  return job;
}

bool Stored::StartDigest(const Frame& request,
                         const ControlServer::Reply& reply) {
  Status s = Status::Ok();
  if (backup_) {
    s = Status(ErrorCode::kBusy,
               "a backup or digest of this shard is under way");
  } else if (!store_->is_open()) {
    s = Status(ErrorCode::kStorage, "the shard's database is closed");
  }
  if (!s.ok()) {
    reply(EncodeError(request.header, s));
    return true;
  }
  BackupJob* job = StartJob(request, reply, [this](BackupJob* j) {
    j->status = store_->Digest(&j->path, &j->records, &j->at);
  });
  job->digest = true;
  return true;
}

void Stored::FinishBackup(bool wait) {
  if (!backup_ || (!wait && !backup_->done)) return;
  backup_->thread.join();
  BackupJob& job = *backup_;
  if (job.digest) {
    if (job.status.ok()) {
      DigestReply r;
      r.applied_index = job.at.index;
      r.applied_term = job.at.term;
      r.digest = job.path;
      r.records = job.records;
      job.reply(EncodeReply(job.header, r));
    } else {
      job.reply(EncodeError(job.header, job.status));
    }
    backup_.reset();
    return;
  }
  if (job.status.ok()) {
    ++backups_;
    NLOG_INFO("event=backup-done shard=%u path=%s records=%llu bytes=%llu",
              shard_, LogValue(job.path).c_str(),
              static_cast<unsigned long long>(job.records),
              static_cast<unsigned long long>(job.bytes));
    BackupReply r;
    r.path = job.path;
    r.records = job.records;
    r.bytes = job.bytes;
    job.reply(EncodeReply(job.header, r));
  } else {
    NLOG_ERROR("event=backup-failed shard=%u path=%s error=%s", shard_,
               LogValue(job.path).c_str(),
               LogValue(job.status.ToString()).c_str());
    job.reply(EncodeError(job.header, job.status));
  }
  backup_.reset();
}

void Stored::Stats(MetricSet* set) {
  set->Counter("natter_stored_request_batches_total",
               "Messages from routed carrying many requests (a turn's for "
               "one frontd).",
               static_cast<double>(request_batches_));
  set->Counter("natter_stored_answer_batches_total",
               "Messages to routed carrying many answers (a turn's for one "
               "frontd).",
               static_cast<double>(answer_batches_));
  set->Counter("natter_stored_batches_total",
               "Batches written (each one synced write at most).",
               static_cast<double>(batches_));
  set->Counter("natter_stored_requests_total", "Requests served.",
               static_cast<double>(requests_served_));
  set->Counter("natter_stored_syncs_total",
               "Synced writes (of the Raft log: one serves every request "
               "waiting).",
               static_cast<double>(log_syncs()));
  set->Counter("natter_stored_write_failures_total",
               "Writes LevelDB refused (the shard then reopens).",
               static_cast<double>(write_failures_));
  set->Counter("natter_stored_events_published_total",
               "Mailbox events sent to notifyd.",
               static_cast<double>(published_));
  set->Counter("natter_stored_events_dropped_total",
               "Events notifyd's queue did not take (devices repair them from "
               "the mailbox).",
               static_cast<double>(publish_dropped_));
  set->Counter("natter_stored_handoffs_sent_total",
               "Hand-offs sent to other shards (also resent ones).",
               static_cast<double>(handoffs_sent_));
  set->Counter("natter_stored_backups_total", "Backups made.",
               static_cast<double>(backups_));
  set->Counter(
      "natter_stored_relinks_total",
      "Links to routed and notifyd connected again after they ended for good.",
      static_cast<double>(watch_ ? watch_->relinks() : 0));
  set->Counter("natter_stored_rate_refused_total",
               "Requests refused (busy) for their user's rate (user-rate).",
               static_cast<double>(limiter_.refused()));
  set->Gauge("natter_stored_rate_users", "Users whose rate bucket is not full.",
             static_cast<double>(limiter_.users()));
  set->Gauge("natter_stored_handoffs_pending",
             "Hand-offs waiting for their acknowledgement, in memory.",
             static_cast<double>(pending_.size()));
  set->Gauge("natter_stored_handoffs_spilled",
             "1 while hand-offs wait in the outbox on disk only (memory full).",
             spilled_ ? 1 : 0);
  set->Counter("natter_stored_record_cache_hits_total",
               "Reads of conversation records, cursors and ack marks served "
               "from memory.",
               static_cast<double>(store_->records().hits()));
  set->Counter("natter_stored_record_cache_misses_total",
               "Reads of those records that went to LevelDB.",
               static_cast<double>(store_->records().misses()));
  set->Gauge("natter_stored_record_cache_bytes",
             "What those records kept in memory take (at most 32 MiB).",
             static_cast<double>(store_->records().bytes()));
  set->Gauge("natter_stored_storage_up", "1 while the database is open.",
             store_->is_open() ? 1 : 0);
  set->Gauge("natter_stored_batch_requests_p50", "Requests in a batch, median.",
             batch_size_.Quantile(0.5));
  set->Summary("natter_stored_batch_seconds",
               "Applying a committed batch to the database.", batch_latency_);
  set->Summary("natter_stored_commit_seconds",
               "From a batch proposed to the log to its entry applied "
               "(committed on a majority of the replicas).",
               commit_latency_);
  const Replica* r = replica_.get();
  const raft::Node* node = r ? &r->node() : nullptr;
  set->Gauge("natter_stored_raft_role",
             "This replica's role: 0 follower, 1 pre-candidate, 2 candidate, "
             "3 leader.",
             node ? static_cast<double>(node->role()) : 0);
  set->Gauge("natter_stored_raft_term", "The Raft term this replica is in.",
             node ? static_cast<double>(node->term()) : 0);
  set->Gauge("natter_stored_raft_leader",
             "The replica that leads (its number + 1; 0: none known).",
             node ? static_cast<double>(node->leader()) : 0);
  set->Gauge("natter_stored_raft_voters",
             "How many replicas the shard's voters are, as this replica knows.",
             node ? static_cast<double>(node->voters().size()) : 0);
  set->Gauge(
      "natter_stored_raft_voter",
      "1 if this replica is one of the shard's voters (0: added and "
      "not voting yet, or removed).",
      node && std::binary_search(node->voters().begin(), node->voters().end(),
                                 replica_settings_.replica + 1)
          ? 1
          : 0);
  set->Gauge("natter_stored_raft_commit_index",
             "The last log index known committed.",
             node ? static_cast<double>(node->commit()) : 0);
  set->Gauge("natter_stored_raft_applied_index",
             "The last log index applied to the database.",
             node ? static_cast<double>(node->applied()) : 0);
  double lag = 0;
  if (node && node->role() == raft::Role::kLeader) {
    for (raft::NodeId v : node->voters()) {
      if (v == node->id()) continue;
      lag = std::max(lag, static_cast<double>(
                              node->last_index() -
                              std::min(node->last_index(), node->MatchOf(v))));
    }
  }
  set->Gauge("natter_stored_raft_lag_entries",
             "On the leader: the entries the furthest replica lacks.", lag);
  set->Counter("natter_stored_raft_elections_total",
               "Elections this replica called (since it started).",
               r ? static_cast<double>(r->elections()) : 0);
  set->Gauge("natter_stored_raft_log_bytes", "The Raft log's entries, bytes.",
             r ? static_cast<double>(r->log().bytes()) : 0);
  set->Gauge("natter_stored_raft_log_segments",
             "The Raft log's segment files on disk.",
             r ? static_cast<double>(r->log().segments()) : 0);
  set->Counter("natter_stored_raft_compactions_total",
               "Times the Raft log was compacted (since it started).",
               r ? static_cast<double>(r->compactions()) : 0);
  set->Counter("natter_stored_raft_snapshots_sent_total",
               "Databases streamed to a replica behind the compacted log.",
               r ? static_cast<double>(r->snapshots_sent()) : 0);
  set->Counter("natter_stored_raft_snapshots_installed_total",
               "Databases this replica took from its leader.",
               static_cast<double>(snapshots_installed_));
  set->Counter("natter_stored_raft_messages_dropped_total",
               "Raft messages a replica's queue did not take.",
               r ? static_cast<double>(r->messages_dropped()) : 0);
  set->Counter("natter_stored_raft_refused_total",
               "Raft frames refused: their key is not a stored key.",
               static_cast<double>(foreign_raft_));
}

namespace {

// A shard's log entry: the frames of a batch of requests, or of hand-off
// acknowledgements, as they came.
enum class EntryKind : uint8_t { kRequests = 0, kAcks = 1 };

struct ShardEntry {
  uint8_t kind = 0;
  std::vector<std::string> frames;
  NATTER_WIRE(2, kind, frames)
};

std::string PackEntry(EntryKind kind, std::vector<std::string> frames) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, ShardEntry{static_cast<uint8_t>(kind), std::move(frames)});
  return std::string(buf.data(), buf.size());
}

// An entry's requests are bounded in bytes so that it travels to the
// other replicas in one frame (raft.h's max_append_bytes is the rest).
constexpr size_t kMaxEntryBytes = 256 * 1024;

// Only reads: served by the leader from its database once a read index
// confirms it still leads (Replica::Read), without a log entry.
bool IsRead(MsgType type) {
  return type == MsgType::kHistory || type == MsgType::kChats;
}

}  // namespace

bool Stored::ServeBatch() {
  // Each request keeps its routing frames (the route back through routed
  // to the frontd and the client).
  std::vector<Parts> write_routes, read_routes;
  std::vector<std::string> writes;
  std::vector<Request> reads;
  size_t bytes = 0, taken = 0;
  Parts parts;
  while (taken < batch_max_ && bytes < kMaxEntryBytes && NextRequest(&parts)) {
    if (parts.size() < 2) continue;
    ++taken;
    Request r;
    const zmq::message_t& body = parts.back();
    Status s = DecodeFrame(body.data(), body.size(), &r.frame);
    if (!s.ok()) {
      NLOG_WARN("event=bad-frame error=%s", LogValue(s.ToString()).c_str());
      Answer(parts, parts.size() - 1, EncodeError(Header(), s));
      continue;
    }
    if (TakeOther(parts, r.frame)) continue;
    if (!limiter_.Admit(r.frame, Clock::now())) {
      const Header& h = r.frame.header;
      NLOG_TRACE(h.trace, "event=rate-refused user=%llu type=%s",
                 static_cast<unsigned long long>(h.user.value),
                 MsgTypeName(r.frame.type()));
      Answer(parts, parts.size() - 1, EncodeError(h, limiter_.Refusal(h.user)));
      continue;
    }
    if (IsRead(r.frame.type())) {
      read_routes.push_back(std::move(parts));
      reads.push_back(std::move(r));
    } else {
      bytes += body.size();
      writes.emplace_back(static_cast<const char*>(body.data()), body.size());
      write_routes.push_back(std::move(parts));
    }
    parts = Parts();
  }
  if (!writes.empty()) Propose(&write_routes, &writes);
  if (!reads.empty()) Read(&read_routes, &reads);
  if (replica_) ProcessReplica();
  return taken > 0;
}

bool Stored::NextRequest(Parts* out) {
  if (unbatched_.empty()) {
    Parts parts;
    if (!RecvParts(requests_, &parts)) return false;
    // routed's batch for one frontd: [routed, frontd, empty, entries].
    if (parts.size() != 4 || parts[2].size() != 0) {
      *out = std::move(parts);
      return true;
    }
    ++request_batches_;
    std::vector<Parts> entries;
    if (!SplitBatch(parts, 2, &entries)) {
      NLOG_WARN("event=malformed-batch bytes=%zu", parts.back().size());
    }
    for (Parts& e : entries) unbatched_.push_back(std::move(e));
    if (unbatched_.empty()) return NextRequest(out);
  }
  *out = std::move(unbatched_.front());
  unbatched_.pop_front();
  return true;
}

void Stored::Answer(const Parts& route, size_t n, const std::string& reply) {
  if (n == 3 && route[2].size() == 8) {
    answers_.Add({route[0].to_string(), route[1].to_string()},
                 GetBigEndian(static_cast<const char*>(route[2].data())),
                 reply);
    return;
  }
  if (!SendRouted(requests_, route, n, reply))
    NLOG_WARN("event=reply-dropped parts=%zu", n);
}

void Stored::SendAnswers(const Batches::Route& route,
                         const std::string& batch) {
  if (SendBatch(requests_, route, batch)) {
    ++answer_batches_;
    return;
  }
  NLOG_WARN("event=reply-dropped bytes=%zu", batch.size());
}

bool Stored::TakeOther(const Parts& route, const Frame& frame) {
  const size_t n = route.size() - 1;
  if (frame.type() == MsgType::kRaft ||
      frame.type() == MsgType::kSnapshotChunk) {
    if (frame.header.device != std::to_string(shard_))
      return true;  // another shard's replicas (a wrong shard map)
    if (!SentByRole(route.back(), PeerRole::kStored, curve_requests_)) {
      // routed's key reaches this socket too, but only a replica's may
      // speak Raft.
      if (++foreign_raft_ % 1000 == 1) {  // the first, then one in 1000
        NLOG_WARN(
            "event=raft-refused shard=%u reason=\"not a stored key\" "
            "refused=%llu",
            shard_, static_cast<unsigned long long>(foreign_raft_));
      }
      return true;
    }
  }
  if (frame.type() == MsgType::kRaft) {
    RaftMessage m;
    if (replica_ && DecodeBody(frame, &m).ok()) replica_->Step(m);
    return true;
  }
  if (frame.type() == MsgType::kSnapshotChunk) {
    SnapshotChunk chunk;
    if (replica_ && DecodeBody(frame, &chunk).ok()) TakeChunk(&chunk);
    return true;
  }
  if (frame.type() == MsgType::kLeaderQuery) {
    LeaderNotice notice;
    notice.shard = shard_;
    notice.replica = replica_settings_.replica;
    notice.leader = replica_ ? replica_->leader() : 0;
    notice.term = replica_ ? replica_->term() : 0;
    Answer(route, n, EncodeReply(frame.header, notice));
    return true;
  }
  if (!replica_) {
    Answer(route, n,
           EncodeError(frame.header, Status(ErrorCode::kStorage,
                                            "the shard's database is closed")));
    return true;
  }
  if (!replica_->leading()) {
    NotLeader not_leader;
    not_leader.shard = shard_;
    not_leader.leader = replica_->leader();
    not_leader.term = replica_->term();
    Answer(route, n, EncodeReply(frame.header, not_leader));
    return true;
  }
  return false;
}

void Stored::Propose(std::vector<Parts>* routes,
                     std::vector<std::string>* frames) {
  uint64_t index = replica_ ? replica_->Propose(PackEntry(EntryKind::kRequests,
                                                          std::move(*frames)))
                            : 0;
  if (index == 0) {
    // Leadership went within this turn: routed asks again.
    for (const Parts& route : *routes) {
      NotLeader not_leader{shard_, replica_ ? replica_->leader() : 0,
                           replica_ ? replica_->term() : 0};
      Header h;
      PeekHeader(route.back().data(), route.back().size(), &h);
      Answer(route, route.size() - 1, EncodeReply(h, not_leader));
    }
    return;
  }
  logged_requests_ += routes->size();
  Proposal& p = proposals_[index];
  p.proposed = Clock::now();
  p.term = replica_->term();
  p.routes = std::move(*routes);
}

void Stored::Read(std::vector<Parts>* routes, std::vector<Request>* batch) {
  uint64_t context = next_read_++;
  ReadJob& job = reads_[context];
  job.routes = std::move(*routes);
  job.batch = std::move(*batch);
  if (!replica_ || !replica_->Read(context)) {
    // Leadership went within this turn: routed asks again.
    for (size_t i = 0; i < job.batch.size(); ++i) {
      NotLeader not_leader{shard_, replica_ ? replica_->leader() : 0,
                           replica_ ? replica_->term() : 0};
      Answer(job.routes[i], job.routes[i].size() - 1,
             EncodeReply(job.batch[i].frame.header, not_leader));
    }
    reads_.erase(context);
  }
}

void Stored::ProcessReplica() {
  Status s = replica_->Process(this);
  if (!s.ok()) {
    if (store_->is_open()) ++write_failures_;
    StorageFailed();
    return;
  }
  if (replica_->leading() != leading_) LeadershipChanged();
}

Status Stored::ApplyEntry(const raft::Entry& entry) {
  // A proposal of this replica's whose place another leader's entry took
  // (a no-op, acknowledgements, others' requests) is answered now.
  auto taken = proposals_.find(entry.index);
  if (taken != proposals_.end() && taken->second.term != entry.term) {
    for (const Parts& route : taken->second.routes) {
      Header h;
      PeekHeader(route.back().data(), route.back().size(), &h);
      Answer(route, route.size() - 1,
             EncodeError(h, Status(ErrorCode::kUnavailable,
                                   "the shard's leader changed before this "
                                   "was written")));
    }
    proposals_.erase(taken);
  }
  AnswerMembership(entry);
  if (entry.type != raft::EntryType::kNormal) {
    // Changes nothing but where the database is in the log (and, for a
    // configuration, the voters it records from then on).
    std::vector<Request> none;
    Effects nothing;
    return store_->Apply(
        &none, &nothing, {entry.index, entry.term},
        entry.type == raft::EntryType::kConfig ? &entry.data : nullptr);
  }
  ShardEntry e;
  if (!UnpackValue(entry.data, &e)) {
    NLOG_ERROR("event=bad-log-entry shard=%u index=%llu", shard_,
               static_cast<unsigned long long>(entry.index));
    return Status::Ok();
  }
  if (e.kind == static_cast<uint8_t>(EntryKind::kAcks)) {
    return ApplyAcks(entry, &e.frames);
  }
  return ApplyRequests(entry, &e.frames);
}

Status Stored::ApplyRequests(const raft::Entry& entry,
                             std::vector<std::string>* frames) {
  std::vector<Request> batch(frames->size());
  for (size_t i = 0; i < frames->size(); ++i) {
    // Decoded before they were proposed; a frame that fails now changes
    // nothing anywhere (every replica fails it alike).
    const std::string& f = (*frames)[i];
    if (!DecodeFrame(f.data(), f.size(), &batch[i].frame).ok()) {
      batch[i].frame = Frame();
    }
  }
  Effects effects;
  auto started = Clock::now();
  Status s = store_->Apply(&batch, &effects, {entry.index, entry.term});
  batch_latency_.Record(
      std::chrono::duration<double, std::micro>(Clock::now() - started)
          .count());
  if (!s.ok()) return s;  // applied again once the database opens
  batch_size_.Record(static_cast<double>(batch.size()));
  ++batches_;
  requests_served_ += batch.size();
  // Answers go back from the replica that proposed the entry, if it is
  // still the entry of its term; another's proposal there was lost.
  auto it = proposals_.find(entry.index);
  if (it != proposals_.end()) {
    Proposal& p = it->second;
    bool ours = p.term == entry.term && p.routes.size() == batch.size();
    if (ours) {
      commit_latency_.Record(
          std::chrono::duration<double, std::micro>(Clock::now() - p.proposed)
              .count());
    }
    for (size_t i = 0; i < p.routes.size(); ++i) {
      const Parts& route = p.routes[i];
      std::string reply = ours ? batch[i].reply : std::string();
      if (!ours) {
        Header h;
        PeekHeader(route.back().data(), route.back().size(), &h);
        reply = EncodeError(
            h, Status(ErrorCode::kUnavailable,
                      "the shard's leader changed before this was written"));
      }
      if (reply.empty()) continue;
      Answer(route, route.size() - 1, reply);
    }
    proposals_.erase(it);
  }
  if (!replica_->leading()) return Status::Ok();
  Publish(effects);
  for (const Handoff& d : effects.handoff) {
    // Once some wait on disk only, newer ones wait there too (behind them).
    if (spilled_ || pending_.size() >= kMaxPendingInMemory) {
      spilled_ = true;
      continue;
    }
    AddPending(d.outbox, d);
  }
  return Status::Ok();
}

Status Stored::ApplyAcks(const raft::Entry& entry,
                         std::vector<std::string>* frames) {
  for (size_t i = 0; i < frames->size(); ++i) {
    Frame f;
    HandoffAck ack;
    const std::string& bytes = (*frames)[i];
    if (!DecodeFrame(bytes.data(), bytes.size(), &f).ok() ||
        !DecodeBody(f, &ack).ok()) {
      continue;
    }
    // The index goes with the last one: an entry cut short by a crash is
    // applied again whole (an acknowledgement twice changes nothing).
    LogPosition at;
    if (i + 1 == frames->size()) at = {entry.index, entry.term};
    Status s = store_->AckHandoff(ack, at);
    if (s.code() == ErrorCode::kStorage) return s;
    pending_.erase(ack.outbox);
  }
  if (frames->empty()) {
    Status s = store_->AckHandoff(HandoffAck(), {entry.index, entry.term});
    if (s.code() == ErrorCode::kStorage) return s;
  }
  if (replica_->leading()) RefillPending();
  return Status::Ok();
}

void Stored::ServeRead(uint64_t context) {
  auto it = reads_.find(context);
  if (it == reads_.end()) return;
  ReadJob& job = it->second;
  Effects none;
  store_->Apply(&job.batch, &none);
  for (size_t i = 0; i < job.batch.size(); ++i) {
    Answer(job.routes[i], job.routes[i].size() - 1, job.batch[i].reply);
  }
  requests_served_ += job.batch.size();
  reads_.erase(it);
}

void Stored::LeadershipChanged() {
  leading_ = replica_->leading();
  NLOG_INFO("event=%s shard=%u replica=%u term=%llu",
            leading_ ? "leading" : "following", shard_,
            replica_settings_.replica,
            static_cast<unsigned long long>(replica_->term()));
  pending_.clear();
  due_.clear();
  spilled_ = false;
  if (leading_) {
    // Every hand-off of the outbox is this leader's to send now.
    spilled_ = true;
    RefillPending();
  } else {
    // Reads are the leader's; the entries proposed may still be committed
    // (and then answered here).
    Status moved(ErrorCode::kUnavailable, "the shard's leader changed");
    for (auto& [context, job] : reads_) {
      for (size_t i = 0; i < job.batch.size(); ++i) {
        Answer(job.routes[i], job.routes[i].size() - 1,
               EncodeError(job.batch[i].frame.header, moved));
      }
    }
    reads_.clear();
  }
}

void Stored::FailWaiting(const Status& error) {
  for (auto& [index, p] : proposals_) {
    for (const Parts& route : p.routes) {
      Header h;
      PeekHeader(route.back().data(), route.back().size(), &h);
      Answer(route, route.size() - 1, EncodeError(h, error));
    }
  }
  proposals_.clear();
  if (membership_) {
    membership_->Answer([&](const Header& h) { return EncodeError(h, error); });
    membership_.reset();
  }
  for (auto& [context, job] : reads_) {
    for (size_t i = 0; i < job.batch.size(); ++i) {
      Answer(job.routes[i], job.routes[i].size() - 1,
             EncodeError(job.batch[i].frame.header, error));
    }
  }
  reads_.clear();
}

void Stored::AddPending(uint64_t outbox, const Handoff& d) {
  Header h;
  h.user = d.target;
  h.trace = d.trace;
  Pending& p = pending_[outbox];
  p.frame = EncodeFrame(h, d);
  SendHandoff(outbox, &p);
}

void Stored::RefillPending() {
  if (!spilled_ || !store_->is_open()) return;
  // What waits on disk only is newer than everything here (older ones not
  // here were acknowledged), so read on after the newest one here.  At
  // Start and after a reopen nothing is here: all of the outbox waits.
  size_t room = kMaxPendingInMemory - pending_.size();
  if (room < kMaxPendingInMemory / 2) return;
  uint64_t after = pending_.empty() ? 0 : pending_.rbegin()->first;
  std::vector<Handoff> more = store_->PendingHandoffs(after, room);
  spilled_ = more.size() == room;
  for (const Handoff& d : more) AddPending(d.outbox, d);
  if (!more.empty()) {
    NLOG_INFO("event=handoffs-read outbox_from=%llu count=%zu more=%s",
              static_cast<unsigned long long>(more.front().outbox), more.size(),
              spilled_ ? "yes" : "no");
  }
}

void Stored::StorageFailed() {
  // LevelDB refuses every write after a failed sync; the database and the
  // log must be opened again, and what they then hold is the truth (an
  // entry not on the log's disk was never acknowledged; one there is
  // applied again once the database opens).
  FinishBackup(true);
  FailWaiting(Status(ErrorCode::kStorage, "the shard could not write"));
  if (replica_) retired_syncs_ += replica_->log().syncs();
  replica_.reset();
  leading_ = false;
  store_->Close();
  pending_.clear();
  due_.clear();
  spilled_ = false;
  next_reopen_ = Clock::now() + std::chrono::seconds(1);
  NLOG_ERROR("event=storage-down shard=%u path=%s retry_in=1s", shard_,
             LogValue(data_path_).c_str());
}

void Stored::TryReopen() {
  if (Clock::now() < next_reopen_) return;
  next_reopen_ = Clock::now() + std::chrono::seconds(1);
  Status s = store_->is_open() ? Status::Ok() : SwapDatabase();
  if (s.ok() && !store_->is_open())
    s = store_->Open(data_path_, max_open_files_);
  if (s.ok()) s = OpenReplica();
  if (!s.ok()) {
    NLOG_WARN("event=storage-reopen-failed shard=%u error=%s", shard_,
              LogValue(s.ToString()).c_str());
    return;
  }
  NLOG_INFO("event=storage-up shard=%u applied=%llu", shard_,
            static_cast<unsigned long long>(store_->applied_index()));
}

void Stored::Publish(const Effects& effects) {
  // One message (one CurveZMQ box) for the events of a batch, up to
  // kBatchBytes each (proto.h, natter-notifyd(8)).
  std::string batch;
  size_t in_batch = 0;
  auto flush = [&] {
    if (in_batch == 0) return;
    Parts parts;
    parts.push_back(zmq::message_t());  // empty: a batch
    parts.push_back(ToMessage(batch));
    // The live path may drop (the mailbox is the truth; devices catch up).
    if (!SendParts(events_, parts)) {
      publish_dropped_ += in_batch;
      NLOG_DEBUG("event=publish-dropped events=%zu", in_batch);
    }
    batch.clear();
    in_batch = 0;
  };
  for (size_t i = 0; i < effects.publish.size(); ++i) {
    const Event& event = effects.publish[i];
    const uint64_t trace = effects.publish_trace[i];
    Header h;
    h.user = event.user;
    h.device = event.origin_device;
    h.trace = trace;
    ++published_;
    NLOG_TRACE(trace, "event=publish user=%llu seq=%llu kind=%u",
               static_cast<unsigned long long>(event.user.value),
               static_cast<unsigned long long>(event.seq.value),
               static_cast<unsigned>(event.kind()));
    const std::string frame = EncodeFrame(h, event);
    if (BatchFull(batch, frame)) flush();
    AppendBatchEntry(&batch, event.user.value, frame);
    ++in_batch;
  }
  flush();
}

void Stored::SendHandoff(uint64_t outbox, Pending* pending) {
  Parts parts;
  parts.push_back(ToMessage(pending->frame));
  ++handoffs_sent_;
  if (!SendParts(handoff_, parts)) {
    NLOG_DEBUG("event=handoff-deferred outbox=%llu",
               static_cast<unsigned long long>(outbox));
  }
  pending->next_try = Clock::now() + retry_;
  due_.emplace_back(pending->next_try, outbox);
}

void Stored::TakeAcks() {
  // The acknowledgements go into the log, so that every replica's outbox
  // forgets the hand-off; not the leader: the hand-off is sent again.
  std::vector<std::string> acks;
  Parts parts;
  while (RecvParts(handoff_, &parts)) {
    Frame f;
    if (parts.empty() ||
        !DecodeFrame(parts.back().data(), parts.back().size(), &f).ok()) {
      continue;
    }
    if (f.type() == MsgType::kHandoffAck) {
      acks.emplace_back(static_cast<const char*>(parts.back().data()),
                        parts.back().size());
    } else if (f.type() == MsgType::kError) {
      Error e;
      DecodeBody(f, &e);
      NLOG_DEBUG("event=handoff-refused code=%u error=%s",
                 static_cast<unsigned>(e.code), LogValue(e.message).c_str());
    }
  }
  if (!acks.empty() && replica_ && replica_->leading()) {
    // Entries of at most kMaxBatch acknowledgements (what an entry decodes).
    for (size_t at = 0; at < acks.size(); at += kMaxBatch) {
      size_t end = std::min(acks.size(), at + kMaxBatch);
      replica_->Propose(PackEntry(
          EntryKind::kAcks,
          std::vector<std::string>(acks.begin() + at, acks.begin() + end)));
    }
    ProcessReplica();
  }
}

void Stored::RetryHandoffs() {
  auto now = Clock::now();
  // Bounded per turn, so a large backlog never stalls the requests.
  for (int n = 0; n < 4096 && !due_.empty() && due_.front().first <= now; ++n) {
    auto [when, outbox] = due_.front();
    due_.pop_front();
    auto it = pending_.find(outbox);
    if (it == pending_.end() || it->second.next_try != when) continue;
    SendHandoff(outbox, &it->second);
  }
}

void Stored::Stop() {
  // Serve what has arrived already (bounded: routed may keep sending), so
  // a clean stop leaves few requests to be retried; then close LevelDB.
  auto until = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < until && ServeBatch()) {
    answers_.Flush();
  }
  answers_.Flush();
  FinishBackup(true);
  replica_.reset();
  store_->Close();
  NLOG_INFO("event=closed shard=%u path=%s", shard_,
            LogValue(data_path_).c_str());
}

}  // namespace stored
}  // namespace natter

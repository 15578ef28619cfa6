#include "daemons/stored/stored.h"

#include <sys/stat.h>

#include <algorithm>

#include "common/log.h"

namespace natter {
namespace stored {

DaemonSpec Spec() {
  DaemonSpec spec("natter-stored", "stored", &MakeService<Stored>);
  spec.name = [](const Config& config) {
    return "stored-" + config.Get("shard");
  };
  return spec;
}

Status Stored::Create(const Config& config, zmq::context_t& ctx,
                      std::unique_ptr<Stored>* out) {
  std::unique_ptr<Stored> st(new Stored(ctx));
  Status s = DaemonKeys::Create(config, &st->keys_);
  if (!s.ok()) return s;
  uint64_t shard = 0, batch = 0, retry_s = 0, user_rate = 0, user_burst = 0;
  s = config.GetUint("shard", &shard);
  if (s.ok()) s = config.GetUint("batch-max", &batch);
  if (s.ok()) s = config.GetDuration("handoff-retry", &retry_s);
  if (s.ok()) s = config.GetUint("user-rate", &user_rate);
  if (s.ok()) s = config.GetUint("user-burst", &user_burst);
  if (s.ok()) s = UserRateLimiter::CheckSettings(user_rate, user_burst);
  if (!s.ok()) return s;
  std::vector<std::string> shards = config.GetList("shards");
  if (shards.empty())
    return Status(ErrorCode::kBadRequest, "shards: the shard map is empty");
  if (shard >= shards.size()) {
    return Status(ErrorCode::kBadRequest, "shard " + std::to_string(shard) +
                                              " is not in the shard map of " +
                                              std::to_string(shards.size()));
  }
  if (batch == 0)
    return Status(ErrorCode::kBadRequest, "batch-max: must be at least 1");
  st->shard_ = static_cast<uint32_t>(shard);
  st->shard_count_ = static_cast<uint32_t>(shards.size());
  const std::string listen = config.Get("listen");
  st->listen_ = BindAddress(listen.empty() ? shards[st->shard_] : listen);
  st->data_path_ =
      config.Get("data-dir") + "/shard-" + std::to_string(st->shard_);
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
  ::mkdir(data_path_.substr(0, data_path_.rfind('/')).c_str(), 0700);
  Status s = store_->Open(data_path_, max_open_files_);
  if (!s.ok()) return s;
  s = keys_.Start(ctx_);
  if (!s.ok()) return s;
  requests_ = MakeDaemonSocket(ctx_, zmq::socket_type::router);
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
  spilled_ = true;
  RefillPending();
  NLOG_INFO("event=open shard=%u of=%u path=%s listen=%s handoffs=%zu", shard_,
            shard_count_, LogValue(data_path_).c_str(),
            LogValue(listen_).c_str(), pending_.size());
  return Status::Ok();
}

void Stored::RunOnce(int timeout_ms) {
  std::vector<zmq::pollitem_t> items = {
      {requests_.handle(), 0, ZMQ_POLLIN, 0},
      {handoff_.handle(), 0, ZMQ_POLLIN, 0},
  };
  if (!pending_.empty() || !store_->is_open())
    timeout_ms = std::min(timeout_ms, 100);
  Poll(items, timeout_ms);
  if (!store_->is_open()) TryReopen();
  if (items[0].revents & ZMQ_POLLIN) ServeBatch();
  if (items[1].revents & ZMQ_POLLIN) TakeAcks();
  if (store_->is_open()) RetryHandoffs();
  if (backup_) FinishBackup(false);
  watch_->Check();
}

bool Stored::Control(const Frame& request, const ControlServer::Reply& reply) {
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
  backup_ = std::make_unique<BackupJob>();
  BackupJob* job = backup_.get();
  job->path = b.path;
  job->header = request.header;
  job->reply = reply;
  NLOG_INFO("event=backup-started shard=%u path=%s", shard_,
            LogValue(b.path).c_str());
  // The snapshot is taken by the thread at once; the shard serves on.
  job->thread = std::thread([this, job] {
    job->status = store_->Backup(job->path, &job->records, &job->bytes);
    job->done = true;
  });
  return true;
}

void Stored::FinishBackup(bool wait) {
  if (!backup_ || (!wait && !backup_->done)) return;
  backup_->thread.join();
  BackupJob& job = *backup_;
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
  set->Counter("natter_stored_batches_total",
               "Batches written (each one synced write at most).",
               static_cast<double>(batches_));
  set->Counter("natter_stored_requests_total", "Requests served.",
               static_cast<double>(requests_served_));
  set->Counter("natter_stored_syncs_total", "Synced writes.",
               static_cast<double>(store_->syncs()));
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
  set->Gauge("natter_stored_storage_up", "1 while the database is open.",
             store_->is_open() ? 1 : 0);
  set->Gauge("natter_stored_batch_requests_p50", "Requests in a batch, median.",
             batch_size_.Quantile(0.5));
  set->Summary("natter_stored_batch_seconds",
               "Applying a batch, its synced write included.", batch_latency_);
}

bool Stored::ServeBatch() {
  // Each request keeps its routing frames (the route back through routed
  // to the frontd and the client).
  std::vector<Parts> routes;
  std::vector<Request> batch;
  Parts parts;
  while (batch.size() < batch_max_ && RecvParts(requests_, &parts)) {
    if (parts.size() < 2) continue;
    Request r;
    const zmq::message_t& body = parts.back();
    Status s = DecodeFrame(body.data(), body.size(), &r.frame);
    if (!s.ok()) {
      NLOG_WARN("event=bad-frame error=%s", LogValue(s.ToString()).c_str());
      SendRouted(requests_, parts, parts.size() - 1, EncodeError(Header(), s));
      continue;
    }
    if (!limiter_.Admit(r.frame, Clock::now())) {
      const Header& h = r.frame.header;
      NLOG_TRACE(h.trace, "event=rate-refused user=%llu type=%s",
                 static_cast<unsigned long long>(h.user.value),
                 MsgTypeName(r.frame.type()));
      SendRouted(requests_, parts, parts.size() - 1,
                 EncodeError(h, limiter_.Refusal(h.user)));
      continue;
    }
    routes.push_back(std::move(parts));
    batch.push_back(std::move(r));
    parts = Parts();
  }
  if (batch.empty()) return false;
  Effects effects;
  bool was_open = store_->is_open();
  auto started = Clock::now();
  bool ok = store_->Apply(&batch, &effects).ok();
  batch_latency_.Record(
      std::chrono::duration<double, std::micro>(Clock::now() - started)
          .count());
  batch_size_.Record(static_cast<double>(batch.size()));
  ++batches_;
  requests_served_ += batch.size();
  if (!ok && was_open) {
    ++write_failures_;
    StorageFailed();
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!SendRouted(requests_, routes[i], routes[i].size() - 1,
                    batch[i].reply)) {
      NLOG_WARN("event=reply-dropped type=%s",
                LogValue(MsgTypeName(batch[i].frame.type())).c_str());
    }
  }
  for (size_t i = 0; i < effects.publish.size(); ++i) {
    Publish(effects.publish[i], effects.publish_trace[i]);
  }
  for (const Handoff& d : effects.handoff) {
    // Once some wait on disk only, newer ones wait there too (behind them).
    if (spilled_ || pending_.size() >= kMaxPendingInMemory) {
      spilled_ = true;
      continue;
    }
    AddPending(d.outbox, d);
  }
  return true;
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
  // LevelDB refuses every write after a failed sync; the database must be
  // opened again, and what it then holds is the truth (the failed batch is
  // there whole or not at all; its senders retry either way).
  FinishBackup(true);
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
  Status s = store_->Open(data_path_, max_open_files_);
  if (!s.ok()) {
    NLOG_WARN("event=storage-reopen-failed shard=%u error=%s", shard_,
              LogValue(s.ToString()).c_str());
    return;
  }
  spilled_ = true;
  RefillPending();
  NLOG_INFO("event=storage-up shard=%u handoffs=%zu", shard_, pending_.size());
}

void Stored::Publish(const Event& event, uint64_t trace) {
  Header h;
  h.user = event.user;
  h.device = event.origin_device;
  h.trace = trace;
  ++published_;
  NLOG_TRACE(trace, "event=publish user=%llu seq=%llu kind=%u",
             static_cast<unsigned long long>(event.user.value),
             static_cast<unsigned long long>(event.seq.value),
             static_cast<unsigned>(event.kind()));
  Parts parts;
  parts.push_back(ToMessage(TopicOf(event.user)));
  parts.push_back(ToMessage(EncodeFrame(h, event)));
  // The live path may drop (the mailbox is the truth; devices catch up).
  if (!SendParts(events_, parts)) {
    ++publish_dropped_;
    NLOG_DEBUG("event=publish-dropped user=%llu seq=%llu",
               static_cast<unsigned long long>(event.user.value),
               static_cast<unsigned long long>(event.seq.value));
  }
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
  Parts parts;
  while (RecvParts(handoff_, &parts)) {
    Frame f;
    HandoffAck ack;
    if (parts.empty() ||
        !DecodeFrame(parts.back().data(), parts.back().size(), &f).ok()) {
      continue;
    }
    if (f.type() != MsgType::kHandoffAck || !DecodeBody(f, &ack).ok()) {
      if (f.type() == MsgType::kError) {
        Error e;
        DecodeBody(f, &e);
        NLOG_WARN("event=handoff-refused code=%u error=%s",
                  static_cast<unsigned>(e.code), LogValue(e.message).c_str());
      }
      continue;
    }
    // Also for one not held here (spilled to disk): the outbox checks the id.
    Status s = store_->AckHandoff(ack);
    if (s.ok() || s.code() == ErrorCode::kNotFound) pending_.erase(ack.outbox);
  }
  RefillPending();
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
  }
  FinishBackup(true);
  store_->Close();
  NLOG_INFO("event=closed shard=%u path=%s", shard_,
            LogValue(data_path_).c_str());
}

}  // namespace stored
}  // namespace natter

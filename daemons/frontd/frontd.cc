#include "daemons/frontd/frontd.h"

#include <sodium.h>

#include <algorithm>
#include <ctime>

#include "common/endian.h"
#include "common/log.h"
#include "common/validate.h"
#include "daemons/frontd/request_check.h"

namespace natter {
namespace frontd {
namespace {

Status UintOption(const Config& config, const char* name, uint64_t min,
                  uint64_t* out) {
  Status s = config.GetUint(name, out);
  if (!s.ok()) return s;
  if (*out < min) {
    return Status(
        ErrorCode::kBadRequest,
        std::string(name) + ": must be at least " + std::to_string(min));
  }
  return Status::Ok();
}

Status DurationOption(const Config& config, const char* name,
                      std::chrono::steady_clock::duration* out) {
  uint64_t seconds = 0;
  Status s = config.GetDuration(name, &seconds);
  if (!s.ok()) return s;
  if (seconds == 0)
    return Status(ErrorCode::kBadRequest,
                  std::string(name) + ": must be above 0");
  *out = std::chrono::seconds(seconds);
  return Status::Ok();
}

// The envelope frontd gives a request to routed: the connection's id.
std::string Envelope(ConnId conn) {
  std::string e;
  PutBigEndian(&e, conn);
  return e;
}

uint64_t NowSeconds() { return static_cast<uint64_t>(std::time(nullptr)); }

}  // namespace

DaemonSpec Spec() {
  return DaemonSpec("natter-frontd", "frontd", &MakeService<Frontd>);
}

Status Frontd::CheckIoThreads(const Config& config) {
  uint64_t n = 0;
  if (!config.GetUint("io-threads", &n).ok() || n < 1 || n > 16) {
    return Status(ErrorCode::kBadRequest, "io-threads: 1 to 16");
  }
  return Status::Ok();
}

Frontd::Frontd(zmq::context_t& ctx) : ctx_(ctx) {
  randombytes_buf(trace_key_.data(), trace_key_.size());
}

Status Frontd::Create(const Config& config, zmq::context_t& ctx,
                      std::unique_ptr<Frontd>* out) {
  std::unique_ptr<Frontd> f(new Frontd(ctx));
  Status s = DaemonKeys::Create(config, &f->keys_);
  if (!s.ok()) return s;
  f->listen_ = config.Get("listen");
  f->routed_ = config.GetList("routed");
  f->notifyd_ = config.GetList("notifyd-out");
  f->token_keys_ = config.Get("token-keys");
  ClientGate::Limits& limits = f->limits_;
  uint64_t max_in_flight = 0, max_clients = 0, max_pending = 0,
           max_pending_per_address = 0, max_queued = 0,
           max_sessions_per_user = 0;
  s = DurationOption(config, "session-timeout", &limits.idle_timeout);
  if (s.ok())
    s = DurationOption(config, "hello-timeout", &limits.hello_timeout);
  if (s.ok()) s = DurationOption(config, "drain-timeout", &f->drain_timeout_);
  if (s.ok()) s = UintOption(config, "max-in-flight", 1, &max_in_flight);
  if (s.ok()) s = UintOption(config, "max-clients", 0, &max_clients);
  if (s.ok())
    s = UintOption(config, "handshake-rate", 0, &limits.handshake_rate);
  if (s.ok()) s = UintOption(config, "max-pending", 1, &max_pending);
  if (s.ok())
    s = UintOption(config, "max-pending-per-address", 1,
                   &max_pending_per_address);
  if (s.ok()) s = UintOption(config, "max-queued", 64 * 1024, &max_queued);
  if (s.ok())
    s = UintOption(config, "max-sessions-per-user", 1, &max_sessions_per_user);
  if (s.ok()) s = CheckIoThreads(config);
  if (!s.ok()) return s;
  f->max_in_flight_ = max_in_flight;
  limits.max_clients =
      max_clients != 0 ? max_clients : DefaultMaxClients(OpenFilesLimit());
  limits.max_pending = max_pending;
  limits.max_pending_per_address = max_pending_per_address;
  limits.max_queued = max_queued;
  limits.max_message = kMaxRequestBytes;
  f->max_sessions_per_user_ = max_sessions_per_user;
  if (f->listen_.empty())
    return Status(ErrorCode::kBadRequest, "listen: no endpoint");
  if (f->routed_.empty())
    return Status(ErrorCode::kBadRequest, "routed: no endpoint");
  if (f->notifyd_.empty())
    return Status(ErrorCode::kBadRequest, "notifyd-out: no endpoint");
  s = f->verifier_.LoadDir(f->token_keys_);
  if (!s.ok())
    return Status(ErrorCode::kBadRequest, "token-keys: " + s.message());
  *out = std::move(f);
  return Status::Ok();
}

size_t Frontd::DefaultMaxClients(uint64_t open_files) {
  return open_files > 2 * kReservedFiles
             ? open_files - kReservedFiles
             : std::max<uint64_t>(open_files / 2, 1);
}

Status Frontd::Start() {
  Status ks = keys_.Start(ctx_);
  if (!ks.ok()) return ks;
  gate_ = std::make_unique<ClientGate>(limits_, keys_.identity());
  ks = gate_->Bind(listen_);
  if (!ks.ok()) return ks;
  routed_socket_ = MakeDaemonSocket(ctx_, zmq::socket_type::dealer);
  routed_socket_.set(zmq::sockopt::immediate, 1);
  events_ = MakeDaemonSocket(ctx_, zmq::socket_type::sub, 0);
  // The links to routed and notifyd are kept up: one that ends and is not
  // being connected again by ZeroMQ is connected again here.
  watch_ = std::make_unique<LinkWatch>(ctx_);
  watch_->Add(routed_socket_, "routed");
  watch_->Add(events_, "notifyd");
  for (const auto& ep : routed_) {
    ks = watch_->Connect(routed_socket_, keys_.identity(), ep);
    if (!ks.ok()) return ks;
  }
  for (const auto& ep : notifyd_) {
    ks = watch_->Connect(events_, keys_.identity(), ep);
    if (!ks.ok()) return ks;
  }
  NLOG_INFO("event=listening listen=%s curve=%s token_keys=%zu max_clients=%zu",
            LogValue(listen_).c_str(), keys_.identity().enabled ? "on" : "off",
            verifier_.key_count(), limits_.max_clients);
  next_sweep_ = Clock::now() + std::chrono::seconds(1);
  return Status::Ok();
}

void Frontd::Reload(const Config*) {
  keys_.Reload();
  Status s = verifier_.LoadDir(token_keys_);
  if (!s.ok()) {
    NLOG_ERROR("event=token-keys-reload-failed error=%s kept=%zu",
               LogValue(s.message()).c_str(), verifier_.key_count());
    return;
  }
  NLOG_INFO("event=token-keys-reloaded keys=%zu", verifier_.key_count());
  // Sessions whose tokens a retired key signed end now.
  std::vector<ConnId> retired;
  for (const auto& [conn, session] : sessions_) {
    if (!verifier_.HasKey(session.key_id)) retired.push_back(conn);
  }
  for (ConnId conn : retired) {
    Revoke(conn, Status(ErrorCode::kTokenUnknownKey,
                        "the key that signed your token was retired; say hello "
                        "with a new token"));
  }
}

void Frontd::Stop() {
  // Drain: no new connection; every device told to move to another
  // frontd; what comes meanwhile served as ever, until the clients have
  // gone (or drain-timeout passes), so that a stop loses nothing and a
  // rolling restart refuses nobody.
  const auto started = Clock::now();
  const size_t had = sessions_.size();
  gate_->StopTaking();
  draining_ = true;
  const std::string frame = MoveFrame();
  for (const auto& [conn, session] : sessions_) gate_->Send(conn, frame);
  gate_->Flush();
  NLOG_INFO("event=draining sessions=%zu connections=%zu", had,
            gate_->connections());
  // Until the devices have gone (connections refused while draining, or
  // that never said hello, do not count).
  while ((!sessions_.empty() || !pending_hellos_.empty()) &&
         Clock::now() - started < drain_timeout_)
    RunOnce(50);
  size_t left = 0;
  for (const auto& [conn, session] : sessions_)
    left += session.in_flight.size();
  NLOG_INFO("event=drained sessions=%zu connections=%zu unanswered=%zu ms=%lld",
            sessions_.size(), gate_->connections(), left,
            static_cast<long long>(
                std::chrono::duration_cast<std::chrono::milliseconds>(
                    Clock::now() - started)
                    .count()));
}

void Frontd::RunOnce(int timeout_ms) {
  std::vector<zmq::pollitem_t> items = {
      gate_->PollItem(),
      {routed_socket_.handle(), 0, ZMQ_POLLIN, 0},
      {events_.handle(), 0, ZMQ_POLLIN, 0},
  };
  Poll(items, std::min(timeout_ms, gate_->NextTickMs(Clock::now())));
  // Work under way first (answers, events), new requests after: under
  // load, what the cell has done reaches the clients before more comes in.
  if (items[1].revents & ZMQ_POLLIN) FromRouted();
  if (items[2].revents & ZMQ_POLLIN) FromNotifyd();
  FromClients((items[0].revents & ZMQ_POLLIN) != 0);
  watch_->Check();
  const auto now = Clock::now();
  gate_->Tick(now);
  if (now >= next_sweep_) ExpireSessions();
  ReapClosed();
  gate_->Flush();
  ReapClosed();
}

void Frontd::FromClients(bool readable) {
  // The sessions' requests first, then a slice of time for handshakes: a
  // storm of new clients waits, the connected ones are served.
  std::vector<ClientGate::Request> requests;
  if (readable) gate_->Read(&requests);
  Serve(requests);
  if (gate_->handshakes_waiting() != 0) {
    requests.clear();
    gate_->Handshake(&requests);
    Serve(requests);
  }
  // What the turn took in goes to routed together.
  FlushToRouted();
}

void Frontd::Serve(const std::vector<ClientGate::Request>& requests) {
  for (const ClientGate::Request& r : requests) {
    if (r.frames != 1) {
      ReplyError(r.conn, 0,
                 Status(ErrorCode::kMalformed, "a request is one frame"));
      continue;
    }
    FromClient(r.conn, r.body);
  }
}

void Frontd::FromClient(ConnId conn, const std::string& body) {
  Frame frame;
  Status s = DecodeFrame(body.data(), body.size(), &frame);
  if (s.ok() && frame.header.version != kProtocolVersion) {
    // Said in the client's own version (the frame's third byte, after
    // [header, and [version), so that it can read why.
    Header h;
    h.corr = frame.header.corr;
    std::string reply = EncodeError(
        h,
        Status(ErrorCode::kMalformed,
               "protocol version " + std::to_string(frame.header.version) +
                   ": this frontd speaks " + std::to_string(kProtocolVersion) +
                   " (natter(7)); upgrade the client"));
    reply[2] = static_cast<char>(frame.header.version);
    Reply(conn, reply);
    return;
  }
  if (!s.ok()) {
    ReplyError(conn, frame.header.corr, s);
    return;
  }
  if (frame.type() == MsgType::kHello) {
    Hello(conn, frame);
    return;
  }
  auto it = sessions_.find(conn);
  if (it == sessions_.end()) {
    ReplyError(conn, frame.header.corr,
               Status(ErrorCode::kNoSession, "no session: say hello first"));
    return;
  }
  Forward(conn, &it->second, frame);
}

void Frontd::Forward(ConnId conn, Session* session, const Frame& frame) {
  const auto now = Clock::now();
  // A resend of a request still on its way is held back while the cell is
  // merely slow: passed on, it would only add load (an overloaded cell
  // answers late, its clients resend, and the resends overload it more).
  // Once the request has waited well past what answers take, it may have
  // been lost between daemons, and the resend goes on.
  auto earlier = session->in_flight.find(frame.header.corr);
  if (earlier != session->in_flight.end() &&
      now - earlier->second < ResendHold()) {
    ++resends_held_;
    return;
  }
  Header h;
  h.corr = frame.header.corr;
  h.user = session->user;  // the token's user, whatever the client wrote
  h.device = session->device;
  h.trace = NewTrace(frame.header.trace != 0);
  RequestCheck check(h);
  Status s = VisitBody(frame, check);
  if (s.ok() && check.pong()) {
    h.trace = 0;
    Reply(conn, EncodeReply(h, Pong()));
    return;
  }
  if (s.ok() && session->in_flight.size() >= max_in_flight_ &&
      !session->in_flight.count(h.corr)) {
    s = Status(ErrorCode::kBusy, "too many requests in flight (" +
                                     std::to_string(max_in_flight_) +
                                     "); wait for their answers");
  }
  if (!s.ok()) {
    ++refused_;
    NLOG_TRACE(h.trace, "event=refused type=%s user=%llu error=%s",
               MsgTypeName(frame.type()),
               static_cast<unsigned long long>(h.user.value),
               LogValue(s.ToString()).c_str());
    ReplyError(conn, h.corr, s);
    return;
  }
  NLOG_TRACE(
      h.trace, "event=request type=%s user=%llu device=%s corr=%llu",
      MsgTypeName(frame.type()), static_cast<unsigned long long>(h.user.value),
      LogValue(h.device).c_str(), static_cast<unsigned long long>(h.corr));
  if (frame.type() == MsgType::kAck) {
    // No answer comes, so nothing waits in in_flight; an ack covers every
    // seq up to its own (and one below the cursor changes nothing), so the
    // turn's highest stands for the others.
    Ack ack;
    DecodeBody(frame, &ack);  // it passed the check
    if (session->ack.empty()) {
      acks_due_.push_back(conn);
    } else if (ack.seq.value < session->ack_seq) {
      return;
    }
    session->ack = check.frame();
    session->ack_seq = ack.seq.value;
    return;
  }
  // An ack that came before this request goes before it (a sync after an
  // ack sees the ack's cursor).
  PassAck(conn, session);
  if (BatchFull(to_routed_, check.frame())) FlushToRouted();
  AppendBatchEntry(&to_routed_, conn, check.frame());
  ++requests_;
  to_routed_corrs_.emplace_back(conn, h.corr);
  session->in_flight[h.corr] = now;
}

void Frontd::PassAck(ConnId conn, Session* session) {
  if (session->ack.empty()) return;
  // Taken first: FlushToRouted passes the turn's acks too.
  std::string ack;
  ack.swap(session->ack);
  if (BatchFull(to_routed_, ack)) FlushToRouted();
  AppendBatchEntry(&to_routed_, conn | kUnanswered, ack);
  ++requests_;
}

void Frontd::FlushToRouted() {
  std::vector<ConnId> due;
  due.swap(acks_due_);
  for (ConnId conn : due) {
    auto session = sessions_.find(conn);
    if (session != sessions_.end()) PassAck(conn, &session->second);
  }
  if (to_routed_.empty()) return;
  Parts out;
  out.push_back(zmq::message_t());  // empty: a batch (proto.h)
  out.push_back(ToMessage(to_routed_));
  to_routed_.clear();
  std::vector<std::pair<ConnId, uint64_t>> sent;
  sent.swap(to_routed_corrs_);
  if (SendParts(routed_socket_, out)) return;
  for (const auto& [conn, corr] : sent) {
    auto session = sessions_.find(conn);
    if (session != sessions_.end()) session->second.in_flight.erase(corr);
    ReplyError(conn, corr,
               Status(ErrorCode::kUnavailable, "routed is not reachable"));
  }
}

uint64_t Frontd::NewTrace(bool loud) {
  // SipHash of a counter under a key of this run: unique, and no client
  // can tell from its own ids how many requests others made.
  uint64_t counter = ++trace_next_;
  unsigned char hash[crypto_shorthash_BYTES];
  crypto_shorthash(hash, reinterpret_cast<const unsigned char*>(&counter),
                   sizeof counter, trace_key_.data());
  uint64_t id = GetBigEndian(reinterpret_cast<const char*>(hash), sizeof hash);
  id &= ~kTraceLoud;
  if (id == 0) id = 1;
  return id | (loud ? kTraceLoud : 0);
}

void Frontd::Stats(MetricSet* set) {
  size_t in_flight = 0;
  for (const auto& [conn, session] : sessions_)
    in_flight += session.in_flight.size();
  set->Gauge("natter_frontd_sessions",
             "Client sessions (devices that said hello).",
             static_cast<double>(sessions_.size()));
  if (gate_) gate_->Stats(set);
  set->Counter("natter_frontd_hellos_total", "Hellos (sessions begun).",
               static_cast<double>(hellos_));
  set->Counter(
      "natter_frontd_revoked_total",
      "Sessions ended because their token expired or its key was retired.",
      static_cast<double>(revoked_));
  set->Counter("natter_frontd_requests_total", "Requests passed on to routed.",
               static_cast<double>(requests_));
  set->Counter("natter_frontd_refused_total",
               "Requests frontd answered with an error itself.",
               static_cast<double>(refused_));
  set->Counter("natter_frontd_answers_total",
               "Answers from the cell passed to clients.",
               static_cast<double>(answers_));
  set->Counter("natter_frontd_resends_held_total",
               "Resends of requests still on their way, held back while the "
               "cell is slow.",
               static_cast<double>(resends_held_));
  set->Counter("natter_frontd_events_total", "Events passed to devices.",
               static_cast<double>(events_sent_));
  set->Counter("natter_frontd_dropped_total",
               "Frames for connections that had gone (repaired from the "
               "mailbox or resent).",
               static_cast<double>(dropped_));
  set->Gauge("natter_frontd_in_flight",
             "Requests passed on and not yet answered.",
             static_cast<double>(in_flight));
  set->Gauge("natter_frontd_resend_hold_seconds",
             "How long a request waits before a resend of it goes on.",
             std::chrono::duration<double>(ResendHold()).count());
  set->Summary("natter_frontd_answer_seconds",
               "From a request passed on to its answer.", answer_latency_);
  set->Counter("natter_frontd_relinks_total",
               "Links to routed or notifyd connected again by frontd itself.",
               static_cast<double>(watch_ ? watch_->relinks() : 0));
}

void Frontd::Hello(ConnId conn, const Frame& frame) {
  natter::Hello hello;
  TokenClaims claims;
  Status s = DecodeBody(frame, &hello);
  if (s.ok()) s = verifier_.Verify(hello.token, NowSeconds(), &claims);
  std::string device = hello.device;
  if (s.ok() && !claims.device.empty()) {
    if (device.empty()) device = claims.device;
    if (device != claims.device) {
      s = Status(ErrorCode::kForbidden,
                 "the token is for device " + claims.device);
    }
  }
  if (s.ok()) s = ValidateDevice(device);
  auto mine = sessions_.find(conn);
  const bool same_user =
      mine != sessions_.end() && mine->second.user == claims.user;
  if (s.ok() && !same_user) {
    auto ids = by_user_.find(claims.user);
    if (ids != by_user_.end() && ids->second.size() >= max_sessions_per_user_) {
      s = Status(ErrorCode::kBusy,
                 "user " + std::to_string(claims.user.value) + " has " +
                     std::to_string(max_sessions_per_user_) +
                     " sessions on this frontd (max-sessions-per-user)");
    }
  }
  if (!s.ok()) {
    NLOG_INFO("event=hello-refused conn=%llu address=%s error=%s",
              static_cast<unsigned long long>(conn),
              LogValue(gate_->Address(conn)).c_str(),
              LogValue(s.ToString()).c_str());
    ReplyError(conn, frame.header.corr, s);
    if (++refused_hellos_[conn] >= kMaxRefusedHellos)
      gate_->Close(conn, "hellos refused");
    return;
  }
  refused_hellos_.erase(conn);
  PendingHello hello_ok{claims, device, frame.header.corr, Clock::now()};
  // A fresh token for the session going on needs nothing of the shard.
  if (same_user && mine->second.device == device) {
    OpenSession(conn, hello_ok);
    return;
  }
  // Otherwise the device's mailbox cursor begins now (if it has none), on
  // its home shard, before the session does: what arrives after this
  // hello is the device's to catch up on, even if it leaves at once.
  Header h;
  h.corr = frame.header.corr;
  h.user = claims.user;
  h.device = device;
  h.trace = NewTrace(frame.header.trace != 0);
  Parts out;
  out.push_back(ToMessage(Envelope(conn)));
  out.push_back(ToMessage(EncodeFrame(h, Attach())));
  if (!SendParts(routed_socket_, out)) {
    ReplyError(conn, frame.header.corr,
               Status(ErrorCode::kUnavailable, "routed is not reachable"));
    return;
  }
  pending_hellos_[conn] = std::move(hello_ok);
}

void Frontd::OpenSession(ConnId conn, const PendingHello& hello) {
  // A second hello on a connection (a fresh token, say) takes the place of
  // the first.
  auto mine = sessions_.find(conn);
  if (mine != sessions_.end() && (mine->second.user != hello.claims.user ||
                                  mine->second.device != hello.device)) {
    EndSession(conn);
  }
  Session& session = sessions_[conn];
  const bool fresh = session.user.value == 0;
  session.user = hello.claims.user;
  session.device = hello.device;
  session.key_id = hello.claims.key_id;
  session.ends_s = hello.claims.expires + kTokenClockSkew;
  if (fresh) {
    ++hellos_;
    auto& ids = by_user_[session.user];
    if (ids.empty())
      events_.set(zmq::sockopt::subscribe, TopicOf(session.user));
    ids.push_back(conn);
  }
  gate_->SetSession(conn, true);
  NLOG_DEBUG("event=session conn=%llu user=%llu device=%s",
             static_cast<unsigned long long>(conn),
             static_cast<unsigned long long>(session.user.value),
             LogValue(hello.device).c_str());
  Welcome w;
  w.user = session.user;
  w.device = hello.device;
  w.expires = hello.claims.expires;
  Header h;
  h.corr = hello.corr;
  h.user = session.user;
  h.device = hello.device;
  Reply(conn, EncodeReply(h, w));
  // Draining: a device whose session began meanwhile moves too.
  if (draining_) gate_->Send(conn, MoveFrame());
}

std::string Frontd::MoveFrame() {
  Move move;
  move.after_ms = 1000;
  move.reason = "frontd is stopping";
  return EncodeFrame(Header(), move);
}

bool Frontd::FinishHello(ConnId conn, const Frame& answer,
                         std::string_view bytes) {
  auto it = pending_hellos_.find(conn);
  if (it == pending_hellos_.end() || it->second.corr != answer.header.corr)
    return false;
  const bool attached = answer.type() == MsgType::kAttached;
  if (!attached && answer.type() != MsgType::kError) return false;
  PendingHello hello = std::move(it->second);
  pending_hellos_.erase(it);
  if (attached) {
    OpenSession(conn, hello);
  } else {
    // The shard's refusal (busy, unavailable, storage) goes to the client,
    // whose hello is retried as any request.
    Reply(conn, bytes);
  }
  return true;
}

void Frontd::Reply(ConnId conn, std::string_view frame) {
  if (!gate_->Send(conn, frame)) ++dropped_;
}

void Frontd::ReplyError(ConnId conn, uint64_t corr, const Status& status) {
  Header h;
  h.corr = corr;
  auto it = sessions_.find(conn);
  if (it != sessions_.end()) {
    h.user = it->second.user;
    h.device = it->second.device;
  }
  Reply(conn, EncodeError(h, status));
}

void Frontd::Revoke(ConnId conn, const Status& why) {
  ++revoked_;
  NLOG_INFO("event=session-ended conn=%llu user=%llu error=%s",
            static_cast<unsigned long long>(conn),
            static_cast<unsigned long long>(sessions_[conn].user.value),
            LogValue(why.ToString()).c_str());
  ReplyError(conn, 0, why);
  EndSession(conn);
  gate_->SetSession(conn, false);
}

void Frontd::EndSession(ConnId conn) {
  auto it = sessions_.find(conn);
  if (it == sessions_.end()) return;
  UserId user = it->second.user;
  sessions_.erase(it);
  auto& ids = by_user_[user];
  ids.erase(std::remove(ids.begin(), ids.end(), conn), ids.end());
  if (ids.empty()) {
    by_user_.erase(user);
    events_.set(zmq::sockopt::unsubscribe, TopicOf(user));
  }
}

void Frontd::ReapClosed() {
  for (ConnId conn : gate_->TakeClosed()) {
    EndSession(conn);
    refused_hellos_.erase(conn);
    pending_hellos_.erase(conn);
  }
}

void Frontd::ExpireSessions() {
  const auto now = Clock::now();
  const uint64_t now_s = NowSeconds();
  next_sweep_ = now + std::chrono::seconds(1);
  std::vector<ConnId> expired;
  for (auto& [conn, session] : sessions_) {
    if (session.ends_s <= now_s) expired.push_back(conn);
    // An answer lost on the way (a daemon restarted) frees its place.
    for (auto it = session.in_flight.begin(); it != session.in_flight.end();) {
      it = now - it->second > limits_.idle_timeout ? session.in_flight.erase(it)
                                                   : std::next(it);
    }
  }
  for (ConnId conn : expired) {
    Revoke(conn, Status(ErrorCode::kTokenExpired,
                        "your token expired; say hello with a new one"));
  }
  // A hello whose attach got no answer (a daemon restarted) is refused
  // with a retryable error; the client says it again.
  for (auto it = pending_hellos_.begin(); it != pending_hellos_.end();) {
    if (now - it->second.sent < limits_.hello_timeout) {
      ++it;
      continue;
    }
    ReplyError(it->first, it->second.corr,
               Status(ErrorCode::kUnavailable,
                      "the home shard did not answer the hello"));
    it = pending_hellos_.erase(it);
  }
}

Frontd::Clock::duration Frontd::ResendHold() const {
  return std::chrono::milliseconds(
      static_cast<int64_t>(std::clamp(4 * answer_ms_, 1000.0, 10000.0)));
}

void Frontd::FromRouted() {
  Parts parts;
  for (int n = 0; n < 4096 && RecvParts(routed_socket_, &parts); ++n) {
    if (parts.size() != 2) continue;
    auto view = [](const zmq::message_t& m) {
      return std::string_view(static_cast<const char*>(m.data()), m.size());
    };
    if (parts[0].size() == 8) {
      Answer(GetBigEndian(static_cast<const char*>(parts[0].data())),
             view(parts[1]));
      continue;
    }
    // The answers of routed's turn for this frontd (proto.h's batch).
    if (parts[0].size() != 0) continue;
    if (!ForEachBatchEntry(view(parts[1]),
                           [this](std::string_view key, std::string_view f) {
                             Answer(GetBigEndian(key.data()), f);
                           })) {
      NLOG_WARN("event=malformed-batch bytes=%zu", parts[1].size());
    }
  }
}

void Frontd::Answer(ConnId conn, std::string_view bytes) {
  // An ack's (an error; the shard answers none): the client expects none.
  if ((conn & kUnanswered) != 0) return;
  auto session = sessions_.find(conn);
  Frame reply;
  const bool decoded = DecodeFrame(bytes.data(), bytes.size(), &reply).ok();
  if (decoded && FinishHello(conn, reply, bytes)) return;
  if (session != sessions_.end() && decoded) {
    auto& in_flight = session->second.in_flight;
    auto request = in_flight.find(reply.header.corr);
    if (request != in_flight.end()) {
      double ms = std::chrono::duration<double, std::milli>(Clock::now() -
                                                            request->second)
                      .count();
      answer_ms_ += (ms - answer_ms_) / 64;
      answer_latency_.Record(ms * 1000);
      in_flight.erase(request);
    }
    NLOG_TRACE(reply.header.trace, "event=answer type=%s user=%llu corr=%llu",
               MsgTypeName(reply.type()),
               static_cast<unsigned long long>(reply.header.user.value),
               static_cast<unsigned long long>(reply.header.corr));
  }
  ++answers_;
  Reply(conn, bytes);
}

void Frontd::FromNotifyd() {
  Parts parts;
  for (int n = 0; n < 4096 && RecvParts(events_, &parts); ++n) {
    if (parts.size() != 2 || parts[0].size() != 8) continue;
    Frame frame;
    if (!DecodeFrame(parts[1].data(), parts[1].size(), &frame).ok()) continue;
    auto it = by_user_.find(frame.header.user);
    if (it == by_user_.end()) continue;
    const std::string event = parts[1].to_string();
    // Copy: a failed send may end a session and edit the list.
    const std::vector<ConnId> conns = it->second;
    for (ConnId conn : conns) {
      auto s = sessions_.find(conn);
      if (s == sessions_.end()) continue;
      // The device that caused an event has its answer already.
      if (!frame.header.device.empty() &&
          s->second.device == frame.header.device)
        continue;
      NLOG_TRACE(frame.header.trace, "event=event user=%llu device=%s",
                 static_cast<unsigned long long>(frame.header.user.value),
                 LogValue(s->second.device).c_str());
      ++events_sent_;
      Reply(conn, event);
    }
  }
}

}  // namespace frontd
}  // namespace natter

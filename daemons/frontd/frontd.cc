#include "daemons/frontd/frontd.h"


#include <sodium.h>

#include <algorithm>
#include <ctime>
#include <stdexcept>

#include "common/log.h"
#include "common/validate.h"

namespace natter {
namespace frontd {
Frontd::Frontd(const Config& config, zmq::context_t& ctx)
    : ctx_(ctx),
      keys_(config),
      listen_(config.Get("listen")),
      routed_(config.GetList("routed")),
      notifyd_(config.GetList("notifyd-out")),
      token_keys_(config.Get("token-keys")) {
  uint64_t timeout = 0;
  Status s = config.GetDuration("session-timeout", &timeout);
  if (!s.ok()) throw std::invalid_argument(s.message());
  if (timeout == 0) throw std::invalid_argument("session-timeout: must be above 0");
  session_timeout_ = std::chrono::seconds(timeout);
  uint64_t max_in_flight = 0;
  s = config.GetUint("max-in-flight", &max_in_flight);
  if (!s.ok()) throw std::invalid_argument(s.message());
  if (max_in_flight == 0) throw std::invalid_argument("max-in-flight: must be at least 1");
  max_in_flight_ = max_in_flight;
  uint64_t max_clients = 0;
  s = config.GetUint("max-clients", &max_clients);
  if (!s.ok()) throw std::invalid_argument(s.message());
  max_clients_ = max_clients != 0 ? max_clients : DefaultMaxClients(OpenFilesLimit());
  uint64_t io_threads = 1;
  s = config.GetUint("io-threads", &io_threads);
  if (!s.ok() || io_threads < 1 || io_threads > 16) {
    throw std::invalid_argument("io-threads: 1 to 16");
  }
  client_threads_ = static_cast<int>(io_threads);
  if (listen_.empty()) throw std::invalid_argument("listen: no endpoint");
  if (routed_.empty()) throw std::invalid_argument("routed: no endpoint");
  if (notifyd_.empty()) throw std::invalid_argument("notifyd-out: no endpoint");
  s = verifier_.LoadDir(token_keys_);
  if (!s.ok()) throw std::invalid_argument("token-keys: " + s.message());
}

size_t Frontd::DefaultMaxClients(uint64_t open_files) {
  return open_files > 2 * kReservedFiles ? open_files - kReservedFiles
                                         : std::max<uint64_t>(open_files / 2, 1);
}

Status Frontd::Start() {
  clients_ = MakeSocket(ctx_, zmq::socket_type::router, 0);
  // Clients show they are alive with pings of their own (a heartbeat a
  // second to every client would cost more than the clients' traffic).
  clients_.set(zmq::sockopt::heartbeat_ivl, 0);
  // The I/O threads after the first (DaemonMain makes io-threads more for
  // frontd): the clients' CURVE never holds up the cell's own traffic.
  clients_.set(zmq::sockopt::affinity, ((uint64_t{1} << client_threads_) - 1) << 1);
  connections_ = std::make_unique<ConnectionCount>(ctx_, clients_);
  keys_.SetAdmission([this]() -> std::string {
    if (connections_->Update() <= max_clients_) return "";
    ++clients_refused_;
    return "too many clients on this frontd (max-clients " +
           std::to_string(max_clients_) + "); try again later";
  });
  Status ks = keys_.Start(ctx_);
  if (!ks.ok()) return ks;
  clients_.set(zmq::sockopt::router_mandatory, 1);
  clients_.set(zmq::sockopt::sndhwm, kClientHwm);
  clients_.set(zmq::sockopt::rcvhwm, kClientHwm);
  SetCurveServer(clients_, keys_.identity(), kZapDomainClients, listen_);
  routed_socket_ = MakeSocket(ctx_, zmq::socket_type::dealer);
  routed_socket_.set(zmq::sockopt::immediate, 1);
  events_ = MakeSocket(ctx_, zmq::socket_type::sub, 0);
  watch_ = std::make_unique<HandshakeWatch>(ctx_);
  watch_->Add(routed_socket_, "routed");
  watch_->Add(events_, "notifyd");
  try {
    PrepareEndpoint(listen_);
    clients_.bind(listen_);
    for (const auto& ep : routed_) {
      ks = ConnectTo(routed_socket_, keys_.identity(), ep);
      if (!ks.ok()) return ks;
    }
    for (const auto& ep : notifyd_) {
      ks = ConnectTo(events_, keys_.identity(), ep);
      if (!ks.ok()) return ks;
    }
  } catch (const zmq::error_t& e) {
    return Status(ErrorCode::kBadRequest, listen_ + ": " + e.what());
  }
  NLOG_INFO("event=listening listen=%s curve=%s token_keys=%zu max_clients=%zu",
            listen_.c_str(), keys_.identity().enabled ? "on" : "off",
            verifier_.key_count(), max_clients_);
  next_sweep_ = Clock::now() + std::chrono::seconds(1);
  return Status::Ok();
}

void Frontd::Reload() {
  keys_.Reload();
  // Sessions already made stay; new hellos use the keys read now.
  Status s = verifier_.LoadDir(token_keys_);
  if (s.ok()) {
    NLOG_INFO("event=token-keys-reloaded keys=%zu", verifier_.key_count());
  } else {
    NLOG_ERROR("event=token-keys-reload-failed error=\"%s\" kept=%zu",
               s.message().c_str(), verifier_.key_count());
  }
}

void Frontd::Stop() {
  // Take no new requests; pass on the answers to those in flight (for at
  // most five seconds), so that a clean stop leaves little to retry.
  auto until = Clock::now() + std::chrono::seconds(5);
  auto waiting = [this] {
    for (const auto& [identity, session] : sessions_) {
      if (!session.in_flight.empty()) return true;
    }
    return false;
  };
  while (waiting() && Clock::now() < until) {
    std::vector<zmq::pollitem_t> items = {
        {routed_socket_.handle(), 0, ZMQ_POLLIN, 0}};
    Poll(items, 50);
    if (items[0].revents & ZMQ_POLLIN) FromRouted();
  }
  size_t left = 0;
  for (const auto& [identity, session] : sessions_) left += session.in_flight.size();
  NLOG_INFO("event=drained sessions=%zu unanswered=%zu", sessions_.size(), left);
}

void Frontd::RunOnce(int timeout_ms) {
  std::vector<zmq::pollitem_t> items = {
      {clients_.handle(), 0, ZMQ_POLLIN, 0},
      {routed_socket_.handle(), 0, ZMQ_POLLIN, 0},
      {events_.handle(), 0, ZMQ_POLLIN, 0},
  };
  Poll(items, timeout_ms);
  // Work under way first (answers, events), new requests after: under
  // load, what the cell has done reaches the clients before more comes in,
  // so nothing done is thrown away for want of room.
  if (items[1].revents & ZMQ_POLLIN) FromRouted();
  if (items[2].revents & ZMQ_POLLIN) FromNotifyd();
  if (items[0].revents & ZMQ_POLLIN) FromClients();
  if (Clock::now() >= next_sweep_) ExpireSessions();
}

void Frontd::FromClients() {
  Parts parts;
  for (int n = 0; n < 1024 && RecvParts(clients_, &parts); ++n) {
    if (parts.size() != 2) continue;  // not a natter client
    FromClient(parts);
  }
}

void Frontd::FromClient(Parts& parts) {
  std::string identity = parts[0].to_string();
  Frame frame;
  Status s = DecodeFrame(parts[1].data(), parts[1].size(), &frame);
  if (!s.ok()) {
    Reply(identity, EncodeError(frame.header, s));
    return;
  }
  if (frame.type() == MsgType::kHello) {
    Hello(identity, frame);
    return;
  }
  auto it = sessions_.find(identity);
  if (it == sessions_.end()) {
    Reply(identity, EncodeError(frame.header,
                                Status(ErrorCode::kNoSession,
                                       "no session: say hello first")));
    return;
  }
  Session& session = it->second;
  session.last_heard = Clock::now();
  // A resend of a request still on its way is held back while the cell is
  // merely slow: passed on, it would only add load (an overloaded cell
  // answers late, its clients resend, and the resends overload it more).
  // Once the request has waited well past what answers take, it may have
  // been lost between daemons, and the resend goes on.
  auto earlier = session.in_flight.find(frame.header.corr);
  if (earlier != session.in_flight.end() &&
      session.last_heard - earlier->second < ResendHold()) {
    ++resends_held_;
    return;
  }
  Header h = frame.header;
  h.user = session.user;  // the token's user, whatever the client wrote
  h.device = session.device;
  h.trace = NewTrace(frame.header.trace != 0);
  std::string forward;
  switch (frame.type()) {
    case MsgType::kPing:
      h.trace = 0;
      Reply(identity, EncodeReply(h, MsgType::kPong, Empty()));
      return;
    case MsgType::kSend: {
      Send send;
      s = DecodeBody(frame, &send);
      if (s.ok()) s = ValidateSend(send);
      if (s.ok()) forward = EncodeFrame(h, send);
      break;
    }
    case MsgType::kSync: {
      Sync sync;
      s = DecodeBody(frame, &sync);
      sync.limit = std::clamp<uint32_t>(sync.limit, 1, kMaxSyncPage);
      if (s.ok()) forward = EncodeFrame(h, sync);
      break;
    }
    case MsgType::kAck: {
      Ack ack;
      s = DecodeBody(frame, &ack);
      if (s.ok()) forward = EncodeFrame(h, ack);
      break;
    }
    case MsgType::kReact: {
      React react;
      s = DecodeBody(frame, &react);
      if (s.ok()) s = ValidateReact(react);
      if (s.ok()) forward = EncodeFrame(h, react);
      break;
    }
    case MsgType::kSeen: {
      MarkSeen seen;
      s = DecodeBody(frame, &seen);
      if (s.ok() && seen.peer.value == 0) {
        s = Status(ErrorCode::kBadRequest, "the peer must be a user id above 0");
      }
      if (s.ok()) forward = EncodeFrame(h, seen);
      break;
    }
    case MsgType::kHistory: {
      History q;
      s = DecodeBody(frame, &q);
      if (s.ok() && q.peer.value == 0) {
        s = Status(ErrorCode::kBadRequest, "the peer must be a user id above 0");
      }
      if (s.ok() && q.mode > static_cast<uint8_t>(HistoryMode::kAfter)) {
        s = Status(ErrorCode::kBadRequest, "unknown history mode");
      }
      if (q.limit == 0) q.limit = kDefaultHistoryPage;
      q.limit = std::min(q.limit, kMaxHistoryPage);
      if (s.ok()) forward = EncodeFrame(h, q);
      break;
    }
    case MsgType::kChats: {
      Chats chats;
      s = DecodeBody(frame, &chats);
      if (s.ok()) forward = EncodeFrame(h, chats);
      break;
    }
    default:
      s = Status(ErrorCode::kBadRequest, std::string("not a client request: ") +
                                             MsgTypeName(frame.type()));
  }
  if (s.ok() && session.in_flight.size() >= max_in_flight_ &&
      !session.in_flight.count(h.corr)) {
    s = Status(ErrorCode::kBusy, "too many requests in flight (" +
                                     std::to_string(max_in_flight_) +
                                     "); wait for their answers");
  }
  if (!s.ok()) {
    ++refused_;
    NLOG_TRACE(h.trace, "event=refused type=%s user=%llu error=\"%s\"", MsgTypeName(frame.type()),
               static_cast<unsigned long long>(h.user.value), s.ToString().c_str());
    Reply(identity, EncodeError(h, s));
    return;
  }
  NLOG_TRACE(h.trace, "event=request type=%s user=%llu device=%s corr=%llu",
             MsgTypeName(frame.type()), static_cast<unsigned long long>(h.user.value),
             h.device.c_str(), static_cast<unsigned long long>(h.corr));
  Parts out;
  out.push_back(ToMessage(identity));
  out.push_back(ToMessage(forward));
  if (!SendParts(routed_socket_, out)) {
    Reply(identity, EncodeError(h, Status(ErrorCode::kUnavailable,
                                          "routed is not reachable")));
    return;
  }
  session.in_flight[h.corr] = session.last_heard;
  ++requests_;
}

uint64_t Frontd::NewTrace(bool loud) {
  if (trace_prefix_ == 0) {
    uint32_t r;
    randombytes_buf(&r, sizeof r);
    trace_prefix_ = static_cast<uint64_t>((r & 0x7fffffffu) | 1u) << 32;
  }
  return trace_prefix_ | ++trace_next_ | (loud ? kTraceLoud : 0);
}

void Frontd::Stats(MetricSet* set) {
  size_t in_flight = 0;
  for (const auto& [identity, session] : sessions_) in_flight += session.in_flight.size();
  set->Gauge("natter_frontd_sessions", "Client sessions (devices that said hello).",
             static_cast<double>(sessions_.size()));
  set->Gauge("natter_frontd_connections", "Client connections (also those not yet in a session).",
             static_cast<double>(connections_ ? connections_->current() : sessions_.size()));
  set->Counter("natter_frontd_clients_refused_total",
               "Connections refused because max-clients were connected.",
               static_cast<double>(clients_refused_.load()));
  set->Counter("natter_frontd_hellos_total", "Hellos (sessions begun).", static_cast<double>(hellos_));
  set->Counter("natter_frontd_requests_total", "Requests passed on to routed.",
               static_cast<double>(requests_));
  set->Counter("natter_frontd_refused_total", "Requests frontd answered with an error itself.",
               static_cast<double>(refused_));
  set->Counter("natter_frontd_answers_total", "Answers from the cell passed to clients.",
               static_cast<double>(answers_));
  set->Counter("natter_frontd_resends_held_total",
               "Resends of requests still on their way, held back while the cell is slow.",
               static_cast<double>(resends_held_));
  set->Counter("natter_frontd_events_total", "Events passed to devices.", static_cast<double>(events_sent_));
  set->Counter("natter_frontd_dropped_total",
               "Frames a client's full queue did not take (repaired from the mailbox or resent).",
               static_cast<double>(dropped_));
  set->Gauge("natter_frontd_in_flight", "Requests passed on and not yet answered.",
             static_cast<double>(in_flight));
  set->Gauge("natter_frontd_resend_hold_seconds", "How long a request waits before a resend of it goes on.",
             std::chrono::duration<double>(ResendHold()).count());
  set->Summary("natter_frontd_answer_seconds", "From a request passed on to its answer.",
               answer_latency_);
}

void Frontd::Hello(const std::string& identity, const Frame& frame) {
  natter::Hello hello;
  TokenClaims claims;
  Status s = DecodeBody(frame, &hello);
  if (s.ok()) {
    s = verifier_.Verify(hello.token, static_cast<uint64_t>(std::time(nullptr)),
                         &claims);
  }
  std::string device = hello.device;
  if (s.ok() && !claims.device.empty()) {
    if (device.empty()) device = claims.device;
    if (device != claims.device) {
      s = Status(ErrorCode::kForbidden,
                 "the token is for device " + claims.device);
    }
  }
  if (s.ok()) s = ValidateDevice(device);
  if (!s.ok()) {
    NLOG_INFO("event=hello-refused error=\"%s\"", s.ToString().c_str());
    Reply(identity, EncodeError(frame.header, s));
    return;
  }
  if (sessions_.count(identity)) EndSession(identity);
  sessions_[identity] = Session{claims.user, device, Clock::now(), {}};
  ++hellos_;
  auto& ids = by_user_[claims.user];
  if (ids.empty()) events_.set(zmq::sockopt::subscribe, TopicOf(claims.user));
  ids.push_back(identity);
  NLOG_DEBUG("event=session user=%llu device=%s",
             static_cast<unsigned long long>(claims.user.value), device.c_str());
  Welcome w;
  w.user = claims.user;
  w.device = device;
  w.expires = claims.expires;
  Header h = frame.header;
  h.user = claims.user;
  h.device = device;
  Reply(identity, EncodeReply(h, MsgType::kWelcome, w));
}

void Frontd::Reply(const std::string& identity, const std::string& frame) {
  Parts out;
  out.push_back(ToMessage(identity));
  out.push_back(ToMessage(frame));
  if (!SendParts(clients_, out)) {
    if (errno == EHOSTUNREACH) {
      EndSession(identity);
    } else {
      ++dropped_;
    }
  }
}

void Frontd::EndSession(const std::string& identity) {
  auto it = sessions_.find(identity);
  if (it == sessions_.end()) return;
  UserId user = it->second.user;
  sessions_.erase(it);
  auto& ids = by_user_[user];
  ids.erase(std::remove(ids.begin(), ids.end(), identity), ids.end());
  if (ids.empty()) {
    by_user_.erase(user);
    events_.set(zmq::sockopt::unsubscribe, TopicOf(user));
  }
}

void Frontd::ExpireSessions() {
  auto now = Clock::now();
  next_sweep_ = now + std::chrono::seconds(1);
  std::vector<std::string> expired;
  for (auto& [identity, session] : sessions_) {
    if (now - session.last_heard > session_timeout_) expired.push_back(identity);
    // An answer lost on the way (a daemon restarted) frees its place.
    for (auto it = session.in_flight.begin(); it != session.in_flight.end();) {
      it = now - it->second > session_timeout_ ? session.in_flight.erase(it) : std::next(it);
    }
  }
  for (const auto& identity : expired) EndSession(identity);
}

Frontd::Clock::duration Frontd::ResendHold() const {
  return std::chrono::milliseconds(
      static_cast<int64_t>(std::clamp(4 * answer_ms_, 1000.0, 10000.0)));
}

void Frontd::FromRouted() {
  Parts parts;
  for (int n = 0; n < 4096 && RecvParts(routed_socket_, &parts); ++n) {
    if (parts.size() != 2) continue;
    std::string identity = parts[0].to_string();
    auto session = sessions_.find(identity);
    Frame reply;
    if (session != sessions_.end() &&
        DecodeFrame(parts[1].data(), parts[1].size(), &reply).ok()) {
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
                 MsgTypeName(reply.type()), static_cast<unsigned long long>(reply.header.user.value),
                 static_cast<unsigned long long>(reply.header.corr));
    }
    ++answers_;
    if (!SendParts(clients_, parts)) {
      if (errno == EHOSTUNREACH) {
        EndSession(identity);
      } else {
        ++dropped_;
      }
    }
  }
}

void Frontd::FromNotifyd() {
  Parts parts;
  for (int n = 0; n < 4096 && RecvParts(events_, &parts); ++n) {
    if (parts.size() != 2 || parts[0].size() != 8) continue;
    Frame frame;
    if (!DecodeFrame(parts[1].data(), parts[1].size(), &frame).ok()) continue;
    auto it = by_user_.find(frame.header.user);
    if (it == by_user_.end()) continue;
    // Copy: a failed send ends a session and edits the list.
    std::vector<std::string> ids = it->second;
    for (const std::string& identity : ids) {
      auto s = sessions_.find(identity);
      if (s == sessions_.end()) continue;
      // The device that caused an event has its answer already.
      if (!frame.header.device.empty() &&
          s->second.device == frame.header.device) {
        continue;
      }
      NLOG_TRACE(frame.header.trace, "event=event user=%llu device=%s",
                 static_cast<unsigned long long>(frame.header.user.value),
                 s->second.device.c_str());
      ++events_sent_;
      Reply(identity, parts[1].to_string());
    }
  }
}

}  // namespace frontd
}  // namespace natter

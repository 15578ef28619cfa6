#include "daemons/frontd/gate.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "common/endian.h"
#include "common/log.h"
#include "common/net.h"

namespace natter {
namespace frontd {
namespace {

// Connections refused politely (a ZMTP ERROR) past max_clients, at most;
// beyond these a new connection is closed at once.
constexpr size_t kRefusalHeadroom = 64;
// How long a refusal has to reach the client before the connection closes.
constexpr auto kRefusalGrace = std::chrono::milliseconds(200);
// The longest TTL a PING asks for (libzmq multiplies it into 16 bits of ms).
constexpr uint16_t kMaxPingTtlDs = 600;

}  // namespace

ClientGate::ClientGate(const Limits& limits, const CurveIdentity& identity)
    : limits_(limits), identity_(identity) {}

ClientGate::~ClientGate() = default;

Status ClientGate::Bind(const std::string& endpoint) {
  PrepareEndpoint(endpoint);
  return stream_.Bind(endpoint);
}

void ClientGate::Read(std::vector<Request>* requests) {
  now_ = Clock::now();
  StreamServer::Handlers handlers;
  handlers.opened = [this](ConnId id, const std::string& address) {
    Open(id, address);
  };
  handlers.data = [this, requests](ConnId id, std::string_view bytes) {
    auto known = conns_.find(id);
    if (known != conns_.end()) Receive(&known->second, bytes, requests);
  };
  handlers.closed = [this](ConnId id) {
    auto known = conns_.find(id);
    if (known != conns_.end()) Forget(&known->second);
  };
  stream_.Poll(handlers);
}

void ClientGate::Open(ConnId id, const std::string& address) {
  ++accepted_;
  if (conns_.size() >= limits_.max_clients + kRefusalHeadroom) {
    ++refused_full_;
    stream_.Close(id);
    return;
  }
  Conn& c = conns_[id];
  c.id = id;
  c.address = address;
  c.opened = c.last_heard = c.last_ping = now_;
  ZmtpServer::Options options;
  options.identity = identity_;
  options.max_message = limits_.max_message;
  c.zmtp = std::make_unique<ZmtpServer>(options);
  std::string greeting;
  c.zmtp->Start(&greeting);
  // Told in the handshake, so the client knows it is busy, not broken;
  // handshake_rate's bucket is spent only on those otherwise admitted.
  uint64_t* refused = !taking_                              ? &refused_draining_
                      : conns_.size() > limits_.max_clients ? &refused_full_
                      : !Admit()                            ? &refused_rate_
                                                            : nullptr;
  if (refused != nullptr) {
    ++*refused;
    c.zmtp->Refuse("300");
    c.refused = true;
    CloseAt(&c, now_ + limits_.hello_timeout);
  } else {
    AddPending(&c);
  }
  Queue(&c, greeting);
}

bool ClientGate::Admit() {
  if (limits_.handshake_rate == 0) return true;
  const double rate = static_cast<double>(limits_.handshake_rate);
  const double seconds =
      std::chrono::duration<double>(now_ - admitted_at_).count();
  admissions_ = std::min(rate, admissions_ + std::max(seconds, 0.0) * rate);
  admitted_at_ = now_;
  if (admissions_ < 1) return false;
  admissions_ -= 1;
  return true;
}

void ClientGate::AddPending(Conn* c) {
  if (!c->address.empty()) {
    // Looked up each time: closing the last one removes the address's set.
    for (auto mine = pending_by_address_.find(c->address);
         mine != pending_by_address_.end() &&
         mine->second.size() >= limits_.max_pending_per_address;
         mine = pending_by_address_.find(c->address)) {
      ++closed_evicted_;
      Close(*mine->second.begin(),
            "evicted: the oldest pending connection of its address");
    }
  }
  while (!pending_.empty() && pending_.size() >= limits_.max_pending) {
    ++closed_evicted_;
    Close(*pending_.begin(), "evicted: the oldest pending connection");
  }
  pending_.insert(c->id);
  if (!c->address.empty()) pending_by_address_[c->address].insert(c->id);
}

void ClientGate::RemovePending(Conn* c) {
  if (pending_.erase(c->id) == 0) return;
  if (c->address.empty()) return;
  auto it = pending_by_address_.find(c->address);
  if (it == pending_by_address_.end()) return;
  it->second.erase(c->id);
  if (it->second.empty()) pending_by_address_.erase(it);
}

void ClientGate::SetSession(ConnId conn, bool has_session) {
  auto it = conns_.find(conn);
  if (it == conns_.end() || it->second.has_session == has_session) return;
  Conn& c = it->second;
  c.has_session = has_session;
  if (has_session) {
    RemovePending(&c);
  } else {
    // Without a session again (its token ended): as new, it has
    // hello_timeout to say hello.
    c.opened = now_;
    AddPending(&c);
  }
}

void ClientGate::Receive(Conn* c, std::string_view bytes,
                         std::vector<Request>* requests) {
  c->last_heard = now_;
  // A refusal costs nothing to send; a handshake's crypto waits its turn.
  if (c->refused || c->zmtp->ready()) {
    Feed(c, bytes, requests);
    return;
  }
  if (c->held.size() + bytes.size() > ZmtpServer::kMaxHandshakeBytes) {
    ++closed_protocol_;
    Close(c->id, "protocol: more bytes than a handshake has");
    return;
  }
  c->held.append(bytes);
  if (!c->holding) {
    c->holding = true;
    (c->zmtp->welcomed() ? finishing_ : handshakes_).push_back(c->id);
  }
}

void ClientGate::Handshake(std::vector<Request>* requests,
                           Clock::time_point deadline) {
  now_ = Clock::now();
  bool first = true;
  while (!finishing_.empty() || !handshakes_.empty()) {
    if (!first && Clock::now() >= deadline) break;
    std::deque<ConnId>& queue = finishing_.empty() ? handshakes_ : finishing_;
    const ConnId id = queue.front();
    queue.pop_front();
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;  // closed while it waited
    first = false;
    Conn& c = it->second;
    c.holding = false;
    std::string held;
    held.swap(c.held);
    Feed(&c, held, requests);
  }
}

void ClientGate::Feed(Conn* c, std::string_view bytes,
                      std::vector<Request>* requests) {
  std::string out;
  std::vector<ZmtpMessage> messages;
  const bool ok = c->zmtp->Feed(bytes, &out, &messages);
  if (!out.empty()) {
    Queue(c, out);
    if (c->out.size() > limits_.max_queued) {
      // PONGs for PINGs of a client that reads nothing: bounded as any
      // answer (Send).
      ++closed_not_reading_;
      NLOG_INFO(
          "event=client-cut-off conn=%llu address=%s queued=%zu "
          "reason=not-reading",
          static_cast<unsigned long long>(c->id), LogValue(c->address).c_str(),
          c->out.size());
      Close(c->id, "not reading");
      return;
    }
  }
  for (ZmtpMessage& m : messages) {
    requests->push_back(Request{c->id, std::move(m.body), m.frames});
  }
  if (ok) return;
  if (c->refused) {
    // The ERROR is on its way; the connection closes once it has gone.
    CloseAt(c, now_ + kRefusalGrace);
    return;
  }
  ++closed_protocol_;
  NLOG_DEBUG("event=client-refused conn=%llu address=%s error=%s",
             static_cast<unsigned long long>(c->id),
             LogValue(c->address).c_str(), LogValue(c->zmtp->error()).c_str());
  Close(c->id, "protocol");
}

void ClientGate::Queue(Conn* c, std::string_view bytes) {
  c->out.append(bytes);
  if (!c->queued) {
    c->queued = true;
    flush_.push_back(c->id);
  }
}

bool ClientGate::Send(ConnId conn, std::string_view message) {
  auto it = conns_.find(conn);
  if (it == conns_.end() || !it->second.zmtp->ready()) return false;
  Conn& c = it->second;
  std::string sealed;
  c.zmtp->Encode(message, &sealed);
  Queue(&c, sealed);
  // Large amounts go to the kernel at once, so the budget below counts
  // only what it would not take.
  if (c.out.size() >= kChunkBytes && !FlushOne(&c)) return false;
  if (c.out.size() > limits_.max_queued) {
    ++closed_not_reading_;
    NLOG_INFO(
        "event=client-cut-off conn=%llu address=%s queued=%zu "
        "reason=not-reading",
        static_cast<unsigned long long>(conn), LogValue(c.address).c_str(),
        c.out.size());
    Close(conn, "not reading");
    return false;
  }
  return true;
}

bool ClientGate::FlushOne(Conn* c) {
  size_t done = 0;
  while (done < c->out.size()) {
    const ssize_t sent =
        stream_.Write(c->id, c->out.data() + done, c->out.size() - done);
    if (sent < 0) {
      Forget(c);
      return false;
    }
    if (sent == 0) break;
    done += static_cast<size_t>(sent);
  }
  c->out.erase(0, done);
  if (!c->out.empty()) {
    blocked_.insert(c->id);
    return true;
  }
  blocked_.erase(c->id);
  return true;
}

void ClientGate::Flush() {
  std::vector<ConnId> due;
  due.swap(flush_);
  due.insert(due.end(), blocked_.begin(), blocked_.end());
  for (ConnId id : due) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    it->second.queued = false;
    FlushOne(&it->second);
  }
}

void ClientGate::Close(ConnId conn, const char* why) {
  auto it = conns_.find(conn);
  if (it == conns_.end()) return;
  NLOG_DEBUG("event=client-closed conn=%llu address=%s reason=%s",
             static_cast<unsigned long long>(conn),
             LogValue(it->second.address).c_str(), LogValue(why).c_str());
  Forget(&it->second);
}

void ClientGate::Forget(Conn* c) {
  const ConnId id = c->id;
  stream_.Close(id);
  closing_.erase(id);
  RemovePending(c);
  blocked_.erase(id);
  closed_.push_back(id);
  conns_.erase(id);  // c is gone from here on
}

void ClientGate::CloseAt(Conn* c, Clock::time_point at) {
  auto [it, fresh] = closing_.emplace(c->id, at);
  if (!fresh) it->second = std::min(it->second, at);
}

std::vector<ConnId> ClientGate::TakeClosed() {
  std::vector<ConnId> out;
  out.swap(closed_);
  return out;
}

void ClientGate::Tick(Clock::time_point now) {
  now_ = now;
  stream_.Resume();  // after a pause for want of descriptors
  std::vector<std::pair<ConnId, const char*>> due;
  for (const auto& [id, at] : closing_) {
    if (now >= at) due.emplace_back(id, "refused");
  }
  if (now >= next_sweep_) {
    next_sweep_ = now + std::chrono::seconds(1);
    const auto ping_after = limits_.idle_timeout / 2;
    const auto idle_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             limits_.idle_timeout)
                             .count();
    const uint16_t ttl_ds =
        static_cast<uint16_t>(std::min<int64_t>(kMaxPingTtlDs, idle_ms / 100));
    for (auto& [id, c] : conns_) {
      if (closing_.count(id)) continue;
      if (!c.has_session && now - c.opened > limits_.hello_timeout) {
        ++closed_hello_;
        due.emplace_back(id, "no hello in time");
      } else if (now - c.last_heard > limits_.idle_timeout) {
        ++closed_idle_;
        due.emplace_back(id, "silent");
      } else if (c.zmtp->ready() && c.zmtp->heartbeats() &&
                 now - c.last_heard > ping_after &&
                 now - c.last_ping > ping_after) {
        std::string ping;
        c.zmtp->Ping(ttl_ds, &ping);
        c.last_ping = now;
        ++pings_;
        Queue(&c, ping);
      }
    }
  }
  for (const auto& [id, why] : due) Close(id, why);
}

int ClientGate::NextTickMs(Clock::time_point now) const {
  if (handshakes_waiting() != 0) return 0;
  if (!blocked_.empty()) return 5;
  if (!stream_.accepting()) return 50;  // until it accepts again
  if (!closing_.empty()) return 50;
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(next_sweep_ - now)
          .count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1000));
}

std::string ClientGate::Address(ConnId conn) const {
  auto it = conns_.find(conn);
  return it == conns_.end() ? std::string() : it->second.address;
}

const CurveKey* ClientGate::ClientKey(ConnId conn) const {
  auto it = conns_.find(conn);
  if (it == conns_.end() || !it->second.zmtp->ready()) return nullptr;
  return &it->second.zmtp->client_key();
}

void ClientGate::Stats(MetricSet* set) const {
  set->Gauge("natter_frontd_connections",
             "Client connections (also those not yet in a session).",
             static_cast<double>(conns_.size()));
  set->Gauge("natter_frontd_pending",
             "Client connections without a session yet.",
             static_cast<double>(pending_.size()));
  set->Gauge("natter_frontd_handshakes_waiting",
             "Connections whose handshake bytes wait behind the sessions.",
             static_cast<double>(handshakes_waiting()));
  set->Counter("natter_frontd_accepted_total", "Client connections accepted.",
               static_cast<double>(accepted_));
  set->Counter("natter_frontd_clients_refused_total",
               "Connections refused because max-clients were connected.",
               static_cast<double>(refused_full_));
  set->Counter("natter_frontd_refused_draining_total",
               "Connections refused busy while draining.",
               static_cast<double>(refused_draining_));
  set->Counter("natter_frontd_refused_rate_total",
               "Connections refused busy past handshake-rate.",
               static_cast<double>(refused_rate_));
  set->Counter("natter_frontd_closed_hello_total",
               "Connections closed for not saying hello within hello-timeout.",
               static_cast<double>(closed_hello_));
  set->Counter("natter_frontd_closed_idle_total",
               "Connections closed for silence (session-timeout, heartbeats "
               "unanswered).",
               static_cast<double>(closed_idle_));
  set->Counter(
      "natter_frontd_closed_evicted_total",
      "Pending connections closed to make room for newer ones (max-pending).",
      static_cast<double>(closed_evicted_));
  set->Counter(
      "natter_frontd_closed_not_reading_total",
      "Connections cut off for not reading what was sent to them (max-queued).",
      static_cast<double>(closed_not_reading_));
  set->Counter("natter_frontd_closed_protocol_total",
               "Connections closed for breaking ZMTP or CURVE.",
               static_cast<double>(closed_protocol_));
  set->Counter("natter_frontd_pings_total", "Heartbeats sent to quiet clients.",
               static_cast<double>(pings_));
}

}  // namespace frontd
}  // namespace natter

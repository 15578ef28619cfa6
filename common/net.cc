#include "common/net.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace natter {

zmq::socket_t MakeSocket(zmq::context_t& ctx, zmq::socket_type type,
                         int linger_ms, size_t max_frame_bytes) {
  zmq::socket_t s(ctx, type);
  s.set(zmq::sockopt::linger, linger_ms);
  s.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(max_frame_bytes));
  s.set(zmq::sockopt::sndhwm, kDaemonHwm);
  s.set(zmq::sockopt::rcvhwm, kDaemonHwm);
  // A connection that has not finished its handshake in this time is
  // closed: one that never speaks cannot hold a descriptor for long.
  s.set(zmq::sockopt::handshake_ivl, kHandshakeMs);
  // A peer that stops answering (its host or the network between went
  // away without closing the connection) is noticed within seconds: the
  // connection is closed, what was queued for it is given up (the senders
  // retry), and the socket's other peers take the load.
  s.set(zmq::sockopt::heartbeat_ivl, kHeartbeatMs);
  s.set(zmq::sockopt::heartbeat_timeout, kHeartbeatTimeoutMs);
  s.set(zmq::sockopt::heartbeat_ttl, kHeartbeatTimeoutMs);
  // The first I/O thread (a daemon's context has one).
  s.set(zmq::sockopt::affinity, uint64_t{1});
  return s;
}

zmq::socket_t MakeDaemonSocket(zmq::context_t& ctx, zmq::socket_type type,
                               int linger_ms) {
  return MakeSocket(ctx, type, linger_ms, kMaxDaemonFrameBytes);
}

int Poll(std::vector<zmq::pollitem_t>& items, long timeout_ms) {
  int rc = zmq_poll(items.data(), static_cast<int>(items.size()), timeout_ms);
  if (rc < 0) {
    if (zmq_errno() == EINTR) return 0;
    throw zmq::error_t();
  }
  return rc;
}

bool RecvParts(zmq::socket_t& socket, Parts* parts) {
  parts->clear();
  try {
    auto n = zmq::recv_multipart(socket, std::back_inserter(*parts),
                                 zmq::recv_flags::dontwait);
    return n.has_value() && *n > 0;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR || e.num() == EAGAIN) return false;
    throw;
  }
}

bool RecvMonitorEvent(zmq::socket_t& monitor, uint16_t* id, uint32_t* value,
                      std::string* address) {
  Parts event;
  while (RecvParts(monitor, &event)) {
    // Two frames: 2 bytes of id and 4 of value, then the endpoint.
    if (event.size() != 2 || event[0].size() < 6) continue;
    std::memcpy(id, event[0].data(), sizeof *id);
    std::memcpy(value, static_cast<const char*>(event[0].data()) + 2,
                sizeof *value);
    if (address != nullptr) *address = event[1].to_string();
    return true;
  }
  return false;
}

bool SendParts(zmq::socket_t& socket, Parts& parts) {
  try {
    auto n = zmq::send_multipart(socket, parts, zmq::send_flags::dontwait);
    return n.has_value();
  } catch (const zmq::error_t&) {
    return false;  // EHOSTUNREACH: the peer has gone
  }
}

bool SendRouted(zmq::socket_t& socket, const Parts& route, size_t route_len,
                const std::string& body) {
  Parts out;
  out.reserve(route_len + 1);
  for (size_t i = 0; i < route_len; ++i) {
    out.emplace_back(route[i].data(), route[i].size());
  }
  out.push_back(ToMessage(body));
  return SendParts(socket, out);
}

zmq::message_t ToMessage(const std::string& s) {
  return zmq::message_t(s.data(), s.size());
}

void Batches::Add(const Route& route, uint64_t key, std::string_view frame) {
  std::string& batch = batches_[route];
  if (BatchFull(batch, frame)) {
    sink_(route, batch);
    batch.clear();
  }
  AppendBatchEntry(&batch, key, frame);
}

void Batches::Flush() {
  // Taken first: a sink may add to another route (an answer to a batch
  // that could not go).
  std::map<Route, std::string> now;
  now.swap(batches_);
  for (const auto& [route, batch] : now) sink_(route, batch);
}

bool SendBatch(zmq::socket_t& socket, const Batches::Route& route,
               const std::string& batch) {
  Parts out;
  out.reserve(route.size() + 2);
  for (const std::string& r : route) out.push_back(ToMessage(r));
  out.push_back(zmq::message_t());
  out.push_back(ToMessage(batch));
  return SendParts(socket, out);
}

bool SplitBatch(const Parts& parts, size_t prefix, std::vector<Parts>* out) {
  if (parts.size() != prefix + 2 || parts[prefix].size() != 0) return false;
  const std::string_view batch(static_cast<const char*>(parts.back().data()),
                               parts.back().size());
  return ForEachBatchEntry(
      batch, [&](std::string_view key, std::string_view frame) {
        Parts one;
        one.reserve(prefix + 2);
        for (size_t i = 0; i < prefix; ++i)
          one.emplace_back(parts[i].data(), parts[i].size());
        one.emplace_back(key.data(), key.size());
        one.emplace_back(frame.data(), frame.size());
        out->push_back(std::move(one));
      });
}

namespace {

// The names ZeroMQ may give a tcp:// endpoint besides its own: once it has
// resolved a host name, its reconnection attempts carry the address.
std::vector<std::string> ResolvedNames(const std::string& address) {
  const std::string prefix = "tcp://";
  if (address.compare(0, prefix.size(), prefix) != 0) return {};
  std::string rest = address.substr(prefix.size());
  rest = rest.substr(rest.find(';') + 1);  // after a source address, if any
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos || rest[0] == '[') return {};
  std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0) return {};
  std::vector<std::string> names;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = "";
    const void* ip =
        a->ai_family == AF_INET6
            ? static_cast<const void*>(
                  &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr)
            : static_cast<const void*>(
                  &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr);
    if (::inet_ntop(a->ai_family, ip, text, sizeof text) == nullptr) continue;
    names.push_back(a->ai_family == AF_INET6 ? prefix + "[" + text + "]:" + port
                                             : prefix + text + ":" + port);
  }
  ::freeaddrinfo(found);
  return names;
}

}  // namespace

LinkWatch::~LinkWatch() {
  for (Watched& w : watched_) {
    if (w.monitor) zmq_socket_monitor(w.socket, nullptr, 0);
  }
}

void LinkWatch::Monitor(Watched& w, int events) {
  static std::atomic<int> counter{0};
  std::string endpoint = "inproc://natter-monitor-" + std::to_string(++counter);
  // Replaces the socket's monitor, if it had one.
  if (zmq_socket_monitor(w.socket, endpoint.c_str(), events) != 0)
    throw zmq::error_t();
  w.monitor = zmq::socket_t(ctx_, zmq::socket_type::pair);
  w.monitor.set(zmq::sockopt::linger, 0);
  w.monitor.set(zmq::sockopt::rcvhwm, 0);  // never drop an event
  w.monitor.connect(endpoint);
}

void LinkWatch::Add(zmq::socket_t& socket, const std::string& name) {
  Watched w;
  w.socket = socket.handle();
  w.name = name;
  // Only the first handshake, until the watch has links of the socket to
  // keep (the monitor is read only as long as someone calls Check).
  Monitor(w, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  watched_.push_back(std::move(w));
}

Status LinkWatch::Connect(zmq::socket_t& socket, const CurveIdentity& me,
                          const std::string& endpoint,
                          const std::string& routing_id) {
  auto w = std::find_if(
      watched_.begin(), watched_.end(),
      [&](const Watched& x) { return x.socket == socket.handle(); });
  if (w == watched_.end()) {
    return Status(ErrorCode::kInternal,
                  endpoint + ": connect a watched socket");
  }
  Endpoint parsed;
  Status s = ParseEndpoint(endpoint, &parsed);
  if (!s.ok()) return s;
  if (w->links.empty()) {
    Monitor(*w, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_DELAYED |
                    ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED |
                    ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                    ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                    ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  }
  if (!routing_id.empty()) {
    socket.set(zmq::sockopt::connect_routing_id, routing_id);
  }
  s = ConnectTo(socket, me, endpoint);
  if (!s.ok()) return s;
  Link link;
  link.routing_id = routing_id;
  link.current_id = routing_id;
  link.endpoint = endpoint;
  link.address = parsed.address;
  link.aliases = ResolvedNames(parsed.address);
  link.me = me;
  link.since = Clock::now();
  w->links.push_back(std::move(link));
  return Status::Ok();
}

void LinkWatch::Disconnect(zmq::socket_t& socket, const std::string& endpoint) {
  for (Watched& w : watched_) {
    if (w.socket != socket.handle()) continue;
    for (auto link = w.links.begin(); link != w.links.end(); ++link) {
      if (link->endpoint != endpoint) continue;
      zmq_disconnect(w.socket, link->address.c_str());  // may be gone already
      NLOG_INFO("event=unlinked link=%s endpoint=%s", w.name.c_str(),
                link->address.c_str());
      w.links.erase(link);
      return;
    }
  }
}

void LinkWatch::Take(Watched& w, uint16_t event, uint32_t value,
                     const std::string& address) {
  if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) w.connected = true;
  auto link = std::find_if(w.links.begin(), w.links.end(), [&](const Link& l) {
    return l.address == address || std::find(l.aliases.begin(), l.aliases.end(),
                                             address) != l.aliases.end();
  });
  if (link == w.links.end()) return;
  auto now = Clock::now();
  switch (event) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
      if (link->relinked) {
        NLOG_INFO("event=relinked link=%s endpoint=%s", w.name.c_str(),
                  link->address.c_str());
      }
      link->state = State::kUp;
      link->relinked = false;
      link->backoff_ms = 0;
      break;
    case ZMQ_EVENT_CONNECTED:
      link->fd = static_cast<int>(value);
      [[fallthrough]];
    case ZMQ_EVENT_CONNECT_DELAYED:
    case ZMQ_EVENT_CONNECT_RETRIED:
      if (link->state != State::kUp) link->state = State::kConnecting;
      break;
    case ZMQ_EVENT_DISCONNECTED:
      // The end of a connection replaced since (a re-link) says nothing.
      if (link->fd >= 0 && static_cast<int>(value) != link->fd) return;
      link->fd = -1;
      if (link->state == State::kDead) return;
      link->state = State::kDropped;
      link->relink_at = now + std::chrono::milliseconds(kRelinkGraceMs);
      break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      link->state = State::kDead;
      link->relink_at = now;
      break;
    default:
      return;
  }
  link->since = now;
}

void LinkWatch::Relink(Watched& w, Link& link, const char* reason) {
  auto now = Clock::now();
  ++relinks_;
  NLOG_WARN("event=relink link=%s endpoint=%s reason=%s down_ms=%lld",
            w.name.c_str(), link.address.c_str(), reason,
            static_cast<long long>(
                std::chrono::duration_cast<std::chrono::milliseconds>(
                    now - link.since)
                    .count()));
  zmq_disconnect(w.socket, link.address.c_str());  // may be gone already
  if (!link.routing_id.empty()) {
    link.current_id = link.routing_id + "." + std::to_string(++link.generation);
    zmq_setsockopt(w.socket, ZMQ_CONNECT_ROUTING_ID, link.current_id.data(),
                   link.current_id.size());
  }
  Status s = ConnectTo(zmq::socket_ref(zmq::from_handle, w.socket), link.me,
                       link.endpoint);
  if (!s.ok()) {
    NLOG_ERROR("event=relink-failed link=%s error=\"%s\"", w.name.c_str(),
               s.ToString().c_str());
  }
  link.state = State::kConnecting;
  link.relinked = true;
  link.fd = -1;
  link.since = now;
  link.not_before = now + std::chrono::milliseconds(link.backoff_ms);
  link.backoff_ms = std::clamp(link.backoff_ms * 2, 500, 30000);
}

void LinkWatch::Check() {
  for (Watched& w : watched_) {
    if (!w.monitor) continue;
    uint16_t id;
    uint32_t value;
    std::string address;
    while (RecvMonitorEvent(w.monitor, &id, &value, &address))
      Take(w, id, value, address);
    if (w.links.empty()) {
      // Not ours to keep up: only its first handshake mattered.
      if (w.connected) {
        zmq_socket_monitor(w.socket, nullptr, 0);
        w.monitor.close();
      }
      continue;
    }
    auto now = Clock::now();
    for (Link& link : w.links) {
      if (now < link.not_before) continue;
      if (link.state == State::kDead && now >= link.relink_at) {
        Relink(w, link, "handshake-failed");
      } else if (link.state == State::kDropped && now >= link.relink_at) {
        Relink(w, link, "not-reconnecting");
      } else if (link.state == State::kConnecting &&
                 now - link.since >= std::chrono::milliseconds(kLinkQuietMs)) {
        Relink(w, link, "quiet");
      }
    }
  }
}

bool LinkWatch::AllConnected() {
  Check();
  return std::all_of(watched_.begin(), watched_.end(),
                     [](const Watched& w) { return w.connected; });
}

std::string LinkWatch::RoutingId(const zmq::socket_t& socket,
                                 const std::string& endpoint) const {
  for (const Watched& w : watched_) {
    if (w.socket != socket.handle()) continue;
    for (const Link& link : w.links) {
      if (link.endpoint == endpoint) return link.current_id;
    }
  }
  return "";
}

bool LinkWatch::Up(const zmq::socket_t& socket,
                   const std::string& endpoint) const {
  for (const Watched& w : watched_) {
    if (w.socket != socket.handle()) continue;
    for (const Link& link : w.links) {
      if (link.endpoint == endpoint) return link.state == State::kUp;
    }
  }
  return false;
}

std::string LinkWatch::Waiting() const {
  std::string out;
  for (const Watched& w : watched_) {
    if (w.connected) continue;
    if (!out.empty()) out += ",";
    out += w.name;
  }
  return out;
}

void PrepareEndpoint(const std::string& endpoint) {
  const std::string prefix = "ipc://";
  if (endpoint.compare(0, prefix.size(), prefix) != 0) return;
  std::string path = endpoint.substr(prefix.size());
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return;
  ::mkdir(path.substr(0, slash).c_str(), 0700);
}

}  // namespace natter

#include "common/net.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "common/proto.h"

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
  // The first I/O thread: a daemon gives its other threads to clients
  // (frontd's io-threads), and sockets that say nothing go here.
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

bool RecvMonitorEvent(zmq::socket_t& monitor, uint16_t* id, uint32_t* value) {
  Parts event;
  while (RecvParts(monitor, &event)) {
    // Two frames: 2 bytes of id and 4 of value, then the endpoint.
    if (event.size() != 2 || event[0].size() < 6) continue;
    std::memcpy(id, event[0].data(), sizeof *id);
    std::memcpy(value, static_cast<const char*>(event[0].data()) + 2, sizeof *value);
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

HandshakeWatch::~HandshakeWatch() {
  for (Watched& w : watched_) {
    if (!w.connected) zmq_socket_monitor(w.socket, nullptr, 0);
  }
}

void HandshakeWatch::Add(zmq::socket_t& socket, const std::string& name) {
  static int counter = 0;
  std::string endpoint = "inproc://natter-monitor-" + std::to_string(++counter);
  if (zmq_socket_monitor(socket.handle(), endpoint.c_str(),
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0) {
    throw zmq::error_t();
  }
  Watched w{socket.handle(), name, zmq::socket_t(ctx_, zmq::socket_type::pair)};
  w.monitor.connect(endpoint);
  watched_.push_back(std::move(w));
}

bool HandshakeWatch::AllConnected() {
  bool all = true;
  for (Watched& w : watched_) {
    if (w.connected) continue;
    uint16_t id;
    uint32_t value;
    while (RecvMonitorEvent(w.monitor, &id, &value)) {
      if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) w.connected = true;
    }
    if (w.connected) {
      zmq_socket_monitor(w.socket, nullptr, 0);
      w.monitor.close();
    }
    all = all && w.connected;
  }
  return all;
}

std::string HandshakeWatch::Waiting() const {
  std::string out;
  for (const Watched& w : watched_) {
    if (w.connected) continue;
    if (!out.empty()) out += ",";
    out += w.name;
  }
  return out;
}

ConnectionCount::ConnectionCount(zmq::context_t& ctx, zmq::socket_t& socket)
    : socket_(socket.handle()) {
  static std::atomic<int> counter{0};
  std::string endpoint =
      "inproc://natter-connections-" + std::to_string(++counter);
  if (zmq_socket_monitor(socket_, endpoint.c_str(),
                         ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0) {
    throw zmq::error_t();
  }
  monitor_ = zmq::socket_t(ctx, zmq::socket_type::pair);
  monitor_.set(zmq::sockopt::linger, 0);
  monitor_.set(zmq::sockopt::rcvhwm, 0);  // never drop an event
  monitor_.connect(endpoint);
}

ConnectionCount::~ConnectionCount() { zmq_socket_monitor(socket_, nullptr, 0); }

size_t ConnectionCount::Update() {
  size_t n = count_.load();
  uint16_t id;
  uint32_t value;
  while (RecvMonitorEvent(monitor_, &id, &value)) {
    if (id == ZMQ_EVENT_ACCEPTED) ++n;
    if (id == ZMQ_EVENT_DISCONNECTED && n > 0) --n;
  }
  count_ = n;
  return n;
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

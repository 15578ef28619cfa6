// ZeroMQ helpers shared by the daemons and the client library.
#ifndef NATTER_COMMON_NET_H_
#define NATTER_COMMON_NET_H_

#include <atomic>
#include <string>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/proto.h"

namespace natter {

using Parts = std::vector<zmq::message_t>;

// How many messages a pipe between daemons may queue: one pipe carries the
// traffic of many clients, so bursts must fit (bounded: about 30 MB of
// typical frames).
constexpr int kDaemonHwm = 100000;
// How many a frontd queues for one client (about 0.5 MB of events): a
// device that does not read loses live events past it and repairs them
// from its mailbox; a reply lost so is retried.
constexpr int kClientHwm = 1000;

// How long a new connection has to complete its ZMTP (and CURVE)
// handshake (ZeroMQ's default is 30 s).
constexpr int kHandshakeMs = 10000;

// Daemon connections ping each other this often (ZMTP heartbeats) and
// close a connection whose peer has not answered for kHeartbeatTimeoutMs.
constexpr int kHeartbeatMs = 1000;
constexpr int kHeartbeatTimeoutMs = 3000;

// A socket with natter's defaults: no linger past close (beyond a short
// grace), frames up to max_frame_bytes (a larger one ends the connection
// that sent it), kDaemonHwm in each direction, a kHandshakeMs handshake,
// heartbeats.
zmq::socket_t MakeSocket(zmq::context_t& ctx, zmq::socket_type type,
                         int linger_ms = 200,
                         size_t max_frame_bytes = kMaxClientFrameBytes);
// The same for a socket between daemons: frames up to kMaxDaemonFrameBytes,
// more than the cell makes, so that no hop refuses one of its frames.
zmq::socket_t MakeDaemonSocket(zmq::context_t& ctx, zmq::socket_type type,
                               int linger_ms = 200);

// zmq_poll that returns 0 on EINTR (a signal arrived) instead of throwing.
int Poll(std::vector<zmq::pollitem_t>& items, long timeout_ms);

// Receives one multipart message without waiting; false when none.
bool RecvParts(zmq::socket_t& socket, Parts* parts);

// Reads one event from a socket monitor's PAIR socket without waiting: its
// id (ZMQ_EVENT_*) and value; false when there is none.  Malformed events
// are skipped.
bool RecvMonitorEvent(zmq::socket_t& monitor, uint16_t* id, uint32_t* value);

// Sends without waiting; false when it would block (HWM) or the peer is
// gone (ROUTER_MANDATORY).  Never throws.
bool SendParts(zmq::socket_t& socket, Parts& parts);

// Sends routing frames (all parts but the last of `route`) then a body.
bool SendRouted(zmq::socket_t& socket, const Parts& route, size_t route_len,
                const std::string& body);

zmq::message_t ToMessage(const std::string& s);

// Watches connecting sockets until each has completed a ZMTP handshake with
// at least one peer (a socket monitor per socket).  A daemon is ready to
// serve only then: before, a DEALER with ZMQ_IMMEDIATE refuses to send.
class HandshakeWatch {
 public:
  explicit HandshakeWatch(zmq::context_t& ctx) : ctx_(ctx) {}
  ~HandshakeWatch();
  void Add(zmq::socket_t& socket, const std::string& name);
  // Reads the monitors' events; true once every socket has had a handshake.
  bool AllConnected();
  // The names of the sockets still waiting.
  std::string Waiting() const;

 private:
  struct Watched {
    void* socket;
    std::string name;
    zmq::socket_t monitor;
    bool connected = false;
  };
  zmq::context_t& ctx_;
  std::vector<Watched> watched_;
};

// Counts the connections a binding socket has (accepted and not yet
// closed), from a socket monitor.  Update reads the monitor's events and is
// for one thread at a time; current() may be read from any.
class ConnectionCount {
 public:
  ConnectionCount(zmq::context_t& ctx, zmq::socket_t& socket);
  ~ConnectionCount();
  size_t Update();
  size_t current() const { return count_.load(); }

 private:
  void* socket_;
  zmq::socket_t monitor_;
  std::atomic<size_t> count_{0};
};

// Creates the folder of an ipc:// endpoint if it lacks one.
void PrepareEndpoint(const std::string& endpoint);

}  // namespace natter

#endif  // NATTER_COMMON_NET_H_

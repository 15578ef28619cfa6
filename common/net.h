// ZeroMQ helpers shared by the daemons and the client library.
#ifndef NATTER_COMMON_NET_H_
#define NATTER_COMMON_NET_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/curve.h"
#include "common/proto.h"
#include "common/status.h"

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
// id (ZMQ_EVENT_*), value and, if asked, the endpoint it concerns; false
// when there is none.  Malformed events are skipped.
bool RecvMonitorEvent(zmq::socket_t& monitor, uint16_t* id, uint32_t* value,
                      std::string* address = nullptr);

// Sends without waiting; false when it would block (HWM) or the peer is
// gone (ROUTER_MANDATORY).  Never throws.
bool SendParts(zmq::socket_t& socket, Parts& parts);

// Sends routing frames (all parts but the last of `route`) then a body.
bool SendRouted(zmq::socket_t& socket, const Parts& route, size_t route_len,
                const std::string& body);

zmq::message_t ToMessage(const std::string& s);

// Frames bound for the peers of one socket, gathered while a turn of a
// daemon's loop runs and sent as proto.h's batches: one message (one
// CurveZMQ box) a route, [route..., empty, batch].  Nothing waits for a
// batch to fill: the owner flushes at the end of every turn.  Entries of
// one route keep their order.
class Batches {
 public:
  // The routing frames before [empty, batch]: whom the batch goes to.
  using Route = std::vector<std::string>;
  // Sends one batch; handles a batch its socket does not take.
  using Sink =
      std::function<void(const Route& route, const std::string& batch)>;
  explicit Batches(Sink sink) : sink_(std::move(sink)) {}

  // Adds an entry to the route's batch; a batch it would take past
  // kBatchBytes goes first.
  void Add(const Route& route, uint64_t key, std::string_view frame);
  // Sends every batch.
  void Flush();
  bool empty() const { return batches_.empty(); }

 private:
  Sink sink_;
  std::map<Route, std::string> batches_;
};

// Sends [route..., empty, batch]; false as SendParts.
bool SendBatch(zmq::socket_t& socket, const Batches::Route& route,
               const std::string& batch);

// The entries of a batch that arrived as [prefix parts..., empty, batch],
// each made a request of its own, [prefix parts..., key, frame], as if it
// had come alone; false if parts is not a batch (then nothing is added)
// or the batch is malformed (the entries before the fault are added).
// `prefix` is how many routing parts come before the empty one.
bool SplitBatch(const Parts& parts, size_t prefix, std::vector<Parts>* out);

// Keeps a daemon's connecting sockets linked to their peers, for the
// daemon's whole life, through a socket monitor each.
//
// ZeroMQ connects again by itself when a connection closes, but not after a
// protocol error: a frame over the socket's ZMQ_MAXMSGSIZE, a bad greeting,
// a refused or failed CURVE handshake end that endpoint's session for good,
// and the socket never reaches that peer again.  The watch sees it — the
// connection ended and ZeroMQ made no new attempt within kRelinkGraceMs, or
// a link has been down with no attempt for kLinkQuietMs — and connects the
// endpoint again (zmq_disconnect, then ConnectTo with the endpoint's own
// server key), backing off from 0.5 up to 30 s while attempts fail.  Each
// re-link is logged (event=relink).
//
// A daemon is ready to serve once every socket has completed a handshake
// with at least one peer (AllConnected): before, a DEALER with
// ZMQ_IMMEDIATE refuses to send.
//
// Not thread-safe: the daemon's thread calls Check each turn.  A socket
// Added but never given an endpoint through Connect is watched only until
// its first handshake.
class LinkWatch {
 public:
  static constexpr int kRelinkGraceMs = 1000;
  static constexpr int kLinkQuietMs = 10000;

  explicit LinkWatch(zmq::context_t& ctx) : ctx_(ctx) {}
  ~LinkWatch();
  LinkWatch(const LinkWatch&) = delete;
  LinkWatch& operator=(const LinkWatch&) = delete;

  // Watches socket (named for the log); before its Connects.
  void Add(zmq::socket_t& socket, const std::string& name);
  // Connects an Added socket to endpoint, as ConnectTo does, and keeps that
  // link up from now on.  A ROUTER may name the peer (ZMQ_CONNECT_ROUTING_ID)
  // to address it by that name; each re-link names it anew (the name, a
  // dot, a count: the old pipe may still hold the old name), and RoutingId
  // tells the name in use.
  Status Connect(zmq::socket_t& socket, const CurveIdentity& me,
                 const std::string& endpoint,
                 const std::string& routing_id = "");
  // Ends the link to endpoint (Connect's) and stops keeping it up.
  void Disconnect(zmq::socket_t& socket, const std::string& endpoint);
  // Reads the monitors' events and connects again the links that need it.
  void Check();
  // Check, then: true once every socket has had a handshake.
  bool AllConnected();
  // The names of the sockets still waiting for their first handshake.
  std::string Waiting() const;
  // The name the peer at endpoint has now on a ROUTER socket (Connect's
  // routing_id); empty if none.
  std::string RoutingId(const zmq::socket_t& socket,
                        const std::string& endpoint) const;
  // Whether the link to endpoint has finished its handshake and not
  // dropped since.
  bool Up(const zmq::socket_t& socket, const std::string& endpoint) const;
  // Re-links made, ever (a metric).
  uint64_t relinks() const { return relinks_; }

 private:
  using Clock = std::chrono::steady_clock;
  enum class State {
    kConnecting,  // ZeroMQ is trying (or has just been told to)
    kUp,          // handshake done
    kDropped,     // ended; ZeroMQ should try again within the grace
    kDead,        // ended for a handshake failure: ZeroMQ will not try
  };
  struct Link {
    std::string endpoint;  // as configured (may name the server's key)
    std::string address;   // as ZeroMQ names it
    std::vector<std::string> aliases;  // a tcp host name, resolved
    CurveIdentity me;
    std::string routing_id;  // the peer's name on a ROUTER, if any
    std::string current_id;  // that name as now set (after re-links)
    uint64_t generation = 0;
    State state = State::kConnecting;
    int fd = -1;                   // of the connection ZeroMQ reported last
    Clock::time_point since;       // the last change or attempt
    Clock::time_point relink_at;   // kDropped, kDead: connect again then
    Clock::time_point not_before;  // the backoff
    int backoff_ms = 0;
    bool relinked = false;  // connected again, not yet up
  };
  struct Watched {
    void* socket = nullptr;
    std::string name;
    zmq::socket_t monitor;
    bool connected = false;  // has had a handshake
    std::vector<Link> links;
  };

  // (Re)starts w's monitor for these ZMQ_EVENT_*s.
  void Monitor(Watched& w, int events);
  void Take(Watched& w, uint16_t event, uint32_t value,
            const std::string& address);
  void Relink(Watched& w, Link& link, const char* reason);

  zmq::context_t& ctx_;
  std::vector<Watched> watched_;
  uint64_t relinks_ = 0;
};

// Creates the folder of an ipc:// endpoint if it lacks one.
void PrepareEndpoint(const std::string& endpoint);

}  // namespace natter

#endif  // NATTER_COMMON_NET_H_

// The clients' side of frontd: a StreamServer listening at frontd's listen
// endpoint (stream.h: the connections' bytes, read and written by frontd's
// own thread), a ZmtpServer for each connection on it (the ZMTP and CURVE
// handshake, then messages), and every limit on what a connection may hold.
//
// A connection is named by a ConnId that frontd gives it and never reuses:
// no client chooses or learns it, and whatever a client sends cannot reach
// another connection.  Sessions (frontd.h) are made per connection and go
// with it.
//
// Limits, all in bytes or counts, none left to the client:
//   - at most max_clients connections; past them a new client's handshake
//     is refused with a ZMTP ERROR "300" (libzmq reports the handshake
//     refused, natter's client says busy), and far past them it is closed;
//   - connections that have no session yet ("pending") are bounded apart:
//     at most max_pending in all and max_pending_per_address from one
//     network address, the oldest closed to make room for a new one, and
//     each closed unless it has a session within hello_timeout;
//   - a connection silent for idle_timeout is closed; one silent for half
//     of it is sent a ZMTP PING (RFC 37), which libzmq answers by itself;
//   - a handshake's bytes wait apart (at most
//     ZmtpServer::kMaxHandshakeBytes a connection) and are worked through
//     after the connections in a session are served, a slice of time a
//     turn (kHandshakeSlice): a storm of new clients slows the handshakes,
//     not the clients already connected;
//   - a request is at most max_message bytes (a longer frame closes the
//     connection before it is read);
//   - at most max_queued bytes wait for one connection beyond what its
//     socket's kernel buffer holds: a client that does not read is cut
//     off, not fed.
//
// Not thread-safe: frontd's thread drives it.
#ifndef NATTER_DAEMONS_FRONTD_GATE_H_
#define NATTER_DAEMONS_FRONTD_GATE_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/metrics.h"
#include "common/status.h"
#include "daemons/frontd/stream.h"
#include "daemons/frontd/zmtp.h"

namespace natter {
namespace frontd {

using ConnId = uint64_t;

class ClientGate {
 public:
  using Clock = std::chrono::steady_clock;

  struct Limits {
    size_t max_clients = 1000;
    size_t max_pending = 1024;
    size_t max_pending_per_address = 32;
    Clock::duration hello_timeout = std::chrono::seconds(5);
    Clock::duration idle_timeout = std::chrono::seconds(60);
    size_t max_queued = 1 << 20;
    size_t max_message = 16 * 1024;
    // New connections admitted a second (as many at once), the rest
    // refused busy in their handshake: a storm of reconnecting clients is
    // let in at a pace that keeps the connected ones served.  0: no limit.
    uint64_t handshake_rate = 0;
  };

  // One whole request from a connection with a finished handshake.
  struct Request {
    ConnId conn = 0;
    std::string body;
    size_t frames = 0;  // natter requests are one
  };

  // What a connection may queue before it is handed to the kernel at once.
  static constexpr size_t kChunkBytes = 64 * 1024;
  // The time a turn gives to handshakes while others wait.
  static constexpr Clock::duration kHandshakeSlice =
      std::chrono::milliseconds(2);

  ClientGate(const Limits& limits, const CurveIdentity& identity);
  ~ClientGate();

  // Listens at the endpoint (tcp:// or ipc://).
  Status Bind(const std::string& endpoint);
  zmq::pollitem_t PollItem() { return {nullptr, stream_.fd(), ZMQ_POLLIN, 0}; }

  // Reads what has arrived (a bounded amount) and appends whole requests
  // of connections whose handshake is done; a handshake's bytes are kept
  // for Handshake.
  void Read(std::vector<Request>* requests);
  // Works through the handshakes waiting (those furthest on first) until
  // deadline, at least one; appends requests that came with them.  Once a
  // turn, after what Read gave is served.
  void Handshake(std::vector<Request>* requests, Clock::time_point deadline);
  // The usual deadline: kHandshakeSlice from now.
  void Handshake(std::vector<Request>* requests) {
    Handshake(requests, Clock::now() + kHandshakeSlice);
  }
  size_t handshakes_waiting() const {
    return handshakes_.size() + finishing_.size();
  }
  // Queues one message for a connection; false if it has gone (or went now,
  // for passing max_queued).
  bool Send(ConnId conn, std::string_view message);
  // Hands what is queued to the socket; at the end of every turn.
  void Flush();
  // Closes connections that are due (timeouts), pings quiet ones; about
  // once a second, or when NextTick says.
  void Tick(Clock::time_point now);
  // How long until Tick has work (ms), for the poll's timeout.
  int NextTickMs(Clock::time_point now) const;

  // Closes a connection (a reason for the log).
  void Close(ConnId conn, const char* why);
  // Connections that went since the last call, for any reason.
  std::vector<ConnId> TakeClosed();

  // frontd says whether the connection has a session: one without is
  // pending (bounded apart, and closed past hello_timeout).
  void SetSession(ConnId conn, bool has_session);
  bool Has(ConnId conn) const { return conns_.count(conn) != 0; }
  // The connection's network address ("" for ipc://) and CURVE key.
  std::string Address(ConnId conn) const;
  const CurveKey* ClientKey(ConnId conn) const;

  size_t connections() const { return conns_.size(); }
  // From now on every new connection is refused in its handshake, as
  // busy (frontd is draining).
  void StopTaking() { taking_ = false; }
  size_t pending() const { return pending_.size(); }
  void Stats(MetricSet* set) const;

 private:
  struct Conn {
    ConnId id = 0;  // the StreamServer's
    std::string address;
    std::unique_ptr<ZmtpServer> zmtp;
    Clock::time_point opened;
    Clock::time_point last_heard;
    Clock::time_point last_ping;
    bool has_session = false;
    bool refused = false;  // told busy; closed once that is out
    std::string out;       // bytes the kernel has not taken yet
    bool queued = false;   // in flush_
    std::string held;      // handshake bytes not worked through yet
    bool holding = false;  // in handshakes_ or finishing_
  };

  void Open(ConnId id, const std::string& address);
  // Bytes that came for c: fed to its ZmtpServer, or held while its
  // handshake waits its turn.
  void Receive(Conn* c, std::string_view bytes, std::vector<Request>* requests);
  void Feed(Conn* c, std::string_view bytes, std::vector<Request>* requests);
  void Queue(Conn* c, std::string_view bytes);
  // Hands a connection's bytes to the socket; false if it has gone.
  bool FlushOne(Conn* c);
  void AddPending(Conn* c);
  void RemovePending(Conn* c);
  // Closes the oldest pending connection (of an address, if given).
  void EvictOldest(const std::string* address);
  // Ends c here and closes its connection.
  void Forget(Conn* c);
  // Closes c at `at` (or sooner, if it was due sooner already).
  void CloseAt(Conn* c, Clock::time_point at);

  Limits limits_;
  CurveIdentity identity_;
  StreamServer stream_;
  Clock::time_point now_{};
  std::unordered_map<ConnId, Conn> conns_;
  // Pending connections, oldest (smallest id) first, in all and by address.
  std::set<ConnId> pending_;
  std::unordered_map<std::string, std::set<ConnId>> pending_by_address_;
  // Handshakes with bytes held: those not welcomed yet, and those that
  // were (their INITIATE waits), which go first.
  std::deque<ConnId> handshakes_;
  std::deque<ConnId> finishing_;
  std::vector<ConnId> flush_;  // connections with bytes to hand over
  std::set<ConnId> blocked_;   // their kernel buffer is full
  std::vector<ConnId> closed_;
  std::map<ConnId, Clock::time_point> closing_;  // refused, closed when due
  Clock::time_point next_sweep_{};

  // Counters for Stats.
  uint64_t accepted_ = 0;
  uint64_t refused_full_ = 0;
  uint64_t refused_rate_ = 0;
  uint64_t refused_draining_ = 0;
  bool taking_ = true;
  // handshake_rate's bucket: admissions left, as of admitted_at_.
  double admissions_ = 0;
  Clock::time_point admitted_at_{};
  // Whether a new connection may be admitted now (takes one if so).
  bool Admit();
  uint64_t closed_hello_ = 0;
  uint64_t closed_idle_ = 0;
  uint64_t closed_evicted_ = 0;
  uint64_t closed_not_reading_ = 0;
  uint64_t closed_protocol_ = 0;
  uint64_t pings_ = 0;
};

}  // namespace frontd
}  // namespace natter

#endif  // NATTER_DAEMONS_FRONTD_GATE_H_

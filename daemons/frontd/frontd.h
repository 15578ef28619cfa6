// natter-frontd: where clients come in.  Clients connect to its ClientGate
// (gate.h: ZMTP and CURVE over connections it reads and writes itself,
// stream.h, every connection named by an id of frontd's own).  A connection's
// first request is a hello with an access token, which makes the connection's
// session: the user and device every later request of that connection is for.
// Requests go on to routed through a DEALER with the session's user in the
// header — never a user the client names — and the connection's id as the
// envelope, which the answer carries back.  Events come from notifyd on a SUB
// socket subscribed to the users with a session here, and go to each of the
// user's devices (but the one that caused them).
//
// A session lives as long as its connection and its token: it ends when the
// connection closes (for any reason, see gate.h), when its token expires
// (with kTokenClockSkew to spare) or when the key that signed the token is
// retired (natterctl reload).  The client is then told with an error whose
// corr is 0, and may say hello again on the same connection.
#ifndef NATTER_DAEMONS_FRONTD_FRONTD_H_
#define NATTER_DAEMONS_FRONTD_FRONTD_H_

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "common/config.h"
#include "common/curve.h"
#include "common/daemon.h"
#include "common/metrics.h"
#include "common/net.h"
#include "common/token.h"
#include "daemons/frontd/gate.h"

namespace natter {
namespace frontd {

// What natter-frontd's main hands to DaemonMain.
DaemonSpec Spec();

class Frontd : public Service {
 public:
  // Reads and checks the configuration (everything Start needs, so that -n
  // reports it) and makes the daemon; a bad value is a kBadRequest Status
  // that names its key.
  static Status Create(const Config& config, zmq::context_t& ctx,
                       std::unique_ptr<Frontd>* out);
  // io-threads: checked (1 to 16) so that configurations that set it
  // still load; the clients' connections no longer use I/O threads.
  static Status CheckIoThreads(const Config& config);

  Status Start() override;
  void RunOnce(int timeout_ms) override;
  void Reload(const Config* config) override;
  void Stop() override;

  // Descriptors kept for everything but clients (peers, storage of the
  // context, logs) when max-clients is derived from the open-files limit.
  static constexpr uint64_t kReservedFiles = 64;
  // max-clients for an open-files limit.
  static size_t DefaultMaxClients(uint64_t open_files);
  // Hellos a connection may have refused before it is closed.
  static constexpr int kMaxRefusedHellos = 3;
  bool Ready() override { return watch_->AllConnected(); }
  const CurveIdentity* Identity() override { return &keys_.identity(); }
  void Stats(MetricSet* set) override;
  std::string Waiting() override { return watch_->Waiting(); }

 private:
  using Clock = std::chrono::steady_clock;
  explicit Frontd(zmq::context_t& ctx);

  Clock::duration drain_timeout_ = std::chrono::seconds(10);
  bool draining_ = false;
  // The move frame sent to every device while draining.
  static std::string MoveFrame();

  struct Session {
    UserId user;
    std::string device;
    std::string key_id;   // of the token's signing key
    uint64_t ends_s = 0;  // when the token ends, with the skew (Unix s)
    // Requests passed on and not yet answered, by correlation id.
    std::unordered_map<uint64_t, Clock::time_point> in_flight;
    // The ack of this turn with the highest seq, not passed on yet (acks
    // have no answer: at most one a connection a turn goes on).
    std::string ack;
    uint64_t ack_seq = 0;
  };
  // The envelope of an ack passed on: the connection's id with this bit,
  // so that whatever comes back for it (an error) is dropped here.
  static constexpr uint64_t kUnanswered = uint64_t{1} << 63;

  // A hello whose token is good, waiting for the home shard to attach
  // the device (its cursor) before the session opens.
  struct PendingHello {
    TokenClaims claims;
    std::string device;
    uint64_t corr = 0;
    Clock::time_point sent;
  };

  // Reads the clients' socket (if readable) and serves what came, then
  // gives waiting handshakes their slice.
  void FromClients(bool readable);
  void Serve(const std::vector<ClientGate::Request>& requests);
  // Sends the requests the turn queued for routed, in one message (or an
  // error to each if routed cannot take it).
  void FlushToRouted();
  // Puts the session's ack of this turn, if any, in the batch for routed.
  void PassAck(ConnId conn, Session* session);
  void FromClient(ConnId conn, const std::string& body);
  void FromRouted();
  // One answer from routed for a connection.
  void Answer(ConnId conn, std::string_view bytes);
  void FromNotifyd();
  void Hello(ConnId conn, const Frame& frame);
  void OpenSession(ConnId conn, const PendingHello& hello);
  // An answer from routed that finishes a pending hello (the shard's
  // attached, or its refusal); false if it is not one.
  bool FinishHello(ConnId conn, const Frame& answer, std::string_view bytes);
  // A request of a session, checked and passed on (or refused).
  void Forward(ConnId conn, Session* session, const Frame& frame);
  void Reply(ConnId conn, std::string_view frame);
  // An error for a connection's request; the header is frontd's own (the
  // request's corr, the session's user and device), never the client's.
  void ReplyError(ConnId conn, uint64_t corr, const Status& status);
  // Ends a session whose token no longer holds, telling the client.
  void Revoke(ConnId conn, const Status& why);
  void EndSession(ConnId conn);
  void ReapClosed();
  void ExpireSessions();
  // How long a request passed on must have waited before a resend of it
  // is passed on too: four times what answers take now, 1 s to 10 s.
  Clock::duration ResendHold() const;
  // A new trace id, unguessable (a keyed hash of a counter).
  uint64_t NewTrace(bool loud);

  zmq::context_t& ctx_;
  DaemonKeys keys_;
  std::string listen_;
  std::vector<std::string> routed_;
  std::vector<std::string> notifyd_;
  std::string token_keys_;
  size_t max_in_flight_ = 256;
  size_t max_sessions_per_user_ = 32;
  ClientGate::Limits limits_;
  TokenVerifier verifier_;

  std::unique_ptr<ClientGate> gate_;
  zmq::socket_t routed_socket_;  // DEALER
  // Requests queued for routed this turn (proto.h's batch, each keyed by
  // its connection), and their connections and corrs.
  std::string to_routed_;
  std::vector<std::pair<ConnId, uint64_t>> to_routed_corrs_;
  std::vector<ConnId> acks_due_;  // sessions with an ack for this turn
  zmq::socket_t events_;          // SUB
  std::unordered_map<ConnId, Session> sessions_;
  std::unordered_map<UserId, std::vector<ConnId>> by_user_;
  std::unordered_map<ConnId, int> refused_hellos_;
  std::unordered_map<ConnId, PendingHello> pending_hellos_;
  Clock::time_point next_sweep_;
  // What answers take, a moving average (ms); and the resends held back.
  double answer_ms_ = 0;
  uint64_t resends_held_ = 0;
  std::array<unsigned char, 16> trace_key_{};
  uint64_t trace_next_ = 0;
  // Counters and the request-to-answer latency, for Stats.
  uint64_t requests_ = 0;
  uint64_t refused_ = 0;  // answered by frontd itself with an error
  uint64_t answers_ = 0;
  uint64_t events_sent_ = 0;
  uint64_t dropped_ = 0;  // frames for connections that had gone
  uint64_t hellos_ = 0;
  uint64_t revoked_ = 0;  // sessions ended for their token
  LatencyHistogram answer_latency_;
  std::unique_ptr<LinkWatch> watch_;
};

}  // namespace frontd
}  // namespace natter

#endif  // NATTER_DAEMONS_FRONTD_FRONTD_H_

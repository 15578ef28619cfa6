// natter-frontd: where clients come in.  A ROUTER faces the clients; a
// client's first request is a hello with its access token, which makes a
// session (the user and device every later request of that connection is
// for).  Requests go on to routed through a DEALER with the session's user
// in the header — never a user the client names.  Events come from notifyd
// on a SUB socket subscribed to the users with a session here, and go to
// each of the user's devices (but the one that caused them).
//
// Sessions end when the client is gone (a send to it fails) or has been
// silent for session-timeout.
//
// At most max-clients connections: past it, the ZAP handler refuses a new
// client's handshake (ZAP status 400, a CURVE ERROR), which closes
// that connection at once, so the descriptors kept in reserve stay free
// for the peers; connected clients are not touched.
#ifndef NATTER_DAEMONS_FRONTD_FRONTD_H_
#define NATTER_DAEMONS_FRONTD_FRONTD_H_

#include <atomic>
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

namespace natter {
namespace frontd {

class Frontd : public Service {
 public:
  Frontd(const Config& config, zmq::context_t& ctx);

  Status Start() override;
  void RunOnce(int timeout_ms) override;
  void Reload() override;
  void Stop() override;

  // Descriptors kept for everything but clients (peers, storage of the
  // context, logs) when max-clients is derived from the open-files limit.
  static constexpr uint64_t kReservedFiles = 64;
  // max-clients for an open-files limit.
  static size_t DefaultMaxClients(uint64_t open_files);
  bool Ready() override { return watch_->AllConnected(); }
  const CurveIdentity* Identity() override { return &keys_.identity(); }
  void Stats(MetricSet* set) override;
  std::string Waiting() override { return watch_->Waiting(); }

 private:
  using Clock = std::chrono::steady_clock;
  struct Session {
    UserId user;
    std::string device;
    Clock::time_point last_heard;
    // Requests passed on and not yet answered, by correlation id.
    std::unordered_map<uint64_t, Clock::time_point> in_flight;
  };

  void FromClients();
  void FromClient(Parts& parts);
  void FromRouted();
  void FromNotifyd();
  void Hello(const std::string& identity, const Frame& frame);
  void Reply(const std::string& identity, const std::string& frame);
  void EndSession(const std::string& identity);
  void ExpireSessions();
  // How long a request passed on must have waited before a resend of it
  // is passed on too: four times what answers take now, 1 s to 10 s.
  Clock::duration ResendHold() const;

  zmq::context_t& ctx_;
  // Declared before keys_ (whose ZAP thread asks connections_), so that
  // they outlive it.
  zmq::socket_t clients_;  // ROUTER
  std::unique_ptr<ConnectionCount> connections_;
  DaemonKeys keys_;
  std::string listen_;
  std::vector<std::string> routed_;
  std::vector<std::string> notifyd_;
  std::string token_keys_;
  std::chrono::seconds session_timeout_{60};
  size_t max_in_flight_ = 256;
  size_t max_clients_ = 0;
  int client_threads_ = 1;
  std::atomic<uint64_t> clients_refused_{0};
  TokenVerifier verifier_;

  zmq::socket_t routed_socket_;  // DEALER
  zmq::socket_t events_;   // SUB
  std::unordered_map<std::string, Session> sessions_;  // by ROUTER identity
  std::unordered_map<UserId, std::vector<std::string>> by_user_;
  Clock::time_point next_sweep_;
  // What answers take, a moving average (ms); and the resends held back.
  double answer_ms_ = 0;
  uint64_t resends_held_ = 0;
  // A new trace id (the client asked for its path in the logs: loud).
  uint64_t NewTrace(bool loud);
  uint64_t trace_prefix_ = 0;  // random, so frontds' ids differ
  uint32_t trace_next_ = 0;
  // Counters and the request-to-answer latency, for Stats.
  uint64_t requests_ = 0;
  uint64_t refused_ = 0;   // answered by frontd itself with an error
  uint64_t answers_ = 0;
  uint64_t events_sent_ = 0;
  uint64_t dropped_ = 0;   // frames a client's full queue did not take
  uint64_t hellos_ = 0;
  LatencyHistogram answer_latency_;
  std::unique_ptr<HandshakeWatch> watch_;
};

}  // namespace frontd
}  // namespace natter

#endif  // NATTER_DAEMONS_FRONTD_FRONTD_H_

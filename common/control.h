// A daemon's control plane: the control socket natterctl talks to (status,
// backup), and the optional Prometheus endpoint.  Both are optional
// ([section] control and metrics-listen in natter.conf(5)).
//
// The control socket is a ROUTER that speaks the natter frame format and
// is secured like the daemon's other sockets: CURVE, admitting only the
// admin keys of the cell's peer keys (natterctl's), no daemon's.  The metrics
// endpoint is plain HTTP on a ZMQ_STREAM socket: GET /metrics answers the
// Prometheus text format; anything else gets 404.  Bind it to loopback or a
// private network: it has no authentication.
#ifndef NATTER_COMMON_CONTROL_H_
#define NATTER_COMMON_CONTROL_H_

#include <functional>
#include <map>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/metrics.h"
#include "common/proto.h"
#include "common/status.h"

namespace natter {

// Sends a request frame to a daemon's control socket (the endpoint may
// name the daemon's CURVE key after '@'; me is then the key to speak with)
// and waits up to timeout_ms for the answer frame.
Status AskControl(zmq::context_t& ctx, const std::string& endpoint,
                  const CurveIdentity& me, const std::string& request,
                  int timeout_ms, std::string* answer);

class ControlServer {
 public:
  // Sends an encoded frame back to whoever asked; may be called later
  // (from the daemon's thread), for a request that takes time.
  using Reply = std::function<void(const std::string& frame)>;
  // The daemon's metrics.
  using StatsFn = std::function<void(MetricSet*)>;
  // A control request other than stats; false if the daemon does not
  // take it (it then gets an error reply).
  using CommandFn = std::function<bool(const Frame&, Reply)>;

  ControlServer(zmq::context_t& ctx, std::string daemon);
  // Either endpoint may be empty (that part is off).
  Status Start(const std::string& control, const std::string& metrics,
               const CurveIdentity& me);
  // Answers what has arrived, without waiting.
  void Serve(const StatsFn& stats, const CommandFn& command);

 private:
  void ServeControl(const StatsFn& stats, const CommandFn& command);
  void ServeHttp(const StatsFn& stats);
  std::string Collect(const StatsFn& stats, std::vector<Metric>* out);

  zmq::context_t& ctx_;
  std::string daemon_;
  zmq::socket_t control_;
  zmq::socket_t http_;
  // HTTP requests being read, by connection id.
  std::map<std::string, std::string> partial_;
};

}  // namespace natter

#endif  // NATTER_COMMON_CONTROL_H_

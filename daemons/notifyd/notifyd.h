// natter-notifyd: the live fan-out.  Shards PUSH committed events to it,
// a batch's in one message (proto.h, AppendBatchEntry); it PUBlishes each
// on its user's topic (8 bytes, the user id big-endian), and every frontd
// SUBscribes to the users it holds.
//
// The live path may drop (a slow subscriber, a restart): every event
// carries its user's seq and devices repair gaps from the mailbox.
#ifndef NATTER_DAEMONS_NOTIFYD_NOTIFYD_H_
#define NATTER_DAEMONS_NOTIFYD_NOTIFYD_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "common/config.h"
#include "common/curve.h"
#include "common/daemon.h"
#include "common/metrics.h"
#include "common/net.h"

namespace natter {
namespace notifyd {

// What natter-notifyd's main hands to DaemonMain.
DaemonSpec Spec();

class Notifyd : public Service {
 public:
  // Reads and checks the configuration and makes the daemon; a bad value
  // is a kBadRequest Status that names its key.
  static Status Create(const Config& config, zmq::context_t& ctx,
                       std::unique_ptr<Notifyd>* out);

  Status Start() override;
  void RunOnce(int timeout_ms) override;
  // Publishes the events already taken in before it exits.
  void Stop() override { RunOnce(0); }
  void Reload(const Config*) override { keys_.Reload(); }
  const CurveIdentity* Identity() override { return &keys_.identity(); }
  void Stats(MetricSet* set) override;

 private:
  explicit Notifyd(zmq::context_t& ctx) : ctx_(ctx) {}
  // Publishes one event on its topic.
  void FanOut(std::string_view topic, std::string_view frame);

  zmq::context_t& ctx_;
  DaemonKeys keys_;
  std::string listen_in_;
  std::string listen_out_;
  zmq::socket_t in_;   // PULL, from the shards
  zmq::socket_t out_;  // PUB, to the frontds
  uint64_t forwarded_ = 0;
  uint64_t drop_every_ = 0;  // tests only
  uint64_t dropped_ = 0;
  uint64_t malformed_ = 0;  // batches that did not parse
  LatencyHistogram turn_;   // the work of one turn
};

}  // namespace notifyd
}  // namespace natter

#endif  // NATTER_DAEMONS_NOTIFYD_NOTIFYD_H_

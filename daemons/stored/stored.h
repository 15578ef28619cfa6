// natter-stored: one shard.  A ROUTER takes requests from routed; each turn
// drains every request waiting (up to batch-max) into one Store::Apply —
// one write batch, one sync — and only then replies, publishes the events
// to notifyd and hands recipients' copies to their shards.
//
// Hand-offs go out on a DEALER to routed and stay in the outbox (on disk
// and here) until the other shard acknowledges; unacknowledged ones are
// sent again every handoff-retry.
#ifndef NATTER_DAEMONS_STORED_STORED_H_
#define NATTER_DAEMONS_STORED_STORED_H_

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "common/config.h"
#include "common/curve.h"
#include "common/daemon.h"
#include "common/net.h"
#include "daemons/stored/store.h"

namespace natter {
namespace stored {

class Stored : public Service {
 public:
  Stored(const Config& config, zmq::context_t& ctx);

  Status Start() override;
  void RunOnce(int timeout_ms) override;
  bool Ready() override { return watch_->AllConnected(); }
  std::string Waiting() override { return watch_->Waiting(); }
  void Stop() override;
  void Reload() override { keys_.Reload(); }

  const Store& store() const { return *store_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Pending {
    std::string frame;
    Clock::time_point next_try;
  };

  void ServeBatch();
  void Publish(const Event& event);
  void SendHandoff(uint64_t outbox, Pending* pending);
  void TakeAcks();
  void RetryHandoffs();

  zmq::context_t& ctx_;
  DaemonKeys keys_;
  uint32_t shard_ = 0;
  uint32_t shard_count_ = 1;
  std::string listen_;
  std::string data_path_;
  std::vector<std::string> routed_;
  std::vector<std::string> notifyd_;
  size_t batch_max_ = 1024;
  std::chrono::milliseconds retry_{1000};

  std::unique_ptr<Store> store_;
  zmq::socket_t requests_;  // ROUTER, from routed
  zmq::socket_t handoff_;   // DEALER, to routed
  zmq::socket_t events_;    // PUSH, to notifyd
  std::map<uint64_t, Pending> pending_;
  std::unique_ptr<HandshakeWatch> watch_;
};

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_STORED_H_

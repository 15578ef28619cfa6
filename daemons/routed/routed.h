// natter-routed: the broker between frontds and shards (zguide's
// Majordomo, without workers coming and going).  It assigns each new
// message its Snowflake id and routes every request to the home shard of
// the user it concerns; replies travel back along the ROUTER envelope.
//
// Frontds and shards both connect to its ROUTER: frontds with requests,
// shards with hand-offs of recipients' copies.  One ROUTER per shard, in
// shard-map order, linked to each of its replicas.  What a turn takes in
// goes on batched (proto.h): a frontd's requests for a shard in one
// message, a frontd's answers in one.
#ifndef NATTER_DAEMONS_ROUTED_ROUTED_H_
#define NATTER_DAEMONS_ROUTED_ROUTED_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/config.h"
#include "common/curve.h"
#include "common/daemon.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/net.h"
#include "common/proto.h"

namespace natter {
namespace routed {

// Where a request goes and what it becomes: the routing decision, apart
// from sockets so tests can drive it.
struct Route {
  Status status;  // not ok: reply with this error instead
  uint32_t shard = 0;
  std::string frame;  // what to send to the shard
  MessageId id;       // a send's new message id
};

class Router {
 public:
  Router(uint32_t shard_count, uint32_t generator);
  // Keeps the ids' lease in this file (see IdLease): ids start past what
  // an earlier run may have handed out.
  Status UseLease(const std::string& path);
  Route Decide(const Frame& request, uint64_t now_ms);

 private:
  uint32_t shard_count_;
  SnowflakeGenerator ids_;
  std::unique_ptr<IdLease> lease_;
};

// What natter-routed's main hands to DaemonMain.
DaemonSpec Spec();

class Routed : public Service {
 public:
  // Reads and checks the configuration and makes the daemon; a bad value
  // is a kBadRequest Status that names its key.
  static Status Create(const Config& config, zmq::context_t& ctx,
                       std::unique_ptr<Routed>* out);

  Status Start() override;
  void RunOnce(int timeout_ms) override;
  // Passes on what is under way (answers coming back from the shards)
  // until 100 ms pass quietly, for at most two seconds.
  void Stop() override;
  // SIGHUP: the keys, and replicas added to or removed from the shards.
  void Reload(const Config* config) override;
  bool Ready() override { return watch_->AllConnected(); }
  std::string Waiting() override { return watch_->Waiting(); }
  const CurveIdentity* Identity() override { return &keys_.identity(); }
  void Stats(MetricSet* set) override;

 private:
  Routed(zmq::context_t& ctx, uint32_t shard_count, uint32_t generator);

  void FromFront();
  // One request from a frontd, [its identity, envelope, frame] (or a
  // shard's hand-off, [its identity, frame]): to its shard, or an error
  // back.
  void RouteOne(Parts* request);
  void FromShard(size_t shard);
  // One answer from a shard, [route back..., frame]: to the frontd.
  void AnswerOne(size_t shard, Parts* answer);
  // Sends [route..., frame] back to a frontd: in the turn's batch for it
  // when the route is a client's ([frontd, envelope]), else alone.
  void ToFront(const Parts& route, size_t route_len, std::string_view frame);
  // Sends to the shard's leader as routed knows it, else to its other
  // replicas in turn (the one that takes it answers or names the leader).
  bool ToShard(uint32_t shard, Parts* out);
  // A batch of requests for a shard that no replica took: each is
  // answered unavailable.
  void ShardUnreachable(uint32_t shard, const Batches::Route& route,
                        const std::string& batch);
  // A replica named its shard's leader (an answer to a leader query, or
  // a request it did not take): the newer term wins.
  void LearnLeader(uint32_t shard, uint32_t leader, uint64_t term);
  // Every half second: asks each replica of a shard of several who leads.
  void AskLeaders();

  // A shard: its replicas' links on one ROUTER, each replica by the name
  // "r" + its number; the leader as last known.
  struct Shard {
    zmq::socket_t socket;
    size_t replicas = 1;
    std::vector<std::string> endpoints;  // a replica's, by number
    uint32_t leader = 0;                 // a replica number
    uint64_t term = 0;
  };
  // Replica k's name on its shard's socket now (LinkWatch::RoutingId).
  std::string ReplicaName(const Shard& shard, size_t k) const;

  zmq::context_t& ctx_;
  DaemonKeys keys_;
  std::string listen_;
  std::vector<std::string> shard_endpoints_;
  std::string lease_path_;
  Router router_;
  zmq::socket_t front_;  // ROUTER
  std::vector<Shard> shards_;
  // The turn's requests for each shard and answers for the frontds,
  // batched by frontd (proto.h); sent at the end of the turn.
  std::vector<Batches> to_shards_;
  Batches to_fronts_;
  std::chrono::steady_clock::time_point next_ask_{};
  uint64_t leader_changes_ = 0;
  uint64_t moved_ = 0;     // frames passed on, ever
  uint64_t requests_ = 0;  // from frontds and shards, to shards
  uint64_t answers_ = 0;   // from shards, back
  uint64_t refused_ = 0;   // answered with an error by routed
  uint64_t dropped_ = 0;   // answers the peer's queue did not take
  uint64_t batches_ = 0;   // messages of many requests or answers, sent
  LatencyHistogram turn_;  // the work of one turn (how long a
                           // frame may wait behind others)
  std::unique_ptr<LinkWatch> watch_;  // the links to the shards
};

}  // namespace routed
}  // namespace natter

#endif  // NATTER_DAEMONS_ROUTED_ROUTED_H_

#include "daemons/routed/routed.h"

#include <chrono>

#include "common/endian.h"
#include "common/log.h"
#include "common/shard.h"

namespace natter {
namespace routed {
namespace {

Status GeneratorOf(const Config& config, uint32_t* out) {
  uint64_t g = 0;
  Status s = config.GetUint("generator", &g);
  if (!s.ok()) return s;
  if (g > kMaxGenerator)
    return Status(ErrorCode::kBadRequest, "generator: must be 0 to 255");
  *out = static_cast<uint32_t>(g);
  return Status::Ok();
}

}  // namespace

Router::Router(uint32_t shard_count, uint32_t generator)
    : shard_count_(shard_count), ids_(generator) {}

Status Router::UseLease(const std::string& path) {
  auto lease = std::make_unique<IdLease>();
  uint64_t floor_ms = 0;
  Status s = lease->Open(path, &floor_ms);
  if (!s.ok()) return s;
  if (floor_ms > 0) ids_.AdvancePast(FirstIdAt(floor_ms));
  lease_ = std::move(lease);
  return Status::Ok();
}

Route Router::Decide(const Frame& request, uint64_t now_ms) {
  Route route;
  const Header& h = request.header;
  switch (request.type()) {
    case MsgType::kSend: {
      Send send;
      route.status = DecodeBody(request, &send);
      if (!route.status.ok()) return route;
      StoreMessage sm;
      sm.message.id = ids_.Next(now_ms);
      if (lease_ && !lease_->Covers(TimestampOf(sm.message.id))) {
        route.status = lease_->Extend(TimestampOf(sm.message.id));
        if (!route.status.ok()) {
          route.status = Status(
              ErrorCode::kStorage,
              "routed cannot record its id lease: " + route.status.message());
          return route;
        }
      }
      sm.message.from = h.user;
      sm.message.to = send.to;
      sm.message.ts = TimestampOf(sm.message.id);
      sm.message.client_msg_id = std::move(send.client_msg_id);
      sm.message.text = std::move(send.text);
      route.shard = HomeShard(h.user, shard_count_);
      route.frame = EncodeFrame(h, sm);
      route.id = sm.message.id;
      return route;
    }
    case MsgType::kHandoff: {
      Handoff d;
      route.status = DecodeBody(request, &d);
      if (!route.status.ok()) return route;
      route.shard = HomeShard(d.target, shard_count_);
      return route;
    }
    case MsgType::kAttach:
    case MsgType::kSync:
    case MsgType::kAck:
    case MsgType::kReact:
    case MsgType::kSeen:
    case MsgType::kHistory:
    case MsgType::kChats:
      route.shard = HomeShard(h.user, shard_count_);
      return route;
    default:
      route.status =
          Status(ErrorCode::kBadRequest, std::string("routed does not take ") +
                                             MsgTypeName(request.type()));
      return route;
  }
}

DaemonSpec Spec() {
  return DaemonSpec("natter-routed", "routed", &MakeService<Routed>);
}

Routed::Routed(zmq::context_t& ctx, uint32_t shard_count, uint32_t generator)
    : ctx_(ctx),
      router_(shard_count, generator),
      to_fronts_([this](const Batches::Route& route, const std::string& batch) {
        // Counted as they go, or as dropped if the frontd's queue is full.
        const bool sent = SendBatch(front_, route, batch);
        if (sent) ++batches_;
        ForEachBatchEntry(batch, [&](std::string_view, std::string_view) {
          if (sent) {
            ++moved_;
            ++answers_;
          } else {
            ++dropped_;
          }
        });
        if (!sent) NLOG_DEBUG("event=reply-dropped bytes=%zu", batch.size());
      }) {}

Status Routed::Create(const Config& config, zmq::context_t& ctx,
                      std::unique_ptr<Routed>* out) {
  DaemonKeys keys;
  Status s = DaemonKeys::Create(config, &keys);
  if (!s.ok()) return s;
  std::vector<std::string> shards = config.GetShardMap();
  if (shards.empty())
    return Status(ErrorCode::kBadRequest, "shards: the shard map is empty");
  uint32_t generator = 0;
  s = GeneratorOf(config, &generator);
  if (!s.ok()) return s;
  std::string listen = config.Get("listen");
  if (listen.empty()) {
    auto all = config.GetList("routed");
    if (all.empty())
      return Status(ErrorCode::kBadRequest, "routed: no endpoint");
    listen = all.front();
  }
  std::unique_ptr<Routed> r(
      new Routed(ctx, static_cast<uint32_t>(shards.size()), generator));
  r->keys_ = std::move(keys);
  r->listen_ = BindAddress(listen);
  r->shard_endpoints_ = std::move(shards);
  r->lease_path_ = config.Get("id-lease");
  *out = std::move(r);
  return Status::Ok();
}

Status Routed::Start() {
  if (!lease_path_.empty()) {
    Status ls = router_.UseLease(lease_path_);
    if (!ls.ok())
      return Status(ErrorCode::kStorage, "id-lease: " + ls.message());
  }
  Status ks = keys_.Start(ctx_);
  if (!ks.ok()) return ks;
  front_ = MakeDaemonSocket(ctx_, zmq::socket_type::router);
  front_.set(zmq::sockopt::router_mandatory, 1);
  SetCurveServer(front_, keys_.identity(), kZapDomainRouted, listen_);
  watch_ = std::make_unique<LinkWatch>(ctx_);
  try {
    PrepareEndpoint(listen_);
    front_.bind(listen_);
    for (const auto& entry : shard_endpoints_) {
      Shard shard;
      shard.socket = MakeDaemonSocket(ctx_, zmq::socket_type::router);
      shard.socket.set(zmq::sockopt::router_mandatory, 1);
      watch_->Add(shard.socket, "shard-" + std::to_string(shards_.size()));
      std::vector<std::string> replicas = ReplicaEndpoints(entry);
      shard.replicas = replicas.size();
      shard.endpoints = replicas;
      for (size_t k = 0; k < replicas.size(); ++k) {
        if (replicas[k].empty()) continue;  // removed
        Status cs = watch_->Connect(shard.socket, keys_.identity(), replicas[k],
                                    "r" + std::to_string(k));
        if (!cs.ok()) return cs;
      }
      shards_.push_back(std::move(shard));
      const uint32_t i = static_cast<uint32_t>(to_shards_.size());
      to_shards_.emplace_back([this, i](const Batches::Route& route,
                                        const std::string& batch) {
        Parts out;
        for (const std::string& r : route) out.push_back(ToMessage(r));
        out.push_back(zmq::message_t());
        out.push_back(ToMessage(batch));
        if (ToShard(i, &out)) {
          ++batches_;
          ForEachBatchEntry(batch, [this](std::string_view, std::string_view) {
            ++moved_;
            ++requests_;
          });
          return;
        }
        ShardUnreachable(i, route, batch);
      });
    }
  } catch (const zmq::error_t& e) {
    return Status(ErrorCode::kBadRequest, listen_ + ": " + e.what());
  }
  NLOG_INFO("event=listening listen=%s shards=%zu", LogValue(listen_).c_str(),
            shards_.size());
  return Status::Ok();
}

void Routed::RunOnce(int timeout_ms) {
  std::vector<zmq::pollitem_t> items;
  items.push_back({front_.handle(), 0, ZMQ_POLLIN, 0});
  for (auto& s : shards_) {
    items.push_back({s.socket.handle(), 0, ZMQ_POLLIN, 0});
  }
  Poll(items, std::min<long>(timeout_ms, 500));
  AskLeaders();
  auto start = std::chrono::steady_clock::now();
  bool work = false;
  if (items[0].revents & ZMQ_POLLIN) {
    FromFront();
    work = true;
  }
  for (size_t i = 0; i < shards_.size(); ++i) {
    if (items[i + 1].revents & ZMQ_POLLIN) {
      FromShard(i);
      work = true;
    }
  }
  // What the turn took in goes on, a batch a peer.
  for (Batches& b : to_shards_) b.Flush();
  to_fronts_.Flush();
  // Turns with work only: an idle turn says nothing of waiting.
  if (work) {
    turn_.Record(std::chrono::duration<double, std::micro>(
                     std::chrono::steady_clock::now() - start)
                     .count());
  }
  watch_->Check();
}

void Routed::Stats(MetricSet* set) {
  set->Counter("natter_routed_requests_total", "Requests passed on to shards.",
               static_cast<double>(requests_));
  set->Counter("natter_routed_answers_total",
               "Answers passed back to frontds (the shards', and routed's own "
               "refusals).",
               static_cast<double>(answers_));
  set->Counter("natter_routed_refused_total",
               "Requests routed answered with an error.",
               static_cast<double>(refused_));
  set->Counter("natter_routed_dropped_total",
               "Answers a peer's full queue did not take.",
               static_cast<double>(dropped_));
  set->Counter("natter_routed_batches_total",
               "Messages sent carrying the requests for a shard or the "
               "answers for a frontd of one turn.",
               static_cast<double>(batches_));
  set->Gauge("natter_routed_shards", "Shards in the shard map.",
             static_cast<double>(shards_.size()));
  set->Counter("natter_routed_shard_leader_changes_total",
               "Times routed learned that a shard has a new leader.",
               static_cast<double>(leader_changes_));
  set->Counter("natter_routed_relinks_total",
               "Links to shards connected again after they ended for good.",
               static_cast<double>(watch_ ? watch_->relinks() : 0));
  set->Summary("natter_routed_turn_seconds",
               "The work of one busy turn of routed's loop (what a frame may "
               "wait behind).",
               turn_);
}

void Routed::Stop() {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  auto quiet_since = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < until &&
         std::chrono::steady_clock::now() - quiet_since <
             std::chrono::milliseconds(100)) {
    uint64_t before = moved_;
    RunOnce(20);
    if (moved_ != before) quiet_since = std::chrono::steady_clock::now();
  }
}

void Routed::FromFront() {
  Parts parts;
  std::vector<Parts> batch;
  for (int n = 0; n < 4096 && RecvParts(front_, &parts); ++n) {
    // A frontd's batch (proto.h): [its identity, empty, entries], each
    // entry a request with its envelope, routed as if it came alone.
    if (parts.size() != 3 || parts[1].size() != 0) {
      RouteOne(&parts);
      continue;
    }
    batch.clear();
    if (!SplitBatch(parts, 1, &batch)) {
      ++refused_;
      NLOG_WARN("event=malformed-batch bytes=%zu", parts.back().size());
    }
    for (Parts& one : batch) RouteOne(&one);
  }
}

void Routed::RouteOne(Parts* request) {
  Parts& parts = *request;
  if (parts.size() < 2) return;
  Frame frame;
  const zmq::message_t& body = parts.back();
  Route route;
  route.status = DecodeFrame(body.data(), body.size(), &frame);
  if (route.status.ok()) route = router_.Decide(frame, NowMs());
  if (route.status.ok()) {
    const std::string_view out_frame =
        route.frame.empty()
            ? std::string_view(static_cast<const char*>(body.data()),
                               body.size())
            : std::string_view(route.frame);
    bool sent = true;
    if (parts.size() == 3 && parts[1].size() == 8) {
      // A client's request: in the turn's batch for its shard, by frontd
      // (counted when the batch goes).
      to_shards_[route.shard].Add(
          {parts[0].to_string()},
          GetBigEndian(static_cast<const char*>(parts[1].data())), out_frame);
    } else {
      // A hand-off: the whole envelope goes along (the peer's identity
      // first), so the reply finds its way back.
      Parts out;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        out.emplace_back(parts[i].data(), parts[i].size());
      }
      out.emplace_back(out_frame.data(), out_frame.size());
      sent = ToShard(route.shard, &out);
      if (sent) {
        ++moved_;
        ++requests_;
      }
    }
    if (sent) {
      NLOG_TRACE(frame.header.trace,
                 "event=route type=%s user=%llu shard=%u id=%llu",
                 LogValue(MsgTypeName(frame.type())).c_str(),
                 static_cast<unsigned long long>(frame.header.user.value),
                 route.shard, static_cast<unsigned long long>(route.id.value));
      return;
    }
    route.status =
        Status(ErrorCode::kUnavailable,
               "shard " + std::to_string(route.shard) + " is not reachable");
  }
  ++refused_;
  NLOG_WARN("event=refused type=%s error=%s",
            LogValue(MsgTypeName(frame.type())).c_str(),
            LogValue(route.status.ToString()).c_str());
  ToFront(parts, parts.size() - 1, EncodeError(frame.header, route.status));
}

void Routed::ToFront(const Parts& route, size_t route_len,
                     std::string_view frame) {
  if (route_len == 2 && route[1].size() == 8) {
    to_fronts_.Add({route[0].to_string()},
                   GetBigEndian(static_cast<const char*>(route[1].data())),
                   frame);
    return;
  }
  Parts out;
  for (size_t i = 0; i < route_len; ++i)
    out.emplace_back(route[i].data(), route[i].size());
  out.emplace_back(frame.data(), frame.size());
  if (SendParts(front_, out)) {
    ++moved_;
    ++answers_;
  } else {
    ++dropped_;
    NLOG_DEBUG("event=reply-dropped");
  }
}

void Routed::ShardUnreachable(uint32_t shard, const Batches::Route& route,
                              const std::string& batch) {
  const Status error(ErrorCode::kUnavailable,
                     "shard " + std::to_string(shard) + " is not reachable");
  ForEachBatchEntry(batch, [&](std::string_view key, std::string_view frame) {
    Header h;
    PeekHeader(frame.data(), frame.size(), &h);
    ++refused_;
    to_fronts_.Add(route, GetBigEndian(key.data()), EncodeError(h, error));
  });
  NLOG_WARN("event=refused shard=%u error=%s", shard,
            LogValue(error.ToString()).c_str());
}

bool Routed::ToShard(uint32_t shard, Parts* out) {
  Shard& s = shards_[shard];
  for (size_t tried = 0; tried < s.replicas; ++tried) {
    uint32_t k = static_cast<uint32_t>((s.leader + tried) % s.replicas);
    std::string name = ReplicaName(s, k);
    if (name.empty()) continue;  // removed
    Parts with_name;
    with_name.push_back(ToMessage(name));
    for (zmq::message_t& m : *out) with_name.emplace_back(m.data(), m.size());
    if (SendParts(s.socket, with_name)) {
      if (tried > 0) {
        // The one thought to lead is not reachable: try this one first
        // from now on, until a replica names the leader.
        s.leader = k;
      }
      return true;
    }
  }
  return false;
}

std::string Routed::ReplicaName(const Shard& shard, size_t k) const {
  if (shard.endpoints[k].empty()) return "";
  return watch_->RoutingId(shard.socket, shard.endpoints[k]);
}

void Routed::Reload(const Config* config) {
  keys_.Reload();
  if (config == nullptr) return;  // natter.conf could not be read again
  std::vector<std::string> map = config->GetShardMap();
  if (map.size() != shards_.size()) {
    NLOG_ERROR(
        "event=shard-map-reload-failed error=\"the shard map has %zu shards, "
        "not %zu (shards are never added or removed while the cell runs)\"",
        map.size(), shards_.size());
    return;
  }
  for (size_t i = 0; i < shards_.size(); ++i) {
    Shard& s = shards_[i];
    std::vector<std::string> now = ReplicaEndpoints(map[i]);
    Status valid =
        CheckReplicaChange(static_cast<uint32_t>(i), s.endpoints, now);
    if (!valid.ok()) {
      NLOG_ERROR("event=shard-map-reload-failed shard=%zu error=%s", i,
                 LogValue(valid.message()).c_str());
      continue;
    }
    for (size_t k = 0; k < now.size(); ++k) {
      if (k < s.endpoints.size()) {
        if (now[k] == s.endpoints[k]) continue;
        watch_->Disconnect(s.socket, s.endpoints[k]);
        s.endpoints[k].clear();
        NLOG_INFO("event=replica-unlisted shard=%zu replica=%zu", i, k);
        continue;
      }
      // Kept even if the link fails now (it is the shard map's), so that
      // the next reload compares with it.
      s.endpoints.push_back(now[k]);
      if (now[k].empty()) continue;
      Status cs;
      try {
        cs = watch_->Connect(s.socket, keys_.identity(), now[k],
                             "r" + std::to_string(k));
      } catch (const zmq::error_t& e) {
        cs = Status(ErrorCode::kInternal, e.what());
      }
      if (!cs.ok()) {
        NLOG_ERROR("event=replica-link-failed shard=%zu replica=%zu error=%s",
                   i, k, LogValue(cs.ToString()).c_str());
        continue;
      }
      NLOG_INFO("event=replica-listed shard=%zu replica=%zu", i, k);
    }
    s.replicas = s.endpoints.size();
  }
}

void Routed::LearnLeader(uint32_t shard, uint32_t leader, uint64_t term) {
  if (shard >= shards_.size() || leader == 0) return;
  Shard& s = shards_[shard];
  if (leader > s.replicas || term < s.term) return;
  if (s.leader != leader - 1) {
    ++leader_changes_;
    NLOG_INFO("event=shard-leader shard=%u replica=%u term=%llu", shard,
              leader - 1, static_cast<unsigned long long>(term));
  }
  s.leader = leader - 1;
  s.term = term;
}

void Routed::AskLeaders() {
  auto now = std::chrono::steady_clock::now();
  if (now < next_ask_) return;
  next_ask_ = now + std::chrono::milliseconds(500);
  for (uint32_t i = 0; i < shards_.size(); ++i) {
    if (shards_[i].replicas < 2) continue;
    Header h;
    LeaderQuery q;
    q.shard = i;
    std::string frame = EncodeFrame(h, q);
    for (size_t k = 0; k < shards_[i].replicas; ++k) {
      std::string name = ReplicaName(shards_[i], k);
      if (name.empty()) continue;  // removed
      Parts parts;
      parts.push_back(ToMessage(name));
      parts.push_back(ToMessage(frame));
      SendParts(shards_[i].socket, parts);  // an absent replica: no matter
    }
  }
}

void Routed::FromShard(size_t shard) {
  Parts parts;
  std::vector<Parts> batch;
  for (int n = 0; n < 4096 && RecvParts(shards_[shard].socket, &parts); ++n) {
    if (parts.size() < 2) continue;
    // The replica's name first, then the route back and the answer; a
    // batch's answers ([name, frontd, empty, entries]) one by one.
    if (parts.size() != 4 || parts[2].size() != 0) {
      AnswerOne(shard, &parts);
      continue;
    }
    batch.clear();
    if (!SplitBatch(parts, 2, &batch)) {
      NLOG_WARN("event=malformed-batch shard=%zu bytes=%zu", shard,
                parts.back().size());
    }
    for (Parts& one : batch) AnswerOne(shard, &one);
  }
}

void Routed::AnswerOne(size_t shard, Parts* answer) {
  Parts& parts = *answer;
  if (parts.size() < 2) return;
  Header h;
  const zmq::message_t& body = parts.back();
  uint64_t trace = PeekHeader(body.data(), body.size(), &h) ? h.trace : 0;
  MsgType type = static_cast<MsgType>(h.type);
  std::string error;
  if (type == MsgType::kLeaderNotice || type == MsgType::kNotLeader) {
    Frame f;
    if (DecodeFrame(body.data(), body.size(), &f).ok()) {
      if (type == MsgType::kLeaderNotice) {
        LeaderNotice notice;
        if (DecodeBody(f, &notice).ok()) {
          LearnLeader(notice.shard, notice.leader, notice.term);
        }
        return;  // routed's own question: nothing to pass on
      }
      NotLeader not_leader;
      if (DecodeBody(f, &not_leader).ok()) {
        LearnLeader(not_leader.shard, not_leader.leader, not_leader.term);
      }
    }
    if (parts.size() < 3) return;
    // The client retries; by then routed sends to the leader.
    error = EncodeError(h, Status(ErrorCode::kUnavailable,
                                  "shard " + std::to_string(shard) +
                                      " is changing its leader; try again"));
  }
  const std::string_view frame =
      error.empty()
          ? std::string_view(static_cast<const char*>(body.data()), body.size())
          : std::string_view(error);
  // Without the replica's name: [frontd, envelope] or a shard's hand-off
  // link.
  Parts route;
  for (size_t i = 1; i + 1 < parts.size(); ++i)
    route.emplace_back(parts[i].data(), parts[i].size());
  NLOG_TRACE(trace, "event=answer type=%s shard=%zu",
             LogValue(MsgTypeName(type)).c_str(), shard);
  ToFront(route, route.size(), frame);
}

}  // namespace routed
}  // namespace natter

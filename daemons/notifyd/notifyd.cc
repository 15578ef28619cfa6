#include "daemons/notifyd/notifyd.h"

#include "common/log.h"
#include "common/net.h"

namespace natter {
namespace notifyd {
namespace {

// The endpoint to bind: value, or else the first of the cell's list.
Status FirstOr(const std::string& value, const std::vector<std::string>& list,
               const char* what, std::string* out) {
  if (value.empty() && list.empty()) {
    return Status(ErrorCode::kBadRequest, std::string(what) + ": no endpoint");
  }
  *out = BindAddress(!value.empty() ? value : list.front());
  return Status::Ok();
}

}  // namespace

DaemonSpec Spec() {
  return DaemonSpec("natter-notifyd", "notifyd", &MakeService<Notifyd>);
}

Status Notifyd::Create(const Config& config, zmq::context_t& ctx,
                       std::unique_ptr<Notifyd>* out) {
  std::unique_ptr<Notifyd> n(new Notifyd(ctx));
  Status s = DaemonKeys::Create(config, &n->keys_);
  if (s.ok()) {
    s = FirstOr(config.Get("listen-in"), config.GetList("notifyd-in"),
                "notifyd-in", &n->listen_in_);
  }
  if (s.ok()) {
    s = FirstOr(config.Get("listen-out"), config.GetList("notifyd-out"),
                "notifyd-out", &n->listen_out_);
  }
  if (s.ok()) s = config.GetUint("drop-every", &n->drop_every_);
  if (!s.ok()) return s;
  *out = std::move(n);
  return Status::Ok();
}

Status Notifyd::Start() {
  Status s = keys_.Start(ctx_);
  if (!s.ok()) return s;
  in_ = MakeDaemonSocket(ctx_, zmq::socket_type::pull, 0);
  out_ = MakeDaemonSocket(ctx_, zmq::socket_type::pub, 0);
  SetCurveServer(in_, keys_.identity(), kZapDomainNotifydIn, listen_in_);
  SetCurveServer(out_, keys_.identity(), kZapDomainNotifydOut, listen_out_);
  try {
    PrepareEndpoint(listen_in_);
    PrepareEndpoint(listen_out_);
    in_.bind(listen_in_);
    out_.bind(listen_out_);
  } catch (const zmq::error_t& e) {
    return Status(ErrorCode::kBadRequest,
                  listen_in_ + ", " + listen_out_ + ": " + e.what());
  }
  if (drop_every_ != 0) {
    NLOG_WARN("event=testing-drops drop_every=%llu",
              static_cast<unsigned long long>(drop_every_));
  }
  return Status::Ok();
}

void Notifyd::RunOnce(int timeout_ms) {
  std::vector<zmq::pollitem_t> items = {{in_.handle(), 0, ZMQ_POLLIN, 0}};
  Poll(items, timeout_ms);
  auto start = std::chrono::steady_clock::now();
  Parts parts;
  for (int n = 0; n < 4096 && RecvParts(in_, &parts); ++n) {
    if (parts.size() != 2) continue;
    const std::string_view body(static_cast<const char*>(parts[1].data()),
                                parts[1].size());
    if (parts[0].size() == 8) {
      FanOut(std::string_view(static_cast<const char*>(parts[0].data()), 8),
             body);
    } else if (parts[0].size() == 0 &&
               !ForEachBatchEntry(body, [this](std::string_view topic,
                                               std::string_view frame) {
                 FanOut(topic, frame);
               })) {
      ++malformed_;
      NLOG_WARN("event=malformed-batch bytes=%zu", body.size());
    }
  }
  // Turns with work only: an idle turn says nothing of waiting.
  if (items[0].revents & ZMQ_POLLIN) {
    turn_.Record(std::chrono::duration<double, std::micro>(
                     std::chrono::steady_clock::now() - start)
                     .count());
  }
}

void Notifyd::FanOut(std::string_view topic, std::string_view frame) {
  ++forwarded_;
  if (drop_every_ != 0 && forwarded_ % drop_every_ == 0) {
    ++dropped_;
    return;
  }
  Header h;
  uint64_t trace = PeekHeader(frame.data(), frame.size(), &h) ? h.trace : 0;
  Parts parts;
  parts.emplace_back(topic.data(), topic.size());
  parts.emplace_back(frame.data(), frame.size());
  if (SendParts(out_, parts)) {
    NLOG_TRACE(trace, "event=fan-out user=%llu",
               static_cast<unsigned long long>(h.user.value));
  } else {
    ++dropped_;
  }
}

void Notifyd::Stats(MetricSet* set) {
  set->Counter("natter_notifyd_events_total",
               "Events taken in from the shards.",
               static_cast<double>(forwarded_));
  set->Counter("natter_notifyd_malformed_total",
               "Batches of events from a shard that did not parse (the "
               "events before the fault went out).",
               static_cast<double>(malformed_));
  set->Counter("natter_notifyd_dropped_total",
               "Events not published (drop-every, for tests).",
               static_cast<double>(dropped_));
  set->Summary("natter_notifyd_turn_seconds",
               "The work of one busy turn of notifyd's loop (what an event may "
               "wait behind).",
               turn_);
}

}  // namespace notifyd
}  // namespace natter

#include "common/control.h"

#include <algorithm>
#include <chrono>

#include "common/log.h"
#include "common/net.h"

namespace natter {
namespace {

// The most HTTP connections read at once, and the longest request head.
constexpr size_t kMaxHttpConnections = 64;
constexpr size_t kMaxHttpRequest = 8192;

std::string HttpResponse(const std::string& status, const std::string& type,
                         const std::string& body) {
  return "HTTP/1.0 " + status + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

Status AskControl(zmq::context_t& ctx, const std::string& endpoint,
                  const CurveIdentity& me, const std::string& request,
                  int timeout_ms, std::string* answer) {
  zmq::socket_t socket(ctx, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::maxmsgsize,
             static_cast<int64_t>(kMaxDaemonFrameBytes) * 4);
  Status s = ConnectTo(socket, me, endpoint);
  if (!s.ok()) return s;
  socket.send(zmq::buffer(request), zmq::send_flags::dontwait);
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      return Status(ErrorCode::kUnavailable,
                    endpoint.substr(0, endpoint.find('@')) +
                        " did not answer within " +
                        std::to_string(timeout_ms / 1000.0).substr(0, 4) + "s");
    }
    std::vector<zmq::pollitem_t> items = {{socket.handle(), 0, ZMQ_POLLIN, 0}};
    Poll(items, std::min<long>(left, 200));
    zmq::message_t msg;
    if (socket.recv(msg, zmq::recv_flags::dontwait)) {
      *answer = msg.to_string();
      return Status::Ok();
    }
  }
}

ControlServer::ControlServer(zmq::context_t& ctx, std::string daemon)
    : ctx_(ctx), daemon_(std::move(daemon)) {}

Status ControlServer::Start(const std::string& control,
                            const std::string& metrics,
                            const CurveIdentity& me) {
  try {
    if (!control.empty()) {
      control_ = MakeSocket(ctx_, zmq::socket_type::router);
      SetCurveServer(control_, me, kZapDomainControl, control);
      PrepareEndpoint(control);
      control_.bind(BindAddress(control));
    }
    if (!metrics.empty()) {
      http_ = zmq::socket_t(ctx_, zmq::socket_type::stream);
      http_.set(zmq::sockopt::linger, 0);
      http_.set(zmq::sockopt::stream_notify, 0);
      http_.bind(metrics);
    }
  } catch (const zmq::error_t& e) {
    return Status(ErrorCode::kBadRequest,
                  (control_ && !http_ ? metrics : control) + ": " + e.what());
  }
  if (!control.empty() || !metrics.empty()) {
    NLOG_INFO("event=control control=%s metrics=%s",
              LogValue(control.empty() ? "off" : control).c_str(),
              LogValue(metrics.empty() ? "off" : metrics).c_str());
  }
  return Status::Ok();
}

void ControlServer::Serve(const StatsFn& stats, const CommandFn& command) {
  if (control_) ServeControl(stats, command);
  if (http_) ServeHttp(stats);
}

std::string ControlServer::Collect(const StatsFn& stats,
                                   std::vector<Metric>* out) {
  MetricSet set;
  AddProcessMetrics(&set);
  if (stats) stats(&set);
  *out = std::move(set.metrics());
  return daemon_;
}

void ControlServer::ServeControl(const StatsFn& stats,
                                 const CommandFn& command) {
  Parts parts;
  for (int n = 0; n < 64 && RecvParts(control_, &parts); ++n) {
    if (parts.size() != 2) continue;
    std::string identity = parts[0].to_string();
    zmq::socket_t* socket = &control_;
    Reply reply = [socket, identity](const std::string& frame) {
      Parts out;
      out.push_back(ToMessage(identity));
      out.push_back(ToMessage(frame));
      SendParts(*socket, out);
    };
    Frame frame;
    Status s = DecodeFrame(parts[1].data(), parts[1].size(), &frame);
    if (!s.ok()) {
      reply(EncodeError(frame.header, s));
      continue;
    }
    if (frame.type() == MsgType::kStats) {
      StatsReply r;
      r.daemon = Collect(stats, &r.metrics);
      reply(EncodeReply(frame.header, r));
      continue;
    }
    if (!command || !command(frame, reply)) {
      reply(EncodeError(frame.header,
                        Status(ErrorCode::kBadRequest,
                               std::string(daemon_) + " does not take " +
                                   MsgTypeName(frame.type()))));
    }
  }
}

void ControlServer::ServeHttp(const StatsFn& stats) {
  Parts parts;
  for (int n = 0; n < 64 && RecvParts(http_, &parts); ++n) {
    if (parts.size() != 2) continue;
    std::string id = parts[0].to_string();
    auto close = [&] {
      partial_.erase(id);
      Parts out;
      out.push_back(ToMessage(id));
      out.push_back(zmq::message_t());
      SendParts(http_, out);
    };
    if (parts[1].size() == 0) continue;  // a peer went (notifications are off)
    if (!partial_.count(id) && partial_.size() >= kMaxHttpConnections) {
      // A slow or vanished peer's half request makes room.
      partial_.erase(partial_.begin());
    }
    std::string& head = partial_[id];
    head.append(parts[1].data<char>(), parts[1].size());
    size_t end = head.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (head.size() > kMaxHttpRequest) close();
      continue;
    }
    std::string line = head.substr(0, head.find("\r\n"));
    std::string response;
    if (line.compare(0, 13, "GET /metrics ") == 0 ||
        line.compare(0, 6, "GET / ") == 0) {
      std::vector<Metric> metrics;
      std::string daemon = Collect(stats, &metrics);
      response =
          HttpResponse("200 OK", "text/plain; version=0.0.4",
                       PrometheusText(metrics, "daemon=\"" + daemon + "\""));
    } else {
      response = HttpResponse("404 Not Found", "text/plain", "GET /metrics\n");
    }
    Parts out;
    out.push_back(ToMessage(id));
    out.push_back(ToMessage(response));
    SendParts(http_, out);
    close();
  }
}

}  // namespace natter

#include "common/net.h"

#include <sys/stat.h>

#include <cerrno>

#include "common/proto.h"

namespace natter {

zmq::socket_t MakeSocket(zmq::context_t& ctx, zmq::socket_type type,
                         int linger_ms) {
  zmq::socket_t s(ctx, type);
  s.set(zmq::sockopt::linger, linger_ms);
  s.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxFrameBytes));
  return s;
}

int Poll(std::vector<zmq::pollitem_t>& items, long timeout_ms) {
  int rc = zmq_poll(items.data(), static_cast<int>(items.size()), timeout_ms);
  if (rc < 0) {
    if (zmq_errno() == EINTR) return 0;
    throw zmq::error_t();
  }
  return rc;
}

bool RecvParts(zmq::socket_t& socket, Parts* parts) {
  parts->clear();
  try {
    auto n = zmq::recv_multipart(socket, std::back_inserter(*parts),
                                 zmq::recv_flags::dontwait);
    return n.has_value() && *n > 0;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR || e.num() == EAGAIN) return false;
    throw;
  }
}

bool SendParts(zmq::socket_t& socket, Parts& parts) {
  try {
    auto n = zmq::send_multipart(socket, parts, zmq::send_flags::dontwait);
    return n.has_value();
  } catch (const zmq::error_t&) {
    return false;  // EHOSTUNREACH: the peer has gone
  }
}

bool SendRouted(zmq::socket_t& socket, const Parts& route, size_t route_len,
                const std::string& body) {
  Parts out;
  out.reserve(route_len + 1);
  for (size_t i = 0; i < route_len; ++i) {
    out.emplace_back(route[i].data(), route[i].size());
  }
  out.push_back(ToMessage(body));
  return SendParts(socket, out);
}

zmq::message_t ToMessage(const std::string& s) {
  return zmq::message_t(s.data(), s.size());
}

void PrepareEndpoint(const std::string& endpoint) {
  const std::string prefix = "ipc://";
  if (endpoint.compare(0, prefix.size(), prefix) != 0) return;
  std::string path = endpoint.substr(prefix.size());
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return;
  ::mkdir(path.substr(0, slash).c_str(), 0700);
}

}  // namespace natter

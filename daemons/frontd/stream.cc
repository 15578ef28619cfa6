#include "daemons/frontd/stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "common/log.h"

namespace natter {
namespace frontd {
namespace {

constexpr uint64_t kListenId = 0;

Status Errno(const std::string& endpoint, const char* what) {
  return Status(ErrorCode::kBadRequest,
                endpoint + ": " + what + ": " + std::strerror(errno));
}

// The peer's address as text, without its port ("" if it has none).
std::string PeerAddress(const sockaddr_storage& peer) {
  char text[INET6_ADDRSTRLEN] = {};
  if (peer.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&peer);
    if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof text)) return text;
  } else if (peer.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&peer);
    if (inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text)) return text;
  }
  return "";
}

}  // namespace

StreamServer::~StreamServer() {
  for (const auto& [id, fd] : conns_) ::close(fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

Status StreamServer::Bind(const std::string& endpoint) {
  const std::string tcp = "tcp://", ipc = "ipc://";
  sockaddr_storage address{};
  socklen_t address_len = 0;
  if (endpoint.compare(0, ipc.size(), ipc) == 0) {
    std::string path = endpoint.substr(ipc.size());
    auto* un = reinterpret_cast<sockaddr_un*>(&address);
    un->sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof un->sun_path)
      return Status(ErrorCode::kBadRequest, endpoint + ": path too long");
    std::memcpy(un->sun_path, path.data(), path.size());
    if (path[0] == '@') {
      un->sun_path[0] = '\0';  // abstract
    } else {
      ::unlink(path.c_str());  // one left by a frontd before
    }
    address_len =
        static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else if (endpoint.compare(0, tcp.size(), tcp) == 0) {
    std::string rest = endpoint.substr(tcp.size());
    const size_t colon = rest.rfind(':');
    if (colon == std::string::npos)
      return Status(ErrorCode::kBadRequest, endpoint + ": no port");
    std::string host = rest.substr(0, colon);
    const std::string port = rest.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (host == "*") {
      hints.ai_family = AF_INET;
      host.clear();
    }
    addrinfo* found = nullptr;
    const int rc =
        getaddrinfo(host.empty() ? nullptr : host.c_str(),
                    port == "*" ? "0" : port.c_str(), &hints, &found);
    if (rc != 0 || found == nullptr) {
      return Status(ErrorCode::kBadRequest, endpoint + ": " + gai_strerror(rc));
    }
    std::memcpy(&address, found->ai_addr, found->ai_addrlen);
    address_len = found->ai_addrlen;
    freeaddrinfo(found);
    tcp_ = true;
  } else {
    return Status(ErrorCode::kBadRequest,
                  endpoint + ": only tcp:// and ipc:// endpoints");
  }
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return Errno(endpoint, "epoll");
  listen_fd_ = ::socket(address.ss_family,
                        SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return Errno(endpoint, "socket");
  if (tcp_) {
    const int on = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  }
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), address_len) !=
      0) {
    return Status(ErrorCode::kBadRequest,
                  endpoint + ": " + std::strerror(errno));
  }
  if (::listen(listen_fd_, SOMAXCONN) != 0) return Errno(endpoint, "listen");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenId;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0)
    return Errno(endpoint, "epoll_ctl");
  buffer_.resize(kReadBytes);
  return Status::Ok();
}

void StreamServer::Resume() {
  if (accepting_ || epoll_fd_ < 0 || Clock::now() < resume_accepting_) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenId;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) == 0)
    accepting_ = true;
}

void StreamServer::Poll(const Handlers& handlers, int max_events) {
  if (epoll_fd_ < 0) return;
  Resume();
  std::vector<epoll_event> events(static_cast<size_t>(max_events));
  const int n = ::epoll_wait(epoll_fd_, events.data(), max_events, 0);
  for (int i = 0; i < n; ++i) {
    const uint64_t id = events[i].data.u64;
    if (id == kListenId) {
      Accept(handlers);
      continue;
    }
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;  // closed by an earlier handler
    const int fd = it->second;
    const ssize_t got = ::recv(fd, buffer_.data(), buffer_.size(), 0);
    if (got > 0) {
      handlers.data(id,
                    std::string_view(buffer_.data(), static_cast<size_t>(got)));
      continue;
    }
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      continue;
    // The peer closed (0) or the connection failed.
    ::close(fd);
    conns_.erase(it);
    handlers.closed(id);
  }
}

void StreamServer::Accept(const Handlers& handlers) {
  // A bounded number a call: a storm of connections waits in the backlog
  // while those connected are served.
  for (int k = 0; k < 256; ++k) {
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof peer;
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer),
                             &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        NLOG_WARN("event=accept-paused error=%s",
                  LogValue(std::strerror(errno)).c_str());
        PauseAccepting();
      }
      return;  // EAGAIN: none left; others (a connection aborted): next time
    }
    if (tcp_) {
      const int on = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    }
    const uint64_t id = next_id_++;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      continue;
    }
    conns_[id] = fd;
    handlers.opened(id, tcp_ ? PeerAddress(peer) : std::string());
  }
}

void StreamServer::PauseAccepting() {
  // The listening descriptor stays readable while connections wait: out of
  // the poll until some are free, or the loop would spin.
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
  accepting_ = false;
  resume_accepting_ = Clock::now() + kAcceptPause;
}

ssize_t StreamServer::Write(uint64_t id, const char* data, size_t size) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return -1;
  const ssize_t sent = ::send(it->second, data, size, MSG_NOSIGNAL);
  if (sent >= 0) return sent;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
  return -1;
}

void StreamServer::Close(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  ::close(it->second);
  conns_.erase(it);
}

}  // namespace frontd
}  // namespace natter

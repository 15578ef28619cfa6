// The clients' connections as byte streams, served from frontd's own
// thread with epoll: accept, read and write straight on the descriptors.
//
// frontd speaks ZMTP and CURVE itself (zmtp.h), so it needs of the
// transport only bytes in and out.  A ZeroMQ STREAM socket gave it that
// through an I/O thread: every read and write crossed a pipe between two
// threads, and a lone frame woke both (on two cores, the wakeups were
// most of what a quiet client's message cost frontd).  Here the thread
// that seals a frame writes it.
//
// Reads are bounded: at most kReadBytes a connection a call, so that one
// client that sends fast is held back by TCP and the others are served.
// Not thread-safe.
#ifndef NATTER_DAEMONS_FRONTD_STREAM_H_
#define NATTER_DAEMONS_FRONTD_STREAM_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace natter {
namespace frontd {

class StreamServer {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kReadBytes = 8 * 1024;
  // How long accepting waits when the process has no descriptor left.
  static constexpr Clock::duration kAcceptPause =
      std::chrono::milliseconds(100);

  StreamServer() = default;
  ~StreamServer();
  StreamServer(const StreamServer&) = delete;
  StreamServer& operator=(const StreamServer&) = delete;

  // Listens at tcp://host:port (host an address, a name, or * for every
  // IPv4 address; [address] for IPv6) or ipc://path (a Unix socket; a
  // path starting with @ is in the abstract namespace).
  Status Bind(const std::string& endpoint);
  // Readable when there is something for Poll.
  int fd() const { return epoll_fd_; }

  struct Handlers {
    // A new connection and its peer's address ("" for ipc://).
    std::function<void(uint64_t id, const std::string& address)> opened;
    std::function<void(uint64_t id, std::string_view bytes)> data;
    // The peer closed it, or it failed; its descriptor is closed.
    std::function<void(uint64_t id)> closed;
  };
  // Accepts and reads what is ready, without waiting: at most max_events
  // descriptors.
  void Poll(const Handlers& handlers, int max_events = 1024);
  // Writes without waiting: the bytes the kernel took (perhaps fewer than
  // size, perhaps 0), or -1 if the connection has gone.
  ssize_t Write(uint64_t id, const char* data, size_t size);
  // Closes a connection (no event follows).
  void Close(uint64_t id);
  size_t connections() const { return conns_.size(); }
  // False for kAcceptPause after the process ran out of descriptors.
  bool accepting() const { return accepting_; }
  // Listens again once the pause is over (fd() turns readable if
  // connections wait); Poll does it too, but nothing may make fd()
  // readable meanwhile: call it from the loop's timer as well.
  void Resume();

 private:
  void Accept(const Handlers& handlers);
  void PauseAccepting();

  int epoll_fd_ = -1;
  int listen_fd_ = -1;
  bool tcp_ = false;
  bool accepting_ = true;
  Clock::time_point resume_accepting_{};
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, int> conns_;  // id -> descriptor
  std::vector<char> buffer_;
};

}  // namespace frontd
}  // namespace natter

#endif  // NATTER_DAEMONS_FRONTD_STREAM_H_

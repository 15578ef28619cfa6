// frontd's rules for each request a client may send: a request is checked
// (ids above 0, texts and emoji acceptable, pages clamped to their limits)
// and made again under frontd's own header (the session's user and device,
// frontd's trace id), or refused with an error.  Apart from sockets, so
// tests drive it with decoded requests.
#ifndef NATTER_DAEMONS_FRONTD_REQUEST_CHECK_H_
#define NATTER_DAEMONS_FRONTD_REQUEST_CHECK_H_

#include <string>

#include "common/proto.h"

namespace natter {
namespace frontd {

// A visitor for VisitBody: after it returns ok, frame() is what to pass to
// routed, or pong() says frontd answers itself (a ping).
class RequestCheck {
 public:
  // h: the header the request goes on with.
  explicit RequestCheck(const Header& h) : h_(h) {}

  Status operator()(const Send& q);
  Status operator()(Sync q);
  Status operator()(const Ack& q);
  Status operator()(const React& q);
  Status operator()(const MarkSeen& q);
  Status operator()(History q);
  Status operator()(const Chats& q);
  Status operator()(const Ping&);
  // Anything else (a hello is frontd's own business, the rest are not
  // requests a client makes).
  template <typename Other>
  Status operator()(const Other&) {
    return Status(ErrorCode::kBadRequest,
                  std::string("not a client request: ") +
                      MsgTypeName(FrameOf<Other>::kType));
  }

  const std::string& frame() const { return frame_; }
  bool pong() const { return pong_; }

 private:
  template <typename Body>
  Status Pass(const Body& body) {
    frame_ = EncodeFrame(h_, body);
    return Status::Ok();
  }

  Header h_;
  std::string frame_;
  bool pong_ = false;
};

}  // namespace frontd
}  // namespace natter

#endif  // NATTER_DAEMONS_FRONTD_REQUEST_CHECK_H_

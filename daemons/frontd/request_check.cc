#include "daemons/frontd/request_check.h"

#include <algorithm>

#include "common/validate.h"

namespace natter {
namespace frontd {
namespace {

Status PeerAboveZero(UserId peer) {
  if (peer.value != 0) return Status::Ok();
  return Status(ErrorCode::kBadRequest, "the peer must be a user id above 0");
}

}  // namespace

Status RequestCheck::operator()(const Send& q) {
  Status s = ValidateSend(q);
  return s.ok() ? Pass(q) : s;
}

Status RequestCheck::operator()(Sync q) {
  q.limit = std::clamp<uint32_t>(q.limit, 1, kMaxSyncPage);
  return Pass(q);
}

Status RequestCheck::operator()(const Ack& q) { return Pass(q); }

Status RequestCheck::operator()(const React& q) {
  Status s = ValidateReact(q);
  return s.ok() ? Pass(q) : s;
}

Status RequestCheck::operator()(const MarkSeen& q) {
  Status s = PeerAboveZero(q.peer);
  return s.ok() ? Pass(q) : s;
}

Status RequestCheck::operator()(History q) {
  Status s = PeerAboveZero(q.peer);
  if (!s.ok()) return s;
  if (q.limit == 0) q.limit = kDefaultHistoryPage;
  q.limit = std::min(q.limit, kMaxHistoryPage);
  return Pass(q);
}

Status RequestCheck::operator()(const Chats& q) { return Pass(q); }

Status RequestCheck::operator()(const Ping&) {
  pong_ = true;
  return Status::Ok();
}

}  // namespace frontd
}  // namespace natter

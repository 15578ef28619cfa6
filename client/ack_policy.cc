#include "client/ack_policy.h"

namespace natter {

void AckPolicy::HandedOut(bool urgent, Time now) {
  if (unacked_since_ == Time{}) unacked_since_ = now;
  urgent_ = urgent_ || urgent;
}

bool AckPolicy::Due(Seq last, Time now) {
  if (last <= acked_) return false;
  if (unacked_since_ == Time{}) unacked_since_ = now;
  return urgent_
             ? now - last_ack_ >= std::chrono::milliseconds(kAckDelayMs)
             : now - unacked_since_ >= std::chrono::milliseconds(kLazyAckMs);
}

void AckPolicy::Sent(Seq seq, Time now) {
  acked_ = seq;
  last_ack_ = now;
  unacked_since_ = Time{};
  urgent_ = false;
}

}  // namespace natter

// When a device acknowledges what it was handed out.  An acknowledgement
// (ack) advances the device's cursor on its home shard; the first ack of a
// message by any device of its recipient makes the sender's "delivered".
// An ack has no answer: a sync's reply says where the cursor is
// (Confirmed), and one lost is covered by the next.
//
// - At once after a message from someone else (its sender waits for
//   "delivered"), then at most one each kAckDelayMs.
// - Lazily after anything else (receipts, reactions, this device's own
//   seqs, its user's messages from other devices): kLazyAckMs after the
//   first of them, so that they ride along with the next.
// - So under load they merge: one ack covers all that came within
//   kAckDelayMs.
//
// Time comes in as arguments, so a test drives it without sockets or
// sleeps.  Not thread-safe.
#ifndef NATTER_CLIENT_ACK_POLICY_H_
#define NATTER_CLIENT_ACK_POLICY_H_

#include <chrono>

#include "common/types.h"

namespace natter {

constexpr int kAckDelayMs = 50;
constexpr int kLazyAckMs = 1000;

class AckPolicy {
 public:
  using Time = std::chrono::steady_clock::time_point;

  // The device's cursor on the home shard when the client began: nothing
  // up to it needs an ack.
  void Begin(Seq cursor) { acked_ = confirmed_ = cursor; }
  // Something was handed out that the next ack covers; urgent: a message
  // from someone else.
  void HandedOut(bool urgent, Time now);
  // Whether to send an ack for `last` (the newest seq handed out) now.
  bool Due(Seq last, Time now);
  // An ack for seq went on the wire.
  void Sent(Seq seq, Time now);
  // The home shard has the cursor (a sync's reply says so).
  void Confirmed(Seq cursor) {
    if (cursor > confirmed_) confirmed_ = cursor;
  }
  // An ack may have been lost (a sync's reply showed the cursor short of
  // it, or the session was made again): the next one covers what it did.
  void Lost() { acked_ = confirmed_; }

  Seq acked() const { return acked_; }  // the last ack sent
  Seq confirmed() const {
    return confirmed_;
  }  // the cursor the shard confirmed

 private:
  Seq acked_;
  Seq confirmed_;
  Time last_ack_{};
  Time unacked_since_{};  // the oldest thing not yet acked
  bool urgent_ = false;
};

}  // namespace natter

#endif  // NATTER_CLIENT_ACK_POLICY_H_

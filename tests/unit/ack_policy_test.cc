// When a device acknowledges what it was handed out, driven by hand: time
// a number of milliseconds.
#include "client/ack_policy.h"

#include <catch2/catch.hpp>

using namespace natter;

namespace {

AckPolicy::Time At(int ms) {
  return AckPolicy::Time(std::chrono::milliseconds(ms));
}

}  // namespace

TEST_CASE(
    "an ack after a message from someone else goes at once, then within "
    "kAckDelayMs") {
  AckPolicy acks;
  acks.Begin(Seq(0));
  acks.HandedOut(true, At(100000));
  CHECK(acks.Due(Seq(1), At(100000)));
  acks.Sent(Seq(1), At(100000));
  CHECK(acks.acked() == Seq(1));
  CHECK_FALSE(acks.Due(Seq(1), At(200000)));  // nothing new
  acks.HandedOut(true, At(100010));
  CHECK_FALSE(acks.Due(Seq(2), At(100000 + kAckDelayMs - 1)));
  CHECK(acks.Due(Seq(2), At(100000 + kAckDelayMs)));
}

TEST_CASE("a lazy ack goes kLazyAckMs after the first thing it covers") {
  AckPolicy acks;
  acks.Begin(Seq(0));
  acks.HandedOut(false, At(1000));
  acks.HandedOut(false, At(1500));
  CHECK_FALSE(acks.Due(Seq(2), At(1000 + kLazyAckMs - 1)));
  CHECK(acks.Due(Seq(2), At(1000 + kLazyAckMs)));
  // A message from someone else makes it urgent.
  acks.HandedOut(true, At(1100));
  CHECK(acks.Due(Seq(3), At(1100)));
}

TEST_CASE(
    "nothing up to the shard's cursor needs an ack; a lost one is covered by "
    "the next") {
  AckPolicy acks;
  acks.Begin(Seq(5));
  CHECK(acks.confirmed() == Seq(5));
  CHECK_FALSE(acks.Due(Seq(5), At(100000)));
  acks.Sent(Seq(8), At(0));
  acks.Confirmed(Seq(7));
  acks.Confirmed(Seq(6));  // an older answer
  CHECK(acks.confirmed() == Seq(7));
  acks.Lost();
  CHECK(acks.acked() == Seq(7));
  CHECK_FALSE(acks.Due(Seq(8), At(1000)));
  CHECK(acks.Due(Seq(8), At(1000 + kLazyAckMs)));
}

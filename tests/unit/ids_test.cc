#include "common/ids.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <unordered_set>

#include "common/shard.h"
#include "common/token.h"
#include "daemons/routed/routed.h"
#include "tests/support/temp_dir.h"

using namespace natter;

TEST_CASE(
    "ids from one generator strictly increase and never repeat in a burst") {
  SnowflakeGenerator gen(3);
  uint64_t now = NowMs();
  MessageId last;
  std::unordered_set<uint64_t> seen;
  // 100,000 ids in the same millisecond: the sequence runs out six times
  // and the generator borrows from the next milliseconds.
  for (int i = 0; i < 100000; ++i) {
    MessageId id = gen.Next(now);
    REQUIRE(id > last);
    REQUIRE(seen.insert(id.value).second);
    last = id;
  }
}

TEST_CASE("ids keep increasing when the clock steps back") {
  SnowflakeGenerator gen(0);
  uint64_t now = NowMs();
  MessageId a = gen.Next(now);
  MessageId b = gen.Next(now - 5000);
  MessageId c = gen.Next(now - 10000);
  CHECK(b > a);
  CHECK(c > b);
}

TEST_CASE("two generators in the same millisecond make different ids") {
  SnowflakeGenerator g1(1), g2(2);
  uint64_t now = NowMs();
  CHECK(g1.Next(now) != g2.Next(now));
}

TEST_CASE("an id tells the millisecond it was made in") {
  SnowflakeGenerator gen(7);
  uint64_t now = NowMs();
  MessageId id = gen.Next(now);
  CHECK(TimestampOf(id) == now);
  CHECK(FirstIdAt(now) <= id);
  CHECK(id <= LastIdAt(now));
  CHECK(LastIdAt(now - 1) < id);
  CHECK(LastIdAt(1000) == MessageId(0));  // before the natter epoch
}

TEST_CASE("AdvancePast makes the generator skip ids handed out before") {
  SnowflakeGenerator gen(0);
  uint64_t now = NowMs();
  MessageId future = SnowflakeGenerator(0).Next(now + 60000);
  gen.AdvancePast(future);
  CHECK(gen.Next(now) > future);
}

TEST_CASE("the home shard is stable, in range and spread evenly") {
  CHECK(HomeShard(UserId(12345), 1) == 0);
  uint32_t counts[3] = {0, 0, 0};
  for (uint64_t u = 1; u <= 30000; ++u) {
    uint32_t s = HomeShard(UserId(u), 3);
    REQUIRE(s < 3);
    REQUIRE(HomeShard(UserId(u), 3) == s);
    ++counts[s];
  }
  for (uint32_t c : counts) {
    CHECK(c > 9000);
    CHECK(c < 11000);
  }
}

TEST_CASE("growing the shard map moves only the users of the new shard") {
  int moved = 0;
  for (uint64_t u = 1; u <= 40000; ++u) {
    uint32_t before = HomeShard(UserId(u), 3), after = HomeShard(UserId(u), 4);
    if (before != after) {
      ++moved;
      REQUIRE(after == 3);
    }
  }
  CHECK(moved > 8000);  // about a quarter
  CHECK(moved < 12000);
}

namespace {

// A send as frontd passes it on, decided by a Router at now_ms.
MessageId IdOfSend(routed::Router& router, uint64_t now_ms) {
  Header h;
  h.type = static_cast<uint8_t>(MsgType::kSend);
  h.user = UserId(1);
  Send send;
  send.to = UserId(2);
  send.text = "x";
  send.client_msg_id = "c";
  Frame frame;
  std::string bytes = EncodeFrame(h, send);
  REQUIRE(DecodeFrame(bytes.data(), bytes.size(), &frame).ok());
  routed::Route route = router.Decide(frame, now_ms);
  REQUIRE(route.status.ok());
  Frame out;
  REQUIRE(DecodeFrame(route.frame.data(), route.frame.size(), &out).ok());
  StoreMessage sm;
  REQUIRE(DecodeBody(out, &sm).ok());
  return sm.message.id;
}

}  // namespace

TEST_CASE(
    "a restarted routed never reuses an id, even with the clock set back") {
  TempDir dir;
  std::string lease = dir.path() + "/routed.lease";
  uint64_t now = NowMs();
  MessageId last;
  {
    routed::Router first(1, 0);
    REQUIRE(first.UseLease(lease).ok());
    for (int i = 0; i < 1000; ++i) last = IdOfSend(first, now + i);
  }
  // The restart comes with the clock an hour back; without the lease the
  // generator would start over below `last`.
  routed::Router second(1, 0);
  REQUIRE(second.UseLease(lease).ok());
  MessageId next = IdOfSend(second, now - 3600 * 1000);
  CHECK(next > last);
  // And without a lease file, that is exactly what would happen.
  routed::Router forgetful(1, 0);
  CHECK(IdOfSend(forgetful, now - 3600 * 1000) < last);
}

TEST_CASE("the id lease is written once per ten seconds of ids, not per id") {
  TempDir dir;
  std::string lease = dir.path() + "/routed.lease";
  routed::Router router(1, 0);
  REQUIRE(router.UseLease(lease).ok());
  uint64_t now = NowMs();
  IdOfSend(router, now);
  std::string first;
  REQUIRE(ReadFirstLine(lease, &first));
  CHECK(first == std::to_string(now + IdLease::kLeaseAheadMs));
  for (int i = 1; i < 5000; ++i) IdOfSend(router, now + i);  // inside the lease
  std::string second;
  REQUIRE(ReadFirstLine(lease, &second));
  CHECK(second == first);
  IdOfSend(router, now + IdLease::kLeaseAheadMs + 1);
  REQUIRE(ReadFirstLine(lease, &second));
  CHECK(second == std::to_string(now + 2 * IdLease::kLeaseAheadMs + 1));
}

TEST_CASE("a damaged id lease stops routed rather than risk a reused id") {
  TempDir dir;
  std::string lease = dir.path() + "/routed.lease";
  FILE* f = std::fopen(lease.c_str(), "w");
  REQUIRE(f != nullptr);
  std::fputs("garbage\n", f);
  std::fclose(f);
  routed::Router router(1, 0);
  CHECK(router.UseLease(lease).code() == ErrorCode::kBadData);
}

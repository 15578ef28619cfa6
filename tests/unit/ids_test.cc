#include <catch2/catch.hpp>

#include <unordered_set>

#include "common/ids.h"
#include "common/shard.h"

using namespace natter;

TEST_CASE("ids from one generator strictly increase and never repeat in a burst") {
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
  CHECK(moved > 8000);   // about a quarter
  CHECK(moved < 12000);
}

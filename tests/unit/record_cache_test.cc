// stored's RecordCache (daemons/stored/record_cache.h): the records of
// the send path in memory, bounded in bytes.
#include "daemons/stored/record_cache.h"

#include <catch2/catch.hpp>
#include <string>

using namespace natter::stored;

TEST_CASE("RecordCache keeps conversations, cursors and ack marks only") {
  CHECK(RecordCache::Keeps("c12345678abcdefgh"));
  CHECK(RecordCache::Keeps("kuser-device"));
  CHECK(RecordCache::Keeps("a12345678"));
  CHECK_FALSE(RecordCache::Keeps("m..."));  // copies: read seldom
  CHECK_FALSE(RecordCache::Keeps("d..."));  // dedup: mostly not there
  CHECK_FALSE(RecordCache::Keeps("q..."));
  CHECK_FALSE(RecordCache::Keeps(""));
}

TEST_CASE("RecordCache gives back the newest value put, or nothing") {
  RecordCache cache(1 << 20);
  std::string v;
  CHECK_FALSE(cache.Get("c1", &v));
  cache.Put("c1", "one");
  REQUIRE(cache.Get("c1", &v));
  CHECK(v == "one");
  cache.Put("c1", "two");
  REQUIRE(cache.Get("c1", &v));
  CHECK(v == "two");
  CHECK(cache.hits() == 2);
  CHECK(cache.misses() == 1);
  cache.Clear();
  CHECK_FALSE(cache.Get("c1", &v));
  CHECK(cache.bytes() == 0);
}

TEST_CASE(
    "RecordCache stays within its bytes, keeps what is read, and never "
    "gives an older value after a newer one") {
  const size_t max = 100 * (RecordCache::kEntryOverhead + 10);
  RecordCache cache(max);
  std::string v;
  cache.Put("c-hot", "v0");
  for (int i = 0; i < 10000; ++i) {
    cache.Put("c" + std::to_string(i), "x");
    CHECK(cache.bytes() <= max);
    if (i % 20 == 0) {
      // Read often: it moves to the young half each time, so it stays.
      REQUIRE(cache.Get("c-hot", &v));
      CHECK(v == "v0");
    }
  }
  // A key whose older value went to the old half and a newer one was put
  // since: only the newer is ever seen, through every turn over.
  cache.Put("c-key", "old");
  for (int i = 0; i < 60; ++i) cache.Put("c-fill" + std::to_string(i), "x");
  cache.Put("c-key", "new");
  for (int i = 0; i < 300; ++i) {
    cache.Put("c-more" + std::to_string(i), "x");
    if (cache.Get("c-key", &v)) CHECK(v == "new");
  }
  // One value too large for half the bound is not kept at all, and the
  // smaller one before it under the same key is gone too.
  cache.Put("c-huge", "small");
  cache.Put("c-huge", std::string(max, 'x'));
  CHECK_FALSE(cache.Get("c-huge", &v));
  CHECK(cache.bytes() <= max);
}

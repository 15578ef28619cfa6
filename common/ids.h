// Snowflake message ids: 41 bits of milliseconds since the natter epoch,
// 8 bits of generator (one per routed), 14 bits of sequence.  Ids from one
// generator strictly increase, even when the clock steps back.
//
// Not thread-safe: each routed owns one generator.
#ifndef NATTER_COMMON_IDS_H_
#define NATTER_COMMON_IDS_H_

#include <cstdint>

#include "common/types.h"

namespace natter {

constexpr uint64_t kNatterEpochMs = 1704067200000ULL;  // 2024-01-01T00:00Z
constexpr int kSequenceBits = 14;
constexpr int kGeneratorBits = 8;
constexpr uint32_t kMaxGenerator = (1u << kGeneratorBits) - 1;

class SnowflakeGenerator {
 public:
  explicit SnowflakeGenerator(uint32_t generator);

  // The next id, given the wall clock in ms since the Unix epoch.  If the
  // clock went back or a millisecond's 16384 ids are used up, it borrows
  // from the next millisecond rather than repeat.
  MessageId Next(uint64_t now_unix_ms);

  // Never hand out an id at or below this one (restart safety).
  void AdvancePast(MessageId id);

 private:
  uint64_t generator_;
  uint64_t last_ms_ = 0;
  uint64_t sequence_ = 0;
};

// Unix milliseconds of the moment an id was made.
uint64_t TimestampOf(MessageId id);

// The smallest id made at or after unix_ms, and the largest made at or
// before it: bounds for "messages at time T".
MessageId FirstIdAt(uint64_t unix_ms);
MessageId LastIdAt(uint64_t unix_ms);

// Milliseconds since the Unix epoch, now.
uint64_t NowMs();

}  // namespace natter

#endif  // NATTER_COMMON_IDS_H_

// Snowflake message ids: 41 bits of milliseconds since the natter epoch,
// 8 bits of generator (one per routed), 14 bits of sequence.  Ids from one
// generator strictly increase, even when the clock steps back.
//
// Not thread-safe: each routed owns one generator.
#ifndef NATTER_COMMON_IDS_H_
#define NATTER_COMMON_IDS_H_

#include <cstdint>
#include <string>

#include "common/status.h"
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

// How far a generator's ids have gone, on disk, so a restart never reuses
// one — even with the clock set back across it.  The file holds a lease:
// a Unix ms time below which every id handed out so far lies.  The
// generator hands out ids below the lease; when it reaches it, the lease
// moves kLeaseAheadMs ahead (one fsync'd write every ten seconds of ids).
// After a restart, ids start at the recorded lease.
class IdLease {
 public:
  static constexpr uint64_t kLeaseAheadMs = 10000;

  // Reads the lease (a missing file: no ids yet); the first id after a
  // restart must be at or after *floor_unix_ms.
  Status Open(const std::string& path, uint64_t* floor_unix_ms);
  // True if an id made at unix_ms is inside the lease.
  bool Covers(uint64_t unix_ms) const { return unix_ms < until_ms_; }
  // Moves the lease past unix_ms and syncs it to disk.
  Status Extend(uint64_t unix_ms);

 private:
  std::string path_;
  uint64_t until_ms_ = 0;
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

#include "common/ids.h"

#include <chrono>

namespace natter {

SnowflakeGenerator::SnowflakeGenerator(uint32_t generator)
    : generator_(generator & kMaxGenerator) {}

MessageId SnowflakeGenerator::Next(uint64_t now_unix_ms) {
  uint64_t ms = now_unix_ms > kNatterEpochMs ? now_unix_ms - kNatterEpochMs : 0;
  if (ms <= last_ms_) {
    ms = last_ms_;
    if (++sequence_ >= (1u << kSequenceBits)) {
      ++ms;
      sequence_ = 0;
    }
  } else {
    sequence_ = 0;
  }
  last_ms_ = ms;
  return MessageId((ms << (kSequenceBits + kGeneratorBits)) |
                   (generator_ << kSequenceBits) | sequence_);
}

void SnowflakeGenerator::AdvancePast(MessageId id) {
  uint64_t ms = id.value >> (kSequenceBits + kGeneratorBits);
  uint64_t seq = id.value & ((1u << kSequenceBits) - 1);
  if (ms > last_ms_ || (ms == last_ms_ && seq > sequence_)) {
    last_ms_ = ms;
    sequence_ = seq;
  }
}

uint64_t TimestampOf(MessageId id) {
  return (id.value >> (kSequenceBits + kGeneratorBits)) + kNatterEpochMs;
}

MessageId FirstIdAt(uint64_t unix_ms) {
  uint64_t ms = unix_ms > kNatterEpochMs ? unix_ms - kNatterEpochMs : 0;
  return MessageId(ms << (kSequenceBits + kGeneratorBits));
}

MessageId LastIdAt(uint64_t unix_ms) {
  if (unix_ms < kNatterEpochMs) return MessageId(0);  // before any id
  return MessageId(FirstIdAt(unix_ms + 1).value - 1);
}

uint64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace natter

#include "common/ids.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "common/text.h"
#include "common/token.h"

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

Status IdLease::Open(const std::string& path, uint64_t* floor_unix_ms) {
  path_ = path;
  until_ms_ = 0;
  if (::access(path.c_str(), F_OK) == 0) {
    std::string line;
    std::optional<uint64_t> ms;
    if (ReadFirstLine(path, &line)) ms = ParseUint(line);
    if (!ms) {
      return Status(ErrorCode::kBadData,
                    path + ": not an id lease (a number of ms)");
    }
    until_ms_ = *ms;
  } else if (errno != ENOENT) {
    return Status(ErrorCode::kStorage, path + ": " + std::strerror(errno));
  }
  *floor_unix_ms = until_ms_;
  return Status::Ok();
}

Status IdLease::Extend(uint64_t unix_ms) {
  uint64_t until = unix_ms + kLeaseAheadMs;
  std::string tmp = path_ + ".new";
  std::string text = std::to_string(until) + "\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return Status(ErrorCode::kStorage, tmp + ": " + std::strerror(errno));
  bool ok = ::write(fd, text.data(), text.size()) ==
                static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path_.c_str()) != 0) {
    if (ok) saved = errno;
    ::unlink(tmp.c_str());
    return Status(ErrorCode::kStorage, path_ + ": " + std::strerror(saved));
  }
  // The rename is durable once the folder is synced.
  std::string dir = path_.find('/') == std::string::npos
                        ? "."
                        : path_.substr(0, path_.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  until_ms_ = until;
  return Status::Ok();
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

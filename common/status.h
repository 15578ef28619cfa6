// Status: the outcome of an operation that can fail in an expected way, as a
// value (LevelDB's include/leveldb/status.h).  The code is the wire error code
// (proto.h), so a Status travels to the client unchanged.
#ifndef NATTER_COMMON_STATUS_H_
#define NATTER_COMMON_STATUS_H_

#include <string>
#include <utility>

#include "common/error_codes.h"

namespace natter {

class Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

}  // namespace natter

#endif  // NATTER_COMMON_STATUS_H_

// The error codes of the wire protocol (natter(7)), and how the command line
// maps them to sysexits.
#ifndef NATTER_COMMON_ERROR_CODES_H_
#define NATTER_COMMON_ERROR_CODES_H_

#include <cstdint>

namespace natter {

enum class ErrorCode : uint16_t {
  kOk = 0,
  kMalformed = 1,   // the frame could not be decoded
  kBadRequest = 2,  // decoded, but not a request that makes sense
  kBadData = 3,     // text or emoji not acceptable
  kNoSession = 10,  // no hello on this connection (or it expired)
  kTokenMalformed = 11,
  kTokenBadSignature = 12,
  kTokenExpired = 13,
  kTokenUnknownKey = 14,
  kForbidden = 15,  // authenticated, but not allowed
  kNotFound = 20,
  kUnavailable = 30,  // retryable: a downstream daemon is not reachable
  kBusy = 31,         // retryable: a queue is full
  kStorage = 32,      // retryable: the store could not write
  kInternal = 40,
};

// The short name used in JSON and logs ("token-expired").
const char* ErrorCodeName(ErrorCode code);

// True when retrying the same request later may succeed.
bool IsRetryable(ErrorCode code);

// The sysexits(3) code the command line exits with for this error.
int ExitCodeFor(ErrorCode code);

}  // namespace natter

#endif  // NATTER_COMMON_ERROR_CODES_H_

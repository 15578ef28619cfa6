#include "common/status.h"

#include <sysexits.h>

namespace natter {

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(ErrorCodeName(code_)) + ": " + message_;
}

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk:
      return "ok";
    case ErrorCode::kMalformed:
      return "malformed";
    case ErrorCode::kBadRequest:
      return "bad-request";
    case ErrorCode::kBadData:
      return "bad-data";
    case ErrorCode::kNoSession:
      return "no-session";
    case ErrorCode::kTokenMalformed:
      return "token-malformed";
    case ErrorCode::kTokenBadSignature:
      return "token-bad-signature";
    case ErrorCode::kTokenExpired:
      return "token-expired";
    case ErrorCode::kTokenUnknownKey:
      return "token-unknown-key";
    case ErrorCode::kForbidden:
      return "forbidden";
    case ErrorCode::kNotFound:
      return "not-found";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kBusy:
      return "busy";
    case ErrorCode::kStorage:
      return "storage";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "unknown";
}

bool IsRetryable(ErrorCode code) {
  return code == ErrorCode::kUnavailable || code == ErrorCode::kBusy ||
         code == ErrorCode::kStorage || code == ErrorCode::kNoSession;
}

int ExitCodeFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk:
      return EX_OK;
    case ErrorCode::kMalformed:
    case ErrorCode::kBadRequest:
      return EX_USAGE;
    case ErrorCode::kBadData:
    case ErrorCode::kNotFound:
      return EX_DATAERR;
    case ErrorCode::kTokenMalformed:
    case ErrorCode::kTokenBadSignature:
    case ErrorCode::kTokenExpired:
    case ErrorCode::kTokenUnknownKey:
    case ErrorCode::kForbidden:
      return EX_NOPERM;
    case ErrorCode::kNoSession:
    case ErrorCode::kUnavailable:
    case ErrorCode::kBusy:
    case ErrorCode::kStorage:
      return EX_UNAVAILABLE;
    case ErrorCode::kInternal:
      return 1;
  }
  return 1;
}

}  // namespace natter

// What a client may ask: the checks frontd applies to every request before
// it goes further (natter(7) LIMITS).  The client library applies the same
// ones, so a bad message fails before it leaves the machine.
#ifndef NATTER_COMMON_VALIDATE_H_
#define NATTER_COMMON_VALIDATE_H_

#include <string>

#include "common/proto.h"
#include "common/status.h"

namespace natter {

Status ValidateSend(const Send& send);
Status ValidateDevice(const std::string& device);

}  // namespace natter

#endif  // NATTER_COMMON_VALIDATE_H_

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
// A device name: 1 to 64 bytes of UTF-8 without IsControlChar characters,
// without White_Space (U+00A0, U+2028, U+3000 ...) and without the
// invisible U+200B to U+200D, U+2060 to U+2064 and U+FEFF, so a name
// shows as what it is wherever it is printed or logged.
Status ValidateDevice(const std::string& device);
// A reaction: a message id, a peer above 0, an emoji (when set) of 1 to
// 64 bytes of UTF-8 without IsControlChar characters.
Status ValidateReact(const React& react);

}  // namespace natter

#endif  // NATTER_COMMON_VALIDATE_H_

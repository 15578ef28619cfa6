#include "common/validate.h"

#include "common/text.h"

namespace natter {
namespace {

// Unicode's White_Space property.
bool IsSpaceChar(char32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Format characters that show nothing: the zero-width space, non-joiner
// and joiner, the word joiner, the invisible operators, the byte order mark.
bool IsInvisibleChar(char32_t c) {
  return (c >= 0x200B && c <= 0x200D) || (c >= 0x2060 && c <= 0x2064) ||
         c == 0xFEFF;
}

}  // namespace

Status ValidateSend(const Send& send) {
  if (send.to.value == 0) {
    return Status(ErrorCode::kBadRequest,
                  "the recipient must be a user id above 0");
  }
  if (send.client_msg_id.empty() ||
      send.client_msg_id.size() > kMaxClientMsgIdBytes) {
    return Status(ErrorCode::kBadRequest,
                  "client_msg_id must be 1 to 64 bytes");
  }
  if (send.text.empty()) {
    return Status(ErrorCode::kBadData, "the text is empty");
  }
  if (send.text.size() > kMaxTextBytes) {
    return Status(ErrorCode::kBadData, "the text is longer than 4096 bytes");
  }
  if (!IsValidUtf8(send.text)) {
    return Status(ErrorCode::kBadData, "the text is not valid UTF-8");
  }
  return Status::Ok();
}

Status ValidateReact(const React& react) {
  if (react.peer.value == 0) {
    return Status(ErrorCode::kBadRequest, "the peer must be a user id above 0");
  }
  if (!react.emoji) return Status::Ok();
  const std::string& e = *react.emoji;
  if (e.empty() || e.size() > kMaxEmojiBytes) {
    return Status(ErrorCode::kBadData, "an emoji is 1 to 64 bytes");
  }
  if (!IsValidUtf8(e))
    return Status(ErrorCode::kBadData, "the emoji is not valid UTF-8");
  char32_t c;
  for (size_t i = 0; i < e.size();) {
    NextCodePoint(e, &i, &c);
    if (IsControlChar(c)) {
      return Status(ErrorCode::kBadData, "the emoji has control characters");
    }
  }
  return Status::Ok();
}

Status ValidateDevice(const std::string& device) {
  if (device.empty() || device.size() > kMaxDeviceBytes) {
    return Status(ErrorCode::kBadRequest, "a device name is 1 to 64 bytes");
  }
  if (!IsValidUtf8(device)) {
    return Status(ErrorCode::kBadRequest, "a device name is UTF-8");
  }
  char32_t c;
  for (size_t i = 0; i < device.size();) {
    NextCodePoint(device, &i, &c);
    if (IsControlChar(c) || IsSpaceChar(c) || IsInvisibleChar(c)) {
      return Status(
          ErrorCode::kBadRequest,
          "a device name has no spaces, control or invisible characters");
    }
  }
  return Status::Ok();
}

}  // namespace natter

#include "common/validate.h"

#include "common/text.h"

namespace natter {

Status ValidateSend(const Send& send) {
  if (send.to.value == 0) {
    return Status(ErrorCode::kBadRequest, "the recipient must be a user id above 0");
  }
  if (send.client_msg_id.empty() ||
      send.client_msg_id.size() > kMaxClientMsgIdBytes) {
    return Status(ErrorCode::kBadRequest, "client_msg_id must be 1 to 64 bytes");
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
  if (!IsValidUtf8(e)) return Status(ErrorCode::kBadData, "the emoji is not valid UTF-8");
  for (size_t i = 0; i < e.size(); ++i) {
    unsigned char c = e[i];
    bool c1 = c == 0xC2 && i + 1 < e.size() &&
              static_cast<unsigned char>(e[i + 1]) >= 0x80 &&
              static_cast<unsigned char>(e[i + 1]) <= 0x9F;
    if (c < 0x20 || c == 0x7F || c1) {
      return Status(ErrorCode::kBadData, "the emoji has control characters");
    }
  }
  return Status::Ok();
}

Status ValidateDevice(const std::string& device) {
  if (device.empty() || device.size() > kMaxDeviceBytes) {
    return Status(ErrorCode::kBadRequest, "a device name is 1 to 64 bytes");
  }
  for (unsigned char c : device) {
    if (c <= ' ' || c == 0x7f) {
      return Status(ErrorCode::kBadRequest,
                    "a device name has no spaces or control characters");
    }
  }
  if (!IsValidUtf8(device)) {
    return Status(ErrorCode::kBadRequest, "a device name is UTF-8");
  }
  return Status::Ok();
}

}  // namespace natter

#include "common/proto.h"

#include "common/endian.h"

namespace natter {
namespace {

// A few bytes may claim a huge array; these limits keep the decoder from
// allocating for claims the frame cannot back.
const msgpack::unpack_limit kLimits(/*array=*/kMaxSyncPage * 2, /*map=*/256,
                                    /*str=*/kMaxDaemonFrameBytes,
                                    /*bin=*/kMaxDaemonFrameBytes, /*ext=*/0,
                                    /*depth=*/8);

}  // namespace

const char* MsgTypeName(MsgType type) {
  switch (type) {
    case MsgType::kHello: return "hello";
    case MsgType::kSend: return "send";
    case MsgType::kSync: return "sync";
    case MsgType::kAck: return "ack";
    case MsgType::kPing: return "ping";
    case MsgType::kReact: return "react";
    case MsgType::kSeen: return "seen";
    case MsgType::kHistory: return "history";
    case MsgType::kChats: return "chats";
    case MsgType::kOk: return "ok";
    case MsgType::kHistoryReply: return "history-reply";
    case MsgType::kChatsReply: return "chats-reply";
    case MsgType::kWelcome: return "welcome";
    case MsgType::kProcessed: return "processed";
    case MsgType::kSyncReply: return "sync-reply";
    case MsgType::kAckReply: return "ack-reply";
    case MsgType::kPong: return "pong";
    case MsgType::kError: return "error";
    case MsgType::kEvent: return "event";
    case MsgType::kStoreMessage: return "store-message";
    case MsgType::kDeliver: return "deliver";
    case MsgType::kDeliverAck: return "deliver-ack";
    case MsgType::kStats: return "stats";
    case MsgType::kStatsReply: return "stats-reply";
    case MsgType::kBackup: return "backup";
    case MsgType::kBackupReply: return "backup-reply";
  }
  return "unknown";
}

Status DecodeFrame(const void* data, size_t size, Frame* out) {
  try {
    size_t offset = 0;
    out->handle = msgpack::unpack(static_cast<const char*>(data), size, offset,
                                  nullptr, nullptr, kLimits);
    if (offset != size) {
      return Status(ErrorCode::kMalformed, "trailing bytes after the frame");
    }
    const msgpack::object& root = out->handle.get();
    if (root.type != msgpack::type::ARRAY || root.via.array.size != 2) {
      return Status(ErrorCode::kMalformed, "a frame is [header, body]");
    }
    root.via.array.ptr[0].convert(out->header);
    out->body = root.via.array.ptr[1];
  } catch (const std::exception& e) {
    return Status(ErrorCode::kMalformed, std::string("undecodable frame: ") +
                                             e.what());
  }
  if (out->header.version != kProtocolVersion) {
    return Status(ErrorCode::kMalformed,
                  "protocol version " + std::to_string(out->header.version) +
                      " is not " + std::to_string(kProtocolVersion));
  }
  if (out->body.type != msgpack::type::ARRAY) {
    return Status(ErrorCode::kMalformed, "a body is an array");
  }
  return Status::Ok();
}

bool PeekHeader(const void* data, size_t size, Header* out) {
  const char* p = static_cast<const char*>(data);
  if (size < 2 || static_cast<uint8_t>(p[0]) != 0x92) return false;  // [header, body]
  try {
    size_t offset = 1;
    msgpack::object_handle h = msgpack::unpack(p, size, offset, nullptr, nullptr, kLimits);
    h.get().convert(*out);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::string TopicOf(UserId user) {
  std::string topic;
  PutBigEndian(&topic, user.value);
  return topic;
}

std::string EncodeError(const Header& request, const Status& status) {
  Error e;
  e.code = static_cast<uint16_t>(status.code());
  e.message = status.message();
  return EncodeReply(request, MsgType::kError, e);
}

}  // namespace natter

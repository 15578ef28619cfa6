#include "common/proto.h"

#include <string_view>

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
#define NATTER_X(name, number, text, Body) \
  case MsgType::name:                      \
    return text;
    NATTER_FRAME_TYPES(NATTER_X)
#undef NATTER_X
  }
  return "unknown";
}

bool IsKnownType(uint8_t type) {
  return std::string_view(MsgTypeName(static_cast<MsgType>(type))) != "unknown";
}

Status DecodeFrame(const void* data, size_t size, Frame* out) {
  out->header = Header();
  try {
    size_t offset = 0;
    out->handle = msgpack::unpack(static_cast<const char*>(data), size, offset,
                                  nullptr, nullptr, kLimits);
    if (offset != size) {
      return Status(ErrorCode::kMalformed, "trailing bytes after the frame");
    }
  } catch (const std::exception& e) {
    return Status(ErrorCode::kMalformed,
                  std::string("undecodable frame: ") + e.what());
  }
  const msgpack::object& root = out->handle.get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size != 2) {
    return Status(ErrorCode::kMalformed, "a frame is [header, body]");
  }
  Header header;
  try {
    wire::Read(root.via.array.ptr[0], header);
  } catch (const std::exception& e) {
    return Status(ErrorCode::kMalformed,
                  std::string("bad header: ") + e.what());
  }
  out->header = header;
  out->body = root.via.array.ptr[1];
  if (header.version < kOldestProtocolVersion ||
      header.version > kProtocolVersion) {
    return Status(ErrorCode::kMalformed,
                  "protocol version " + std::to_string(header.version) +
                      " is not " + std::to_string(kOldestProtocolVersion) +
                      " to " + std::to_string(kProtocolVersion));
  }
  if (!IsKnownType(header.type)) {
    return Status(ErrorCode::kMalformed, "frame type " +
                                             std::to_string(header.type) +
                                             " is not one of natter(7)'s");
  }
  return Status::Ok();
}

bool PeekHeader(const void* data, size_t size, Header* out) {
  const char* p = static_cast<const char*>(data);
  if (size < 2 || static_cast<uint8_t>(p[0]) != 0x92)
    return false;  // [header, body]
  try {
    size_t offset = 1;
    msgpack::object_handle h =
        msgpack::unpack(p, size, offset, nullptr, nullptr, kLimits);
    wire::Read(h.get(), *out);
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

void AppendBatchEntry(std::string* batch, uint64_t key,
                      std::string_view frame) {
  PutBigEndian(batch, 8 + frame.size(), 4);
  PutBigEndian(batch, key);
  batch->append(frame);
}

bool ForEachBatchEntry(
    std::string_view batch,
    const std::function<void(std::string_view key, std::string_view frame)>&
        each) {
  while (!batch.empty()) {
    if (batch.size() < 4) return false;
    const uint64_t n = GetBigEndian(batch.data(), 4);
    if (n < 8 || n > batch.size() - 4) return false;
    each(batch.substr(4, 8), batch.substr(12, n - 8));
    batch.remove_prefix(4 + n);
  }
  return true;
}

std::string EncodeError(const Header& request, const Status& status) {
  Error e;
  e.code = status.code();
  e.message = status.message();
  return EncodeReply(request, e);
}

// --- Event and Handoff ---------------------------------------------------

MessageId Event::id() const {
  return std::visit(
      [](const auto& w) {
        if constexpr (std::is_same_v<std::decay_t<decltype(w)>, MessageEvent>) {
          return w.message.id;
        } else {
          return w.id;
        }
      },
      what);
}

UserId Event::from() const {
  return std::visit(
      [](const auto& w) {
        if constexpr (std::is_same_v<std::decay_t<decltype(w)>, MessageEvent>) {
          return w.message.from;
        } else {
          return w.from;
        }
      },
      what);
}

UserId Event::to() const {
  return std::visit(
      [](const auto& w) {
        if constexpr (std::is_same_v<std::decay_t<decltype(w)>, MessageEvent>) {
          return w.message.to;
        } else {
          return w.to;
        }
      },
      what);
}

const Message* Event::message() const {
  const MessageEvent* m = std::get_if<MessageEvent>(&what);
  return m != nullptr ? &m->message : nullptr;
}

const Receipt* Event::receipt() const {
  if (const DeliveredEvent* d = std::get_if<DeliveredEvent>(&what)) return d;
  if (const SeenEvent* s = std::get_if<SeenEvent>(&what)) return s;
  return nullptr;
}

void Event::msgpack_unpack(const msgpack::object& o) {
  EventKind kind = EventKind::kMessage;
  Message m;
  UserId by;
  std::optional<std::string> emoji;
  wire::ReadArray(o, 12,
                  "user, seq, kind, id, from, to, ts, text, client_msg_id, "
                  "origin_device, by, emoji",
                  user, seq, kind, m.id, m.from, m.to, m.ts, m.text,
                  m.client_msg_id, origin_device, by, emoji);
  if (kind == EventKind::kMessage) {
    if (by.value != 0 || emoji)
      wire::Fail("a message event has no by or emoji");
    what = MessageEvent{std::move(m)};
    return;
  }
  if (m.ts != 0 || !m.text.empty() || !m.client_msg_id.empty()) {
    wire::Fail("only a message event has ts, text and client_msg_id");
  }
  if (kind == EventKind::kReaction) {
    what = ReactionEvent{m.id, m.from, m.to, by, std::move(emoji)};
    return;
  }
  if (emoji) wire::Fail("only a reaction event has an emoji");
  Receipt r{m.id, m.from, m.to, by};
  if (kind == EventKind::kDelivered) {
    what = DeliveredEvent{r};
  } else {
    what = SeenEvent{r};
  }
}

MessageId Handoff::id() const {
  return std::visit(
      [](const auto& w) {
        if constexpr (std::is_same_v<std::decay_t<decltype(w)>, CopyHandoff>) {
          return w.message.id;
        } else {
          return w.id;
        }
      },
      what);
}

void Handoff::msgpack_unpack(const msgpack::object& o) {
  Message copy;
  HandoffKind kind = HandoffKind::kCopy;
  UserId by;
  MessageId about;
  std::optional<std::string> emoji;
  uint64_t version = 0;
  wire::ReadArray(
      o, 9, "message, outbox, kind, target, by, id, emoji, version, trace",
      copy, outbox, kind, target, by, about, emoji, version, trace);
  if (kind == HandoffKind::kCopy) {
    if (by.value != 0 || about.value != 0 || emoji || version != 0) {
      wire::Fail("a copy hand-off has no by, id, emoji or version");
    }
    if (target != copy.to)
      wire::Fail("a copy hand-off's target is its message's recipient");
    what = CopyHandoff{std::move(copy)};
    return;
  }
  if (copy.id.value != 0 || !copy.text.empty())
    wire::Fail("only a copy hand-off has a message");
  if (kind == HandoffKind::kReaction) {
    what = ReactionHandoff{by, about, std::move(emoji), version};
    return;
  }
  if (emoji || version != 0)
    wire::Fail("only a reaction hand-off has an emoji or a version");
  if (kind == HandoffKind::kDelivered) {
    what = DeliveredHandoff{by, about};
  } else {
    what = SeenHandoff{by, about};
  }
}

}  // namespace natter

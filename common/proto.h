// The wire protocol: every message natter's programs exchange, in one list,
// with its version.  The grammar is written down in natter(7).
//
// A frame is one ZeroMQ message part holding one MessagePack array of two
// elements, [header, body].  The header says the protocol version, the body's
// type, a correlation id chosen by the requester (echoed in the reply), and
// the user and device the request is for.  Clients leave user and device
// empty: frontd fills them from the session's token, so a client can never
// speak for another user.  Daemons trust the header (their peers are
// authenticated by CurveZMQ).
//
// Routing frames (ROUTER identities) may precede the frame; the frame is
// always the last part of a multipart message.
#ifndef NATTER_COMMON_PROTO_H_
#define NATTER_COMMON_PROTO_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "common/status.h"
#include "common/types.h"

// MessagePack for the strong id types: a plain unsigned integer on the wire.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <typename Tag>
  struct convert<natter::Id<Tag>> {
    const msgpack::object& operator()(const msgpack::object& o,
                                      natter::Id<Tag>& v) const {
      v.value = o.as<uint64_t>();
      return o;
    }
  };
  template <typename Tag>
  struct pack<natter::Id<Tag>> {
    template <typename Stream>
    packer<Stream>& operator()(packer<Stream>& o,
                               const natter::Id<Tag>& v) const {
      o.pack_uint64(v.value);
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

namespace natter {

constexpr uint8_t kProtocolVersion = 1;

// Limits a peer cannot exceed (natter(7) LIMITS).
//
// Frames: the largest the cell sends a client (a reply or an event), which
// is also what the client library's socket and frontd's client socket take
// (ZMQ_MAXMSGSIZE); and the limit of the sockets between daemons, above
// anything the cell makes, so that no hop ever refuses a frame of the cell
// (a refused frame ends that connection, and ZeroMQ does not connect it
// again).
constexpr size_t kMaxClientFrameBytes = 256 * 1024;
constexpr size_t kMaxDaemonFrameBytes = 1024 * 1024;
// A page (sync, history, chats) ends before its items would pass this many
// bytes, encoded, and says `more`; it always holds one item at least.
constexpr size_t kMaxPageBytes = 128 * 1024;
// The longest request a client may send frontd (a hello or a send of the
// longest text fits many times over); a longer one closes the connection.
constexpr size_t kMaxRequestBytes = 16 * 1024;
constexpr size_t kMaxTextBytes = 4096;
constexpr size_t kMaxDeviceBytes = 64;
constexpr size_t kMaxClientMsgIdBytes = 64;
constexpr size_t kMaxTokenBytes = 1024;
constexpr uint32_t kMaxSyncPage = 1000;
constexpr size_t kMaxEmojiBytes = 64;
constexpr uint32_t kDefaultHistoryPage = 50;
constexpr uint32_t kMaxHistoryPage = 500;
constexpr size_t kMaxChatsPage = 1000;
// The largest item of a page is a message with its texts and two
// reactions, some 4.5 KB: a page and its envelope stay under the client's
// limit with room to spare.
static_assert(kMaxPageBytes + 4 * kMaxTextBytes < kMaxClientFrameBytes,
              "a page must fit a client's frame");
static_assert(kMaxClientFrameBytes < kMaxDaemonFrameBytes,
              "daemons must take every frame meant for a client");

enum class MsgType : uint8_t {
  // Requests from a client (through frontd).
  kHello = 1,
  kSend = 2,
  kSync = 3,
  kAck = 4,
  kPing = 5,
  kReact = 6,
  kSeen = 7,
  kHistory = 8,
  kChats = 9,
  // Replies.
  kWelcome = 64,
  kProcessed = 65,
  kSyncReply = 66,
  kAckReply = 67,
  kPong = 68,
  kError = 69,
  kOk = 70,
  kHistoryReply = 71,
  kChatsReply = 72,
  // A mailbox event pushed to a device.
  kEvent = 96,
  // Between daemons.
  kStoreMessage = 128,  // routed -> sender's home shard
  kDeliver = 129,       // shard -> routed -> recipient's home shard
  kDeliverAck = 130,    // back to the shard that handed off
  // Control (natterctl -> a daemon's control socket; common/control.h).
  kStats = 160,
  kStatsReply = 161,
  kBackup = 162,
  kBackupReply = 163,
};

const char* MsgTypeName(MsgType type);

struct Header {
  uint8_t version = kProtocolVersion;
  uint8_t type = 0;
  uint64_t corr = 0;
  UserId user;
  std::string device;
  // Given by frontd to each request and carried through every hop, so the
  // daemons' logs show one request's path (trace=...).  The top bit asks
  // for that path at level info (a client asks with any non-zero trace).
  uint64_t trace = 0;
  MSGPACK_DEFINE_ARRAY(version, type, corr, user, device, trace);
};

// --- Requests ---------------------------------------------------------------

struct Hello {
  std::string token;
  std::string device;
  MSGPACK_DEFINE_ARRAY(token, device);
};

struct Send {
  std::string client_msg_id;
  UserId to;
  std::string text;
  MSGPACK_DEFINE_ARRAY(client_msg_id, to, text);
};

// Asks for mailbox events after a point.  from_cursor: after the device's
// acknowledged cursor on the home shard (`after` ignored); a device with no
// cursor yet starts at the head of the mailbox.
struct Sync {
  bool from_cursor = true;
  Seq after;
  uint32_t limit = 100;
  MSGPACK_DEFINE_ARRAY(from_cursor, after, limit);
};

// The device has received (and shown) every event up to seq.
struct Ack {
  Seq seq;
  MSGPACK_DEFINE_ARRAY(seq);
};

struct Empty {
  MSGPACK_DEFINE_ARRAY();
};

// Sets the user's reaction to a message of its conversation with peer
// (replacing one it had), or removes it when emoji is nil.
struct React {
  UserId peer;
  MessageId id;
  std::optional<std::string> emoji;
  MSGPACK_DEFINE_ARRAY(peer, id, emoji);
};

// The user has seen the peer's messages up to and including id.
struct MarkSeen {
  UserId peer;
  MessageId id;
  MSGPACK_DEFINE_ARRAY(peer, id);
};

enum class HistoryMode : uint8_t {
  kLatest = 0,  // the newest page
  kAt = 1,      // the last `limit` messages with ts <= bound (Unix ms)
  kBefore = 2,  // the `limit` messages just before id `bound`
  kAfter = 3,   // the `limit` messages just after id `bound`
};

struct History {
  UserId peer;
  uint8_t mode = 0;
  uint64_t bound = 0;
  uint32_t limit = kDefaultHistoryPage;
  MSGPACK_DEFINE_ARRAY(peer, mode, bound, limit);
};

// A page of the user's conversations, the most recent first (by the id of
// their last message, then by peer): those that come after (before_id,
// before_peer) in that order — the last chat of the previous page.  Both
// are optional on the wire; without them, the newest page.
struct Chats {
  MessageId before_id{UINT64_MAX};
  UserId before_peer{UINT64_MAX};
  MSGPACK_DEFINE_ARRAY(before_id, before_peer);
};

// --- Replies ----------------------------------------------------------------

struct Welcome {
  UserId user;
  std::string device;
  uint64_t expires = 0;  // the token's expiry, seconds since the epoch
  MSGPACK_DEFINE_ARRAY(user, device, expires);
};

struct Processed {
  MessageId id;
  std::string client_msg_id;
  UserId to;
  uint64_t ts = 0;  // ms since the Unix epoch
  Seq seq;          // the sender's mailbox entry for this message
  MSGPACK_DEFINE_ARRAY(id, client_msg_id, to, ts, seq);
};

enum class EventKind : uint8_t {
  kMessage = 1,
  kReaction = 2,
  kDelivered = 3,
  kSeen = 4,
};

// One entry of a user's mailbox.  Which fields mean something depends on
// the kind: a message has id, from, to, ts, text, client_msg_id.
struct Event {
  UserId user;  // whose mailbox
  Seq seq;
  uint8_t kind = 0;
  MessageId id;
  UserId from;
  UserId to;
  uint64_t ts = 0;
  std::string text;
  std::string client_msg_id;
  std::string origin_device;  // the device that caused it, if the user's own
  UserId by;
  std::optional<std::string> emoji;
  MSGPACK_DEFINE_ARRAY(user, seq, kind, id, from, to, ts, text, client_msg_id,
                       origin_device, by, emoji);
};

struct SyncReply {
  std::vector<Event> events;
  Seq head;      // the newest seq in the mailbox
  Seq cursor;    // the device's acknowledged cursor
  bool more = false;
  MSGPACK_DEFINE_ARRAY(events, head, cursor, more);
};

// The answer to react and seen: the seq of the mailbox event the change
// made for the user (0 if it changed nothing), which the device that asked
// takes as its own, as a send's processed receipt.
struct Done {
  Seq seq;
  MSGPACK_DEFINE_ARRAY(seq);
};

struct AckReply {
  Seq cursor;
  MSGPACK_DEFINE_ARRAY(cursor);
};

struct Error {
  uint16_t code = 0;
  std::string message;
  MSGPACK_DEFINE_ARRAY(code, message);
};

struct Reaction {
  UserId user;
  std::string emoji;
  MSGPACK_DEFINE_ARRAY(user, emoji);
};

// A message as the shards keep it and hand it over.
struct Message {
  MessageId id;
  UserId from;
  UserId to;
  uint64_t ts = 0;
  std::string client_msg_id;
  std::string text;
  MSGPACK_DEFINE_ARRAY(id, from, to, ts, client_msg_id, text);
};

// A message of a history page, with its current reactions and status.
// delivered and seen: for the user's own messages, whether the peer has
// them; for the peer's, whether the user has seen them.
struct HistoryItem {
  Message message;
  std::vector<Reaction> reactions;
  bool delivered = false;
  bool seen = false;
  MSGPACK_DEFINE_ARRAY(message, reactions, delivered, seen);
};

struct HistoryReply {
  std::vector<HistoryItem> messages;  // oldest first
  bool more = false;  // more messages lie beyond the page, in its direction
  MSGPACK_DEFINE_ARRAY(messages, more);
};

// One conversation of the user.  delivered and seen: the newest of the
// user's messages the peer has received / seen (every earlier one too).
struct ChatItem {
  UserId peer;
  MessageId last_id;
  uint64_t last_ts = 0;
  UserId last_from;
  std::string last_text;
  uint64_t unread = 0;
  MessageId delivered;
  MessageId seen;
  MSGPACK_DEFINE_ARRAY(peer, last_id, last_ts, last_from, last_text, unread,
                       delivered, seen);
};

struct ChatsReply {
  std::vector<ChatItem> chats;  // the most recent conversation first
  // More conversations follow the page (optional on the wire: a reply
  // without it has none).
  bool more = false;
  MSGPACK_DEFINE_ARRAY(chats, more);
};

// --- Between daemons --------------------------------------------------------

// routed -> sender's home shard: a Send with its id assigned.  The sender
// and the device are in the header.
struct StoreMessage {
  Message message;
  MSGPACK_DEFINE_ARRAY(message);
};

enum class HandoffKind : uint8_t {
  kMessage = 0,    // the recipient's copy of message
  kReaction = 1,   // `by` reacted `emoji` (nil: removed) to message id
  kDelivered = 2,  // `by` received target's messages up to id
  kSeen = 3,       // `by` saw target's messages up to id
};

// What one shard hands to another: the recipient's copy of a message, or a
// change to the copy and mailbox of `target`, a user of the other shard.
// Applying one twice changes nothing.
struct Deliver {
  Message message;
  uint64_t outbox = 0;  // the handing shard's outbox key, echoed in the ack
  uint8_t kind = 0;
  UserId target;
  UserId by;
  MessageId id;
  std::optional<std::string> emoji;
  uint64_t version = 0;  // reactions: newer versions win
  uint64_t trace = 0;    // the trace id of the request that caused it
  MSGPACK_DEFINE_ARRAY(message, outbox, kind, target, by, id, emoji, version,
                       trace);
};

struct DeliverAck {
  uint64_t outbox = 0;
  MessageId id;
  MSGPACK_DEFINE_ARRAY(outbox, id);
};

// --- Codec ------------------------------------------------------------------

// A decoded frame: the header, and the body still as a MessagePack object
// (kept alive by the handle) until the receiver knows which struct it wants.
struct Frame {
  Header header;
  msgpack::object_handle handle;
  msgpack::object body;

  MsgType type() const { return static_cast<MsgType>(header.type); }
};

// Reads a whole frame or rejects it (kMalformed): wrong shape, wrong
// version, trailing bytes, or anything beyond the decoder's limits.
Status DecodeFrame(const void* data, size_t size, Frame* out);

// Converts the body to T, or kMalformed.
template <typename T>
Status DecodeBody(const Frame& frame, T* out) {
  try {
    frame.body.convert(*out);
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status(ErrorCode::kMalformed,
                  std::string("bad ") + MsgTypeName(frame.type()) +
                      " body: " + e.what());
  }
}

template <typename T>
std::string EncodeFrame(const Header& header, const T& body) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> packer(buffer);
  packer.pack_array(2);
  packer.pack(header);
  packer.pack(body);
  return std::string(buffer.data(), buffer.size());
}

// The number of bytes value takes in MessagePack, without making them.
template <typename T>
size_t EncodedSize(const T& value) {
  struct Counter {
    size_t bytes = 0;
    void write(const char*, size_t n) { bytes += n; }
  } counter;
  msgpack::packer<Counter> packer(counter);
  packer.pack(value);
  return counter.bytes;
}

// A reply frame for a request: same correlation id, user and device.
template <typename T>
std::string EncodeReply(const Header& request, MsgType type, const T& body) {
  Header h = request;
  h.version = kProtocolVersion;
  h.type = static_cast<uint8_t>(type);
  return EncodeFrame(h, body);
}

std::string EncodeError(const Header& request, const Status& status);

// A frame's header alone (the body is not decoded): for daemons that pass
// frames on and only log them.  False if it is not a frame.
bool PeekHeader(const void* data, size_t size, Header* out);

// The PUB/SUB topic of a user's events: its id, 8 bytes big-endian (all
// topics the same length, so no topic is a prefix of another).
std::string TopicOf(UserId user);

}  // namespace natter

#endif  // NATTER_COMMON_PROTO_H_

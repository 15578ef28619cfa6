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
#include <functional>
#include <msgpack.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "common/types.h"
#include "common/wire.h"

namespace natter {

// 2: a client's ack has no answer (in 1 frontd passed the shard's
// ack-reply on; now it keeps it).  The daemons still read frames of 1 (a
// Raft log written before an upgrade, a daemon not yet upgraded); frontd
// takes only 2 from clients.
constexpr uint8_t kProtocolVersion = 2;
constexpr uint8_t kOldestProtocolVersion = 1;

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

// --- Enums -------------------------------------------------------------------

enum class HistoryMode : uint8_t {
  kLatest = 0,  // the newest page
  kAt = 1,      // the last `limit` messages with ts <= bound (Unix ms)
  kBefore = 2,  // the `limit` messages just before id `bound`
  kAfter = 3,   // the `limit` messages just after id `bound`
};

enum class EventKind : uint8_t {
  kMessage = 1,
  kReaction = 2,
  kDelivered = 3,
  kSeen = 4,
};

enum class HandoffKind : uint8_t {
  kCopy = 0,       // the recipient's copy of a message
  kReaction = 1,   // a reaction set or taken back, on the target's copy
  kDelivered = 2,  // the peer received the target's messages up to an id
  kSeen = 3,       // the peer saw them
};

template <>
struct WireEnum<HistoryMode> {
  static constexpr bool kTravels = true;
  static bool Known(uint64_t v) { return v <= 3; }
};
template <>
struct WireEnum<EventKind> {
  static constexpr bool kTravels = true;
  static bool Known(uint64_t v) { return v >= 1 && v <= 4; }
};
template <>
struct WireEnum<HandoffKind> {
  static constexpr bool kTravels = true;
  static bool Known(uint64_t v) { return v <= 3; }
};
// Error codes travel as they are: a newer peer's code is kept, not refused
// (error_codes.h says how a program treats one it does not know).
template <>
struct WireEnum<ErrorCode> {
  static constexpr bool kTravels = true;
  static bool Known(uint64_t) { return true; }
};

// --- The header --------------------------------------------------------------

struct Header {
  uint8_t version = kProtocolVersion;
  uint8_t type = 0;  // a MsgType; kept as a number so that an unknown one
                     // can still be answered with the request's corr
  uint64_t corr = 0;
  UserId user;
  std::string device;
  // Given by frontd to each request and carried through every hop, so the
  // daemons' logs show one request's path (trace=...).  The top bit asks
  // for that path at level info (a client asks with any non-zero trace).
  // Optional on the wire.
  uint64_t trace = 0;
  NATTER_WIRE(5, version, type, corr, user, device, trace)
};

// --- Requests from a client (through frontd) --------------------------------

struct Hello {
  std::string token;
  std::string device;
  NATTER_WIRE(2, token, device)
};

struct Send {
  std::string client_msg_id;
  UserId to;
  std::string text;
  NATTER_WIRE(3, client_msg_id, to, text)
};

// Asks for mailbox events after a point.  from_cursor: after the device's
// acknowledged cursor on the home shard (`after` ignored); a device with no
// cursor yet starts at the head of the mailbox.
struct Sync {
  bool from_cursor = true;
  Seq after;
  uint32_t limit = 100;
  NATTER_WIRE(3, from_cursor, after, limit)
};

// The device has received (and shown) every event up to seq.
struct Ack {
  Seq seq;
  NATTER_WIRE(1, seq)
};

struct Ping {
  NATTER_WIRE(0)
};

// Sets the user's reaction to a message of its conversation with peer
// (replacing one it had), or removes it when emoji is nil.
struct React {
  UserId peer;
  MessageId id;
  std::optional<std::string> emoji;
  NATTER_WIRE(3, peer, id, emoji)
};

// The user has seen the peer's messages up to and including id.
struct MarkSeen {
  UserId peer;
  MessageId id;
  NATTER_WIRE(2, peer, id)
};

struct History {
  UserId peer;
  HistoryMode mode = HistoryMode::kLatest;
  uint64_t bound = 0;
  uint32_t limit = kDefaultHistoryPage;
  NATTER_WIRE(4, peer, mode, bound, limit)
};

// A page of the user's conversations, the most recent first (by the id of
// their last message, then by peer): those that come after (before_id,
// before_peer) in that order — the last chat of the previous page.  Both
// are optional on the wire; without them, the newest page.
struct Chats {
  MessageId before_id{UINT64_MAX};
  UserId before_peer{UINT64_MAX};
  NATTER_WIRE(0, before_id, before_peer)
};

// --- Replies and events -----------------------------------------------------

struct Welcome {
  UserId user;
  std::string device;
  uint64_t expires = 0;  // the token's expiry, seconds since the epoch
  NATTER_WIRE(3, user, device, expires)
};

struct Processed {
  MessageId id;
  std::string client_msg_id;
  UserId to;
  uint64_t ts = 0;  // ms since the Unix epoch
  Seq seq;          // the sender's mailbox entry for this message
  NATTER_WIRE(5, id, client_msg_id, to, ts, seq)
};

// A message as the shards keep it and hand it over.
struct Message {
  MessageId id;
  UserId from;
  UserId to;
  uint64_t ts = 0;  // ms since the Unix epoch, the time in the id
  std::string client_msg_id;
  std::string text;
  NATTER_WIRE(6, id, from, to, ts, client_msg_id, text)
};

// The own part of a mailbox event, one struct per kind.
//
// A message to or from the user.
struct MessageEvent {
  Message message;
};
// `by` set `emoji` on message `id` of the conversation (from its sender
// `from` to `to`), or took the reaction back (emoji nil).
struct ReactionEvent {
  MessageId id;
  UserId from;
  UserId to;
  UserId by;
  std::optional<std::string> emoji;
};
// `by` (who is `to`) received, or saw, the messages `from` sent to `to` up
// to and including `id`.
struct Receipt {
  MessageId id;
  UserId from;
  UserId to;
  UserId by;
};
struct DeliveredEvent : Receipt {};
struct SeenEvent : Receipt {};

// frontd asks a device to move to another frontd (it is draining: about
// to stop), with corr 0.  A device that knows no other carries on; the
// frontd that starts in its place, about after_ms later, answers
// no-session.
struct Move {
  uint32_t after_ms = 0;
  std::string reason;
  NATTER_WIRE(2, after_ms, reason)
};

// One entry of a user's mailbox: whose, its seq, the user's device that
// caused it (empty for what others caused), and what happened.  On the
// wire it is one array of the fields of every kind (natter(7)):
// [user, seq, kind, id, from, to, ts, text, client_msg_id, origin_device,
// by, emoji], those that do not concern its kind 0, empty or nil.
struct Event {
  UserId user;
  Seq seq;
  std::string origin_device;
  std::variant<MessageEvent, ReactionEvent, DeliveredEvent, SeenEvent> what;

  EventKind kind() const { return static_cast<EventKind>(what.index() + 1); }
  // The message the event is about (for receipts: the newest one covered).
  MessageId id() const;
  UserId from() const;
  UserId to() const;
  // The other user of the conversation it is about, seen from `user`.
  UserId peer() const { return from() == user ? to() : from(); }
  // The kind's part, or null for another kind.
  const Message* message() const;
  const ReactionEvent* reaction() const {
    return std::get_if<ReactionEvent>(&what);
  }
  const Receipt* receipt() const;

  template <typename Packer>
  void msgpack_pack(Packer& packer) const;
  void msgpack_unpack(const msgpack::object& o);
};

struct SyncReply {
  std::vector<Event> events;
  Seq head;    // the newest seq in the mailbox
  Seq cursor;  // the device's acknowledged cursor
  bool more = false;
  NATTER_WIRE(4, events, head, cursor, more)
};

// The answer to react and seen: the seq of the mailbox event the change
// made for the user (0 if it changed nothing), which the device that asked
// takes as its own, as a send's processed receipt.
struct Done {
  Seq seq;
  NATTER_WIRE(1, seq)
};

// The shard's answer to an ack, between daemons only: frontd takes it
// (the request is done) and the client gets nothing.
struct AckReply {
  Seq cursor;
  NATTER_WIRE(1, cursor)
};

struct Pong {
  NATTER_WIRE(0)
};

struct Error {
  ErrorCode code = ErrorCode::kOk;
  std::string message;
  NATTER_WIRE(2, code, message)
};

struct Reaction {
  UserId user;
  std::string emoji;
  NATTER_WIRE(2, user, emoji)
};

// A message of a history page, with its current reactions and status.
// delivered and seen: for the user's own messages, whether the peer has
// them; for the peer's, whether the user has seen them.
struct HistoryItem {
  Message message;
  std::vector<Reaction> reactions;
  bool delivered = false;
  bool seen = false;
  NATTER_WIRE(4, message, reactions, delivered, seen)
};

struct HistoryReply {
  std::vector<HistoryItem> messages;  // oldest first
  bool more = false;  // more messages lie beyond the page, in its direction
  NATTER_WIRE(2, messages, more)
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
  NATTER_WIRE(8, peer, last_id, last_ts, last_from, last_text, unread,
              delivered, seen)
};

struct ChatsReply {
  std::vector<ChatItem> chats;  // the most recent conversation first
  // More conversations follow the page (optional on the wire: a reply
  // without it has none).
  bool more = false;
  NATTER_WIRE(1, chats, more)
};

// --- Between daemons --------------------------------------------------------

// routed -> sender's home shard: a Send with its id assigned.  The sender
// and the device are in the header.
struct StoreMessage {
  Message message;
  NATTER_WIRE(1, message)
};

// What one shard hands another (through routed) about `target`, a user of
// the other shard: one struct per kind.  Applying one twice changes
// nothing.
//
// The recipient's copy of a message (target: its recipient).
struct CopyHandoff {
  Message message;
};
// `by` set `emoji` (nil: took it back) on message `id` of the target's
// copy; of two changes by one user, the one with the higher version wins.
struct ReactionHandoff {
  UserId by;
  MessageId id;
  std::optional<std::string> emoji;
  uint64_t version = 0;
};
// `by` received, or saw, the target's messages up to and including `id`.
struct DeliveredHandoff {
  UserId by;
  MessageId id;
};
struct SeenHandoff {
  UserId by;
  MessageId id;
};

// On the wire one array of the fields of every kind (natter(7)):
// [message, outbox, kind, target, by, id, emoji, version, trace], those
// that do not concern its kind empty, 0 or nil.
struct Handoff {
  uint64_t outbox = 0;  // the handing shard's outbox number, echoed in the ack
  UserId target;
  uint64_t trace = 0;  // the trace id of the request that caused it
  std::variant<CopyHandoff, ReactionHandoff, DeliveredHandoff, SeenHandoff>
      what;

  HandoffKind kind() const { return static_cast<HandoffKind>(what.index()); }
  // The message it is about (the copy's own id for a copy).
  MessageId id() const;

  template <typename Packer>
  void msgpack_pack(Packer& packer) const;
  void msgpack_unpack(const msgpack::object& o);
};

struct HandoffAck {
  uint64_t outbox = 0;
  MessageId id;
  NATTER_WIRE(2, outbox, id)
};

// frontd -> the user's home shard, at a device's hello (the user and the
// device in the header): the device's mailbox cursor begins here, at the
// head of the mailbox, unless the device has one already.
struct Attach {
  NATTER_WIRE(0)
};

// The answer: the device's cursor (the last seq it acknowledged, or the
// head of its mailbox when it was made now).
struct Attached {
  Seq cursor;
  NATTER_WIRE(1, cursor)
};

// --- Between a shard's replicas, and routed and a shard's replicas --------
// (daemons/stored/replica.h: a shard is a Raft group; see raft.h.)

struct RaftEntry {
  uint64_t term = 0;
  uint64_t index = 0;
  uint8_t type = 0;  // raft::EntryType
  std::string data;
  NATTER_WIRE(4, term, index, type, data)
};

// One raft::Message, replica to replica: the header's user is 0, its
// device the shard's number.
struct RaftMessage {
  uint8_t type = 0;  // raft::MessageType
  uint64_t from = 0;
  uint64_t to = 0;
  uint64_t term = 0;
  uint64_t index = 0;
  uint64_t log_term = 0;
  uint64_t commit = 0;
  bool reject = false;
  uint64_t hint = 0;
  uint64_t context = 0;
  std::vector<RaftEntry> entries;
  uint64_t snapshot_index = 0;
  uint64_t snapshot_term = 0;
  std::vector<uint64_t> snapshot_voters;
  std::string snapshot_data;
  NATTER_WIRE(15, type, from, to, term, index, log_term, commit, reject, hint,
              context, entries, snapshot_index, snapshot_term, snapshot_voters,
              snapshot_data)
};

// A leader's database, streamed to a replica behind its compacted log
// (raft.h's kSnapshot): chunks of keys and values (records: key, value,
// key, value ...) numbered from 0, the last one marked; the replica
// installs the whole as its database at (index, snapshot_term).
struct SnapshotChunk {
  uint64_t from = 0;  // the leader's node id
  uint64_t to = 0;
  uint64_t term = 0;  // the leader's term
  uint64_t index = 0;
  uint64_t snapshot_term = 0;
  std::vector<uint64_t> voters;
  uint64_t seq = 0;
  bool last = false;
  std::vector<std::string> records;
  NATTER_WIRE(9, from, to, term, index, snapshot_term, voters, seq, last,
              records)
};

// A replica that is not its shard's leader answers a request with this
// (with the request's corr), naming the leader it knows of (a replica
// number + 1; 0: none known yet); routed sends on to that one from then on
// and answers the client `unavailable`, which it retries.
struct NotLeader {
  uint32_t shard = 0;
  uint32_t leader = 0;
  uint64_t term = 0;
  NATTER_WIRE(3, shard, leader, term)
};

// routed asks each replica of a shard, every half second, who leads it;
// the answer is a leader notice.
struct LeaderQuery {
  uint32_t shard = 0;
  NATTER_WIRE(1, shard)
};

struct LeaderNotice {
  uint32_t shard = 0;
  uint32_t replica = 0;  // the one answering
  uint32_t leader = 0;   // a replica number + 1; 0: none known
  uint64_t term = 0;
  NATTER_WIRE(4, shard, replica, leader, term)
};

// --- Control (natterctl -> a daemon's control socket; common/control.h) ----

struct StatsRequest {
  NATTER_WIRE(0)
};

struct StatsReply {
  std::string daemon;  // "frontd", "stored-0", ...
  std::vector<Metric> metrics;
  NATTER_WIRE(2, daemon, metrics)
};

struct BackupRequest {
  std::string path;  // a folder that does not exist yet
  NATTER_WIRE(1, path)
};

struct BackupReply {
  std::string path;
  uint64_t records = 0;
  uint64_t bytes = 0;
  NATTER_WIRE(3, path, records, bytes)
};

// natterctl verify: a digest of a shard replica's database as it is now,
// and where in the shard's log that is.
struct DigestRequest {
  NATTER_WIRE(0)
};

struct DigestReply {
  uint64_t applied_index = 0;
  uint64_t applied_term = 0;
  std::string digest;  // BLAKE2b-256 of every key and value, hex
  uint64_t records = 0;
  NATTER_WIRE(4, applied_index, applied_term, digest, records)
};

// natterctl replica add|remove: a change of a shard's voters, to the
// replica that leads it (a follower answers with a not-leader).  Answered
// once the change is committed, with the voters from then on.
struct MembershipRequest {
  bool add = false;  // else remove
  uint32_t replica = 0;
  NATTER_WIRE(2, add, replica)
};

struct MembershipReply {
  uint64_t index = 0;              // the configuration's place in the log
  std::vector<uint64_t> replicas;  // the voters, by replica number
  NATTER_WIRE(2, index, replicas)
};

// --- The frame types --------------------------------------------------------

// Every frame type: its constant, its number on the wire, its name in
// natter(7) and logs, and its body.  The one list the codec, the daemons
// and the client go by.
#define NATTER_FRAME_TYPES(X)                             \
  /* Requests from a client (through frontd). */          \
  X(kHello, 1, "hello", Hello)                            \
  X(kSend, 2, "send", Send)                               \
  X(kSync, 3, "sync", Sync)                               \
  X(kAck, 4, "ack", Ack)                                  \
  X(kPing, 5, "ping", Ping)                               \
  X(kReact, 6, "react", React)                            \
  X(kSeen, 7, "seen", MarkSeen)                           \
  X(kHistory, 8, "history", History)                      \
  X(kChats, 9, "chats", Chats)                            \
  /* Replies. */                                          \
  X(kWelcome, 64, "welcome", Welcome)                     \
  X(kProcessed, 65, "processed", Processed)               \
  X(kSyncReply, 66, "sync-reply", SyncReply)              \
  X(kAckReply, 67, "ack-reply", AckReply)                 \
  X(kPong, 68, "pong", Pong)                              \
  X(kError, 69, "error", Error)                           \
  X(kOk, 70, "ok", Done)                                  \
  X(kHistoryReply, 71, "history-reply", HistoryReply)     \
  X(kChatsReply, 72, "chats-reply", ChatsReply)           \
  /* A mailbox event pushed to a device. */               \
  X(kEvent, 96, "event", Event)                           \
  X(kMove, 97, "move", Move)                              \
  /* Between daemons. */                                  \
  X(kStoreMessage, 128, "store-message", StoreMessage)    \
  X(kHandoff, 129, "handoff", Handoff)                    \
  X(kHandoffAck, 130, "handoff-ack", HandoffAck)          \
  X(kAttach, 131, "attach", Attach)                       \
  X(kAttached, 132, "attached", Attached)                 \
  X(kRaft, 133, "raft", RaftMessage)                      \
  X(kNotLeader, 134, "not-leader", NotLeader)             \
  X(kLeaderQuery, 135, "leader-query", LeaderQuery)       \
  X(kLeaderNotice, 136, "leader-notice", LeaderNotice)    \
  X(kSnapshotChunk, 137, "snapshot-chunk", SnapshotChunk) \
  /* Control. */                                          \
  X(kStats, 160, "stats", StatsRequest)                   \
  X(kStatsReply, 161, "stats-reply", StatsReply)          \
  X(kBackup, 162, "backup", BackupRequest)                \
  X(kBackupReply, 163, "backup-reply", BackupReply)       \
  X(kDigest, 164, "digest", DigestRequest)                \
  X(kDigestReply, 165, "digest-reply", DigestReply)       \
  X(kMembership, 166, "membership", MembershipRequest)    \
  X(kMembershipReply, 167, "membership-reply", MembershipReply)

enum class MsgType : uint8_t {
#define NATTER_X(name, number, text, Body) name = number,
  NATTER_FRAME_TYPES(NATTER_X)
#undef NATTER_X
};

// The name of a frame type ("send"); "unknown" for a number not in the list.
const char* MsgTypeName(MsgType type);
bool IsKnownType(uint8_t type);

// The frame type of a body: FrameOf<Send>::kType is MsgType::kSend.
template <typename Body>
struct FrameOf;
#define NATTER_X(name, number, text, Body)          \
  template <>                                       \
  struct FrameOf<Body> {                            \
    static constexpr MsgType kType = MsgType::name; \
  };
NATTER_FRAME_TYPES(NATTER_X)
#undef NATTER_X

// --- Codec ------------------------------------------------------------------

// A decoded frame: the header, and the body still as a MessagePack object
// (kept alive by the handle) until the receiver knows which struct it wants.
struct Frame {
  Header header;
  msgpack::object_handle handle;
  msgpack::object body;

  MsgType type() const { return static_cast<MsgType>(header.type); }
};

// Reads a frame's header whole, or rejects the frame (kMalformed): not
// [header, body], trailing bytes, a header of the wrong shape (5 or 6
// elements, each of its type), another version, a type not in the list,
// or anything beyond the decoder's limits.  When it is the rest that is
// wrong, out->header is the frame's (its corr goes in the error reply);
// when the header itself is, out->header is empty.
Status DecodeFrame(const void* data, size_t size, Frame* out);

// The body as its struct, strictly (wire.h), or kMalformed; a frame of
// another type is kMalformed too.
template <typename Body>
Status DecodeBody(const Frame& frame, Body* out) {
  if (frame.type() != FrameOf<Body>::kType) {
    return Status(ErrorCode::kMalformed,
                  std::string("a ") + MsgTypeName(frame.type()) +
                      " frame, not " + MsgTypeName(FrameOf<Body>::kType));
  }
  try {
    wire::Read(frame.body, *out);
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status(
        ErrorCode::kMalformed,
        std::string("bad ") + MsgTypeName(frame.type()) + " body: " + e.what());
  }
}

// Decodes the body as the struct its type says and calls visit(body),
// returning what visit returns (a Status); kMalformed if it does not
// decode.  visit takes every body type (a catch-all template for the ones
// a receiver does not take).
template <typename Visitor>
Status VisitBody(const Frame& frame, Visitor&& visit) {
  switch (frame.type()) {
#define NATTER_X(name, number, text, Body) \
  case MsgType::name: {                    \
    Body body;                             \
    Status s = DecodeBody(frame, &body);   \
    if (!s.ok()) return s;                 \
    return visit(body);                    \
  }
    NATTER_FRAME_TYPES(NATTER_X)
#undef NATTER_X
  }
  return Status(ErrorCode::kMalformed, "an unknown frame type");
}

// A frame of a body: the header as given, with the body's type and this
// protocol's version.
template <typename Body>
std::string EncodeFrame(Header header, const Body& body) {
  header.version = kProtocolVersion;
  header.type = static_cast<uint8_t>(FrameOf<Body>::kType);
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> packer(buffer);
  packer.pack_array(2);
  packer.pack(header);
  packer.pack(body);
  return std::string(buffer.data(), buffer.size());
}

// A reply to a request: its corr, user, device and trace, and the body.
template <typename Body>
std::string EncodeReply(const Header& request, const Body& body) {
  return EncodeFrame(request, body);
}

std::string EncodeError(const Header& request, const Status& status);

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

// A frame's header alone (the body is not decoded): for daemons that pass
// frames on and only log them.  False if it is not a frame.
bool PeekHeader(const void* data, size_t size, Header* out);

// The PUB/SUB topic of a user's events: its id, 8 bytes big-endian (all
// topics the same length, so no topic is a prefix of another).
std::string TopicOf(UserId user);

// Frames between daemons, many in one message (one CurveZMQ box) when
// they queue up: [empty, batch], the batch a run of entries, each a
// big-endian u32 length, then an 8-byte key and a frame; at most
// kBatchBytes in all (a larger frame goes alone in a batch of its own).
// A lone frame may still go as [key, frame].  Used from a shard to
// notifyd (the key: the user's topic), and for requests and answers
// between frontd, routed and the shards (the key: the client connection's
// envelope; routing frames before the empty one, as net.h's Batches).
constexpr size_t kBatchBytes = 256 * 1024;
static_assert(kBatchBytes + kMaxClientFrameBytes + 12 < kMaxDaemonFrameBytes,
              "a batch and one more frame fit a daemon's frame");
// Appends one entry to a batch.
void AppendBatchEntry(std::string* batch, uint64_t key, std::string_view frame);
// Whether a batch with `frame` added would pass kBatchBytes (with at
// least one entry in it already).
inline bool BatchFull(const std::string& batch, std::string_view frame) {
  return !batch.empty() && batch.size() + 12 + frame.size() > kBatchBytes;
}
// Calls each(key, frame) for each entry of a batch, in order; false if
// the batch is malformed (the entries before the fault were taken).
bool ForEachBatchEntry(std::string_view batch,
                       const std::function<void(std::string_view key,
                                                std::string_view frame)>& each);

// --- Event and Handoff on the wire ------------------------------------------

template <typename Packer>
void Event::msgpack_pack(Packer& packer) const {
  Message m;
  UserId by;
  std::optional<std::string> emoji;
  if (const Message* mine = message()) m = *mine;
  if (const ReactionEvent* r = reaction()) {
    m.id = r->id;
    m.from = r->from;
    m.to = r->to;
    by = r->by;
    emoji = r->emoji;
  }
  if (const Receipt* r = receipt()) {
    m.id = r->id;
    m.from = r->from;
    m.to = r->to;
    by = r->by;
  }
  const EventKind k = kind();
  msgpack::type::make_define_array(user, seq, k, m.id, m.from, m.to, m.ts,
                                   m.text, m.client_msg_id, origin_device, by,
                                   emoji)
      .msgpack_pack(packer);
}

template <typename Packer>
void Handoff::msgpack_pack(Packer& packer) const {
  Message copy;
  UserId by;
  MessageId about;
  std::optional<std::string> emoji;
  uint64_t version = 0;
  std::visit(
      [&](const auto& w) {
        using W = std::decay_t<decltype(w)>;
        if constexpr (std::is_same_v<W, CopyHandoff>) {
          copy = w.message;
        } else {
          by = w.by;
          about = w.id;
          if constexpr (std::is_same_v<W, ReactionHandoff>) {
            emoji = w.emoji;
            version = w.version;
          }
        }
      },
      what);
  const HandoffKind k = kind();
  msgpack::type::make_define_array(copy, outbox, k, target, by, about, emoji,
                                   version, trace)
      .msgpack_pack(packer);
}

}  // namespace natter

#endif  // NATTER_COMMON_PROTO_H_

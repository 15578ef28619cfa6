// The shard's LevelDB keys: a one-letter prefix, then big-endian fixed-width
// integers so that byte order is numeric order (natter(7) STORAGE).
//
//   m user peer msg_id   the user's copy of a message (Message)
//   q user seq           the user's mailbox event (Event; for a message,
//                        a MessageRef to the user's copy)
//   d user client_msg_id the id a sender's client_msg_id got (SendRecord)
//   k user device        a device's cursor: last seq it acknowledged
//   o n                  outbox: a hand-off to another shard, until acked
//   c user peer          the user's conversation with peer (ChatRecord;
//                        the last message's text is in its copy)
//   r user last_id peer  (empty) the conversations by their last message,
//                        so chats pages go most recent first
//   a user               the newest seq any of the user's devices acked
//   v                    the format of the database (kFormat)
//   l                    the last Raft log entry applied: index, term
//   n                    the next outbox number (the same on every replica)
//   g                    the shard's voters as of l (raft::EncodeVoters)
#ifndef NATTER_DAEMONS_STORED_KEYS_H_
#define NATTER_DAEMONS_STORED_KEYS_H_

#include <cstdint>
#include <string>

#include "common/endian.h"
#include "common/types.h"

namespace natter {
namespace stored {

std::string MessageKey(UserId user, UserId peer, MessageId id);
std::string MailboxKey(UserId user, Seq seq);
std::string MailboxPrefix(UserId user);
std::string DedupKey(UserId user, const std::string& client_msg_id);
std::string CursorKey(UserId user, const std::string& device);
std::string OutboxKey(uint64_t n);
std::string ChatKey(UserId user, UserId peer);
std::string ChatPrefix(UserId user);
std::string RecentChatKey(UserId user, MessageId last_id, UserId peer);
std::string RecentChatPrefix(UserId user);
std::string MessagePrefix(UserId user, UserId peer);
std::string AckMarkKey(UserId user);
std::string FormatKey();
std::string AppliedIndexKey();
std::string NextOutboxKey();
std::string VotersKey();

// The database's format: 1 has the r keys (a database without a v key was
// made before them, and gets them when it is opened); 2 keeps a message
// event as a reference to the user's copy (MessageRef) and no text in a
// conversation's record (a format 1 database is read as it is, and marked
// 2 when opened).  A shard refuses a database of a newer format.
constexpr uint64_t kFormat = 2;

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_KEYS_H_

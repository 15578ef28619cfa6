#include "daemons/stored/keys.h"

namespace natter {
namespace stored {

std::string MessageKey(UserId user, UserId peer, MessageId id) {
  std::string k(1, 'm');
  PutBigEndian(&k, user.value);
  PutBigEndian(&k, peer.value);
  PutBigEndian(&k, id.value);
  return k;
}

std::string MailboxPrefix(UserId user) {
  std::string k(1, 'q');
  PutBigEndian(&k, user.value);
  return k;
}

std::string MailboxKey(UserId user, Seq seq) {
  std::string k = MailboxPrefix(user);
  PutBigEndian(&k, seq.value);
  return k;
}

std::string DedupKey(UserId user, const std::string& client_msg_id) {
  std::string k(1, 'd');
  PutBigEndian(&k, user.value);
  k += client_msg_id;
  return k;
}

std::string CursorKey(UserId user, const std::string& device) {
  std::string k(1, 'k');
  PutBigEndian(&k, user.value);
  k += device;
  return k;
}

std::string ChatPrefix(UserId user) {
  std::string k(1, 'c');
  PutBigEndian(&k, user.value);
  return k;
}

std::string ChatKey(UserId user, UserId peer) {
  std::string k = ChatPrefix(user);
  PutBigEndian(&k, peer.value);
  return k;
}

std::string RecentChatPrefix(UserId user) {
  std::string k(1, 'r');
  PutBigEndian(&k, user.value);
  return k;
}

std::string RecentChatKey(UserId user, MessageId last_id, UserId peer) {
  std::string k = RecentChatPrefix(user);
  PutBigEndian(&k, last_id.value);
  PutBigEndian(&k, peer.value);
  return k;
}

std::string MessagePrefix(UserId user, UserId peer) {
  std::string k(1, 'm');
  PutBigEndian(&k, user.value);
  PutBigEndian(&k, peer.value);
  return k;
}

std::string AckMarkKey(UserId user) {
  std::string k(1, 'a');
  PutBigEndian(&k, user.value);
  return k;
}

std::string FormatKey() { return "v"; }

std::string AppliedIndexKey() { return "l"; }

std::string NextOutboxKey() { return "n"; }

std::string VotersKey() { return "g"; }

std::string OutboxKey(uint64_t n) {
  std::string k(1, 'o');
  PutBigEndian(&k, n);
  return k;
}

}  // namespace stored
}  // namespace natter

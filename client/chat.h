// natter chat PEER: the interactive conversation with one user.  It shows
// the last page of history, then what arrives; sends what is typed and
// follows each message through sending, processed, delivered and seen;
// marks what it shows as seen.  The client reconnects by itself and fetches
// what was missed meanwhile.
#ifndef NATTER_CLIENT_CHAT_H_
#define NATTER_CLIENT_CHAT_H_

#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "client/client.h"

namespace natter {

// Runs until the input ends, /quit or `interrupted` (the caller's signal
// flag); `resized` is a SIGWINCH flag.  Returns a sysexits code, having
// said what went wrong in one line on stderr.
int RunChat(const ClientOptions& options, UserId peer,
            const std::atomic<bool>& interrupted,
            std::atomic<bool>& resized);

// The conversation as natter chat shows it, apart from the terminal: it
// takes what the client brings and the lines the user types, asks the
// client, and prints through `print` (one call per line or block).
class ChatView {
 public:
  using Print = std::function<void(const std::string&)>;
  // page: messages a history page shows.
  ChatView(Client* client, UserId peer, uint32_t page, Print print);

  // Asks for the last page of history; what arrives before it is shown
  // waits for it.
  void Start();
  void Take(const Incoming& in);
  // After each batch of Take: marks the peer's messages shown as seen,
  // and sums up what was missed in other chats once caught up.
  void Settle();
  // A line the user typed: a message, or a /command.  False: /quit.
  bool Input(const std::string& line);
  // The first page has come (or failed): typed lines may be taken.
  bool ready() const { return started_; }
  // Sends not yet processed.
  size_t Unprocessed() const { return sending_.size(); }
  // Sends and other requests (reactions, seen marks, pages) not yet
  // answered.
  size_t Unanswered() const { return sending_.size() + requests_.size(); }

  enum class State { kSending, kProcessed, kDelivered, kSeen };

 private:
  struct Sending {
    int n;
    std::string text;
    bool warned = false;  // "still sending" said once
  };
  struct Request {
    std::string what;  // first, react, unreact, seen, history, more, chats
    int n = 0;
    std::string emoji;
    std::string title;  // history, more, chats: the line above the page
  };

  // A history page under `title`; `empty` says so when it has nothing.
  void ShowPage(const HistoryReply& page, const std::string& title,
                const std::string& empty);
  void ShowMessage(MessageId id, UserId from, uint64_t ts, const std::string& text,
                   const std::string& suffix);
  void TakeEvent(const Event& e, bool missed);
  void TakeMessage(const Message& m, const std::string& origin_device, bool missed);
  void TakeError(const Incoming& in);
  // The peer received or saw our messages up to id: advances their states.
  void PeerMark(MessageId id, State state);
  void Command(const std::string& line);
  void SendText(const std::string& text);
  // [N] for a message shown, else its id.
  std::string Ref(MessageId id) const;
  int NumberOf(MessageId id) const;
  std::string Who(UserId user) const;

  Client* client_;
  UserId peer_;
  uint32_t page_;
  Print print_;
  bool started_ = false;
  std::vector<Incoming> early_;  // before the first page
  std::vector<MessageId> ids_;   // [N] -> message id (0: not yet processed)
  std::map<uint64_t, int> numbers_;  // message id -> N
  std::map<uint64_t, State> mine_;   // our messages shown: id -> state
  std::map<std::string, Sending> sending_;  // client_msg_id -> waiting send
  std::map<uint64_t, Request> requests_;
  MessageId oldest_;       // the oldest message shown (for /more)
  MessageId newest_peer_;  // the peer's newest message shown
  MessageId seen_marked_;  // what we told the server we saw
  MessageId peer_delivered_, peer_seen_;
  std::map<uint64_t, uint64_t> away_;  // other chats: peer -> messages missed
};

}  // namespace natter

#endif  // NATTER_CLIENT_CHAT_H_

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
#include <optional>
#include <string>
#include <vector>

#include "client/client.h"

namespace natter {

// Runs until the input ends, /quit or `interrupted` (the caller's signal
// flag); `resized` is a SIGWINCH flag.  Returns a sysexits code, having
// said what went wrong in one line on stderr.
int RunChat(const ClientOptions& options, UserId peer,
            const std::atomic<bool>& interrupted, std::atomic<bool>& resized);

// What ChatView asks of its connection, as the Client members of the same
// names do: natter chat gives it its Client, a test a stand-in.
class ChatLink {
 public:
  virtual ~ChatLink() = default;
  virtual UserId user() const = 0;
  virtual bool CaughtUp() const = 0;
  virtual std::string Send(UserId to, const std::string& text,
                           std::string client_msg_id) = 0;
  virtual uint64_t React(UserId peer, MessageId id,
                         std::optional<std::string> emoji) = 0;
  virtual uint64_t MarkSeen(UserId peer, MessageId id) = 0;
  virtual uint64_t GetHistory(const History& query) = 0;
  virtual uint64_t GetChats(const Chats& query) = 0;
};

// The conversation as natter chat shows it, apart from the terminal: it
// takes what the client brings and the lines the user types, asks the
// client, and prints through `print` (one call per line or block).
class ChatView {
 public:
  using Print = std::function<void(const std::string&)>;
  // page: messages a history page shows.
  ChatView(ChatLink* client, UserId peer, uint32_t page, Print print);

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
  // A message, numbered [N]: the next number, or the one it was shown
  // with before.
  void ShowMessage(const Message& m, const std::string& suffix);
  void TakeEvent(const Event& e, bool missed);
  void TakeMessage(const Message& m, const std::string& origin_device,
                   bool missed);
  void TakeProcessed(const Processed& p);
  void TakeError(const Incoming& in);
  void TakeSendError(const Incoming& in);
  void TakeOk(uint64_t request);
  void TakeHistory(uint64_t request, const HistoryReply& page);
  void TakeChats(uint64_t request, const ChatsReply& page);
  // The request a reply answers, forgotten now; nullopt if not ours.
  std::optional<Request> Answered(uint64_t request);
  // The first page is shown: what came before it is shown now.
  void Started();
  // The state of our message id from the peer's marks.
  State StateOf(MessageId id) const;
  // The peer received or saw our messages up to id: advances their states.
  void PeerMark(MessageId id, State state);
  void Command(const std::string& line);
  void AskReact(const std::vector<std::string>& words);
  void AskHistory(const std::vector<std::string>& words);
  void AskOlder();
  // The message [N] named by text, or 0 having said why not.
  MessageId Numbered(const std::string& text);
  void SendText(const std::string& text);
  // [N] for a message shown, else its id.
  std::string Ref(MessageId id) const;
  int NumberOf(MessageId id) const;
  std::string Who(UserId user) const;

  ChatLink* client_;
  UserId peer_;
  uint32_t page_;
  Print print_;
  bool started_ = false;
  std::vector<Incoming> early_;      // before the first page
  std::vector<MessageId> ids_;       // [N] -> message id (0: not yet processed)
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

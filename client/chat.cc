#include "client/chat.h"

#include <langinfo.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <clocale>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <sstream>

#include "client/json_events.h"
#include "client/line_editor.h"
#include "common/error_codes.h"
#include "common/ids.h"
#include "common/text.h"
#include "common/validate.h"

namespace natter {
namespace {

const char kHelp[] =
    "-- commands:\n"
    "   /react N EMOJI   react to message [N]\n"
    "   /unreact N       take your reaction back\n"
    "   /history [TIME]  the newest page again, or the page up to TIME\n"
    "                    (2026-11-27T18:00:00Z, or ago: 90m, 2h, 3d)\n"
    "   /more            an older page\n"
    "   /chats           your conversations\n"
    "   /quit            leave (also Ctrl-D)\n"
    "   //text           send a line that starts with /";

const char* StateName(ChatView::State s) {
  switch (s) {
    case ChatView::State::kSending:
      return "sending";
    case ChatView::State::kProcessed:
      return "processed";
    case ChatView::State::kDelivered:
      return "delivered";
    case ChatView::State::kSeen:
      return "seen";
  }
  return "";
}

// Local time: 18:02 today, 2026-11-27 18:02 on another day.
std::string ShortTime(uint64_t unix_ms) {
  time_t t = static_cast<time_t>(unix_ms / 1000), now = ::time(nullptr);
  struct tm tm, today;
  localtime_r(&t, &tm);
  localtime_r(&now, &today);
  char buf[32];
  bool same_day = tm.tm_year == today.tm_year && tm.tm_yday == today.tm_yday;
  strftime(buf, sizeof buf, same_day ? "%H:%M" : "%Y-%m-%d %H:%M", &tm);
  return buf;
}

// When /history's argument says: 2026-11-27T18:00:00Z or milliseconds, up
// to then; 90m, 2h, 3d, that long ago.
std::optional<uint64_t> ParseWhen(const std::string& word) {
  char unit = word.back();
  if (unit != 's' && unit != 'm' && unit != 'h' && unit != 'd')
    return ParseTime(word);
  auto ago = ParseDuration(word);
  if (!ago) return std::nullopt;
  uint64_t now = NowMs();
  return *ago * 1000 >= now ? 0 : now - *ago * 1000;
}

std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

}  // namespace

ChatView::ChatView(ChatLink* client, UserId peer, uint32_t page, Print print)
    : client_(client), peer_(peer), page_(page), print_(std::move(print)) {}

std::string ChatView::Who(UserId user) const {
  return user == client_->user() ? "me" : std::to_string(user.value);
}

int ChatView::NumberOf(MessageId id) const {
  auto it = numbers_.find(id.value);
  return it == numbers_.end() ? 0 : it->second;
}

std::string ChatView::Ref(MessageId id) const {
  int n = NumberOf(id);
  return n != 0 ? "[" + std::to_string(n) + "]"
                : "message " + std::to_string(id.value);
}

ChatView::State ChatView::StateOf(MessageId id) const {
  return id <= peer_seen_        ? State::kSeen
         : id <= peer_delivered_ ? State::kDelivered
                                 : State::kProcessed;
}

void ChatView::Start() {
  print_("-- chat with " + std::to_string(peer_.value) + " (you are " +
         std::to_string(client_->user().value) + "); /help for commands");
  History q;
  q.peer = peer_;
  q.limit = page_;
  requests_[client_->GetHistory(q)] = Request{"first", 0, "", ""};
}

void ChatView::ShowMessage(const Message& m, const std::string& suffix) {
  int n = NumberOf(m.id);
  if (n == 0) {
    ids_.push_back(m.id);
    n = static_cast<int>(ids_.size());
    numbers_[m.id.value] = n;
  }
  print_("[" + std::to_string(n) + "] " + ShortTime(m.ts) + " " + Who(m.from) +
         ": " + Printable(m.text) + suffix);
  if (m.from == peer_ && m.id > newest_peer_) newest_peer_ = m.id;
}

void ChatView::ShowPage(const HistoryReply& page, const std::string& title,
                        const std::string& empty) {
  if (page.messages.empty()) {
    print_(empty);
    return;
  }
  if (!title.empty()) print_(title);
  for (const HistoryItem& item : page.messages) {
    const Message& m = item.message;
    if (oldest_.value == 0 || m.id < oldest_) oldest_ = m.id;
    std::string suffix;
    for (const Reaction& r : item.reactions) {
      suffix += " [" + Who(r.user) + " " + Printable(r.emoji) + "]";
    }
    if (m.from == client_->user()) {
      State s = item.seen        ? State::kSeen
                : item.delivered ? State::kDelivered
                                 : State::kProcessed;
      // Receipts that came before the page may be newer than it.
      s = std::max(s, StateOf(m.id));
      auto [it, fresh] = mine_.emplace(m.id.value, s);
      if (!fresh) it->second = std::max(it->second, s);
      suffix += std::string(" (") + StateName(it->second) + ")";
    }
    ShowMessage(m, suffix);
  }
  if (page.more) print_("-- /more for older messages");
}

void ChatView::PeerMark(MessageId id, State state) {
  MessageId& mark = state == State::kSeen ? peer_seen_ : peer_delivered_;
  if (id > mark) mark = id;
  std::vector<int> moved;
  for (auto& [msg, s] : mine_) {
    if (msg > id.value) break;
    if (s >= state) continue;
    s = state;
    moved.push_back(NumberOf(MessageId(msg)));
  }
  if (moved.empty()) return;
  std::string line = "    ";
  if (moved.size() <= 6) {
    for (int n : moved) line += "[" + std::to_string(n) + "] ";
  } else {
    line += std::to_string(moved.size()) + " messages up to [" +
            std::to_string(moved.back()) + "] ";
  }
  print_(line + StateName(state));
}

void ChatView::Take(const Incoming& in) {
  if (!started_ && in.kind == Incoming::Kind::kEvent) {
    early_.push_back(in);
    return;
  }
  switch (in.kind) {
    case Incoming::Kind::kEvent:
      TakeEvent(in.event, in.missed);
      return;
    case Incoming::Kind::kError:
      TakeError(in);
      return;
    case Incoming::Kind::kLink:
      print_("-- " + ToText(in));
      return;
    case Incoming::Kind::kProcessed:
      TakeProcessed(in.processed);
      return;
    case Incoming::Kind::kOk:
      TakeOk(in.request);
      return;
    case Incoming::Kind::kHistory:
      TakeHistory(in.request, in.history);
      return;
    case Incoming::Kind::kChats:
      TakeChats(in.request, in.chats);
      return;
    case Incoming::Kind::kMailbox:
      return;
  }
}

void ChatView::TakeEvent(const Event& e, bool missed) {
  const UserId me = client_->user();
  const UserId other = e.peer();
  if (const Message* m = e.message()) {
    TakeMessage(*m, e.origin_device, missed);
  } else if (const ReactionEvent* r = e.reaction()) {
    if (other != peer_) return;
    std::string who = r->by == me ? "you" : std::to_string(r->by.value);
    print_("    " + who +
           (r->emoji ? " reacted " + Printable(*r->emoji) + " to "
                     : " took back the reaction to ") +
           Ref(r->id));
  } else if (const Receipt* r = e.receipt()) {
    if (other != peer_ || r->by != peer_) return;
    PeerMark(r->id,
             e.kind() == EventKind::kSeen ? State::kSeen : State::kDelivered);
  }
}

void ChatView::TakeMessage(const Message& m, const std::string& origin_device,
                           bool missed) {
  const UserId me = client_->user();
  const UserId other = m.from == me ? m.to : m.from;
  if (other != peer_) {
    if (m.from == me) return;  // sent from another device elsewhere
    if (missed) {
      ++away_[other.value];
    } else {
      print_("* " + std::to_string(m.from.value) + ": " + Printable(m.text) +
             "  (natter chat " + std::to_string(m.from.value) + ")");
    }
    return;
  }
  if (numbers_.count(m.id.value) || (missed && m.id < oldest_)) return;
  if (m.from == me) {
    // Sent from another of our devices (the client skips this device's
    // own).
    State s = StateOf(m.id);
    mine_[m.id.value] = s;
    std::string from_device = origin_device.empty()
                                  ? std::string("another device")
                                  : Printable(origin_device);
    ShowMessage(
        m, std::string(" (") + StateName(s) + ", from " + from_device + ")");
  } else {
    ShowMessage(m, missed ? " (missed)" : "");
  }
  if (oldest_.value == 0) oldest_ = m.id;
}

void ChatView::TakeProcessed(const Processed& p) {
  auto it = sending_.find(p.client_msg_id);
  if (it == sending_.end()) return;
  int n = it->second.n;
  sending_.erase(it);
  ids_[static_cast<size_t>(n - 1)] = p.id;
  numbers_[p.id.value] = n;
  State s = StateOf(p.id);
  mine_[p.id.value] = s;
  std::string line = "    [" + std::to_string(n) + "] processed";
  if (s != State::kProcessed) line += ", " + std::string(StateName(s));
  print_(line);
}

std::optional<ChatView::Request> ChatView::Answered(uint64_t request) {
  auto it = requests_.find(request);
  if (it == requests_.end()) return std::nullopt;
  Request r = std::move(it->second);
  requests_.erase(it);
  return r;
}

void ChatView::Started() {
  started_ = true;
  std::vector<Incoming> early;
  early.swap(early_);
  for (const Incoming& e : early) Take(e);
}

void ChatView::TakeError(const Incoming& in) {
  if (!in.client_msg_id.empty()) {
    TakeSendError(in);
    return;
  }
  std::optional<Request> r = Answered(in.request);
  std::string what = r ? r->what : "request";
  if (what == "first") {
    print_("-- no history: " + in.error.message());
    Started();
    return;
  }
  print_("-- " + what + ": " + in.error.message());
}

void ChatView::TakeSendError(const Incoming& in) {
  auto it = sending_.find(in.client_msg_id);
  if (it == sending_.end()) return;
  Sending& s = it->second;
  if (IsRetryable(in.error.code())) {
    // The same client_msg_id: however many times it goes, it is one
    // message.
    if (!s.warned) {
      print_("    [" + std::to_string(s.n) + "] no answer yet (" +
             in.error.message() + "); still sending");
      s.warned = true;
    }
    client_->Send(peer_, s.text, it->first);
    return;
  }
  print_("    [" + std::to_string(s.n) + "] not sent: " + in.error.message());
  sending_.erase(it);
}

void ChatView::TakeOk(uint64_t request) {
  std::optional<Request> r = Answered(request);
  if (!r) return;
  if (r->what == "react") {
    print_("    you reacted " + Printable(r->emoji) + " to [" +
           std::to_string(r->n) + "]");
  } else if (r->what == "unreact") {
    print_("    you took back your reaction to [" + std::to_string(r->n) + "]");
  }
}

void ChatView::TakeHistory(uint64_t request, const HistoryReply& page) {
  std::optional<Request> r = Answered(request);
  if (!r) return;
  if (r->what == "first") {
    ShowPage(page, "", "-- no messages yet");
    Started();
  } else if (r->what == "more") {
    ShowPage(page, r->title, "-- no older messages");
  } else {
    ShowPage(page, r->title, "-- no messages up to then");
  }
}

void ChatView::TakeChats(uint64_t request, const ChatsReply& page) {
  std::optional<Request> r = Answered(request);
  if (!r) return;
  std::string block = std::move(r->title);  // the first page's
  if (page.chats.empty()) {
    if (!block.empty()) print_("-- no conversations yet");
    return;
  }
  for (const ChatItem& c : page.chats) {
    if (!block.empty()) block += "\n";
    block += "   " + ToText(c, client_->user());
  }
  print_(block);
  // The other pages follow, each as it comes.
  if (page.more) {
    requests_[client_->GetChats(NextChatsPage(page))] =
        Request{"chats", 0, "", ""};
  }
}

void ChatView::Settle() {
  if (!started_) return;
  if (newest_peer_ > seen_marked_) {
    requests_[client_->MarkSeen(peer_, newest_peer_)] =
        Request{"seen", 0, "", ""};
    seen_marked_ = newest_peer_;
  }
  if (!away_.empty() && client_->CaughtUp()) {
    std::string line = "-- while you were away:";
    for (const auto& [user, count] : away_) {
      line += " " + std::to_string(count) +
              (count == 1 ? " message" : " messages") + " from " +
              std::to_string(user) + ",";
    }
    line.back() = ';';
    print_(line + " /chats lists them");
    away_.clear();
  }
}

void ChatView::SendText(const std::string& text) {
  natter::Send check;
  check.client_msg_id = "x";
  check.to = peer_;
  check.text = text;
  Status valid = ValidateSend(check);
  if (!valid.ok()) {
    print_("-- not sent: " + valid.message());
    return;
  }
  std::string cmid = client_->Send(peer_, text, "");
  ids_.push_back(MessageId());
  int n = static_cast<int>(ids_.size());
  sending_[cmid] = Sending{n, text, false};
  print_("[" + std::to_string(n) + "] " + ShortTime(NowMs()) +
         " me: " + Printable(text) + " (sending)");
}

void ChatView::Command(const std::string& line) {
  std::vector<std::string> w = Words(line);
  const std::string& name = w[0];
  if (name == "/react" || name == "/unreact") {
    AskReact(w);
  } else if (name == "/history") {
    AskHistory(w);
  } else if (name == "/more") {
    AskOlder();
  } else if (name == "/chats") {
    requests_[client_->GetChats(Chats())] =
        Request{"chats", 0, "", "-- your chats (peer, unread, last message):"};
  } else if (name == "/help") {
    print_(kHelp);
  } else {
    print_("-- " + name + " is not a command; /help lists them");
  }
}

MessageId ChatView::Numbered(const std::string& text) {
  auto n = ParseUint(text);
  if (!n || *n == 0 || *n > ids_.size()) {
    print_("-- there is no message [" + text + "]");
    return MessageId();
  }
  MessageId id = ids_[*n - 1];
  if (id.value == 0) print_("-- [" + text + "] is not processed yet");
  return id;
}

void ChatView::AskReact(const std::vector<std::string>& w) {
  const bool set = w[0] == "/react";
  if (w.size() != (set ? 3u : 2u)) {
    print_(set ? "-- usage: /react N EMOJI" : "-- usage: /unreact N");
    return;
  }
  MessageId id = Numbered(w[1]);
  if (id.value == 0) return;
  std::optional<std::string> emoji;
  if (set) emoji = w[2];
  Status valid = ValidateReact(natter::React{peer_, id, emoji});
  if (!valid.ok()) {
    print_("-- " + w[0].substr(1) + ": " + valid.message());
    return;
  }
  requests_[client_->React(peer_, id, emoji)] =
      Request{set ? "react" : "unreact", NumberOf(id), set ? w[2] : "", ""};
}

void ChatView::AskHistory(const std::vector<std::string>& w) {
  if (w.size() > 2) {
    print_("-- usage: /history [TIME | AGO]");
    return;
  }
  History q;
  q.peer = peer_;
  q.limit = page_;
  std::string title = "-- the newest messages:";
  if (w.size() == 2) {
    std::optional<uint64_t> at = ParseWhen(w[1]);
    if (!at) {
      print_("-- /history: '" + w[1] +
             "' is neither a time (2026-11-27T18:00:00Z) nor a time ago (90m, "
             "2h, 3d)");
      return;
    }
    q.mode = HistoryMode::kAt;
    q.bound = *at;
    title = "-- messages up to " + ShortTime(*at) + ":";
  }
  requests_[client_->GetHistory(q)] = Request{"history", 0, "", title};
}

void ChatView::AskOlder() {
  if (oldest_.value == 0) {
    print_("-- no older messages");
    return;
  }
  History q;
  q.peer = peer_;
  q.mode = HistoryMode::kBefore;
  q.bound = oldest_.value;
  q.limit = page_;
  requests_[client_->GetHistory(q)] =
      Request{"more", 0, "", "-- older messages:"};
}

bool ChatView::Input(const std::string& line) {
  if (line.find_first_not_of(" \t") == std::string::npos) return true;
  if (line.rfind("//", 0) == 0) {
    SendText(line.substr(1));
    return true;
  }
  if (line[0] == '/') {
    std::vector<std::string> w = Words(line);
    if (w[0] == "/quit" || w[0] == "/exit") return false;
    Command(line);
    return true;
  }
  SendText(line);
  return true;
}

namespace {

// Text is UTF-8 on the wire; the terminal is taken to be so too.
void UseUtf8Locale() {
  if (std::setlocale(LC_CTYPE, "") != nullptr &&
      std::strcmp(nl_langinfo(CODESET), "UTF-8") == 0) {
    return;
  }
  if (std::setlocale(LC_CTYPE, "C.UTF-8") == nullptr)
    std::setlocale(LC_CTYPE, "C.utf8");
}

// A Client as ChatView's link.
class ClientChatLink : public ChatLink {
 public:
  explicit ClientChatLink(Client* client) : client_(client) {}
  UserId user() const override;
  bool CaughtUp() const override;
  std::string Send(UserId to, const std::string& text,
                   std::string client_msg_id) override;
  uint64_t React(UserId peer, MessageId id,
                 std::optional<std::string> emoji) override;
  uint64_t MarkSeen(UserId peer, MessageId id) override;
  uint64_t GetHistory(const History& query) override;
  uint64_t GetChats(const Chats& query) override;

 private:
  Client* client_;
};

UserId ClientChatLink::user() const { return client_->user(); }
bool ClientChatLink::CaughtUp() const { return client_->CaughtUp(); }
std::string ClientChatLink::Send(UserId to, const std::string& text,
                                 std::string client_msg_id) {
  return client_->Send(to, text, std::move(client_msg_id));
}
uint64_t ClientChatLink::React(UserId peer, MessageId id,
                               std::optional<std::string> emoji) {
  return client_->React(peer, id, std::move(emoji));
}
uint64_t ClientChatLink::MarkSeen(UserId peer, MessageId id) {
  return client_->MarkSeen(peer, id);
}
uint64_t ClientChatLink::GetHistory(const History& query) {
  return client_->GetHistory(query);
}
uint64_t ClientChatLink::GetChats(const Chats& query) {
  return client_->GetChats(query);
}

// natter chat on a terminal: a connected client and a line editor, with a
// ChatView between them.
class ChatSession {
 public:
  ChatSession(Client* client, UserId peer, const ClientOptions& options,
              const std::atomic<bool>& interrupted, std::atomic<bool>& resized)
      : client_(client),
        timeout_ms_(options.timeout_ms),
        interrupted_(interrupted),
        resized_(resized),
        link_(client),
        editor_(std::to_string(peer.value) + "> ", HistoryFile(options),
                [this] { return WaitForKey(); }),
        view_(&link_, peer, PageRows(editor_),
              [this](const std::string& text) { editor_.PrintAbove(text); }) {}

  // Until the input ends, /quit, the session is over or `interrupted`;
  // returns the exit code, having said what went wrong on stderr.
  int Run() {
    view_.Start();
    AwaitFirstPage();
    TakeLines();
    if (!over_.ok()) {
      std::cerr << "natter: chat: " << over_.message() << "\n";
      return ExitCodeFor(over_.code());
    }
    AwaitAnswers();
    client_->Flush();
    return Outcome();
  }

 private:
  using Clock = std::chrono::steady_clock;

  static std::string HistoryFile(const ClientOptions& options) {
    return options.state_dir.empty() ? "" : options.state_dir + "/chat.history";
  }

  // A page that fits the terminal, with room for the prompt.
  static uint32_t PageRows(const LineEditor& editor) {
    return editor.interactive()
               ? static_cast<uint32_t>(std::clamp(editor.Rows() - 6, 10, 50))
               : kDefaultHistoryPage;
  }

  // Shows what the client brings within timeout_ms.
  void Pump(int timeout_ms) {
    in_.clear();
    client_->Poll(timeout_ms, &in_);
    for (const Incoming& item : in_) {
      if (item.SessionOver()) {
        over_ = item.error;
        continue;
      }
      view_.Take(item);
    }
    view_.Settle();
  }

  // The editor's wait for a key, showing what the client brings meanwhile.
  bool WaitForKey() {
    for (;;) {
      if (interrupted_ || !over_.ok()) return false;
      if (resized_.exchange(false)) editor_.Resized();
      zmq::pollitem_t items[2] = {client_->PollItem(),
                                  {nullptr, STDIN_FILENO, ZMQ_POLLIN, 0}};
      int rc = zmq_poll(items, 2, 100);
      Pump(0);
      if (rc > 0 && (items[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR)))
        return true;
    }
  }

  // Lines typed (or piped) ahead wait for the page they may refer to.
  void AwaitFirstPage() {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
    while (!view_.ready() && !interrupted_ && over_.ok() &&
           Clock::now() < deadline) {
      Pump(50);
    }
  }

  void TakeLines() {
    while (auto line = editor_.ReadLine()) {
      if (!view_.Input(*line)) break;
      Pump(0);
      if (!over_.ok()) break;
    }
  }

  // What was typed goes before we do.  Answers are usually a moment away:
  // only a longer wait is announced.
  void AwaitAnswers() {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
    auto quiet = Clock::now() + std::chrono::milliseconds(300);
    while (view_.Unanswered() > 0 && !interrupted_ && Clock::now() < quiet)
      Pump(20);
    if (view_.Unanswered() > 0 && !interrupted_) {
      size_t n = view_.Unanswered();
      editor_.PrintAbove("-- waiting for " + std::to_string(n) +
                         (n == 1 ? " answer" : " answers") +
                         " (Ctrl-C leaves now)");
    }
    while (view_.Unanswered() > 0 && !interrupted_ && Clock::now() < deadline)
      Pump(100);
  }

  int Outcome() const {
    if (view_.Unprocessed() > 0) {
      std::cerr << "natter: chat: " << view_.Unprocessed()
                << (view_.Unprocessed() == 1 ? " message was"
                                             : " messages were")
                << " not processed\n";
      return EX_UNAVAILABLE;
    }
    if (view_.Unanswered() > 0) {
      std::cerr << "natter: chat: " << view_.Unanswered()
                << " requests had no answer\n";
      return EX_UNAVAILABLE;
    }
    return EX_OK;
  }

  Client* client_;
  const int timeout_ms_;
  const std::atomic<bool>& interrupted_;
  std::atomic<bool>& resized_;
  Status over_;  // Incoming::SessionOver
  std::vector<Incoming> in_;
  ClientChatLink link_;
  LineEditor editor_;
  ChatView view_;
};

}  // namespace

int RunChat(const ClientOptions& given, UserId peer,
            const std::atomic<bool>& interrupted, std::atomic<bool>& resized) {
  UseUtf8Locale();
  ClientOptions options = given;
  options.receive = true;
  options.watch_link = true;
  Client client(options);
  Status s = client.Connect();
  if (!s.ok()) {
    std::cerr << "natter: chat: " << s.message() << "\n";
    return ExitCodeFor(s.code());
  }
  if (peer == client.user()) {
    std::cerr << "natter: chat: that is you; chat with another user\n";
    return EX_USAGE;
  }
  return ChatSession(&client, peer, options, interrupted, resized).Run();
}

}  // namespace natter

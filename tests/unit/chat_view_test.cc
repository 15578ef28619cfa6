// natter chat's view of a conversation, without a terminal or a cell: what
// it prints for what the client brings and what the user types, and what it
// asks of the client (a stand-in here).  Alice (1) chats with bob (2).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "client/chat.h"
#include "common/ids.h"

using namespace natter;

namespace {

const UserId kAlice(1), kBob(2), kCarol(3), kDave(4);

// What ChatView asks, recorded; request ids count from 1.
class FakeLink : public ChatLink {
 public:
  UserId user() const override;
  bool CaughtUp() const override;
  std::string Send(UserId to, const std::string& text,
                   std::string client_msg_id) override;
  uint64_t React(UserId peer, MessageId id,
                 std::optional<std::string> emoji) override;
  uint64_t MarkSeen(UserId peer, MessageId id) override;
  uint64_t GetHistory(const History& query) override;
  uint64_t GetChats(const Chats& query) override;

  struct Sent {
    UserId to;
    std::string text;
    std::string client_msg_id;
  };
  bool caught_up = true;
  uint64_t last_request = 0;
  std::vector<Sent> sent;
  std::vector<natter::React> reacts;
  std::vector<MessageId> seen;
  std::vector<History> histories;
  size_t chats = 0;
};

UserId FakeLink::user() const { return kAlice; }
bool FakeLink::CaughtUp() const { return caught_up; }
std::string FakeLink::Send(UserId to, const std::string& text,
                           std::string client_msg_id) {
  if (client_msg_id.empty())
    client_msg_id = "c" + std::to_string(sent.size() + 1);
  sent.push_back({to, text, client_msg_id});
  return client_msg_id;
}
uint64_t FakeLink::React(UserId peer, MessageId id,
                         std::optional<std::string> emoji) {
  reacts.push_back({peer, id, emoji});
  return ++last_request;
}
uint64_t FakeLink::MarkSeen(UserId peer, MessageId id) {
  CHECK(peer == kBob);
  seen.push_back(id);
  return ++last_request;
}
uint64_t FakeLink::GetHistory(const History& query) {
  histories.push_back(query);
  return ++last_request;
}
uint64_t FakeLink::GetChats(const Chats&) {
  ++chats;
  return ++last_request;
}

Message Msg(uint64_t id, UserId from, const std::string& text) {
  Message m;
  m.id = MessageId(id);
  m.from = from;
  m.to = from == kAlice ? kBob : kAlice;
  m.ts = NowMs();
  m.text = text;
  return m;
}

Incoming EventOf(Event e, bool missed = false) {
  Incoming in;
  in.kind = Incoming::Kind::kEvent;
  in.event = std::move(e);
  in.missed = missed;
  return in;
}

Incoming MessageIn(const Message& m, bool missed = false) {
  return EventOf(Event{kAlice, Seq(), "", MessageEvent{m}}, missed);
}

// Bob received (or saw) alice's messages up to id.
Incoming BobMarks(uint64_t id, bool seen) {
  Receipt r{MessageId(id), kAlice, kBob, kBob};
  if (seen) return EventOf(Event{kAlice, Seq(), "", SeenEvent{r}});
  return EventOf(Event{kAlice, Seq(), "", DeliveredEvent{r}});
}

Incoming Page(uint64_t request, const std::vector<Message>& messages,
              bool more = false) {
  Incoming in;
  in.kind = Incoming::Kind::kHistory;
  in.request = request;
  for (const Message& m : messages)
    in.history.messages.push_back({m, {}, false, false});
  in.history.more = more;
  return in;
}

Incoming ProcessedIn(const std::string& client_msg_id, uint64_t id) {
  Incoming in;
  in.kind = Incoming::Kind::kProcessed;
  in.processed.client_msg_id = client_msg_id;
  in.processed.id = MessageId(id);
  return in;
}

bool EndsWith(const std::string& s, const std::string& end) {
  return s.size() >= end.size() &&
         s.compare(s.size() - end.size(), end.size(), end) == 0;
}

// A chat with bob on a fake link, its lines collected.
struct Chat {
  Chat()
      : view(&link, kBob, 50,
             [this](const std::string& text) { lines.push_back(text); }) {}

  // Starts, with this first page.
  void Start(const std::vector<Message>& page = {}) {
    view.Start();
    REQUIRE(link.histories.size() == 1);
    view.Take(Page(link.last_request, page));
    REQUIRE(view.ready());
    lines.clear();
  }
  // The lines printed since the last call.
  std::vector<std::string> Printed() {
    std::vector<std::string> out;
    out.swap(lines);
    return out;
  }
  // The one line printed since the last call.
  std::string Line() {
    std::vector<std::string> out = Printed();
    INFO(out.size() << " lines");
    REQUIRE(out.size() == 1);
    return out[0];
  }

  FakeLink link;
  std::vector<std::string> lines;
  ChatView view;
};

using Lines = std::vector<std::string>;

}  // namespace

TEST_CASE(
    "chat numbers the messages it shows, and a message shown again keeps its "
    "number") {
  Chat c;
  c.view.Start();
  CHECK(c.Line() == "-- chat with 2 (you are 1); /help for commands");
  c.view.Take(Page(1, {Msg(101, kBob, "hello"), Msg(102, kAlice, "hi")}, true));
  Lines page = c.Printed();
  REQUIRE(page.size() == 3);
  CHECK(page[0].rfind("[1] ", 0) == 0);
  CHECK(EndsWith(page[0], " 2: hello"));
  CHECK(page[1].rfind("[2] ", 0) == 0);
  CHECK(EndsWith(page[1], " me: hi (processed)"));
  CHECK(page[2] == "-- /more for older messages");

  c.view.Take(MessageIn(Msg(103, kBob, "again")));
  std::string line = c.Line();
  CHECK(line.rfind("[3] ", 0) == 0);
  CHECK(EndsWith(line, " 2: again"));
  // Shown already: not again.
  c.view.Take(MessageIn(Msg(103, kBob, "again")));
  CHECK(c.Printed().empty());

  // The newest page again: the same numbers.
  c.view.Input("/history");
  REQUIRE(c.link.histories.size() == 2);
  c.view.Take(Page(c.link.last_request,
                   {Msg(102, kAlice, "hi"), Msg(103, kBob, "again")}));
  page = c.Printed();
  REQUIRE(page.size() == 3);
  CHECK(page[0] == "-- the newest messages:");
  CHECK(page[1].rfind("[2] ", 0) == 0);
  CHECK(page[2].rfind("[3] ", 0) == 0);

  // What was shown of bob's is marked seen, once.
  c.view.Settle();
  CHECK(c.link.seen == std::vector<MessageId>{MessageId(103)});
  c.view.Settle();
  CHECK(c.link.seen.size() == 1);
}

TEST_CASE(
    "chat shows what arrives before the first page once the page is shown") {
  Chat c;
  c.view.Start();
  c.Printed();
  c.view.Take(MessageIn(Msg(105, kBob, "early")));
  CHECK(c.Printed().empty());
  CHECK_FALSE(c.view.ready());
  c.view.Take(Page(1, {Msg(104, kBob, "older")}));
  Lines lines = c.Printed();
  REQUIRE(lines.size() == 2);
  CHECK(EndsWith(lines[0], " 2: older"));
  CHECK(lines[1].rfind("[2] ", 0) == 0);
  CHECK(EndsWith(lines[1], " 2: early"));
}

TEST_CASE(
    "chat follows a message from sending to processed, delivered and seen") {
  Chat c;
  c.Start();
  CHECK(c.view.Input("hello bob"));
  REQUIRE(c.link.sent.size() == 1);
  CHECK(c.link.sent[0].to == kBob);
  CHECK(c.link.sent[0].text == "hello bob");
  std::string line = c.Line();
  CHECK(line.rfind("[1] ", 0) == 0);
  CHECK(EndsWith(line, " me: hello bob (sending)"));
  CHECK(c.view.Unprocessed() == 1);

  c.view.Take(ProcessedIn("c1", 500));
  CHECK(c.Line() == "    [1] processed");
  CHECK(c.view.Unprocessed() == 0);
  c.view.Take(BobMarks(500, false));
  CHECK(c.Line() == "    [1] delivered");
  c.view.Take(BobMarks(500, false));  // nothing new
  CHECK(c.Printed().empty());
  c.view.Take(BobMarks(500, true));
  CHECK(c.Line() == "    [1] seen");

  // A receipt that came before the message was processed.
  c.view.Input("quick");
  c.Printed();
  c.view.Take(BobMarks(501, false));
  c.view.Take(ProcessedIn("c2", 501));
  CHECK(c.Line() == "    [2] processed, delivered");
}

TEST_CASE("chat moves every message a receipt covers, in one line") {
  Chat c;
  c.Start();
  for (int i = 1; i <= 8; ++i) c.view.Input("m" + std::to_string(i));
  for (int i = 1; i <= 8; ++i)
    c.view.Take(ProcessedIn("c" + std::to_string(i), 500 + i));
  c.Printed();
  c.view.Take(BobMarks(503, false));
  CHECK(c.Line() == "    [1] [2] [3] delivered");
  c.view.Take(BobMarks(508, true));
  CHECK(c.Line() == "    8 messages up to [8] seen");
}

TEST_CASE(
    "chat sums up what was missed in other chats, and shows one that comes "
    "live") {
  Chat c;
  c.Start();
  c.link.caught_up = false;
  c.view.Take(MessageIn(Msg(201, kCarol, "psst"), true));
  c.view.Take(MessageIn(Msg(202, kCarol, "psst again"), true));
  Message to_dave = Msg(203, kDave, "hey");
  c.view.Take(MessageIn(to_dave, true));
  c.view.Settle();
  CHECK(c.Printed().empty());  // not before the catch-up is over
  c.link.caught_up = true;
  c.view.Settle();
  CHECK(c.Line() ==
        "-- while you were away: 2 messages from 3, 1 message from 4; /chats "
        "lists them");
  c.view.Settle();
  CHECK(c.Printed().empty());

  c.view.Take(MessageIn(Msg(204, kCarol, "now")));
  CHECK(c.Line() == "* 3: now  (natter chat 3)");
  CHECK(c.link.seen.empty());  // not bob's
}

TEST_CASE("chat shows the peer's text with its control characters escaped") {
  Chat c;
  c.Start();
  c.view.Take(MessageIn(Msg(101, kBob, "hi\x1b[2J\nthere\r")));
  std::string line = c.Line();
  CHECK(line.find_first_of("\x1b\n\r") == std::string::npos);
  CHECK(EndsWith(line, " 2: hi\\x1b[2J\\nthere\\r"));
}

TEST_CASE(
    "chat shows a message of its user's other device with where it came from") {
  Chat c;
  c.Start();
  c.view.Take(EventOf(
      Event{kAlice, Seq(), "laptop", MessageEvent{Msg(101, kAlice, "hi")}}));
  CHECK(EndsWith(c.Line(), " me: hi (processed, from laptop)"));
}

TEST_CASE(
    "/react names a message by its number, and says so when there is none") {
  Chat c;
  c.Start({Msg(101, kBob, "hello")});
  c.view.Input("/react 5 👍");
  CHECK(c.Line() == "-- there is no message [5]");
  c.view.Input("/react x 👍");
  CHECK(c.Line() == "-- there is no message [x]");
  c.view.Input("/react 0 👍");
  CHECK(c.Line() == "-- there is no message [0]");
  c.view.Input("/react 1");
  CHECK(c.Line() == "-- usage: /react N EMOJI");
  c.view.Input("hi");
  c.Printed();
  c.view.Input("/react 2 👍");
  CHECK(c.Line() == "-- [2] is not processed yet");
  CHECK(c.link.reacts.empty());

  c.view.Input("/react 1 👍");
  CHECK(c.Printed().empty());
  REQUIRE(c.link.reacts.size() == 1);
  CHECK(c.link.reacts[0].peer == kBob);
  CHECK(c.link.reacts[0].id == MessageId(101));
  CHECK(c.link.reacts[0].emoji == std::optional<std::string>("👍"));
  Incoming ok;
  ok.kind = Incoming::Kind::kOk;
  ok.request = c.link.last_request;
  c.view.Take(ok);
  CHECK(c.Line() == "    you reacted 👍 to [1]");

  c.view.Input("/unreact 1");
  REQUIRE(c.link.reacts.size() == 2);
  CHECK_FALSE(c.link.reacts[1].emoji);
}

TEST_CASE(
    "/more asks for the page before the oldest message, and says when there is "
    "none") {
  Chat c;
  c.Start();
  c.view.Input("/more");
  CHECK(c.Line() == "-- no older messages");
  CHECK(c.link.histories.size() == 1);

  Chat d;
  d.Start({Msg(101, kBob, "one"), Msg(102, kBob, "two")});
  d.view.Input("/more");
  REQUIRE(d.link.histories.size() == 2);
  CHECK(d.link.histories[1].mode == HistoryMode::kBefore);
  CHECK(d.link.histories[1].bound == 101);
  d.view.Take(Page(d.link.last_request, {}));
  CHECK(d.Line() == "-- no older messages");
}

TEST_CASE(
    "chat says what it cannot do: a bad /history time, an unknown command, a "
    "send refused") {
  Chat c;
  c.Start();
  c.view.Input("/history yesterday");
  CHECK(EndsWith(
      c.Line(),
      "is neither a time (2026-11-27T18:00:00Z) nor a time ago (90m, 2h, 3d)"));
  c.view.Input("/history 2h");
  REQUIRE(c.link.histories.size() == 2);
  CHECK(c.link.histories[1].mode == HistoryMode::kAt);
  CHECK(c.link.histories[1].bound + 2 * 3600 * 1000 <= NowMs());
  c.view.Input("/frobnicate");
  CHECK(c.Line() == "-- /frobnicate is not a command; /help lists them");
  CHECK_FALSE(c.view.Input("/quit"));

  c.view.Input("hello");
  c.Printed();
  Incoming busy;
  busy.kind = Incoming::Kind::kError;
  busy.client_msg_id = "c1";
  busy.error = Status(ErrorCode::kUnavailable, "no answer");
  c.view.Take(busy);
  CHECK(c.Line() == "    [1] no answer yet (no answer); still sending");
  REQUIRE(c.link.sent.size() == 2);
  CHECK(c.link.sent[1].client_msg_id == "c1");  // the same message again
  c.view.Take(busy);
  CHECK(c.Printed().empty());  // said once
  Incoming bad = busy;
  bad.error = Status(ErrorCode::kBadData, "too long");
  c.view.Take(bad);
  CHECK(c.Line() == "    [1] not sent: too long");
  CHECK(c.view.Unprocessed() == 0);
}

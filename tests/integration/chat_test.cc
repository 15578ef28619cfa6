// natter chat as a person uses it, in a real terminal (tmux: send-keys in,
// capture-pane out), and natter rpc as a bot drives it, through pipes.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "common/text.h"
#include "tests/integration/devices.h"

using namespace natter;

namespace {

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A tmux server of the test's own (its socket in the test's folder), one
// window running one command; the server is stopped at the end.
class Terminal {
 public:
  Terminal(const std::string& dir, const std::string& command)
      : tmux_("LC_ALL=C.UTF-8 tmux -u -S " + dir + "/tmux.sock -f " + dir +
              "/tmux.conf") {
    std::ofstream(dir + "/tmux.conf")
        << "set -g remain-on-exit on\nset -g history-limit 2000\n";
    REQUIRE(RunCommand(tmux_ + " new-session -d -s chat -x 100 -y 40 " +
                       Quote(command)) == 0);
  }
  ~Terminal() { RunCommand(tmux_ + " kill-server 2>/dev/null"); }

  std::string Screen() const {
    std::string out;
    RunCommand(tmux_ + " capture-pane -p -S - -t chat",
               &out);  // with what scrolled off
    return out;
  }
  // Literal text, then Enter if asked.
  void Type(const std::string& text, bool enter = false) {
    if (!text.empty())
      REQUIRE(RunCommand(tmux_ + " send-keys -t chat -l " + Quote(text)) == 0);
    if (enter) REQUIRE(RunCommand(tmux_ + " send-keys -t chat Enter") == 0);
  }
  std::string Format(const std::string& format) const {
    std::string out;
    RunCommand(tmux_ + " display-message -p -t chat " + Quote(format), &out);
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
  // Waits for the screen to satisfy `done` (calling meanwhile between
  // looks); returns the screen.
  std::string WaitFor(const std::string& what,
                      const std::function<bool(const std::string&)>& done,
                      const std::function<void()>& meanwhile = {}) {
    std::string screen;
    WaitUntil(
        what, [&] { return done(screen = Screen()); }, 20,
        meanwhile ? meanwhile : Pause(50),
        [&] { return "the screen:\n" + screen; });
    return screen;
  }
  std::string WaitForText(const std::string& text,
                          const std::function<void()>& meanwhile = {}) {
    return WaitFor(
        "the screen to show \"" + text + "\"",
        [&](const std::string& s) { return s.find(text) != std::string::npos; },
        meanwhile);
  }
  // The exit status the command wrote to `path`, once it is there.
  static int ExitStatus(const std::string& path) {
    std::optional<uint64_t> status;
    WaitUntil(
        path + " to hold the chat's exit status",
        [&] {
          std::string text = ReadFile(path);
          while (!text.empty() && text.back() == '\n') text.pop_back();
          return (status = ParseUint(text)).has_value();
        },
        20, Pause(50));
    return static_cast<int>(*status);
  }

 private:
  std::string tmux_;
};

// /quit: natter chat exits 0 having said nothing on stderr (the command
// of the terminal writes chat.exit and chat.err in the cell's folder).
void QuitCleanly(Terminal* term, const TestCell& cell) {
  term->Type("/quit", true);
  CHECK(Terminal::ExitStatus(cell.dir() + "/chat.exit") == 0);
  CHECK(ReadFile(cell.dir() + "/chat.err").empty());
}

std::vector<std::string> ScreenLines(const std::string& screen) {
  std::vector<std::string> lines;
  std::istringstream in(screen);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// The number natter chat gave the message with this text: "[N] 18:02 2: text".
int NumberOf(const std::string& screen, const std::string& who_text) {
  std::regex re("\\[(\\d+)\\] [0-9:-]+ (?:[0-9-]+ )?" + who_text);
  std::smatch m;
  if (!std::regex_search(screen, m, re)) return 0;
  return static_cast<int>(ParseUint(m[1].str()).value_or(0));
}

// Sends and waits for the processed receipt; returns the message id.
MessageId SendAndWait(Device* d, UserId to, const std::string& text) {
  std::string cmid = d->client->Send(to, text);
  MessageId id;
  PollUntil(
      {d}, "the receipt of \"" + text + "\"",
      [&] {
        for (const auto& in : d->got) {
          if (in.kind == Incoming::Kind::kProcessed &&
              in.processed.client_msg_id == cmid) {
            id = in.processed.id;
          }
        }
        return id.value != 0;
      },
      20);
  REQUIRE(id.value != 0);
  return id;
}

// Polls until a message with this text has come (up to 10 s); its id, or
// 0 if it did not come.
MessageId AwaitText(Device* d, const std::string& text) {
  auto find = [&] {
    for (const auto& e : d->Messages()) {
      if (e.text == text) return e.id;
    }
    return MessageId();
  };
  PollUntil(
      {d}, "a message \"" + text + "\"", [&] { return find().value != 0; }, 20);
  return find();
}

bool HasReaction(const Device& d,
                 const std::function<bool(const ReactionEvent&)>& match) {
  for (const ReactionEvent& r : d.Reactions()) {
    if (match(r)) return true;
  }
  return false;
}

bool HasSeen(const Device& d,
             const std::function<bool(const Receipt&)>& match) {
  for (const Receipt& r : d.Receipts(EventKind::kSeen)) {
    if (match(r)) return true;
  }
  return false;
}

}  // namespace

TEST_CASE(
    "natter chat in a terminal: history, live messages, receipts, reactions, "
    "a line being typed left whole, /quit") {
  TestCell cell(1);
  UserId alice(1), bob(2);
  auto phone = Open(cell, bob, "phone");
  AwaitCaughtUp({phone.get()});
  auto laptop = Open(cell, alice, "laptop");
  // More than the page a 40-row terminal shows (34).
  SendAndWait(phone.get(), alice, "the oldest");
  for (int i = 1; i <= 39; ++i) {
    phone->client->Send(alice, "filler " + std::to_string(i));
  }
  PollUntil(
      {phone.get()}, "every send of bob's phone to be answered",
      [&] { return phone->client->SendsInFlight() == 0; }, 20);
  SendAndWait(laptop.get(), bob, "before the chat");
  MessageId from_bob = SendAndWait(phone.get(), alice, "hi from bob");

  Terminal term(cell.dir(), cell.NatterArgs(alice.value) + " chat 2 2>" +
                                cell.dir() + "/chat.err; echo $? >" +
                                cell.dir() + "/chat.exit");
  // The first page, then the prompt (tmux drops its trailing space).
  std::string screen =
      term.WaitFor("the prompt under the first page", [](const std::string& s) {
        std::vector<std::string> lines = ScreenLines(s);
        return !lines.empty() && lines.back() == "2>";
      });
  INFO(screen);
  CHECK(screen.find("me: before the chat") != std::string::npos);
  CHECK(screen.find("2: hi from bob") != std::string::npos);
  CHECK(screen.find("2: filler 39") != std::string::npos);
  CHECK(screen.find("2: filler 7\n") == std::string::npos);
  CHECK(screen.find("-- /more for older messages") != std::string::npos);
  // What the chat showed is marked seen: bob hears of it.
  PollUntil(
      {phone.get()}, "bob's phone to hear that alice saw his message",
      [&] {
        return HasSeen(*phone, [&](const Receipt& e) {
          return e.by == alice && e.id == from_bob;
        });
      },
      20);
  CHECK(HasSeen(*phone, [&](const Receipt& e) {
    return e.by == alice && e.id == from_bob;
  }));

  // A line sent moves through its states.
  term.Type("hello bob", true);
  screen = term.WaitForText("me: hello bob (sending)");
  int sent = NumberOf(screen, "me: hello bob");
  REQUIRE(sent > 0);
  std::string tag = "[" + std::to_string(sent) + "]";
  screen = term.WaitForText(tag + " processed");
  CHECK(screen.find(tag + " processed") != std::string::npos);
  MessageId hello = AwaitText(phone.get(), "hello bob");
  REQUIRE(hello.value != 0);
  // The phone acknowledges what it got: delivered.
  screen = term.WaitFor(
      tag + " to show delivered",
      [&](const std::string& s) {
        return std::regex_search(
            s, std::regex("\\[" + std::to_string(sent) + "\\].* delivered"));
      },
      [&] { phone->Poll(20); });
  CHECK(std::regex_search(
      screen, std::regex("\\[" + std::to_string(sent) + "\\].* delivered")));
  AwaitAnswer(phone.get(), phone->client->MarkSeen(alice, hello));
  screen = term.WaitFor(tag + " to show seen", [&](const std::string& s) {
    return std::regex_search(
        s, std::regex("\\[" + std::to_string(sent) + "\\].* seen"));
  });
  CHECK(std::regex_search(
      screen, std::regex("\\[" + std::to_string(sent) + "\\].* seen")));

  // A message arriving while a line is half typed: shown above it, and the
  // line is still there, whole, to finish and send.
  term.Type("half typ");
  term.WaitForText("2> half typ");
  MessageId meanwhile = SendAndWait(phone.get(), alice, "while you type");
  screen = term.WaitForText("2: while you type");
  std::vector<std::string> lines = ScreenLines(screen);
  REQUIRE(!lines.empty());
  CHECK(lines.back() == "2> half typ");
  CHECK(CountOf(screen, "half typ") == 1);
  term.Type("ed", true);
  CHECK(AwaitText(phone.get(), "half typed").value != 0);

  // Reactions, both ways.
  int n = NumberOf(screen, "2: while you type");
  REQUIRE(n > 0);
  term.Type("/react " + std::to_string(n) + " 👍", true);
  PollUntil(
      {phone.get()}, "bob's phone to get alice's reaction",
      [&] {
        return HasReaction(*phone, [&](const ReactionEvent& e) {
          return e.id == meanwhile && e.emoji && *e.emoji == "👍";
        });
      },
      20);
  CHECK(HasReaction(*phone, [&](const ReactionEvent& e) {
    return e.by == alice && e.id == meanwhile && e.emoji && *e.emoji == "👍";
  }));
  term.WaitForText("you reacted 👍 to [" + std::to_string(n) + "]");
  term.Type("/unreact " + std::to_string(n), true);
  PollUntil(
      {phone.get()}, "bob's phone to hear that alice took her reaction back",
      [&] {
        return HasReaction(*phone, [&](const ReactionEvent& e) {
          return e.id == meanwhile && !e.emoji;
        });
      },
      20);
  CHECK(HasReaction(*phone, [&](const ReactionEvent& e) {
    return e.id == meanwhile && !e.emoji;
  }));
  AwaitAnswer(phone.get(),
              phone->client->React(alice, hello, std::string("🎉")));
  screen = term.WaitForText("2 reacted 🎉 to " + tag);
  CHECK(screen.find("2 reacted 🎉 to " + tag) != std::string::npos);

  // Commands.
  term.Type("/more", true);
  screen = term.WaitForText("2: the oldest");
  CHECK(screen.find("-- older messages:") != std::string::npos);
  CHECK(screen.find("2: filler 7\n") != std::string::npos);
  term.Type("/more", true);
  CHECK(term.WaitForText("-- no older messages").find("no older") !=
        std::string::npos);
  term.Type("/history", true);
  screen =
      term.WaitFor("the newest page to show the last message sent",
                   [&](const std::string& s) {
                     size_t at = s.find("-- the newest messages:");
                     return at != std::string::npos &&
                            s.find("me: hello bob", at) != std::string::npos;
                   });
  // The page again, each message under the number it had, with what it
  // has now.
  std::string again = screen.substr(screen.find("-- the newest messages:"));
  CHECK(again.find(tag + " ") != std::string::npos);
  CHECK(std::regex_search(
      again, std::regex("\\[" + std::to_string(sent) +
                        "\\] [0-9:]+ me: hello bob \\[2 🎉\\] \\(seen\\)")));
  // From a point in time: a date, or a while ago.
  term.Type("/history 2099-01-01T00:00:00Z", true);
  // The page is drawn after its heading: wait for the line in it.
  auto after = [](const std::string& s, const std::string& heading) {
    size_t at = s.find(heading);
    return at == std::string::npos ? std::string() : s.substr(at);
  };
  screen = term.WaitFor(
      "the page up to 2099 to show bob's message", [&](const std::string& s) {
        return after(s, "-- messages up to 2099-01-01")
                   .find("2: hi from bob") != std::string::npos;
      });
  CHECK(after(screen, "-- messages up to 2099").find("2: hi from bob") !=
        std::string::npos);
  term.Type("/history 3d", true);
  CHECK(term.WaitForText("-- no messages up to then").find("up to then") !=
        std::string::npos);
  term.Type("/history soon", true);
  CHECK(term.WaitForText("'soon' is neither a time").find("neither") !=
        std::string::npos);
  term.Type("/chats", true);
  screen = term.WaitForText("-- your chats");
  CHECK(screen.find("   2 unread") != std::string::npos);
  term.Type("/frobnicate", true);
  CHECK(
      term.WaitForText("/frobnicate is not a command").find("not a command") !=
      std::string::npos);
  term.Type("/react 999 👍", true);
  CHECK(term.WaitForText("there is no message [999]").find("[999]") !=
        std::string::npos);

  QuitCleanly(&term, cell);
}

TEST_CASE("natter chat's /chats shows every page of long conversations") {
  TestCell cell(1);
  UserId alice(1);
  auto laptop = Open(cell, alice, "laptop");
  // 70 conversations whose last messages take some 290 KB: several pages.
  // The first one begun is the last listed, on the last page.
  for (uint64_t peer = 5000; peer < 5070; ++peer) {
    laptop->client->Send(UserId(peer), "to " + std::to_string(peer) + " " +
                                           std::string(kMaxTextBytes - 8, 'x'));
  }
  PollUntil(
      {laptop.get()}, "every send of alice's laptop to be answered",
      [&] { return laptop->client->SendsInFlight() == 0; }, 30);
  REQUIRE(laptop->Count(Incoming::Kind::kProcessed) == 70);
  Terminal term(cell.dir(), cell.NatterArgs(alice.value) + " chat 2 2>" +
                                cell.dir() + "/chat.err; echo $? >" +
                                cell.dir() + "/chat.exit");
  term.WaitForText("-- no messages yet");
  term.Type("/chats", true);
  // (The first pages scroll out of the terminal's 2000 lines.)
  std::string screen = term.WaitForText("   5000 unread 0");
  CHECK(screen.find("   5000 unread 0") != std::string::npos);
  QuitCleanly(&term, cell);
}

TEST_CASE(
    "natter chat reconnects by itself after frontd restarts and shows what it "
    "missed") {
  TestCell cell(1);
  UserId alice(1), bob(2);
  auto phone = Open(cell, bob, "phone");
  AwaitCaughtUp({phone.get()});
  SendAndWait(phone.get(), alice, "first");
  Terminal term(cell.dir(), cell.NatterArgs(alice.value) + " chat 2 2>" +
                                cell.dir() + "/chat.err; echo $? >" +
                                cell.dir() + "/chat.exit");
  term.WaitForText("2: first");
  // natter is the child of the pane's shell.
  std::string shell = term.Format("#{pane_pid}");
  std::vector<std::string> children =
      SplitList(ReadFile("/proc/" + shell + "/task/" + shell + "/children"));
  REQUIRE(!children.empty());
  const pid_t chat = static_cast<pid_t>(ParseUint(children[0]).value_or(0));
  REQUIRE(chat > 0);

  pid_t frontd = cell.DaemonPid("frontd");
  REQUIRE(::kill(frontd, SIGKILL) == 0);
  std::string screen = term.WaitForText("-- connection lost; reconnecting");
  INFO(screen);
  REQUIRE(screen.find("connection lost") != std::string::npos);
  // The chat stands still while frontd comes back and bob writes, so the
  // message can only reach it from the mailbox, once it has a session
  // again.
  REQUIRE(::kill(chat, SIGSTOP) == 0);
  SendAndWait(phone.get(), alice, "while you were away");
  REQUIRE(::kill(chat, SIGCONT) == 0);
  screen = term.WaitForText("2: while you were away");
  CHECK(screen.find("-- connected again") != std::string::npos);
  CHECK(CountOf(screen, "while you were away") == 1);
  // And it goes on: a line typed now is sent.
  term.Type("back again", true);
  CHECK(AwaitText(phone.get(), "back again").value != 0);
  term.Type("/quit", true);
  CHECK(Terminal::ExitStatus(cell.dir() + "/chat.exit") == 0);
}

namespace {

// A program with its standard input and output on pipes of ours.
class Piped {
 public:
  explicit Piped(const std::string& command) {
    int in[2], out[2];
    REQUIRE(::pipe(in) == 0);
    REQUIRE(::pipe(out) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(in[0], STDIN_FILENO);
      ::dup2(out[1], STDOUT_FILENO);
      ::close(in[0]);
      ::close(in[1]);
      ::close(out[0]);
      ::close(out[1]);
      ::execl("/bin/sh", "sh", "-c", command.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  ~Piped() {
    CloseInput();
    if (from_ >= 0) ::close(from_);
    if (pid_ > 0 && status_ < 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void Write(const std::string& line) {
    std::string data = line + "\n";
    REQUIRE(::write(to_, data.data(), data.size()) ==
            static_cast<ssize_t>(data.size()));
  }
  void CloseInput() {
    if (to_ >= 0) ::close(to_);
    to_ = -1;
  }
  // Reads what is there (waiting up to ms); returns false at the end.
  bool Read(int ms) {
    struct pollfd p = {from_, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) return true;
    char buf[65536];
    ssize_t n = ::read(from_, buf, sizeof buf);
    if (n <= 0) return false;
    pending_.append(buf, static_cast<size_t>(n));
    for (size_t nl; (nl = pending_.find('\n')) != std::string::npos;) {
      lines_.push_back(nlohmann::json::parse(pending_.substr(0, nl)));
      pending_.erase(0, nl + 1);
    }
    return true;
  }
  // Reads until a line satisfies `match`; returns it.  The output ending
  // first fails the test as a wait running out does.
  nlohmann::json WaitFor(
      const std::string& what,
      const std::function<bool(const nlohmann::json&)>& match) {
    size_t seen = 0;
    bool open = true;
    WaitUntil(
        what,
        [&] {
          for (; seen < lines_.size(); ++seen) {
            if (match(lines_[seen])) return true;
          }
          if (!open) FAIL("the output ended before " << what);
          return false;
        },
        20, [&] { open = Read(50); });
    return lines_[seen];
  }
  nlohmann::json Reply(const nlohmann::json& id) {
    return WaitFor("the reply to request " + id.dump(),
                   [&](const nlohmann::json& j) {
                     return j.contains("id") && j["id"] == id;
                   });
  }
  // Waits for the program to end; its exit status.
  int Wait() {
    WaitUntil(
        "the program to exit",
        [&] {
          int st;
          if (::waitpid(pid_, &st, WNOHANG) != pid_) return false;
          while (Read(0) && Read(10)) {
          }
          status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
          return true;
        },
        20, [&] { Read(50); });
    return status_;
  }
  const std::vector<nlohmann::json>& lines() const { return lines_; }

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  int status_ = -1;
  std::string pending_;
  std::vector<nlohmann::json> lines_;
};

bool IsEvent(const nlohmann::json& j, const std::string& type) {
  return j.value("method", "") == "event" &&
         j["params"].value("type", "") == type;
}

}  // namespace

TEST_CASE(
    "natter rpc through a pipe: a reply for each request by id, events as they "
    "come, errors as error replies, the replies awaited at the end of input") {
  TestCell cell(1);
  UserId alice(1), bob(2);
  auto phone = Open(cell, bob, "phone");
  AwaitCaughtUp({phone.get()});
  Piped rpc(cell.NatterArgs(alice.value) + " --device bot rpc --timeout 20");

  // Connected (and its mailbox begun) once the first reply is there.
  rpc.Write(R"({"jsonrpc":"2.0","id":0,"method":"chats"})");
  nlohmann::json chats = rpc.Reply(0);
  INFO(chats.dump());
  REQUIRE(chats["result"]["chats"].is_array());
  CHECK(chats["result"]["more"] == false);

  MessageId from_bob = SendAndWait(phone.get(), alice, "hello bot");
  nlohmann::json event =
      rpc.WaitFor("the event of bob's message", [](const nlohmann::json& j) {
        return IsEvent(j, "message") && j["params"]["text"] == "hello bot";
      });
  REQUIRE(!event.is_null());
  CHECK(event["jsonrpc"] == "2.0");
  CHECK(event["params"]["id"] == std::to_string(from_bob.value));
  CHECK(event["params"]["from"] == 2);

  rpc.Write(
      R"({"jsonrpc":"2.0","id":1,"method":"send","params":{"to":2,"text":"hi bob","client_msg_id":"rpc-1"}})");
  nlohmann::json sent = rpc.Reply(1);
  INFO(sent.dump());
  REQUIRE(sent.contains("result"));
  CHECK(sent["result"]["client_msg_id"] == "rpc-1");
  std::string sent_id = sent["result"]["id"];
  CHECK(std::to_string(AwaitText(phone.get(), "hi bob").value) == sent_id);

  std::string bob_id = std::to_string(from_bob.value);
  rpc.Write(R"({"id":"r","method":"react","params":{"peer":2,"id":")" + bob_id +
            R"(","emoji":"👍"}})");
  CHECK(rpc.Reply("r")["result"] == nlohmann::json::object());
  rpc.Write(R"({"id":"u","method":"unreact","params":{"peer":"2","id":)" +
            bob_id + "}}");
  CHECK(rpc.Reply("u")["result"] == nlohmann::json::object());
  rpc.Write(R"({"id":2.5,"method":"seen","params":{"peer":2,"id":")" + bob_id +
            R"("}})");
  CHECK(rpc.Reply(2.5).contains("result"));
  PollUntil(
      {phone.get()}, "bob's phone to hear that the bot saw his message",
      [&] {
        return HasSeen(*phone,
                       [&](const Receipt& e) { return e.id == from_bob; });
      },
      20);
  CHECK(HasReaction(*phone, [&](const ReactionEvent& e) {
    return e.id == from_bob && e.emoji && *e.emoji == "👍";
  }));
  CHECK(HasReaction(*phone, [&](const ReactionEvent& e) {
    return e.id == from_bob && !e.emoji;
  }));
  CHECK(HasSeen(*phone, [&](const Receipt& e) { return e.id == from_bob; }));

  rpc.Write(R"({"id":3,"method":"history","params":{"peer":2,"limit":10}})");
  nlohmann::json page = rpc.Reply(3);
  REQUIRE(page["result"]["messages"].size() == 2);
  CHECK(page["result"]["messages"][0]["text"] == "hello bot");
  CHECK(page["result"]["messages"][1]["text"] == "hi bob");
  CHECK(page["result"]["more"] == false);

  // Bad requests: error replies, and the connection goes on.
  rpc.Write("this is not json");
  nlohmann::json parse =
      rpc.WaitFor("the parse error's reply", [](const nlohmann::json& j) {
        return j.contains("error") && j["error"]["code"] == -32700;
      });
  CHECK(parse["id"].is_null());
  rpc.Write(R"({"id":4,"method":"fly"})");
  CHECK(rpc.Reply(4)["error"]["code"] == -32601);
  rpc.Write(R"({"id":5,"method":"send","params":{"to":2}})");
  CHECK(rpc.Reply(5)["error"]["code"] == -32602);
  rpc.Write(R"({"id":6,"method":"send","params":{"to":2,"text":")" +
            std::string(5000, 'x') + "\"}}");
  nlohmann::json too_long = rpc.Reply(6);
  CHECK(too_long["error"]["code"] == 3);
  CHECK(too_long["error"]["data"]["error"] == "bad-data");
  rpc.Write(
      R"({"id":7,"method":"react","params":{"peer":2,"id":"1","emoji":"👍"}})");
  CHECK(rpc.Reply(7)["error"]["data"]["error"] == "not-found");

  // A request without an id is carried out, without a reply; then the
  // input ends, with one send still owed: natter rpc waits for it.
  rpc.Write(R"({"method":"send","params":{"to":2,"text":"quietly"}})");
  rpc.Write(
      R"({"id":8,"method":"send","params":{"to":2,"text":"last words"}})");
  rpc.CloseInput();
  CHECK(rpc.Wait() == 0);
  CHECK(!rpc.Reply(8).is_null());
  CHECK(rpc.Reply(8).contains("result"));
  CHECK(AwaitText(phone.get(), "quietly").value != 0);
  CHECK(AwaitText(phone.get(), "last words").value != 0);
  // Every reply once; nothing answered that was not asked.
  std::map<std::string, int> replies;
  for (const auto& j : rpc.lines()) {
    if (j.contains("id") && !j["id"].is_null()) ++replies[j["id"].dump()];
  }
  CHECK(replies.size() == 11);
  for (const auto& [id, count] : replies) {
    INFO(id);
    CHECK(count == 1);
  }
}

// natter(1) and natterctl(8) as a user runs them: output, and the sysexits
// codes of the command-line contract.
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>
#include <zmq.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/curve.h"
#include "common/ids.h"
#include "common/token.h"
#include "tests/integration/devices.h"
#include "tests/integration/test_cell.h"

using namespace natter;

namespace {

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result Run(const std::string& command) {
  Result r;
  r.code = RunCommand(command, &r.out, &r.err);
  return r;
}

size_t Lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

TEST_CASE(
    "natter send prints the processed id and natter listen prints that "
    "message") {
  TestCell cell(1);
  // Bob's device connects once, so it has a cursor to come back to.
  Result first = Run(cell.NatterArgs(2) + " --device cli listen --for 1");
  INFO(first.err);
  REQUIRE(first.code == 0);
  Result sent = Run(cell.NatterArgs(1) + " send 2 hello bob");
  INFO(sent.err);
  REQUIRE(sent.code == 0);
  std::string id = sent.out.substr(0, sent.out.find('\n'));
  REQUIRE(!id.empty());
  CHECK(id.find_first_not_of("0123456789") == std::string::npos);

  Result got = Run(cell.NatterArgs(2) +
                   " --device cli --json listen --count 1 --for 10");
  INFO(got.err);
  REQUIRE(got.code == 0);
  REQUIRE(Lines(got.out) == 1);
  auto j = nlohmann::json::parse(got.out);
  CHECK(j["type"] == "message");
  CHECK(j["id"] == id);  // a string: ids exceed 2^53
  CHECK(j["from"] == 1);
  CHECK(j["to"] == 2);
  CHECK(j["text"] == "hello bob");
  CHECK(j["missed"] == true);
  CHECK(j["ts"].is_number());
  CHECK(j["seq"] == 1);

  // Acknowledged: listening again shows nothing more.
  Result again =
      Run(cell.NatterArgs(2) + " --device cli --json listen --for 1");
  CHECK(again.code == 0);
  CHECK(again.out.empty());
}

TEST_CASE("natter send without text sends each line of stdin") {
  TestCell cell(1);
  Result r = Run("printf 'one\\ntwo\\n\\nthree\\n' | " + cell.NatterArgs(1) +
                 " --json send 2");
  INFO(r.err);
  REQUIRE(r.code == 0);
  REQUIRE(Lines(r.out) == 3);
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    CHECK(nlohmann::json::parse(line)["type"] == "processed");
  }
  // Each line is a message of its own (the empty one none).
  Result history = Run(cell.NatterArgs(2) + " --json history 1");
  REQUIRE(history.code == 0);
  std::vector<std::string> texts;
  std::istringstream messages(history.out);
  for (std::string m; std::getline(messages, m);)
    texts.push_back(nlohmann::json::parse(m)["text"]);
  CHECK(texts == std::vector<std::string>{"one", "two", "three"});
}

TEST_CASE(
    "natter exits with the sysexits code of what went wrong, saying why on one "
    "line") {
  TestCell cell(1);
  TempDir scratch;
  SECTION("an expired token: 77") {
    std::string args = BinPath("natter") + " -c " + cell.dir() +
                       "/client.conf -s ipc://" + cell.dir() +
                       "/run/frontd.sock -t " + cell.Token(1, -3600);
    Result r = Run(args + " send 2 hi");
    INFO(r.err);
    CHECK(r.code == 77);
    CHECK(Lines(r.err) == 1);
    CHECK(r.err.find("expired") != std::string::npos);
  }
  SECTION("a forged token: 77") {
    Result r = Run(BinPath("natter") + " -s ipc://" + cell.dir() +
                   "/run/frontd.sock -c " + cell.dir() +
                   "/client.conf -t nt1.forged.token send 2 hi");
    INFO(r.err);
    CHECK(r.code == 77);
    CHECK(Lines(r.err) == 1);
  }
  SECTION("text that is not UTF-8: 65") {
    Result r = Run(cell.NatterArgs(1) + " send 2 $(printf '\\377')");
    INFO(r.err);
    CHECK(r.code == 65);
    CHECK(Lines(r.err) == 1);
  }
  SECTION("a server that is down: 69 after --timeout") {
    Result r = Run(BinPath("natter") + " -s ipc://" + scratch.path() +
                   "/none.sock -t x --timeout 1 send 2 hi");
    CHECK(r.code == 69);
    CHECK(Lines(r.err) == 1);
  }
  SECTION("usage: 64") {
    CHECK(Run(cell.NatterArgs(1)).code == 64);
    CHECK(Run(cell.NatterArgs(1) + " send bob hi").code == 64);
    CHECK(Run(cell.NatterArgs(1) + " send 0 hi").code == 64);
    CHECK(Run(cell.NatterArgs(1) + " fly 2").code == 64);
    CHECK(Run(cell.NatterArgs(1) + " listen --bogus").code == 64);
    Result r = Run(BinPath("natter") + " -s ipc://x send 2 hi");
    CHECK(r.code == 64);
    CHECK(r.err.find("token") != std::string::npos);
  }
}

TEST_CASE("natterctl refuses to overwrite a cell, and says how the cell is") {
  TestCell cell(2);
  TempDir scratch;
  Result init = Run(BinPath("natterctl") + " init --dir " + cell.dir());
  CHECK(init.code == 73);
  CHECK(Lines(init.err) == 1);
  Result status = Run(BinPath("natterctl") + " status --dir " + cell.dir());
  CHECK(status.code == 0);
  CHECK(status.out.find("stored-1") != std::string::npos);
  CHECK(Run(BinPath("natterctl") + " token --dir " + cell.dir()).code == 64);
  CHECK(Run(BinPath("natterctl") + " token --dir " + cell.dir() +
            " --user 1 --ttl forever")
            .code == 64);
  Result token = Run(BinPath("natterctl") + " token --dir " + cell.dir() +
                     " --user 5 --ttl 15m");
  CHECK(token.code == 0);
  CHECK(token.out.rfind("nt1.", 0) == 0);
  Result stopped =
      Run(BinPath("natterctl") + " status --dir " + scratch.path());
  CHECK(stopped.code == 64);
}

TEST_CASE(
    "natterctl keygen makes a key whose name gives its role, and refuses a "
    "name that names none") {
  TempDir dir;
  std::string ctl = BinPath("natterctl") + " ";
  REQUIRE(Run(ctl + "init --dir " + dir.path()).code == 0);
  for (const char* name : {"newhost", "frontd2", "host-stored", "Admin"}) {
    INFO(name);
    Result r = Run(ctl + "keygen --dir " + dir.path() + " --name " + name);
    CHECK(r.code == 64);
    CHECK(Lines(r.err) == 1);
    CHECK(r.err.find("names no role") != std::string::npos);
    struct stat st;
    CHECK(::stat((dir.path() + "/keys/" + name + ".key").c_str(), &st) != 0);
    CHECK(::stat((dir.path() + "/keys/peers/" + name + ".pub").c_str(), &st) !=
          0);
  }
  for (const char* name :
       {"stored-1", "frontd@host3", "admin.alice", "notifyd_b"}) {
    INFO(name);
    Result r = Run(ctl + "keygen --dir " + dir.path() + " --name " + name);
    CHECK(r.code == 0);
    CHECK(Lines(r.out) == 1);
    std::string pub;
    REQUIRE(ReadFirstLine(dir.path() + "/keys/" + name + ".pub", &pub));
    CHECK(r.out == pub + "\n");  // Z85, as endpoints name it
    struct stat st;
    CHECK(::stat((dir.path() + "/keys/peers/" + name + ".pub").c_str(), &st) ==
          0);
  }
}

namespace {

// Replaces every from in the file at path with to.
void ReplaceInFile(const std::string& path, const std::string& from,
                   const std::string& to) {
  std::string text = ReadFile(path);
  for (size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  std::ofstream(path) << text;
}

// The daemons' keys in a cell made by natterctl init.
const char* const kDaemonKeys[] = {"frontd", "routed", "stored", "notifyd"};

std::string PublicKey(const std::string& dir, const std::string& name) {
  std::string line;
  ReadFirstLine(dir + "/keys/" + name + ".pub", &line);
  return line;
}

}  // namespace

TEST_CASE(
    "natterctl init writes CURVE keys in Z85; a cell whose keys hold '@' and "
    "'#' serves") {
  auto [alice, bob] = TwoUsers(2);
  TestCell cell(
      2, "",
      [](const std::string& dir) {
        std::string conf = ReadFile(dir + "/natter.conf");
        std::string stored = PublicKey(dir, "stored"),
                    routed = PublicKey(dir, "routed"),
                    notifyd = PublicKey(dir, "notifyd");
        CHECK(stored.size() == 40);
        CHECK(conf.find("/run/stored-0.sock@" + stored + " ") !=
              std::string::npos);
        CHECK(conf.find("/run/stored-1.sock@" + stored + "\n") !=
              std::string::npos);
        CHECK(conf.find("/run/routed.sock@" + routed + "\n") !=
              std::string::npos);
        CHECK(conf.find("/run/notifyd-in.sock@" + notifyd + "\n") !=
              std::string::npos);
        CHECK(conf.find("/run/notifyd-out.sock@" + notifyd + "\n") !=
              std::string::npos);
        CHECK(ReadFile(dir + "/client.conf")
                  .find("\nserver-key = " + PublicKey(dir, "frontd") + "\n") !=
              std::string::npos);
        // Every daemon's key made again until it holds both characters a
        // config file or an endpoint could take for something else.
        for (const char* name : kDaemonKeys) {
          char pub[41], sec[41];
          do {
            REQUIRE(zmq_curve_keypair(pub, sec) == 0);
          } while (std::strchr(pub, '@') == nullptr ||
                   std::strchr(pub, '#') == nullptr);
          std::string old = PublicKey(dir, name);
          std::ofstream(dir + "/keys/" + name + ".key") << sec << "\n";
          std::ofstream(dir + "/keys/" + name + ".pub") << pub << "\n";
          std::ofstream(dir + "/keys/peers/" + name + ".pub") << pub << "\n";
          ReplaceInFile(dir + "/natter.conf", old, pub);
          ReplaceInFile(dir + "/client.conf", old, pub);
        }
      },
      nullptr);
  TempDir scratch;
  std::string to = " send " + std::to_string(bob.value) + " ";
  REQUIRE(
      Run(cell.NatterArgs(bob.value) + " --device cli listen --for 1").code ==
      0);

  // client.conf's server-key, with its '#'.
  Result sent = Run(cell.NatterArgs(alice.value) + to + "from client.conf");
  INFO(sent.err);
  CHECK(sent.code == 0);
  // -k in either form, without a config file.
  std::string frontd = PublicKey(cell.dir(), "frontd");
  CurveKey key;
  REQUIRE(ParseCurveKey(frontd, &key));
  std::string args = "XDG_CONFIG_HOME=" + scratch.path() + " " +
                     BinPath("natter") + " -s ipc://" + cell.dir() +
                     "/run/frontd.sock --state-dir " + cell.dir() +
                     "/cli-state -t " + cell.Token(alice.value);
  for (const std::string& k : {frontd, CurveKeyHex(key)}) {
    Result r = Run(args + " -k '" + k + "'" + to + "given the key");
    INFO(k << ": " << r.err);
    CHECK(r.code == 0);
  }
  Result got = Run(cell.NatterArgs(bob.value) +
                   " --device cli --json listen --count 3 --for 20");
  INFO(got.err);
  CHECK(got.code == 0);
  CHECK(Lines(got.out) == 3);

  // A key in neither form: a usage error from -k, a config error from the
  // file, naming both forms.
  Result bad = Run(args + " -k '" + frontd.substr(1) + "'" + to + "hi");
  CHECK(bad.code == 64);
  CHECK(Lines(bad.err) == 1);
  CHECK(bad.err.find("40 characters of Z85 or 64 hex digits") !=
        std::string::npos);
  std::ofstream(scratch.path() + "/bad.conf")
      << "# no key\nserver-key = " << frontd.substr(1) << "\n";
  bad = Run(args + " -c " + scratch.path() + "/bad.conf" + to + "hi");
  CHECK(bad.code == 78);
  CHECK(Lines(bad.err) == 1);
  CHECK(bad.err.find("bad.conf: server-key") != std::string::npos);

  // natterctl reaches each control socket with its daemon's key.
  CHECK_NOTHROW(CellStatus(cell));
}

TEST_CASE(
    "a cell whose config names its keys in hex, as natterctl init wrote them "
    "before, serves") {
  auto [alice, bob] = TwoUsers(2);
  TestCell cell(
      2, "",
      [](const std::string& dir) {
        for (const char* name : kDaemonKeys) {
          std::string z85 = PublicKey(dir, name);
          CurveKey key;
          REQUIRE(ParseCurveKey(z85, &key));
          ReplaceInFile(dir + "/natter.conf", "@" + z85,
                        "@" + CurveKeyHex(key));
          ReplaceInFile(dir + "/client.conf", "= " + z85,
                        "= " + CurveKeyHex(key));
        }
      },
      nullptr);
  CurveKey stored, frontd;
  REQUIRE(ParseCurveKey(PublicKey(cell.dir(), "stored"), &stored));
  REQUIRE(ParseCurveKey(PublicKey(cell.dir(), "frontd"), &frontd));
  CHECK(ReadFile(cell.dir() + "/natter.conf")
            .find("/run/stored-1.sock@" + CurveKeyHex(stored) + "\n") !=
        std::string::npos);
  CHECK(ReadFile(cell.dir() + "/client.conf")
            .find("server-key = " + CurveKeyHex(frontd) + "\n") !=
        std::string::npos);
  TempDir scratch;
  Result sent = Run(cell.NatterArgs(alice.value) + " send " +
                    std::to_string(bob.value) + " to an old cell");
  INFO(sent.err);
  CHECK(sent.code == 0);
  CHECK_NOTHROW(CellStatus(cell));
}

TEST_CASE(
    "natterctl token refuses a --ttl past its maximum or one that would "
    "overflow") {
  TestCell cell(1);
  std::string token =
      BinPath("natterctl") + " token --dir " + cell.dir() + " --user 1";
  for (const char* ttl : {"9999999999999d", "213503982334601d",
                          "18446744073709551615", "3651d"}) {
    INFO(ttl);
    Result r = Run(token + " --ttl " + ttl);
    CHECK(r.code == 64);
    CHECK(Lines(r.err) == 1);
    CHECK(r.out.empty());
  }
  Result longest = Run(token + " --ttl 3650d");
  CHECK(longest.code == 0);
  // A device the cell would refuse at hello is refused here too.
  CHECK(Run(token + " --device \"$(printf 'a\\nb')\"").code == 64);
}

TEST_CASE("natterctl up and down start and stop a whole cell") {
  TempDir dir;
  TempDir scratch;
  std::string ctl = BinPath("natterctl");
  std::string cell = dir.path() + "/c";
  // up in the background; wait for ready through its output file.
  REQUIRE(RunCommand(ctl + " up --dir " + cell + " --shards 2 --listen ipc://" +
                     cell + "/run/f.sock >" + scratch.path() +
                     "/up.out 2>&1 &") == 0);
  WaitUntil(
      "natterctl up to say ready",
      [&] {
        return ReadFile(scratch.path() + "/up.out").find("ready") !=
               std::string::npos;
      },
      30, {},
      [&] { return "it said: " + ReadFile(scratch.path() + "/up.out"); });
  CHECK(Run(ctl + " status --dir " + cell).code == 0);
  CHECK(Run(ctl + " up --dir " + cell).code == 75);  // running already
  CHECK(Run(ctl + " down --dir " + cell).code == 0);
  CHECK(Run(ctl + " status --dir " + cell).code == 69);
}

TEST_CASE(
    "natter history, react, unreact, seen and chats, as a script would use "
    "them") {
  TestCell cell(3);
  auto [alice, bob] = TwoUsers(3);
  std::string a = cell.NatterArgs(alice.value), b = cell.NatterArgs(bob.value);
  std::string A = std::to_string(alice.value), B = std::to_string(bob.value);
  Result sent = Run("printf 'one\\ntwo\\nthree\\n' | " + a + " send " + B);
  REQUIRE(sent.code == 0);
  std::istringstream lines(sent.out);
  std::vector<std::string> ids;
  for (std::string l; std::getline(lines, l);) ids.push_back(l);
  REQUIRE(ids.size() == 3);

  Result hist = Run(b + " --json history " + A + " --limit 2");
  INFO(hist.err);
  REQUIRE(hist.code == 0);
  REQUIRE(Lines(hist.out) == 2);
  auto last = nlohmann::json::parse(hist.out.substr(hist.out.find('\n') + 1));
  CHECK(last["id"] == ids[2]);
  CHECK(last["text"] == "three");
  CHECK(last["reactions"].is_object());

  CHECK(Run(b + " react " + A + " " + ids[1] + " 👍").code == 0);
  CHECK(Run(a + " react " + B + " " + ids[1] + " 🎉").code == 0);
  CHECK(Run(b + " seen " + A + " " + ids[1]).code == 0);
  hist = Run(a + " --json history " + B + " --before " + ids[2]);
  REQUIRE(Lines(hist.out) == 2);
  auto second = nlohmann::json::parse(hist.out.substr(hist.out.find('\n') + 1));
  CHECK(second["reactions"][B] == "👍");
  CHECK(second["reactions"][A] == "🎉");
  CHECK(second["seen"] == true);
  CHECK(Run(b + " unreact " + A + " " + ids[1]).code == 0);
  hist = Run(a + " --json history " + B + " --after " + ids[0] + " --limit 1");
  REQUIRE(Lines(hist.out) == 1);
  CHECK(nlohmann::json::parse(hist.out)["reactions"].size() == 1);

  Result chats = Run(a + " --json chats");
  REQUIRE(chats.code == 0);
  auto chat = nlohmann::json::parse(chats.out);
  CHECK(chat["type"] == "chat");
  CHECK(chat["peer"] == bob.value);
  CHECK(chat["last"]["id"] == ids[2]);
  CHECK(chat["seen"] == ids[1]);
  Result bob_chats = Run(b + " --json chats");
  CHECK(nlohmann::json::parse(bob_chats.out)["unread"] == 1);

  // --at takes RFC 3339 and milliseconds; a time before everything: nothing.
  CHECK(Run(a + " history " + B + " --at 2024-01-01T00:00:00Z").out.empty());
  Result now =
      Run(a + " --json history " + B + " --at 2099-01-01T00:00:00.5+02:00");
  CHECK(Lines(now.out) == 3);

  // Refusals: a message of someone else's conversation, a bad emoji (65);
  // a bad option or limit (64).
  auto carol = cell.NatterArgs(4242);
  Result foreign = Run(carol + " react " + A + " " + ids[0] + " 👍");
  CHECK(foreign.code == 65);
  CHECK(Lines(foreign.err) == 1);
  CHECK(
      Run(b + " react " + A + " " + ids[0] + " " + std::string(70, 'x')).code ==
      65);
  CHECK(Run(b + " seen " + A + " 12345").code == 65);
  CHECK(Run(b + " history " + A + " --limit 501").code == 64);
  CHECK(Run(b + " history " + A + " --at yesterday").code == 64);
  CHECK(Run(b + " history " + A + " --at 1 --before 2").code == 64);
  CHECK(Run(b + " react " + A + " " + ids[0]).code == 64);
}

TEST_CASE(
    "text from another user prints as one line with visible escapes; --json "
    "keeps it exact") {
  TestCell cell(1);
  // A text that, printed raw, forges a second message, moves the cursor
  // back, retitles the terminal and clears the screen.
  const std::string hostile =
      "hi\n2026-01-01T00:00:00.000Z 1 -> 2: {fake line}\rback \x1b]0;pwned\x07 "
      "\x1b[2J end";
  const std::string shown =
      "hi\\n2026-01-01T00:00:00.000Z 1 -> 2: {fake line}\\rback "
      "\\x1b]0;pwned\\x07 \\x1b[2J end";
  // Two devices of bob's connect once, so both get the message as missed.
  for (const char* device : {"text", "json"}) {
    REQUIRE(Run(cell.NatterArgs(2) + " --device " + device + " listen --for 1")
                .code == 0);
  }
  {
    auto alice = Open(cell, UserId(1), "phone");
    alice->client->Send(UserId(2), hostile);
    PollUntil(
        {alice.get()}, "alice's message to be processed",
        [&] { return alice->Count(Incoming::Kind::kProcessed) == 1; }, 20);
    REQUIRE(alice->Count(Incoming::Kind::kProcessed) == 1);
  }
  auto one_line = [&](const Result& r) {
    INFO(r.err);
    CHECK(r.code == 0);
    CHECK(Lines(r.out) == 1);
    CHECK(r.out.find_first_of("\x1b\r\x07") == std::string::npos);
    CHECK(r.out.find(shown) != std::string::npos);
  };
  one_line(
      Run(cell.NatterArgs(2) + " --device text listen --count 1 --for 10"));
  one_line(Run(cell.NatterArgs(2) + " history 1"));
  one_line(Run(cell.NatterArgs(2) + " chats"));

  Result json = Run(cell.NatterArgs(2) +
                    " --device json --json listen --count 1 --for 10");
  REQUIRE(Lines(json.out) == 1);
  CHECK(nlohmann::json::parse(json.out)["text"] == hostile);
  json = Run(cell.NatterArgs(2) + " --json history 1");
  REQUIRE(Lines(json.out) == 1);
  CHECK(nlohmann::json::parse(json.out)["text"] == hostile);
  json = Run(cell.NatterArgs(2) + " --json chats");
  REQUIRE(Lines(json.out) == 1);
  CHECK(nlohmann::json::parse(json.out)["last"]["text"] == hostile);
}

TEST_CASE("one-shot commands leave the device's missed events for listen") {
  TestCell cell(1);
  CHECK(Run(cell.NatterArgs(2) + " listen --for 1").code == 0);
  CHECK(Run(cell.NatterArgs(1) + " send 2 while you were away").code == 0);
  // bob's default device sends and reads history; it must not swallow the
  // missed message.
  CHECK(Run(cell.NatterArgs(2) + " send 1 hi").code == 0);
  CHECK(Run(cell.NatterArgs(2) + " history 1").code == 0);
  Result got = Run(cell.NatterArgs(2) + " --json listen --count 1 --for 10");
  REQUIRE(Lines(got.out) == 1);
  CHECK(nlohmann::json::parse(got.out)["text"] == "while you were away");
}

TEST_CASE(
    "a device is not shown its own sends, reactions and seen marks as missed; "
    "the user's "
    "other devices are") {
  TestCell cell(1);
  TempDir scratch;
  // Both of alice's devices listen once, so they have cursors to come back
  // to.
  for (const char* device : {"x", "y"}) {
    REQUIRE(Run(cell.NatterArgs(1) + " --device " + device + " listen --for 1")
                .code == 0);
  }
  Result bob = Run(cell.NatterArgs(2) + " send 1 hi alice");
  REQUIRE(bob.code == 0);
  const std::string bobs = bob.out.substr(0, bob.out.find('\n'));
  // Device x answers, reacts and marks bob's message seen, each a one-shot
  // command that leaves the mailbox to listen.
  const std::string x = cell.NatterArgs(1) + " --device x ";
  Result sent = Run(x + "send 2 hi bob");
  REQUIRE(sent.code == 0);
  const std::string mine = sent.out.substr(0, sent.out.find('\n'));
  REQUIRE(Run(x + "react 2 " + bobs + " 👍").code == 0);
  REQUIRE(Run(x + "seen 2 " + bobs).code == 0);

  // x is shown bob's message only.
  Result on_x = Run(x + "--json listen --for 3");
  INFO(on_x.err);
  CHECK(on_x.code == 0);
  INFO(on_x.out);
  REQUIRE(Lines(on_x.out) == 1);
  auto only = nlohmann::json::parse(on_x.out);
  CHECK(only["id"] == bobs);
  CHECK(only["from"] == 2);
  CHECK(only["missed"] == true);

  // y is shown all four, missed, in order: bob's message, then x's message,
  // reaction and seen mark.
  Result on_y = Run(cell.NatterArgs(1) + " --device y --json listen --for 3");
  INFO(on_y.err);
  REQUIRE(on_y.code == 0);
  INFO(on_y.out);
  REQUIRE(Lines(on_y.out) == 4);
  std::istringstream lines(on_y.out);
  std::vector<nlohmann::json> got;
  for (std::string line; std::getline(lines, line);)
    got.push_back(nlohmann::json::parse(line));
  CHECK(got[0]["id"] == bobs);
  CHECK(got[1]["type"] == "message");
  CHECK(got[1]["id"] == mine);
  CHECK(got[1]["from"] == 1);
  CHECK(got[2]["type"] == "reaction");
  CHECK(got[3]["type"] == "seen");
  for (const auto& j : got) CHECK(j["missed"] == true);
}

TEST_CASE("natter-bench pages fills a cell and reports every page it timed") {
  TempDir scratch;
  Result r = Run("TMPDIR=" + scratch.path() + " " + BinPath("natter-bench") +
                 " pages --messages 1000 --small 20 --samples 3");
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["mode"] == "pages");
  CHECK(j["messages"] == 1000);
  CHECK(j["fill_per_s"].get<double>() > 0);
  for (const char* name :
       {"catchup_small", "catchup_start", "catchup_middle", "catchup_end",
        "history_small_latest", "history_latest", "history_at_middle",
        "history_before_start", "history_after_middle"}) {
    INFO(name);
    CHECK(j[std::string(name) + "_p50_ms"].get<double>() > 0);
    CHECK(j[std::string(name) + "_p99_ms"].get<double>() >=
          j[std::string(name) + "_p50_ms"].get<double>());
  }
  CHECK(Run(BinPath("natter-bench") + " pages --messages 10").code == 64);
  CHECK(Run(BinPath("natter-bench") + " fly").code == 64);
}

TEST_CASE(
    "natter-bench connections: the clients of a killed frontd come back on "
    "the other, and every message is delivered once") {
  TempDir scratch;
  Result r = Run("TMPDIR=" + scratch.path() + " " + BinPath("natter-bench") +
                 " connections --clients 40 --frontds 2 --messages 6 --rate 2"
                 " --kill-frontd 1");
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["frontds"] == 2);
  CHECK(j["clients_connected"] == 40);
  CHECK(j["planned"] == 240);
  CHECK(j["sent"] == 240);
  CHECK(j["processed"] == 240);
  CHECK(j["delivered"] == 240);
  CHECK(j["lost"] == 0);
  CHECK(j["delivered_ms"]["count"] == 240);
  const auto& storm = j["storm"];
  CHECK(storm["clients"].get<int>() > 0);
  CHECK(storm["not_back"] == 0);
  CHECK(storm["back_s"]["count"] == storm["clients"]);
  // Its port was held: they are all on frontd-1 at the end.
  CHECK(storm["landed_on"] == nlohmann::json{{"frontd-1", storm["clients"]}});
  CHECK(j["daemons"]["frontd-0"]["send_cpu_s"].is_null());
  CHECK(Run(BinPath("natter-bench") + " connections --kill-frontd 1").code ==
        64);
  CHECK(Run(BinPath("natter-bench") + " connections --total-rate 5").code ==
        64);
}

TEST_CASE("a device's CURVE key is made on first use, private, and kept") {
  TestCell cell(1);
  std::string state = cell.dir() + "/cli-state";
  REQUIRE(Run(cell.NatterArgs(1) + " --device laptop send 2 hi").code == 0);
  struct stat st;
  REQUIRE(::stat((state + "/laptop.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  std::string first, again;
  {
    std::ifstream in(state + "/laptop.key");
    std::getline(in, first);
  }
  REQUIRE(Run(cell.NatterArgs(1) + " --device laptop send 2 again").code == 0);
  {
    std::ifstream in(state + "/laptop.key");
    std::getline(in, again);
  }
  CHECK(first.size() == 40);
  CHECK(first == again);
}

namespace {

// natter's flags for the cell without a token (and a config file of one's
// own, if given).
std::string ArgsWithoutToken(const TestCell& cell,
                             const std::string& config = "") {
  return BinPath("natter") + " -c " +
         (config.empty() ? cell.dir() + "/client.conf" : config) +
         " -s ipc://" + cell.dir() + "/run/frontd.sock --state-dir " +
         cell.dir() + "/cli-state";
}

uint64_t NowS() { return NowMs() / 1000; }

}  // namespace

TEST_CASE(
    "natter takes its token from --token-file or --token-command, and says why "
    "when it cannot") {
  TestCell cell(1);
  TempDir scratch;
  const std::string file = scratch.path() + "/token";
  std::ofstream(file) << cell.Token(1) << "\n";
  const std::string args = ArgsWithoutToken(cell);
  SECTION("a file, a command, or either in the config file") {
    Result r = Run(args + " --token-file " + file + " send 2 from a file");
    INFO(r.err);
    CHECK(r.code == 0);
    CHECK(
        Run(args + " --token-command 'cat " + file + "' send 2 from a command")
            .code == 0);
    const std::string text = ReadFile(cell.dir() + "/client.conf");
    std::ofstream(scratch.path() + "/file.conf")
        << text << "token-file = " << file << "\n";
    std::ofstream(scratch.path() + "/command.conf")
        << text << "token-command = cat " << file << "\n";
    CHECK(
        Run(ArgsWithoutToken(cell, scratch.path() + "/file.conf") + " send 2 a")
            .code == 0);
    CHECK(Run(ArgsWithoutToken(cell, scratch.path() + "/command.conf") +
              " send 2 b")
              .code == 0);
  }
  SECTION("one source at a time") {
    CHECK(Run(args + " -t x --token-file " + file + " send 2 hi").code == 64);
    CHECK(
        Run(args + " --token-file " + file + " --token-command true send 2 hi")
            .code == 64);
    std::ofstream(scratch.path() + "/both.conf")
        << "token = x\ntoken-file = " << file << "\n";
    CHECK(Run(ArgsWithoutToken(cell, scratch.path() + "/both.conf") +
              " send 2 hi")
              .code == 78);
  }
  SECTION(
      "a file that cannot be read: 77; a command that fails or prints nothing: "
      "69") {
    Result r =
        Run(args + " --token-file " + scratch.path() + "/none send 2 hi");
    CHECK(r.code == 77);
    CHECK(Lines(r.err) == 1);
    CHECK(r.err.find(scratch.path() + "/none") != std::string::npos);
    r = Run(args + " --token-command 'exit 3' listen --for 1");
    CHECK(r.code == 69);
    CHECK(Lines(r.err) == 1);
    CHECK(r.err.find("exited with 3") != std::string::npos);
    r = Run(args + " --token-command true send 2 hi");
    CHECK(r.code == 69);
    CHECK(Lines(r.err) == 1);
  }
}

TEST_CASE(
    "natter listen --token-file reads the fresh token written there and "
    "listens past the first one's end") {
  TestCell cell(1);
  TempDir scratch;
  // bob's device has a cursor, so what is sent while it listens is its.
  REQUIRE(Run(cell.NatterArgs(2) + " listen --for 1").code == 0);
  const std::string file = scratch.path() + "/token";
  // Written whole or not at all, as a cron job would.
  auto write = [&](const std::string& token) {
    std::ofstream(file + ".tmp") << token << "\n";
    CHECK(std::rename((file + ".tmp").c_str(), file.c_str()) == 0);
  };
  // The first token expired 55 s ago: frontd ends its session about 5 s in.
  write(cell.Token(2, -55));
  const uint64_t ends = NowS() - 55 + kTokenClockSkew;
  auto hellos = [&] {
    return CellStatus(cell)["frontd"]["metrics"]["natter_frontd_hellos_total"]
        .get<double>();
  };
  const double hellos_before = hellos();
  Result got;
  std::thread listen([&] {
    got = Run(ArgsWithoutToken(cell) + " --token-file " + file +
              " --json listen --count 3 --for 40");
  });
  struct Join {  // also when a wait below fails the test
    std::thread& thread;
    ~Join() {
      if (thread.joinable()) thread.join();
    }
  } join{listen};
  // The fresh token is written once the listener has begun with the first.
  WaitUntil(
      "natter listen to say hello", [&] { return hellos() > hellos_before; },
      20, Pause(100));
  write(cell.Token(2));
  // What is sent once the first token has ended (and a moment more) must
  // reach the listener: that it listens past the end is the point.
  while (NowS() < ends + 2)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (int i = 0; i < 3; ++i) {
    CHECK(Run(cell.NatterArgs(1) + " send 2 late " + std::to_string(i)).code ==
          0);
  }
  listen.join();
  INFO(got.err);
  CHECK(got.code == 0);
  CHECK(got.err.empty());
  REQUIRE(Lines(got.out) == 3);
  std::istringstream lines(got.out);
  std::string line;
  for (int i = 0; std::getline(lines, line); ++i) {
    CHECK(nlohmann::json::parse(line)["text"] == "late " + std::to_string(i));
  }
}

TEST_CASE(
    "natter listen and rpc and chat with a token that ends exit 77 as soon as "
    "the session does") {
  const std::string command =
      GENERATE(as<std::string>{}, "listen --for 30", "rpc", "chat 1");
  INFO(command);
  TestCell cell(1);
  TempDir scratch;
  // Input that stays open (rpc and chat read it): a FIFO opened for
  // reading and writing.
  const std::string input = scratch.path() + "/input";
  REQUIRE(::mkfifo(input.c_str(), 0600) == 0);
  // Expired 57 s ago: frontd ends the session about 3 s in.
  const std::string token = cell.Token(2, -57);
  const uint64_t ends = NowS() - 57 + kTokenClockSkew;
  Result r = Run("timeout 30 " + ArgsWithoutToken(cell) + " -t " + token + " " +
                 command + " 0<>" + input);
  const uint64_t exited = NowS();
  INFO(r.err);
  CHECK(r.code == 77);
  CHECK(Lines(r.err) == 1);
  CHECK(r.err.find("expired") != std::string::npos);
  // At the session's end: not at the next ping, nor once frontd gives up
  // on the connection (hello-timeout, 5 s).
  CHECK(exited + 1 >= ends);
  CHECK(exited <= ends + 3);
}

TEST_CASE(
    "natter takes several frontds: -s given twice, or a list in "
    "NATTER_SERVER; one that is not there is left for the other") {
  TestCell cell(1, Frontds{2});
  const std::string gone = "ipc://" + cell.dir() + "/run/nobody.sock";
  const std::string second = "ipc://" + cell.dir() + "/run/frontd-1.sock";
  const std::string common =
      " --state-dir " + cell.dir() + "/cli-state -k '" +
      ReadFile(cell.dir() + "/keys/frontd.pub").substr(0, 40) + "' -t " +
      cell.Token(1) + " --timeout 30s";
  // Bob's device connects once, so it has a cursor to come back to.
  REQUIRE(Run(cell.NatterArgs(2) + " --device cli listen --for 1").code == 0);
  // The first named may be taken first: it answers nothing, and after a
  // few seconds the other is.
  Result twice = Run(BinPath("natter") + " -s " + gone + " -s " + second +
                     common + " send 2 through either");
  INFO(twice.err);
  CHECK(twice.code == 0);
  Result listed = Run("NATTER_SERVER='" + gone + " " + second + "' " +
                      BinPath("natter") + common + " send 2 from the list");
  INFO(listed.err);
  CHECK(listed.code == 0);
  Result got = Run(cell.NatterArgs(2) +
                   " --device cli --json listen --count 2 --for 10");
  CHECK(CountOf(got.out, "\"type\":\"message\"") == 2);
  // A bad key named with an endpoint is a usage error, on one line.
  Result bad = Run(BinPath("natter") + " -s " + second + "@notakey" + common +
                   " send 2 x");
  CHECK(bad.code == EX_USAGE);
  CHECK(Lines(bad.err) == 1);
}

TEST_CASE(
    "natterctl does not signal a process that a pid file left behind "
    "names") {
  TempDir dir;
  const std::string cell = dir.path() + "/cell";
  REQUIRE(Run(BinPath("natterctl") + " init --dir " + cell).code == 0);
  // Not a natter daemon, under the pids of the supervisor and a frontd
  // that died.
  pid_t other = ::fork();
  REQUIRE(other >= 0);
  if (other == 0) {
    ::execlp("sleep", "sleep", "30", static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  ::mkdir((cell + "/run").c_str(), 0700);
  for (const char* name : {"natterctl", "frontd"}) {
    std::ofstream(cell + "/run/" + name + ".pid") << other << "\n";
  }
  Result drain = Run(BinPath("natterctl") + " drain --dir " + cell +
                     " --timeout 2 frontd");
  CHECK(drain.code == EX_UNAVAILABLE);
  CHECK(drain.err.find("not running") != std::string::npos);
  Result down = Run(BinPath("natterctl") + " down --dir " + cell);
  CHECK(down.code == 0);
  CHECK(down.err.find("no cell is running") != std::string::npos);
  // Still there, never signalled.
  CHECK(::waitpid(other, nullptr, WNOHANG) == 0);
  ::kill(other, SIGKILL);
  ::waitpid(other, nullptr, 0);
}

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <fstream>

#include "common/config.h"
#include "common/log.h"
#include "common/shard.h"
#include "common/text.h"
#include "common/validate.h"
#include "tests/support/io.h"
#include "tests/support/temp_dir.h"

using namespace natter;

TEST_CASE("UTF-8 validation accepts text and refuses broken sequences") {
  CHECK(IsValidUtf8("plain"));
  CHECK(IsValidUtf8("héllo wörld 👋 中文"));
  CHECK_FALSE(IsValidUtf8("\xff"));
  CHECK_FALSE(IsValidUtf8("\xc3"));              // truncated
  CHECK_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(IsValidUtf8("\xed\xa0\x80"));      // a surrogate
  CHECK_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
}

TEST_CASE(
    "a whole number is decimal digits that fit 64 bits, and nothing else") {
  CHECK(ParseUint("0") == 0u);
  CHECK(ParseUint("42") == 42u);
  CHECK(ParseUint("007") == 7u);
  CHECK(ParseUint("18446744073709551615") == UINT64_MAX);
  for (const char* bad :
       {"", "18446744073709551616", "99999999999999999999", "-1", "+1", " 1",
        "1 ", "1\n", "1x", "0x10", "1.5", "1e3"}) {
    INFO("'" << bad << "'");
    CHECK_FALSE(ParseUint(bad));
  }
}

TEST_CASE("hex is two lower-case digits a byte, read back only whole") {
  const uint8_t bytes[] = {0x00, 0x09, 0xab, 0xff};
  CHECK(ToHex(bytes, sizeof bytes) == "0009abff");
  CHECK(ToHex(bytes, 0).empty());
  uint8_t back[4] = {};
  REQUIRE(FromHex("0009ABff", back, sizeof back));
  CHECK(std::equal(back, back + 4, bytes));
  for (const char* bad :
       {"", "0009abf", "0009abff00", "0009abfg", "00 9abff", "0x09abff"}) {
    INFO("'" << bad << "'");
    CHECK_FALSE(FromHex(bad, back, sizeof back));
  }
}

TEST_CASE("durations read like 90s, 15m, 24h, 7d") {
  CHECK(ParseDuration("90s") == 90u);
  CHECK(ParseDuration("15m") == 900u);
  CHECK(ParseDuration("24h") == 86400u);
  CHECK(ParseDuration("7d") == 604800u);
  CHECK(ParseDuration("42") == 42u);
  CHECK_FALSE(ParseDuration(""));
  CHECK_FALSE(ParseDuration("h"));
  CHECK_FALSE(ParseDuration("-5s"));
  CHECK_FALSE(ParseDuration("5w"));
  CHECK_FALSE(ParseDuration("99999999999999999999d"));
}

TEST_CASE(
    "a duration is at most 100 years, so no caller's arithmetic overflows") {
  CHECK(ParseDuration("36500d") == kMaxDurationSeconds);
  CHECK(ParseDuration("3153600000") == kMaxDurationSeconds);
  CHECK_FALSE(ParseDuration("36501d"));
  CHECK_FALSE(ParseDuration("3153600001"));
  CHECK_FALSE(ParseDuration("9999999999999d"));
  CHECK_FALSE(ParseDuration("213503982334602d"));  // past 2^64 seconds
  CHECK_FALSE(ParseDuration("18446744073709551615"));
}

TEST_CASE(
    "text from others shows as one line: control characters become visible "
    "escapes") {
  // A forged second line, a carriage return, a terminal title, a cleared
  // screen.
  CHECK(Printable("hi\n2 -> 1: fake\rback \x1b]0;pwned\x07 \x1b[2J") ==
        "hi\\n2 -> 1: fake\\rback \\x1b]0;pwned\\x07 \\x1b[2J");
  CHECK(Printable("a\tb\x7f") == "a\\tb\\x7f");
  CHECK(Printable(std::string("nul\0", 4)) == "nul\\x00");
  // C1 (a CSI, a NEL), the line and paragraph separators, bidi controls.
  CHECK(Printable("\xC2\x9B"
                  "2J \xC2\x85") == "\\u009b2J \\u0085");
  CHECK(Printable("a\xE2\x80\xA8"
                  "b\xE2\x80\xA9"
                  "c") == "a\\u2028b\\u2029c");
  CHECK(Printable("\xE2\x80\xAE"
                  "txt.exe \xE2\x81\xA6"
                  "x \xD8\x9C"
                  "y \xE2\x80\x8F") ==
        "\\u202etxt.exe \\u2066x \\u061cy \\u200f");
  // A byte that is not UTF-8.
  CHECK(Printable("\xff\xc3") == "\\xff\\xc3");
  // Everything else stands for itself: letters, emoji with their joiners,
  // a no-break space, a backslash.
  CHECK(Printable("héllo 中文 👋") == "héllo 中文 👋");
  CHECK(Printable("👨\u200D👩\u200D👧") == "👨\u200D👩\u200D👧");
  CHECK(Printable("a\u00A0b") == "a\u00A0b");
  CHECK(Printable("C:\\x1b") == "C:\\x1b");
  CHECK(Printable("say \"hi\"\\", "\"\\") == "say \\\"hi\\\"\\\\");
  // Whatever the bytes, what comes out is one line without a control byte,
  // and escaping it again changes nothing.
  for (int b = 0; b < 256; ++b) {
    for (const std::string& s :
         {std::string(1, static_cast<char>(b)),
          std::string("\xC2") + static_cast<char>(b),
          std::string("\xE2\x80") + static_cast<char>(b)}) {
      std::string out = Printable(s);
      INFO(b);
      for (size_t i = 0; i < out.size();) {
        char32_t c;
        REQUIRE(NextCodePoint(out, &i, &c));
        CHECK_FALSE(IsControlChar(c));
      }
      CHECK(Printable(out) == out);
    }
  }
}

TEST_CASE("a log value is a plain word, or quoted with everything escaped") {
  CHECK(LogValue("ipc:///tmp/cell/run/routed.sock") ==
        "ipc:///tmp/cell/run/routed.sock");
  CHECK(LogValue("tcp://127.0.0.1:7420") == "tcp://127.0.0.1:7420");
  CHECK(LogValue("a1b2c3d4") == "a1b2c3d4");
  CHECK(LogValue("phone-1@home+2") == "phone-1@home+2");
  CHECK(LogValue("") == "\"\"");
  CHECK(LogValue("no space left") == "\"no space left\"");
  CHECK(LogValue("user=1") == "\"user=1\"");
  CHECK(LogValue("x\nuser=1 event=forged \x1b[2J") ==
        "\"x\\nuser=1 event=forged \\x1b[2J\"");
  CHECK(LogValue("say \"hi\" \\ bye") == "\"say \\\"hi\\\" \\\\ bye\"");
  CHECK(LogValue("téléphone") == "\"téléphone\"");
}

TEST_CASE(
    "a device name is a word of UTF-8: no spaces, control or invisible "
    "characters") {
  for (const char* name :
       {"phone-1", "téléphone", "телефон", "手机", "📱", "a_b.c"}) {
    INFO(name);
    CHECK(ValidateDevice(name).ok());
  }
  CHECK(ValidateDevice(std::string(64, 'd')).ok());
  for (const char* name : {"",
                           "has space",
                           "tab\tbed",
                           "new\nline",
                           "esc\x1b[2J",
                           "del\x7f",
                           "\xC2\x85"
                           "nel",
                           "\xC2\x9B"
                           "csi",
                           "no\xC2\xA0"
                           "break",
                           "line\xE2\x80\xA8"
                           "sep",
                           "para\xE2\x80\xA9"
                           "sep",
                           "\xE2\x80\xAE"
                           "enohp",
                           "\xE2\x81\xA6"
                           "iso",
                           "bom\xEF\xBB\xBF",
                           "zero\xE2\x80\x8B"
                           "width",
                           "joiner\xE2\x81\xA0",
                           "ideo\xE3\x80\x80"
                           "space",
                           "em\xE2\x80\x83"
                           "space",
                           "ogham\xE1\x9A\x80",
                           "\xff"}) {
    INFO(Printable(name));
    CHECK(ValidateDevice(name).code() == ErrorCode::kBadRequest);
  }
  CHECK_FALSE(ValidateDevice(std::string(65, 'd')).ok());
}

TEST_CASE("an emoji may join characters but has no control characters") {
  React r{UserId(2), MessageId(5), std::string("👨\u200D👩\u200D👧")};
  CHECK(ValidateReact(r).ok());
  for (const char* bad :
       {"\xE2\x80\xAE", "a\xE2\x80\xA8", "\x1b[2J", "\xC2\x9B"}) {
    r.emoji = bad;
    CHECK(ValidateReact(r).code() == ErrorCode::kBadData);
  }
}

TEST_CASE("a send is checked before it goes further") {
  Send s;
  s.client_msg_id = "c";
  s.to = UserId(2);
  s.text = "hi";
  CHECK(ValidateSend(s).ok());
  Send bad = s;
  bad.text = "";
  CHECK(ValidateSend(bad).code() == ErrorCode::kBadData);
  bad.text = std::string(kMaxTextBytes + 1, 'a');
  CHECK(ValidateSend(bad).code() == ErrorCode::kBadData);
  bad.text = std::string(kMaxTextBytes, 'a');
  CHECK(ValidateSend(bad).ok());
  bad.text = "\xff";
  CHECK(ValidateSend(bad).code() == ErrorCode::kBadData);
  bad = s;
  bad.to = UserId(0);
  CHECK(ValidateSend(bad).code() == ErrorCode::kBadRequest);
  bad = s;
  bad.client_msg_id = std::string(65, 'c');
  CHECK(ValidateSend(bad).code() == ErrorCode::kBadRequest);
  CHECK_FALSE(ValidateDevice("has space").ok());
  CHECK(ValidateDevice("phone-1").ok());
}

namespace {

Status LoadWith(const std::string& section, const std::string& file_text,
                std::vector<std::string> flags, Config* config, bool* usage) {
  TempDir dir;
  std::string path = dir.path() + "/natter.conf";
  std::ofstream(path) << file_text;
  std::vector<std::string> args = {"natter-test", "-c", path};
  args.insert(args.end(), flags.begin(), flags.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(&a[0]);
  DaemonFlags f;
  return Config::Load(section, static_cast<int>(argv.size()), argv.data(),
                      config, &f, usage);
}

}  // namespace

TEST_CASE("the config file gives keys, flags win, defaults fill in") {
  Config c;
  bool usage = false;
  REQUIRE(LoadWith("stored",
                   "[cell]\nshards = ipc://a ipc://b\n[stored]\nshard = 1\n"
                   "[frontd]\nlisten = tcp://127.0.0.1:1\n",
                   {"--data-dir", "/x"}, &c, &usage)
              .ok());
  CHECK(c.GetList("shards") == std::vector<std::string>{"ipc://a", "ipc://b"});
  CHECK(c.Get("shard") == "1");
  CHECK(c.Get("data-dir") == "/x");
  CHECK(c.Get("batch-max") == "1024");
  CHECK(c.Get("listen").empty());  // stored's own listen, not frontd's
}

TEST_CASE(
    "the shard map has an entry a shard; a shard's replicas are joined by "
    "commas") {
  Config c;
  bool usage = false;
  REQUIRE(LoadWith("stored",
                   "[cell]\nshards = ipc://a0,ipc://a1,ipc://a2 ipc://b\n", {},
                   &c, &usage)
              .ok());
  std::vector<std::string> map = c.GetShardMap();
  REQUIRE(map.size() == 2);
  CHECK(ReplicaEndpoints(map[0]) ==
        std::vector<std::string>{"ipc://a0", "ipc://a1", "ipc://a2"});
  CHECK(ReplicaEndpoints(map[1]) == std::vector<std::string>{"ipc://b"});
  // A removed replica's place: the others keep their numbers.
  CHECK(ReplicaEndpoints("ipc://a0,-,ipc://a2,ipc://a3") ==
        std::vector<std::string>{"ipc://a0", "", "ipc://a2", "ipc://a3"});
}

TEST_CASE(
    "a shard's replicas change while the cell runs only at the end, or by "
    "a place becoming -") {
  using V = std::vector<std::string>;
  const V three = {"ipc://a0", "ipc://a1", "ipc://a2"};
  CHECK(CheckReplicaChange(0, three, three).ok());
  CHECK(CheckReplicaChange(0, three, {"ipc://a0", "", "ipc://a2"}).ok());
  CHECK(CheckReplicaChange(0, three, {"ipc://a0", "", "ipc://a2", "ipc://a3"})
            .ok());
  // A place gone (the others would be renumbered), an endpoint changed, an
  // endpoint added that is not one, nothing left, one replica to several.
  CHECK_FALSE(CheckReplicaChange(0, three, {"ipc://a0", "ipc://a2"}).ok());
  CHECK_FALSE(
      CheckReplicaChange(0, three, {"ipc://a0", "ipc://b", "ipc://a2"}).ok());
  CHECK_FALSE(
      CheckReplicaChange(0, three,
                         {"ipc://a0", "ipc://a1", "ipc://a2", "ipc://a3@bad"})
          .ok());
  CHECK_FALSE(CheckReplicaChange(0, three, {"", "", ""}).ok());
  Status grown = CheckReplicaChange(4, {"ipc://a"}, {"ipc://a", "ipc://b"});
  CHECK_FALSE(grown.ok());
  CHECK(grown.message().find("shard 4") != std::string::npos);
}

TEST_CASE("an unknown key anywhere in the file is an error") {
  Config c;
  bool usage = true;
  Status s = LoadWith("stored", "[frontd]\nlisen = tcp://x\n", {}, &c, &usage);
  CHECK_FALSE(s.ok());
  CHECK_FALSE(usage);  // a config error (78), not a usage error
  CHECK(s.message().find("lisen") != std::string::npos);
}

TEST_CASE(
    "a comment is a line that starts with '#'; a '#' in a value is part of "
    "it") {
  // A Z85 key holding '#' and '@' (curve.h).
  const std::string key = "@#000abcdefghijABCDEFGHIJ.-:+=0123456#@0";
  Config c;
  bool usage = true;
  REQUIRE(
      LoadWith(
          "stored",
          "# natter.conf\n[cell]\n  # shards = ipc://commented\n"
          "shards = ipc://a@" +
              key + " ipc://b@" + key +
              "\n"
              "\t# another comment\n[stored]\ndata-dir = /var/lib/natter#2\n",
          {}, &c, &usage)
          .ok());
  CHECK(c.GetList("shards") ==
        std::vector<std::string>{"ipc://a@" + key, "ipc://b@" + key});
  CHECK(c.Get("data-dir") == "/var/lib/natter#2");
}

TEST_CASE(
    "a config line that is no key = value, or a key given twice, is an error "
    "naming the line") {
  Config c;
  bool usage = true;
  Status s =
      LoadWith("stored", "[stored]\n# a comment\nshard\n", {}, &c, &usage);
  CHECK_FALSE(s.ok());
  CHECK_FALSE(usage);
  CHECK(s.message().find("natter.conf:3: ") != std::string::npos);
  s = LoadWith("stored", "[stored]\nshard = 1\nshard = 2\n", {}, &c, &usage);
  CHECK_FALSE(s.ok());
  CHECK(s.message().find("natter.conf:3: stored.shard is given twice") !=
        std::string::npos);
}

TEST_CASE("an unknown flag is a usage error") {
  Config c;
  bool usage = false;
  CHECK_FALSE(LoadWith("routed", "", {"--data-dir", "x"}, &c, &usage).ok());
  CHECK(usage);
}

TEST_CASE("every configuration key is in natter.conf(5) and etc/natter.conf") {
  std::string page = ReadFile("man/natter.conf.5");
  std::string sample = ReadFile("etc/natter.conf");
  REQUIRE(!page.empty());
  REQUIRE(!sample.empty());
  for (const OptionSpec& o : kOptions) {
    INFO(o.section << "." << o.name);
    CHECK(page.find(".It Ic " + std::string(o.name) + " ") !=
          std::string::npos);
    std::string line =
        "#" + std::string(o.name) + " =" +
        (*o.default_value ? " " + std::string(o.default_value) : "") + "\n";
    CHECK(sample.find(line) != std::string::npos);
  }
}

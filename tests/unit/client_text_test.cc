// What natter rpc makes of a request line, and how natter chat measures
// text for the terminal (common/text.h's Printable makes it safe).
#include <catch2/catch.hpp>
#include <clocale>

#include "client/line_editor.h"
#include "client/rpc.h"
#include "common/text.h"

using namespace natter;

TEST_CASE(
    "natter rpc reads a send, by JSON-RPC 2.0 or without the jsonrpc member") {
  RpcCall c = ParseRpcLine(
      R"({"jsonrpc":"2.0","id":1,"method":"send","params":{"to":2,"text":"hi"}})");
  CHECK(c.error == 0);
  CHECK(c.id == 1);
  CHECK_FALSE(c.notification);
  CHECK(c.method == "send");
  CHECK(c.peer == UserId(2));
  CHECK(c.text == "hi");
  CHECK(c.client_msg_id.empty());

  c = ParseRpcLine(
      R"({"id":"a","method":"send","params":{"to":"7","text":"x","client_msg_id":"m1"}})");
  CHECK(c.error == 0);
  CHECK(c.id == "a");
  CHECK(c.peer == UserId(7));
  CHECK(c.client_msg_id == "m1");

  c = ParseRpcLine(R"({"method":"send","params":{"to":2,"text":"quiet"}})");
  CHECK(c.error == 0);
  CHECK(c.notification);
}

TEST_CASE(
    "natter rpc reads ids as numbers or strings of digits, and the history "
    "bounds") {
  RpcCall c = ParseRpcLine(
      R"({"id":1,"method":"react","params":{"peer":2,"id":"384907391021350912","emoji":"👍"}})");
  CHECK(c.error == 0);
  CHECK(c.message == MessageId(384907391021350912ULL));
  REQUIRE(c.emoji);
  CHECK(*c.emoji == "👍");
  c = ParseRpcLine(R"({"id":1,"method":"unreact","params":{"peer":2,"id":5}})");
  CHECK(c.error == 0);
  CHECK_FALSE(c.emoji);
  c = ParseRpcLine(
      R"({"id":1,"method":"history","params":{"peer":2,"at":"2026-11-27T18:00:00Z","limit":5}})");
  CHECK(c.error == 0);
  CHECK(c.history.mode == HistoryMode::kAt);
  CHECK(c.history.bound == 1795802400000ULL);
  CHECK(c.history.limit == 5);
  c = ParseRpcLine(
      R"({"id":1,"method":"history","params":{"peer":2,"before":"99"}})");
  CHECK(c.history.mode == HistoryMode::kBefore);
  CHECK(c.history.bound == 99);
  c = ParseRpcLine(R"({"id":1,"method":"chats"})");
  CHECK(c.error == 0);
  CHECK(c.chats.before_id == Chats().before_id);
  c = ParseRpcLine(
      R"({"id":1,"method":"chats","params":{"before":"384907391021350912","before_peer":7}})");
  CHECK(c.error == 0);
  CHECK(c.chats.before_id == MessageId(384907391021350912ULL));
  CHECK(c.chats.before_peer == UserId(7));
  CHECK(ParseRpcLine(R"({"id":1,"method":"chats","params":{"before":"5"}})")
            .error == kRpcInvalidParams);
}

TEST_CASE("natter rpc turns a bad line into the error it replies with") {
  auto code = [](const std::string& line) { return ParseRpcLine(line).error; };
  CHECK(code("{not json") == kRpcParseError);
  CHECK(code("[1,2]") == kRpcInvalidRequest);
  CHECK(code(R"({"id":1})") == kRpcInvalidRequest);
  CHECK(code(R"({"id":{},"method":"chats"})") == kRpcInvalidRequest);
  CHECK(code(R"({"jsonrpc":"1.0","id":1,"method":"chats"})") ==
        kRpcInvalidRequest);
  CHECK(code(R"({"id":1,"method":"chats","extra":1})") == kRpcInvalidRequest);
  CHECK(code(R"({"id":1,"method":"launch"})") == kRpcMethodNotFound);
  CHECK(code(R"({"id":1,"method":"send","params":[2,"hi"]})") ==
        kRpcInvalidParams);
  CHECK(code(R"({"id":1,"method":"send","params":{"to":2}})") ==
        kRpcInvalidParams);
  CHECK(code(R"({"id":1,"method":"send","params":{"to":0,"text":"x"}})") ==
        kRpcInvalidParams);
  CHECK(code(R"({"id":1,"method":"send","params":{"to":-3,"text":"x"}})") ==
        kRpcInvalidParams);
  CHECK(code(R"({"id":1,"method":"send","params":{"to":2,"text":5}})") ==
        kRpcInvalidParams);
  CHECK(
      code(R"({"id":1,"method":"send","params":{"to":2,"text":"x","cc":3}})") ==
      kRpcInvalidParams);
  CHECK(
      code(
          R"({"id":1,"method":"history","params":{"peer":2,"at":1,"after":"5"}})") ==
      kRpcInvalidParams);
  CHECK(
      code(
          R"({"id":1,"method":"history","params":{"peer":2,"limit":100000}})") ==
      kRpcInvalidParams);
  CHECK(
      code(
          R"({"id":1,"method":"history","params":{"peer":2,"at":"yesterday"}})") ==
      kRpcInvalidParams);
  // What the server would refuse is refused here, with the server's code.
  CHECK(code(R"({"id":1,"method":"send","params":{"to":2,"text":""}})") ==
        static_cast<int>(ErrorCode::kBadData));
  CHECK(
      code(
          R"({"id":1,"method":"react","params":{"peer":2,"id":"5","emoji":"a\u0007"}})") ==
      static_cast<int>(ErrorCode::kBadData));
  RpcCall c = ParseRpcLine(R"({"id":"x","method":"fly"})");
  CHECK(c.id == "x");  // the reply names the request
  nlohmann::json reply = RpcErrorReply(c.id, c.error, c.error_message);
  CHECK(reply["jsonrpc"] == "2.0");
  CHECK(reply["id"] == "x");
  CHECK(reply["error"]["code"] == -32601);
}

TEST_CASE("text is measured in columns of the terminal") {
  std::setlocale(LC_CTYPE, "C.UTF-8");
  CHECK(DisplayWidth("abc") == 3);
  CHECK(DisplayWidth("héllo") == 5);
  CHECK(DisplayWidth("中文") == 4);
  CHECK(DisplayWidth("👍") == 2);
}

TEST_CASE("times read as RFC 3339 or milliseconds") {
  CHECK(ParseTime("1795802400000") == 1795802400000ULL);
  CHECK(ParseTime("2026-11-27T18:00:00Z") == 1795802400000ULL);
  CHECK(ParseTime("2026-11-27T19:00:00.5+01:00") == 1795802400500ULL);
  CHECK(ParseTime("2026-11-27t17:30:00.0005-00:30") ==
        1795802400001ULL);  // rounded
  CHECK(ParseTime("2026-11-27 18:00:00.123456789z") == 1795802400123ULL);
  CHECK(ParseTime("2026-11-27T18:00:00.9999Z") == 1795802401000ULL);
  for (const char* bad :
       {"2026-13-01T00:00:00Z", "2026-11-27T18:00:00", "soon", "",
        "2026-1-27T18:00:00Z", "2026-11-27T18:00:0Z", "+2026-11-27T18:00:00Z",
        "2026-11-27T18:00: 0Z", "2026-11-27T18:00:00.Z",
        "2026-11-27T18:00:00+1:00", "2026-11-27T18:00:00+01:00 ",
        "2026-11-27T24:00:00Z", "2026-11-27T18:00:61Z"}) {
    INFO("'" << bad << "'");
    CHECK_FALSE(ParseTime(bad));
  }
}

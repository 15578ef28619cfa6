// frontd's rules for client requests (daemons/frontd/request_check.h),
// driven with decoded requests: what goes on to routed, under which header,
// and what is refused with which code.
#include "daemons/frontd/request_check.h"

#include <catch2/catch.hpp>

using namespace natter;
using namespace natter::frontd;

namespace {

Header SessionHeader() {
  Header h;
  h.corr = 5;
  h.user = UserId(7);
  h.device = "phone";
  h.trace = 99;
  return h;
}

// The body of what the check passes on, and its header.
template <typename T>
T Passed(const RequestCheck& check, Header* header = nullptr) {
  Frame f;
  REQUIRE(DecodeFrame(check.frame().data(), check.frame().size(), &f).ok());
  if (header != nullptr) *header = f.header;
  T body;
  REQUIRE(DecodeBody(f, &body).ok());
  return body;
}

}  // namespace

TEST_CASE(
    "a request goes on under the session's header, whatever the client's "
    "said") {
  RequestCheck check(SessionHeader());
  Send send{"c1", UserId(8), "hello"};
  REQUIRE(check(send).ok());
  Header h;
  Send out = Passed<Send>(check, &h);
  CHECK(h.type == static_cast<uint8_t>(MsgType::kSend));
  CHECK(h.user == UserId(7));
  CHECK(h.device == "phone");
  CHECK(h.corr == 5);
  CHECK(h.trace == 99);
  CHECK(out.text == "hello");
  CHECK_FALSE(check.pong());
}

TEST_CASE("frontd refuses what the limits forbid, each with its code") {
  RequestCheck check(SessionHeader());
  CHECK(check(Send{"c", UserId(8), ""}).code() == ErrorCode::kBadData);
  CHECK(
      check(Send{"c", UserId(8), std::string(kMaxTextBytes + 1, 'x')}).code() ==
      ErrorCode::kBadData);
  CHECK(check(Send{"c", UserId(0), "x"}).code() == ErrorCode::kBadRequest);
  CHECK(check(Send{"", UserId(8), "x"}).code() == ErrorCode::kBadRequest);
  CHECK(check(React{UserId(8), MessageId(1), std::string()}).code() ==
        ErrorCode::kBadData);
  CHECK(check(MarkSeen{UserId(0), MessageId(1)}).code() ==
        ErrorCode::kBadRequest);
  History q;
  q.peer = UserId(0);
  CHECK(check(q).code() == ErrorCode::kBadRequest);
  // Frames no client sends.
  CHECK(check(StoreMessage()).code() == ErrorCode::kBadRequest);
  CHECK(check(Handoff()).code() == ErrorCode::kBadRequest);
  CHECK(check(Welcome()).code() == ErrorCode::kBadRequest);
}

TEST_CASE("pages are clamped to their limits, a limit of 0 means the default") {
  RequestCheck check(SessionHeader());
  Sync sync;
  sync.limit = 0;
  REQUIRE(check(sync).ok());
  CHECK(Passed<Sync>(check).limit == 1);
  sync.limit = kMaxSyncPage + 1;
  REQUIRE(check(sync).ok());
  CHECK(Passed<Sync>(check).limit == kMaxSyncPage);
  History q;
  q.peer = UserId(8);
  q.limit = 0;
  REQUIRE(check(q).ok());
  CHECK(Passed<History>(check).limit == kDefaultHistoryPage);
  q.limit = kMaxHistoryPage + 1;
  REQUIRE(check(q).ok());
  CHECK(Passed<History>(check).limit == kMaxHistoryPage);
}

TEST_CASE("a ping is answered by frontd itself") {
  RequestCheck check(SessionHeader());
  REQUIRE(check(Ping()).ok());
  CHECK(check.pong());
  CHECK(check.frame().empty());
}

// Sessions last as long as their tokens: a client with a token source goes
// on past its first token's end, and past the retirement of the key that
// signed it, losing nothing and doubling nothing.
#include <catch2/catch.hpp>
#include <map>

#include "common/ids.h"
#include "common/token.h"
#include "tests/integration/devices.h"
#include "tests/integration/test_cell.h"

using namespace natter;

namespace {

uint64_t NowS() { return NowMs() / 1000; }

// The texts of the messages a device received, each with how often.
std::map<std::string, int> Texts(const Device& d) {
  std::map<std::string, int> texts;
  for (const auto& e : d.Messages()) ++texts[e.text];
  return texts;
}

}  // namespace

TEST_CASE(
    "a client with a token source keeps receiving past its first token's end, "
    "each message once") {
  TestCell cell(1);
  auto alice = Open(cell, UserId(1), "phone");
  // bob's first token expired 55 s ago: frontd takes it (60 s of clock
  // skew) and ends the session about 5 s later.  The source gives it until
  // then, a fresh one after.
  const uint64_t ends = NowS() - 55 + kTokenClockSkew;
  const std::string stale = cell.Token(2, -55);
  auto bob = Open(cell, UserId(2), "laptop", [&](ClientOptions* o) {
    o->token = stale;
    o->token_source = [&cell, ends, stale](std::string* token) {
      *token = NowS() < ends ? stale : cell.Token(2);
      return Status::Ok();
    };
  });
  AwaitCaughtUp({alice.get(), bob.get()});

  // A message every 300 ms from before the end until well after it.
  std::vector<std::string> sent;
  while (NowS() < ends + 4) {
    sent.push_back("m" + std::to_string(sent.size()));
    alice->client->Send(UserId(2), sent.back());
    auto pause = Clock::now() + std::chrono::milliseconds(300);
    while (Clock::now() < pause) {
      alice->Poll(2);
      bob->Poll(2);
    }
  }
  REQUIRE(NowS() >= ends + 4);
  PollUntil(
      {alice.get(), bob.get()}, "bob to get every message sent",
      [&] { return bob->Messages().size() >= sent.size(); }, 20);
  PollFor({alice.get(), bob.get()}, 1);  // any doubles
  std::map<std::string, int> want;
  for (const auto& t : sent) want[t] = 1;
  CHECK(Texts(*bob) == want);
  SeqsOnce(*bob);
  CHECK(bob->Count(Incoming::Kind::kError) == 0);
  CHECK(alice->Count(Incoming::Kind::kProcessed) == sent.size());
}

TEST_CASE(
    "a hello refused for a token that ran out takes a fresh one from the "
    "client's source") {
  TestCell cell(1);
  // Its token ran out past the clock skew (as one may while a hello is on
  // its way after a reconnect); the source has a fresh one.
  int asked = 0;
  auto bob = Open(cell, UserId(2), "laptop", [&](ClientOptions* o) {
    o->token = cell.Token(2, -120);
    o->token_source = [&cell, &asked](std::string* token) {
      ++asked;
      *token = cell.Token(2);
      return Status::Ok();
    };
  });
  CHECK(asked >= 1);
  auto alice = Open(cell, UserId(1), "phone");
  AwaitCaughtUp({alice.get(), bob.get()});
  alice->client->Send(UserId(2), "after a refused hello");
  PollUntil(
      {alice.get(), bob.get()}, "bob to get the message",
      [&] { return bob->Messages().size() == 1; }, 20);
  CHECK(bob->Count(Incoming::Kind::kError) == 0);
}

TEST_CASE(
    "after its token's key is retired, a client with a token source goes on "
    "with the new key") {
  TestCell cell(1);
  std::string ctl = BinPath("natterctl") + " ";
  SigningKey old_key;
  REQUIRE(ReadSigningKey(cell.dir() + "/keys/token", "", &old_key).ok());
  // Its source gives a token of the newest key at each call; the first is
  // the old key's.
  auto bob = Open(cell, UserId(2), "laptop", [&](ClientOptions* o) {
    o->token_source = [&cell](std::string* token) {
      *token = cell.Token(2);
      return Status::Ok();
    };
  });

  REQUIRE(RunCommand(ctl + "token-key add --dir " + cell.dir() +
                     " >/dev/null 2>&1") == 0);
  REQUIRE(RunCommand(ctl + "reload --dir " + cell.dir()) == 0);
  ClientOptions probe = cell.Options(1, "probe");  // the new key's
  probe.timeout_ms = 5000;
  Status s;
  WaitUntil(
      "frontd to take a token of the new key",
      [&] { return (s = Client(probe).Connect()).ok(); }, 20, Pause(100),
      [&] { return s.ToString(); });
  auto alice = Open(cell, UserId(1), "phone");
  AwaitCaughtUp({alice.get(), bob.get()});

  REQUIRE(RunCommand(ctl + "token-key retire --id " + old_key.id + " --dir " +
                     cell.dir() + " 2>/dev/null") == 0);
  REQUIRE(RunCommand(ctl + "reload --dir " + cell.dir()) == 0);
  // Once the old key's tokens are refused, bob's first session is over.
  TokenClaims c;
  c.user = UserId(3);
  c.issued = NowS();
  c.expires = c.issued + 3600;
  probe.token = SignToken(c, old_key);
  WaitUntil(
      "frontd to refuse a token of the retired key",
      [&] {
        return (s = Client(probe).Connect()).code() ==
               ErrorCode::kTokenUnknownKey;
      },
      20, Pause(100), [&] { return s.ToString(); });

  for (int i = 0; i < 3; ++i)
    alice->client->Send(UserId(2), "after " + std::to_string(i));
  bob->client->Send(UserId(1), "bob goes on");
  PollUntil(
      {alice.get(), bob.get()},
      "bob to get the three messages and his own send processed",
      [&] {
        return bob->Messages().size() >= 3 &&
               bob->Count(Incoming::Kind::kProcessed) >= 1;
      },
      20);
  CHECK(Texts(*bob) == std::map<std::string, int>{
                           {"after 0", 1}, {"after 1", 1}, {"after 2", 1}});
  CHECK(bob->Count(Incoming::Kind::kProcessed) == 1);
  CHECK(bob->Count(Incoming::Kind::kError) == 0);
  SeqsOnce(*bob);
}

#include "daemons/stored/rate_limit.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <string>

#include "common/config.h"
#include "common/metrics.h"
#include "daemons/stored/stored.h"
#include "tests/support/temp_dir.h"

using namespace natter;
using namespace natter::stored;

namespace {

using Clock = UserRateLimiter::Clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

Frame Decoded(const std::string& bytes) {
  Frame f;
  REQUIRE(DecodeFrame(bytes.data(), bytes.size(), &f).ok());
  return f;
}

template <typename T>
std::string Encoded(MsgType type, UserId user, const T& body) {
  Header h;
  h.type = static_cast<uint8_t>(type);
  h.user = user;
  return EncodeFrame(h, body);
}

std::string SendOf(UserId user, size_t text_bytes) {
  StoreMessage sm;
  sm.message.from = user;
  sm.message.to = UserId(99);
  sm.message.client_msg_id = "c";
  sm.message.text = std::string(text_bytes, 'x');
  return Encoded(MsgType::kStoreMessage, user, sm);
}

// How many requests of cost 1 the bucket takes at now, until it refuses.
int Drain(UserRateLimiter* limiter, UserId user, Clock::time_point now) {
  int n = 0;
  while (limiter->Take(user, 1, now)) ++n;
  return n;
}

}  // namespace

TEST_CASE("a user's bucket gives its burst at once, then its rate") {
  UserRateLimiter limiter(10, 50);
  Clock::time_point t0 = Clock::now();
  CHECK(Drain(&limiter, UserId(1), t0) == 50);
  CHECK_FALSE(limiter.Take(UserId(1), 1, t0));
  CHECK(Drain(&limiter, UserId(1), t0 + milliseconds(1000)) == 10);
  CHECK(Drain(&limiter, UserId(1), t0 + milliseconds(1500)) == 5);
  // Idle for long: full again, never more than the burst.
  CHECK(Drain(&limiter, UserId(1), t0 + seconds(60)) == 50);
}

TEST_CASE(
    "a refused request takes nothing, and nothing overtakes it until any "
    "request fits") {
  UserRateLimiter limiter(10, 10);
  Clock::time_point t0 = Clock::now();
  REQUIRE(limiter.Take(UserId(1), 8, t0));
  CHECK_FALSE(limiter.Take(UserId(1), 3, t0));
  // 2 units are there, but a request behind the refused one must not pass
  // it: refused until the bucket holds what the dearest request costs.
  CHECK_FALSE(limiter.Take(UserId(1), 2, t0));
  CHECK_FALSE(limiter.Take(UserId(1), 1, t0 + milliseconds(200)));  // 4 units
  // Nothing was taken: 2 + 10 * 0.5 = 7.
  CHECK(limiter.Take(UserId(1), 7, t0 + milliseconds(500)));
  CHECK_FALSE(limiter.Take(UserId(1), 1, t0 + milliseconds(500)));
}

TEST_CASE(
    "a refused request holds back the user's others, however late the shard "
    "reaches them, until it comes again; one that never does, for kHold at "
    "most") {
  UserRateLimiter limiter(10, 10);
  Clock::time_point t0 = Clock::now();
  const std::string phone = "phone", laptop = "laptop";
  REQUIRE(limiter.Take(UserId(1), 8, t0, &phone, 1));
  CHECK_FALSE(limiter.Take(UserId(1), 3, t0, &phone, 2));
  // Requests that were on the wire behind it, reached a second later (the
  // bucket full again): still refused, from any device of the user.
  CHECK_FALSE(limiter.Take(UserId(1), 1, t0 + seconds(1), &phone, 3));
  CHECK_FALSE(limiter.Take(UserId(1), 1, t0 + seconds(1), &laptop, 7));
  // The refused one again: it passes, and then the others.
  CHECK(limiter.Take(UserId(1), 3, t0 + seconds(1), &phone, 2));
  CHECK(limiter.Take(UserId(1), 1, t0 + seconds(1), &phone, 3));
  CHECK(limiter.Take(UserId(1), 1, t0 + seconds(1), &laptop, 7));
  // Refused again, and never sent again: after kHold, the others pass.
  CHECK_FALSE(limiter.Take(UserId(1), 9, t0 + seconds(1), &phone, 4));
  const auto later = t0 + seconds(1) + UserRateLimiter::kHold;
  CHECK_FALSE(limiter.Take(UserId(1), 1, later, &phone, 5));
  CHECK(limiter.Take(UserId(1), 1, later + milliseconds(1), &phone, 5));
  // Another user was never held.
  CHECK(limiter.Take(UserId(2), 1, t0 + seconds(1), &phone, 4));
}

TEST_CASE("each user has a bucket of its own") {
  UserRateLimiter limiter(1, 20);
  Clock::time_point t0 = Clock::now();
  CHECK(Drain(&limiter, UserId(1), t0) == 20);
  CHECK(Drain(&limiter, UserId(2), t0) == 20);
}

TEST_CASE("a send costs one unit and one more for each full KiB of text") {
  CHECK(UserRateLimiter::Cost(Decoded(SendOf(UserId(1), 1))) == 1);
  CHECK(UserRateLimiter::Cost(Decoded(SendOf(UserId(1), 1023))) == 1);
  CHECK(UserRateLimiter::Cost(Decoded(SendOf(UserId(1), 1024))) == 2);
  CHECK(UserRateLimiter::Cost(Decoded(SendOf(UserId(1), kMaxTextBytes))) ==
        UserRateLimiter::kMaxCost);
  CHECK(UserRateLimiter::kMaxCost == 5);

  React react;
  react.emoji = "👍";
  CHECK(UserRateLimiter::Cost(
            Decoded(Encoded(MsgType::kReact, UserId(1), react))) == 1);
  CHECK(UserRateLimiter::Cost(
            Decoded(Encoded(MsgType::kSeen, UserId(1), MarkSeen()))) == 1);
  // Not charged: hand-offs (charged at their sender's shard), cursors, reads.
  CHECK(UserRateLimiter::Cost(
            Decoded(Encoded(MsgType::kHandoff, UserId(1), Handoff()))) == 0);
  CHECK(UserRateLimiter::Cost(
            Decoded(Encoded(MsgType::kAck, UserId(1), Ack()))) == 0);
  CHECK(UserRateLimiter::Cost(
            Decoded(Encoded(MsgType::kSync, UserId(1), Sync()))) == 0);

  UserRateLimiter limiter(1, 10);
  Clock::time_point t0 = Clock::now();
  Frame long_text = Decoded(SendOf(UserId(1), 4000));  // 4 units
  CHECK(limiter.Admit(long_text, t0));
  CHECK(limiter.Admit(long_text, t0));
  CHECK_FALSE(limiter.Admit(long_text, t0));  // 2 left
  CHECK(limiter.refused() == 1);
  CHECK(limiter.Admit(Decoded(SendOf(UserId(1), 10)),
                      t0 + seconds(3)));  // 5 there
  CHECK(limiter.Admit(Decoded(SendOf(UserId(1), 3000)), t0 + seconds(3)));
  CHECK(limiter.Admit(Decoded(SendOf(UserId(1), 10)), t0 + seconds(3)));
  CHECK_FALSE(limiter.Admit(Decoded(SendOf(UserId(1), 10)), t0 + seconds(3)));
  CHECK(limiter.refused() == 2);
}

TEST_CASE("a user whose bucket is full again is forgotten") {
  UserRateLimiter limiter(10, 20);  // fills in 2 s
  Clock::time_point t0 = Clock::now();
  for (uint64_t u = 1; u <= 1000; ++u) REQUIRE(limiter.Take(UserId(u), 1, t0));
  CHECK(limiter.users() == 1000);
  // User 1 keeps writing, a little over the rate; the others went quiet.
  for (int s = 1; s <= 5; ++s) {
    REQUIRE(limiter.Take(UserId(1), 12, t0 + seconds(s)));
  }
  CHECK(limiter.users() == 1);
  // Forgotten is the same as full: the whole burst at once.
  CHECK(Drain(&limiter, UserId(2), t0 + seconds(5)) == 20);
  // User 1's bucket was kept, not reset: 20 - 12 + 10 - 12 ... = 0 left.
  CHECK(Drain(&limiter, UserId(1), t0 + seconds(5)) == 0);
}

TEST_CASE("a rate or a burst of 0 is no limit") {
  Clock::time_point t0 = Clock::now();
  for (auto [rate, burst] :
       {std::pair<uint64_t, uint64_t>{0, 100}, {100, 0}, {0, 0}}) {
    UserRateLimiter limiter(rate, burst);
    CHECK_FALSE(limiter.enabled());
    for (int i = 0; i < 100000; ++i) REQUIRE(limiter.Take(UserId(1), 5, t0));
    CHECK(limiter.users() == 0);
  }
  CHECK(UserRateLimiter::CheckSettings(0, 0).ok());
  CHECK(UserRateLimiter::CheckSettings(50, 500).ok());
  CHECK(UserRateLimiter::CheckSettings(50, 5).ok());
  CHECK_FALSE(UserRateLimiter::CheckSettings(50, 4).ok());
}

namespace {

// A shard on inproc:// with the given [stored] settings, and a socket that
// talks to it as routed does.
struct InprocShard {
  explicit InprocShard(const std::string& user_rate,
                       const std::string& user_burst)
      : dealer(ctx, zmq::socket_type::dealer) {
    REQUIRE(Stored::Create(
                Config::FromMap("stored",
                                {{"shards", "inproc://rate-shard-0"},
                                 {"routed", "inproc://rate-routed"},
                                 {"notifyd-in", "inproc://rate-notifyd-in"},
                                 {"data-dir", dir.path()},
                                 {"user-rate", user_rate},
                                 {"user-burst", user_burst}}),
                ctx, &stored)
                .ok());
    REQUIRE(stored->Start().ok());
    dealer.connect("inproc://rate-shard-0");
    dealer.set(zmq::sockopt::rcvtimeo, 1000);
  }
  ~InprocShard() { stored->Stop(); }

  uint64_t next_corr = 1;
  void Send(UserId from, const std::string& cmid) {
    StoreMessage sm;
    sm.message.id = MessageId(next_corr);
    sm.message.from = from;
    sm.message.to = UserId(from.value + 1000);
    sm.message.ts = 1;
    sm.message.client_msg_id = cmid;
    sm.message.text = "hello";
    Header h;
    h.type = static_cast<uint8_t>(MsgType::kStoreMessage);
    h.corr = next_corr++;
    h.user = from;
    std::string frame = EncodeFrame(h, sm);
    dealer.send(zmq::buffer(frame), zmq::send_flags::none);
  }
  // Each answer by correlation id: its type, and an error's code and text.
  std::map<uint64_t, std::pair<MsgType, Error>> Answers(size_t n) {
    std::map<uint64_t, std::pair<MsgType, Error>> out;
    zmq::message_t msg;
    while (out.size() < n && dealer.recv(msg)) {
      Frame f;
      REQUIRE(DecodeFrame(msg.data(), msg.size(), &f).ok());
      Error e;
      if (f.type() == MsgType::kError) REQUIRE(DecodeBody(f, &e).ok());
      out[f.header.corr] = {f.type(), e};
    }
    return out;
  }
  double Metric(const std::string& name) {
    MetricSet set;
    stored->Stats(&set);
    for (const natter::Metric& m : set.metrics()) {
      if (m.name == name) return m.value;
    }
    FAIL("no metric " << name);
    return 0;
  }

  TempDir dir;
  zmq::context_t ctx{1};
  std::unique_ptr<Stored> stored;
  zmq::socket_t dealer;
};

}  // namespace

TEST_CASE(
    "in one batch, a user over its rate gets busy for the excess, in order, "
    "while another user of the shard is served") {
  InprocShard shard("1", "20");
  const UserId flooder(1), other(2);
  std::map<uint64_t, UserId> sender;  // by correlation id
  for (int i = 0; i < 100; ++i) {
    sender[shard.next_corr] = flooder;
    shard.Send(flooder, "f" + std::to_string(i));
    if (i % 10 == 0) {
      sender[shard.next_corr] = other;
      shard.Send(other, "o" + std::to_string(i));
    }
  }
  // inproc://: each request is on the shard's socket once its send returns.
  shard.stored->RunOnce(1000);  // one batch: every request is waiting
  auto answers = shard.Answers(sender.size());
  REQUIRE(answers.size() == sender.size());

  int flooder_processed = 0, other_processed = 0, busy = 0;
  bool refused_yet = false;
  for (const auto& [corr, answer] : answers) {
    const auto& [type, error] = answer;
    if (sender[corr] == other) {
      CHECK(type == MsgType::kProcessed);
      other_processed += type == MsgType::kProcessed;
      continue;
    }
    if (type == MsgType::kProcessed) {
      CHECK_FALSE(refused_yet);  // the burst goes to the first ones
      ++flooder_processed;
    } else {
      REQUIRE(type == MsgType::kError);
      CHECK(error.code == ErrorCode::kBusy);
      CHECK(error.message.find("user 1 is over its rate") != std::string::npos);
      refused_yet = true;
      ++busy;
    }
  }
  CHECK(flooder_processed == 20);
  CHECK(busy == 80);
  CHECK(other_processed == 10);
  // Nothing of a refused request was written.
  CHECK(shard.stored->logged_requests() == 30);
  CHECK(shard.Metric("natter_stored_rate_refused_total") == 80);
  CHECK(shard.Metric("natter_stored_rate_users") == 2);
}

TEST_CASE("a shard with user-rate 0 takes every request of a user") {
  InprocShard shard("0", "500");
  for (int i = 0; i < 1000; ++i) shard.Send(UserId(1), "f" + std::to_string(i));
  // inproc://: each request is on the shard's socket once its send returns.
  shard.stored->RunOnce(1000);
  auto answers = shard.Answers(1000);
  REQUIRE(answers.size() == 1000);
  for (const auto& [corr, answer] : answers)
    CHECK(answer.first == MsgType::kProcessed);
  CHECK(shard.Metric("natter_stored_rate_refused_total") == 0);
}

TEST_CASE(
    "a user-burst below the cost of the longest text is a configuration "
    "error") {
  TempDir dir;
  zmq::context_t ctx(1);
  std::unique_ptr<Stored> stored;
  Status s = Stored::Create(
      Config::FromMap("stored", {{"shards", "inproc://rate-bad"},
                                 {"routed", "inproc://rate-routed"},
                                 {"notifyd-in", "inproc://rate-notifyd-in"},
                                 {"data-dir", dir.path()},
                                 {"user-rate", "50"},
                                 {"user-burst", "4"}}),
      ctx, &stored);
  CHECK(s.code() == ErrorCode::kBadRequest);
  CHECK(s.message().find("user-burst: must be 0 or at least") == 0);
  CHECK(stored == nullptr);
}

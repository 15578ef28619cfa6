// The client's request queue driven by hand: time is a number of
// milliseconds, frames are names, the wire is a list.
#include "client/request_queue.h"

#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

using namespace natter;

namespace {

RequestQueue::Time At(int ms) {
  return RequestQueue::Time(std::chrono::milliseconds(ms));
}

struct Wire {
  explicit Wire(RequestQueue::Options options, uint32_t seed = 1)
      : queue(
            options,
            [this](const std::string& frame) { frames.push_back(frame); },
            seed) {}

  // What went on the wire since the last call.
  std::vector<std::string> Sent() {
    std::vector<std::string> sent;
    sent.swap(frames);
    return sent;
  }

  std::vector<std::string> frames;
  RequestQueue queue;
};

using Names = std::vector<std::string>;

RequestQueue::Options Timing(int retry_ms, int timeout_ms) {
  RequestQueue::Options o;
  o.retry_ms = retry_ms;
  o.timeout_ms = timeout_ms;
  return o;
}

RequestQueue::Options Window(size_t max_in_flight) {
  RequestQueue::Options o;
  o.max_in_flight = max_in_flight;
  return o;
}

void AddRead(Wire* w, uint64_t corr, int ms) {
  w->queue.Add(corr, MsgType::kHistory, "r" + std::to_string(corr), "", true,
               At(ms));
}

void AddSend(Wire* w, uint64_t corr, int ms) {
  w->queue.Add(corr, MsgType::kSend, "w" + std::to_string(corr),
               "c" + std::to_string(corr), true, At(ms));
}

// The queue's verdict on a request the server took.
void Answer(Wire* w, uint64_t corr) {
  REQUIRE(w->queue.Passed(corr));
  w->queue.Finish(corr);
}

// Refused with code at `at` ms, corr goes on the wire again `wait` ms
// later, give or take a quarter: not before, and by then.  Returns what
// went.  Writes go again at a Pump, other requests at a Tick.
Names AgainAfter(Wire* w, uint64_t corr, ErrorCode code, int at, int wait) {
  CHECK_FALSE(w->queue.Refused(corr, code, At(at)));
  const bool write = RequestQueue::IsWrite(w->queue.Find(corr)->type);
  auto step = [&](int ms) {
    if (write) {
      w->queue.Pump(At(ms));
    } else {
      w->queue.Tick(At(ms));
    }
  };
  step(at + wait - wait / 4 - 1);
  CHECK(w->Sent().empty());
  step(at + wait - wait / 4 + wait / 2);
  return w->Sent();
}

}  // namespace

TEST_CASE(
    "an unanswered request goes again after retry_ms, then twice and four "
    "times that, "
    "give or take a quarter") {
  std::set<int> first_waits;
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    Wire w(Timing(1000, 60000), seed);
    w.queue.Open(At(0));
    AddRead(&w, 1, 0);
    std::vector<int> sent_at;
    for (int t = 0; t <= 20000; ++t) {
      w.queue.Tick(At(t));
      if (!w.Sent().empty()) sent_at.push_back(t);
    }
    REQUIRE(sent_at.size() >= 5);
    CHECK(sent_at[0] == 0);
    const int low[] = {750, 1500, 3000, 3000},
              high[] = {1250, 2500, 5000, 5000};
    for (int i = 0; i < 4; ++i) {
      INFO("seed " << seed << ", wait " << i);
      CHECK(sent_at[i + 1] - sent_at[i] >= low[i]);
      CHECK(sent_at[i + 1] - sent_at[i] <= high[i]);
    }
    first_waits.insert(sent_at[1]);
  }
  CHECK(first_waits.size() > 1);  // the jitter varies
}

TEST_CASE("a request unanswered at its deadline is given up, once") {
  Wire w(Timing(1000, 5000));
  w.queue.Open(At(0));
  AddRead(&w, 7, 0);
  CHECK(w.queue.Tick(At(4999)).empty());
  auto expired = w.queue.Tick(At(5000));
  REQUIRE(expired.size() == 1);
  CHECK(expired[0].corr == 7);
  CHECK(expired[0].app);
  CHECK_FALSE(w.queue.Has(7));
  CHECK(w.queue.Tick(At(5001)).empty());
  CHECK(w.queue.Tick(At(60000)).empty());
  CHECK(w.queue.launched() == 0);
}

TEST_CASE("without a session only the hello goes on the wire") {
  Wire w(RequestQueue::Options{});
  AddRead(&w, 1, 0);
  w.queue.Add(2, MsgType::kHello, "hello", "", true, At(0));
  CHECK(w.Sent() == Names{"hello"});
  w.queue.Finish(2);
  w.queue.Open(At(10));
  CHECK(w.Sent() == Names{"r1"});
  // Lost again: what is on the wire goes again with the next session.
  w.queue.Close();
  AddRead(&w, 3, 20);
  CHECK(w.Sent().empty());
  w.queue.Open(At(30));
  CHECK(w.Sent() == (Names{"r1", "r3"}));
}

TEST_CASE(
    "at most max_in_flight requests are on the wire; the others go in order") {
  Wire w(Window(3));
  w.queue.Open(At(0));
  for (uint64_t corr = 1; corr <= 6; ++corr) AddRead(&w, corr, 0);
  CHECK(w.Sent() == (Names{"r1", "r2", "r3"}));
  CHECK(w.queue.launched() == 3);
  Answer(&w, 2);
  w.queue.Pump(At(1));
  CHECK(w.Sent() == Names{"r4"});
  Answer(&w, 1);
  Answer(&w, 3);
  w.queue.Pump(At(2));
  CHECK(w.Sent() == (Names{"r5", "r6"}));
  CHECK(w.queue.launched() == 3);
}

TEST_CASE(
    "writes refused busy go back to their places, wait, then go one at a time "
    "and widen") {
  Wire w(Window(10));
  w.queue.Open(At(0));
  for (uint64_t corr = 1; corr <= 7; ++corr) AddSend(&w, corr, 0);
  CHECK(w.Sent().size() == 7);
  Answer(&w, 1);
  // The rest are refused for the user's rate, not in order.
  for (uint64_t corr : {3, 2, 6, 4, 7, 5}) {
    CHECK_FALSE(w.queue.Refused(corr, ErrorCode::kBusy, At(10)));
  }
  CHECK(w.queue.launched() == 0);
  CHECK(w.queue.sends_unanswered() == 6);
  // Writes wait 50 ms, give or take a quarter; reads go on meanwhile.
  w.queue.Pump(At(10 + 37));
  CHECK(w.Sent().empty());
  AddRead(&w, 8, 20);
  CHECK(w.Sent() == Names{"r8"});
  // Then one at a time, in the order they were made.
  w.queue.Pump(At(10 + 63));
  CHECK(w.Sent() == Names{"w2"});
  // Refused again: the wait doubles.
  CHECK(AgainAfter(&w, 2, ErrorCode::kBusy, 100, 100) == Names{"w2"});
  // Each write that passes lets one more on the wire.
  Answer(&w, 2);
  w.queue.Pump(At(300));
  CHECK(w.Sent() == (Names{"w3", "w4"}));
  Answer(&w, 3);
  w.queue.Pump(At(301));
  CHECK(w.Sent() == (Names{"w5", "w6"}));
  Answer(&w, 4);
  w.queue.Pump(At(302));
  CHECK(w.Sent() == Names{"w7"});
}

TEST_CASE(
    "a retryable refusal goes again after 50 ms, doubling; another fails "
    "once") {
  Wire w(Timing(1000, 10000));
  w.queue.Open(At(0));
  AddRead(&w, 1, 0);
  w.Sent();
  CHECK(AgainAfter(&w, 1, ErrorCode::kUnavailable, 100, 50) == Names{"r1"});
  CHECK(AgainAfter(&w, 1, ErrorCode::kStorage, 200, 100) == Names{"r1"});

  auto failed = w.queue.Refused(1, ErrorCode::kBadData, At(300));
  REQUIRE(failed);
  CHECK(failed->corr == 1);
  CHECK_FALSE(w.queue.Has(1));
  CHECK_FALSE(w.queue.Refused(1, ErrorCode::kBadData, At(301)));
}

TEST_CASE(
    "a send read back from the mailbox is answered, and keeps its place until "
    "the "
    "server's answer") {
  RequestQueue::Options o;
  Wire w(o);
  w.queue.Open(At(0));
  AddSend(&w, 1, 0);
  CHECK(w.queue.sends_unanswered() == 1);
  auto corr = w.queue.AnswerSend("c1");
  REQUIRE(corr);
  CHECK(*corr == 1);
  CHECK(w.queue.sends_unanswered() == 0);
  CHECK_FALSE(w.queue.AnswerSend("c1"));
  CHECK(w.queue.launched() == 1);
  // The server's own answer is not news; it frees the place.
  CHECK_FALSE(w.queue.Passed(1));
  CHECK(w.queue.launched() == 0);
  CHECK_FALSE(w.queue.Has(1));
  // Nor is the deadline of a send read back.
  AddSend(&w, 2, 0);
  REQUIRE(w.queue.AnswerSend("c2"));
  auto expired = w.queue.Tick(At(o.timeout_ms));
  REQUIRE(expired.size() == 1);
  CHECK(expired[0].answered);
}

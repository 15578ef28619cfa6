// The requests of one connection to frontd, from the call that makes one to
// its answer: when each goes on the wire, when it goes again, and when it
// is given up.  Client owns one: it encodes the frames and reads the
// answers, and tells the queue what became of each request.
//
// - At most max_in_flight requests are on the wire at once; the others wait
//   here and go in the order they were made.
// - An unanswered request is sent again after retry_ms, then after twice
//   and four times that (four times from then on), each give or take a
//   quarter at random, so that clients that lost the same daemon do not all
//   come back at once.  One refused with a retryable error is sent again
//   after 50 ms, doubling up to retry_ms.
// - A request still unanswered timeout_ms after it went on the wire is
//   given up, once.
// - Writes (send, react, seen) are what the user's home shard charges to
//   its rate (natter-stored(8)).  One refused there for the rate (busy)
//   goes back to its place among the writes waiting, and writes wait 50 ms
//   (doubling up to retry_ms while they keep being refused), then go one at
//   a time, one more on the wire for each that passes: so the writes
//   behind it do not overtake it, and the conversation keeps the order they
//   were made in.  Other requests go on meanwhile.
// - Without a session nothing goes on the wire but the hello that makes
//   one.
//
// Time comes in as arguments and the jitter from a seeded generator, so a
// test drives the queue without sockets or sleeps.  Not thread-safe.
#ifndef NATTER_CLIENT_REQUEST_QUEUE_H_
#define NATTER_CLIENT_REQUEST_QUEUE_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/proto.h"

namespace natter {

class RequestQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using Time = Clock::time_point;

  struct Options {
    int timeout_ms = 10000;
    int retry_ms = 2000;
    size_t max_in_flight = 200;
  };

  // One request, from Add until it is forgotten.
  struct Request {
    uint64_t corr = 0;
    MsgType type = MsgType::kPing;
    std::string frame;          // as it goes on the wire
    std::string client_msg_id;  // a send's
    bool app = false;           // the application waits for the answer
    Time sent{};
    Time deadline{};
    Time retry_at{};        // when to send it again if unanswered
    int retries = 0;        // unanswered resends so far (the backoff)
    int backoff_ms = 0;     // after a retryable error: the next wait
    bool launched = false;  // on the wire (else waiting its turn)
    // The application has its answer already (a send read back from the
    // mailbox); the request keeps its place on the wire until the server's
    // own answer passes, so both sides count in-flight requests alike.
    bool answered = false;
  };

  // Puts a frame on the wire.
  using Transmit = std::function<void(const std::string& frame)>;

  RequestQueue(Options options, Transmit transmit, uint32_t seed);

  static bool IsWrite(MsgType type) {
    return type == MsgType::kSend || type == MsgType::kReact ||
           type == MsgType::kSeen;
  }

  // A new request, its frame encoded with corr.  A hello goes on the wire
  // at once (it makes the session); any other waits its turn.
  void Add(uint64_t corr, MsgType type, std::string frame,
           std::string client_msg_id, bool app, Time now);

  // A session began: what was on the wire goes again (the new session has
  // not seen it), then what waits, while there is room.
  void Open(Time now);
  // The session is gone: requests wait for the next.
  void Close() { open_ = false; }

  // Puts waiting requests on the wire while there is room, in order.
  void Pump(Time now);

  // Sends again what is unanswered at its retry time; returns the requests
  // whose deadline passed, forgotten now (each is returned once).
  std::vector<Request> Tick(Time now);

  // The request, or null if it is not (or no longer) waiting for an answer.
  const Request* Find(uint64_t corr) const;
  bool Has(uint64_t corr) const { return pending_.count(corr) != 0; }

  // An answer that is not an error came for corr: a write that passes
  // widens the window.  False if the application had its answer already:
  // the request is forgotten now.
  bool Passed(uint64_t corr);
  // Forgets a request that has its answer.
  void Finish(uint64_t corr);
  // The server refused corr with code (not no-session: a request waits for
  // the next session).  A retryable refusal is tried again, a write refused
  // busy goes back to its place; returns the request if it failed for good,
  // forgotten now, unless the application had its answer already.
  std::optional<Request> Refused(uint64_t corr, ErrorCode code, Time now);

  // A send with this client_msg_id was read back from the mailbox before
  // its answer came: it is stored, so the application has its answer.
  // Returns the send's corr, or nullopt if no send with it waits.
  std::optional<uint64_t> AnswerSend(const std::string& client_msg_id);

  // Sends corr's frame again if its retry time has come, with no backoff
  // (the hello while Client::Connect waits for the welcome).
  void ResendIfDue(uint64_t corr, Time now);
  // Sends corr's frame again now.
  void Resend(uint64_t corr);

  // Sends whose answer the application has not had.
  size_t sends_unanswered() const { return sends_unanswered_; }
  // Requests on the wire.
  size_t launched() const { return launched_; }

  // ms, give or take a quarter, at random.
  Clock::duration Jittered(int ms);

 private:
  using Map = std::map<uint64_t, Request>;

  // r, on the wire, needs Tick's attention at its retry time or deadline.
  void Due(const Request& r) {
    next_due_ = std::min(next_due_, std::min(r.retry_at, r.deadline));
  }
  void Launch(Request* r, Time now);
  void HoldWrite(Map::iterator it, Time now);
  void WritePassed();
  Map::iterator Finish(Map::iterator it);

  const Options options_;
  const Transmit transmit_;
  std::minstd_rand rng_;
  bool open_ = false;

  Map pending_;                  // corr -> request, until answered
  std::deque<uint64_t> queued_;  // requests not yet on the wire, in order
  std::deque<uint64_t> queued_writes_;  // writes not yet on the wire, in order
  size_t launched_ = 0;
  size_t writes_launched_ = 0;
  // Writes on the wire at most: max_in_flight, 1 after a refusal for the
  // rate, one more for each write that passes.
  size_t write_window_;
  Time writes_held_until_{};
  int write_backoff_ms_ = 0;  // the last hold; 0 once a write passed
  std::unordered_map<std::string, uint64_t> sends_;  // client_msg_id -> corr
  size_t sends_unanswered_ = 0;
  // The earliest retry or deadline of the requests on the wire.
  Time next_due_ = Time::max();
};

}  // namespace natter

#endif  // NATTER_CLIENT_REQUEST_QUEUE_H_

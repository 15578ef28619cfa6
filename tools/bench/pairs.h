// natter-bench throughput and latency drive pairs of clients: in pair i,
// user 2i+1 sends to user 2i+2.  Pairs connects them, takes what they
// bring and counts what was processed, delivered and lost.  Not
// thread-safe: one thread drives all the clients.
#ifndef NATTER_TOOLS_BENCH_PAIRS_H_
#define NATTER_TOOLS_BENCH_PAIRS_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "client/client.h"
#include "tools/bench/bench.h"

namespace natter {
namespace bench {

// A sender and a recipient, and what each has seen (message ids).
struct Pair {
  std::unique_ptr<Client> from, to;
  std::set<uint64_t> processed, delivered;
};

class Pairs {
 public:
  // Hears of each receipt and each delivery as it is taken, by the
  // message's client_msg_id (latency times them).
  class Observer {
   public:
    virtual ~Observer() = default;
    virtual void Processed(const std::string& client_msg_id) = 0;
    virtual void Delivered(const std::string& client_msg_id) = 0;
  };

  // Connects n pairs and waits (at most 20 s) until all have caught up: a
  // new device's mailbox starts where it first synced.  The observer, if
  // given, must outlive the Pairs.
  Pairs(const LocalCell& cell, unsigned n, Observer* observer = nullptr);

  size_t size() const { return pairs_.size(); }
  Pair& operator[](size_t i) { return pairs_[i]; }
  std::vector<Pair>::iterator begin() { return pairs_.begin(); }
  std::vector<Pair>::iterator end() { return pairs_.end(); }

  // Takes what a pair's clients brought: the sender's receipts and errors,
  // the recipient's messages.
  void Take(Pair& p);
  void TakeAll();
  // Takes from the clients the last WaitForAny found something to read
  // at, and from all of them every 5 ms (their timers: acks, resends):
  // a pass over every client is a system call or two each.
  void TakeReady();
  // Sleeps until one of the clients has something to read, at most ms:
  // the bench shares the machine with the cell, so it must not spin.
  void WaitForAny(long ms);
  // Takes until every send is answered and every pair has had as many
  // messages delivered as processed, for at most `most`.
  void Drain(Clock::duration most);

  uint64_t processed() const;
  uint64_t delivered() const;
  // Processed, and not delivered.
  uint64_t lost() const;
  // Sends answered with an error.
  uint64_t errors() const { return errors_; }

 private:
  void WaitForCatchUp();

  void TakeFrom(Pair& p, bool from, bool to);

  zmq::context_t ctx_{1};
  std::vector<Pair> pairs_;
  std::vector<zmq::pollitem_t> items_;  // from, to of each pair
  Clock::time_point took_all_;
  Observer* observer_;
  uint64_t errors_ = 0;
  std::vector<Incoming> in_;
};

}  // namespace bench
}  // namespace natter

#endif  // NATTER_TOOLS_BENCH_PAIRS_H_

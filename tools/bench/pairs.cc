#include "tools/bench/pairs.h"

#include <sysexits.h>

#include <algorithm>

#include "common/net.h"

namespace natter {
namespace bench {

Pairs::Pairs(const LocalCell& cell, unsigned n, Observer* observer)
    : pairs_(n), observer_(observer) {
  for (unsigned i = 0; i < n; ++i) {
    ClientOptions fo = cell.Options(2 * i + 1, "bench"),
                  to = cell.Options(2 * i + 2, "bench");
    fo.timeout_ms = to.timeout_ms = 120000;
    pairs_[i].from = std::make_unique<Client>(fo, &ctx_);
    pairs_[i].to = std::make_unique<Client>(to, &ctx_);
    for (Client* c : {pairs_[i].from.get(), pairs_[i].to.get()}) {
      Status s = c->Connect();
      if (!s.ok()) throw Exit{EX_UNAVAILABLE, s.message()};
    }
  }
  WaitForCatchUp();
}

void Pairs::WaitForCatchUp() {
  for (auto until = Clock::now() + std::chrono::seconds(20);
       Clock::now() < until;) {
    bool all = true;
    std::vector<Incoming> in;
    for (Pair& p : pairs_) {
      p.to->Poll(0, &in);
      p.from->Poll(0, &in);
      all = all && p.to->CaughtUp() && p.from->CaughtUp();
    }
    if (all) break;
  }
}

void Pairs::Take(Pair& p) { TakeFrom(p, true, true); }

void Pairs::TakeFrom(Pair& p, bool from, bool to) {
  in_.clear();
  if (from) p.from->Poll(0, &in_);
  for (const Incoming& i : in_) {
    if (i.kind == Incoming::Kind::kError) ++errors_;
    if (i.kind != Incoming::Kind::kProcessed) continue;
    if (observer_ != nullptr) observer_->Processed(i.processed.client_msg_id);
    p.processed.insert(i.processed.id.value);
  }
  in_.clear();
  if (to) p.to->Poll(0, &in_);
  for (const Incoming& i : in_) {
    const Message* m =
        i.kind == Incoming::Kind::kEvent ? i.event.message() : nullptr;
    if (m == nullptr) continue;
    if (observer_ != nullptr) observer_->Delivered(m->client_msg_id);
    p.delivered.insert(m->id.value);
  }
}

void Pairs::TakeAll() {
  for (Pair& p : pairs_) Take(p);
  took_all_ = Clock::now();
}

void Pairs::TakeReady() {
  if (items_.size() != 2 * pairs_.size() ||
      Clock::now() - took_all_ >= std::chrono::milliseconds(5)) {
    TakeAll();
    return;
  }
  for (size_t i = 0; i < pairs_.size(); ++i) {
    bool from = items_[2 * i].revents & ZMQ_POLLIN,
         to = items_[2 * i + 1].revents & ZMQ_POLLIN;
    if (from || to) TakeFrom(pairs_[i], from, to);
  }
}

void Pairs::WaitForAny(long ms) {
  items_.clear();
  for (Pair& p : pairs_) {
    items_.push_back(p.from->PollItem());
    items_.push_back(p.to->PollItem());
  }
  natter::Poll(items_, std::max(0L, ms));
}

void Pairs::Drain(Clock::duration most) {
  for (auto until = Clock::now() + most; Clock::now() < until;) {
    bool done = true;
    for (Pair& p : pairs_) {
      Take(p);
      done = done && p.from->SendsInFlight() == 0 &&
             p.delivered.size() >= p.processed.size();
    }
    if (done) break;
    WaitForAny(5);
  }
}

uint64_t Pairs::processed() const {
  uint64_t n = 0;
  for (const Pair& p : pairs_) n += p.processed.size();
  return n;
}

uint64_t Pairs::delivered() const {
  uint64_t n = 0;
  for (const Pair& p : pairs_) n += p.delivered.size();
  return n;
}

uint64_t Pairs::lost() const {
  uint64_t n = 0;
  for (const Pair& p : pairs_) {
    for (uint64_t id : p.processed) n += p.delivered.count(id) == 0;
  }
  return n;
}

}  // namespace bench
}  // namespace natter

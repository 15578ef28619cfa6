// Devices for integration tests: a Client and everything it handed out.
#ifndef NATTER_TESTS_INTEGRATION_DEVICES_H_
#define NATTER_TESTS_INTEGRATION_DEVICES_H_

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "client/client.h"
#include "tests/integration/test_cell.h"
#include "tests/support/wait.h"

namespace natter {

using Clock = std::chrono::steady_clock;

struct Device {
  std::unique_ptr<Client> client;
  std::vector<Incoming> got;

  void Poll(int ms) { client->Poll(ms, &got); }
  // A message event as a test reads it: the message and its seq.
  struct Got : Message {
    Seq seq;
  };
  // The messages handed out, in the order they came.
  std::vector<Got> Messages() const {
    std::vector<Got> out;
    for (const auto& in : got) {
      const Message* m =
          in.kind == Incoming::Kind::kEvent ? in.event.message() : nullptr;
      if (m != nullptr) out.push_back(Got{*m, in.event.seq});
    }
    return out;
  }
  // The reactions handed out, in order.
  std::vector<ReactionEvent> Reactions() const {
    std::vector<ReactionEvent> out;
    for (const auto& in : got) {
      if (in.kind != Incoming::Kind::kEvent) continue;
      if (const ReactionEvent* r = in.event.reaction()) out.push_back(*r);
    }
    return out;
  }
  // The receipts of one kind (kDelivered or kSeen) handed out, in order.
  std::vector<Receipt> Receipts(EventKind kind) const {
    std::vector<Receipt> out;
    for (const auto& in : got) {
      if (in.kind != Incoming::Kind::kEvent || in.event.kind() != kind)
        continue;
      out.push_back(*in.event.receipt());
    }
    return out;
  }
  size_t Count(Incoming::Kind kind) const {
    size_t n = 0;
    for (const auto& in : got) n += in.kind == kind;
    return n;
  }
};

// tweak, if given, changes the client's options first.
using Tweak = std::function<void(ClientOptions*)>;

inline std::unique_ptr<Device> Open(const TestCell& cell, UserId user,
                                    const std::string& device,
                                    const Tweak& tweak = {}) {
  auto d = std::make_unique<Device>();
  ClientOptions o = cell.Options(user.value, device);
  if (tweak) tweak(&o);
  d->client = std::make_unique<Client>(o);
  Status s = d->client->Connect();
  INFO(s.ToString());
  REQUIRE(s.ok());
  return d;
}

// A Tweak: the client retries its requests for two minutes, through a
// shard's leader change or an outage.
inline void Patient(ClientOptions* o) { o->timeout_ms = 120000; }

// Alice's device a1, which retries through outages (Patient), and Bob's
// b1 (tweak, if given), both caught up: a sender and its receiver.
struct SenderAndReceiver {
  std::unique_ptr<Device> a, b;
};
inline SenderAndReceiver OpenSenderAndReceiver(const TestCell& cell,
                                               UserId alice, UserId bob,
                                               const Tweak& receiver = {});

// The errors the devices were handed (the first few), for the message of
// a wait that ran out.
inline std::string ErrorsOf(const std::vector<Device*>& devices) {
  std::string out;
  size_t n = 0;
  for (Device* d : devices) {
    for (const auto& in : d->got) {
      if (in.kind != Incoming::Kind::kError) continue;
      if (++n <= 5) out += (n > 1 ? "; " : "") + in.error.ToString();
    }
  }
  if (n == 0) return "the devices were handed no error";
  return std::to_string(n) + " errors handed to the devices: " + out +
         (n > 5 ? "; ..." : "");
}

// Polls the devices until done() holds.  If `seconds` pass first, the test
// fails, saying what it waited for and what errors the devices got.
inline void PollUntil(const std::vector<Device*>& devices,
                      const std::string& what,
                      const std::function<bool()>& done, int seconds) {
  WaitUntil(
      what, done, seconds,
      [&] {
        for (Device* d : devices) d->Poll(2);
      },
      [&] { return ErrorsOf(devices); });
}

// Polls the devices for `seconds`, whatever comes: for a test that lets
// time pass on purpose, to see that nothing (more) arrives -- a duplicate,
// an event that must not come.
inline void PollFor(const std::vector<Device*>& devices, double seconds) {
  const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(seconds));
  while (Clock::now() < until) {
    for (Device* d : devices) d->Poll(2);
  }
}

// Polls until the request's answer arrives; returns it.
inline Incoming AwaitAnswer(Device* d, uint64_t request) {
  Incoming answer;
  bool found = false;
  PollUntil(
      {d}, "the answer to request " + std::to_string(request),
      [&] {
        for (const auto& in : d->got) {
          if (in.request == request && in.kind != Incoming::Kind::kEvent) {
            answer = in;
            found = true;
          }
        }
        return found;
      },
      20);
  // Shown with the assertion that fails on an unexpected error.
  if (answer.kind == Incoming::Kind::kError)
    UNSCOPED_INFO(answer.error.ToString());
  return answer;
}

// Polls until every device has read what it missed: a new device's mailbox
// begins at its first sync, so only then is what is sent to it sure to
// reach it.
inline void AwaitCaughtUp(const std::vector<Device*>& devices) {
  PollUntil(
      devices, "every device to catch up on its mailbox",
      [&] {
        for (Device* d : devices) {
          if (!d->client->CaughtUp()) return false;
        }
        return true;
      },
      20);
}

inline SenderAndReceiver OpenSenderAndReceiver(const TestCell& cell,
                                               UserId alice, UserId bob,
                                               const Tweak& receiver) {
  SenderAndReceiver d{Open(cell, alice, "a1", Patient),
                      Open(cell, bob, "b1", receiver)};
  AwaitCaughtUp({d.a.get(), d.b.get()});
  return d;
}

// Two devices for each of two users, connected and caught up.
struct TwoByTwo {
  std::unique_ptr<Device> a1, a2, b1, b2;
  std::vector<Device*> all() const {
    return {a1.get(), a2.get(), b1.get(), b2.get()};
  }
};

inline TwoByTwo OpenTwoByTwo(const TestCell& cell, UserId alice, UserId bob,
                             const std::string& a1, const std::string& a2,
                             const std::string& b1, const std::string& b2,
                             const Tweak& tweak = {}) {
  TwoByTwo t{Open(cell, alice, a1, tweak), Open(cell, alice, a2, tweak),
             Open(cell, bob, b1, tweak), Open(cell, bob, b2, tweak)};
  AwaitCaughtUp(t.all());
  return t;
}

// The seqs a device has seen, as events or as its own sends' receipts;
// each must come once.
inline std::set<uint64_t> SeqsOnce(const Device& d) {
  std::set<uint64_t> seqs;
  for (const auto& in : d.got) {
    uint64_t s = in.kind == Incoming::Kind::kEvent ? in.event.seq.value
                 : in.kind == Incoming::Kind::kProcessed
                     ? in.processed.seq.value
                     : 0;
    if (s == 0) continue;
    INFO("seq " << s);
    REQUIRE(seqs.insert(s).second);
  }
  return seqs;
}

// Every seq from 1 to the newest exactly once, at least n of them: the
// events seen, plus the device's own sends (known from their receipts).
// For a device that was there from its user's first event.
inline void CheckSeqsComplete(const Device& d, uint64_t n) {
  std::set<uint64_t> seqs = SeqsOnce(d);
  // No gap: 1 to the newest, each once (the mailbox also holds the
  // delivered events, so there may be more than n).
  REQUIRE(seqs.size() >= n);
  CHECK(*seqs.begin() == 1);
  CHECK(*seqs.rbegin() == seqs.size());
}

// Waits until the user's mailbox on its home shard holds at least n events
// (processed is the sender's side; a recipient's copy follows through the
// outbox), with a client that leaves the mailbox alone.
inline void WaitForMailbox(const TestCell& cell, UserId user, uint64_t n) {
  ClientOptions o = cell.Options(user.value, "watcher");
  o.receive = false;
  Device watcher;
  watcher.client = std::make_unique<Client>(o);
  REQUIRE(watcher.client->Connect().ok());
  Seq head;
  WaitUntil(
      "user " + std::to_string(user.value) + "'s mailbox to hold " +
          std::to_string(n) + " events",
      [&] {
        head = AwaitAnswer(&watcher, watcher.client->GetMailbox(Seq(0), 1))
                   .mailbox.head;
        return head.value >= n;
      },
      30, Pause(100), [&] { return "it holds " + std::to_string(head.value); });
}

// The ids of every message of the conversation with peer, oldest first,
// walked forward a page of 500 at a time.
inline std::vector<MessageId> WholeHistory(Device* d, UserId peer) {
  std::vector<MessageId> ids;
  for (;;) {
    History q;
    q.peer = peer;
    q.mode = HistoryMode::kAfter;
    q.bound = ids.empty() ? 0 : ids.back().value;
    q.limit = kMaxHistoryPage;
    Incoming a = AwaitAnswer(d, d->client->GetHistory(q));
    REQUIRE(a.kind == Incoming::Kind::kHistory);
    for (const auto& item : a.history.messages) ids.push_back(item.message.id);
    if (!a.history.more || a.history.messages.empty()) return ids;
  }
}

// Messages a sends b, by client_msg_id (their number as the value), for a
// test that checks each is processed and received once.
using SentMessages = std::map<std::string, int>;

// Sends n more messages from a to `to`, text and number, into sent.
inline void SendNumbered(Device* a, UserId to, const std::string& text, int n,
                         SentMessages* sent) {
  for (int i = 0; i < n; ++i) {
    int k = static_cast<int>(sent->size());
    (*sent)[a->client->Send(to, text + " " + std::to_string(k))] = k;
  }
}

// Polls until a has a receipt for everything sent and b that many
// messages.
inline void AwaitSentAndReceived(Device* a, Device* b, const SentMessages& sent,
                                 const std::string& what, int seconds = 60) {
  PollUntil(
      {a, b}, what,
      [&] {
        return a->Count(Incoming::Kind::kProcessed) >= sent.size() &&
               b->Messages().size() >= sent.size();
      },
      seconds);
}

// Every message a sent processed once (no error), received by b once, b's
// mailbox without a gap; returns the messages' ids.
inline std::set<uint64_t> CheckSentOnce(Device* a, Device* b,
                                        const SentMessages& sent) {
  CHECK(a->Count(Incoming::Kind::kError) == 0);
  std::set<uint64_t> ids;
  for (const auto& in : a->got) {
    if (in.kind != Incoming::Kind::kProcessed) continue;
    REQUIRE(sent.count(in.processed.client_msg_id));
    REQUIRE(ids.insert(in.processed.id.value).second);
  }
  CHECK(ids.size() == sent.size());
  CheckSeqsComplete(*b, sent.size());
  std::set<uint64_t> received;
  for (const auto& e : b->Messages()) {
    REQUIRE(received.insert(e.id.value).second);
  }
  CHECK(received == ids);
  return ids;
}

}  // namespace natter

#endif  // NATTER_TESTS_INTEGRATION_DEVICES_H_

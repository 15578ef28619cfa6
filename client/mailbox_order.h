// The order in which a device hands out its mailbox's events: each once, in
// seq order, whichever way it came (live, or in a page of the mailbox), and
// none lost.
//
// - Events go out in seq order: one that comes early waits for those
//   before it; one that comes again (live and in a page) is dropped.
// - A gap in the seqs (the live path dropped an event) that is still there
//   after gap_grace_ms is repaired with a sync after the last seq handed
//   out.
// - The seqs of the device's own changes, known from their answers (a
//   send's processed, a reaction's or seen mark's ok), fill their places
//   and are not handed out.
// - A device skips its own events (origin_device is this device: its sends,
//   reactions and seen marks), for it had their answers; Client takes one
//   of its sends read back before its answer came as that send's receipt.
// - After the client's first session begins: the catch-up, pages of the
//   mailbox from the device's cursor until one says there is no more, its
//   events marked missed.  Each session, kSettleMs after it began (its
//   subscription may reach notifyd after the first page was read), a later
//   session at once, and every resync_ms: a sync after the last seq, for
//   what the live path lost.  One sync at a time.
//
// Every Sync it returns is to be sent, and its answer given to TakePage (or
// its failure to SyncFailed).  Time comes in as arguments, so a test drives
// it without sockets or sleeps.  Not thread-safe.
#ifndef NATTER_CLIENT_MAILBOX_ORDER_H_
#define NATTER_CLIENT_MAILBOX_ORDER_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "common/proto.h"

namespace natter {

class MailboxOrder {
 public:
  using Time = std::chrono::steady_clock::time_point;

  static constexpr uint32_t kSyncPage = 500;
  static constexpr int kSettleMs = 500;

  struct Options {
    int gap_grace_ms = 200;  // a seq gap this old is repaired from the mailbox
    int resync_ms = 30000;   // when idle, look at the mailbox this often
  };

  // What comes next in seq order.
  struct Next {
    enum class Kind {
      kNone,      // the next seq has not come (a gap), or nothing is new
      kOwnSeq,    // a seq of this device's own change, known from its answer
      kOwnEvent,  // an event this device caused: skipped (or a receipt)
      kEvent,     // an event to hand out
    };
    Kind kind = Kind::kNone;
    Event event;          // kOwnEvent, kEvent
    bool missed = false;  // kEvent: from the catch-up
  };

  explicit MailboxOrder(Options options) : options_(options) {}

  // The client's first session began, as `device`: the catch-up starts
  // from the device's cursor on the home shard, or from `saved` (what this
  // device saved it handed out) if its acknowledgement did not reach the
  // shard.
  std::optional<Sync> Begin(const std::string& device, Seq saved, Time now);
  // Another session began: what the live path lost meanwhile is fetched
  // now and once the new session's subscription has surely reached
  // notifyd.
  std::optional<Sync> Resume(Time now);

  // A live event for the user.
  void TakeLive(const Event& event);
  // The answer to a sync it asked for; returns the sync of the next page,
  // if any.
  std::optional<Sync> TakePage(const SyncReply& page, Time now);
  // The sync it asked for failed or went unanswered.
  void SyncFailed() { sync_in_flight_ = false; }
  // The seq of this device's own change, from its answer (0: none).
  void TakeOwn(Seq seq);

  // Takes what comes next in seq order.
  Next TakeNext();
  // After taking what there was: notes since when a gap has been open.
  void NoteGap(Time now);
  // The sync due now, if any: a gap's repair, the settle after a session
  // began, the periodic look.
  std::optional<Sync> Tick(Time now);

  // The first page has come.
  bool synced() const { return synced_; }
  // Every missed event is taken.
  bool caught_up() const { return synced_ && !catching_up_; }
  // The newest seq taken.
  Seq last_seq() const { return last_seq_; }

 private:
  // A sync after `after` (or the last seq taken), unless one is on its way.
  std::optional<Sync> Ask(bool from_cursor, Seq after, Time now);
  void Take(const Event& event, bool from_page);

  const Options options_;
  std::string device_;
  Seq saved_;
  bool synced_ = false;      // the first page has come
  bool catching_up_ = true;  // still reading the missed events
  bool sync_in_flight_ = false;
  Seq last_seq_;  // the newest seq taken (or our own)
  std::map<uint64_t, std::pair<Event, bool>> buffer_;  // seq -> event, missed
  std::set<uint64_t> own_;  // seqs of our own changes, known from answers
  Time gap_since_{};
  bool gap_ = false;
  Time last_sync_{};
  Time began_{};          // when the session began
  bool settled_ = false;  // the sync after kSettleMs went
};

}  // namespace natter

#endif  // NATTER_CLIENT_MAILBOX_ORDER_H_

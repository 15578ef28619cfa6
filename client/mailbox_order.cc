#include "client/mailbox_order.h"

#include <algorithm>

namespace natter {

std::optional<Sync> MailboxOrder::Begin(const std::string& device, Seq saved,
                                        Time now) {
  device_ = device;
  saved_ = saved;
  began_ = now;
  return Ask(true, Seq(), now);
}

std::optional<Sync> MailboxOrder::Resume(Time now) {
  began_ = now;
  if (!synced_) return std::nullopt;  // the first page is still on its way
  settled_ = false;
  return Ask(false, last_seq_, now);
}

std::optional<Sync> MailboxOrder::Ask(bool from_cursor, Seq after, Time now) {
  if (sync_in_flight_) return std::nullopt;
  Sync sync;
  sync.from_cursor = from_cursor;
  sync.after = std::max(after, last_seq_);
  sync.limit = kSyncPage;
  sync_in_flight_ = true;
  last_sync_ = now;
  return sync;
}

void MailboxOrder::TakeLive(const Event& event) { Take(event, false); }

void MailboxOrder::Take(const Event& event, bool from_page) {
  if (synced_ && event.seq <= last_seq_) return;  // a duplicate
  buffer_.emplace(event.seq.value,
                  std::make_pair(event, from_page && catching_up_));
}

std::optional<Sync> MailboxOrder::TakePage(const SyncReply& page, Time now) {
  sync_in_flight_ = false;
  if (!synced_) {
    // Start after the shard's cursor, or after what this device already
    // handed out if its acknowledgement did not reach the shard.
    Seq base = page.cursor;
    if (saved_ > base && saved_ <= page.head) base = saved_;
    last_seq_ = base;
    synced_ = true;
    buffer_.erase(buffer_.begin(), buffer_.upper_bound(base.value));
    own_.erase(own_.begin(), own_.upper_bound(base.value));
  }
  for (const Event& event : page.events) Take(event, true);
  if (page.more && !page.events.empty())
    return Ask(false, page.events.back().seq, now);
  catching_up_ = false;
  return std::nullopt;
}

void MailboxOrder::TakeOwn(Seq seq) {
  if (seq.value != 0 && (!synced_ || seq > last_seq_)) own_.insert(seq.value);
}

MailboxOrder::Next MailboxOrder::TakeNext() {
  Next next;
  if (!synced_) return next;
  const uint64_t seq = last_seq_.value + 1;
  if (own_.erase(seq)) {
    last_seq_ = Seq(seq);
    next.kind = Next::Kind::kOwnSeq;
    return next;
  }
  auto it = buffer_.find(seq);
  if (it == buffer_.end()) return next;
  next.event = std::move(it->second.first);
  next.missed = it->second.second;
  const bool own =
      !next.event.origin_device.empty() && next.event.origin_device == device_;
  next.kind = own ? Next::Kind::kOwnEvent : Next::Kind::kEvent;
  buffer_.erase(it);
  last_seq_ = Seq(seq);
  return next;
}

void MailboxOrder::NoteGap(Time now) {
  if (!synced_) return;
  // Our own answers may name seqs below what a page already handed out.
  own_.erase(own_.begin(), own_.upper_bound(last_seq_.value));
  const bool gap = !buffer_.empty() || !own_.empty();
  if (gap && !gap_) gap_since_ = now;
  gap_ = gap;
}

std::optional<Sync> MailboxOrder::Tick(Time now) {
  if (!synced_) return std::nullopt;
  std::optional<Sync> sync;
  if (gap_ &&
      now - gap_since_ >= std::chrono::milliseconds(options_.gap_grace_ms)) {
    sync = Ask(false, last_seq_, now);
    gap_since_ = now;
  }
  if (!settled_ && now - began_ >= std::chrono::milliseconds(kSettleMs)) {
    // The subscription may reach notifyd after the first page was read.
    if (!sync) sync = Ask(false, last_seq_, now);
    settled_ = true;
  }
  if (!sync &&
      now - last_sync_ >= std::chrono::milliseconds(options_.resync_ms)) {
    sync = Ask(false, last_seq_, now);
  }
  return sync;
}

}  // namespace natter

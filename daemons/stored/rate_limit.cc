#include "daemons/stored/rate_limit.h"

#include <algorithm>
#include <string>

namespace natter {
namespace stored {

UserRateLimiter::UserRateLimiter(uint64_t rate, uint64_t burst)
    : rate_(static_cast<double>(rate)),
      burst_(static_cast<double>(burst)),
      fill_time_(std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(
              rate == 0
                  ? 0.0
                  : static_cast<double>(burst) / static_cast<double>(rate)))) {}

Status UserRateLimiter::CheckSettings(uint64_t rate, uint64_t burst) {
  if (rate == 0 || burst == 0 || burst >= kMaxCost) return Status::Ok();
  return Status(ErrorCode::kBadRequest,
                "user-burst: must be 0 or at least " +
                    std::to_string(kMaxCost) +
                    " (what a send of the longest text costs)");
}

uint64_t UserRateLimiter::Cost(const Frame& request) {
  switch (request.type()) {
    case MsgType::kStoreMessage: {
      // A body that does not decode is refused by the store, writing
      // nothing; it still costs a unit, as any request.
      StoreMessage sm;
      if (!DecodeBody(request, &sm).ok()) return 1;
      return 1 + sm.message.text.size() / 1024;
    }
    case MsgType::kReact:
    case MsgType::kSeen:
    case MsgType::kAttach:  // may make a cursor: one per device name
      return 1;
    default:
      return 0;
  }
}

double UserRateLimiter::Level(const Bucket& b, Clock::time_point now) const {
  double elapsed = std::chrono::duration<double>(now - b.at).count();
  return std::min(burst_, b.units + rate_ * std::max(elapsed, 0.0));
}

bool UserRateLimiter::Take(UserId user, uint64_t cost, Clock::time_point now,
                           const std::string* device, uint64_t corr) {
  if (!enabled() || cost == 0) return true;
  if (now >= next_sweep_) Sweep(now);
  auto [it, added] =
      buckets_.try_emplace(user, Bucket{burst_, now, false, false, {}, 0, {}});
  Bucket& b = it->second;
  double units = added ? burst_ : Level(b, now);
  b.units = units;
  b.at = now;
  if (b.holding && now - b.held_at > kHold) b.holding = false;
  const bool held = b.holding && device != nullptr &&
                    *device == b.held_device && corr == b.held_corr;
  if (b.holding && !held) return false;  // behind the refused one
  double needed = static_cast<double>(cost);
  if (b.refusing)
    needed = std::max(needed, std::min(burst_, static_cast<double>(kMaxCost)));
  b.refusing = units < needed;
  if (!b.refusing) {
    b.units = units - static_cast<double>(cost);
    b.holding = false;
  } else if (held || device != nullptr) {
    b.holding = true;
    b.held_device = *device;
    b.held_corr = corr;
    b.held_at = now;
  }
  return !b.refusing;
}

bool UserRateLimiter::Admit(const Frame& request, Clock::time_point now) {
  const Header& h = request.header;
  if (Take(h.user, Cost(request), now, &h.device, h.corr)) return true;
  ++refused_;
  return false;
}

Status UserRateLimiter::Refusal(UserId user) const {
  return Status(
      ErrorCode::kBusy,
      "user " + std::to_string(user.value) + " is over its rate of writes (" +
          std::to_string(static_cast<uint64_t>(rate_)) +
          " a second, bursts of " +
          std::to_string(static_cast<uint64_t>(burst_)) + "); retry later");
}

void UserRateLimiter::Sweep(Clock::time_point now) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    const Bucket& b = it->second;
    if (Level(b, now) >= burst_ && !(b.holding && now - b.held_at <= kHold)) {
      it = buckets_.erase(it);
    } else {
      ++it;
    }
  }
  // Every fill_time_ at most (a second at least): each sweep finds the
  // buckets of users idle since the one before full, so the table holds
  // the users of the last two fill times.
  next_sweep_ =
      now + std::max<Clock::duration>(fill_time_, std::chrono::seconds(1));
}

}  // namespace stored
}  // namespace natter

// UserRateLimiter: a token bucket per user, so that one user cannot write a
// shard's disk full for everyone (natter-stored(8): user-rate, user-burst).
//
// The home shard sees every write a user causes, whichever frontd it came
// through, so the bucket lives there.  A user's bucket holds at most burst
// units and fills at rate units a second; each request that writes on the
// user's behalf takes its Cost, or is refused whole (busy) when the bucket
// holds less.  Once refused, a user's requests are refused until the
// refused one comes again (the same device and corr) and its bucket holds
// kMaxCost: a client's requests on the wire behind a refused one are
// refused with it rather than overtake it, however long the shard takes to
// reach them, so that the client, sending them again in order, keeps its
// messages in order.  A refused request that does not come again within
// kHold holds nothing back after that (its client gave it up).
// Charged: send (one unit, plus one for each full KiB of
// text), react and seen (one unit).  Not charged: hand-offs from other
// shards (their sender's shard charged them), acknowledgements (they only
// move a cursor forward, and the delivered marks they make are bounded by
// the messages received, charged to their senders), and reads.
//
// A user whose bucket has filled up again is forgotten: a user not in the
// table starts full, which is what its bucket would hold anyway.  So the
// table holds only the users that wrote in the last 2 × burst/rate seconds
// (a sweep every burst/rate seconds, at most once a second), and never more
// than the shard's users.
//
// Time is passed in, so that tests need no clock.  Not thread-safe; the
// shard's thread owns it.
#ifndef NATTER_DAEMONS_STORED_RATE_LIMIT_H_
#define NATTER_DAEMONS_STORED_RATE_LIMIT_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "common/proto.h"
#include "common/status.h"

namespace natter {
namespace stored {

class UserRateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  // What the longest text costs: a burst smaller than this would refuse it
  // for ever.
  static constexpr uint64_t kMaxCost = 1 + kMaxTextBytes / 1024;

  // rate: units a second; burst: the most a bucket holds.  Either 0: no
  // limit.  Otherwise burst must be at least kMaxCost (CheckSettings).
  UserRateLimiter(uint64_t rate, uint64_t burst);

  // Why a rate and burst cannot be used, or ok.
  static Status CheckSettings(uint64_t rate, uint64_t burst);

  bool enabled() const { return rate_ > 0 && burst_ > 0; }

  // What a request costs the user of its header: 0 for one not charged.
  static uint64_t Cost(const Frame& request);

  // How long a refused request holds back the user's others.
  static constexpr std::chrono::seconds kHold{5};

  // Takes cost units from user's bucket as it is at now; false, taking
  // nothing, when it holds fewer (or, after a refusal, fewer than
  // kMaxCost), or when an earlier request of the user was refused and
  // this is not it coming again (device and corr; without a device, only
  // the units count).  Calls must come in request order, with now never
  // going back.
  bool Take(UserId user, uint64_t cost, Clock::time_point now,
            const std::string* device = nullptr, uint64_t corr = 0);

  // Take(request's user, Cost(request), now), counting refusals.
  bool Admit(const Frame& request, Clock::time_point now);

  // The busy error a refused request of user gets.
  Status Refusal(UserId user) const;

  // Users with a bucket that is not full (or not yet seen full).
  size_t users() const { return buckets_.size(); }
  uint64_t refused() const { return refused_; }

 private:
  struct Bucket {
    double units;
    Clock::time_point at;   // when units was right
    bool refusing = false;  // the last request was refused
    // The first refused request, which the others wait behind, and when
    // it was last refused.
    bool holding = false;
    std::string held_device;
    uint64_t held_corr = 0;
    Clock::time_point held_at;
  };

  // What b holds at now.
  double Level(const Bucket& b, Clock::time_point now) const;
  // Forgets the buckets that are full again.
  void Sweep(Clock::time_point now);

  double rate_;
  double burst_;
  // How long an empty bucket takes to fill: the sweep's period.
  Clock::duration fill_time_;
  Clock::time_point next_sweep_{};
  std::unordered_map<UserId, Bucket> buckets_;
  uint64_t refused_ = 0;
};

}  // namespace stored
}  // namespace natter

#endif  // NATTER_DAEMONS_STORED_RATE_LIMIT_H_

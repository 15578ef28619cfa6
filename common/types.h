// Strong little types for the ids that meet across natter: a UserId is not a
// MessageId is not a Seq, and the compiler says so.
#ifndef NATTER_COMMON_TYPES_H_
#define NATTER_COMMON_TYPES_H_

#include <cstdint>
#include <functional>

namespace natter {

template <typename Tag>
struct Id {
  uint64_t value = 0;
  constexpr Id() = default;
  constexpr explicit Id(uint64_t v) : value(v) {}
  friend constexpr bool operator==(Id a, Id b) { return a.value == b.value; }
  friend constexpr bool operator!=(Id a, Id b) { return a.value != b.value; }
  friend constexpr bool operator<(Id a, Id b) { return a.value < b.value; }
  friend constexpr bool operator<=(Id a, Id b) { return a.value <= b.value; }
  friend constexpr bool operator>(Id a, Id b) { return a.value > b.value; }
  friend constexpr bool operator>=(Id a, Id b) { return a.value >= b.value; }
};

using UserId = Id<struct UserTag>;        // > 0 for a real user
using MessageId = Id<struct MessageTag>;  // Snowflake, see ids.h
using Seq = Id<struct SeqTag>;            // a user's mailbox position, from 1

}  // namespace natter

namespace std {
template <typename Tag>
struct hash<natter::Id<Tag>> {
  size_t operator()(natter::Id<Tag> id) const noexcept {
    return std::hash<uint64_t>()(id.value);
  }
};
}  // namespace std

#endif  // NATTER_COMMON_TYPES_H_

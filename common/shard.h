// Which shard is a user's home: a stable hash of the user id over the shard
// map.  Jump consistent hashing (Lamping and Veach, 2014): growing the map
// from N to N+1 shards moves only 1/(N+1) of the users.
#ifndef NATTER_COMMON_SHARD_H_
#define NATTER_COMMON_SHARD_H_

#include <cstdint>

#include "common/types.h"

namespace natter {

uint32_t HomeShard(UserId user, uint32_t shard_count);

}  // namespace natter

#endif  // NATTER_COMMON_SHARD_H_

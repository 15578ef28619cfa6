// Which shard is a user's home: a stable hash of the user id over the shard
// map.  Jump consistent hashing (Lamping and Veach, 2014): growing the map
// from N to N+1 shards moves only 1/(N+1) of the users.
#ifndef NATTER_COMMON_SHARD_H_
#define NATTER_COMMON_SHARD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/types.h"

namespace natter {

uint32_t HomeShard(UserId user, uint32_t shard_count);

// A shard's replicas' endpoints: its entry of [cell] shards split at the
// commas (one endpoint: a shard of one replica), by replica number; "" in
// the place of a replica removed (written -: the others keep their
// numbers).
std::vector<std::string> ReplicaEndpoints(const std::string& shard_entry);

// Whether a shard's replicas may go from `before` to `after` while the
// cell runs (natter.conf read again): places are only added at the end or
// removed (""), each endpoint added is one, at least one replica is left,
// and a shard of one replica stays one (its folder's name would change).
Status CheckReplicaChange(uint32_t shard,
                          const std::vector<std::string>& before,
                          const std::vector<std::string>& after);

}  // namespace natter

#endif  // NATTER_COMMON_SHARD_H_
